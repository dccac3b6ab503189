//! Small process-level builtins: `cpu_count()`, `pid()`, `sleep(secs)`, `exit(code)`.

use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, INT, Position};

use super::{method, seconds};

/// Carried by the termination error `exit(code)` raises, so the code survives the top level
/// (Rhai's own `exit` turns into the script's return value there, losing the code).
#[derive(Debug, Clone, Copy)]
struct ExitRequest(INT);

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("cpu_count", || crate::cpu_count() as INT);
    method(engine, "pid", || std::process::id() as INT);
    method(engine, "sleep", |secs: f64| sleep(secs));
    method(engine, "sleep", |secs: INT| sleep(secs as f64));
    method(engine, "exit", || exit(0));
    method(engine, "exit", exit);
}

fn sleep(secs: f64) -> Result<(), Box<EvalAltResult>> {
    std::thread::sleep(Duration::from_secs_f64(seconds(secs, "sleep")?));
    Ok(())
}

fn exit(code: INT) -> Result<(), Box<EvalAltResult>> {
    Err(EvalAltResult::ErrorTerminated(Dynamic::from(ExitRequest(code)), Position::NONE).into())
}

/// The code passed to `exit(code)` if `error` is that request.
pub(crate) fn exit_code(error: &EvalAltResult) -> Option<INT> {
    match error.unwrap_inner() {
        EvalAltResult::ErrorTerminated(token, _) => token.read_lock::<ExitRequest>().map(|r| r.0),
        _ => None,
    }
}
