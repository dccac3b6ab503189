//! The hub's record of one worker: the link that reaches it, and what it is doing.

use crate::locks::lock;
use std::sync::{Mutex, MutexGuard};

use crate::{transport::WorkerLink, wire::ToWorker};

/// What a worker is busy with, so its death can be reported to whoever waits on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    /// Warm and waiting.
    Idle,
    /// Running the spawned process with this id.
    Process(u64),
    /// Running chunks of the `pool_map` job with this id.
    Pool(u64),
    /// Gone; never hand it work again.
    Dead,
}

pub(crate) struct Worker {
    /// The hub's id for it.
    pub(crate) id: u64,
    pub(crate) pid: u32,
    /// How the hub reaches it: sends, receives, ends it.
    pub(crate) link: Box<dyn WorkerLink>,
    task: Mutex<Task>,
}

impl Worker {
    pub(crate) fn new(id: u64, link: Box<dyn WorkerLink>) -> Worker {
        Worker {
            id,
            pid: link.pid(),
            link,
            task: Mutex::new(Task::Idle),
        }
    }

    pub(crate) fn task(&self) -> MutexGuard<'_, Task> {
        lock(&self.task)
    }

    /// Hands the worker `task` unless it has died; false if it is dead.
    pub(crate) fn assign(&self, task: Task) -> bool {
        let mut current = self.task();
        if *current == Task::Dead {
            return false;
        }
        *current = task;
        true
    }

    /// Marks the worker dead and returns what it was doing.
    pub(crate) fn mark_dead(&self) -> Task {
        std::mem::replace(&mut *self.task(), Task::Dead)
    }

    /// Asks the worker to exit; it also exits on its own when its link closes.
    pub(crate) fn request_shutdown(&self) {
        let _ = self.link.send(&ToWorker::Shutdown);
    }
}
