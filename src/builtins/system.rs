//! Small process-level builtins: `cpu_count()`, `pid()`, `sleep(secs)`.

use std::time::Duration;

use rhai::{Engine, INT};

use super::{process::method, seconds};

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("cpu_count", || crate::cpu_count() as INT);
    method(engine, "pid", || std::process::id() as INT);
    method(engine, "sleep", |secs: f64| sleep(secs));
    method(engine, "sleep", |secs: INT| sleep(secs as f64));
}

fn sleep(secs: f64) -> Result<(), Box<rhai::EvalAltResult>> {
    std::thread::sleep(Duration::from_secs_f64(seconds(secs, "sleep")?));
    Ok(())
}
