//! What shapes every engine of a run, besides the host's own functions: one serializable value,
//! written once by the runtime and carried inside the program to every worker, so that no process
//! can read a setting differently (the permission grants to come must never widen on the way).

use serde::{Deserialize, Serialize};

use crate::{logging::Level, permissions::Permissions};

/// Everything a worker needs to shape its engine exactly as the main process does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    /// Where `import` may load modules from; `None` disables file access.
    pub(crate) module_dir: Option<String>,
    /// What scripts may read, write, reach and see, in every process.
    pub(crate) permissions: Permissions,
    /// Log records below this level are dropped where they are made.
    pub(crate) log_level: Level,
    /// Every process records its calls for the profiler.
    pub(crate) profile: bool,
    /// The cluster agent whose workers run the program (`host()`); empty in the run's own
    /// processes.
    pub(crate) host: String,
}

/// Rhai limits applied identically in the parent and every worker; exceeding one is a script error
/// ("Too many operations", "Stack overflow", "Length of string too large", ...).
///
/// ```
/// let limits = mpscript::Limits { max_operations: 1_000_000, ..Default::default() };
/// let runtime = mpscript::Runtime::builder().limits(limits).build();
/// let err = runtime.run("spin", "loop { }", &[]).unwrap_err();
/// assert!(err.to_string().contains("Too many operations"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Maximum function call nesting.
    pub max_call_levels: usize,
    /// Maximum expression nesting at global level.
    pub max_expr_depth: usize,
    /// Maximum expression nesting inside functions.
    pub max_function_expr_depth: usize,
    /// Maximum operations per script run or worker call, 0 for no limit.
    pub max_operations: u64,
    /// Maximum length of a string in bytes, 0 for no limit.
    pub max_string_size: usize,
    /// Maximum number of items in an array, 0 for no limit.
    pub max_array_size: usize,
    /// Maximum number of entries in an object map, 0 for no limit.
    pub max_map_size: usize,
    /// Maximum messages waiting in a process's mailbox; a send past it is an error. 0 for no limit.
    pub max_mailbox: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_call_levels: 64,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_operations: 0,
            max_string_size: 0,
            max_array_size: 0,
            max_map_size: 0,
            max_mailbox: 100_000,
        }
    }
}
