//! Rhai's array methods that take a function, with the function compiled: each element costs a
//! compiled call. What each method does with the function's result follows Rhai 1.27's
//! `array_basic.rs` line by line; anything the compiled function cannot do sends the whole call
//! back to Rhai, which then does it (and its error handling) itself.

use std::{cell::RefCell, cmp::Ordering, panic};

use rhai::{Array, Dynamic};

use super::{Bail, Ev, Frame, R, RECORDED_FRAMES, Scalar, bits, enter_running, heap::dynamic};
use crate::fast::{
    ir::{BinOp, EachOp, Expr, Function, Ty},
    native,
};

/// `args[0].op(callee)`, `args[1..=captured]` the values of a closure's captured variables;
/// `index`: the callee takes the element's index last.
pub(super) fn each(
    op: EachOp,
    args: &[Expr],
    captured: usize,
    callee: usize,
    index: bool,
) -> Ev<Dynamic> {
    let recorded = RECORDED_FRAMES.with_borrow(|f| f.as_ref().map(|f| f[callee]));
    let captures: Vec<Capture> = args[1..=captured]
        .iter()
        .map(|a| match a.ty().is_heap() {
            true => Capture::Heap(dynamic(a)),
            false => Capture::Bits(bits(a)),
        })
        .collect();
    let initial = args.get(1 + captured).map(dynamic);
    let before = move |fr: &mut Frame<'_>| -> R<Before> {
        let mut captured = Captured::default();
        for capture in &captures {
            match capture {
                Capture::Bits(value) => captured.bits.push(value(fr)?),
                Capture::Heap(value) => captured.heap.get_mut().push(value(fr)?),
            }
        }
        let initial = initial.as_ref().map(|i| i(fr)).transpose()?;
        Ok(Before { captured, initial })
    };
    on_array(&args[0], before, move |fr, array, owned, before| {
        let f = Callee {
            id: callee,
            index,
            recorded,
            captured: &before.captured,
        };
        match op {
            EachOp::Map => f.map(fr, array),
            EachOp::Filter => f.filter(fr, array, owned),
            EachOp::Reduce => f.reduce(fr, array, before.initial.unwrap_or(Dynamic::UNIT)),
            EachOp::Sort => f.sort(fr, array).map(|()| Dynamic::UNIT),
            EachOp::All => f.find(fr, array, false).map(|found| (!found).into()),
            EachOp::Some => f.find(fr, array, true).map(Dynamic::from),
        }
    })
}

/// A captured variable's value, as the closure's parameter of its type takes it.
enum Capture {
    Bits(Ev<i64>),
    Heap(Ev<Dynamic>),
}

/// What a method evaluates before it takes its array: the closure's captured values and
/// `reduce`'s initial value.
struct Before {
    captured: Captured,
    initial: Option<Dynamic>,
}

/// A closure's captured values, passed before the element on every call (the heap ones lent
/// when the closure keeps its parameters, hence the cell).
#[derive(Default)]
struct Captured {
    bits: Vec<i64>,
    heap: RefCell<Vec<Dynamic>>,
}

/// Runs `f` on the array `receiver`: a variable's own array (taken out of its slot while `f`
/// runs: the function cannot see the caller's variables) or the value of an expression, which
/// `f` then owns (it may take the elements).
/// `before` is evaluated first (it may read the array's variable), as Rhai evaluates a method's
/// arguments before its target.
fn on_array(
    receiver: &Expr,
    before: impl Fn(&mut Frame<'_>) -> R<Before> + Send + Sync + 'static,
    f: impl Fn(&mut Frame<'_>, &mut Array, bool, Before) -> R<Dynamic> + Send + Sync + 'static,
) -> Ev<Dynamic> {
    let apply = move |fr: &mut Frame<'_>, value: &mut Dynamic, owned, first: Before| {
        let mut array = value.as_array_mut().map_err(|_| Bail::Fallback)?;
        f(fr, &mut array, owned, first)
    };
    match receiver {
        Expr::Load(slot, ty) if ty.is_heap() => {
            let slot = *slot;
            Box::new(move |fr| {
                let first = before(fr)?;
                let mut value = std::mem::take(fr.heap_mut(slot));
                let result = apply(fr, &mut value, false, first);
                *fr.heap_mut(slot) = value;
                result
            })
        }
        receiver => {
            let receiver = dynamic(receiver);
            Box::new(move |fr| {
                let mut value = receiver(fr)?;
                let first = before(fr)?;
                apply(fr, &mut value, true, first)
            })
        }
    }
}

/// A comparer's operands compiled apart (see [`Function::keyed_comparer`]).
pub(super) struct Keyed {
    op: BinOp,
    /// The operand that reads the first parameter, then the one that reads the second.
    keys: [Ev<Dynamic>; 2],
    swapped: bool,
    /// One key per element serves both operands (see `KeyedComparer::same`).
    same: bool,
}

impl Keyed {
    /// The operands of the first and the second parameter's, in the comparer's order.
    fn in_order<'k, T>(&self, first: &'k T, second: &'k T) -> (&'k T, &'k T) {
        match self.swapped {
            false => (first, second),
            true => (second, first),
        }
    }

    pub(super) fn of(f: &Function) -> Option<Keyed> {
        let keyed = f.keyed_comparer()?;
        Some(Keyed {
            op: keyed.op,
            keys: keyed.keys.map(dynamic),
            swapped: keyed.swapped,
            same: keyed.same,
        })
    }
}

/// Sorts with `compare` as `slice::sort_by` does; a comparison that stops aborts the sort, with
/// its reason (Rhai would swallow an error there and order by type: the call runs again in Rhai).
fn sort_stopping<T>(array: &mut [T], mut compare: impl FnMut(&T, &T) -> R<Ordering>) -> R<()> {
    let mut stopped = None;
    let sorted = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        array.sort_by(|x, y| match compare(x, y) {
            Ok(order) => order,
            Err(bail) => {
                stopped = Some(bail);
                panic::resume_unwind(Box::new(SortStopped))
            }
        })
    }));
    match (sorted, stopped) {
        (_, Some(bail)) => Err(bail),
        (Ok(()), None) => Ok(()),
        // The sort found the order inconsistent: Rhai's own run reports it.
        (Err(_), None) => Err(Bail::Fallback),
    }
}

/// Sorts `array` by `sign` of the two elements' places, each element carrying its place in its
/// tag meanwhile (so a comparison reads no element: the tag is in the array itself); the tags are
/// put back afterwards. A sign of `None` orders by type, as Rhai does.
fn sort_tagged(array: &mut Array, mut sign: impl FnMut(usize, usize) -> R<Option<i64>>) -> R<()> {
    let tags: Vec<i32> = array.iter().map(Dynamic::tag).collect();
    for (at, v) in array.iter_mut().enumerate() {
        v.set_tag(at as i32);
    }
    let sorted = sort_stopping(array, |x, y| {
        Ok(ordering(sign(x.tag() as usize, y.tag() as usize)?, x, y))
    });
    for v in array.iter_mut() {
        let at = v.tag() as usize;
        v.set_tag(tags[at]);
    }
    sorted
}

/// Whether no difference of two of `keys` overflows, so that a comparer subtracting them orders
/// the elements by key, with ties where their keys are equal.
fn no_difference_overflows(keys: &[i64]) -> bool {
    let (Some(min), Some(max)) = (keys.iter().min(), keys.iter().max()) else {
        return true;
    };
    max.checked_sub(*min).is_some() && min.checked_sub(*max).is_some()
}

/// Sorts `array` by int `keys` (one per element), descending when `swapped` (`b.k - a.k`): the
/// order a comparer subtracting the keys gives, found by comparing pairs of key and place, with
/// no comparer run and no element read. The stable sort keeps ties in their order, as Rhai's
/// does.
fn sort_by_int_keys(
    fr: &mut Frame<'_>,
    array: &mut Array,
    keys: Vec<i64>,
    swapped: bool,
    cost: u64,
) -> R<()> {
    let mut order: Vec<(i64, usize)> = keys.into_iter().zip(0..).collect();
    sort_stopping(&mut order, |x, y| {
        fr.tick(cost)?;
        Ok(match swapped {
            false => x.0.cmp(&y.0),
            true => y.0.cmp(&x.0),
        })
    })?;
    let mut unsorted = std::mem::take(array);
    array.extend(
        order
            .iter()
            .map(|&(_, at)| std::mem::take(&mut unsorted[at])),
    );
    Ok(())
}

/// A comparer's sign on int operands, as [`sign`] reads `native::mixed`'s verdict but with no
/// `Dynamic` made; `None` where Rhai raises an error (an overflow).
fn int_sign(op: BinOp, x: i64, y: i64) -> Option<Option<i64>> {
    match op {
        BinOp::Sub => x.checked_sub(y).map(|d| Some(d.signum())),
        op => native::holds(op, x.cmp(&y)).map(|b| Some(if b { -1 } else { 1 })),
    }
}

/// A comparer's result as Rhai reads it: a number's sign, `true` for "in order".
fn sign(verdict: &Dynamic) -> Option<i64> {
    verdict
        .as_int()
        .or_else(|_| verdict.as_bool().map(|b| if b { -1 } else { 1 }))
        .ok()
}

/// The order of `x` and `y` by a comparer's sign; without one, by their types.
fn ordering(sign: Option<i64>, x: &Dynamic, y: &Dynamic) -> Ordering {
    sign.map_or_else(|| x.type_id().cmp(&y.type_id()), |s| s.cmp(&0))
}

/// The compiled function a method calls.
#[derive(Clone, Copy)]
struct Callee<'c> {
    id: usize,
    index: bool,
    /// Its profiler frame, in a profiled program.
    recorded: Option<u32>,
    captured: &'c Captured,
}

/// Aborts a sort from inside its comparer (without the panic hook's message).
struct SortStopped;

impl Callee<'_> {
    fn map(self, fr: &mut Frame<'_>, array: &mut Array) -> R<Dynamic> {
        let mut out = Array::with_capacity(array.len());
        for at in 0..array.len() {
            let bits = self.on_element(fr, array, at, None)?;
            out.push(self.value(fr, bits));
        }
        Ok(Dynamic::from_array(out))
    }

    /// `owned`: the array is a value about to be dropped, whose elements may be moved.
    fn filter(self, fr: &mut Frame<'_>, array: &mut Array, owned: bool) -> R<Dynamic> {
        let mut out = Array::new();
        for at in 0..array.len() {
            let bits = self.on_element(fr, array, at, None)?;
            if self.truth(fr, bits) {
                out.push(match owned {
                    true => std::mem::take(&mut array[at]),
                    false => array[at].clone(),
                });
            }
        }
        Ok(Dynamic::from_array(out))
    }

    /// Whether some element's result is `want` (`some`: true; `all`: false, so `all` is
    /// `!find(false)`); stops at the first.
    fn find(self, fr: &mut Frame<'_>, array: &mut Array, want: bool) -> R<bool> {
        for at in 0..array.len() {
            let bits = self.on_element(fr, array, at, None)?;
            if self.truth(fr, bits) == want {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn reduce(self, fr: &mut Frame<'_>, array: &mut Array, initial: Dynamic) -> R<Dynamic> {
        let mut result = initial;
        for at in 0..array.len() {
            let bits = self.on_element(fr, array, at, Some(result))?;
            result = self.value(fr, bits);
        }
        Ok(result)
    }

    /// Rhai's `sort` with a comparer: the same `slice::sort_by` on the same elements, so the
    /// same comparisons give the same order.
    fn sort(self, fr: &mut Frame<'_>, array: &mut Array) -> R<()> {
        if array.len() <= 1 {
            return Ok(());
        }
        let code = &fr.program[self.id];
        let unshared = !array.iter().any(Dynamic::is_shared);
        if let Some(keyed) = &code.keyed
            && unshared
            && i32::try_from(array.len()).is_ok()
        {
            return self.sort_by_keys(fr, array, keyed);
        }
        // A comparer that only reads its parameters gets the elements as shared handles (a copy
        // is then a count), made plain values again afterwards.
        let lend = code.only_reads_heap_params && unshared;
        if lend {
            array
                .iter_mut()
                .for_each(|v| *v = std::mem::take(v).into_shared());
        }
        let sorted = sort_stopping(array, |x, y| self.order(fr, x, y));
        if lend {
            array
                .iter_mut()
                .for_each(|v| *v = std::mem::take(v).flatten());
        }
        sorted
    }

    /// [`Callee::sort`] for a [`Keyed`] comparer: its operands are computed once per element,
    /// and compared as ints with no `Dynamic` made when they all are ints.
    fn sort_by_keys(self, fr: &mut Frame<'_>, array: &mut Array, keyed: &Keyed) -> R<()> {
        let mut keys = |param: usize| -> R<Vec<Dynamic>> {
            (0..array.len())
                .map(|at| self.key(fr, array, at, param, &keyed.keys[param]))
                .collect()
        };
        let first = keys(0)?;
        let second = if keyed.same { None } else { Some(keys(1)?) };
        let cost = fr.program[self.id].entry_cost;
        let by_ints = keyed.op == BinOp::Sub || keyed.op.is_comparison();
        let all_ints = |keys: &[Dynamic]| keys.iter().all(Dynamic::is_int);
        if by_ints && all_ints(&first) && second.as_deref().is_none_or(all_ints) {
            let ints = |keys: &[Dynamic]| -> Vec<i64> {
                keys.iter().map(|d| d.as_int().unwrap_or(0)).collect()
            };
            let first = ints(&first);
            if keyed.same && keyed.op == BinOp::Sub && no_difference_overflows(&first) {
                return sort_by_int_keys(fr, array, first, keyed.swapped, cost);
            }
            let second = second.as_deref().map(ints);
            let second = second.as_deref().unwrap_or(&first);
            return sort_tagged(array, |x_at, y_at| {
                fr.tick(cost)?;
                let (lhs, rhs) = keyed.in_order(&first[x_at], &second[y_at]);
                int_sign(keyed.op, *lhs, *rhs).ok_or(Bail::Fallback)
            });
        }
        let second = second.as_deref().unwrap_or(&first);
        sort_tagged(array, |x_at, y_at| {
            fr.tick(cost)?;
            let (lhs, rhs) = keyed.in_order(&first[x_at], &second[y_at]);
            let verdict = native::mixed(keyed.op, lhs, rhs).ok_or(Bail::Fallback)?;
            Ok(sign(&verdict))
        })
    }

    /// The comparer's operand that reads parameter `param`, for element `at` (lent to it as
    /// in [`Callee::on_element`]).
    fn key(
        self,
        fr: &mut Frame<'_>,
        array: &mut Array,
        at: usize,
        param: usize,
        key: &Ev<Dynamic>,
    ) -> R<Dynamic> {
        let lend = fr.program[self.id].keeps_heap_params;
        let place = &mut array[at];
        let mut item = Some(match lend {
            true => std::mem::take(place),
            false => place.clone(),
        });
        let pass = |fr: &mut Frame<'_>, _| {
            for p in 0..2 {
                let value = if p == param { item.take() } else { None };
                fr.push_heap(value.unwrap_or_default());
            }
            Ok(())
        };
        let take_back = |fr: &mut Frame<'_>| {
            if lend {
                *place = std::mem::take(fr.heap_mut(param));
            }
        };
        enter_running(fr, self.id, pass, |fr| key(fr), take_back)
    }

    /// The comparer's verdict on `x` and `y`, read as Rhai reads it: a number's sign, `true`
    /// for "in order", and for anything else the values' types compared.
    fn order(self, fr: &mut Frame<'_>, x: &Dynamic, y: &Dynamic) -> R<Ordering> {
        let bits = self.call(fr, [x.clone(), y.clone()], 0, |_| ())?;
        let sign = match fr.program[self.id].ret {
            Ty::Int => Some(bits),
            Ty::Bool => Some(if bits != 0 { -1 } else { 1 }),
            ty if ty.is_heap() => sign(&std::mem::take(&mut fr.ret_heap)),
            _ => None,
        };
        Ok(ordering(sign, x, y))
    }

    /// Calls the function on element `at` of `array`, after `result` for `reduce`. A function
    /// that keeps its parameters is lent the element, and it goes back into the array after
    /// the call; any other gets a copy, as in Rhai.
    fn on_element(
        self,
        fr: &mut Frame<'_>,
        array: &mut Array,
        at: usize,
        result: Option<Dynamic>,
    ) -> R<i64> {
        let lend = fr.program[self.id].keeps_heap_params;
        let place = &mut array[at];
        let item = match lend {
            true => std::mem::take(place),
            false => place.clone(),
        };
        let param = self.captured.heap.borrow().len() + usize::from(result.is_some());
        let take_back = |fr: &mut Frame<'_>| {
            if lend {
                *place = std::mem::take(fr.heap_mut(param));
            }
        };
        match result {
            Some(result) => self.call(fr, [result, item], at, take_back),
            None => self.call(fr, [item], at, take_back),
        }
    }

    /// Calls the function on `values`, then the index `at` if it takes one; answers the bits of
    /// its result (a heap result is in `ret_heap`). `keep` runs before its heap slots are freed.
    fn call<const N: usize>(
        self,
        fr: &mut Frame<'_>,
        values: [Dynamic; N],
        at: usize,
        keep: impl FnOnce(&mut Frame<'_>),
    ) -> R<i64> {
        if let (Some(frame), Some(record)) = (self.recorded, &mut fr.record) {
            record.enter(frame);
        }
        let lend = fr.program[self.id].keeps_heap_params;
        let pass = |fr: &mut Frame<'_>, _| {
            for v in self.captured.heap.borrow_mut().iter_mut() {
                fr.push_heap(match lend {
                    true => std::mem::take(v),
                    false => v.clone(),
                });
            }
            for v in values {
                fr.push_heap(v);
            }
            for &bits in &self.captured.bits {
                fr.write(fr.top, bits);
                fr.top += 1;
            }
            if self.index {
                fr.write(fr.top, at as i64);
                fr.top += 1;
            }
            Ok(())
        };
        let keep = |fr: &mut Frame<'_>| {
            if lend {
                let mut captured = self.captured.heap.borrow_mut();
                for (param, v) in captured.iter_mut().enumerate() {
                    *v = std::mem::take(fr.heap_mut(param));
                }
            }
            keep(fr)
        };
        let program = fr.program;
        let body = |fr: &mut Frame<'_>| (program[self.id].body)(fr);
        let result = enter_running(fr, self.id, pass, body, keep);
        if let (Some(_), Some(record)) = (self.recorded, &mut fr.record) {
            record.exit(true);
        }
        result
    }

    /// The function's result as a value.
    fn value(self, fr: &mut Frame<'_>, bits: i64) -> Dynamic {
        match fr.program[self.id].ret {
            ty if ty.is_heap() => std::mem::take(&mut fr.ret_heap),
            ty => crate::fast::dynamic(Scalar::from_bits(ty, bits)),
        }
    }

    /// The function's result as a condition: `true` only (any other value counts as `false`).
    fn truth(self, fr: &mut Frame<'_>, bits: i64) -> bool {
        match fr.program[self.id].ret {
            Ty::Bool => bits != 0,
            ty if ty.is_heap() => std::mem::take(&mut fr.ret_heap).as_bool() == Ok(true),
            _ => false,
        }
    }
}
