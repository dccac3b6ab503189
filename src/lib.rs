//! mpscript: an embeddable Rhai scripting runtime with process actors.
//!
//! Scripts call `spawn`, `pool_map` and `queue` to run functions in isolated worker processes,
//! which exchange postcard messages with the main process over local sockets. Workers are this same
//! executable re-executed; they compile the script once and call its functions by name, never
//! running its top level, so no `__main__` guard is ever needed. The script API, what can be sent
//! between processes and the failure guarantees are in the README.
//!
//! # Quick start
//!
//! ```
//! let runtime = mpscript::Runtime::builder().build();
//! let doubled: mpscript::rhai::Array = runtime.eval("[1, 2, 3].map(|x| x * 2)").unwrap();
//! assert_eq!(doubled.len(), 3);
//! ```
//!
//! The [`rhai`] crate is re-exported, so a host needs no separately version-matched dependency on
//! it. Its debug builds want `[profile.dev.package.rhai] opt-level = 3` in the host's
//! `Cargo.toml`: unoptimised Rhai runs scripts about six times slower. Rhai features that change
//! its value types (`only_i32`, `f32_float`, `no_float`, `no_index`, `no_object`, `no_closure`) or
//! remove its limits (`unchecked`) do not work with mpscript; the build fails for the first two.
//!
//! # Embedding, and the one rule
//!
//! Workers of an embedding app are the app's own executable, started again with an environment
//! variable set. So `main` first builds its [`RuntimeBuilder`] (which has no side effects) and calls
//! [`RuntimeBuilder::run_worker_if_requested`]: in a worker that call never returns, and the worker
//! has the host's functions because it made the same builder. A host without functions of its own
//! can call [`run_worker_if_requested`] instead. Nothing with side effects may run before it.
//!
//! ```no_run
//! fn host_functions(engine: &mut mpscript::rhai::Engine) {
//!     engine.register_fn("weight", |x: i64| x % 7);
//! }
//!
//! let builder = mpscript::Runtime::builder().register(host_functions).workers(4);
//! builder.run_worker_if_requested();
//! let runtime = builder.build();
//! let weights: mpscript::rhai::Array = runtime.eval("pool_map(|x| weight(x), 1..=100)").unwrap();
//! ```
//!
//! A process started as a worker that skips this call tells the parent so when it builds a
//! runtime, and exits: a forgotten entry point is one clear error from the call that needed
//! workers, rather than processes starting processes. Likewise a host that registered functions
//! but calls the free [`run_worker_if_requested`] gets an error naming the builder's method, not
//! `Function not found` from every worker.
//!
//! # Errors
//!
//! Everything fails with one type, [`Error`], whose variants say when they happen and whose
//! predicates ([`Error::is_timeout`], [`Error::is_worker_died`], [`Error::is_interrupted`], ...) make
//! the common checks short. [`report`] turns an error into a miette report with the script's
//! source lines; [`Error::exit_code`] gives the exit status a command-line tool should use.
//!
//! ```
//! let runtime = mpscript::Runtime::builder().build();
//! let err = runtime.run("demo.rhai", "let x = 1;\nx / 0", &[]).unwrap_err();
//! assert!(err.is_script());
//! assert!(format!("{:?}", mpscript::report(&err)).contains("demo.rhai:2:3"));
//! ```

mod builtins;
mod child;
mod clock;
mod cluster;
mod data;
mod diagnostics;
mod engine;
mod error;
mod fast;
mod hub;
mod locks;
mod logging;
mod memory;
mod output;
mod permissions;
mod profile;
mod runtime;
mod settings;
mod shared;
mod stdlib;
mod stop;
mod transport;
mod value;
mod wire;

/// Script-visible handles to objects that live in the main process (locks, futures, queues,
/// processes, supervisors), as a host gets them back from [`Runtime::eval`].
pub mod handles {
    pub use crate::value::{
        Handle, HandleKind, Kind, ProcessHandle, QueueHandle, SupervisorHandle, kinds,
    };
}

pub use rhai;

// mpscript's values and wire format assume Rhai's default 64-bit numbers.
const _: () = assert!(
    std::mem::size_of::<rhai::INT>() == 8,
    "mpscript needs Rhai's 64-bit integers: remove rhai's `only_i32` feature"
);
const _: () = assert!(
    std::mem::size_of::<rhai::FLOAT>() == 8,
    "mpscript needs Rhai's 64-bit floats: remove rhai's `f32_float` feature"
);

pub use child::run_worker_if_requested;
pub use cluster::{Cluster, TOKEN_ENV as CLUSTER_TOKEN_ENV};
pub use diagnostics::report;
pub use error::{Cause, Error, RemoteError};
pub use logging::{Level, LogFormat, LogRecord, LogSink};
pub use memory::reuse_freed_buffers;
pub use output::{OutStream, OutputSink};
pub use permissions::{Access, Permissions};
pub use profile::{FunctionStats, MapStats, Profile, ProfileSort};
pub use runtime::{Interactive, ProfileSink, Runtime, RuntimeBuilder};
pub use settings::Limits;
pub use stop::Interrupt;
pub(crate) use value::Value;

/// The environment variable that sets the fast tier's mode, in a process and in the workers it
/// starts: unset or `on`; `off` (everything runs in Rhai's interpreter); `verify` (every compiled
/// call is run in Rhai as well, and a difference is an error); `explain` (what is compiled, and why
/// other functions are not, is printed on stderr). Words combine with commas.
///
/// ```
/// let runtime = mpscript::Runtime::builder().build();
/// // A numeric function: compiled on its first call, with Rhai's results and errors.
/// let n: i64 = runtime.eval("fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } } fib(20)").unwrap();
/// assert_eq!(n, 6765);
/// assert_eq!(mpscript::FAST_TIER_ENV, "MPSCRIPT_FAST");
/// ```
pub const FAST_TIER_ENV: &str = fast::MODE_ENV;

/// The number of CPUs this process may use (the default worker count), as it was when first
/// asked.
///
/// ```
/// assert!(mpscript::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    // Read once: the standard library reads the cgroup's quota files on every call, a dozen
    // system calls, and every queue `get` that finds its queue empty asks.
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
