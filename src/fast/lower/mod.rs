//! Lowers Rhai's AST to the typed form, one specialization at a time: argument types fix every
//! local's type, so a function is either fully typed or refused, with the reason.

mod each;
mod heap;
mod last_use;
mod tally;

use std::collections::HashMap;

use rhai::{ASTFlags, Dynamic, Expr as RExpr, FnCallExpr, INT, Stmt as RStmt, StmtBlock, Token};

use super::{
    closure::Scalar,
    ir::{BinOp, Block, Expr, Function, Slot, Stmt, Ty, UnOp},
    native::Native,
    source::{FnSource, Source},
};

/// The most arrays of any values a compiled call unboxes (each doubles the specializations).
const MAX_UNBOXED: usize = 2;

/// A specialization: a function name and its argument types.
pub(crate) type SpecKey = (String, Vec<Ty>);

/// The functions reached from one entry specialization, in the typed form.
pub(crate) struct Lowered {
    pub(crate) functions: Vec<Function>,
    pub(crate) entry: usize,
}

/// Lowers `entry` and everything it calls; `Err` says why it cannot be compiled.
pub(crate) fn lower(source: &Source, entry: &SpecKey) -> Result<Lowered, String> {
    // Recursive calls assume a return type; a wrong guess is learned and the lowering redone.
    let mut learned: HashMap<SpecKey, Ty> = HashMap::new();
    for _ in 0..16 {
        let mut session = Session {
            source,
            functions: Vec::new(),
            ids: HashMap::new(),
            in_progress: HashMap::new(),
            learned: &learned,
            guesses: Vec::new(),
        };
        match session.spec(entry) {
            Ok((id, _)) => {
                let functions = session
                    .functions
                    .into_iter()
                    .map(|f| f.expect("every started specialization finished"))
                    .collect();
                return Ok(Lowered {
                    functions,
                    entry: id,
                });
            }
            Err(Refusal::Retry(key, ty)) => {
                learned.insert(key, ty);
            }
            // A refusal under a guessed return type may be the guess's fault: try the next.
            Err(Refusal::No(why)) => {
                let next = session.guesses.iter().find_map(|(key, ty)| {
                    let at = GUESSES.iter().position(|g| g == ty)?;
                    GUESSES.get(at + 1).map(|next| (key.clone(), *next))
                });
                match next {
                    Some((key, ty)) => {
                        learned.insert(key, ty);
                    }
                    None => return Err(why),
                }
            }
        }
    }
    Err(format!(
        "{}: recursion whose return type does not settle",
        label(entry)
    ))
}

/// Return types a recursive call may assume for a function still being lowered, in order.
const GUESSES: [Ty; 4] = [Ty::Int, Ty::Float, Ty::Bool, Ty::Unit];

enum Refusal {
    No(String),
    /// A recursive call assumed the wrong return type for this specialization.
    Retry(SpecKey, Ty),
}

type R<T> = Result<T, Refusal>;

fn no<T>(why: impl Into<String>) -> R<T> {
    Err(Refusal::No(why.into()))
}

pub(crate) fn label((name, args): &SpecKey) -> String {
    let args: Vec<&str> = args.iter().map(|t| ty_name(*t)).collect();
    let args = args.join(", ");
    if name.starts_with("anon$") {
        format!("closure({args})")
    } else if name.starts_with("loop at ") && !args.is_empty() {
        format!("{name} (on {args})")
    } else {
        format!("{name}({args})")
    }
}

pub(crate) fn ty_name(ty: Ty) -> &'static str {
    match ty {
        Ty::Int => "int",
        Ty::Float => "float",
        Ty::Bool => "bool",
        Ty::Unit => "()",
        Ty::IntArray => "[int]",
        Ty::FloatArray => "[float]",
        Ty::Char => "char",
        Ty::Str => "string",
        Ty::Array => "array",
        Ty::Map => "map",
        Ty::Dyn => "any value",
    }
}

struct Session<'a> {
    source: &'a Source,
    functions: Vec<Option<Function>>,
    ids: HashMap<SpecKey, usize>,
    /// Specializations being lowered, with the return type their recursive calls assumed.
    in_progress: HashMap<usize, Option<Ty>>,
    learned: &'a HashMap<SpecKey, Ty>,
    /// The return types assumed so far in this attempt.
    guesses: Vec<(SpecKey, Ty)>,
}

impl Session<'_> {
    /// Whether specialization `key` lowers; nothing of it is kept.
    fn would_lower(&mut self, key: &SpecKey) -> R<bool> {
        let (started, guessed) = (self.functions.len(), self.guesses.len());
        let lowered = match self.spec(key) {
            Ok(_) => true,
            Err(Refusal::No(_)) => false,
            Err(retry) => return Err(retry),
        };
        self.functions.truncate(started);
        self.ids.retain(|_, id| *id < started);
        self.in_progress.retain(|id, _| *id < started);
        self.guesses.truncate(guessed);
        Ok(lowered)
    }

    /// Whether lowered specialization `id` assigns to one of its first `count` parameters (one
    /// still being lowered is assumed to).
    fn changes_params(&self, id: usize, count: usize) -> bool {
        self.functions[id]
            .as_ref()
            .is_none_or(|f| f.param_uses(count).changes_any())
    }

    /// The id and return type of a specialization, lowering it first if needed.
    fn spec(&mut self, key: &SpecKey) -> R<(usize, Ty)> {
        if let Some(&id) = self.ids.get(key) {
            if let Some(f) = &self.functions[id] {
                return Ok((id, f.ret));
            }
            let guess = self.learned.get(key).copied().unwrap_or(GUESSES[0]);
            self.in_progress.insert(id, Some(guess));
            self.guesses.push((key.clone(), guess));
            return Ok((id, guess));
        }
        let Some(def) = self.source.get(&key.0, key.1.len()) else {
            return no(format!("{}: no such script function", label(key)));
        };
        if let Some(why) = &def.refusal {
            return no(format!("{}: {why}", label(key)));
        }
        let id = self.functions.len();
        self.functions.push(None);
        self.ids.insert(key.clone(), id);
        self.in_progress.insert(id, None);
        let function = FnLowerer::new(self, key).function(def)?;
        if let Some(Some(assumed)) = self.in_progress.remove(&id)
            && assumed != function.ret
        {
            return Err(Refusal::Retry(key.clone(), function.ret));
        }
        let ret = function.ret;
        self.functions[id] = Some(function);
        Ok((id, ret))
    }
}

struct Local {
    name: String,
    slot: Slot,
    ty: Ty,
    constant: bool,
}

struct FnLowerer<'s, 'a> {
    session: &'s mut Session<'a>,
    name: String,
    label: String,
    params: Vec<Ty>,
    scope: Vec<Local>,
    slots: usize,
    heap_slots: usize,
    returns: Vec<Ty>,
    /// Nodes counted so far in the innermost loop body (or the function body outside loops).
    cost: Vec<u64>,
    loops: usize,
    /// Lowering a loop of the top-level code (see [`FnSource::top_level`]).
    top_level: bool,
}

impl<'s, 'a> FnLowerer<'s, 'a> {
    fn new(session: &'s mut Session<'a>, key: &SpecKey) -> Self {
        FnLowerer {
            session,
            name: key.0.clone(),
            label: label(key),
            params: key.1.clone(),
            scope: Vec::new(),
            slots: 0,
            heap_slots: 0,
            returns: Vec::new(),
            cost: vec![1],
            loops: 0,
            top_level: false,
        }
    }

    fn refuse<T>(&self, why: impl std::fmt::Display) -> R<T> {
        no(format!("{}: {why}", self.label))
    }

    /// Refuses `what` (branches of one value) when they have different types.
    fn same_types(&self, what: &str, a: Ty, b: Ty) -> R<()> {
        match a == b {
            true => Ok(()),
            false => self.refuse(format!(
                "{what} have different types ({} and {})",
                ty_name(a),
                ty_name(b)
            )),
        }
    }

    fn function(mut self, def: &FnSource) -> R<Function> {
        self.top_level = def.top_level;
        for (name, ty) in def.params.iter().zip(self.params.clone()) {
            self.declare(name, ty, false);
        }
        let body = self.block(&def.body, true)?;
        // The value of the last statement is returned, unless control never gets there.
        let ret = if falls_off_never(&body) {
            self.returns.first().copied().unwrap_or(Ty::Unit)
        } else {
            body.ty()
        };
        if let Some(other) = self.returns.iter().find(|r| **r != ret) {
            return self.refuse(format!(
                "returns both {} and {}",
                ty_name(*other),
                ty_name(ret)
            ));
        }
        let mut function = Function {
            name: self.name.clone(),
            params: self.params.clone(),
            ret,
            slots: self.slots,
            heap_slots: self.heap_slots,
            body,
            entry_cost: self.cost[0],
        };
        tally::hash_built_maps(&mut function, self.top_level);
        last_use::move_last_uses(&mut function);
        Ok(function)
    }

    fn declare(&mut self, name: &str, ty: Ty, constant: bool) -> Slot {
        let counter = match ty.is_heap() {
            true => &mut self.heap_slots,
            false => &mut self.slots,
        };
        let slot = *counter;
        *counter += 1;
        self.scope.push(Local {
            name: name.to_string(),
            slot,
            ty,
            constant,
        });
        slot
    }

    fn lookup(&self, name: &str) -> Option<&Local> {
        self.scope.iter().rev().find(|l| l.name == name)
    }

    fn tick(&mut self) {
        if let Some(c) = self.cost.last_mut() {
            *c += 1;
        }
    }

    /// A block in its own scope; `want_value`: its last statement's value is the block's.
    fn block(&mut self, stmts: &[RStmt], want_value: bool) -> R<Block> {
        let mark = self.scope.len();
        let mut out = Vec::with_capacity(stmts.len());
        let mut value = Expr::Unit;
        for (i, stmt) in stmts.iter().enumerate() {
            let last = i + 1 == stmts.len();
            match self.stmt(stmt, want_value && last)? {
                Lowered1::Stmt(s) => out.push(s),
                Lowered1::Value(e) if want_value && last => value = e,
                Lowered1::Value(e) => out.push(Stmt::Eval(e)),
                Lowered1::Nothing => {}
            }
        }
        self.scope.truncate(mark);
        Ok(Block { stmts: out, value })
    }

    fn stmt_block(&mut self, block: &StmtBlock, want_value: bool) -> R<Block> {
        self.block(block.statements(), want_value)
    }

    fn stmt(&mut self, stmt: &RStmt, want_value: bool) -> R<Lowered1> {
        self.tick();
        Ok(match stmt {
            RStmt::Noop(_) => Lowered1::Nothing,
            RStmt::Expr(e) => Lowered1::Value(self.expr(e)?),
            RStmt::FnCall(call, _) => Lowered1::Value(self.call(call)?),
            RStmt::Block(block) => {
                Lowered1::Value(Expr::Block(Box::new(self.stmt_block(block, want_value)?)))
            }
            RStmt::If(flow, _) => {
                Lowered1::Value(self.if_expr(&flow.expr, &flow.body, &flow.branch, want_value)?)
            }
            RStmt::Var(var, flags, _) => {
                let (ident, init, _) = &**var;
                let init = self.expr(init)?;
                let ty = init.ty();
                let slot = self.declare(&ident.name, ty, flags.contains(ASTFlags::CONSTANT));
                Lowered1::Stmt(match ty.is_heap() {
                    true => Stmt::StoreHeap(slot, init),
                    false => Stmt::Store(slot, init),
                })
            }
            RStmt::Assignment(assign) => Lowered1::Stmt(self.assignment(&assign.0, &assign.1)?),
            RStmt::While(flow, _) => {
                let cond = match &flow.expr {
                    RExpr::Unit(_) => None,
                    e => Some(self.condition(e)?),
                };
                let (body, cost) = self.loop_body(&flow.body, |_| Ok(()))?;
                Lowered1::Stmt(Stmt::While { cond, body, cost })
            }
            RStmt::Do(flow, flags, _) => {
                let (body, cost) = self.loop_body(&flow.body, |_| Ok(()))?;
                let cond = self.condition(&flow.expr)?;
                Lowered1::Stmt(Stmt::Do {
                    body,
                    cond,
                    until: flags.contains(ASTFlags::NEGATED),
                    cost,
                })
            }
            RStmt::For(f, _) if is_range(&f.2.expr) => {
                Lowered1::Stmt(self.for_loop(&f.0.name, f.1.as_ref(), &f.2)?)
            }
            RStmt::For(f, _) => Lowered1::Stmt(self.for_each(&f.0.name, f.1.as_ref(), &f.2)?),
            RStmt::BreakLoop(value, flags, _) => {
                if value.is_some() {
                    return self.refuse("`break` with a value");
                }
                if self.loops == 0 {
                    return self.refuse("`break` or `continue` outside a loop");
                }
                Lowered1::Stmt(if flags.contains(ASTFlags::BREAK) {
                    Stmt::Break
                } else {
                    Stmt::Continue
                })
            }
            RStmt::Return(value, flags, _) => {
                if flags.contains(ASTFlags::BREAK) {
                    return self.refuse("`throw`");
                }
                if self.top_level {
                    return self.refuse("`return` (which ends the script here)");
                }
                let value = match value {
                    Some(e) => self.expr(e)?,
                    None => Expr::Unit,
                };
                self.returns.push(value.ty());
                Lowered1::Stmt(Stmt::Return(value))
            }
            #[cfg(feature = "grain")]
            RStmt::Switch(x, _) => Lowered1::Value(self.switch(x, want_value)?),
            other => return self.refuse(format!("uses {}", stmt_kind(other))),
        })
    }

    fn loop_body(
        &mut self,
        body: &StmtBlock,
        declare: impl FnOnce(&mut Self) -> R<()>,
    ) -> R<(Block, u64)> {
        self.cost.push(1);
        self.loops += 1;
        let mark = self.scope.len();
        declare(self)?;
        let block = self.stmt_block(body, false);
        self.scope.truncate(mark);
        self.loops -= 1;
        let cost = self.cost.pop().unwrap_or(1);
        Ok((block?, cost))
    }

    fn for_loop(
        &mut self,
        var: &str,
        counter: Option<&rhai::Ident>,
        flow: &rhai::FlowControl,
    ) -> R<Stmt> {
        let (from, to, inclusive) = self.range(&flow.expr)?;
        let mut slots = (0, None);
        let (body, cost) = self.loop_body(&flow.body, |this| {
            slots.0 = this.declare(var, Ty::Int, false);
            slots.1 = counter.map(|c| this.declare(&c.name, Ty::Int, false));
            Ok(())
        })?;
        Ok(Stmt::For {
            var: slots.0,
            counter: slots.1,
            from,
            to,
            inclusive,
            body,
            cost,
        })
    }

    fn range(&mut self, e: &RExpr) -> R<(Expr, Expr, bool)> {
        match e {
            RExpr::FnCall(call, _)
                if matches!(
                    call.op_token,
                    Some(Token::ExclusiveRange | Token::InclusiveRange)
                ) && call.args.len() == 2 =>
            {
                let from = self.expr(&call.args[0])?;
                let from = self.coerce(from, Ty::Int, "a range's start")?;
                let to = self.expr(&call.args[1])?;
                let to = self.coerce(to, Ty::Int, "a range's end")?;
                if from.ty() != Ty::Int || to.ty() != Ty::Int {
                    return self.refuse("`for` over a range that is not of integers");
                }
                Ok((from, to, call.op_token == Some(Token::InclusiveRange)))
            }
            RExpr::DynamicConstant(d, _) => constant_range(d).map_or_else(
                || self.refuse("`for` over something other than a range"),
                Ok,
            ),
            _ => self.refuse("`for` over something other than a range of integers"),
        }
    }

    fn condition(&mut self, e: &RExpr) -> R<Expr> {
        let mut cond = self.expr(e)?;
        if cond.ty() == Ty::Dyn {
            cond = Expr::Guard(Box::new(cond), Ty::Bool);
        }
        if cond.ty() != Ty::Bool {
            return self.refuse(format!("a condition of type {}", ty_name(cond.ty())));
        }
        Ok(cond)
    }

    fn if_expr(
        &mut self,
        cond: &RExpr,
        then: &StmtBlock,
        other: &StmtBlock,
        want_value: bool,
    ) -> R<Expr> {
        let cond = self.condition(cond)?;
        let then = self.stmt_block(then, want_value)?;
        let other = self.stmt_block(other, want_value)?;
        self.same_types("an `if` whose branches", then.ty(), other.ty())?;
        Ok(Expr::If {
            cond: Box::new(cond),
            then: Box::new(then),
            other: Box::new(other),
        })
    }

    fn assignment(&mut self, op: &rhai::OpAssignment, target: &rhai::BinaryExpr) -> R<Stmt> {
        if let RExpr::Index(x, flags, _) = &target.lhs {
            return self.set_index(op, x, *flags, &target.rhs);
        }
        let RExpr::Variable(var, _, _) = &target.lhs else {
            return self.refuse("assigns to something other than a local variable");
        };
        let name = var.1.as_str();
        let Some(local) = self.lookup(name) else {
            return self.refuse(format!(
                "assigns to `{name}`, which is not a local variable"
            ));
        };
        if local.constant {
            return self.refuse(format!("assigns to the constant `{name}`"));
        }
        let (slot, ty) = (local.slot, local.ty);
        let rhs = self.expr(&target.rhs)?;
        let info = op.get_op_assignment_info();
        // `s += x` changes the string in place (it would be copied whole otherwise).
        if ty == Ty::Str
            && matches!(info, Some((_, _, _, _, Token::Plus, _)))
            && !matches!(rhs.ty(), Ty::Array | Ty::Map)
        {
            return Ok(Stmt::Eval(Expr::Native {
                op: Native::Append,
                args: vec![Expr::Load(slot, ty), rhs],
                ret: Ty::Unit,
            }));
        }
        let value = match info {
            None => rhs,
            Some((_, _, _, _, base, _)) => self.binary(base, Expr::Load(slot, ty), rhs)?,
        };
        let value = self.coerce(value, ty, &format!("`{name}`"))?;
        Ok(match ty.is_heap() {
            true => Stmt::StoreHeap(slot, value),
            false => Stmt::Store(slot, value),
        })
    }

    /// `array[index] = rhs` (or `op=`), keeping the element type.
    fn set_index(
        &mut self,
        op: &rhai::OpAssignment,
        x: &rhai::BinaryExpr,
        flags: ASTFlags,
        rhs: &RExpr,
    ) -> R<Stmt> {
        if !flags.contains(ASTFlags::BREAK) {
            return self.refuse("assigns into an element of an array element or a property");
        }
        if !self.is_numeric_array(&x.lhs) {
            return self.set_item(op, x, rhs);
        }
        let (array, elem) = self.array(&x.lhs, flags)?;
        let index = self.int_index(&x.rhs)?;
        let rhs = self.expr(rhs)?;
        let value = match op.get_op_assignment_info() {
            None => rhs,
            Some((_, _, _, _, base, _)) => {
                let element = Expr::Index {
                    array,
                    index: Box::new(index.clone()),
                    elem,
                };
                self.binary(base, element, rhs)?
            }
        };
        if value.ty() != elem {
            return self.refuse(format!(
                "stores {} into an array of {}",
                ty_name(value.ty()),
                ty_name(elem)
            ));
        }
        Ok(Stmt::SetIndex {
            array,
            index,
            value,
        })
    }

    /// `a[i]`, or `a[i].f()` when the chain goes on (`x.rhs` is then the index and the rest).
    fn index(&mut self, x: &rhai::BinaryExpr, flags: ASTFlags) -> R<Expr> {
        let (index, rest) = match &x.rhs {
            _ if flags.contains(ASTFlags::BREAK) => (&x.rhs, None),
            RExpr::Dot(dot, _, _) => (&dot.lhs, Some(&dot.rhs)),
            _ => return self.refuse("indexes an element of an element (nested indexing)"),
        };
        let element = if self.is_numeric_array(&x.lhs) {
            let (array, elem) = self.array(&x.lhs, flags)?;
            Expr::Index {
                array,
                index: Box::new(self.int_index(index)?),
                elem,
            }
        } else {
            if flags.contains(ASTFlags::NEGATED) {
                return self.refuse("uses `?[`");
            }
            let target = self.expr(&x.lhs)?;
            let key = self.expr(index)?;
            self.heap_index(target, key)?
        };
        match rest {
            Some(rest) => self.method_chain(element, rest),
            None => Ok(element),
        }
    }

    /// Whether `e` names an array-of-numbers parameter.
    fn is_numeric_array(&self, e: &RExpr) -> bool {
        matches!(e, RExpr::Variable(var, _, _)
            if self.lookup(var.1.as_str()).is_some_and(|l| l.ty.elem().is_some()))
    }

    /// The slot and element type of the array parameter `e` names.
    fn array(&self, e: &RExpr, flags: ASTFlags) -> R<(Slot, Ty)> {
        if flags.contains(ASTFlags::NEGATED) {
            return self.refuse("uses `?[`");
        }
        if let RExpr::Variable(var, _, _) = e
            && let Some(local) = self.lookup(var.1.as_str())
            && let Some(elem) = local.ty.elem()
        {
            return Ok((local.slot, elem));
        }
        self.refuse("indexes something other than an array of numbers")
    }

    fn int_index(&mut self, e: &RExpr) -> R<Expr> {
        let index = self.expr(e)?;
        if index.ty() != Ty::Int {
            return self.refuse(format!("an index of type {}", ty_name(index.ty())));
        }
        Ok(index)
    }

    /// An expression whose value is a number, a bool or unit: arrays are only indexed and
    /// measured.
    fn expr(&mut self, e: &RExpr) -> R<Expr> {
        let value = self.any_expr(e)?;
        if value.ty().elem().is_some() {
            return self.refuse("uses an array other than by index or `len`");
        }
        Ok(value)
    }

    fn any_expr(&mut self, e: &RExpr) -> R<Expr> {
        self.tick();
        let value = match self.heap_expr(e) {
            Some(heap) => heap?,
            None => self.scalar_expr(e)?,
        };
        if value.ty().is_heap() {
            self.heap_allowed()?;
        }
        Ok(value)
    }

    /// The expressions of the numeric subset (and variables, calls, indexing of any type).
    fn scalar_expr(&mut self, e: &RExpr) -> R<Expr> {
        Ok(match e {
            RExpr::IntegerConstant(i, _) => Expr::Int(*i),
            RExpr::FloatConstant(f, _) => Expr::Float(**f),
            RExpr::BoolConstant(b, _) => Expr::Bool(*b),
            RExpr::Unit(_) => Expr::Unit,
            RExpr::DynamicConstant(d, _) => scalar_constant(d).map_or_else(
                || self.refuse(format!("a constant of type {}", d.type_name())),
                Ok,
            )?,
            RExpr::Variable(var, _, _) => {
                let name = var.1.as_str();
                if !var.2.is_empty() {
                    return self.refuse(format!("uses the qualified name `{name}`"));
                }
                match self.lookup(name) {
                    Some(local) => Expr::Load(local.slot, local.ty),
                    None => {
                        return self
                            .refuse(format!("uses `{name}`, which is not a local variable"));
                    }
                }
            }
            RExpr::FnCall(call, _) => self.call(call)?,
            RExpr::Dot(dot, _, _) => {
                let receiver = self.any_expr(&dot.lhs)?;
                self.method_chain(receiver, &dot.rhs)?
            }
            RExpr::Index(x, flags, _) => self.index(x, *flags)?,
            RExpr::And(chain, _) | RExpr::Or(chain, _) => {
                let and = matches!(e, RExpr::And(..));
                let mut parts = chain.iter().map(|p| self.condition(p));
                let mut acc = parts.next().unwrap_or(Ok(Expr::Bool(and)))?;
                for part in parts {
                    let part = part?;
                    acc = if and {
                        Expr::And(Box::new(acc), Box::new(part))
                    } else {
                        Expr::Or(Box::new(acc), Box::new(part))
                    };
                }
                acc
            }
            RExpr::Stmt(block) => Expr::Block(Box::new(self.stmt_block(block, true)?)),
            other => return self.refuse(format!("uses {}", expr_kind(other))),
        })
    }

    fn call(&mut self, call: &FnCallExpr) -> R<Expr> {
        if !call.namespace.is_empty() {
            return self.refuse(format!("calls the qualified function `{}`", call.name));
        }
        if call.capture_parent_scope {
            return self.refuse(format!(
                "calls `{}!` (which sees the caller's scope)",
                call.name
            ));
        }
        if let Some(op) = &call.op_token {
            return match call.args.as_slice() {
                [a, b] => {
                    let (a, b) = (self.expr(a)?, self.expr(b)?);
                    self.binary(op, a, b)
                }
                [a] => {
                    let a = self.expr(a)?;
                    self.unary(op, a)
                }
                _ => self.refuse(format!("uses the operator `{}`", call.name)),
            };
        }
        let args = call
            .args
            .iter()
            .map(|a| self.any_expr(a))
            .collect::<R<Vec<_>>>()?;
        self.named_call(call.name.as_str(), args)
    }

    /// A call of `name` on lowered `args` (a method's receiver first): a script function first,
    /// as Rhai resolves it, then the natives the tier has.
    fn named_call(&mut self, name: &str, args: Vec<Expr>) -> R<Expr> {
        if self.session.source.get(name, args.len()).is_some() {
            // Numeric arrays are unboxed for the entry call only.
            if args.iter().any(|a| a.ty().elem().is_some()) {
                return self.refuse(format!("passes a numeric array to `{name}`"));
            }
            let key: SpecKey = (name.to_string(), args.iter().map(Expr::ty).collect());
            if self.unboxed_is_better(&key)? {
                return self.unboxing_call(key, args);
            }
            let (callee, ret) = self.session.spec(&key)?;
            return Ok(Expr::Call { callee, args, ret });
        }
        self.native_call(name, args)
    }

    /// Whether `key` passes arrays that its function would take unboxed, as arrays of floats
    /// or of ints: a call from Rhai unboxes them, and the function runs several times faster
    /// than on arrays of any values (the caller then stays in Rhai).
    fn unboxed_is_better(&mut self, key: &SpecKey) -> R<bool> {
        if !key.1.contains(&Ty::Array) {
            return Ok(false);
        }
        for numbers in [Ty::FloatArray, Ty::IntArray] {
            let params = key
                .1
                .iter()
                .map(|&t| if t == Ty::Array { numbers } else { t });
            if self
                .session
                .would_lower(&(key.0.clone(), params.collect()))?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A call of `key` that unboxes its arrays of any values (see [`Expr::CallUnboxing`]): the
    /// specializations for arrays of floats and of ints, in every combination that lowers, then
    /// `key` itself if it lowers (for arrays that hold other values).
    fn unboxing_call(&mut self, key: SpecKey, args: Vec<Expr>) -> R<Expr> {
        let (name, types) = key;
        let arrays = types.iter().filter(|&&t| t == Ty::Array).count();
        if arrays > MAX_UNBOXED {
            return self.refuse(format!("passes more than {MAX_UNBOXED} arrays to `{name}`"));
        }
        // Bit `n` of `kinds`: whether the `n`th array holds ints rather than floats.
        let unboxed = |kinds: u32| -> Vec<Ty> {
            let mut nth = 0;
            types
                .iter()
                .map(|&t| match t {
                    Ty::Array => {
                        nth += 1;
                        [Ty::FloatArray, Ty::IntArray][(kinds >> (nth - 1) & 1) as usize]
                    }
                    t => t,
                })
                .collect()
        };
        let mut candidates: Vec<Vec<Ty>> = (0..1u32 << arrays).map(unboxed).collect();
        candidates.push(types);
        let (mut callees, mut ret) = (Vec::new(), None);
        for params in candidates {
            let key = (name.clone(), params);
            if !self.session.would_lower(&key)? {
                continue;
            }
            let (callee, returns) = self.session.spec(&key)?;
            if returns.is_heap() || ret.is_some_and(|r| r != returns) {
                return self.refuse(format!(
                    "passes arrays to `{name}`, whose result depends on what they hold"
                ));
            }
            ret = Some(returns);
            callees.push((key.1, callee));
        }
        let ret = ret.expect("unboxed_is_better found one that lowers");
        Ok(Expr::CallUnboxing { callees, args, ret })
    }

    /// A call of the native `name`: one of the tier's natives for these types, else an
    /// intrinsic.
    fn native_call(&mut self, name: &str, args: Vec<Expr>) -> R<Expr> {
        if let Some(native) = self.native(name, &args)? {
            return Ok(native);
        }
        match <[Expr; 1]>::try_from(args) {
            Ok([arg]) => self.intrinsic(name, arg),
            Err(_) => self.refuse(format!("calls the native function `{name}`")),
        }
    }

    /// `x.f(a).g`: methods and properties, applied in order.
    fn method_chain(&mut self, receiver: Expr, rest: &RExpr) -> R<Expr> {
        match rest {
            RExpr::Dot(dot, _, _) => {
                let value = self.method(receiver, &dot.lhs)?;
                self.method_chain(value, &dot.rhs)
            }
            one => self.method(receiver, one),
        }
    }

    /// One link of a chain: `.f(args)` or `.name`.
    fn method(&mut self, receiver: Expr, link: &RExpr) -> R<Expr> {
        match link {
            RExpr::MethodCall(call, _) => {
                let name = call.name.as_str();
                if !call.namespace.is_empty() || call.capture_parent_scope {
                    return self.refuse(format!("calls `{name}` in a way the tier does not"));
                }
                // A script function of that name may be what Rhai calls, with `this` bound.
                let arity = call.args.len();
                if (arity..=arity + 1).any(|n| self.session.source.get(name, n).is_some()) {
                    return self.refuse(format!("calls the script function `{name}` as a method"));
                }
                if let Some((op, f)) = Self::each_method(name, &call.args) {
                    return self.each_call(op, name, receiver, &f, &call.args[1..]);
                }
                let mut args = vec![receiver];
                for a in call.args.iter() {
                    args.push(self.expr(a)?);
                }
                self.native_call(name, args)
            }
            RExpr::Property(p, _) => self.property(receiver, &p.2),
            _ => self.refuse("uses a property or a method call"),
        }
    }

    /// The numeric functions compiled inline (unless a host registered its own).
    fn intrinsic(&mut self, name: &str, arg: Expr) -> R<Expr> {
        if self.session.source.overridden(name) {
            return self.refuse(format!("calls `{name}`, which the host redefined"));
        }
        let op = match (name, arg.ty()) {
            ("len", Ty::IntArray | Ty::FloatArray) => match arg {
                Expr::Load(slot, _) => return Ok(Expr::Len(slot)),
                _ => return self.refuse("measures an array that is not a parameter"),
            },
            ("to_float", Ty::Float) | ("to_int", Ty::Int) => return Ok(arg),
            ("to_float", Ty::Int) => UnOp::ToFloat,
            ("to_int", Ty::Float) => UnOp::ToInt,
            ("abs", Ty::Int | Ty::Float) => UnOp::Abs,
            ("sqrt", Ty::Float) => UnOp::Sqrt,
            ("floor", Ty::Float) => UnOp::Floor,
            ("ceiling", Ty::Float) => UnOp::Ceiling,
            ("round", Ty::Float) => UnOp::Round,
            (name, ty) => {
                return self.refuse(format!(
                    "calls the native function `{name}` on {}",
                    ty_name(ty)
                ));
            }
        };
        Ok(Expr::Unary {
            op,
            arg: Box::new(arg),
        })
    }

    fn unary(&mut self, op: &Token, arg: Expr) -> R<Expr> {
        let op = match (op, arg.ty()) {
            (Token::UnaryPlus | Token::Plus, Ty::Int | Ty::Float) => return Ok(arg),
            (Token::UnaryMinus | Token::Minus, Ty::Int | Ty::Float) => UnOp::Neg,
            (Token::Bang, Ty::Bool) => UnOp::Not,
            (op, ty) => {
                return self.refuse(format!("uses `{}` on {}", op.literal_syntax(), ty_name(ty)));
            }
        };
        Ok(Expr::Unary {
            op,
            arg: Box::new(arg),
        })
    }

    fn binary(&mut self, op: &Token, lhs: Expr, rhs: Expr) -> R<Expr> {
        let Some(bin) = bin_op(op) else {
            return self.refuse(format!("uses the operator `{}`", op.literal_syntax()));
        };
        let (lhs, rhs) = match self.mixed(bin, lhs, rhs)? {
            Ok(mixed) => return Ok(mixed),
            Err(scalars) => scalars,
        };
        let (lt, rt) = (lhs.ty(), rhs.ty());
        let arithmetic = matches!(
            bin,
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem | BinOp::Pow
        );
        let operand = match (lt, rt) {
            (Ty::Int, Ty::Int) => Ty::Int,
            (Ty::Float, Ty::Float) if arithmetic || bin.is_comparison() => Ty::Float,
            (Ty::Int, Ty::Float) | (Ty::Float, Ty::Int) if arithmetic || bin.is_comparison() => {
                Ty::Float
            }
            (Ty::Bool, Ty::Bool)
                if bin.is_comparison()
                    || matches!(bin, BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor) =>
            {
                Ty::Bool
            }
            _ => {
                return self.refuse(format!(
                    "uses `{}` on {} and {}",
                    op.literal_syntax(),
                    ty_name(lt),
                    ty_name(rt)
                ));
            }
        };
        let promote = |e: Expr| {
            if e.ty() == Ty::Int && operand == Ty::Float {
                Expr::Unary {
                    op: UnOp::ToFloat,
                    arg: Box::new(e),
                }
            } else {
                e
            }
        };
        Ok(Expr::Binary {
            op: bin,
            operand,
            lhs: Box::new(promote(lhs)),
            rhs: Box::new(promote(rhs)),
        })
    }
}

/// What one statement lowers to.
enum Lowered1 {
    Stmt(Stmt),
    Value(Expr),
    Nothing,
}

fn bin_op(op: &Token) -> Option<BinOp> {
    Some(match op {
        Token::Plus => BinOp::Add,
        Token::Minus => BinOp::Sub,
        Token::Multiply => BinOp::Mul,
        Token::Divide => BinOp::Div,
        Token::Modulo => BinOp::Rem,
        Token::PowerOf => BinOp::Pow,
        Token::LeftShift => BinOp::Shl,
        Token::RightShift => BinOp::Shr,
        Token::Ampersand => BinOp::BitAnd,
        Token::Pipe => BinOp::BitOr,
        Token::XOr => BinOp::BitXor,
        Token::EqualsTo => BinOp::Eq,
        Token::NotEqualsTo => BinOp::Ne,
        Token::LessThan => BinOp::Lt,
        Token::LessThanEqualsTo => BinOp::Le,
        Token::GreaterThan => BinOp::Gt,
        Token::GreaterThanEqualsTo => BinOp::Ge,
        _ => return None,
    })
}

fn scalar_constant(d: &Dynamic) -> Option<Expr> {
    Some(match super::scalar(d)? {
        Scalar::Int(i) => Expr::Int(i),
        Scalar::Float(f) => Expr::Float(f),
        Scalar::Bool(b) => Expr::Bool(b),
        Scalar::Char(c) => Expr::Char(c),
        Scalar::Unit => Expr::Unit,
    })
}

fn constant_range(d: &Dynamic) -> Option<(Expr, Expr, bool)> {
    if let Some(r) = d.read_lock::<std::ops::Range<INT>>() {
        return Some((Expr::Int(r.start), Expr::Int(r.end), false));
    }
    let r = d.read_lock::<std::ops::RangeInclusive<INT>>()?;
    Some((Expr::Int(*r.start()), Expr::Int(*r.end()), true))
}

/// Whether control can never fall off the end of this body: it ends with a `return`, or with a
/// `loop` (no condition) that only `return` leaves.
fn falls_off_never(body: &Block) -> bool {
    match body.stmts.last() {
        Some(Stmt::Return(_)) => true,
        Some(Stmt::While {
            cond: None, body, ..
        }) => !has_break(&body.stmts),
        _ => false,
    }
}

fn has_break(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| match s {
        Stmt::Break => true,
        Stmt::Eval(e) | Stmt::Store(_, e) | Stmt::StoreHeap(_, e) | Stmt::Return(e) => {
            expr_has_break(e)
        }
        Stmt::SetIndex { index, value, .. }
        | Stmt::SetItem {
            key: index, value, ..
        } => expr_has_break(index) || expr_has_break(value),
        // A nested loop's own `break` leaves only that loop.
        Stmt::While { .. }
        | Stmt::Do { .. }
        | Stmt::For { .. }
        | Stmt::ForEach { .. }
        | Stmt::Continue => false,
    })
}

fn expr_has_break(e: &Expr) -> bool {
    match e {
        Expr::If { then, other, .. } => has_break(&then.stmts) || has_break(&other.stmts),
        Expr::Block(b) => has_break(&b.stmts),
        _ => false,
    }
}

/// Whether a `for` goes over a range of integers (else over an array or a string).
pub(super) fn is_range(e: &RExpr) -> bool {
    match e {
        RExpr::FnCall(call, _) => matches!(
            call.op_token,
            Some(Token::ExclusiveRange | Token::InclusiveRange)
        ),
        RExpr::DynamicConstant(d, _) => constant_range(d).is_some(),
        _ => false,
    }
}

fn stmt_kind(stmt: &RStmt) -> &'static str {
    match stmt {
        RStmt::Switch(..) => "`switch`",
        RStmt::TryCatch(..) => "`try`/`catch`",
        RStmt::Import(..) => "`import`",
        RStmt::Export(..) => "`export`",
        RStmt::Share(..) => "a closure's captured variables",
        _ => "a statement the tier does not compile",
    }
}

fn expr_kind(e: &RExpr) -> &'static str {
    match e {
        RExpr::StringConstant(..) | RExpr::InterpolatedString(..) => "a string",
        RExpr::CharConstant(..) => "a character",
        RExpr::Array(..) => "an array",
        RExpr::Map(..) => "an object map",
        RExpr::Index(..) => "indexing",
        RExpr::ThisPtr(..) => "`this`",
        RExpr::Property(..) => "a property",
        RExpr::MethodCall(..) => "a method call",
        RExpr::Coalesce(..) => "`??`",
        RExpr::Custom(..) => "custom syntax",
        _ => "an expression the tier does not compile",
    }
}
