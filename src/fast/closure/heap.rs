//! The back end's heap values: strings, arrays, maps and `Dyn` values as Rhai's own `Dynamic`,
//! in heap slots beside the frame's unboxed ones. A native whose receiver is a heap slot works on
//! the slot in place, as Rhai works on the variable.

use std::ops::ControlFlow;

use rhai::{Dynamic, ImmutableString, Map};

use super::{
    Bail, Ev, Flow, Frame, R, St, after_body, bits, block_statements, block_value, boolean,
    charged, run,
};
use crate::{
    data::Pieces,
    fast::{
        ir::{BinOp, DirectCall, Expr, Stmt, SwitchKey, Ty, VisitMut},
        native::{self, Native},
    },
};

/// Any expression's value as a `Dynamic`.
pub(super) fn dynamic(e: &Expr) -> Ev<Dynamic> {
    match e {
        Expr::Str(s) => {
            let s = Dynamic::from(s.clone());
            Box::new(move |_| Ok(s.clone()))
        }
        Expr::Load(slot, ty) if ty.is_heap() => {
            let slot = *slot;
            Box::new(move |fr| Ok(fr.heap(slot).clone()))
        }
        Expr::Native { op, args, .. } => call(*op, args),
        Expr::Direct { call, args, .. } => direct(call.clone(), args),
        Expr::Item => Box::new(|fr| Ok(fr.item.clone())),
        Expr::Each {
            op,
            args,
            captured,
            callee,
            index,
        } => super::each::each(*op, args, *captured, *callee, *index),
        Expr::Call { callee, args, ret } if ret.is_heap() => {
            let call = super::call(*callee, args);
            Box::new(move |fr| {
                call(fr)?;
                Ok(std::mem::take(&mut fr.ret_heap))
            })
        }
        Expr::Guard(inner, ty) => {
            let (inner, ty) = (dynamic(inner), *ty);
            Box::new(move |fr| {
                let value = inner(fr)?;
                if is_of(&value, ty) {
                    Ok(value)
                } else {
                    Err(Bail::Fallback)
                }
            })
        }
        Expr::Coalesce { lhs, rhs, .. } => {
            let (lhs, rhs) = (dynamic(lhs), dynamic(rhs));
            Box::new(move |fr| match lhs(fr)? {
                value if value.is_unit() => rhs(fr),
                value => Ok(value),
            })
        }
        Expr::Mixed { op, lhs, rhs, .. } => {
            let (op, lhs, rhs) = (*op, dynamic(lhs), dynamic(rhs));
            Box::new(move |fr| {
                let x = lhs(fr)?;
                native::mixed(op, &x, &rhs(fr)?).ok_or(Bail::Fallback)
            })
        }
        Expr::Interpolate(parts) => {
            let parts: Vec<Ev<Dynamic>> = parts.iter().map(dynamic).collect();
            Box::new(move |fr| {
                // Short text stays inline: one allocation, for the string's own cell.
                let mut text = rhai::Identifier::new();
                for part in &parts {
                    let value = part(fr)?;
                    native::display_into(&mut text, &value).ok_or(Bail::Fallback)?;
                }
                Ok(ImmutableString::from(text).into())
            })
        }
        Expr::Array(items) => {
            let items: Vec<Ev<Dynamic>> = items.iter().map(dynamic).collect();
            Box::new(move |fr| {
                let array = items.iter().map(|i| i(fr)).collect::<R<rhai::Array>>()?;
                Ok(Dynamic::from_array(array))
            })
        }
        Expr::Map(items) => map_literal(items),
        Expr::Tally(None) => Box::new(|_| Ok(Dynamic::from(native::Tally::default()))),
        Expr::Tally(Some(slot)) => {
            let slot = *slot;
            Box::new(move |fr| Ok(native::hashed(std::mem::take(fr.heap_mut(slot)))))
        }
        Expr::Moved(load) => {
            let slot = settled_slot(load);
            Box::new(move |fr| Ok(std::mem::take(fr.heap_mut(slot))))
        }
        Expr::Settle(load) => {
            let (slot, load) = (settled_slot(load), dynamic(load));
            Box::new(move |fr| {
                native::settle(fr.heap_mut(slot));
                load(fr)
            })
        }
        Expr::Switch {
            value,
            cases,
            blocks,
            default,
        } => switch(value, cases, blocks, default),
        Expr::If { cond, then, other } if e.ty().is_heap() => {
            let cond = boolean(cond);
            let then = block_value(then, dynamic(&then.value));
            let other = block_value(other, dynamic(&other.value));
            Box::new(move |fr| if cond(fr)? { then(fr) } else { other(fr) })
        }
        Expr::Block(block) if e.ty().is_heap() => block_value(block, dynamic(&block.value)),
        scalar => from_scalar(scalar),
    }
}

/// `#{..}`: a copy of a map made once with the keys, its values set in the keys' order (no
/// sorting of keys per map; the subset has no side effects, so the order is not observable).
fn map_literal(items: &[(ImmutableString, Expr)]) -> Ev<Dynamic> {
    let mut sorted: Vec<&(ImmutableString, Expr)> = items.iter().collect();
    sorted.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    sorted.dedup_by(|a, b| a.0 == b.0); // the parser refuses a key given twice
    let template: Map = sorted
        .iter()
        .map(|(k, _)| (k.as_str().into(), Dynamic::UNIT))
        .collect();
    let values: Vec<Ev<Dynamic>> = sorted.iter().map(|(_, v)| dynamic(v)).collect();
    Box::new(move |fr| {
        let mut map = template.clone();
        for (slot, value) in map.values_mut().zip(&values) {
            *slot = value(fr)?;
        }
        Ok(Dynamic::from_map(map))
    })
}

/// A scalar expression's value as a `Dynamic`.
fn from_scalar(e: &Expr) -> Ev<Dynamic> {
    let ty = e.ty();
    let value = bits(e);
    Box::new(move |fr| {
        let b = value(fr)?;
        Ok(match ty {
            Ty::Int => b.into(),
            Ty::Float => f64::from_bits(b as u64).into(),
            Ty::Bool => (b != 0).into(),
            Ty::Char => char::from_u32(b as u32).ok_or(Bail::Fallback)?.into(),
            _ => Dynamic::UNIT,
        })
    })
}

/// A heap-subset expression of scalar type `ty` (a native's result, a checked `Dyn`, a `??`, a
/// `switch`), as bits; `None` for the other forms.
pub(super) fn scalar_bits(e: &Expr) -> Option<Ev<i64>> {
    if !matches!(
        e,
        Expr::Native { .. }
            | Expr::Direct { .. }
            | Expr::Guard(..)
            | Expr::Coalesce { .. }
            | Expr::Mixed { .. }
            | Expr::Switch { .. }
            | Expr::Each { .. }
    ) {
        return None;
    }
    if let Some(test) = char_test(e) {
        return Some(test);
    }
    if let Some(parse) = parsed_piece(e) {
        return Some(parse);
    }
    let ty = e.ty();
    // The conversion below checks a guard's type itself.
    let value = match e {
        Expr::Guard(inner, _) => dynamic(inner),
        e => dynamic(e),
    };
    Some(Box::new(move |fr| {
        let v = value(fr)?;
        let bits = match ty {
            Ty::Int => v.as_int().ok(),
            Ty::Float => v.as_float().ok().map(|f| f.to_bits() as i64),
            Ty::Bool => v.as_bool().ok().map(i64::from),
            Ty::Char => v.as_char().ok().map(|c| c as i64),
            _ => v.is_unit().then_some(0),
        };
        native::discard(v);
        bits.ok_or(Bail::Fallback)
    }))
}

/// Whether `value` is of type `ty` (what a guard checks).
fn is_of(value: &Dynamic, ty: Ty) -> bool {
    match ty {
        Ty::Int => value.is_int(),
        Ty::Float => value.is_float(),
        Ty::Bool => value.is_bool(),
        Ty::Char => value.is_char(),
        Ty::Unit => value.is_unit(),
        Ty::Str => value.is_string(),
        Ty::Array => value.is_array(),
        Ty::Map => value.is_map(),
        Ty::Dyn => true,
        Ty::IntArray | Ty::FloatArray => false,
    }
}

/// A native call: on the receiver where it is (a heap slot, a constant), changed in place by the
/// natives that change it. Its other arguments (two at most) are evaluated into an array.
fn call(op: Native, args: &[Expr]) -> Ev<Dynamic> {
    let this = &args[0];
    if let (Native::Append, Expr::Load(slot, _), [Expr::Interpolate(parts)]) =
        (op, this, &args[1..])
        && parts.iter().all(|p| stands_apart(p, *slot))
    {
        return append_parts(*slot, parts);
    }
    match &args[1..] {
        [Expr::Str(key)] if op == Native::Index => property(this, key.clone()),
        [at] if op == Native::Index && at.ty() == Ty::Int && this.ty() == Ty::Array => {
            element(this, at)
        }
        [] => on_receiver(op, this, |_| Ok::<_, Bail>([])),
        [a] => {
            let a = dynamic(a);
            on_receiver(op, this, move |fr| Ok([a(fr)?]))
        }
        [a, b] => {
            let (a, b) = (dynamic(a), dynamic(b));
            on_receiver(op, this, move |fr| {
                let x = a(fr)?;
                Ok([x, b(fr)?])
            })
        }
        more => unreachable!("natives take at most two arguments besides the receiver: {more:?}"),
    }
}

/// `text += `...${x}...``: the parts written into the frame's scratch buffer, then appended in
/// one go, with no string made for them. One append, not one per part: Rhai's long strings
/// (`smartstring`'s boxed ones) call `realloc` on every append, even when they have room.
fn append_parts(slot: usize, parts: &[Expr]) -> Ev<Dynamic> {
    let parts: Vec<Ev<Dynamic>> = parts.iter().map(dynamic).collect();
    Box::new(move |fr| {
        let mut scratch = std::mem::take(&mut fr.scratch);
        scratch.clear();
        for part in &parts {
            let value = part(fr)?;
            native::display_into(&mut scratch, &value).ok_or(Bail::Fallback)?;
        }
        match fr.heap_mut(slot).as_immutable_string_mut() {
            Ok(mut text) => text.make_mut().push_str(&scratch),
            Err(_) => return Err(Bail::Fallback),
        }
        fr.scratch = scratch;
        Ok(Dynamic::UNIT)
    })
}

/// Whether `e` can be evaluated while the heap variable in `slot` is out of its place or half
/// written: it does not read the variable, and nothing in it (a block, a branch, a call) can.
fn stands_apart(e: &Expr, slot: usize) -> bool {
    struct Apart(usize, bool);
    impl VisitMut for Apart {
        fn expr(&mut self, e: &mut Expr) {
            self.1 &= match e {
                Expr::Load(s, ty) => !(ty.is_heap() && *s == self.0),
                e => !e.may_run_code(),
            };
        }
    }
    let mut apart = Apart(slot, true);
    e.clone().visit_mut(&mut apart);
    apart.1
}

/// A data builtin on its arguments' values.
fn direct(call: DirectCall, args: &[Expr]) -> Ev<Dynamic> {
    let args: Vec<Ev<Dynamic>> = args.iter().map(dynamic).collect();
    Box::new(move |fr| {
        let values = args.iter().map(|a| a(fr)).collect::<R<Vec<_>>>()?;
        call.call(&values).ok_or(Bail::Fallback)
    })
}

/// [`call`] with the arguments made by `values`, evaluated before the receiver is taken.
fn on_receiver<A: AsRef<[Dynamic]> + AsMut<[Dynamic]> + 'static>(
    op: Native,
    this: &Expr,
    values: impl Fn(&mut Frame<'_>) -> R<A> + Send + Sync + 'static,
) -> Ev<Dynamic> {
    let done = |out: Option<Dynamic>| out.ok_or(Bail::Fallback);
    match this {
        // Lowering keeps a changing native to a variable receiver.
        Expr::Load(slot, _) if op.changes_receiver() => {
            let slot = *slot;
            Box::new(move |fr| {
                let mut args = values(fr)?;
                done(op.change(fr.heap_mut(slot), args.as_mut()))
            })
        }
        this => reading(this, values, move |this, args| {
            done(op.read(this, args.as_ref()))
        }),
    }
}

/// Reads the receiver `this` where it is (a variable's slot, a constant) or else as its value,
/// with `args` evaluated first.
fn reading<A: 'static, T: 'static>(
    this: &Expr,
    args: impl Fn(&mut Frame<'_>) -> R<A> + Send + Sync + 'static,
    read: impl Fn(&Dynamic, A) -> R<T> + Send + Sync + 'static,
) -> Ev<T> {
    // `a[i].f()`: the element is read where it is, not copied out first.
    if let Expr::Native {
        op: Native::Index,
        args: array_at,
        ..
    } = this
        && let [Expr::Load(slot, Ty::Array), at] = array_at.as_slice()
        && at.ty() == Ty::Int
    {
        let (slot, at) = (*slot, super::int(at));
        return Box::new(move |fr| {
            let at = at(fr)?;
            let args = args(fr)?;
            native::with_element(fr.heap(slot), at, |item| read(item, args))
                .ok_or(Bail::Fallback)?
        });
    }
    match this {
        Expr::Load(slot, ty) if ty.is_heap() => {
            let slot = *slot;
            Box::new(move |fr| {
                let args = args(fr)?;
                read(fr.heap(slot), args)
            })
        }
        Expr::Str(s) => {
            let this = Dynamic::from(s.clone());
            Box::new(move |fr| read(&this, args(fr)?))
        }
        Expr::Settle(load) => {
            let slot = settled_slot(load);
            Box::new(move |fr| {
                let args = args(fr)?;
                native::settle(fr.heap_mut(slot));
                read(fr.heap(slot), args)
            })
        }
        this => {
            let this = dynamic(this);
            Box::new(move |fr| {
                let args = args(fr)?;
                read(&this(fr)?, args)
            })
        }
    }
}

/// The heap slot a [`Expr::Settle`] or [`Expr::Moved`] reads (lowering wraps only heap
/// variables).
fn settled_slot(load: &Expr) -> usize {
    match load {
        Expr::Load(slot, ty) if ty.is_heap() => *slot,
        other => unreachable!("only a heap variable is settled or moved: {other:?}"),
    }
}

/// `target[key] = value` where `value` reads the element it replaces ([`Expr::Item`]): the
/// element is found once, taken out for `value` and replaced. The target is out of its slot
/// meanwhile (lowering made sure `value` does not read it).
fn update_item(target: usize, key: Key, value: &Expr) -> St {
    let Some((base, by)) = counting(value) else {
        let value = dynamic(value);
        return updating(target, key, move |fr, item| {
            native::put_back(&mut fr.item, item);
            let made = value(fr);
            native::discard(std::mem::take(&mut fr.item));
            made
        });
    };
    // A count: the element's int is added to with no `Dynamic` made for the parts of the sum.
    if by.ty() == Ty::Int {
        let by = super::int(by);
        return updating(target, key, move |fr, item| {
            let old = match item.is_unit() {
                true => base,
                false => item.as_int().map_err(|_| Bail::Fallback)?,
            };
            native::discard(item);
            let sum = old.checked_add(by(fr)?).ok_or(Bail::Fallback)?;
            Ok(Dynamic::from(sum))
        });
    }
    // A sum whose types are known only when it runs (`(m[k] ?? 0) + counts[k]`): two ints are
    // added as above, anything else as `+` adds it.
    let by = dynamic(by);
    updating(target, key, move |fr, item| {
        let old = match item.is_unit() {
            true => Dynamic::from(base),
            false => item,
        };
        let by = by(fr)?;
        match (old.as_int(), by.as_int()) {
            (Ok(a), Ok(b)) => a.checked_add(b).map(Dynamic::from).ok_or(Bail::Fallback),
            _ => native::mixed(BinOp::Add, &old, &by).ok_or(Bail::Fallback),
        }
    })
}

/// The parts of `(item ?? base) + by`, where `by` does not read the item: how a count is written
/// (`m[k] = (m[k] ?? 0) + 1`).
fn counting(value: &Expr) -> Option<(i64, &Expr)> {
    let (coalesce, rhs) = match value {
        Expr::Binary {
            op: BinOp::Add,
            operand: Ty::Int,
            lhs,
            rhs,
        } => match &**lhs {
            Expr::Guard(coalesce, Ty::Int) => (&**coalesce, rhs),
            _ => return None,
        },
        Expr::Mixed {
            op: BinOp::Add,
            lhs,
            rhs,
            ..
        } => (&**lhs, rhs),
        _ => return None,
    };
    let Expr::Coalesce {
        lhs: item,
        rhs: base,
        ..
    } = coalesce
    else {
        return None;
    };
    let (Expr::Item, Expr::Int(base)) = (&**item, &**base) else {
        return None;
    };
    struct Reads(bool);
    impl VisitMut for Reads {
        fn expr(&mut self, e: &mut Expr) {
            self.0 |= matches!(e, Expr::Item);
        }
    }
    let mut reads = Reads(false);
    rhs.clone().visit_mut(&mut reads);
    (!reads.0).then_some((*base, &**rhs))
}

/// [`update_item`] with `make` giving the element's new value from its old one.
fn updating(
    target: usize,
    key: Key,
    make: impl Fn(&mut Frame<'_>, Dynamic) -> R<Dynamic> + Send + Sync + 'static,
) -> St {
    Box::new(move |fr| {
        let made = match &key {
            Key::Lent(slot) => Ok(std::mem::take(fr.heap_mut(*slot))),
            Key::Made(key) => key(fr),
        };
        let made_key = match made {
            Ok(key) => key,
            Err(e) => return fr.stopped(e),
        };
        let mut this = std::mem::take(fr.heap_mut(target));
        let updated = native::update_item(&mut this, &made_key, |item| make(fr, item));
        native::put_back(fr.heap_mut(target), this);
        if let Key::Lent(slot) = key {
            native::put_back(fr.heap_mut(slot), made_key);
        }
        match updated {
            Ok(()) => Flow::Next,
            Err(e) => fr.stopped(e.unwrap_or(Bail::Fallback)),
        }
    })
}

/// Where [`update_item`] finds its key: taken from a variable and put back, or made.
enum Key {
    Lent(usize),
    Made(Ev<Dynamic>),
}

/// An array of any values unboxed, read where it is: its kind (`FloatArray` or `IntArray`) and
/// numbers (see [`crate::fast::numeric_array`]), or a copy of it when it holds other values.
pub(super) fn unboxed(e: &Expr) -> Ev<super::Passed> {
    reading(
        e,
        |_| Ok(()),
        |array, ()| {
            Ok(match crate::fast::numeric_array(array) {
                Some((kind, numbers)) => super::Passed::Numbers(kind, numbers),
                None => super::Passed::Heap(array.clone()),
            })
        },
    )
}

/// `array[at]` with an int index, read where the array is (no `Dynamic` made for the index).
fn element(this: &Expr, at: &Expr) -> Ev<Dynamic> {
    reading(this, super::int(at), |array, at| {
        native::element(array, at).ok_or(Bail::Fallback)
    })
}

/// `this.key` with a constant key, read where the map is.
fn property(this: &Expr, key: ImmutableString) -> Ev<Dynamic> {
    reading(
        this,
        |_| Ok(()),
        move |map, ()| native::property(map, &key).ok_or(Bail::Fallback),
    )
}

/// `switch`: the case of the value's key.
fn switch(
    value: &Expr,
    cases: &[(SwitchKey, usize)],
    blocks: &[crate::fast::ir::Block],
    default: &crate::fast::ir::Block,
) -> Ev<Dynamic> {
    let (keys, at): (Vec<SwitchKey>, Vec<usize>) = cases.iter().cloned().unzip();
    let case = reading(
        value,
        |_| Ok(()),
        move |v, ()| {
            let found = SwitchKey::find(&keys, v).ok_or(Bail::Fallback)?;
            Ok(found.map(|k| at[k]))
        },
    );
    let blocks: Vec<Ev<Dynamic>> = blocks
        .iter()
        .map(|b| block_value(b, dynamic(&b.value)))
        .collect();
    let default = block_value(default, dynamic(&default.value));
    Box::new(move |fr| match case(fr)? {
        Some(at) => blocks[at](fr),
        None => default(fr),
    })
}

/// Statements of the heap subset; `None` for the others.
pub(super) fn statement(stmt: &Stmt) -> Option<St> {
    Some(match stmt {
        Stmt::StoreHeap(
            slot,
            Expr::Native {
                op: Native::Split,
                args,
                ..
            },
        ) => {
            let (slot, this, by) = (*slot, dynamic(&args[0]), dynamic(&args[1]));
            Box::new(move |fr| {
                let split = this(fr).and_then(|this| {
                    let by = by(fr)?;
                    native::split_into(fr.heap_mut(slot), &this, &by).ok_or(Bail::Fallback)
                });
                match split {
                    Ok(()) => Flow::Next,
                    Err(e) => fr.stopped(e),
                }
            })
        }
        Stmt::StoreHeap(slot, e) => {
            let (slot, value) = (*slot, dynamic(e));
            Box::new(move |fr| match value(fr) {
                Ok(v) => {
                    *fr.heap_mut(slot) = v;
                    Flow::Next
                }
                Err(e) => fr.stopped(e),
            })
        }
        Stmt::SetItem {
            target,
            key,
            value,
            update: true,
        } => {
            // A variable key is read where it is, unless `value` might read it meanwhile.
            let key = match key {
                Expr::Load(slot, ty)
                    if ty.is_heap() && slot != target && stands_apart(value, *slot) =>
                {
                    Key::Lent(*slot)
                }
                key => Key::Made(dynamic(key)),
            };
            update_item(*target, key, value)
        }
        Stmt::SetItem {
            target, key, value, ..
        } => {
            let (target, key, value) = (*target, dynamic(key), dynamic(value));
            Box::new(move |fr| {
                let stored = key(fr).and_then(|k| {
                    let v = value(fr)?;
                    native::set_item(fr.heap_mut(target), &k, v).ok_or(Bail::Fallback)
                });
                match stored {
                    Ok(()) => Flow::Next,
                    Err(e) => fr.stopped(e),
                }
            })
        }
        Stmt::ForEach {
            var,
            var_ty,
            counter,
            over,
            value,
            body,
            cost,
        } => {
            let each = Each {
                var: *var,
                counter: *counter,
                body: block_statements(body),
                cost: *cost,
            };
            match over {
                Expr::Native { args, .. } if value.is_some() => {
                    for_each_entry(each, &args[0], value.expect("checked"))
                }
                Expr::Native {
                    op: Native::Split,
                    args,
                    ..
                } if var_ty.is_heap() => for_each_piece(each, args, split_pieces),
                Expr::Direct { call, args, .. } if var_ty.is_heap() && call.f.pieces.is_some() => {
                    for_each_piece(each, args, call.f.pieces.expect("checked"))
                }
                over => for_each(each, *var_ty, over),
            }
        }
        Stmt::Eval(e) | Stmt::Return(e) if e.ty().is_heap() => {
            let value = dynamic(e);
            let returns = matches!(stmt, Stmt::Return(_));
            Box::new(move |fr| match value(fr) {
                Ok(v) if returns => {
                    fr.ret_heap = v;
                    Flow::Return
                }
                Ok(_) => Flow::Next,
                Err(e) => fr.stopped(e),
            })
        }
        _ => return None,
    })
}

/// A `for` loop's variable, counter and body.
struct Each {
    var: usize,
    counter: Option<usize>,
    body: Vec<St>,
    cost: u64,
}

impl Each {
    /// The `n`th iteration, its variable already set; `Some` when the loop ends here.
    fn step(&self, fr: &mut Frame<'_>, n: i64) -> Option<Flow> {
        if let Some(flow) = charged(fr, self.cost) {
            return Some(flow);
        }
        if let Some(c) = self.counter {
            fr.set(c, n);
        }
        after_body(run(&self.body, fr))
    }
}

/// `for var in over`: an array's elements, or a string's characters.
fn for_each(each: Each, var_ty: Ty, over: &Expr) -> St {
    let over = dynamic(over);
    Box::new(move |fr| {
        let value = match over(fr) {
            Ok(v) => v,
            Err(e) => return fr.stopped(e),
        };
        if value.is_array() {
            let Ok(items) = value.into_array() else {
                return fr.stopped(Bail::Fallback);
            };
            for (n, item) in (0..).zip(items) {
                *fr.heap_mut(each.var) = item;
                if let Some(flow) = each.step(fr, n) {
                    return flow;
                }
            }
        } else if let Some(text) = value.read_lock::<ImmutableString>().map(|s| s.clone()) {
            for (n, c) in (0..).zip(text.chars()) {
                match var_ty {
                    Ty::Char => fr.set(each.var, c as i64),
                    _ => *fr.heap_mut(each.var) = c.into(),
                }
                if let Some(flow) = each.step(fr, n) {
                    return flow;
                }
            }
        } else {
            return fr.stopped(Bail::Fallback);
        }
        Flow::Next
    })
}

/// `for k in map.keys()` whose body reads `map[k]` from slot `value` (see `lower`'s
/// `entry_values`): the keys and values are taken from the map once, and written to the two
/// slots in turn.
fn for_each_entry(each: Each, map: &Expr, value: usize) -> St {
    let entries = reading(
        map,
        |_| Ok(()),
        |map, ()| {
            let map = map.as_map_ref().map_err(|_| Bail::Fallback)?;
            let key = |k: &rhai::Identifier| Dynamic::from(ImmutableString::from(k.as_str()));
            Ok(map
                .iter()
                .map(|(k, v)| (key(k), v.clone()))
                .collect::<Vec<_>>())
        },
    );
    Box::new(move |fr| {
        let entries = match entries(fr) {
            Ok(entries) => entries,
            Err(e) => return fr.stopped(e),
        };
        for (n, (key, item)) in (0..).zip(entries) {
            *fr.heap_mut(each.var) = key;
            *fr.heap_mut(value) = item;
            if let Some(flow) = each.step(fr, n) {
                return flow;
            }
        }
        Flow::Next
    })
}

/// `for var in pieces`: the strings a split or a data builtin makes of `args` (see
/// [`Pieces`]) are written into the variable's string in turn, with no array made and no string
/// allocated while the body keeps none of them.
fn for_each_piece(each: Each, args: &[Expr], pieces: Pieces) -> St {
    let args: Vec<Ev<Dynamic>> = args.iter().map(dynamic).collect();
    Box::new(move |fr| {
        let values = match args.iter().map(|a| a(fr)).collect::<R<Vec<_>>>() {
            Ok(values) => values,
            Err(e) => return fr.stopped(e),
        };
        let (mut n, mut ended) = (0, None);
        let finished = pieces(&values, &mut |piece| {
            native::overwrite_text(fr.heap_mut(each.var), piece);
            ended = each.step(fr, n);
            n += 1;
            ended.is_none()
        });
        match (finished, ended) {
            (_, Some(flow)) => flow,
            (Some(_), None) => Flow::Next,
            (None, None) => fr.stopped(Bail::Fallback),
        }
    })
}

/// `args[0].split(args[1])` as [`Pieces`].
fn split_pieces(args: &[Dynamic], f: &mut dyn FnMut(&str) -> bool) -> Option<bool> {
    let all = native::for_pieces(&args[0], &args[1], |piece| match f(piece) {
        true => ControlFlow::Continue(()),
        false => ControlFlow::Break(()),
    })?;
    Some(all.is_continue())
}

/// `text.contains(c)` (or `starts_with`, `ends_with`) on a character, answered as bits with
/// no `Dynamic` made for the character or the answer (a char scan's inner test).
fn char_test(e: &Expr) -> Option<Ev<i64>> {
    let Expr::Native { op, args, .. } = e else {
        return None;
    };
    let test: fn(&str, char) -> bool = match op {
        Native::Contains => |s, c| s.contains(c),
        Native::StartsWith => |s, c| s.starts_with(c),
        Native::EndsWith => |s, c| s.ends_with(c),
        _ => return None,
    };
    let [this, c] = &args[..] else {
        return None;
    };
    if c.ty() != Ty::Char || !matches!(this.ty(), Ty::Str) {
        return None;
    }
    Some(reading(this, super::code(c), move |s, code| {
        let s = s.read_lock::<ImmutableString>().ok_or(Bail::Fallback)?;
        let c = char::from_u32(code as u32).ok_or(Bail::Fallback)?;
        Ok(i64::from(test(&s, c)))
    }))
}

/// `s.sub_string(start, len).parse_int()`: the int parsed from the piece where it is in `s`,
/// with no string made for the piece (a log line's hour, a duration's digits).
fn parsed_piece(e: &Expr) -> Option<Ev<i64>> {
    let Expr::Native {
        op: Native::ParseInt,
        args,
        ..
    } = e
    else {
        return None;
    };
    let [
        Expr::Native {
            op: Native::SubString,
            args: piece,
            ..
        },
    ] = args.as_slice()
    else {
        return None;
    };
    let [text, start, len] = piece.as_slice() else {
        return None;
    };
    if start.ty() != Ty::Int || len.ty() != Ty::Int {
        return None;
    }
    let (start, len) = (super::int(start), super::int(len));
    let bounds = move |fr: &mut Frame<'_>| Ok((start(fr)?, len(fr)?));
    Some(reading(text, bounds, |text, (start, len)| {
        let text = text.read_lock::<ImmutableString>().ok_or(Bail::Fallback)?;
        let piece = native::sub_str(&text, start, len).ok_or(Bail::Fallback)?;
        piece.trim().parse::<i64>().map_err(|_| Bail::Fallback)
    }))
}

/// A `Char` expression's code point, for the forms only the heap subset makes.
pub(super) fn char_code(e: &Expr) -> Option<Ev<i64>> {
    match e {
        Expr::Char(c) => {
            let c = *c as i64;
            Some(Box::new(move |_| Ok(c)))
        }
        _ => scalar_bits(e),
    }
}
