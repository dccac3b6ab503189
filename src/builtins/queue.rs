//! `queue()`, `joinable_queue()` and the `Queue` handle: Python's `multiprocessing.Queue` and
//! `JoinableQueue`, usable from any process.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, INT};

use super::{
    Ctx, invalid, method, register_equality, seconds, sendable, unexpected, waiting_method,
};
use crate::{
    value::QueueHandle,
    wire::{Object, Op, Reply},
};

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    engine.register_type_with_name::<QueueHandle>("Queue");
    for (name, joinable) in [("queue", false), ("joinable_queue", true)] {
        let c = ctx.clone();
        method(engine, name, move || new_queue(&c, None, joinable));
        let c = ctx.clone();
        method(engine, name, move |maxsize: INT| {
            if maxsize < 1 {
                return Err(invalid(format!(
                    "{name}(maxsize) needs a maxsize of 1 or more, got {maxsize}"
                )));
            }
            new_queue(&c, Some(maxsize as u64), joinable)
        });
    }
    let c = ctx.clone();
    method(engine, "task_done", move |q: &mut QueueHandle| {
        c.call(Op::TaskDone { queue: q.id }).map(|_| ())
    });
    waiting_method(engine, ctx, "join", join);
    let c = ctx.clone();
    method(engine, "put", move |q: &mut QueueHandle, value: Dynamic| {
        put(&c, q, &value, None)
    });
    let c = ctx.clone();
    method(
        engine,
        "put",
        move |q: &mut QueueHandle, value: Dynamic, secs: INT| put(&c, q, &value, Some(secs as f64)),
    );
    let c = ctx.clone();
    method(
        engine,
        "put",
        move |q: &mut QueueHandle, value: Dynamic, secs: f64| put(&c, q, &value, Some(secs)),
    );
    waiting_method(engine, ctx, "get", get);
    let c = ctx.clone();
    method(engine, "try_get", move |q: &mut QueueHandle| {
        match c.call(Op::Get {
            queue: q.id,
            timeout: Some(0.0),
        })? {
            Reply::Got(v) => Ok(v.map_or(Dynamic::UNIT, |v| c.to_dynamic(v))),
            other => Err(unexpected(&other)),
        }
    });
    let c = ctx.clone();
    method(engine, "len", move |q: &mut QueueHandle| {
        match c.call(Op::Len { queue: q.id })? {
            Reply::Len(n) => Ok(n as INT),
            other => Err(unexpected(&other)),
        }
    });
    engine.register_fn("to_string", |q: &mut QueueHandle| {
        format!("Queue({})", q.id)
    });
    engine.register_fn("to_debug", |q: &mut QueueHandle| format!("Queue({})", q.id));
    register_equality::<QueueHandle>(engine);
}

fn new_queue(
    ctx: &Ctx,
    maxsize: Option<u64>,
    joinable: bool,
) -> Result<QueueHandle, Box<EvalAltResult>> {
    match ctx.call(Op::NewQueue { maxsize, joinable })? {
        Reply::Queue(id) => Ok(QueueHandle {
            held: ctx.held(Object::Queue(id)),
            id,
            bounded: maxsize.is_some(),
        }),
        other => Err(unexpected(&other)),
    }
}

/// `q.put(v)`, or `q.put(v, secs)`: a full bounded queue makes it wait, at most `secs`.
fn put(
    ctx: &Ctx,
    q: &QueueHandle,
    value: &Dynamic,
    timeout: Option<f64>,
) -> Result<(), Box<EvalAltResult>> {
    let put = Op::Put {
        queue: q.id,
        value: sendable(value, "q.put")?,
        timeout: timeout.map(|t| seconds(t, "q.put")).transpose()?,
    };
    // Only a bounded queue can make a put wait; others need no answer.
    if q.bounded {
        ctx.call(put).map(|_| ())
    } else {
        ctx.post(put)
    }
}

fn get(ctx: &Ctx, q: &QueueHandle, timeout: Option<f64>) -> Result<Dynamic, Box<EvalAltResult>> {
    let timeout = timeout.map(|t| seconds(t, "q.get")).transpose()?;
    match ctx.call(Op::Get {
        queue: q.id,
        timeout,
    })? {
        Reply::Got(Some(v)) => Ok(ctx.to_dynamic(v)),
        Reply::Got(None) => Err(invalid(format!(
            "q.get timed out after {}s: the queue stayed empty",
            timeout.unwrap_or_default()
        ))),
        other => Err(unexpected(&other)),
    }
}

/// `q.join()`, or `q.join(secs)`: waits until every item put has been marked `task_done()`.
fn join(ctx: &Ctx, q: &QueueHandle, timeout: Option<f64>) -> Result<Dynamic, Box<EvalAltResult>> {
    let timeout = timeout.map(|t| seconds(t, "q.join")).transpose()?;
    ctx.call(Op::JoinQueue {
        queue: q.id,
        timeout,
    })
    .map(|_| Dynamic::UNIT)
}
