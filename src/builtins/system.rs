//! Small process-level builtins: `cpu_count()`, `pid()`, `sleep(secs)`, `exit(code)`.

use std::sync::Arc;

use rhai::{Engine, EvalAltResult, INT};

use super::{Ctx, method, seconds};
use crate::stop::{Stop, terminate};

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    engine.register_fn("cpu_count", || crate::cpu_count() as INT);
    method(engine, "pid", || std::process::id() as INT);
    let c = ctx.clone();
    method(engine, "sleep", move |secs: f64| sleep(&c, secs));
    let c = ctx.clone();
    method(engine, "sleep", move |secs: INT| sleep(&c, secs as f64));
    // Rhai's own `exit` becomes the top level's return value, losing the code; this one is a
    // termination that keeps it (and, like Rhai's, cannot be caught).
    method(engine, "exit", || exit(0));
    method(engine, "exit", exit);
}

fn sleep(ctx: &Ctx, secs: f64) -> Result<(), Box<EvalAltResult>> {
    crate::stop::sleep(seconds(secs, "sleep")?, &ctx.stop)
}

fn exit(code: INT) -> Result<(), Box<EvalAltResult>> {
    Err(terminate(Stop::Exit(code)))
}
