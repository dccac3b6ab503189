//! Small builtins: `cpu_count()`, `pid()`, `host()`, `sleep(secs)`, `exit(code)`, and `sum(values)`, native
//! because a Rhai loop over a big result array would cost more than computing it.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FLOAT, INT};

use super::{Ctx, invalid, method, seconds};
use crate::stop::{Stop, terminate};

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    engine.register_fn("cpu_count", || crate::cpu_count() as INT);
    method(engine, "pid", || std::process::id() as INT);
    // Pids of different machines collide; this names the machine: the cluster agent, or "local".
    let host = ctx.host.clone();
    method(engine, "host", move || host.clone());
    let c = ctx.clone();
    method(engine, "sleep", move |secs: f64| sleep(&c, secs));
    let c = ctx.clone();
    method(engine, "sleep", move |secs: INT| sleep(&c, secs as f64));
    // Rhai's own `exit` becomes the top level's return value, losing the code; this one is a
    // termination that keeps it (and, like Rhai's, cannot be caught).
    method(engine, "exit", || exit(0));
    method(engine, "exit", exit);
    engine.register_fn("sum", sum);
}

/// The sum of an array of numbers: an int while every item is one (overflow is an error), a float
/// once any item is a float; `true` counts 1 and `false` 0, as in Python.
fn sum(values: Array) -> Result<Dynamic, Box<EvalAltResult>> {
    let mut int: INT = 0;
    let mut float: Option<FLOAT> = None;
    for v in &values {
        let term = if let Ok(b) = v.as_bool() {
            Ok(INT::from(b))
        } else if let Ok(i) = v.as_int() {
            Ok(i)
        } else if let Ok(f) = v.as_float() {
            Err(f)
        } else {
            return Err(invalid(format!("sum: cannot add a {}", v.type_name())));
        };
        match (term, float.as_mut()) {
            (Ok(i), None) => {
                int = int
                    .checked_add(i)
                    .ok_or_else(|| invalid("sum: integer overflow"))?;
            }
            (Ok(i), Some(total)) => *total += i as FLOAT,
            (Err(f), None) => float = Some(int as FLOAT + f),
            (Err(f), Some(total)) => *total += f,
        }
    }
    Ok(float.map_or_else(|| int.into(), Into::into))
}

fn sleep(ctx: &Ctx, secs: f64) -> Result<(), Box<EvalAltResult>> {
    crate::stop::sleep(seconds(secs, "sleep")?, &ctx.stop)
}

/// `exit(code)` keeps the low 8 bits of `code`, as a shell does: `exit(-1)` is status 255 and
/// `exit(256)` is 0, so a negative code never reads as success by accident of clamping.
fn exit(code: INT) -> Result<(), Box<EvalAltResult>> {
    Err(terminate(Stop::Exit(code & 0xff)))
}
