//! How a worker exists and is reached, apart from what it does: a transport starts workers and
//! hands the hub one link per worker, and the child loop one link to its parent; over both only
//! typed messages pass. Today's transport is local processes over local sockets
//! ([`local`]); a remote one (agents on other machines) fits behind the same traits.

#[cfg(test)]
pub(crate) mod inprocess;
pub(crate) mod local;

use std::time::Duration;

use crate::{
    Error,
    wire::{FromWorker, Program, ToWorker},
};

/// Starts workers.
pub(crate) trait Transport: Send + Sync {
    /// Starts `count` workers, each connected, admitted and with `program` compiled.
    fn start(&self, count: usize, program: &Program) -> Result<Vec<Box<dyn WorkerLink>>, Error>;
}

/// The parent's end of one worker.
pub(crate) trait WorkerLink: Send + Sync {
    /// Who is at the other end, for messages: `worker 4242` (a remote transport may say
    /// `host-b/4242`).
    fn label(&self) -> &str;
    /// The worker's process id, named in user-facing errors.
    fn pid(&self) -> u32;
    /// Sends `message` now, after anything sent before it.
    fn send(&self, message: &ToWorker) -> Result<(), Error>;
    /// The worker's next message, waiting for it; [`Error::Disconnected`] once it hung up. One
    /// thread reads.
    fn recv(&self) -> Result<FromWorker, Error>;
    /// Ends the worker now (SIGKILL for a local process).
    fn kill(&self);
    /// Asks the worker to end (SIGTERM for a local process; where there is no such request, kills).
    fn terminate(&self);
    /// Waits for the worker to end, ending it after `grace`, and says how it ended.
    fn reap(&self, grace: Duration) -> Death;
    /// The `pool_map` item it last said it started, where the transport can see that even after a
    /// sudden death (a shared page); `None` elsewhere.
    fn progress(&self) -> Option<Progress> {
        None
    }
    /// What it left to say before it died (a panic's message and place), where it could.
    fn last_words(&self) -> Option<String> {
        None
    }
    /// Whether it runs on another machine (a cluster slot).
    fn is_remote(&self) -> bool {
        false
    }
}

/// A worker's end of the link to its parent.
pub(crate) trait ParentLink: Send + Sync {
    /// Sends `message` now, after anything posted before it.
    fn send(&self, message: &FromWorker) -> Result<(), Error>;
    /// Queues `message` to be sent soon, with others (output, puts on unbounded queues).
    fn post(&self, message: &FromWorker) -> Result<(), Error>;
    /// Sends whatever was posted.
    fn flush(&self) -> Result<(), Error>;
    /// The parent's next message, waiting for it. One thread reads.
    fn recv(&self) -> Result<ToWorker, Error>;
    /// Says which `pool_map` item starts now, where a parent can see it after a sudden death.
    fn starting(&self, _job: u64, _chunk: u32, _offset: u32, _timed: bool) {}
}

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Death {
    /// Human-readable, e.g. `killed by signal 9 (SIGKILL)`.
    pub(crate) status: String,
    /// Python's convention: the exit code, or minus the signal number.
    pub(crate) code: i64,
}

/// What a worker is running, as it last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) job: u64,
    pub(crate) chunk: u64,
    pub(crate) offset: u64,
    /// When the item started, in [`now_ns`](crate::clock::now_ns) time.
    pub(crate) started_ns: u64,
}
