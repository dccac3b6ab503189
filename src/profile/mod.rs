//! The profiler (`mpscript run --profile`): every process of a profiled run times its script
//! functions on the thread that runs them, workers send their records at their end, and the main
//! process merges them into one [`Profile`], as `pstats.add` merges cProfile's.
//!
//! Nothing here runs unless the run is profiled: only then are script functions routed through
//! stand-ins that call [`enter`] and [`exit`] (see `fast/dispatch.rs`).

mod flame;
mod record;
mod report;

use std::cell::RefCell;

pub(crate) use record::{Frame, Recorded, Recorder, Work, intern};
pub use report::{FunctionStats, MapStats, Profile, ProfileSort};
pub(crate) use report::{Labels, MapCall, Sources};

thread_local! {
    /// This thread's record, while a profiled run uses the thread.
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

fn with<T>(f: impl FnOnce(&mut Recorder) -> T) -> Option<T> {
    RECORDER.with_borrow_mut(|r| r.as_mut().map(f))
}

/// Starts recording on this thread; calls made with an empty stack hang under `base`.
pub(crate) fn start(base: &[Frame]) {
    let mut recorder = Recorder::default();
    recorder.set_base(base);
    RECORDER.set(Some(recorder));
}

/// Ends recording on this thread and gives what was recorded.
pub(crate) fn take() -> Option<Recorder> {
    RECORDER.take()
}

/// Whether this thread records.
pub(crate) fn is_on() -> bool {
    RECORDER.with_borrow(Option::is_some)
}

/// Runs `f` unrecorded: the fast tier's verify mode runs each compiled call again in Rhai, and
/// those second runs are not the script's calls.
pub(crate) fn paused<T>(f: impl FnOnce() -> T) -> T {
    let recorder = RECORDER.take();
    let value = f();
    RECORDER.set(recorder);
    value
}

/// A call of frame `id` begins.
pub(crate) fn enter(id: u32) {
    with(|r| r.enter(id));
}

/// The innermost call ends; `compiled` says it ran in the fast tier.
pub(crate) fn exit(compiled: bool) {
    with(|r| r.exit(compiled));
}

/// Calls made with an empty stack hang under `path` from now on (a worker's next job or call).
pub(crate) fn set_base(path: &[Frame]) {
    with(|r| r.set_base(path));
}

/// Where this thread is, with `builtin` (`pool_map`, `spawn`, ...) as the innermost frame: what
/// a builtin sends along with work, so the worker's frames hang under the caller's. `None` when
/// not profiling.
pub(crate) fn here(builtin: &str) -> Option<Vec<Frame>> {
    with(|r| {
        let mut path = r.path();
        path.push(Frame::Builtin(builtin.into()));
        path
    })
}

/// A record for compiled code about to run inside the innermost call (see [`Recorder::nested`]).
pub(crate) fn nested() -> Option<Recorder> {
    with(|r| Recorder::nested(r))
}

/// Adds the record of compiled code that finished.
pub(crate) fn absorb(inner: Recorder) {
    with(|r| r.absorb(inner));
}

/// Adds a worker's times for one item of `work`.
pub(crate) fn item(work: Work, ns: u64) {
    with(|r| r.work(work).item(ns));
}

/// Adds a worker's time spent moving data for `work`.
pub(crate) fn moving(work: Work, ns: u64) {
    with(|r| r.work(work).moving_ns += ns);
}

/// A builtin's frame (`pool_map`), open until dropped.
pub(crate) struct BuiltinCall(bool);

impl BuiltinCall {
    pub(crate) fn enter(name: &str) -> BuiltinCall {
        let on = is_on();
        if on {
            let id = intern(Frame::Builtin(name.into()));
            with(|r| r.enter_builtin(id));
        }
        BuiltinCall(on)
    }
}

impl Drop for BuiltinCall {
    fn drop(&mut self) {
        if self.0 {
            exit(false);
        }
    }
}
