//! Starting worker processes: a spawner thread that outlives them (pdeathsig is per thread), a local
//! socket listener, and a handshake that admits only the processes this runtime started.

use crate::locks::lock;
use std::{
    collections::HashMap,
    io,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use interprocess::local_socket::{
    GenericNamespaced, ListenerOptions, Name, Stream, ToNsName, prelude::*,
};

use super::worker::Worker;
use crate::{
    Error,
    board::Board,
    wire::{Conn, FrameReader, FromWorker, Program, ToWorker},
    worker::{BOARD_ENV, ID_ENV, SOCKET_ENV, TOKEN_ENV},
};

/// How long a new worker may take to connect and compile.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest hello accepted from a peer not yet known.
const HELLO_LIMIT: usize = 4096;
/// How long a connecting peer may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

type Arrivals = Arc<Mutex<HashMap<u64, Sender<Stream>>>>;

struct SpawnRequest {
    worker: u64,
    board_fd: Option<i32>,
    reply: Sender<io::Result<Child>>,
}

/// A worker process started but not yet connected.
struct Pending {
    id: u64,
    child: Child,
    arrival: Receiver<Stream>,
    board: Option<Board>,
}

pub(crate) struct Launcher {
    socket: String,
    arrivals: Arrivals,
    spawner: Option<Sender<SpawnRequest>>,
    next_worker: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl Launcher {
    pub(crate) fn new(exe: PathBuf) -> Result<Launcher, Error> {
        let token = random_hex()?;
        // Its own randomness: socket names are visible to every user in /proc/net/unix.
        let socket = format!("mpscript-{}-{}", std::process::id(), random_hex()?);
        let listener = ListenerOptions::new()
            .name(ns_name(&socket)?)
            .create_sync()
            .map_err(|e| Error::io("creating the worker socket", e))?;
        let arrivals = Arrivals::default();
        let closed = Arc::new(AtomicBool::new(false));
        {
            let (arrivals, closed, token) = (arrivals.clone(), closed.clone(), token.clone());
            thread::Builder::new()
                .name("mpscript-accept".into())
                .spawn(move || accept_loop(listener, &token, &arrivals, &closed))
                .map_err(|e| Error::io("starting the accept thread", e))?;
        }
        let (spawner, requests) = unbounded();
        {
            let (socket, token) = (socket.clone(), token.clone());
            thread::Builder::new()
                .name("mpscript-spawner".into())
                .spawn(move || spawn_loop(&requests, &exe, &socket, &token))
                .map_err(|e| Error::io("starting the spawner thread", e))?;
        }
        Ok(Launcher {
            socket,
            arrivals,
            spawner: Some(spawner),
            next_worker: AtomicU64::new(1),
            closed,
        })
    }

    /// Starts `count` workers in parallel and returns them connected, handshaken and compiled.
    pub(crate) fn start(&self, count: usize, program: &Program) -> Result<Vec<Worker>, Error> {
        let pending = (0..count)
            .map(|_| self.spawn_one())
            .collect::<Result<Vec<_>, _>>()?;
        let mut started = Vec::with_capacity(count);
        let mut first_error = None;
        for p in pending {
            match self.finish_start(p, program) {
                Ok(worker) => started.push(worker),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(started),
            Some(e) => {
                for w in &started {
                    w.kill();
                    w.reap(Duration::ZERO);
                }
                Err(e)
            }
        }
    }

    fn spawn_one(&self) -> Result<Pending, Error> {
        let id = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let (tx, arrival) = bounded(1);
        self.arrivals_lock().insert(id, tx);
        // Without a board (not Linux, or no memfd) deaths are reported per chunk instead of per item.
        let mut board = Board::create().ok();
        let (reply, child) = bounded(1);
        let spawner = self.spawner.as_ref().expect("spawner lives until drop");
        let _ = spawner.send(SpawnRequest {
            worker: id,
            board_fd: board.as_ref().and_then(Board::fd),
            reply,
        });
        let child = child
            .recv()
            .map_err(|_| Error::WorkerStart("the spawner thread is gone".into()))
            .and_then(|r| {
                r.map_err(|e| Error::WorkerStart(format!("cannot execute the worker: {e}")))
            });
        if let Some(board) = &mut board {
            board.close_fd();
        }
        match child {
            Ok(child) => Ok(Pending {
                id,
                child,
                arrival,
                board,
            }),
            Err(e) => {
                self.arrivals_lock().remove(&id);
                Err(e)
            }
        }
    }

    fn finish_start(&self, pending: Pending, program: &Program) -> Result<Worker, Error> {
        let Pending {
            id,
            mut child,
            arrival,
            board,
        } = pending;
        let result = wait_for_connection(&mut child, &arrival);
        self.arrivals_lock().remove(&id);
        let stream = match result.and_then(|stream| same_process(stream, &child)) {
            Ok(stream) => stream,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let conn = Conn::new(stream, format!("worker {}", child.id()));
        let worker = Worker::new(id, conn, child, board);
        match handshake(&worker, program) {
            Ok(()) => Ok(worker),
            Err(e) => {
                worker.kill();
                worker.reap(Duration::ZERO);
                Err(e)
            }
        }
    }

    fn arrivals_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Sender<Stream>>> {
        lock(&self.arrivals)
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.spawner = None;
        // Wake the accept thread, which is blocked in accept() and checks `closed` after it.
        if let Ok(name) = ns_name(&self.socket) {
            let _ = Stream::connect(name);
        }
    }
}

fn ns_name(socket: &str) -> Result<Name<'_>, Error> {
    socket
        .to_ns_name::<GenericNamespaced>()
        .map_err(|e| Error::io("naming the worker socket", e))
}

/// 128 random bits in hex.
fn random_hex() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::WorkerStart(format!("no randomness for the session token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Waits for the worker to connect, noticing if it dies first.
fn wait_for_connection(child: &mut Child, arrival: &Receiver<Stream>) -> Result<Stream, Error> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match arrival.recv_timeout(Duration::from_millis(20)) {
            Ok(stream) => return Ok(stream),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::WorkerStart("the accept thread is gone".into()));
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::WorkerStart(format!(
                "worker {} exited before connecting ({status}); is the worker executable an mpscript \
                 binary, or does the host call mpscript::run_worker_if_requested() first in main?",
                child.id()
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("starting worker {}", child.id()),
                after: START_TIMEOUT,
            });
        }
    }
}

/// Checks the peer is the child we started, then has it compile the program.
fn handshake(worker: &Worker, program: &Program) -> Result<(), Error> {
    worker.conn.send(&ToWorker::Program(program.clone()))?;
    let mut reader = worker.conn.reader();
    match reader.read::<FromWorker>()? {
        FromWorker::Ready => Ok(()),
        FromWorker::CompileFailed(message) => Err(Error::WorkerStart(format!(
            "worker {} cannot serve this run: {message}",
            worker.pid
        ))),
        other => Err(Error::Protocol {
            peer: worker.conn.peer().into(),
            detail: format!("expected Ready, got {other:?}"),
        }),
    }
}

fn accept_loop(
    listener: interprocess::local_socket::Listener,
    token: &str,
    arrivals: &Arrivals,
    closed: &AtomicBool,
) {
    for stream in listener.incoming() {
        if closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (token, arrivals) = (token.to_string(), arrivals.clone());
        let _ = thread::Builder::new()
            .name("mpscript-hello".into())
            .spawn(move || admit(stream, &token, &arrivals));
    }
}

/// Reads the newcomer's hello and hands its stream to the launch waiting for it; anyone else is
/// dropped and logged, and never reaches a queue or a call.
fn admit(stream: Stream, token: &str, arrivals: &Arrivals) {
    let _ = stream.set_recv_timeout(Some(HELLO_TIMEOUT));
    let peer = peer_label(&stream);
    let hello = FrameReader::with_limit(&stream, peer.clone(), HELLO_LIMIT).read::<FromWorker>();
    let refuse = |why: String| eprintln!("mpscript: refused a connection from {peer}: {why}");
    let (worker, pid) = match hello {
        Ok(FromWorker::Hello {
            token: t,
            worker,
            pid,
        }) if constant_time_eq(&t, token) => (worker, pid),
        Ok(FromWorker::Hello { .. }) => return refuse("wrong session token".into()),
        Ok(other) => return refuse(format!("expected a hello, got {other:?}")),
        Err(Error::Protocol { detail, .. }) => return refuse(detail),
        Err(e) => return refuse(e.to_string()),
    };
    if let Some(peer_pid) = peer_pid(&stream) {
        if peer_pid != pid {
            return refuse(format!("claims pid {pid} but is pid {peer_pid}"));
        }
    }
    let _ = stream.set_recv_timeout(None);
    let waiting = lock(arrivals).remove(&worker);
    match waiting {
        Some(tx) => {
            let _ = tx.send(stream);
        }
        None => refuse(format!("no worker {worker} is being started")),
    }
}

/// The connection must come from the very process we started (a token alone could leak).
fn same_process(stream: Stream, child: &Child) -> Result<Stream, Error> {
    match peer_pid(&stream) {
        Some(pid) if pid != child.id() => Err(Error::WorkerStart(format!(
            "the connection for worker {} came from pid {pid}",
            child.id()
        ))),
        _ => Ok(stream),
    }
}

fn peer_pid(stream: &Stream) -> Option<u32> {
    stream.peer_creds().ok()?.pid().map(|p| p as u32)
}

fn peer_label(stream: &Stream) -> String {
    match peer_pid(stream) {
        Some(pid) => format!("pid {pid}"),
        None => "an unknown process".into(),
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn spawn_loop(requests: &Receiver<SpawnRequest>, exe: &PathBuf, socket: &str, token: &str) {
    for request in requests {
        let child = worker_command(exe, socket, token, &request).spawn();
        let _ = request.reply.send(child);
    }
}

fn worker_command(exe: &PathBuf, socket: &str, token: &str, request: &SpawnRequest) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env(SOCKET_ENV, socket)
        .env(TOKEN_ENV, token)
        .env(ID_ENV, request.worker.to_string())
        .stdin(Stdio::null());
    if let Some(fd) = request.board_fd {
        cmd.env(BOARD_ENV, fd.to_string());
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Own process group: a terminal's Ctrl-C reaches only the parent, which shuts workers down.
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        {
            let parent = std::process::id() as libc::pid_t;
            let board_fd = request.board_fd;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The parent may have died before prctl took effect.
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                    match board_fd {
                        Some(fd) => crate::board::inherit_in_child(fd),
                        None => Ok(()),
                    }
                });
            }
        }
    }
    cmd
}
