//! Lowering of the array methods that take a function (`map`, `filter`, `reduce`, `sort`,
//! `all`, `some`): a closure or function pointer written in place is compiled as a callee, with
//! the parameters Rhai passes it, so each element costs a compiled call instead of Rhai's.

use rhai::{Expr as RExpr, FnPtr};

use super::{FnLowerer, R, ty_name};
use crate::fast::ir::{EachOp, Expr, Ty};

impl FnLowerer<'_, '_> {
    /// `receiver.name(args)` when `name` is one of the methods above and its function is a
    /// constant pointer; `None` when it is not such a call.
    pub(super) fn each(&mut self, name: &str, receiver: Expr, args: &[RExpr]) -> Option<R<Expr>> {
        let op = EachOp::named(name, args.len())?;
        let RExpr::DynamicConstant(f, _) = args.first()? else {
            return None;
        };
        let f = f.read_lock::<FnPtr>()?.clone();
        Some(self.each_call(op, name, receiver, &f, &args[1..]))
    }

    fn each_call(
        &mut self,
        op: EachOp,
        name: &str,
        receiver: Expr,
        f: &FnPtr,
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
        if f.is_curried() {
            return self.refuse(format!("passes `{name}` a closure that captures variables"));
        }
        let (params, index) = self.each_params(op, name, f.fn_name())?;
        let key = (f.fn_name().to_string(), params);
        let (callee, _) = self.session.spec(&key)?;
        let mut args = vec![receiver];
        for a in rest {
            args.push(self.any_expr(a)?);
        }
        Ok(Expr::Each {
            op,
            args,
            callee,
            index,
        })
    }

    /// The parameter types the function `f` is called with, as Rhai tries them: first with
    /// the element bound to `this` and no element parameter (not compiled), then with the
    /// element as a parameter, then with its index too. Whether the index is passed.
    fn each_params(&self, op: EachOp, name: &str, f: &str) -> R<(Vec<Ty>, bool)> {
        let source = self.session.source;
        // `reduce` passes the result so far before the element; `sort` two elements, always.
        let before: &[Ty] = match op {
            EachOp::Reduce => &[Ty::Dyn],
            EachOp::Sort => &[Ty::Dyn],
            _ => &[],
        };
        let arity = before.len();
        if op != EachOp::Sort && source.get(f, arity).is_some() {
            return self.refuse(format!("passes `{name}` a function that uses `this`"));
        }
        let mut params = before.to_vec();
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
