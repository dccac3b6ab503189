//! `queue()`, `joinable_queue()` and the `Queue` handle: Python's `multiprocessing.Queue` and
//! `JoinableQueue`, usable from any process.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, INT};

use super::{Ctx, invalid, method, register_equality, seconds, sendable, waiting_method};
use crate::{
    Value,
    value::QueueHandle,
    wire::{Id, Object, Op},
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
        c.ask::<()>(Op::TaskDone { queue: q.id })
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
        c.ask(Op::Get {
            queue: q.id,
            timeout: Some(0.0),
        })
        .map(|v: Option<Value>| v.map_or(Dynamic::UNIT, |v| c.to_dynamic(v)))
    });
    let c = ctx.clone();
    method(engine, "len", move |q: &mut QueueHandle| {
        c.ask(Op::Len { queue: q.id }).map(|n: u64| n as INT)
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
    ctx.ask(Op::NewQueue { maxsize, joinable })
        .map(|Id(id)| QueueHandle {
            held: ctx.held(Object::Queue(id)),
            id,
            bounded: maxsize.is_some(),
        })
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
        ctx.ask::<()>(put)
    } else {
        ctx.post(put)
    }
}

fn get(ctx: &Ctx, q: &QueueHandle, timeout: Option<f64>) -> Result<Dynamic, Box<EvalAltResult>> {
    let timeout = timeout.map(|t| seconds(t, "q.get")).transpose()?;
    match ctx.ask(Op::Get {
        queue: q.id,
        timeout,
    })? {
        Some(v) => Ok(ctx.to_dynamic(v)),
        None => Err(invalid(format!(
            "q.get timed out after {}s: the queue stayed empty",
            timeout.unwrap_or_default()
        ))),
    }
}

/// `q.join()`, or `q.join(secs)`: waits until every item put has been marked `task_done()`.
fn join(ctx: &Ctx, q: &QueueHandle, timeout: Option<f64>) -> Result<Dynamic, Box<EvalAltResult>> {
    let timeout = timeout.map(|t| seconds(t, "q.join")).transpose()?;
    ctx.ask::<()>(Op::JoinQueue {
        queue: q.id,
        timeout,
    })
    .map(|()| Dynamic::UNIT)
}
