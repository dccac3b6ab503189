//! Why a script stops early (`exit`, Ctrl-C, a call's time limit), and the handle that interrupts a run.

use crate::locks::lock;
use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use rhai::{Dynamic, EvalAltResult, INT, Position};

/// Stops a running script from another thread: the script ends at its next operation, every
/// blocking wait (`join`, `q.get`, `pool_map`, `sleep`) returns at once, and busy workers are
/// killed. Blocked waits are woken, not polled, so triggering takes locks: call it from an
/// ordinary thread (the CLI's signal thread does), not from inside a raw signal handler.
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
pub struct Interrupt(Arc<Flags>);

#[derive(Default)]
struct Flags {
    signal: AtomicI32,
    /// Set with `linked` when a process linked to the main script ended abnormally.
    has_linked: AtomicBool,
    linked: Mutex<Option<String>>,
    /// What blocked waits wait on, to wake them when the run is interrupted.
    wakers: Mutex<Vec<Weak<dyn Wake>>>,
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupt")
            .field("signal", &self.signal)
            .field("has_linked", &self.has_linked)
            .finish_non_exhaustive()
    }
}

/// Something that blocked waits wait on (a queue, a lock, a process's end): woken when the run
/// is interrupted, so waits need no polling to notice.
pub(crate) trait Wake: Send + Sync {
    /// Wakes every wait on it (under its own lock, so none misses the interrupt).
    fn wake(&self);
}

impl Interrupt {
    /// Asks the run to stop, as if `signal` (e.g. 2 for SIGINT) had arrived. Safe to call from a
    /// signal handler: it is one atomic store.
    pub fn trigger(&self, signal: i32) {
        self.0.signal.store(signal.max(1), Ordering::SeqCst);
        self.wake_all();
    }

    /// `object`, whose waits are woken when the run is interrupted, for as long as it lives.
    pub(crate) fn wakes<T: Wake + 'static>(&self, object: Arc<T>) -> Arc<T> {
        let weak: Weak<T> = Arc::downgrade(&object);
        let mut wakers = lock(&self.0.wakers);
        // Forget the dead now and then, so the list stays as long as what lives.
        if wakers.len() >= 64 && wakers.len().is_power_of_two() {
            wakers.retain(|w| w.strong_count() > 0);
        }
        wakers.push(weak);
        drop(wakers);
        object
    }

    fn wake_all(&self) {
        let live: Vec<_> = lock(&self.0.wakers)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for object in live {
            object.wake();
        }
    }

    /// The signal that interrupted the run, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.0.signal.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s),
        }
    }

    /// Ends the main script because a process linked to it ended (`why` says which, and how).
    pub(crate) fn end_by_link(&self, why: String) {
        lock(&self.0.linked).get_or_insert(why);
        self.0.has_linked.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    /// Why a linked process ended the main script, if one did.
    pub(crate) fn linked(&self) -> Option<String> {
        if !self.0.has_linked.load(Ordering::Relaxed) {
            return None;
        }
        lock(&self.0.linked).clone()
    }

    pub(crate) fn clear(&self) {
        self.0.signal.store(0, Ordering::SeqCst);
        self.0.has_linked.store(false, Ordering::SeqCst);
        *lock(&self.0.linked) = None;
    }

    /// Why the main script must stop now, if it must.
    pub(crate) fn stop(&self) -> Option<Stop> {
        match self.signal() {
            Some(signal) => Some(Stop::Interrupted(signal)),
            None if self.0.has_linked.load(Ordering::Relaxed) => Some(Stop::Linked),
            None => None,
        }
    }

    /// `Err(Interrupted)` once triggered; `Err(Linked)` once a linked process ended the script.
    pub(crate) fn check(&self) -> Result<(), crate::Error> {
        match self.signal() {
            Some(signal) => Err(crate::Error::Interrupted { signal }),
            None => self
                .linked()
                .map_or(Ok(()), |why| Err(crate::Error::Linked(why))),
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
    /// A process linked to the main script ended abnormally (the reason is in the [`Interrupt`]).
    Linked,
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
