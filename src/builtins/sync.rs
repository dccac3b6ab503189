//! `lock()`, `semaphore(n)`, `event()`, `barrier(n)`: Python's `multiprocessing` synchronization,
//! with the same method names and a time limit on every wait.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, INT};

use super::{
    Ctx, ScriptResult, invalid, method, register_equality, seconds, unexpected, waiting_method,
};
use crate::{
    value::{Handle, Kind, kinds},
    wire::{Op, Reply, SyncAction},
};

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    register_handle::<kinds::Lock>(engine);
    register_handle::<kinds::Semaphore>(engine);
    register_handle::<kinds::Event>(engine);
    register_handle::<kinds::Barrier>(engine);
    let c = ctx.clone();
    method(engine, "lock", move || new::<kinds::Lock>(&c, 1));
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
    register_permits::<kinds::Semaphore>(engine, ctx);
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
    let c = ctx.clone();
    method(engine, "reset", move |h: &mut Handle<kinds::Barrier>| {
        act(&c, h.id, SyncAction::Reset).map(|_| ())
    });
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
    match ctx.call(Op::NewSync {
        kind: K::KIND,
        size,
    })? {
        Reply::Id(id) => Ok(Handle::new(id)),
        other => Err(unexpected(&other)),
    }
}

fn act(ctx: &Ctx, id: u64, action: SyncAction) -> ScriptResult {
    match ctx.call(Op::Sync { id, action })? {
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
