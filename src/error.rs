//! The one public error type: every failure a host or a script can see, each variant saying when it happens.

use std::{fmt, io, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

/// Everything that can go wrong while running a script or talking to a worker process.
///
/// ```
/// use mpscript::Error;
/// let err = Error::Timeout { what: "join".into(), after: std::time::Duration::from_secs(1) };
/// assert!(err.is_timeout());
/// assert_eq!(err.to_string(), "join timed out after 1s");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The script failed in this process: a syntax error, or a runtime error that no `try`/`catch` handled.
    /// `remote` is set when that runtime error came from a worker, so reports can point at both places.
    #[error("{}", script_message(.error))]
    Script {
        /// The script's file name (or a label such as `<repl>`).
        name: String,
        /// The script text the positions refer to.
        text: Arc<str>,
        /// Rhai's error, with its position.
        error: Box<rhai::EvalAltResult>,
        /// The worker-side error behind it, if any.
        remote: Option<Box<RemoteError>>,
    },
    /// A function called in a worker (by `spawn`, `pool_map`, ...) threw an error.
    #[error("{0}")]
    Remote(Box<RemoteError>),
    /// One item of a `pool_map` (or `pool_map_unordered`) failed (its function threw, or its
    /// worker died); `index` is the item's position in the input, named both ways:
    /// `pool_map items[2] (3rd of 3) failed`.
    #[error("{builtin} items[{index}] ({} of {total}) failed: {source}", ordinal(*index + 1))]
    MapItem {
        /// `pool_map` or `pool_map_unordered`.
        builtin: &'static str,
        /// Position of the failing item in the input (0-based, as array indices are).
        index: usize,
        /// How many items the call had.
        total: usize,
        /// Why it failed.
        source: Box<Error>,
    },
    /// A worker process died (killed by a signal, aborted, exited) while it was running a call.
    #[error("{} died: {status}, while running {during}", worker_name(*pid))]
    WorkerDied {
        /// The worker's OS process id; 0 for a worker on the cluster (its agent is named in
        /// `status`).
        pid: u32,
        /// How it ended, e.g. `killed by signal 9 (SIGKILL)` or `exit code 3`.
        status: String,
        /// What it was running, e.g. `items[17] of pool_map`.
        during: String,
    },
    /// A wait with a time limit (`join(secs)`, `get(secs)`, a worker start) ran out of time.
    #[error("{what} timed out after {}", fmt_secs(*.after))]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The limit that passed.
        after: Duration,
    },
    /// The peer at the other end of a connection hung up (end of stream between frames).
    #[error("{peer} hung up")]
    Disconnected {
        /// Who hung up, e.g. `worker 1234` or `parent`.
        peer: String,
    },
    /// A peer sent bytes that are not a valid message: a truncated or oversized frame, an unknown
    /// message kind, a value nested too deep. The connection is closed.
    #[error("malformed message from {peer}: {detail}")]
    Protocol {
        /// Who sent it.
        peer: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A value cannot be sent to another process (a timestamp, a host type, a native function).
    #[error("a value of type `{type_name}` cannot be sent to another process")]
    NotSendable {
        /// The script-visible type name.
        type_name: String,
    },
    /// A value to be sent is nested deeper than `limit` (128) levels.
    #[error("value nested deeper than {limit} levels cannot be sent")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
    /// A worker process could not be started or failed its handshake or compile step.
    #[error("could not start a worker: {0}")]
    WorkerStart(String),
    /// A builtin was called with arguments it cannot use (an unknown option, a negative size, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The runtime cannot be set up as configured (a cluster server off this machine without TLS
    /// or credentials, a URL carrying a password, a cluster server that cannot be reached or
    /// refuses the credentials or is not trusted): nothing was started. Exit status 2, as for
    /// command-line misuse.
    #[error("{0}")]
    Config(String),
    /// An operation the main process ran on behalf of this worker (a queue wait, a join, a nested
    /// `pool_map`) failed there; `cause` keeps the predicates working on this side.
    #[error("{message}")]
    Relayed {
        /// The error's message, as the main process gave it.
        message: String,
        /// What kind of failure it was there.
        cause: Cause,
    },
    /// The run was interrupted (Ctrl-C, SIGTERM, or [`Interrupt::trigger`](crate::Interrupt::trigger)).
    #[error("interrupted by signal {signal}")]
    Interrupted {
        /// The signal number (2 for SIGINT, 15 for SIGTERM).
        signal: i32,
    },
    /// A process linked to the main script (by `link`) ended abnormally, which ends the script
    /// too, unless the script traps exits (`trap_exits(true)`).
    #[error("{0}")]
    Linked(String),
    /// A message was sent to a process whose mailbox holds as many messages as
    /// [`Limits::max_mailbox`](crate::Limits::max_mailbox) allows: the receiver is not keeping up.
    #[error(
        "the mailbox of process {pid} is full ({limit} messages waiting): the receiver is not \
         keeping up"
    )]
    MailboxFull {
        /// The receiver's OS process id.
        pid: u32,
        /// The limit.
        limit: usize,
    },
    /// A script asked for a file, a host or an environment variable it was not granted (or was
    /// denied); the message names the flag that grants it.
    #[error("{message}")]
    Denied {
        /// `read`, `write`, `net` or `env`.
        access: &'static str,
        /// The path, `host:port` or variable name asked for.
        target: String,
        /// The whole message, e.g. `read access to "/data/x.csv" denied: run again with
        /// --allow-read=/data/x.csv`.
        message: String,
    },
    /// The script called `exit(code)` with a non-zero code.
    #[error("script exited with code {0}")]
    Exit(i32),
    /// An operating-system I/O error outside the cases above (reading the script file, a socket setup).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// An error as data: how the main process tells a worker that what it asked for failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Failure {
    /// What kind of failure, so the receiving side can rebuild the right error.
    pub(crate) cause: Cause,
    /// The full message.
    pub(crate) message: String,
}

/// What kind of failure an error relayed from the main process was there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Cause {
    /// A wait ran out of time.
    Timeout,
    /// A worker died.
    WorkerDied,
    /// Anything else.
    Other,
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        Error::Relayed {
            message: failure.message,
            cause: failure.cause,
        }
    }
}

impl Error {
    /// True when a time limit ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. }) || self.relayed_cause() == Some(Cause::Timeout)
    }
    /// True when a worker process died while running a call.
    pub fn is_worker_died(&self) -> bool {
        matches!(self, Error::WorkerDied { .. }) || self.relayed_cause() == Some(Cause::WorkerDied)
    }
    /// True when the other end of a connection hung up.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected { .. })
    }
    /// True when the error was thrown by script code in a worker (or by the script itself).
    pub fn is_script(&self) -> bool {
        matches!(self, Error::Script { .. } | Error::Remote(_))
    }
    /// True when an access was not granted or was denied.
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::Denied { .. })
    }
    /// True when the run was interrupted.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Error::Interrupted { .. })
    }
    /// The exit status a command-line runner should use for this error: the script's own code
    /// after `exit(code)`, 128 + the signal after an interrupt (130 for Ctrl-C), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exit(code) => *code,
            Error::Interrupted { signal } => 128 + signal,
            Error::Config(_) => 2,
            _ => 1,
        }
    }

    fn relayed_cause(&self) -> Option<Cause> {
        match self {
            Error::Relayed { cause, .. } => Some(*cause),
            _ => None,
        }
    }

    /// This error as data, to relay to a worker.
    pub(crate) fn to_failure(&self) -> Failure {
        let cause = if self.is_timeout() {
            Cause::Timeout
        } else if self.is_worker_died() {
            Cause::WorkerDied
        } else {
            Cause::Other
        };
        Failure {
            cause,
            message: self.to_string(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

fn script_message(error: &rhai::EvalAltResult) -> String {
    error.to_string().replace('\n', " ")
}

/// Rhai's message for `error` without the trailing ` (line L, position C)`, which reports show
/// as a source snippet instead.
pub(crate) fn rhai_message(error: &rhai::EvalAltResult) -> String {
    let text = error.to_string();
    let suffix = format!(" ({})", error.position());
    match text.strip_suffix(&suffix) {
        Some(bare) if !error.position().is_none() => bare.to_string(),
        _ => text,
    }
}

/// `1st`, `2nd`, `3rd`, `4th`, ..., `11th`, `12th`, `13th`, `21st`, ...
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn worker_name(pid: u32) -> String {
    match pid {
        0 => "a worker on the cluster".into(),
        pid => format!("worker {pid}"),
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// An error thrown by a function running in a worker process, carried back as plain data.
///
/// ```
/// use mpscript::RemoteError;
/// let mut e = RemoteError {
///     message: "boom".into(),
///     pid: 42,
///     host: String::new(),
///     line: 3,
///     column: 9,
///     function: "f".into(),
/// };
/// assert_eq!(e.to_string(), "boom (worker 42, line 3, column 9, in 'f')");
/// e.host = "host-a".into();
/// assert_eq!(e.worker(), "worker 42 on host-a");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The error message (a thrown string is the string itself).
    pub message: String,
    /// The worker's OS process id (on its host).
    pub pid: u32,
    /// The cluster agent it ran on; empty for this machine.
    pub host: String,
    /// 1-based line in the script where it was raised, 0 when unknown.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
    /// The script function it was raised in, empty when unknown.
    pub function: String,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.location())
    }
}

impl RemoteError {
    /// An error of process `pid` that no script line raised (a worker's own, an agent's).
    pub(crate) fn unplaced(message: impl Into<String>, pid: u32) -> RemoteError {
        RemoteError {
            message: message.into(),
            pid,
            host: String::new(),
            line: 0,
            column: 0,
            function: String::new(),
        }
    }

    /// Which worker raised it: `worker 42`, `worker 42 on host-a`, or `cluster agent host-a`
    /// for an agent's own error.
    pub fn worker(&self) -> String {
        match (self.pid, self.host.as_str()) {
            (pid, "") => format!("worker {pid}"),
            (0, host) => format!("cluster agent {host}"),
            (pid, host) => format!("worker {pid} on {host}"),
        }
    }

    /// Where it was raised, e.g. `worker 42, line 3, column 9, in 'f'`.
    pub fn location(&self) -> String {
        let mut at = self.worker();
        if self.line > 0 {
            at += &format!(", line {}, column {}", self.line, self.column);
        }
        if !self.function.is_empty() {
            at += &format!(", in '{}'", self.function);
        }
        at
    }

    /// Builds the data form of a Rhai error raised in this (worker) process.
    pub(crate) fn from_rhai(err: &rhai::EvalAltResult) -> Self {
        let mut function = String::new();
        let mut inner = err;
        while let rhai::EvalAltResult::ErrorInFunctionCall(name, _, next, _) = inner {
            function = if name.starts_with("anon$") {
                "closure".into()
            } else {
                name.clone()
            };
            inner = next;
        }
        let position = inner.position();
        let message = match inner {
            rhai::EvalAltResult::ErrorRuntime(value, _) if !value.is_unit() => value.to_string(),
            other => rhai_message(other),
        };
        RemoteError {
            message,
            pid: std::process::id(),
            host: String::new(),
            line: position.line().unwrap_or(0) as u32,
            column: position.position().unwrap_or(0) as u32,
            function,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ordinal;

    #[test]
    fn ordinals_read_as_english() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112]
            .into_iter()
            .map(ordinal)
            .collect();
        let want = [
            "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st",
            "111th", "112th",
        ];
        assert_eq!(got, want);
    }
}
