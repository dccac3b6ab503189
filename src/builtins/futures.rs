//! `pool_submit` and the `Future` handle (Python's `concurrent.futures`), `wait_any`,
//! `as_completed`, and `pool_map_unordered`, which yields results as they finish.

use crate::locks::lock;
use std::sync::{Arc, Mutex};

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, INT};

use super::{
    Ctx, ScriptResult, function_arg, invalid, method, register_call_starter, seconds, sendable,
    sync::register_handle, unexpected, waiting_method,
};
use crate::{
    value::{FnValue, Handle, kinds},
    wire::{Op, Reply},
};

type Future = Handle<kinds::Future>;

/// Items of `pool_map_unordered` submitted ahead of the one being waited for.
const UNORDERED_AHEAD: usize = 64;

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    register_handle::<kinds::Future>(engine);
    register_call_starter(engine, ctx, "pool_submit", submit);
    waiting_method(engine, ctx, "get", |c, f: &Future, timeout| {
        get(c, f.id, timeout, false)
    });
    let c = ctx.clone();
    method(engine, "done", move |f: &mut Future| {
        ask(&c, Op::IsDone { future: f.id })
    });
    let c = ctx.clone();
    method(engine, "cancel", move |f: &mut Future| {
        ask(&c, Op::Cancel { future: f.id })
    });
    let c = ctx.clone();
    method(engine, "wait_any", move |futures: Array| {
        wait_any(&c, &ids(&futures)?, None)
    });
    let c = ctx.clone();
    method(engine, "wait_any", move |futures: Array, secs: INT| {
        wait_any(&c, &ids(&futures)?, Some(secs as f64))
    });
    let c = ctx.clone();
    method(engine, "wait_any", move |futures: Array, secs: f64| {
        wait_any(&c, &ids(&futures)?, Some(secs))
    });
    engine.register_type_with_name::<Completions>("Completions");
    engine.register_iterator_result::<Completions, Future>();
    let c = ctx.clone();
    method(engine, "as_completed", move |futures: Array| {
        Ok::<_, Box<EvalAltResult>>(Completions {
            ctx: c.clone(),
            left: ids(&futures)?,
        })
    });
    engine.register_type_with_name::<Unordered>("UnorderedMap");
    engine.register_iterator_result::<Unordered, Dynamic>();
    let c = ctx.clone();
    method(
        engine,
        "pool_map_unordered",
        move |f: FnPtr, items: Dynamic| Unordered::new(&c, &f, items),
    );
}

fn submit(ctx: &Ctx, f: FnValue, args: Vec<crate::Value>) -> Result<Future, Box<EvalAltResult>> {
    match ctx.call(Op::Submit { f, args })? {
        Reply::Id(id) => Ok(Future::new(id)),
        other => Err(unexpected(&other)),
    }
}

fn get(ctx: &Ctx, future: u64, timeout: Option<f64>, take: bool) -> ScriptResult {
    let timeout = timeout.map(|t| seconds(t, "fut.get")).transpose()?;
    match ctx.call(Op::Await {
        future,
        timeout,
        take,
    })? {
        Reply::Value(v) => Ok(ctx.to_dynamic(v)),
        other => Err(unexpected(&other)),
    }
}

fn ask(ctx: &Ctx, op: Op) -> Result<bool, Box<EvalAltResult>> {
    match ctx.call(op)? {
        Reply::Bool(b) => Ok(b),
        other => Err(unexpected(&other)),
    }
}

fn ids(futures: &Array) -> Result<Vec<u64>, Box<EvalAltResult>> {
    futures
        .iter()
        .map(|f| {
            f.read_lock::<Future>().map(|f| f.id).ok_or_else(|| {
                invalid(format!(
                    "expected an array of futures (from pool_submit), found a {}",
                    f.type_name()
                ))
            })
        })
        .collect()
}

fn wait_any(
    ctx: &Ctx,
    futures: &[u64],
    timeout: Option<f64>,
) -> Result<Future, Box<EvalAltResult>> {
    let timeout = timeout.map(|t| seconds(t, "wait_any")).transpose()?;
    match ctx.call(Op::WaitAny {
        futures: futures.to_vec(),
        timeout,
    })? {
        Reply::Id(id) => Ok(Future::new(id)),
        other => Err(unexpected(&other)),
    }
}

/// `as_completed(futures)`: the futures, each as soon as it is done.
#[derive(Clone)]
struct Completions {
    ctx: Arc<Ctx>,
    left: Vec<u64>,
}

impl IntoIterator for Completions {
    type Item = Result<Future, Box<EvalAltResult>>;
    type IntoIter = Box<dyn Iterator<Item = Self::Item>>;

    fn into_iter(mut self) -> Self::IntoIter {
        Box::new(std::iter::from_fn(move || {
            if self.left.is_empty() {
                return None;
            }
            let done = wait_any(&self.ctx, &self.left, None);
            if let Ok(f) = &done {
                self.left.retain(|id| *id != f.id);
            } else {
                self.left.clear();
            }
            Some(done)
        }))
    }
}

/// `pool_map_unordered(f, items)`: `f(item)` for each item, run as futures a bounded number at a
/// time, yielding each result as soon as it is ready.
#[derive(Clone)]
struct Unordered {
    ctx: Arc<Ctx>,
    f: FnValue,
    items: Arc<Mutex<Items>>,
}

/// Items not submitted yet (a range is never materialised).
type Items = Box<dyn Iterator<Item = Dynamic> + Send>;

impl Unordered {
    fn new(ctx: &Arc<Ctx>, f: &FnPtr, items: Dynamic) -> Result<Unordered, Box<EvalAltResult>> {
        let f = function_arg(&Dynamic::from(f.clone()), "pool_map_unordered")?;
        let items: Items = if let Some(range) = items.read_lock::<std::ops::Range<INT>>() {
            Box::new(range.clone().map(Dynamic::from))
        } else if let Some(range) = items.read_lock::<std::ops::RangeInclusive<INT>>() {
            Box::new(range.clone().map(Dynamic::from))
        } else {
            let type_name = items.type_name();
            let array = items.into_array().map_err(|_| {
                invalid(format!(
                    "pool_map_unordered expects an array or a range of items, got {type_name}"
                ))
            })?;
            Box::new(array.into_iter())
        };
        Ok(Unordered {
            ctx: ctx.clone(),
            f,
            items: Arc::new(Mutex::new(items)),
        })
    }
}

impl IntoIterator for Unordered {
    type Item = ScriptResult;
    type IntoIter = Box<dyn Iterator<Item = ScriptResult>>;

    fn into_iter(self) -> Self::IntoIter {
        let mut running = InFlight {
            ctx: self.ctx.clone(),
            futures: Vec::new(),
        };
        Box::new(std::iter::from_fn(move || {
            while running.futures.len() < UNORDERED_AHEAD {
                let Some(item) = lock(&self.items).next() else {
                    break;
                };
                let submitted = sendable(&item, "pool_map_unordered item")
                    .and_then(|item| submit(&self.ctx, self.f.clone(), vec![item]));
                match submitted {
                    Ok(f) => running.futures.push(f.id),
                    Err(e) => return Some(Err(e)),
                }
            }
            if running.futures.is_empty() {
                return None;
            }
            let next = wait_any(&running.ctx, &running.futures, None).and_then(|done| {
                running.futures.retain(|id| *id != done.id);
                get(&running.ctx, done.id, None, true)
            });
            Some(next)
        }))
    }
}

/// The futures a `pool_map_unordered` loop has started; those not started yet are cancelled when
/// the loop ends early (a `break`, or an error).
struct InFlight {
    ctx: Arc<Ctx>,
    futures: Vec<u64>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for future in self.futures.drain(..) {
            let _ = self.ctx.call(Op::Cancel { future });
        }
    }
}
