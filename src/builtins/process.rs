//! `spawn` and the `Process` handle: Python's `multiprocessing.Process` as a script function.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, INT};

use super::{
    Ctx, method, register_call_starter, register_equality, seconds, unexpected, waiting_method,
};
use crate::{
    Value,
    value::{FnValue, ProcessHandle},
    wire::{KillSignal, Object, Op, Reply},
};

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    engine.register_type_with_name::<ProcessHandle>("Process");
    register_call_starter(engine, ctx, "spawn", spawn);
    engine.register_get("pid", |p: &mut ProcessHandle| p.pid as INT);
    let c = ctx.clone();
    engine.register_get("exit_code", move |p: &mut ProcessHandle| {
        exit_code(&c, p).map(|code| code.map_or(Dynamic::UNIT, Dynamic::from))
    });
    let c = ctx.clone();
    method(engine, "is_alive", move |p: &mut ProcessHandle| {
        exit_code(&c, p).map(|code| code.is_none())
    });
    waiting_method(engine, ctx, "join", join);
    for (name, signal) in [
        ("kill", KillSignal::Kill),
        ("terminate", KillSignal::Terminate),
    ] {
        let c = ctx.clone();
        method(engine, name, move |p: &mut ProcessHandle| {
            c.call(Op::Kill {
                process: p.id,
                signal,
            })
            .map(|_| ())
        });
    }
    for name in ["to_string", "to_debug"] {
        engine.register_fn(name, |p: &mut ProcessHandle| {
            format!("Process(pid {})", p.pid)
        });
    }
    register_equality::<ProcessHandle>(engine);
}

fn spawn(ctx: &Ctx, f: FnValue, args: Vec<Value>) -> Result<ProcessHandle, Box<EvalAltResult>> {
    match ctx.call(Op::Spawn { f, args })? {
        Reply::Process { id, pid } => Ok(ProcessHandle {
            id,
            pid,
            held: ctx.held(Object::Process(id)),
        }),
        other => Err(unexpected(&other)),
    }
}

fn join(ctx: &Ctx, p: &ProcessHandle, timeout: Option<f64>) -> Result<Dynamic, Box<EvalAltResult>> {
    let timeout = timeout.map(|t| seconds(t, "join")).transpose()?;
    match ctx.call(Op::Join {
        process: p.id,
        timeout,
    })? {
        Reply::Value(v) => Ok(ctx.to_dynamic(v)),
        other => Err(unexpected(&other)),
    }
}

fn exit_code(ctx: &Ctx, p: &ProcessHandle) -> Result<Option<INT>, Box<EvalAltResult>> {
    match ctx.call(Op::Status { process: p.id })? {
        Reply::Status { exit_code } => Ok(exit_code),
        other => Err(unexpected(&other)),
    }
}
