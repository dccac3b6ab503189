//! Every message of the protocol on one screen. Parent and worker speak only these.

use serde::{Deserialize, Serialize};

use crate::{
    OutStream, RemoteError, Value,
    error::Failure,
    logging::LogRecord,
    profile::{Frame, Recorded},
    settings::Settings,
    value::{FnValue, HandleKind, ProcessHandle},
};

/// Parent to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToWorker {
    /// First message after the handshake: the program to compile.
    Program(Box<Program>),
    /// Run `f(args...)` for a spawned process; answered by [`FromWorker::Done`].
    /// `call` is also the process's id, and `parent` the process that spawned it (`self()` and
    /// `parent()` in the worker).
    Call {
        call: u64,
        f: FnValue,
        args: Vec<Value>,
        parent: ProcessHandle,
        /// In a profiled run, the caller's call path: the call's frames hang under it.
        at: Option<Vec<Frame>>,
    },
    /// Run a job's function over a chunk of a `pool_map`; answered by [`FromWorker::MapPart`]s and
    /// one [`FromWorker::MapDone`]. `setup` comes with a worker's first chunk of a job only.
    Map {
        job: u64,
        chunk: u32,
        setup: Option<MapSetup>,
        items: Items,
    },
    /// The answer to a worker's [`FromWorker::Request`].
    Reply {
        seq: u64,
        result: Result<Reply, Failure>,
    },
    /// Another chunk of the program (a REPL input): compile it and merge it in.
    AddChunk(String),
    /// Exit now.
    Shutdown,
}

/// Worker to parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromWorker {
    /// The handshake: the per-run secret and the worker id the parent gave this process.
    Hello {
        token: String,
        worker: u64,
        pid: u32,
    },
    /// The program compiled; ready for calls.
    Ready,
    /// The worker cannot serve the program: it does not compile there, or the worker was started
    /// without the host's functions.
    CompileFailed(String),
    /// One whole `print` or `debug` output.
    Output { stream: OutStream, text: String },
    /// A [`ToWorker::Call`] finished.
    Done { call: u64, outcome: Outcome },
    /// Results of a chunk's next items so far, sent while a long chunk runs, so a worker that dies
    /// loses at most the work since its last part.
    MapPart { job: u64, chunk: u32, values: Value },
    /// A [`ToWorker::Map`] chunk finished: its remaining results, or the first failing item.
    MapDone {
        job: u64,
        chunk: u32,
        result: Result<Value, ItemFailure>,
    },
    /// A builtin called inside the worker that the parent must serve (queues, spawn, join, ...).
    Request { seq: u64, op: Op },
    /// Like a request, but nothing is waited for: a put on an unbounded queue. Applied in order
    /// with this worker's other messages.
    Post { op: Op },
    /// In a profiled run, what the worker recorded: its last message, answering `Shutdown`.
    Profile(Box<Recorded>),
}

/// Everything needed to compile a script identically in a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Program {
    /// The script's name, for error messages.
    pub name: String,
    /// The exact texts the parent compiled, each compiled on its own and merged in order (a
    /// script is one chunk, a REPL session one per input), because closure names hash each
    /// chunk's text and positions.
    pub chunks: Vec<String>,
    /// How every engine of the run is shaped: the same value in every process.
    pub settings: Settings,
    /// The host registered functions of its own, which a worker knows only if it was started
    /// through `RuntimeBuilder::run_worker_if_requested`.
    pub host_functions: bool,
}

/// How a spawned call ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The function returned this value.
    Returned(Value),
    /// The function threw.
    Threw(RemoteError),
    /// The function called `exit(code)`.
    Exited(i64),
}

/// The items of one `pool_map` chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Items {
    /// Integers `start..end` (a range is never materialised).
    Range { start: i64, end: i64 },
    /// An array value (int and float arrays take the compact fast path).
    Values(Value),
}

impl Items {
    /// How many items there are.
    pub fn len(&self) -> usize {
        match self {
            Items::Range { start, end } => end.saturating_sub(*start).max(0) as usize,
            Items::Values(v) => v.array_len().unwrap_or(0),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many items from `from` on fit in about `budget` wire bytes (at least one).
    pub(crate) fn count_within(&self, from: usize, budget: usize) -> usize {
        let Items::Values(Value::Array(items)) = self else {
            return budget.div_ceil(8).max(1); // ints and floats: 8 bytes each
        };
        let mut used = 0;
        let fitting = items[from..]
            .iter()
            .take_while(|item| {
                used += item.wire_size();
                used <= budget
            })
            .count();
        fitting.max(1)
    }

    /// Items `from..to` by position.
    pub(crate) fn slice(&self, from: usize, to: usize) -> Items {
        match self {
            Items::Range { start, .. } => Items::Range {
                start: start + from as i64,
                end: start + to as i64,
            },
            Items::Values(v) => Items::Values(v.slice(from, to)),
        }
    }
}

/// What a worker needs once per `pool_map` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapSetup {
    /// The function to apply.
    pub f: FnValue,
    /// Seconds each call may run before it is stopped.
    pub timeout: Option<f64>,
    /// Each item is an array whose elements are the call's arguments (`starmap`).
    pub spread: bool,
    /// In a profiled run, the caller's call path: the items' frames hang under it.
    pub at: Option<Vec<Frame>>,
}

/// Which item of a chunk failed, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemFailure {
    /// Position of the item inside its chunk.
    pub offset: u32,
    /// The error the function threw.
    pub error: RemoteError,
    /// Whether it was stopped for running past the job's time limit.
    pub timed_out: bool,
}

/// `pool_map` options from the script's option map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MapOptions {
    /// Workers to use; `None` for the runtime's default.
    pub workers: Option<usize>,
    /// Items per chunk; `None` to let the scheduler balance.
    pub chunk_size: Option<usize>,
    /// How many times an item whose worker died is run again before the call fails.
    pub retries: u32,
    /// Seconds each call may run before it is stopped and reported as timed out.
    pub timeout: Option<f64>,
    /// Show progress on stderr; `None`: only on a terminal, for maps longer than half a second.
    pub progress: Option<bool>,
    /// Call `f` with each item's elements as its arguments.
    pub spread: bool,
}

/// An operation a builtin asks of the process that owns queues and workers (the parent).
/// Builtins in the parent call it directly; builtins in a worker send it as a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// `spawn(f, args...)`; `at`: where the caller is, in a profiled run.
    Spawn {
        f: FnValue,
        args: Vec<Value>,
        at: Option<Vec<Frame>>,
    },
    /// `p.join()` / `p.join(secs)`
    Join { process: u64, timeout: Option<f64> },
    /// `p.is_alive()` and `p.exit_code`
    Status { process: u64 },
    /// `p.kill()` (SIGKILL) and `p.terminate()` (SIGTERM).
    Kill { process: u64, signal: KillSignal },
    /// `queue()` / `queue(maxsize)`, and `joinable_queue(...)` with `joinable`.
    NewQueue {
        maxsize: Option<u64>,
        joinable: bool,
    },
    /// `q.task_done()` on a joinable queue.
    TaskDone { queue: u64 },
    /// `q.join()` / `q.join(secs)` on a joinable queue: waits until every item put is done.
    JoinQueue { queue: u64, timeout: Option<f64> },
    /// `q.put(v)`
    Put {
        queue: u64,
        value: Value,
        timeout: Option<f64>,
    },
    /// `q.get()`, `q.get(secs)`, `q.try_get()` (timeout 0)
    Get { queue: u64, timeout: Option<f64> },
    /// `q.len()`
    Len { queue: u64 },
    /// `pool_map(f, items, options)`; `at`: where the caller is, in a profiled run.
    PoolMap {
        f: FnValue,
        items: Items,
        options: MapOptions,
        at: Option<Vec<Frame>>,
    },
    /// `pool_map_unordered(f, items, options)`: starts the map; answered with the id of its
    /// results, read with [`Op::NextResults`].
    MapUnordered {
        f: FnValue,
        items: Items,
        options: MapOptions,
        at: Option<Vec<Frame>>,
    },
    /// The next results of a `pool_map_unordered`, as an array (answered `Value`), or `Unit` once
    /// every result was given; a failed item fails it.
    NextResults { results: u64, timeout: Option<f64> },
    /// A `pool_map_unordered` loop ended early: its map stops.
    CloseResults { results: u64 },
    /// The main script dropped its last handle to this object, and never sent one elsewhere: its
    /// record may go once the object is done with. Posted, never answered.
    Unreferenced(Object),
    /// A handle to this process was made outside the main script's count (its `self()`): its
    /// record stays for the rest of the run. Posted, never answered.
    Shared { process: u64 },
    /// `p.send(msg)`: into process `to`'s mailbox; answered `Bool(false)` if it has ended.
    Send { to: u64, value: Value },
    /// `recv()` and its variants: the next message of the caller's own mailbox.
    Recv { timeout: Option<f64> },
    /// `register(name, p)`
    Register { name: String, process: u64 },
    /// `whereis(name)`: answered with a process value, or unit.
    Whereis { name: String },
    /// `monitor(p)`, `link(p)`, and with `on: false` `demonitor(p)`, `unlink(p)`.
    Watch { process: u64, link: bool, on: bool },
    /// `trap_exits(on)`: linked ends arrive as messages instead of ending the caller.
    TrapExits(bool),
    /// `lock()`, `rlock()`, `semaphore(n)`, `event()`, `barrier(n)`: answered with the new
    /// object's id.
    NewSync { kind: HandleKind, size: u64 },
    /// `condition()` (over a new re-entrant lock) or `condition(lock)`: answered with its id.
    NewCondition { lock: Option<u64> },
    /// A method of a lock, re-entrant lock, semaphore, condition, event or barrier.
    Sync { id: u64, action: SyncAction },
    /// `pool_submit(f, args...)`: answered with the future's id once the backlog has room.
    Submit {
        f: FnValue,
        args: Vec<Value>,
        at: Option<Vec<Frame>>,
    },
    /// `fut.get()`; `take` also forgets the future (results of `pool_map_unordered`).
    Await {
        future: u64,
        timeout: Option<f64>,
        take: bool,
    },
    /// `fut.done()`
    IsDone { future: u64 },
    /// `fut.cancel()`: answered true if it had not started (it never will).
    Cancel { future: u64 },
    /// `shared_map()`: answered with its id.
    NewSharedMap,
    /// A method of a shared map.
    SharedMap { id: u64, action: MapAction },
    /// `log_info(msg)` and its siblings in a worker: the record, for the main process to write.
    /// Posted, never answered.
    Log(Box<LogRecord>),
    /// `wait_any(futures)`: answered with the id of the first that is done.
    WaitAny {
        futures: Vec<u64>,
        timeout: Option<f64>,
    },
}

impl Op {
    /// The time limit of a request that can wait (`None` inside: no limit).
    pub(crate) fn limit(&mut self) -> Option<&mut Option<f64>> {
        match self {
            Op::Join { timeout, .. }
            | Op::JoinQueue { timeout, .. }
            | Op::Put { timeout, .. }
            | Op::Get { timeout, .. }
            | Op::NextResults { timeout, .. }
            | Op::Recv { timeout }
            | Op::Await { timeout, .. }
            | Op::WaitAny { timeout, .. }
            | Op::Sync {
                action: SyncAction::Acquire { timeout } | SyncAction::Wait { timeout },
                ..
            } => Some(timeout),
            _ => None,
        }
    }
}

/// What a script does to a shared map. Answered `Value` (`Get`, `Remove`, `Add`, `ToMap`),
/// `Bool` (`Contains`, `Cas`), `Len`, or `Unit` (`Set`); `Keys` as a `Value` array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MapAction {
    Get(String),
    Set(String, Value),
    Remove(String),
    Contains(String),
    Keys,
    Len,
    ToMap,
    /// Adds a number to a key's number (a missing key counts from 0): answered the new value.
    Add(String, Value),
    /// Stores the new value if the key holds the expected one (a missing key holds `()`).
    Cas(String, Value, Value),
}

/// An object of the main process that handles name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Object {
    /// A spawned process, by id.
    Process(u64),
    /// A queue, by id.
    Queue(u64),
    /// A lock, re-entrant lock, semaphore, condition, event or barrier, by id.
    Sync(u64),
    /// A `pool_submit` future, by id.
    Future(u64),
    /// A shared map, by id.
    SharedMap(u64),
}

/// How `kill` and `terminate` end a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillSignal {
    /// `p.kill()`: SIGKILL, which cannot be caught; `exit_code` -9.
    Kill,
    /// `p.terminate()`: SIGTERM; `exit_code` -15.
    Terminate,
}

/// What to do with a lock, re-entrant lock, semaphore, condition, event or barrier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum SyncAction {
    /// Lock, re-entrant lock, semaphore, or a condition's lock: take a permit, waiting at most
    /// `timeout`; answered `Bool`.
    Acquire { timeout: Option<f64> },
    /// Lock, re-entrant lock, semaphore, or a condition's lock: give a permit back.
    Release,
    /// Event: set the flag, waking every waiter.
    Set,
    /// Event: clear the flag.
    Clear,
    /// Event: answered `Bool` with the flag.
    IsSet,
    /// Event: wait for the flag (answered `Bool`); condition: wait to be notified (answered
    /// `Bool`); barrier: wait for every party (answered `Len` with this party's arrival index).
    Wait { timeout: Option<f64> },
    /// Condition: wake up to this many waiters.
    Notify(u64),
    /// Barrier: back to its first state; parties waiting fail.
    Reset,
    /// Barrier: break it; parties waiting and arriving fail until a reset.
    Abort,
    /// Barrier: answered `Bool`, whether it is broken.
    Broken,
    /// Barrier: answered `Len`, how many parties wait now.
    Waiting,
    /// Barrier: answered `Len`, how many parties it waits for.
    Parties,
}

/// The successful answer to an [`Op`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to return.
    Unit,
    /// A value (join, pool_map).
    Value(Value),
    /// A queue get: the value, or `None` when the wait ran out.
    Got(Option<Value>),
    /// A new process.
    Process { id: u64, pid: u32 },
    /// A process's state: `None` while running, else its exit code.
    Status { exit_code: Option<i64> },
    /// A length, or an index.
    Len(u64),
    /// A yes or no.
    Bool(bool),
    /// The id of a new queue, lock, semaphore, event, barrier, future or result stream.
    Id(u64),
}

/// A reply's payload as the type its request answers, so a builtin asks for what it expects
/// (`let sent: bool = ctx.ask(op)?`) and a reply of another shape is one error in one place.
pub(crate) trait Answer: Sized {
    /// The payload, or the reply back if it has another shape.
    fn from_reply(reply: Reply) -> Result<Self, Reply>;
}

/// The id of a new object, as [`Reply::Id`] answers it.
pub(crate) struct Id(pub(crate) u64);

/// A new process, as [`Reply::Process`] answers it.
pub(crate) struct NewProcess {
    pub(crate) id: u64,
    pub(crate) pid: u32,
}

/// A process's state, as [`Reply::Status`] answers it: `None` while it runs.
pub(crate) struct ExitCode(pub(crate) Option<i64>);

macro_rules! answers {
    ($($ty:ty => $reply:pat => $payload:expr;)*) => {$(
        impl Answer for $ty {
            fn from_reply(reply: Reply) -> Result<Self, Reply> {
                match reply {
                    $reply => Ok($payload),
                    other => Err(other),
                }
            }
        }
    )*};
}

answers! {
    () => Reply::Unit => ();
    Value => Reply::Value(v) => v;
    Option<Value> => Reply::Got(v) => v;
    NewProcess => Reply::Process { id, pid } => NewProcess { id, pid };
    ExitCode => Reply::Status { exit_code } => ExitCode(exit_code);
    u64 => Reply::Len(n) => n;
    bool => Reply::Bool(b) => b;
    Id => Reply::Id(id) => Id(id);
}

/// Any reply, for requests whose answer depends on their arguments (a sync object's methods).
impl Answer for Reply {
    fn from_reply(reply: Reply) -> Result<Self, Reply> {
        Ok(reply)
    }
}
