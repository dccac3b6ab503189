//! `supervise(children, options)` and the `Supervisor` handle. The supervisor itself is a process
//! running `supervisor_main` from `stdlib/actors.rhai`; this side starts it and talks to it.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, INT, Map};

use super::{
    Ctx, ScriptResult, actor::send, function_arg, invalid, method, register_equality, seconds,
    sendable,
};
use crate::{
    Value,
    value::{FnValue, ProcessHandle, SupervisorHandle},
    wire::{ExitCode, NewProcess, Op},
};

/// How long `children()` waits for the supervisor to answer, and `stop()` for it to end.
const ANSWER_WITHIN: f64 = 10.0;

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    engine.register_type_with_name::<SupervisorHandle>("Supervisor");
    let c = ctx.clone();
    method(engine, "supervise", move |children: Array| {
        supervise(&c, children, Map::new())
    });
    let c = ctx.clone();
    method(engine, "supervise", move |children: Array, options: Map| {
        supervise(&c, children, options)
    });
    engine.register_get("pid", |s: &mut SupervisorHandle| s.process.pid as INT);
    engine.register_get("process", |s: &mut SupervisorHandle| s.process.clone());
    let c = ctx.clone();
    method(engine, "children", move |s: &mut SupervisorHandle| {
        children(&c, s)
    });
    let c = ctx.clone();
    method(engine, "stop", move |s: &mut SupervisorHandle| {
        stop(&c, s, ANSWER_WITHIN)
    });
    let c = ctx.clone();
    method(
        engine,
        "stop",
        move |s: &mut SupervisorHandle, secs: INT| stop(&c, s, secs as f64),
    );
    let c = ctx.clone();
    method(
        engine,
        "stop",
        move |s: &mut SupervisorHandle, secs: f64| stop(&c, s, secs),
    );
    for name in ["to_string", "to_debug"] {
        engine.register_fn(name, |s: &mut SupervisorHandle| {
            format!("Supervisor(pid {})", s.process.pid)
        });
    }
    register_equality::<SupervisorHandle>(engine);
}

fn supervise(
    ctx: &Ctx,
    children: Array,
    options: Map,
) -> Result<SupervisorHandle, Box<EvalAltResult>> {
    if children.is_empty() {
        return Err(invalid("supervise needs at least one child function"));
    }
    for child in &children {
        function_arg(child, "supervise")?;
    }
    let options = supervisor_options(options)?;
    let args = vec![
        sendable(&Dynamic::from_array(children), "supervise")?,
        sendable(&Dynamic::from_map(options), "supervise")?,
    ];
    let f = FnValue {
        name: "supervisor_main".into(),
        curry: Vec::new(),
    };
    ctx.on_this_machine("supervise")?;
    let at = crate::profile::here("supervise");
    ctx.ask(Op::Spawn { f, args, at })
        .map(|NewProcess { id, pid }| SupervisorHandle {
            process: ProcessHandle::new(id, pid),
        })
}

/// The options with their defaults (Elixir's: `one_for_one`, 3 restarts within 5 seconds).
fn supervisor_options(options: Map) -> Result<Map, Box<EvalAltResult>> {
    let mut out = Map::new();
    out.insert("strategy".into(), "one_for_one".into());
    out.insert("max_restarts".into(), Dynamic::from(3 as INT));
    out.insert("within".into(), Dynamic::from(5.0_f64));
    for (key, value) in options {
        match key.as_str() {
            "strategy" => {
                let strategy = value.into_string().unwrap_or_default();
                if !matches!(strategy.as_str(), "one_for_one" | "one_for_all") {
                    return Err(invalid(format!(
                        "supervise: strategy must be \"one_for_one\" or \"one_for_all\", got \"{strategy}\""
                    )));
                }
                out.insert(key, strategy.into());
            }
            "max_restarts" => match value.as_int() {
                Ok(n) if n >= 0 => {
                    out.insert(key, Dynamic::from(n));
                }
                _ => {
                    return Err(invalid(
                        "supervise: max_restarts must be an integer of 0 or more",
                    ));
                }
            },
            "within" => {
                let secs = value
                    .as_float()
                    .or_else(|_| value.as_int().map(|i| i as f64))
                    .map_err(|_| invalid("supervise: within must be a number of seconds"))?;
                out.insert(key, Dynamic::from(seconds(secs, "supervise: within")?));
            }
            other => {
                return Err(invalid(format!(
                    "supervise: unknown option \"{other}\" (known: strategy, max_restarts, within)"
                )));
            }
        }
    }
    Ok(out)
}

/// Asks the supervisor something and waits for its answer (`None` if it has ended).
fn ask(
    ctx: &Ctx,
    s: &SupervisorHandle,
    request: &str,
    within: f64,
) -> Result<Option<Map>, Box<EvalAltResult>> {
    let tag = ctx.tag();
    let mut message = Map::new();
    message.insert("supervisor".into(), request.into());
    message.insert("reply_to".into(), Dynamic::from(ctx.me()?));
    message.insert("tag".into(), Dynamic::from(tag));
    if !send(ctx, s.process.clone(), &Dynamic::from_map(message))? {
        return Ok(None);
    }
    let is_answer = |m: &Dynamic| {
        Ok(m.read_lock::<Map>()
            .and_then(|m| m.get("supervisor_reply").and_then(|t| t.as_int().ok()))
            == Some(tag))
    };
    match ctx.receive(Some(within), is_answer)? {
        Some(answer) => Ok(answer.try_cast::<Map>()),
        None => {
            // It may have ended meanwhile; then its end says more than a time-out.
            if is_ended(ctx, s)? {
                return Ok(None);
            }
            Err(invalid(format!(
                "supervisor {} did not answer {request}() within {within}s",
                s.process.pid
            )))
        }
    }
}

fn is_ended(ctx: &Ctx, s: &SupervisorHandle) -> Result<bool, Box<EvalAltResult>> {
    ctx.ask(Op::Status {
        process: s.process.id,
    })
    .map(|ExitCode(exit_code)| exit_code.is_some())
}

/// The children now running (restarted ones replace those that ended); empty once it stopped.
fn children(ctx: &Ctx, s: &SupervisorHandle) -> ScriptResult {
    let answer = ask(ctx, s, "children", ANSWER_WITHIN)?;
    Ok(answer
        .and_then(|mut m| m.remove("children"))
        .unwrap_or_else(|| Dynamic::from_array(Array::new())))
}

/// Stops every child, then the supervisor; throws the supervisor's error if it had failed.
fn stop(ctx: &Ctx, s: &SupervisorHandle, within: f64) -> ScriptResult {
    let within = seconds(within, "stop")?;
    ask(ctx, s, "stop", within)?;
    ctx.ask(Op::Join {
        process: s.process.id,
        timeout: Some(within),
    })
    .map(|_: Value| Dynamic::UNIT)
}
