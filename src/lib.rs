//! mpscript: an embeddable Rhai scripting runtime with process actors.
//!
//! Scripts call `spawn`, `pool_map` and `queue` to run functions in isolated worker processes,
//! which exchange postcard messages with the main process over local sockets. Workers are this same
//! executable re-executed; they compile the script once and call its functions by name, never
//! running its top level, so no `__main__` guard is ever needed.
//!
//! ```
//! let runtime = mpscript::Runtime::builder().build();
//! let doubled = runtime.run("doc", "[1, 2, 3].map(|x| x * 2)", &[]).unwrap();
//! assert_eq!(doubled.into_array().unwrap().len(), 3);
//! ```
//!
//! A host program that embeds mpscript must call [`run_worker_if_requested`] first thing in `main`.

mod board;
mod builtins;
mod diagnostics;
mod engine;
mod error;
mod hub;
mod runtime;
mod stop;
pub mod value;
pub mod wire;
mod worker;

pub use diagnostics::report;
pub use error::{Error, RemoteError};
pub use runtime::{OutputSink, Runtime, RuntimeBuilder};
pub use stop::Interrupt;
pub use value::Value;
pub use wire::{Limits, OutStream};
pub use worker::run_worker_if_requested;

/// The number of CPUs this process may use (the default worker count).
///
/// ```
/// assert!(mpscript::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
