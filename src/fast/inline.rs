//! Inlining: a call of a small function becomes a copy of its body in the caller, so a recursive
//! function like `fib` makes half as many real calls (the copy's own calls stay calls). The
//! copy keeps the call's depth check and operation charge, so limits and errors do not change.

use super::ir::{Expr, Function, Slot, Stmt, VisitMut};

/// Bodies at most this big (see [`super::ir::Block::size`]) are copied.
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
            f.body.visit_mut(&mut into);
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

impl VisitMut for Into<'_> {
    fn expr(&mut self, e: &mut Expr) {
        let Expr::Call { callee, args, .. } = e else {
            return;
        };
        let callee = &self.functions[*callee];
        // A callee with heap slots keeps its own (they are numbered apart and freed on return),
        // and one that returns a heap value returns it through the frame.
        let scalar = callee.heap_slots == 0 && !callee.ret.is_heap();
        let small = scalar && callee.body.size() <= MAX_SIZE;
        if self.copies < MAX_COPIES && !callee.body.jumps() && small {
            *e = self.copy(callee, std::mem::take(args));
        }
    }
}

impl Into<'_> {
    /// `callee`'s body with its slots moved past the caller's, its parameters set from `args`.
    fn copy(&mut self, callee: &Function, args: Vec<Expr>) -> Expr {
        let offset = self.slots;
        self.slots += callee.slots;
        self.copies += 1;
        let mut body = callee.body.clone();
        body.visit_mut(&mut Shift(offset));
        if self.level + 1 < MAX_LEVELS {
            self.level += 1;
            body.visit_mut(self);
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

/// Moves every slot a body names by an offset.
struct Shift(Slot);

impl VisitMut for Shift {
    fn stmt(&mut self, s: &mut Stmt) {
        match s {
            Stmt::Store(slot, _) | Stmt::SetIndex { array: slot, .. } => *slot += self.0,
            Stmt::For { var, counter, .. } => {
                *var += self.0;
                counter.iter_mut().for_each(|c| *c += self.0);
            }
            _ => {}
        }
    }

    fn expr(&mut self, e: &mut Expr) {
        match e {
            Expr::Load(slot, _) | Expr::Len(slot) | Expr::Index { array: slot, .. } => {
                *slot += self.0
            }
            Expr::Inlined { params, .. } => params.iter_mut().for_each(|(slot, _)| *slot += self.0),
            _ => {}
        }
    }
}
