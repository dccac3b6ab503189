//! Lowering of the array methods that take a function (`map`, `filter`, `reduce`, `sort`,
//! `all`, `some`): a closure or function pointer written in place is compiled as a callee, with
//! the parameters Rhai passes it, so each element costs a compiled call instead of Rhai's.

use rhai::{Expr as RExpr, FnPtr, Stmt as RStmt};

use super::{FnLowerer, R, ty_name};
use crate::fast::ir::{EachOp, Expr, Ty};

impl FnLowerer<'_, '_> {
    /// The method and its function when `.name(args)` is one of the methods above and its
    /// function is a constant pointer or a closure written in place.
    pub(super) fn each_method<'e>(name: &str, args: &'e [RExpr]) -> Option<(EachOp, Closure<'e>)> {
        let op = EachOp::named(name, args.len())?;
        Some((op, Closure::of(args.first()?)?))
    }

    /// `receiver.name(f, rest)`, `f` compiled.
    pub(super) fn each_call(
        &mut self,
        op: EachOp,
        name: &str,
        receiver: Expr,
        f: &Closure<'_>,
        rest: &[RExpr],
    ) -> R<Expr> {
        self.heap_allowed()?;
        if self.session.source.overridden(name) {
            return self.refuse(format!("calls `{name}`, which the host redefined"));
        }
        if !matches!(receiver.ty(), Ty::Array | Ty::Dyn) {
            return self.refuse(format!("calls `{name}` on {}", ty_name(receiver.ty())));
        }
        if op == EachOp::Sort && !self.is_variable(&receiver) {
            return self.refuse("sorts a value that is not a variable");
        }
        if f.pointer.is_curried() {
            return self.refuse(format!(
                "passes `{name}` a function value with curried values"
            ));
        }
        // A closure's captured variables are its first parameters; it gets their values, which
        // is what Rhai's shared variables give it as long as it does not change them.
        let mut captured = Vec::new();
        for var in &f.captured {
            match self.lookup(var) {
                Some(l) if l.ty.elem().is_none() => captured.push(Expr::Load(l.slot, l.ty)),
                _ => return self.refuse(format!("a closure captures `{var}`, not a local here")),
            }
        }
        // Rhai's closure holds that variable's lock, and the method cannot take the array.
        if captured.iter().any(|c| same_variable(c, &receiver)) {
            return self.refuse(format!("a closure given to `{name}` captures its array"));
        }
        let name_of_f = f.pointer.fn_name();
        let (params, index) = self.each_params(op, name, name_of_f, &captured)?;
        let key = (name_of_f.to_string(), params);
        let (callee, _) = self.session.spec(&key)?;
        let changes = self.session.changes_params(callee, captured.len());
        if changes {
            return self.refuse(format!(
                "a closure given to `{name}` changes what it captures"
            ));
        }
        let mut args = vec![receiver];
        args.extend(captured.iter().cloned());
        for a in rest {
            args.push(self.any_expr(a)?);
        }
        Ok(Expr::Each {
            op,
            args,
            captured: captured.len(),
            callee,
            index,
        })
    }

    /// The parameter types the function `f` is called with, as Rhai tries them: first with
    /// the element bound to `this` and no element parameter (not compiled), then with the
    /// element as a parameter, then with its index too. Whether the index is passed.
    fn each_params(
        &self,
        op: EachOp,
        name: &str,
        f: &str,
        captured: &[Expr],
    ) -> R<(Vec<Ty>, bool)> {
        let source = self.session.source;
        // `reduce` passes the result so far before the element; `sort` two elements, always.
        let before: &[Ty] = match op {
            EachOp::Reduce => &[Ty::Dyn],
            EachOp::Sort => &[Ty::Dyn],
            _ => &[],
        };
        let mut params: Vec<Ty> = captured.iter().map(Expr::ty).collect();
        params.extend(before);
        let arity = params.len();
        if op != EachOp::Sort && source.get(f, arity).is_some() {
            return self.refuse(format!("passes `{name}` a function that uses `this`"));
        }
        params.push(Ty::Dyn);
        if source.get(f, arity + 1).is_some() {
            return Ok((params, false));
        }
        params.push(Ty::Int);
        if op != EachOp::Sort && source.get(f, arity + 2).is_some() {
            return Ok((params, true));
        }
        self.refuse(format!(
            "passes `{name}` a function with parameters it does not take"
        ))
    }
}

fn same_variable(a: &Expr, b: &Expr) -> bool {
    matches!((a, b), (Expr::Load(x, tx), Expr::Load(y, ty)) if x == y && tx.is_heap() == ty.is_heap())
}

/// The function an array method is given: a function pointer, or a closure with the variables
/// it captures (Rhai writes `|v| v > k` as `{ share k; curry(Fn("anon$.."), k) }`).
pub(super) struct Closure<'e> {
    pointer: FnPtr,
    captured: Vec<&'e str>,
}

impl<'e> Closure<'e> {
    fn of(e: &'e RExpr) -> Option<Closure<'e>> {
        match e {
            RExpr::DynamicConstant(f, _) => Some(Closure {
                pointer: f.read_lock::<FnPtr>()?.clone(),
                captured: Vec::new(),
            }),
            RExpr::Stmt(block) => match block.statements() {
                [RStmt::Share(_), RStmt::Expr(curry)] => Closure::curried(curry),
                [RStmt::Share(_), RStmt::FnCall(curry, _)] => Closure::curry_call(curry),
                _ => None,
            },
            _ => None,
        }
    }

    fn curried(e: &'e RExpr) -> Option<Closure<'e>> {
        match e {
            RExpr::FnCall(call, _) => Closure::curry_call(call),
            _ => None,
        }
    }

    fn curry_call(call: &'e rhai::FnCallExpr) -> Option<Closure<'e>> {
        let [RExpr::DynamicConstant(f, _), vars @ ..] = call.args.as_slice() else {
            return None;
        };
        if call.name.as_str() != "curry" || !call.namespace.is_empty() {
            return None;
        }
        let captured = vars
            .iter()
            .map(|v| match v {
                RExpr::Variable(var, _, _) if var.2.is_empty() => Some(var.1.as_str()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Closure {
            pointer: f.read_lock::<FnPtr>()?.clone(),
            captured,
        })
    }
}
