//! Inlining: a call of a small function becomes a copy of its body in the caller, so a recursive
//! function like `fib` makes half as many real calls (the copy's own calls stay calls). The
//! copy keeps the call's depth check and operation charge, so limits and errors do not change.

use super::ir::{Block, Expr, Function, Slot, Stmt};

/// Bodies at most this big (see [`Block::size`]) are copied.
const MAX_SIZE: usize = 24;

/// Copies made into one function, which bounds its growth.
const MAX_COPIES: usize = 6;

/// Calls inside copies are copied too, down to this many levels: `fib` makes a third of its
/// calls.
const MAX_LEVELS: usize = 2;

/// `functions` with calls of small callees replaced by copies of the callees' bodies as they were
/// before this pass (so recursion is unrolled once, not forever).
pub(crate) fn inline_calls(functions: &[Function]) -> Vec<Function> {
    functions
        .iter()
        .map(|f| {
            let mut f = f.clone();
            let mut into = Into {
                functions,
                slots: f.slots,
                copies: 0,
                level: 0,
            };
            into.block(&mut f.body);
            f.slots = into.slots;
            f
        })
        .collect()
}

/// A function being rewritten: where its next copy's slots start, and how many it has.
struct Into<'f> {
    functions: &'f [Function],
    slots: usize,
    copies: usize,
    /// How many copies the expression being rewritten is inside.
    level: usize,
}

impl Into<'_> {
    fn block(&mut self, block: &mut Block) {
        for stmt in &mut block.stmts {
            match stmt {
                Stmt::Store(_, e) | Stmt::Eval(e) | Stmt::Return(e) => self.expr(e),
                Stmt::SetIndex { index, value, .. } => {
                    self.expr(index);
                    self.expr(value);
                }
                Stmt::While { cond, body, .. } => {
                    cond.iter_mut().for_each(|c| self.expr(c));
                    self.block(body);
                }
                Stmt::Do { body, cond, .. } => {
                    self.block(body);
                    self.expr(cond);
                }
                Stmt::For { from, to, body, .. } => {
                    self.expr(from);
                    self.expr(to);
                    self.block(body);
                }
                Stmt::Break | Stmt::Continue => {}
            }
        }
        self.expr(&mut block.value);
    }

    fn expr(&mut self, e: &mut Expr) {
        match e {
            Expr::Int(_)
            | Expr::Float(_)
            | Expr::Bool(_)
            | Expr::Unit
            | Expr::Load(..)
            | Expr::Len(_) => {}
            Expr::Binary { lhs, rhs, .. } | Expr::And(lhs, rhs) | Expr::Or(lhs, rhs) => {
                self.expr(lhs);
                self.expr(rhs);
            }
            Expr::Unary { arg, .. } | Expr::Index { index: arg, .. } => self.expr(arg),
            Expr::If { cond, then, other } => {
                self.expr(cond);
                self.block(then);
                self.block(other);
            }
            Expr::Block(block) => self.block(block),
            Expr::Inlined { params, body, .. } => {
                params.iter_mut().for_each(|(_, a)| self.expr(a));
                self.block(body);
            }
            Expr::Call { callee, args, .. } => {
                args.iter_mut().for_each(|a| self.expr(a));
                let callee = &self.functions[*callee];
                if self.copies < MAX_COPIES
                    && !callee.body.jumps()
                    && callee.body.size() <= MAX_SIZE
                {
                    *e = self.copy(callee, std::mem::take(args));
                }
            }
        }
    }

    /// `callee`'s body with its slots moved past the caller's, its parameters set from `args`.
    fn copy(&mut self, callee: &Function, args: Vec<Expr>) -> Expr {
        let offset = self.slots;
        self.slots += callee.slots;
        self.copies += 1;
        let mut body = callee.body.clone();
        shift_block(&mut body, offset);
        if self.level + 1 < MAX_LEVELS {
            self.level += 1;
            self.block(&mut body);
            self.level -= 1;
        }
        Expr::Inlined {
            params: args
                .into_iter()
                .enumerate()
                .map(|(i, a)| (offset + i, a))
                .collect(),
            body: Box::new(body),
            entry_cost: callee.entry_cost,
        }
    }
}

fn shift_block(block: &mut Block, offset: Slot) {
    for stmt in &mut block.stmts {
        match stmt {
            Stmt::Store(slot, e) => {
                *slot += offset;
                shift(e, offset);
            }
            Stmt::Eval(e) | Stmt::Return(e) => shift(e, offset),
            Stmt::SetIndex {
                array,
                index,
                value,
            } => {
                *array += offset;
                shift(index, offset);
                shift(value, offset);
            }
            Stmt::While { cond, body, .. } => {
                cond.iter_mut().for_each(|c| shift(c, offset));
                shift_block(body, offset);
            }
            Stmt::Do { body, cond, .. } => {
                shift_block(body, offset);
                shift(cond, offset);
            }
            Stmt::For {
                var,
                counter,
                from,
                to,
                body,
                ..
            } => {
                *var += offset;
                counter.iter_mut().for_each(|c| *c += offset);
                shift(from, offset);
                shift(to, offset);
                shift_block(body, offset);
            }
            Stmt::Break | Stmt::Continue => {}
        }
    }
    shift(&mut block.value, offset);
}

fn shift(e: &mut Expr, offset: Slot) {
    match e {
        Expr::Int(_) | Expr::Float(_) | Expr::Bool(_) | Expr::Unit => {}
        Expr::Load(slot, _) | Expr::Len(slot) => *slot += offset,
        Expr::Index { array, index, .. } => {
            *array += offset;
            shift(index, offset);
        }
        Expr::Binary { lhs, rhs, .. } | Expr::And(lhs, rhs) | Expr::Or(lhs, rhs) => {
            shift(lhs, offset);
            shift(rhs, offset);
        }
        Expr::Unary { arg, .. } => shift(arg, offset),
        Expr::If { cond, then, other } => {
            shift(cond, offset);
            shift_block(then, offset);
            shift_block(other, offset);
        }
        Expr::Block(block) => shift_block(block, offset),
        Expr::Call { args, .. } => args.iter_mut().for_each(|a| shift(a, offset)),
        Expr::Inlined { params, body, .. } => {
            for (slot, a) in params {
                *slot += offset;
                shift(a, offset);
            }
            shift_block(body, offset);
        }
    }
}
