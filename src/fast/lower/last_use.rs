//! A local's value is moved rather than copied where the function body uses it for the last
//! time: `let kept = all.filter(..)`, `for r in rows { }`, `let b = a;` and `return a` then copy
//! no array or map when nothing reads the variable afterwards.

use std::collections::HashMap;

use crate::fast::ir::{EachOp, Expr, Function, Slot, Stmt, VisitMut};

/// Wraps in [`Expr::Moved`] each local read that consumes its value in a statement of the body's
/// top level (which runs once per call), when that statement mentions the local nowhere else
/// and no later statement mentions it at all. Parameters stay: a caller may get them back.
pub(super) fn move_last_uses(f: &mut Function) {
    let params = f.params.iter().filter(|t| t.is_heap()).count();
    let body = &mut f.body;
    let mut later = Mentions::default();
    body.value.visit_mut(&mut later);
    move_if_last(consumed(&mut body.value), params, &later.0, &HashMap::new());
    for stmt in body.stmts.iter_mut().rev() {
        let mut here = Mentions::default();
        stmt.visit_mut(&mut here);
        let value = match stmt {
            Stmt::StoreHeap(_, e) | Stmt::Return(e) => consumed(e),
            Stmt::ForEach { over, .. } => consumed(over),
            _ => None,
        };
        move_if_last(value, params, &here.0, &later.0);
        for (slot, n) in here.0 {
            *later.0.entry(slot).or_default() += n;
        }
    }
}

/// The local read `e` consumes: `e` itself, or the array a `filter` takes.
fn consumed(e: &mut Expr) -> Option<&mut Expr> {
    match e {
        Expr::Load(_, ty) if ty.is_heap() => Some(e),
        Expr::Each {
            op: EachOp::Filter,
            args,
            ..
        } if matches!(&args[0], Expr::Load(_, ty) if ty.is_heap()) => Some(&mut args[0]),
        _ => None,
    }
}

fn move_if_last(
    load: Option<&mut Expr>,
    params: usize,
    here: &HashMap<Slot, usize>,
    later: &HashMap<Slot, usize>,
) {
    let Some(load) = load else { return };
    let Expr::Load(slot, _) = load else { return };
    let slot = *slot;
    if slot >= params && here.get(&slot) == Some(&1) && !later.contains_key(&slot) {
        *load = Expr::Moved(Box::new(std::mem::replace(load, Expr::Unit)));
    }
}

/// How many times each heap slot is read or written (numeric arrays, in slots of their own, are
/// parameters and never moved).
#[derive(Default)]
struct Mentions(HashMap<Slot, usize>);

impl VisitMut for Mentions {
    fn stmt(&mut self, s: &mut Stmt) {
        let slot = match s {
            Stmt::StoreHeap(slot, _) | Stmt::SetItem { target: slot, .. } => *slot,
            Stmt::ForEach { var, var_ty, .. } if var_ty.is_heap() => *var,
            _ => return,
        };
        *self.0.entry(slot).or_default() += 1;
    }

    fn expr(&mut self, e: &mut Expr) {
        if let Expr::Load(slot, ty) = e
            && ty.is_heap()
        {
            *self.0.entry(*slot).or_default() += 1;
        }
    }
}
