//! The parent's handle on one worker process: its connection, its child process, what it is doing.

use crate::locks::lock;
use std::{
    process::{Child, ExitStatus},
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use crate::{
    board::{Board, Progress},
    wire::{Conn, ToWorker},
};

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

/// How a worker process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Death {
    /// Human-readable, e.g. `killed by signal 9 (SIGKILL)`.
    pub(crate) status: String,
    /// Python's convention: the exit code, or minus the signal number.
    pub(crate) code: i64,
}

pub(crate) struct Worker {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    pub(crate) conn: Conn,
    child: Mutex<Child>,
    task: Mutex<Task>,
    board: Option<Board>,
}

impl Worker {
    pub(crate) fn new(id: u64, conn: Conn, child: Child, board: Option<Board>) -> Worker {
        Worker {
            id,
            pid: child.id(),
            conn,
            child: Mutex::new(child),
            task: Mutex::new(Task::Idle),
            board,
        }
    }

    /// What the worker left on its board before dying (a panic's message and place).
    pub(crate) fn last_words(&self) -> Option<String> {
        self.board.as_ref()?.last_words()
    }

    /// The `pool_map` item the worker last said it started, if it has a board.
    pub(crate) fn progress(&self) -> Option<Progress> {
        self.board.as_ref()?.read()
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

    /// Asks the worker to exit; it also exits on its own when the connection closes.
    pub(crate) fn request_shutdown(&self) {
        let _ = self.conn.send(&ToWorker::Shutdown);
    }

    /// Sends SIGKILL.
    pub(crate) fn kill(&self) {
        let _ = lock(&self.child).kill();
    }

    /// Sends SIGTERM (where there are signals; elsewhere it kills), unless it has been reaped.
    pub(crate) fn terminate(&self) {
        let mut child = lock(&self.child);
        #[cfg(unix)]
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill(2) of our own child, known not to be reaped (that needs this lock), so
            // its pid cannot have been reused.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        #[cfg(not(unix))]
        let _ = child.kill();
    }

    /// Waits for the process to end, killing it after `grace`, and collects its status (no zombie).
    pub(crate) fn reap(&self, grace: Duration) -> Death {
        let mut child = lock(&self.child);
        let deadline = Instant::now() + grace;
        let mut pause = Duration::from_micros(200);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return death(status),
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    return child
                        .wait()
                        .map(death)
                        .unwrap_or_else(|e| unknown_death(&e));
                }
                Err(e) => return unknown_death(&e),
            }
        }
    }
}

fn unknown_death(e: &std::io::Error) -> Death {
    Death {
        status: format!("status unknown: {e}"),
        code: -1,
    }
}

fn death(status: ExitStatus) -> Death {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return Death {
                status: format!("killed by signal {signal} ({})", signal_name(signal)),
                code: -(signal as i64),
            };
        }
    }
    let code = status.code().unwrap_or(-1) as i64;
    Death {
        status: format!("exit code {code}"),
        code,
    }
}

#[cfg(unix)]
fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        _ => "signal",
    }
}
