//! Starting worker processes: a spawner thread that outlives them (pdeathsig is per thread), a local
//! socket listener, and a handshake that admits only the processes this runtime started.

use crate::locks::lock;
use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::{self, Read},
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

use super::{
    board::Board,
    child::{BOARD_ENV, ID_ENV, PARENT_ENV, SOCKET_ENV, TOKEN_ENV},
    link::LocalLink,
    stream::Conn,
};
use crate::{
    Error,
    output::{OutStream, OutputSink},
    transport::{Transport, WorkerLink},
    wire::{FrameReader, FromWorker, Program, ToWorker},
};

/// How long a new worker may take to connect and compile.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest hello accepted from a peer not yet known.
const HELLO_LIMIT: usize = 4096;
/// How long a connecting peer may take to say its whole hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections saying hello at once, at most; past it the oldest is dropped. Bounds what strangers
/// can hold (descriptors, buffers) whatever they do. See [`newcomer_limit`].
const MAX_NEWCOMERS: usize = 64;
/// How often admission looks at deadlines and new connections while newcomers are pending.
const ADMISSION_TICK_MS: i32 = 20;
/// The longest pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Refused connections logged per second; the rest are counted.
const REFUSALS_PER_SECOND: u32 = 5;

type Arrivals = Arc<Mutex<HashMap<u64, Sender<Stream>>>>;

/// The pids of workers started and not yet connected: their connections are never dropped to make
/// room for strangers.
type Expected = Arc<Mutex<HashSet<u32>>>;

struct SpawnRequest {
    worker: u64,
    /// The worker's progress board, given as its standard input.
    board: Option<Stdio>,
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
    expected: Expected,
    spawner: Option<Sender<SpawnRequest>>,
    next_worker: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl Launcher {
    /// A launcher of `exe` workers; refused connections are told to `notices`.
    pub(crate) fn new(exe: PathBuf, notices: OutputSink) -> Result<Launcher, Error> {
        let token = random_hex()?;
        // Its own randomness: socket names are visible to every user in /proc/net/unix.
        let socket = format!("mpscript-{}-{}", std::process::id(), random_hex()?);
        let listener = ListenerOptions::new()
            .name(ns_name(&socket)?)
            .create_sync()
            .map_err(|e| Error::io("creating the worker socket", e))?;
        let arrivals = Arrivals::default();
        let expected = Expected::default();
        let closed = Arc::new(AtomicBool::new(false));
        let limit = newcomer_limit();
        let (newcomers, arriving) = bounded(limit);
        {
            let closed = closed.clone();
            thread::Builder::new()
                .name("mpscript-accept".into())
                .spawn(move || accept_loop(listener, &newcomers, &closed))
                .map_err(|e| Error::io("starting the accept thread", e))?;
        }
        {
            let (arrivals, token, expected) = (arrivals.clone(), token.clone(), expected.clone());
            let admission = Admission {
                limit,
                notices,
                token,
                arrivals,
                expected,
            };
            thread::Builder::new()
                .name("mpscript-admission".into())
                .spawn(move || admission.run(&arriving))
                .map_err(|e| Error::io("starting the admission thread", e))?;
        }
        let (spawner, requests) = unbounded();
        {
            let (socket, token, expected) = (socket.clone(), token.clone(), expected.clone());
            thread::Builder::new()
                .name("mpscript-spawner".into())
                .spawn(move || spawn_loop(&requests, &exe, &socket, &token, &expected))
                .map_err(|e| Error::io("starting the spawner thread", e))?;
        }
        Ok(Launcher {
            socket,
            arrivals,
            expected,
            spawner: Some(spawner),
            next_worker: AtomicU64::new(1),
            closed,
        })
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
            board: board.as_mut().and_then(Board::take_as_stdin),
            reply,
        });
        let child = child
            .recv()
            .map_err(|_| Error::WorkerStart("the spawner thread is gone".into()))
            .and_then(|r| {
                r.map_err(|e| Error::WorkerStart(format!("cannot execute the worker: {e}")))
            });
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

    /// Connects a started worker and sends it the program to compile.
    fn connect(&self, pending: Pending, program: &Program) -> Result<LocalLink, Error> {
        let Pending {
            id,
            mut child,
            arrival,
            board,
        } = pending;
        let result = wait_for_connection(&mut child, &arrival);
        self.arrivals_lock().remove(&id);
        lock(&self.expected).remove(&child.id());
        let stream = match result.and_then(|stream| same_process(stream, &child)) {
            Ok(stream) => stream,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let conn = Conn::new(stream, format!("worker {}", child.id()));
        let link = LocalLink::new(conn, child, board);
        match link.send(&ToWorker::Program(Box::new(program.clone()))) {
            Ok(()) => Ok(link),
            Err(e) => Err(ended(link, e)),
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
pub(crate) fn random_hex() -> Result<String, Error> {
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

/// Ends a worker that could not be started, giving back why.
fn ended(link: LocalLink, error: Error) -> Error {
    link.kill();
    link.reap(Duration::ZERO);
    error
}

/// Waits for a connected worker to have compiled the program.
fn compiled(link: LocalLink) -> Result<LocalLink, Error> {
    match ready(&link) {
        Ok(()) => Ok(link),
        Err(e) => Err(ended(link, e)),
    }
}

fn ready(link: &LocalLink) -> Result<(), Error> {
    match link.recv()? {
        FromWorker::Ready => Ok(()),
        FromWorker::CompileFailed(message) => Err(Error::WorkerStart(format!(
            "worker {} cannot serve this run: {message}",
            link.pid()
        ))),
        other => Err(Error::Protocol {
            peer: link.label().into(),
            detail: format!("expected Ready, got {other:?}"),
        }),
    }
}

impl Transport for Launcher {
    /// Starts `count` workers in parallel and returns them connected, handshaken and compiled;
    /// if one fails, the others are ended and its error returned.
    fn start(&self, count: usize, program: &Program) -> Result<Vec<Box<dyn WorkerLink>>, Error> {
        let pending = (0..count)
            .map(|_| self.spawn_one())
            .collect::<Result<Vec<_>, _>>()?;
        // Each gets the program as it connects, so they all compile at once, not in turn.
        let connected: Vec<_> = (pending.into_iter())
            .map(|p| self.connect(p, program))
            .collect();
        let mut started = Vec::with_capacity(count);
        let mut first_error = None;
        for link in connected {
            match link.and_then(compiled) {
                Ok(link) => started.push(Box::new(link) as Box<dyn WorkerLink>),
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
}

/// How many connections may say hello at once (and as many more wait to be read): an eighth of
/// the descriptors this process may open, at most [`MAX_NEWCOMERS`], so that strangers flooding
/// the socket leave three quarters of the descriptors to the runtime's own workers.
fn newcomer_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let open_files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    (open_files / 8).clamp(4, MAX_NEWCOMERS)
}

/// Accepts connections and hands them to the admission thread. A failing accept (out of
/// descriptors, say) backs off instead of spinning.
fn accept_loop(
    listener: interprocess::local_socket::Listener,
    newcomers: &Sender<Stream>,
    closed: &AtomicBool,
) {
    let mut backoff = Duration::ZERO;
    for stream in listener.incoming() {
        if closed.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) if stream.set_nonblocking(true).is_ok() => {
                backoff = Duration::ZERO;
                if newcomers.send(stream).is_err() {
                    return;
                }
            }
            _ => {
                backoff = (backoff * 2).clamp(Duration::from_millis(1), ACCEPT_BACKOFF);
                thread::sleep(backoff);
            }
        }
    }
}

/// A connection that has not said a valid hello yet.
struct Newcomer {
    stream: Stream,
    peer: String,
    /// A worker this launcher started.
    ours: bool,
    received: Vec<u8>,
    deadline: Instant,
}

/// Reads every newcomer's hello on one thread: at most `limit` strangers at once (the oldest is
/// dropped for a new one; a worker this launcher started never is), each with [`HELLO_TIMEOUT`]
/// for the whole hello however slowly it trickles in. A valid hello hands the stream to the launch
/// waiting for it; anyone else is dropped and logged (rate-limited), and never reaches a queue or
/// a call.
struct Admission {
    limit: usize,
    notices: OutputSink,
    token: String,
    arrivals: Arrivals,
    expected: Expected,
}

impl Admission {
    fn run(&self, newcomers: &Receiver<Stream>) {
        let mut pending: VecDeque<Newcomer> = VecDeque::new();
        let mut log = RefusalLog::new(self.notices.clone());
        loop {
            if pending.is_empty() {
                let Ok(stream) = newcomers.recv() else {
                    return; // the launcher is gone
                };
                self.take(stream, &mut pending, &mut log);
            }
            // Take those waiting, a bounded number, so a flood cannot keep hellos from being read.
            for stream in newcomers.try_iter().take(self.limit) {
                self.take(stream, &mut pending, &mut log);
            }
            wait_readable(&pending);
            self.read_hellos(&mut pending, &mut log);
        }
    }

    /// Adds a newcomer, dropping the oldest stranger if there are too many.
    fn take(&self, stream: Stream, pending: &mut VecDeque<Newcomer>, log: &mut RefusalLog) {
        let pid = peer_pid(&stream);
        let ours = pid.is_some_and(|pid| lock(&self.expected).contains(&pid));
        if !ours
            && pending.iter().filter(|n| !n.ours).count() >= self.limit
            && let Some(at) = pending.iter().position(|n| !n.ours)
            && let Some(oldest) = pending.remove(at)
        {
            log.refuse(&oldest.peer, "too many connections are saying hello");
        }
        pending.push_back(Newcomer {
            peer: peer_label(pid),
            ours,
            stream,
            received: Vec::new(),
            deadline: Instant::now() + HELLO_TIMEOUT,
        });
    }

    /// Reads what each newcomer sent; admits or drops those whose hello is whole or too late.
    fn read_hellos(&self, pending: &mut VecDeque<Newcomer>, log: &mut RefusalLog) {
        let now = Instant::now();
        let mut at = 0;
        while at < pending.len() {
            let hello = read_hello(&mut pending[at], now);
            if let Hello::NotYet = hello {
                at += 1;
                continue;
            }
            let Some(Newcomer { stream, peer, .. }) = pending.remove(at) else {
                break;
            };
            let admitted = match hello {
                Hello::Valid(hello) => admit(stream, hello, &self.token, &self.arrivals),
                Hello::Refused(why) => Err(why),
                Hello::NotYet => Ok(()),
            };
            if let Err(why) = admitted {
                log.refuse(&peer, &why);
            }
        }
    }
}

enum Hello {
    NotYet,
    Valid(FromWorker),
    Refused(String),
}

/// Reads what a newcomer has sent so far; a whole hello frame once it is all there.
fn read_hello(n: &mut Newcomer, now: Instant) -> Hello {
    let mut chunk = [0u8; 1024];
    loop {
        match (&n.stream).read(&mut chunk) {
            Ok(0) => return Hello::Refused("hung up before its hello".into()),
            Ok(got) => n.received.extend_from_slice(&chunk[..got]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Hello::Refused(e.to_string()),
        }
        if n.received.len() > 4 + HELLO_LIMIT {
            break;
        }
    }
    let claimed = n
        .received
        .get(..4)
        .map(|l| u32::from_le_bytes(l.try_into().unwrap_or([0; 4])));
    let complete = claimed
        .is_some_and(|len| len as usize > HELLO_LIMIT || n.received.len() >= 4 + len as usize);
    if complete {
        let mut frame = FrameReader::with_limit(n.received.as_slice(), n.peer.clone(), HELLO_LIMIT);
        return match frame.read::<FromWorker>() {
            Ok(hello) => Hello::Valid(hello),
            Err(Error::Protocol { detail, .. }) => Hello::Refused(detail),
            Err(e) => Hello::Refused(e.to_string()),
        };
    }
    if now >= n.deadline {
        return Hello::Refused(format!("no hello within {HELLO_TIMEOUT:?}"));
    }
    Hello::NotYet
}

/// Waits until a newcomer has something to read, or a short while (to expire deadlines and
/// take new connections).
fn wait_readable(pending: &VecDeque<Newcomer>) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|n| libc::pollfd {
                fd: match &n.stream {
                    Stream::UdSocket(s) => s.inner().as_raw_fd(),
                },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll reads and writes only the array we own, for its length.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                ADMISSION_TICK_MS,
            )
        };
    }
    #[cfg(not(unix))]
    {
        let _ = pending;
        thread::sleep(Duration::from_millis(ADMISSION_TICK_MS as u64));
    }
}

/// Checks a complete hello; on success hands the stream to the launch waiting for it.
fn admit(
    stream: Stream,
    hello: FromWorker,
    token: &str,
    arrivals: &Arrivals,
) -> Result<(), String> {
    let (worker, pid) = match hello {
        FromWorker::Hello {
            token: t,
            worker,
            pid,
        } if constant_time_eq(&t, token) => (worker, pid),
        FromWorker::Hello { .. } => return Err("wrong session token".into()),
        other => return Err(format!("expected a hello, got {other:?}")),
    };
    if let Some(peer_pid) = peer_pid(&stream)
        && peer_pid != pid
    {
        return Err(format!("claims pid {pid} but is pid {peer_pid}"));
    }
    let waiting = lock(arrivals).remove(&worker);
    let Some(tx) = waiting else {
        return Err(format!("no worker {worker} is being started"));
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let _ = tx.send(stream);
    Ok(())
}

/// Says who was refused, at most [`REFUSALS_PER_SECOND`] notices a second, so strangers cannot
/// flood the script's own output; the rest are counted and summed up.
struct RefusalLog {
    notices: OutputSink,
    second: Option<Instant>,
    said: u32,
    unsaid: u32,
}

impl RefusalLog {
    fn new(notices: OutputSink) -> RefusalLog {
        RefusalLog {
            notices,
            second: None,
            said: 0,
            unsaid: 0,
        }
    }

    fn refuse(&mut self, peer: &str, why: &str) {
        let now = Instant::now();
        if self
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            if self.unsaid > 0 {
                let summary = format!(
                    "refused {} more connection(s) in the last second",
                    self.unsaid
                );
                (self.notices)(OutStream::Notice, &summary);
            }
            (self.second, self.said, self.unsaid) = (Some(now), 0, 0);
        }
        if self.said < REFUSALS_PER_SECOND {
            self.said += 1;
            let refusal = format!("refused a connection from {peer}: {why}");
            (self.notices)(OutStream::Notice, &refusal);
        } else {
            self.unsaid += 1;
        }
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

fn peer_label(pid: Option<u32>) -> String {
    match pid {
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

fn spawn_loop(
    requests: &Receiver<SpawnRequest>,
    exe: &PathBuf,
    socket: &str,
    token: &str,
    expected: &Expected,
) {
    for request in requests {
        let child = worker_command(exe, socket, token, request.worker, request.board).spawn();
        if let Ok(child) = &child {
            lock(expected).insert(child.id());
        }
        let _ = request.reply.send(child);
    }
}

/// The command that starts a worker. No `pre_exec` hook: that would force a full `fork` of a
/// parent that grows with every live process (spawns got ten times slower by 2,000 of them);
/// without one the standard library uses `posix_spawn`. The worker sets its parent-death signal
/// itself (see `worker::become_worker`), and gets its board as standard input.
fn worker_command(
    exe: &PathBuf,
    socket: &str,
    token: &str,
    worker: u64,
    board: Option<Stdio>,
) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env(SOCKET_ENV, socket)
        .env(TOKEN_ENV, token)
        .env(ID_ENV, worker.to_string())
        .env(PARENT_ENV, std::process::id().to_string());
    match board {
        Some(board) => cmd.env(BOARD_ENV, "0").stdin(board),
        None => cmd.stdin(Stdio::null()),
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Own process group: a terminal's Ctrl-C reaches only the parent, which shuts workers down.
        cmd.process_group(0);
    }
    cmd
}
