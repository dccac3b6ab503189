//! `spawn` and the `Process` handle: Python's `multiprocessing.Process` as a script function.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, INT};

use super::{Ctx, method, register_call_starter, register_equality, seconds, waiting_method};
use crate::{
    Value,
    value::{FnValue, ProcessHandle},
    wire::{ExitCode, KillSignal, NewProcess, Object, Op},
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
            c.ask::<()>(Op::Kill {
                process: p.id,
                signal,
            })
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
    ctx.on_this_machine("spawn")?;
    let at = crate::profile::here("spawn");
    ctx.ask(Op::Spawn { f, args, at })
        .map(|NewProcess { id, pid }| ProcessHandle {
            id,
            pid,
            held: ctx.held(Object::Process(id)),
        })
}

fn join(ctx: &Ctx, p: &ProcessHandle, timeout: Option<f64>) -> Result<Dynamic, Box<EvalAltResult>> {
    let timeout = timeout.map(|t| seconds(t, "join")).transpose()?;
    ctx.ask(Op::Join {
        process: p.id,
        timeout,
    })
    .map(|v: Value| ctx.to_dynamic(v))
}

fn exit_code(ctx: &Ctx, p: &ProcessHandle) -> Result<Option<INT>, Box<EvalAltResult>> {
    ctx.ask(Op::Status { process: p.id })
        .map(|ExitCode(code)| code)
}
