//! Why a script stops early (`exit`, Ctrl-C, a call's time limit), and the handle that interrupts a run.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use rhai::{Dynamic, EvalAltResult, INT, Position};

/// Stops a running script from another thread or a signal handler: the script ends at its next
/// operation, every blocking wait (`join`, `q.get`, `pool_map`, `sleep`) returns, and busy workers
/// are killed.
///
/// ```
/// let runtime = mpscript::Runtime::builder().build();
/// let interrupt = runtime.interrupt();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_millis(100));
///     interrupt.trigger(2); // as SIGINT would
/// });
/// let err = runtime.run("forever", "loop { }", &[]).unwrap_err();
/// assert_eq!(err.exit_code(), 130);
/// ```
#[derive(Clone, Default, Debug)]
pub struct Interrupt(Arc<AtomicI32>);

impl Interrupt {
    /// Asks the run to stop, as if `signal` (e.g. 2 for SIGINT) had arrived. Safe to call from a
    /// signal handler: it is one atomic store.
    pub fn trigger(&self, signal: i32) {
        self.0.store(signal.max(1), Ordering::SeqCst);
    }

    /// The signal that interrupted the run, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s),
        }
    }

    pub(crate) fn clear(&self) {
        self.0.store(0, Ordering::SeqCst);
    }

    /// `Err(Interrupted)` once triggered.
    pub(crate) fn check(&self) -> Result<(), crate::Error> {
        match self.signal() {
            Some(signal) => Err(crate::Error::Interrupted { signal }),
            None => Ok(()),
        }
    }
}

/// Why a script stopped early; carried as the token of Rhai's termination error, which
/// `try`/`catch` cannot catch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stop {
    /// `exit(code)`
    Exit(INT),
    /// Ctrl-C or SIGTERM (the signal number).
    Interrupted(i32),
    /// A `pool_map` call ran past its time limit.
    TimedOut(Duration),
}

/// Checked by `on_progress` and by `sleep`: `Some` when the running code must stop now.
pub(crate) type StopCheck = Arc<dyn Fn() -> Option<Stop> + Send + Sync>;

/// The termination error for `stop`.
pub(crate) fn terminate(stop: Stop) -> Box<EvalAltResult> {
    EvalAltResult::ErrorTerminated(Dynamic::from(stop), Position::NONE).into()
}

/// The reason `error` stopped a script, if it is one of ours.
pub(crate) fn stop_reason(error: &EvalAltResult) -> Option<Stop> {
    match error.unwrap_inner() {
        EvalAltResult::ErrorTerminated(token, _) => token.read_lock::<Stop>().map(|s| *s),
        _ => None,
    }
}

/// Sleeps `secs`, waking early (with the reason) when `stop` says so.
pub(crate) fn sleep(secs: f64, stop: &StopCheck) -> Result<(), Box<EvalAltResult>> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if let Some(reason) = stop() {
            return Err(terminate(reason));
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}
