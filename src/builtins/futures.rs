//! `pool_submit` and the `Future` handle (Python's `concurrent.futures`), `wait_any`,
//! `as_completed`, and the loop over `pool_map_unordered`'s results, which come as chunks finish.

use crate::locks::lock;
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rhai::{Array, Dynamic, Engine, EvalAltResult, INT};

use super::{
    Ctx, ScriptResult, function_arg, invalid, method,
    pool::{map_options, pool_items},
    register_call_starter, seconds,
    sync::register_handle,
    unexpected, waiting_method,
};
use crate::{
    Value,
    value::{FnValue, Handle, kinds},
    wire::{Answer, Id, Items, MapOptions, Object, Op},
};

type Future = Handle<kinds::Future>;

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    register_handle::<kinds::Future>(engine);
    register_call_starter(engine, ctx, "pool_submit", submit);
    waiting_method(engine, ctx, "get", |c, f: &Future, timeout| {
        get(c, f.id, timeout, false)
    });
    let c = ctx.clone();
    method(engine, "done", move |f: &mut Future| {
        c.ask::<bool>(Op::IsDone { future: f.id })
    });
    let c = ctx.clone();
    method(engine, "cancel", move |f: &mut Future| {
        c.ask::<bool>(Op::Cancel { future: f.id })
    });
    let c = ctx.clone();
    method(engine, "wait_any", move |futures: Array| {
        wait_any(&c, handles(&futures)?, None)
    });
    let c = ctx.clone();
    method(engine, "wait_any", move |futures: Array, secs: INT| {
        wait_any(&c, handles(&futures)?, Some(secs as f64))
    });
    let c = ctx.clone();
    method(engine, "wait_any", move |futures: Array, secs: f64| {
        wait_any(&c, handles(&futures)?, Some(secs))
    });
    engine.register_type_with_name::<Completions>("Completions");
    engine.register_iterator_result::<Completions, Future>();
    let c = ctx.clone();
    method(engine, "as_completed", move |futures: Array| {
        Completions::new(&c, &futures, None)
    });
    let c = ctx.clone();
    method(engine, "as_completed", move |futures: Array, secs: INT| {
        Completions::new(&c, &futures, Some(secs as f64))
    });
    let c = ctx.clone();
    method(engine, "as_completed", move |futures: Array, secs: f64| {
        Completions::new(&c, &futures, Some(secs))
    });
    engine.register_type_with_name::<Unordered>("UnorderedMap");
    engine.register_iterator_result::<Unordered, Dynamic>();
    for arity in [2, 3] {
        let c = ctx.clone();
        engine.register_raw_fn(
            "pool_map_unordered",
            vec![std::any::TypeId::of::<Dynamic>(); arity],
            move |_, args| Unordered::new(&c, args),
        );
    }
}

fn submit(ctx: &Ctx, f: FnValue, args: Vec<crate::Value>) -> Result<Future, Box<EvalAltResult>> {
    let at = crate::profile::here("pool_submit");
    ctx.ask(Op::Submit { f, args, at })
        .map(|Id(id)| future(ctx, id))
}

fn get(ctx: &Ctx, future: u64, timeout: Option<f64>, take: bool) -> ScriptResult {
    let timeout = timeout.map(|t| seconds(t, "fut.get")).transpose()?;
    ctx.ask(Op::Await {
        future,
        timeout,
        take,
    })
    .map(|v: Value| ctx.to_dynamic(v))
}

/// The futures of an array: the script's own handles, so those answered stay counted.
fn handles(futures: &Array) -> Result<Vec<Future>, Box<EvalAltResult>> {
    futures
        .iter()
        .map(|f| {
            f.read_lock::<Future>().map(|f| f.clone()).ok_or_else(|| {
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
    mut futures: Vec<Future>,
    timeout: Option<f64>,
) -> Result<Future, Box<EvalAltResult>> {
    let timeout = timeout.map(|t| seconds(t, "wait_any")).transpose()?;
    let done = ctx.ask(Op::WaitAny {
        futures: futures.iter().map(|f| f.id).collect(),
        timeout,
    })?;
    Ok(take_done(&mut futures, done))
}

/// Takes out of `futures` the one named as done (it is one of them).
fn take_done(futures: &mut Vec<Future>, Id(id): Id) -> Future {
    let at = futures.iter().position(|f| f.id == id).unwrap_or(0);
    futures.remove(at)
}

/// `as_completed(futures)` / `as_completed(futures, secs)`: the futures, each as soon as it is
/// done; with `secs`, the loop throws once that long has passed since the call with futures still
/// running (Python's `as_completed(fs, timeout)`).
#[derive(Clone)]
struct Completions {
    ctx: Arc<Ctx>,
    left: Vec<Future>,
    total: usize,
    timeout: Option<f64>,
    deadline: Option<Instant>,
}

impl Completions {
    fn new(
        ctx: &Arc<Ctx>,
        futures: &Array,
        timeout: Option<f64>,
    ) -> Result<Completions, Box<EvalAltResult>> {
        let timeout = timeout.map(|t| seconds(t, "as_completed")).transpose()?;
        let left = handles(futures)?;
        Ok(Completions {
            ctx: ctx.clone(),
            total: left.len(),
            left,
            timeout,
            deadline: timeout.map(|t| Instant::now() + Duration::from_secs_f64(t)),
        })
    }

    fn next(&mut self) -> Option<Result<Future, Box<EvalAltResult>>> {
        if self.left.is_empty() {
            return None;
        }
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64());
        let waited = self.ctx.backend.call(Op::WaitAny {
            futures: self.left.iter().map(|f| f.id).collect(),
            timeout: left,
        });
        let done = match waited.map(Id::from_reply) {
            Ok(Ok(done)) => Ok(take_done(&mut self.left, done)),
            Ok(Err(other)) => Err(unexpected(&other)),
            Err(e) if e.is_timeout() => Err(invalid(format!(
                "as_completed timed out after {}s: {} of {} futures not done",
                self.timeout.unwrap_or_default(),
                self.left.len(),
                self.total
            ))),
            Err(e) => Err(self.ctx.script_error(e)),
        };
        if done.is_err() {
            self.left.clear();
        }
        Some(done)
    }
}

impl IntoIterator for Completions {
    type Item = Result<Future, Box<EvalAltResult>>;
    type IntoIter = Box<dyn Iterator<Item = Self::Item>>;

    fn into_iter(mut self) -> Self::IntoIter {
        Box::new(std::iter::from_fn(move || self.next()))
    }
}

/// `pool_map_unordered(f, items, options)`: the map runs on the pool as `pool_map` does (same
/// options, chunks, retries and time limits), and the loop gets each result as its chunk
/// finishes. Leaving the loop early stops the map.
#[derive(Clone)]
struct Unordered {
    ctx: Arc<Ctx>,
    f: FnValue,
    items: Arc<Mutex<Option<Items>>>,
    options: MapOptions,
}

impl Unordered {
    fn new(ctx: &Arc<Ctx>, args: &[&mut Dynamic]) -> Result<Unordered, Box<EvalAltResult>> {
        let options = match args.get(2) {
            Some(options) => map_options(options)?,
            None => MapOptions::default(),
        };
        Ok(Unordered {
            ctx: ctx.clone(),
            f: function_arg(args[0], "pool_map_unordered")?,
            items: Arc::new(Mutex::new(Some(pool_items(args[1])?))),
            options,
        })
    }
}

impl IntoIterator for Unordered {
    type Item = ScriptResult;
    type IntoIter = Box<dyn Iterator<Item = ScriptResult>>;

    fn into_iter(self) -> Self::IntoIter {
        let Some(items) = lock(&self.items).take() else {
            let again = invalid("a pool_map_unordered can be iterated only once");
            return Box::new(std::iter::once(Err(again)));
        };
        let started = self.ctx.ask(Op::MapUnordered {
            f: self.f.clone(),
            items,
            options: self.options,
            at: crate::profile::here("pool_map_unordered"),
        });
        let mut stream = match started {
            Ok(Id(results)) => ResultStream {
                ctx: self.ctx.clone(),
                results,
                batch: Vec::new().into_iter(),
                ended: false,
            },
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        Box::new(std::iter::from_fn(move || stream.next()))
    }
}

/// A running `pool_map_unordered` as the loop reads it: a batch at a time from the main process.
struct ResultStream {
    ctx: Arc<Ctx>,
    results: u64,
    batch: std::vec::IntoIter<Dynamic>,
    ended: bool,
}

impl ResultStream {
    fn next(&mut self) -> Option<ScriptResult> {
        loop {
            if let Some(value) = self.batch.next() {
                return Some(Ok(value));
            }
            if self.ended {
                return None;
            }
            let next = self.ctx.ask(Op::NextResults {
                results: self.results,
                timeout: None,
            });
            match next {
                Ok(Some(batch)) => {
                    let values = self.ctx.to_dynamic(batch).into_array().unwrap_or_default();
                    self.batch = values.into_iter();
                }
                Ok(None) => self.ended = true,
                Err(e) => return self.fail(e),
            }
        }
    }

    fn fail(&mut self, error: Box<EvalAltResult>) -> Option<ScriptResult> {
        self.ended = true;
        Some(Err(error))
    }
}

impl Drop for ResultStream {
    /// A loop left early (a `break`, an error in its body) stops the map.
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.ctx.ask::<()>(Op::CloseResults {
                results: self.results,
            });
        }
    }
}

/// The main script's handle to future `id`, counted with its other copies.
fn future(ctx: &Ctx, id: u64) -> Future {
    Future::counted(id, ctx.held(Object::Future(id)))
}
