//! Processes as actors (Erlang's model): `p.send(msg)`, `recv`, `self()`, `parent()`, names,
//! monitors and links.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, INT, NativeCallContext};

use super::{Ctx, ScriptResult, invalid, method, sendable};
use crate::{
    Value,
    value::{ProcessHandle, SupervisorHandle},
    wire::Op,
};

/// A handle that names a process: a process, or a supervisor (which is one).
pub(super) trait AsProcess: rhai::Variant + Clone {
    fn process(&self) -> ProcessHandle;
}

impl AsProcess for ProcessHandle {
    fn process(&self) -> ProcessHandle {
        self.clone()
    }
}

impl AsProcess for SupervisorHandle {
    fn process(&self) -> ProcessHandle {
        self.process.clone()
    }
}

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    method(engine, "self", move || c.me());
    let c = ctx.clone();
    method(engine, "parent", move || {
        Ok::<_, Box<EvalAltResult>>(
            c.actor()
                .parent
                .clone()
                .map_or(Dynamic::UNIT, Dynamic::from),
        )
    });
    register_receive(engine, ctx);
    let c = ctx.clone();
    method(engine, "register", move |name: &str, p: ProcessHandle| {
        c.ask::<()>(Op::Register {
            name: name.into(),
            process: p.id,
        })
    });
    let c = ctx.clone();
    method(engine, "whereis", move |name: &str| -> ScriptResult {
        c.ask(Op::Whereis { name: name.into() })
            .map(|v: Value| c.to_dynamic(v))
    });
    let c = ctx.clone();
    method(engine, "trap_exits", move |on: bool| {
        c.ask::<()>(Op::TrapExits(on))
    });
    register_process_verbs::<ProcessHandle>(engine, ctx);
    register_process_verbs::<SupervisorHandle>(engine, ctx);
}

/// `p.send(msg)`, `monitor(p)`, `demonitor(p)`, `link(p)`, `unlink(p)` for handle type `H`.
pub(super) fn register_process_verbs<H: AsProcess>(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    method(engine, "send", move |p: &mut H, message: Dynamic| {
        send(&c, p.process(), &message)
    });
    for (name, link, on) in [
        ("monitor", false, true),
        ("demonitor", false, false),
        ("link", true, true),
        ("unlink", true, false),
    ] {
        let c = ctx.clone();
        method(engine, name, move |p: H| {
            c.ask::<()>(Op::Watch {
                process: p.process().id,
                link,
                on,
            })
        });
    }
}

/// Sends `message` to `to`; `false` if that process has already ended.
pub(super) fn send(
    ctx: &Ctx,
    to: ProcessHandle,
    message: &Dynamic,
) -> Result<bool, Box<EvalAltResult>> {
    let value = sendable(message, "send")?;
    ctx.ask(Op::Send { to: to.id, value })
}

/// `recv()`, `recv(secs)`, `recv(pred)`, `recv(pred, secs)`, `try_recv()`, `try_recv(pred)`.
fn register_receive(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    method(engine, "recv", move || recv(&c, None, None));
    let c = ctx.clone();
    method(engine, "recv", move |secs: INT| {
        recv(&c, Some(secs as f64), None)
    });
    let c = ctx.clone();
    method(engine, "recv", move |secs: f64| recv(&c, Some(secs), None));
    let c = ctx.clone();
    method(engine, "recv", move |nc: NativeCallContext, pred: FnPtr| {
        recv(&c, None, Some((&nc, pred)))
    });
    let c = ctx.clone();
    method(
        engine,
        "recv",
        move |nc: NativeCallContext, pred: FnPtr, secs: INT| {
            recv(&c, Some(secs as f64), Some((&nc, pred)))
        },
    );
    let c = ctx.clone();
    method(
        engine,
        "recv",
        move |nc: NativeCallContext, pred: FnPtr, secs: f64| {
            recv(&c, Some(secs), Some((&nc, pred)))
        },
    );
    let c = ctx.clone();
    method(engine, "try_recv", move || try_recv(&c, None));
    let c = ctx.clone();
    method(
        engine,
        "try_recv",
        move |nc: NativeCallContext, pred: FnPtr| try_recv(&c, Some((&nc, pred))),
    );
}

type Pattern<'a> = Option<(&'a NativeCallContext<'a>, FnPtr)>;

/// Receives the next message (that `pattern` accepts), as a matcher for [`Ctx::receive`].
fn receive(
    ctx: &Ctx,
    timeout: Option<f64>,
    pattern: Pattern,
) -> Result<Option<Dynamic>, Box<EvalAltResult>> {
    match pattern {
        None => ctx.receive(timeout, |_| Ok(true)),
        Some((nc, pred)) => ctx.receive(timeout, |m| {
            pred.call_within_context::<Dynamic>(nc, (m.clone(),))?
                .as_bool()
                .map_err(|t| {
                    invalid(format!(
                        "recv: the pattern must return true or false, got {t}"
                    ))
                })
        }),
    }
}

fn recv(ctx: &Ctx, timeout: Option<f64>, pattern: Pattern) -> ScriptResult {
    let selective = pattern.is_some();
    receive(ctx, timeout, pattern)?.ok_or_else(|| {
        let what = if selective {
            "matching message"
        } else {
            "message"
        };
        invalid(format!(
            "recv timed out after {}s: no {what} arrived",
            timeout.unwrap_or_default()
        ))
    })
}

fn try_recv(ctx: &Ctx, pattern: Pattern) -> ScriptResult {
    Ok(receive(ctx, Some(0.0), pattern)?.unwrap_or(Dynamic::UNIT))
}

impl Ctx {
    /// This process's handle: the main script's, or the spawned process a worker runs. The
    /// first in a spawned process tells the main process, which then keeps its record (this
    /// handle is counted by nobody).
    pub(super) fn me(&self) -> Result<ProcessHandle, Box<EvalAltResult>> {
        let mut actor = self.actor();
        let me = actor.me.clone().ok_or_else(|| {
            invalid(
                "self() is for the main script and spawned processes; a function running in \
                 pool_map is not a process of its own",
            )
        })?;
        if !actor.shared && !self.counts_handles {
            actor.shared = true;
            drop(actor);
            self.post(Op::Shared { process: me.id })?;
        }
        Ok(me)
    }
}
