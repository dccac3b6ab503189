//! Maps a function builds by key are made as hash tables (`native::Tally`): every `#{}` stored in
//! a local becomes one, and every read of such a local is settled into Rhai's map first, except
//! the reads that know a hash table (`m[k]`, `m.len()`, `m.contains(k)`) and the methods that
//! change their receiver (which check its type when they run, and give the call back to Rhai).

use std::collections::{BTreeSet, HashSet};

use crate::fast::ir::{EachOp, Expr, Function, Native, Slot, Stmt, Ty, VisitMut};

/// Makes `f`'s empty map locals hash tables, and settles them wherever they are read otherwise.
/// `top_level`: `f` is a loop of the top-level code, whose map parameters it changes by key are
/// made hash tables too, on entry (its caller settles them when it takes them back).
pub(super) fn hash_built_maps(f: &mut Function, top_level: bool) {
    let heap_params: Vec<Ty> = f.params.iter().copied().filter(|t| t.is_heap()).collect();
    let mut tallies = Tallies {
        params: heap_params.len(),
        slots: HashSet::new(),
        keyed_params: BTreeSet::new(),
    };
    f.body.visit_mut(&mut tallies);
    if top_level {
        for &slot in &tallies.keyed_params {
            if heap_params[slot] == Ty::Map {
                let hashed = Stmt::StoreHeap(slot, Expr::Tally(Some(slot)));
                f.body.stmts.insert(0, hashed);
                tallies.slots.insert(slot);
            }
        }
    }
    if !tallies.slots.is_empty() {
        f.body.visit_mut(&mut Settles(tallies.slots));
    }
}

/// Finds the locals given `#{}`, and makes it a hash table (not parameters: a caller may get
/// those back), and the parameters the body sets items of.
struct Tallies {
    params: usize,
    slots: HashSet<Slot>,
    keyed_params: BTreeSet<Slot>,
}

impl VisitMut for Tallies {
    fn stmt(&mut self, s: &mut Stmt) {
        match s {
            Stmt::StoreHeap(slot, value) if *slot >= self.params && is_empty_map(value) => {
                *value = Expr::Tally(None);
                self.slots.insert(*slot);
            }
            Stmt::SetItem { target, .. } if *target < self.params => {
                self.keyed_params.insert(*target);
            }
            _ => {}
        }
    }
}

fn is_empty_map(e: &Expr) -> bool {
    matches!(e, Expr::Map(items) if items.is_empty())
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
