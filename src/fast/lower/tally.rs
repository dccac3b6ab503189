//! Maps a function builds by key are made as hash tables (`native::Tally`): every `#{}` stored in
//! a local becomes one, and every read of such a local is settled into Rhai's map first, except
//! the reads that know a hash table (`m[k]`, `m.len()`, `m.contains(k)`) and the methods that
//! change their receiver (which check its type when they run, and give the call back to Rhai).

use std::collections::HashSet;

use crate::fast::ir::{EachOp, Expr, Function, Native, Slot, Stmt, VisitMut};

/// Makes `f`'s empty map locals hash tables, and settles them wherever they are read otherwise.
pub(super) fn hash_built_maps(f: &mut Function) {
    let params = f.params.iter().filter(|t| t.is_heap()).count();
    let mut tallies = Tallies {
        params,
        slots: HashSet::new(),
    };
    f.body.visit_mut(&mut tallies);
    if !tallies.slots.is_empty() {
        f.body.visit_mut(&mut Settles(tallies.slots));
    }
}

/// Finds the locals (not parameters: a caller may get those back) given `#{}`, and makes it a
/// hash table.
struct Tallies {
    params: usize,
    slots: HashSet<Slot>,
}

impl VisitMut for Tallies {
    fn stmt(&mut self, s: &mut Stmt) {
        if let Stmt::StoreHeap(slot, value @ Expr::Map(_)) = s
            && matches!(value, Expr::Map(items) if items.is_empty())
            && *slot >= self.params
        {
            *value = Expr::Tally;
            self.slots.insert(*slot);
        }
    }
}

/// Wraps every read of those locals in [`Expr::Settle`], then unwraps the receivers that need
/// no settling (the visit is bottom-up: a receiver is wrapped before its call is seen).
struct Settles(HashSet<Slot>);

impl VisitMut for Settles {
    fn expr(&mut self, e: &mut Expr) {
        match e {
            Expr::Load(slot, ty) if ty.is_heap() && self.0.contains(slot) => {
                *e = Expr::Settle(Box::new(e.clone()));
            }
            Expr::Native { op, args, .. }
                if matches!(op, Native::Index | Native::Len | Native::Contains)
                    || op.changes_receiver() =>
            {
                unwrap(&mut args[0]);
            }
            Expr::Each {
                op: EachOp::Sort,
                args,
                ..
            } => unwrap(&mut args[0]),
            _ => {}
        }
    }
}

fn unwrap(receiver: &mut Expr) {
    if let Expr::Settle(load) = receiver {
        *receiver = std::mem::replace(&mut **load, Expr::Unit);
    }
}
