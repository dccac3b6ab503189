//! The worker process's side of the local transport: the environment contract with the parent
//! that started it, and the step that connects it back.

use crate::locks::lock;
use std::{env, sync::Arc, sync::Mutex};

use interprocess::local_socket::{GenericNamespaced, Stream, ToNsName, prelude::*};

use super::{
    board::Board,
    stream::{Conn, SharedStream},
};
use crate::{
    Error,
    transport::ParentLink,
    wire::{FrameReader, FromWorker, ToWorker},
};

/// Environment variable naming the parent's socket; its presence makes a process a worker.
pub(crate) const SOCKET_ENV: &str = "MPSCRIPT_WORKER_SOCKET";
/// Environment variable carrying the per-run secret (never argv, which other users can read).
pub(crate) const TOKEN_ENV: &str = "MPSCRIPT_WORKER_TOKEN";
/// Environment variable carrying the id the parent gave this worker.
pub(crate) const ID_ENV: &str = "MPSCRIPT_WORKER_ID";
/// Environment variable carrying the descriptor of this worker's progress board (Linux).
pub(crate) const BOARD_ENV: &str = "MPSCRIPT_WORKER_BOARD";
/// Environment variable carrying the pid of the parent that started this worker.
pub(crate) const PARENT_ENV: &str = "MPSCRIPT_WORKER_PARENT";

/// Whether a parent started this process as one of its workers.
pub(crate) fn is_worker() -> bool {
    env::var_os(SOCKET_ENV).is_some()
}

/// Connects this worker process to the parent that started it and says hello. First it arranges
/// to die with the parent, takes its board, and clears the environment contract, so nothing this
/// process starts inherits it.
pub(crate) fn connect() -> Result<LocalParent, Error> {
    die_with_parent();
    let socket = env::var_os(SOCKET_ENV).unwrap_or_default();
    let token = env::var(TOKEN_ENV).unwrap_or_default();
    let worker = env::var(ID_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let board = env::var(BOARD_ENV)
        .ok()
        .and_then(|fd| fd.parse().ok())
        .and_then(|fd| Board::open(fd).ok())
        .map(Arc::new);
    null_stdin();
    if let Some(board) = &board {
        leave_panics_on(board.clone());
    }
    // SAFETY: called before any other thread of this process exists.
    unsafe {
        for var in [SOCKET_ENV, TOKEN_ENV, ID_ENV, BOARD_ENV, PARENT_ENV] {
            env::remove_var(var);
        }
    }
    let name = socket
        .to_string_lossy()
        .to_ns_name::<GenericNamespaced>()
        .map_err(|e| Error::io("naming the parent socket", e))?
        .into_owned();
    let stream = Stream::connect(name).map_err(|e| Error::io("connecting to the parent", e))?;
    let conn = Arc::new(Conn::new(stream, "parent"));
    conn.send(&FromWorker::Hello {
        token,
        worker,
        pid: std::process::id(),
    })?;
    conn.start_flusher();
    Ok(LocalParent {
        reader: Mutex::new(conn.reader()),
        conn,
        board,
    })
}

/// A local worker's end of its link to the parent.
pub(crate) struct LocalParent {
    conn: Arc<Conn>,
    reader: Mutex<FrameReader<SharedStream>>,
    board: Option<Arc<Board>>,
}

impl ParentLink for LocalParent {
    fn send(&self, message: &FromWorker) -> Result<(), Error> {
        self.conn.send(message)
    }

    fn post(&self, message: &FromWorker) -> Result<(), Error> {
        self.conn.post(message)
    }

    fn flush(&self) -> Result<(), Error> {
        self.conn.flush()
    }

    fn recv(&self) -> Result<ToWorker, Error> {
        lock(&self.reader).read()
    }

    fn starting(&self, job: u64, chunk: u32, offset: u32, timed: bool) {
        if let Some(board) = &self.board {
            board.publish(job, chunk, offset, timed);
        }
    }
}

/// Dies with the parent (Linux's parent-death signal; elsewhere the socket's end of file does
/// it). Set here rather than between fork and exec, so the parent can spawn with `posix_spawn`;
/// a parent that died before this line is noticed by its pid having changed.
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    {
        let parent: Option<libc::pid_t> = env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok());
        // SAFETY: plain syscalls on this process.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if parent.is_some_and(|p| libc::getppid() != p) {
                libc::_exit(1);
            }
        }
    }
}

/// Standard input carried the board (now mapped, its descriptor closed); a worker reads
/// nothing from it, so it becomes `/dev/null` again.
fn null_stdin() {
    #[cfg(unix)]
    if let Ok(null) = std::fs::File::open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto descriptor 0 of this process; `null` is closed after.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
}

/// A panic (in a host function, say) kills the worker; its message and place are left on the
/// board first, so the parent reports them with the death instead of a bare exit code.
fn leave_panics_on(board: Arc<Board>) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().map_or_else(String::new, |l| {
            format!(" at {}:{}:{}", l.file(), l.line(), l.column())
        });
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message");
        board.say_last_words(&format!("panicked{location}: {message}"));
        default(info);
    }));
}
