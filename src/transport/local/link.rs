//! The parent's end of one local worker: its socket, its child process, and its progress board.

use crate::locks::lock;
use std::{
    process::{Child, ExitStatus},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use super::{
    board::Board,
    stream::{Conn, SharedStream},
};
use crate::{
    Error,
    transport::{Death, Progress, WorkerLink},
    wire::{FrameReader, FromWorker, ToWorker},
};

pub(crate) struct LocalLink {
    pid: u32,
    conn: Conn,
    reader: Mutex<FrameReader<SharedStream>>,
    child: Mutex<Child>,
    board: Option<Board>,
}

impl LocalLink {
    pub(super) fn new(conn: Conn, child: Child, board: Option<Board>) -> LocalLink {
        LocalLink {
            pid: child.id(),
            reader: Mutex::new(conn.reader()),
            conn,
            child: Mutex::new(child),
            board,
        }
    }
}

impl WorkerLink for LocalLink {
    fn label(&self) -> &str {
        self.conn.peer()
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn send(&self, message: &ToWorker) -> Result<(), Error> {
        self.conn.send(message)
    }

    fn recv(&self) -> Result<FromWorker, Error> {
        lock(&self.reader).read()
    }

    fn kill(&self) {
        let _ = lock(&self.child).kill();
    }

    fn terminate(&self) {
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

    fn reap(&self, grace: Duration) -> Death {
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

    fn progress(&self) -> Option<Progress> {
        self.board.as_ref()?.read()
    }

    fn last_words(&self) -> Option<String> {
        self.board.as_ref()?.last_words()
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
