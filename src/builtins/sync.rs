//! `lock()`, `rlock()`, `semaphore(n)`, `condition()`, `event()`, `barrier(n)`: Python's
//! `multiprocessing` synchronization, with the same method names and a time limit on every wait.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, INT, NativeCallContext};

use super::{
    Ctx, ScriptResult, invalid, method, register_equality, seconds, unexpected, waiting_method,
};
use crate::{
    value::{Handle, Kind, kinds},
    wire::{Id, Object, Op, Reply, SyncAction},
};

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    register_handle::<kinds::Lock>(engine);
    register_handle::<kinds::RLock>(engine);
    register_handle::<kinds::Condition>(engine);
    register_handle::<kinds::Semaphore>(engine);
    register_handle::<kinds::Event>(engine);
    register_handle::<kinds::Barrier>(engine);
    let c = ctx.clone();
    method(engine, "lock", move || new::<kinds::Lock>(&c, 1));
    let c = ctx.clone();
    method(engine, "rlock", move || new::<kinds::RLock>(&c, 1));
    let c = ctx.clone();
    method(engine, "semaphore", move |n: INT| {
        if n < 0 {
            return Err(invalid(format!(
                "semaphore(n) needs n of 0 or more, got {n}"
            )));
        }
        new::<kinds::Semaphore>(&c, n as u64)
    });
    let c = ctx.clone();
    method(engine, "event", move || new::<kinds::Event>(&c, 0));
    let c = ctx.clone();
    method(engine, "barrier", move |n: INT| {
        if n < 1 {
            return Err(invalid(format!("barrier(n) needs n of 1 or more, got {n}")));
        }
        new::<kinds::Barrier>(&c, n as u64)
    });
    register_permits::<kinds::Lock>(engine, ctx);
    register_permits::<kinds::RLock>(engine, ctx);
    register_permits::<kinds::Semaphore>(engine, ctx);
    register_condition(engine, ctx);
    for (name, action) in [("set", SyncAction::Set), ("clear", SyncAction::Clear)] {
        let c = ctx.clone();
        method(engine, name, move |h: &mut Handle<kinds::Event>| {
            act(&c, h.id, action).map(|_| ())
        });
    }
    let c = ctx.clone();
    method(engine, "is_set", move |h: &mut Handle<kinds::Event>| {
        act(&c, h.id, SyncAction::IsSet)
    });
    waiting_method(
        engine,
        ctx,
        "wait",
        |c, h: &Handle<kinds::Event>, timeout| wait(c, h.id, timeout, "e.wait"),
    );
    waiting_method(
        engine,
        ctx,
        "wait",
        |c, h: &Handle<kinds::Barrier>, timeout| wait(c, h.id, timeout, "b.wait"),
    );
    register_barrier(engine, ctx);
}

/// A barrier's `reset()` and `abort()`, and its `broken`, `parties` and `n_waiting` properties.
fn register_barrier(engine: &mut Engine, ctx: &Arc<Ctx>) {
    for (name, action) in [("reset", SyncAction::Reset), ("abort", SyncAction::Abort)] {
        let c = ctx.clone();
        method(engine, name, move |h: &mut Handle<kinds::Barrier>| {
            act(&c, h.id, action).map(|_| ())
        });
    }
    for (name, action) in [
        ("broken", SyncAction::Broken),
        ("parties", SyncAction::Parties),
        ("n_waiting", SyncAction::Waiting),
    ] {
        let c = ctx.clone();
        engine.register_get(name, move |h: &mut Handle<kinds::Barrier>| {
            act(&c, h.id, action)
        });
    }
}

/// `condition()`, `condition(lock)` and a condition's `wait`, `wait_for`, `notify` and
/// `notify_all` (its `acquire` and `release` are its lock's).
fn register_condition(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    method(engine, "condition", move || new_condition(&c, None));
    for over in [
        condition_over::<kinds::Lock>,
        condition_over::<kinds::RLock>,
    ] {
        over(engine, ctx);
    }
    engine.register_fn(
        "condition",
        |nc: NativeCallContext, other: Dynamic| -> ScriptResult {
            Err(invalid(format!(
                "condition(lock) needs a lock() or an rlock(), got {}",
                nc.engine().map_type_name(other.type_name())
            )))
        },
    );
    register_permits::<kinds::Condition>(engine, ctx);
    waiting_method(
        engine,
        ctx,
        "wait",
        |c, h: &Handle<kinds::Condition>, timeout| wait(c, h.id, timeout, "c.wait"),
    );
    let c = ctx.clone();
    method(
        engine,
        "wait_for",
        move |nc: NativeCallContext, h: &mut Handle<kinds::Condition>, pred: FnPtr| {
            wait_for(&c, &nc, h.id, &pred, None)
        },
    );
    let c = ctx.clone();
    method(
        engine,
        "wait_for",
        move |nc: NativeCallContext, h: &mut Handle<kinds::Condition>, pred: FnPtr, secs: INT| {
            wait_for(&c, &nc, h.id, &pred, Some(secs as f64))
        },
    );
    let c = ctx.clone();
    method(
        engine,
        "wait_for",
        move |nc: NativeCallContext, h: &mut Handle<kinds::Condition>, pred: FnPtr, secs: f64| {
            wait_for(&c, &nc, h.id, &pred, Some(secs))
        },
    );
    let c = ctx.clone();
    method(engine, "notify", move |h: &mut Handle<kinds::Condition>| {
        act(&c, h.id, SyncAction::Notify(1)).map(|_| ())
    });
    let c = ctx.clone();
    method(
        engine,
        "notify",
        move |h: &mut Handle<kinds::Condition>, n: INT| {
            act(&c, h.id, SyncAction::Notify(n.max(0) as u64)).map(|_| ())
        },
    );
    let c = ctx.clone();
    method(
        engine,
        "notify_all",
        move |h: &mut Handle<kinds::Condition>| {
            act(&c, h.id, SyncAction::Notify(u64::MAX)).map(|_| ())
        },
    );
}

fn condition_over<K: Kind>(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    method(engine, "condition", move |l: Handle<K>| {
        new_condition(&c, Some(l.id))
    });
}

fn new_condition(
    ctx: &Ctx,
    lock: Option<u64>,
) -> Result<Handle<kinds::Condition>, Box<EvalAltResult>> {
    ctx.ask(Op::NewCondition { lock })
        .map(|Id(id)| Handle::counted(id, ctx.held(Object::Sync(id))))
}

/// `c.wait_for(pred, secs)`: waits until `pred()` is true, calling it with the condition's lock
/// held, first at once and then after every notification; answers `pred`'s last value, so
/// `false` means the time ran out (Python's `Condition.wait_for`).
fn wait_for(
    ctx: &Ctx,
    nc: &NativeCallContext,
    id: u64,
    pred: &FnPtr,
    timeout: Option<f64>,
) -> ScriptResult {
    let timeout = timeout.map(|t| seconds(t, "c.wait_for")).transpose()?;
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
    loop {
        let done = pred
            .call_within_context::<Dynamic>(nc, ())?
            .as_bool()
            .map_err(|t| {
                invalid(format!(
                    "c.wait_for: the predicate must return true or false, got {t}"
                ))
            })?;
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if done || left.is_some_and(|l| l.is_zero()) {
            return Ok(done.into());
        }
        let timeout = left.map(|l| l.as_secs_f64());
        let _notified_or_out_of_time = act(ctx, id, SyncAction::Wait { timeout })?;
    }
}

/// The type name, printing and `==` of a handle type.
pub(super) fn register_handle<K: Kind>(engine: &mut Engine) {
    engine.register_type_with_name::<Handle<K>>(K::NAME);
    for name in ["to_string", "to_debug"] {
        engine.register_fn(name, |h: &mut Handle<K>| format!("{}({})", K::NAME, h.id));
    }
    register_equality::<Handle<K>>(engine);
}

/// `acquire()`, `acquire(secs)` and `release()` for locks and semaphores.
fn register_permits<K: Kind>(engine: &mut Engine, ctx: &Arc<Ctx>) {
    waiting_method(engine, ctx, "acquire", |c, h: &Handle<K>, timeout| {
        let timeout = timeout.map(|t| seconds(t, "acquire")).transpose()?;
        act(c, h.id, SyncAction::Acquire { timeout })
    });
    let c = ctx.clone();
    method(engine, "release", move |h: &mut Handle<K>| {
        act(&c, h.id, SyncAction::Release).map(|_| ())
    });
}

fn new<K: Kind>(ctx: &Ctx, size: u64) -> Result<Handle<K>, Box<EvalAltResult>> {
    ctx.ask(Op::NewSync {
        kind: K::KIND,
        size,
    })
    .map(|Id(id)| Handle::counted(id, ctx.held(Object::Sync(id))))
}

fn act(ctx: &Ctx, id: u64, action: SyncAction) -> ScriptResult {
    match ctx.ask(Op::Sync { id, action })? {
        Reply::Unit => Ok(Dynamic::UNIT),
        Reply::Bool(b) => Ok(b.into()),
        Reply::Len(n) => Ok((n as INT).into()),
        other => Err(unexpected(&other)),
    }
}

fn wait(ctx: &Ctx, id: u64, timeout: Option<f64>, what: &str) -> ScriptResult {
    let timeout = timeout.map(|t| seconds(t, what)).transpose()?;
    act(ctx, id, SyncAction::Wait { timeout })
}
