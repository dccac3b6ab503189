//! `shared_array(kind, n_or_values)` and `shared_value(x)`: ints or floats in memory every process
//! maps (see `crate::shared`), read and written in place, with atomic `add`, `cas` and `swap`.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use rhai::{Array, Dynamic, Engine, EvalAltResult, FLOAT, INT, Position};
use serde::{Deserialize, Serialize};

use super::{Ctx, invalid, method, sendable};
use crate::{
    shared::Segment,
    wire::{Id, MapAction, Object, Op},
};

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

/// What a shared array holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SharedKind {
    Int,
    Float,
}

impl SharedKind {
    fn name(self) -> &'static str {
        match self {
            SharedKind::Int => "int",
            SharedKind::Float => "float",
        }
    }
}

/// A script's handle to a shared array (or, with `value`, a one-slot shared value).
#[derive(Clone)]
pub(crate) struct SharedArray {
    pub(crate) kind: SharedKind,
    /// The mapping, or why this process could not map it (the process that made it is gone).
    pub(crate) segment: std::result::Result<Arc<Segment>, Arc<str>>,
}

/// A one-slot shared int or float: `v.value`, `v.add(d)`, `v.cas(old, new)`.
#[derive(Clone)]
pub(crate) struct SharedValue(pub(crate) SharedArray);

pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<SharedArray>("SharedArray");
    engine.register_type_with_name::<SharedValue>("SharedValue");
    method(engine, "shared_array", |kind: &str, n: INT| {
        let kind = kind_of(kind)?;
        let n =
            usize::try_from(n).map_err(|_| invalid("a shared array's length must be 0 or more"))?;
        SharedArray::new(kind, n)
    });
    method(engine, "shared_array", |kind: &str, values: Array| {
        SharedArray::from_values(kind_of(kind)?, &values)
    });
    method(
        engine,
        "shared_array",
        |kind: &str, range: std::ops::Range<INT>| {
            SharedArray::from_values(kind_of(kind)?, &range.map(Dynamic::from).collect::<Array>())
        },
    );
    method(
        engine,
        "shared_array",
        |kind: &str, range: std::ops::RangeInclusive<INT>| {
            SharedArray::from_values(kind_of(kind)?, &range.map(Dynamic::from).collect::<Array>())
        },
    );
    method(engine, "shared_value", |x: INT| {
        shared_value(SharedKind::Int, x.into())
    });
    method(engine, "shared_value", |x: FLOAT| {
        shared_value(SharedKind::Float, x.into())
    });
    register_array(engine);
    register_value(engine);
}

fn register_array(engine: &mut Engine) {
    engine.register_indexer_get(|a: &mut SharedArray, i: INT| -> Result<Dynamic> {
        Ok(a.get(a.index(i)?))
    });
    engine.register_indexer_set(|a: &mut SharedArray, i: INT, v: Dynamic| {
        let slot = a.index(i)?;
        a.set(slot, &v)
    });
    engine.register_fn("len", |a: &mut SharedArray| a.len());
    method(engine, "add", |a: &mut SharedArray, i: INT, v: Dynamic| {
        let slot = a.index(i)?;
        a.add(slot, &v)
    });
    method(
        engine,
        "cas",
        |a: &mut SharedArray, i: INT, old: Dynamic, new: Dynamic| {
            let slot = a.index(i)?;
            a.cas(slot, &old, &new)
        },
    );
    method(
        engine,
        "swap",
        |a: &mut SharedArray, i: INT, v: Dynamic| -> Result<Dynamic> {
            let slot = a.index(i)?;
            let bits = a.bits(&v)?;
            Ok(a.value(a.slot(slot).swap(bits, Ordering::SeqCst)))
        },
    );
    method(engine, "to_array", |a: &mut SharedArray| a.to_array());
    method(
        engine,
        "fill",
        |a: &mut SharedArray, v: Dynamic| -> Result<()> {
            let bits = a.bits(&v)?;
            a.slots()?
                .iter()
                .for_each(|s| s.store(bits, Ordering::SeqCst));
            Ok(())
        },
    );
    method(engine, "sum", |a: &mut SharedArray| a.sum());
    method(engine, "max", |a: &mut SharedArray| a.extreme(true));
    method(engine, "min", |a: &mut SharedArray| a.extreme(false));
    for name in ["to_string", "to_debug"] {
        engine.register_fn(name, |a: &mut SharedArray| {
            format!("SharedArray({}, {})", a.kind.name(), a.len().unwrap_or(0))
        });
    }
}

fn register_value(engine: &mut Engine) {
    engine.register_get("value", |v: &mut SharedValue| -> Result<Dynamic> {
        v.0.index(0).map(|at| v.0.get(at))
    });
    engine.register_set("value", |v: &mut SharedValue, x: Dynamic| {
        let at = v.0.index(0)?;
        v.0.set(at, &x)
    });
    method(engine, "add", |v: &mut SharedValue, d: Dynamic| {
        let at = v.0.index(0)?;
        v.0.add(at, &d)
    });
    method(
        engine,
        "cas",
        |v: &mut SharedValue, old: Dynamic, new: Dynamic| {
            let at = v.0.index(0)?;
            v.0.cas(at, &old, &new)
        },
    );
    for name in ["to_string", "to_debug"] {
        engine.register_fn(name, |v: &mut SharedValue| {
            let value = v.0.index(0).map_or(Dynamic::UNIT, |at| v.0.get(at));
            format!("SharedValue({}, {value})", v.0.kind.name())
        });
    }
}

fn kind_of(name: &str) -> Result<SharedKind> {
    match name {
        "int" => Ok(SharedKind::Int),
        "float" => Ok(SharedKind::Float),
        other => Err(invalid(format!(
            "a shared array holds \"int\" or \"float\", not {other:?}"
        ))),
    }
}

fn shared_value(kind: SharedKind, x: Dynamic) -> Result<SharedValue> {
    let array = SharedArray::new(kind, 1)?;
    array.set(0, &x)?;
    Ok(SharedValue(array))
}

impl SharedArray {
    fn new(kind: SharedKind, len: usize) -> Result<SharedArray> {
        let segment = Segment::create(len)
            .map_err(|e| invalid(format!("cannot make a shared array of {len}: {e}")))?;
        Ok(SharedArray {
            kind,
            segment: Ok(segment),
        })
    }

    fn slots(&self) -> Result<&[AtomicU64]> {
        match &self.segment {
            Ok(segment) => Ok(segment.slots()),
            Err(why) => Err(invalid(format!(
                "this shared array cannot be reached: {why}"
            ))),
        }
    }

    fn from_values(kind: SharedKind, values: &Array) -> Result<SharedArray> {
        let array = SharedArray::new(kind, values.len())?;
        for (i, v) in values.iter().enumerate() {
            array.set(i, v)?;
        }
        Ok(array)
    }

    /// The slot for script index `i` (negative counts from the end).
    fn index(&self, i: INT) -> Result<usize> {
        let len = self.slots()?.len();
        let at = if i < 0 { len as INT + i } else { i };
        usize::try_from(at)
            .ok()
            .filter(|at| *at < len)
            .ok_or_else(|| EvalAltResult::ErrorArrayBounds(len, i, Position::NONE).into())
    }

    /// Slot `at`, already checked by `index`.
    fn slot(&self, at: usize) -> &AtomicU64 {
        &self.slots().expect("checked by index")[at]
    }

    /// `v` as this array's bits: an int into a float array becomes a float; anything else that
    /// is not of the array's kind is an error naming it.
    fn bits(&self, v: &Dynamic) -> Result<u64> {
        match (self.kind, v.as_int(), v.as_float()) {
            (SharedKind::Int, Ok(i), _) => Ok(i as u64),
            (SharedKind::Float, Ok(i), _) => Ok((i as FLOAT).to_bits()),
            (SharedKind::Float, _, Ok(f)) => Ok(f.to_bits()),
            _ => Err(invalid(format!(
                "a {} cannot be stored in a shared {} array",
                v.type_name(),
                self.kind.name()
            ))),
        }
    }

    fn value(&self, bits: u64) -> Dynamic {
        match self.kind {
            SharedKind::Int => (bits as INT).into(),
            SharedKind::Float => FLOAT::from_bits(bits).into(),
        }
    }

    fn get(&self, at: usize) -> Dynamic {
        self.value(self.slot(at).load(Ordering::SeqCst))
    }

    fn set(&self, at: usize, v: &Dynamic) -> Result<()> {
        self.slot(at).store(self.bits(v)?, Ordering::SeqCst);
        Ok(())
    }

    /// Adds `v` atomically and answers the new value; an int overflow is Rhai's overflow error.
    fn add(&self, at: usize, v: &Dynamic) -> Result<Dynamic> {
        let delta = self.bits(v)?;
        let slot = self.slot(at);
        let mut current = slot.load(Ordering::SeqCst);
        loop {
            let new = match self.kind {
                SharedKind::Int => (current as INT)
                    .checked_add(delta as INT)
                    .ok_or_else(|| overflow(current as INT, delta as INT))?
                    as u64,
                SharedKind::Float => {
                    (FLOAT::from_bits(current) + FLOAT::from_bits(delta)).to_bits()
                }
            };
            match slot.compare_exchange_weak(current, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(self.value(new)),
                Err(seen) => current = seen,
            }
        }
    }

    /// Stores `new` if the slot holds `old` (floats compared by their bits), answering whether it
    /// did.
    fn cas(&self, at: usize, old: &Dynamic, new: &Dynamic) -> Result<bool> {
        let (old, new) = (self.bits(old)?, self.bits(new)?);
        Ok(self
            .slot(at)
            .compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok())
    }

    fn sum(&self) -> Result<Dynamic> {
        let slots = self.slots()?;
        match self.kind {
            SharedKind::Int => slots
                .iter()
                .try_fold(0 as INT, |sum, s| {
                    let x = s.load(Ordering::SeqCst) as INT;
                    sum.checked_add(x).ok_or_else(|| overflow(sum, x))
                })
                .map(Dynamic::from),
            SharedKind::Float => Ok(slots
                .iter()
                .map(|s| FLOAT::from_bits(s.load(Ordering::SeqCst)))
                .sum::<FLOAT>()
                .into()),
        }
    }

    /// The largest (`max`) or smallest value, `()` for an empty array.
    fn extreme(&self, max: bool) -> Result<Dynamic> {
        let values = self.slots()?.iter().map(|s| s.load(Ordering::SeqCst));
        let best = match self.kind {
            SharedKind::Int => {
                let ints = values.map(|b| b as INT);
                if max { ints.max() } else { ints.min() }.map(Dynamic::from)
            }
            SharedKind::Float => values
                .map(FLOAT::from_bits)
                .reduce(|a, b| if (b > a) == max { b } else { a })
                .map(Dynamic::from),
        };
        Ok(best.unwrap_or(Dynamic::UNIT))
    }

    fn len(&self) -> Result<INT> {
        Ok(self.slots()?.len() as INT)
    }

    fn to_array(&self) -> Result<Array> {
        Ok((0..self.slots()?.len()).map(|i| self.get(i)).collect())
    }
}

fn overflow(a: INT, b: INT) -> Box<EvalAltResult> {
    EvalAltResult::ErrorArithmetic(format!("Addition overflow: {a} + {b}"), Position::NONE).into()
}

/// `shared_map()` and its methods: every call is a request to the main process, which holds it.
pub(super) fn register_map(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    method(engine, "shared_map", move || -> Result<SharedMap> {
        let Id(id) = c.ask(Op::NewSharedMap)?;
        Ok(SharedMap::counted(id, c.held(Object::SharedMap(id))))
    });
    let c = ctx.clone();
    engine.register_indexer_get(move |m: &mut SharedMap, key: &str| {
        map_value(&c, m, MapAction::Get(key.into()))
    });
    let c = ctx.clone();
    engine.register_indexer_set(move |m: &mut SharedMap, key: &str, v: Dynamic| {
        let value = sendable(&v, "a shared map's value")?;
        c.ask::<()>(Op::SharedMap {
            id: m.id,
            action: MapAction::Set(key.into(), value),
        })
    });
    let c = ctx.clone();
    method(engine, "get", move |m: &mut SharedMap, key: &str| {
        map_value(&c, m, MapAction::Get(key.into()))
    });
    let c = ctx.clone();
    method(
        engine,
        "get",
        move |m: &mut SharedMap, key: &str, default: Dynamic| -> Result<Dynamic> {
            let got = map_value(&c, m, MapAction::Get(key.into()))?;
            Ok(if got.is_unit() { default } else { got })
        },
    );
    let c = ctx.clone();
    method(engine, "remove", move |m: &mut SharedMap, key: &str| {
        map_value(&c, m, MapAction::Remove(key.into()))
    });
    let c = ctx.clone();
    method(engine, "contains", move |m: &mut SharedMap, key: &str| {
        c.ask::<bool>(Op::SharedMap {
            id: m.id,
            action: MapAction::Contains(key.into()),
        })
    });
    let c = ctx.clone();
    method(engine, "keys", move |m: &mut SharedMap| {
        map_value(&c, m, MapAction::Keys)
    });
    let c = ctx.clone();
    method(engine, "to_map", move |m: &mut SharedMap| {
        map_value(&c, m, MapAction::ToMap)
    });
    let c = ctx.clone();
    method(engine, "len", move |m: &mut SharedMap| -> Result<INT> {
        let n: u64 = c.ask(Op::SharedMap {
            id: m.id,
            action: MapAction::Len,
        })?;
        Ok(n as INT)
    });
    let c = ctx.clone();
    method(
        engine,
        "add",
        move |m: &mut SharedMap, key: &str, n: Dynamic| {
            let n = sendable(&n, "add")?;
            map_value(&c, m, MapAction::Add(key.into(), n))
        },
    );
    let c = ctx.clone();
    method(
        engine,
        "cas",
        move |m: &mut SharedMap, key: &str, old: Dynamic, new: Dynamic| {
            let (old, new) = (sendable(&old, "cas")?, sendable(&new, "cas")?);
            c.ask::<bool>(Op::SharedMap {
                id: m.id,
                action: MapAction::Cas(key.into(), old, new),
            })
        },
    );
    for name in ["to_string", "to_debug"] {
        engine.register_fn(name, |m: &mut SharedMap| format!("SharedMap({})", m.id));
    }
}

type SharedMap = crate::value::Handle<crate::value::kinds::SharedMap>;

fn map_value(ctx: &Ctx, m: &SharedMap, action: MapAction) -> Result<Dynamic> {
    let value: crate::Value = ctx.ask(Op::SharedMap { id: m.id, action })?;
    Ok(ctx.to_dynamic(value))
}
