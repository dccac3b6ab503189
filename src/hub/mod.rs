//! The parent side: owns every worker process, queue and spawned-process record, and serves the
//! builtins of the main script and of every worker.

mod actors;
mod futures;
mod parked;
mod pool;
mod process;
mod progress;
mod queue;
mod results;
mod sync;
mod wait;
mod waiting;
mod worker;

use crate::locks::lock;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{Sender, unbounded};

use self::{
    actors::{Actors, Doomed, Ending, MAIN},
    futures::{Executor, Settled, Starts},
    pool::{JobEvent, MapRun},
    process::ProcSlot,
    queue::{Put, Queue},
    results::{Next, Results},
    sync::{Asker, Owner, SyncObject},
    worker::{Task, Worker},
};
use crate::{
    Error, Interrupt, Value,
    builtins::Backend,
    output::{OutStream, OutputSink},
    stop::Wake,
    transport::Transport,
    value::{FnValue, HandleKind, ProcessHandle},
    wire::{
        FromWorker, Items, MapOptions, MapSetup, Object, Op, Program, Reply, SyncAction, ToWorker,
    },
};

/// Idle warm workers kept for `spawn` beyond this are shut down.
fn spare_limit() -> usize {
    crate::cpu_count().max(2)
}

/// How long a worker gets to exit after being asked, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// What the hub needs to start workers.
pub(crate) struct HubConfig {
    /// How workers are started and reached.
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) program: Program,
    pub(crate) workers: usize,
    pub(crate) output: OutputSink,
    pub(crate) interrupt: Interrupt,
}

/// The owner handle: dropping it shuts every worker down.
pub(crate) struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    config: HubConfig,
    workers: Mutex<HashMap<u64, Arc<Worker>>>,
    spares: Mutex<Vec<Arc<Worker>>>,
    pool: Mutex<Vec<Arc<Worker>>>,
    procs: Mutex<HashMap<u64, Arc<ProcSlot>>>,
    jobs: Mutex<HashMap<u64, Sender<JobEvent>>>,
    queues: Mutex<HashMap<u64, Arc<Queue>>>,
    /// The results of running `pool_map_unordered` calls.
    results: Mutex<HashMap<u64, Arc<Results>>>,
    actors: Actors,
    syncs: Mutex<HashMap<u64, Arc<SyncObject>>>,
    executor: Arc<Executor>,
    /// The program's chunks so far (a REPL adds one per input).
    chunks: Mutex<Vec<String>>,
    /// The progress bar of the running `pool_map`, so worker output is written around it.
    progress_bar: Mutex<Option<indicatif::ProgressBar>>,
    next_id: AtomicU64,
}

/// Who asked for an operation: the main script, or a worker through a request.
#[derive(Clone)]
enum Caller {
    Main,
    Worker(Arc<Worker>),
}

impl Caller {
    /// The process the caller is: the main script, or the spawned process its worker runs.
    fn process(&self) -> Result<ProcessHandle, Error> {
        match self {
            Caller::Main => Ok(main_process()),
            Caller::Worker(w) => match *w.task() {
                Task::Process(id) => Ok(ProcessHandle::new(id, w.pid)),
                _ => Err(Error::InvalidArgument(
                    "mailboxes, links and monitors belong to the main script and to spawned \
                     processes; a function running in pool_map has none"
                        .into(),
                )),
            },
        }
    }

    /// Who holds the permits the caller takes: its process, or a pool worker.
    fn owner(&self) -> Owner {
        match self {
            Caller::Main => Owner::Process(MAIN),
            Caller::Worker(w) => match *w.task() {
                Task::Process(id) => Owner::Process(id),
                _ => Owner::Worker(w.id),
            },
        }
    }
}

/// How the hub serves a worker's request.
enum Serving {
    /// It cannot wait: done at once.
    Now,
    /// It may wait on one object (a join, a get, an acquire...): parked there.
    Waits,
    /// It takes a while whatever happens (starting processes, a map): on a thread of its own.
    Long,
}

fn serving(op: &mut Op) -> Serving {
    match op {
        Op::Spawn { .. }
        | Op::Kill { .. }
        | Op::PoolMap { .. }
        | Op::MapUnordered { .. }
        | Op::NextResults { .. }
        | Op::Submit { .. } => Serving::Long,
        _ => match op.limit() {
            Some(None) => Serving::Waits,
            Some(Some(t)) if *t > 0.0 => Serving::Waits,
            _ => Serving::Now,
        },
    }
}

fn main_process() -> ProcessHandle {
    ProcessHandle::new(MAIN, std::process::id())
}

fn deadline(timeout: Option<f64>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + Duration::from_secs_f64(t))
}

pub(super) fn timed_out(what: &str, timeout: Option<f64>) -> Error {
    Error::Timeout {
        what: what.into(),
        after: Duration::from_secs_f64(timeout.unwrap_or_default()),
    }
}

/// A reply that could not be sent (a value over the frame limit) fails the request instead, so
/// the worker is told why rather than waiting for ever. A worker that hung up needs nothing.
fn refuse_reply(worker: &Worker, seq: u64, error: Error) {
    if !error.is_disconnected() {
        let result = Err(error.to_failure());
        let _ = worker.link.send(&ToWorker::Reply { seq, result });
    }
}

fn nested_map() -> Error {
    Error::InvalidArgument(
        "pool_map cannot be called from a function running in pool_map (the pool would wait \
         on itself); use spawn there instead"
            .into(),
    )
}

/// Answers request `seq`. An answer that cannot be sent is given back, so a value taken from a
/// queue for it can be put back; one over the frame limit fails the request instead.
fn send_reply(worker: &Worker, seq: u64, result: Result<Reply, Error>) -> Option<Reply> {
    let message = ToWorker::Reply {
        seq,
        result: result.map_err(|e| e.to_failure()),
    };
    let error = worker.link.send(&message).err()?;
    refuse_reply(worker, seq, error);
    match message {
        ToWorker::Reply { result: Ok(r), .. } => Some(r),
        _ => None,
    }
}

impl Hub {
    pub(crate) fn new(config: HubConfig) -> Result<Hub, Error> {
        Ok(Hub {
            inner: Arc::new(Inner {
                chunks: Mutex::new(config.program.chunks.clone()),
                actors: Actors::new(
                    config.program.settings.limits.max_mailbox,
                    config.interrupt.clone(),
                ),
                executor: config
                    .interrupt
                    .wakes(Arc::new(Executor::new(config.workers))),
                config,
                workers: Mutex::default(),
                spares: Mutex::default(),
                pool: Mutex::default(),
                procs: Mutex::default(),
                jobs: Mutex::default(),
                queues: Mutex::default(),
                results: Mutex::default(),
                syncs: Mutex::default(),
                progress_bar: Mutex::default(),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// Adds a chunk of program text: every live worker compiles it now, later workers at start.
    pub(crate) fn add_chunk(&self, chunk: String) {
        let mut chunks = lock(&self.inner.chunks);
        let message = ToWorker::AddChunk(chunk.clone());
        for w in lock(&self.inner.workers).values() {
            let _ = w.link.send(&message);
        }
        chunks.push(chunk);
    }

    /// The OS pids of the live worker processes.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = lock(&self.inner.workers).values().map(|w| w.pid).collect();
        pids.sort_unstable();
        pids
    }

    /// Waits for spawned processes that are still running, and for submitted futures, as Python
    /// waits for non-daemon processes and for its executor. Says once on stderr what it waits for
    /// when that takes a while (a supervisor left running would otherwise look like a hang).
    pub(crate) fn wait_for_processes(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let notice_at = Instant::now() + WAIT_NOTICE_AFTER;
        let mut told = false;
        loop {
            let running: Vec<_> = lock(&inner.procs)
                .values()
                .filter(|p| p.ending().is_none())
                .cloned()
                .collect();
            let Some(first) = running.first() else {
                if inner.executor.is_idle() {
                    return Ok(());
                }
                thread::sleep(POLL); // futures about to start
                continue;
            };
            if !told && Instant::now() >= notice_at {
                told = true;
                let pids: Vec<String> = running.iter().map(|p| p.pid().to_string()).collect();
                inner.notice(&format!(
                    "the script has ended; waiting for {} process(es) still running (pid {}). \
                     Ctrl-C stops them.",
                    running.len(),
                    pids.join(", ")
                ));
            }
            // Only a stop ends this wait; a process's own error is reported unless someone saw it.
            first.wait_end(POLL * 5, &inner.config.interrupt)?;
        }
    }

    /// The errors of processes that failed with nobody joining, monitoring, linking or killing
    /// them, each given once (Python prints such a child's traceback; this lets the runtime).
    pub(crate) fn unobserved_failures(&self) -> Vec<Error> {
        let mut slots: Vec<_> = lock(&self.inner.procs)
            .iter()
            .map(|(id, slot)| (*id, slot.clone()))
            .collect();
        slots.sort_unstable_by_key(|(id, _)| *id);
        slots
            .iter()
            .filter_map(|(_, slot)| slot.unobserved_failure())
            .collect()
    }
}

/// How long the end of a run waits silently for processes still running.
const WAIT_NOTICE_AFTER: Duration = Duration::from_secs(3);
/// How often the end of a run looks again.
const POLL: Duration = Duration::from_millis(20);

impl Backend for Hub {
    fn call(&self, op: Op) -> Result<Reply, Error> {
        self.inner.handle(op, &Caller::Main)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

impl Inner {
    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes output through the host's sink, around the progress bar if one is showing.
    fn write(&self, stream: OutStream, text: &str) {
        let write = || (self.config.output)(stream, text);
        match lock(&self.progress_bar).clone() {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// Says something of the runtime's own (not the script's) through the host's sink.
    fn notice(&self, text: &str) {
        self.write(OutStream::Notice, text);
    }

    /// Answers a request; a value taken from `source` that cannot be sent goes back to its front.
    /// A post is answered only if it failed, and then to the host: its sender waits for nothing.
    fn answer(
        &self,
        worker: &Worker,
        seq: Option<u64>,
        result: Result<Reply, Error>,
        source: Option<&Queue>,
    ) {
        match (seq, result) {
            (Some(seq), result) => {
                if let (Some(Reply::Got(Some(value))), Some(queue)) =
                    (send_reply(worker, seq, result), source)
                {
                    queue.unget(value);
                }
            }
            (None, Ok(_)) => {}
            (None, Err(e)) => {
                self.notice(&format!("a post from {} failed: {e}", worker.link.label()));
            }
        }
    }

    /// `object`, whose waits an interrupt of the run wakes.
    fn woken<T: Wake + 'static>(&self, object: Arc<T>) -> Arc<T> {
        self.config.interrupt.wakes(object)
    }

    fn handle(self: &Arc<Self>, op: Op, caller: &Caller) -> Result<Reply, Error> {
        match op {
            Op::Spawn { f, args } => {
                let parent = caller.process().unwrap_or_else(|_| main_process());
                self.share(parent.id); // the child's parent() is a handle nobody counts
                self.spawn(self.id(), f, args, parent)
            }
            Op::Join { process, timeout } => {
                let timeout = timeout.map(Duration::from_secs_f64);
                self.process(process)?
                    .join(timeout, &self.config.interrupt)
                    .map(Reply::Value)
            }
            Op::Status { process } => Ok(Reply::Status {
                exit_code: self.process(process)?.exit_code(),
            }),
            Op::Kill { process, signal } => {
                self.process(process)?.kill(signal);
                Ok(Reply::Unit)
            }
            Op::NewQueue { maxsize, joinable } => {
                let id = self.id();
                let queue = Queue::with_joining(maxsize.map(|m| m as usize), joinable);
                lock(&self.queues).insert(id, self.woken(Arc::new(queue)));
                Ok(Reply::Id(id))
            }
            Op::Put {
                queue,
                value,
                timeout,
            } => {
                match self
                    .queue(queue)?
                    .put(value, deadline(timeout), &self.config.interrupt)?
                {
                    Put::Done => Ok(Reply::Unit),
                    Put::Full(_) => Err(timed_out("q.put on a full queue", timeout)),
                }
            }
            Op::Get { queue, timeout } => {
                let got = self
                    .queue(queue)?
                    .get(deadline(timeout), &self.config.interrupt)?;
                Ok(Reply::Got(got))
            }
            Op::Len { queue } => Ok(Reply::Len(self.queue(queue)?.len() as u64)),
            Op::TaskDone { queue } => self.queue(queue)?.task_done().map(|()| Reply::Unit),
            Op::JoinQueue { queue, timeout } => {
                match self
                    .queue(queue)?
                    .join(deadline(timeout), &self.config.interrupt)?
                {
                    None => Ok(Reply::Unit),
                    Some(left) => Err(timed_out(
                        &format!("q.join ({left} item(s) not yet task_done())"),
                        timeout,
                    )),
                }
            }
            Op::PoolMap { f, items, options } => {
                if let Caller::Worker(w) = caller {
                    if matches!(*w.task(), Task::Pool(_)) {
                        return Err(nested_map());
                    }
                }
                self.pool_map(f, &items, options).map(Reply::Value)
            }
            Op::MapUnordered { f, items, options } => {
                if let Caller::Worker(w) = caller {
                    if matches!(*w.task(), Task::Pool(_)) {
                        return Err(nested_map());
                    }
                }
                self.map_unordered(f, items, options)
            }
            Op::NextResults { results, timeout } => self.next_results(results, timeout),
            Op::Unreferenced(object) => {
                self.unreferenced(object);
                Ok(Reply::Unit)
            }
            Op::Shared { process } => {
                self.share(process);
                Ok(Reply::Unit)
            }
            Op::CloseResults { results } => {
                self.close_results(results);
                Ok(Reply::Unit)
            }
            Op::Send { to, value } => {
                let to = self.process_handle(to)?;
                let sent = self.actors.send(to, value, &self.config.interrupt)?;
                Ok(Reply::Bool(sent))
            }
            Op::Recv { timeout } => {
                let got = self
                    .mailbox(caller)?
                    .get(deadline(timeout), &self.config.interrupt)?;
                Ok(Reply::Got(got))
            }
            Op::Register { name, process } => {
                self.share(process); // whereis() hands out handles nobody counts
                let process = self.process_handle(process)?;
                self.actors.register(name, process).map(|()| Reply::Unit)
            }
            Op::Whereis { name } => Ok(Reply::Value(self.actors.whereis(&name).map_or(
                Value::Unit,
                |p| Value::Process {
                    id: p.id,
                    pid: p.pid,
                },
            ))),
            Op::Watch { process, link, on } => self.watch(caller, process, link, on),
            Op::TrapExits(on) => {
                self.actors.trap_exits(caller.process()?.id, on);
                Ok(Reply::Unit)
            }
            Op::NewSync { kind, size } => Ok(Reply::Id(self.new_sync(kind, size).0)),
            Op::NewCondition { lock } => self.new_condition(lock),
            Op::Sync { id, action } => self.sync_action(caller, id, action),
            Op::Submit { f, args } => {
                let parent = caller.process().unwrap_or_else(|_| main_process());
                let id = self.id();
                let call = futures::Call { f, args, parent };
                let starts = self
                    .executor
                    .submit(id, call, &self.config.interrupt, || self.id())?;
                self.start_futures(starts);
                Ok(Reply::Id(id))
            }
            Op::Await {
                future,
                timeout,
                take,
            } => self.await_future(future, timeout, take),
            Op::IsDone { future } => self.executor.is_done(future).map(Reply::Bool),
            Op::Cancel { future } => self.executor.cancel(future).map(Reply::Bool),
            Op::WaitAny { futures, timeout } => self
                .executor
                .wait_any(&futures, deadline(timeout), &self.config.interrupt)?
                .map(Reply::Id)
                .ok_or_else(|| timed_out("wait_any", timeout)),
        }
    }

    /// The caller's own mailbox.
    fn mailbox(&self, caller: &Caller) -> Result<Arc<Queue>, Error> {
        let me = caller.process()?;
        self.actors
            .mailbox(me.id)
            .ok_or_else(|| Error::InvalidArgument(format!("process {} has ended", me.pid)))
    }

    /// A process handle from its id (0 is the main script).
    fn process_handle(&self, id: u64) -> Result<ProcessHandle, Error> {
        if id == MAIN {
            return Ok(main_process());
        }
        Ok(ProcessHandle::new(id, self.process(id)?.pid()))
    }

    /// `monitor`, `link` and their undoing. The main script never ends before the others, so
    /// watching it does nothing.
    fn watch(&self, caller: &Caller, process: u64, link: bool, on: bool) -> Result<Reply, Error> {
        let by = caller.process()?;
        if process == MAIN || process == by.id {
            return Ok(Reply::Unit);
        }
        let slot = self.process(process)?;
        let target = ProcessHandle::new(process, slot.pid());
        let doomed = self.actors.watch(by, target.clone(), link, on, || {
            slot.ending().map(|reason| Ending {
                process: target.clone(),
                reason,
            })
        });
        if on {
            slot.observe(); // its end will be told, even if it came first
            slot.share(); // in a notice carrying a handle nobody counts
        }
        self.doom(doomed);
        Ok(Reply::Unit)
    }

    fn sync_action(&self, caller: &Caller, id: u64, action: SyncAction) -> Result<Reply, Error> {
        let object = self.sync_object(id)?;
        let owner = caller.owner();
        let timeout = match action {
            SyncAction::Acquire { timeout } | SyncAction::Wait { timeout } => timeout,
            _ => None,
        };
        let asker = Asker {
            owner,
            deadline: deadline(timeout),
            interrupt: &self.config.interrupt,
            alive: &|| self.is_alive(owner),
        };
        object.act(action, &asker)
    }

    fn sync_object(&self, id: u64) -> Result<Arc<SyncObject>, Error> {
        lock(&self.syncs).get(&id).cloned().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no lock, semaphore, condition, event or barrier with id {id}"
            ))
        })
    }

    /// `condition()` over a new re-entrant lock, or `condition(lock)`.
    fn new_condition(&self, lock_id: Option<u64>) -> Result<Reply, Error> {
        let under = match lock_id {
            Some(id) => self.sync_object(id)?,
            None => self.new_sync(HandleKind::RLock, 1).1,
        };
        if !matches!(under.kind(), HandleKind::Lock | HandleKind::RLock) {
            return Err(Error::InvalidArgument(format!(
                "condition(lock) needs a lock() or an rlock(), got a {:?}",
                under.kind()
            )));
        }
        let id = self.id();
        let condition = self.woken(Arc::new(SyncObject::condition(under)));
        lock(&self.syncs).insert(id, condition);
        Ok(Reply::Id(id))
    }

    fn new_sync(&self, kind: HandleKind, size: u64) -> (u64, Arc<SyncObject>) {
        let id = self.id();
        let object = self.woken(Arc::new(SyncObject::new(kind, size)));
        lock(&self.syncs).insert(id, object.clone());
        (id, object)
    }

    /// Whether the holder of a permit is still there to release it.
    fn is_alive(&self, owner: Owner) -> bool {
        match owner {
            Owner::Process(MAIN) => true,
            Owner::Process(id) => self.process(id).is_ok_and(|p| p.ending().is_none()),
            Owner::Worker(id) => lock(&self.workers)
                .get(&id)
                .is_some_and(|w| *w.task() != Task::Dead),
        }
    }

    fn await_future(&self, future: u64, timeout: Option<f64>, take: bool) -> Result<Reply, Error> {
        let settled = self
            .executor
            .settle(future, deadline(timeout), &self.config.interrupt)?
            .ok_or_else(|| timed_out("fut.get", timeout))?;
        if take {
            self.executor.forget(future);
        }
        match settled {
            Settled::Process(id) => {
                let slot = self.process(id)?;
                if take {
                    lock(&self.procs).remove(&id);
                }
                slot.join(None, &self.config.interrupt).map(Reply::Value)
            }
            Settled::Cancelled => Err(Error::InvalidArgument(
                "the future was cancelled before it started".into(),
            )),
            Settled::Failed(why) => Err(Error::WorkerStart(why)),
        }
    }

    /// A process ended: tell its monitors and links, end the processes linked to it, free what it
    /// held, and start the next future if it ran one.
    fn process_ended(self: &Arc<Self>, id: u64) {
        let Ok(slot) = self.process(id) else {
            return;
        };
        let Some(reason) = slot.ending() else {
            return;
        };
        let process = ProcessHandle::new(id, slot.pid());
        if self.actors.is_watched(id) {
            slot.observe();
        }
        self.doom(self.actors.ended(&Ending { process, reason }));
        self.forget_owner(Owner::Process(id));
        let (starts, unreferenced) = self.executor.process_ended(id, || self.id());
        self.start_futures(starts);
        if unreferenced {
            self.unreferenced(Object::Process(id));
        }
        self.forget_if_done(id);
    }

    /// The main script holds no handle to `object` any more: free its record once it is done.
    fn unreferenced(&self, object: Object) {
        match object {
            Object::Process(id) => {
                if let Ok(slot) = self.process(id) {
                    slot.unreference();
                }
                self.forget_if_done(id);
            }
            Object::Queue(id) => {
                lock(&self.queues).remove(&id);
            }
            Object::Sync(id) => {
                lock(&self.syncs).remove(&id);
            }
            Object::Future(id) => {
                if let Some(process) = self.executor.unreferenced(id) {
                    self.unreferenced(Object::Process(process));
                }
            }
        }
    }

    /// Keeps the record of process `id` for the rest of the run: a handle to it was made where
    /// nobody counts it.
    fn share(&self, id: u64) {
        if let Ok(slot) = self.process(id) {
            slot.share();
        }
    }

    /// Frees the record of process `id` if nothing can ask about it any more.
    fn forget_if_done(&self, id: u64) {
        let mut procs = lock(&self.procs);
        if procs.get(&id).is_some_and(|slot| slot.is_forgettable()) {
            procs.remove(&id);
        }
    }

    /// Ends processes whose linked process ended abnormally.
    fn doom(&self, doomed: Doomed) {
        for (id, why) in doomed {
            if id == MAIN {
                self.config.interrupt.end_by_link(why);
            } else if let Ok(slot) = self.process(id) {
                slot.terminate(why);
            }
        }
    }

    fn forget_owner(&self, owner: Owner) {
        let objects: Vec<_> = lock(&self.syncs).values().cloned().collect();
        for object in objects {
            object.forget(owner);
        }
    }

    fn start_futures(self: &Arc<Self>, starts: Starts) {
        for (future, process, call) in starts {
            if let Err(e) = self.spawn(process, call.f, call.args, call.parent) {
                self.executor.failed(future, process, e.to_string());
            }
        }
    }

    /// Serves a worker's request (`seq` to answer, `None` for a post) without blocking this reader
    /// thread: what can finish now is done inline, a wait is parked on its object, and the few
    /// long operations (starting processes, a map) run on a thread of their own.
    fn serve(self: &Arc<Self>, worker: &Arc<Worker>, seq: Option<u64>, mut op: Op) {
        let caller = Caller::Worker(worker.clone());
        match (seq, serving(&mut op)) {
            (Some(seq), Serving::Waits) => match op {
                Op::Get { timeout: None, .. } | Op::Recv { timeout: None } => {
                    self.get_or_park(worker, seq, self.source(&op, &caller));
                }
                op => self.park(worker, seq, op),
            },
            (_, Serving::Long) => {
                let (hub, worker) = (self.clone(), worker.clone());
                let spawned = thread::Builder::new()
                    .name("mpscript-request".into())
                    .spawn(move || {
                        let result = hub.handle(op, &caller);
                        hub.answer(&worker, seq, result, None);
                    });
                if let Err(e) = spawned {
                    self.notice(&format!("cannot serve a worker request: {e}"));
                }
            }
            _ => {
                // Where a value taken for this request goes back if it cannot be sent.
                let source = self.source(&op, &caller).ok();
                let result = self.handle(op, &caller);
                self.answer(worker, seq, result, source.as_deref());
            }
        }
    }

    /// The queue a `get` or `recv` takes its value from.
    fn source(&self, op: &Op, caller: &Caller) -> Result<Arc<Queue>, Error> {
        match op {
            Op::Get { queue, .. } => self.queue(*queue),
            Op::Recv { .. } => self.mailbox(caller),
            _ => Err(Error::InvalidArgument("this request takes no value".into())),
        }
    }

    /// A worker's untimed `get`: answered now, or by the `put` that fills the queue.
    fn get_or_park(&self, worker: &Arc<Worker>, seq: u64, queue: Result<Arc<Queue>, Error>) {
        let q = match queue {
            Ok(q) => q,
            Err(e) => {
                send_reply(worker, seq, Err(e));
                return;
            }
        };
        let to = worker.clone();
        // A value that cannot reach this worker stays in the queue: either it hung up, or the
        // value is over the frame limit (then its get fails, saying so).
        let deliver =
            Box::new(
                move |value| match send_reply(&to, seq, Ok(Reply::Got(Some(value)))) {
                    Some(Reply::Got(Some(value))) => Err(value),
                    _ => Ok(()),
                },
            );
        if let Some(value) = q.get_or_park(worker.id, deliver) {
            self.answer(worker, Some(seq), Ok(Reply::Got(Some(value))), Some(&q));
        }
    }

    fn process(&self, id: u64) -> Result<Arc<ProcSlot>, Error> {
        if id == MAIN {
            return Err(Error::InvalidArgument(
                "the main process cannot be joined, killed or queried from a script".into(),
            ));
        }
        lock(&self.procs)
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no process with id {id} in this run")))
    }

    fn queue(&self, id: u64) -> Result<Arc<Queue>, Error> {
        lock(&self.queues)
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no queue with id {id} in this run")))
    }

    /// Starts `f(args...)` as process `id`, its mailbox open before anyone can know the id.
    fn spawn(
        self: &Arc<Self>,
        id: u64,
        f: FnValue,
        args: Vec<Value>,
        parent: ProcessHandle,
    ) -> Result<Reply, Error> {
        self.actors.open(id);
        let call = ToWorker::Call {
            call: id,
            f,
            args,
            parent,
        };
        let started = self.start_call(id, &call);
        if started.is_err() {
            self.actors.close(id);
        }
        started
    }

    fn start_call(self: &Arc<Self>, id: u64, call: &ToWorker) -> Result<Reply, Error> {
        loop {
            let worker = self.take_spare()?;
            let slot = self.woken(Arc::new(ProcSlot::new(worker.clone())));
            lock(&self.procs).insert(id, slot);
            if !worker.assign(Task::Process(id)) {
                continue; // it died while idle; take another
            }
            match worker.link.send(call) {
                // A worker that hung up is dying; its reader thread records that in the slot.
                Ok(()) | Err(Error::Disconnected { .. }) => {}
                // The call cannot be sent at all (over the frame limit): nothing started.
                Err(e) => {
                    lock(&self.procs).remove(&id);
                    self.release_spare(&worker);
                    return Err(e);
                }
            }
            return Ok(Reply::Process {
                id,
                pid: worker.pid,
            });
        }
    }

    fn take_spare(self: &Arc<Self>) -> Result<Arc<Worker>, Error> {
        if let Some(w) = lock(&self.spares).pop() {
            return Ok(w);
        }
        Ok(self.start_workers(1)?.remove(0))
    }

    /// A worker finished a spawned call: keep it warm for the next `spawn`, or let it go.
    fn release_spare(&self, worker: &Arc<Worker>) {
        let mut spares = lock(&self.spares);
        if spares.len() < spare_limit() && worker.assign(Task::Idle) {
            spares.push(worker.clone());
        } else {
            worker.request_shutdown();
        }
    }

    fn start_workers(self: &Arc<Self>, count: usize) -> Result<Vec<Arc<Worker>>, Error> {
        let mut program = self.config.program.clone();
        program.chunks = lock(&self.chunks).clone();
        let known = program.chunks.len();
        let started = self.config.transport.start(count, &program)?;
        let mut started_arcs = Vec::with_capacity(count);
        for link in started {
            let worker = Arc::new(Worker::new(self.id(), link));
            lock(&self.workers).insert(worker.id, worker.clone());
            let (hub, w) = (self.clone(), worker.clone());
            thread::Builder::new()
                .name(format!("mpscript-worker-{}", worker.pid))
                .spawn(move || hub.read_loop(&w))
                .map_err(|e| Error::io("starting a reader thread", e))?;
            started_arcs.push(worker);
        }
        // Chunks added while these workers started (a broadcast may have missed them).
        for chunk in &lock(&self.chunks)[known..] {
            for w in &started_arcs {
                let _ = w.link.send(&ToWorker::AddChunk(chunk.clone()));
            }
        }
        Ok(started_arcs)
    }

    fn pool_map(
        self: &Arc<Self>,
        f: FnValue,
        items: &Items,
        options: MapOptions,
    ) -> Result<Value, Error> {
        if items.is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        // Held for the whole call: maps from several processes take turns on the one pool.
        let mut pool = lock(&self.pool);
        let workers = self.take_pool_workers(&mut pool, options, items.len())?;
        let (result, mut kept) = self.run_map(f, items, options, workers, None);
        kept.append(&mut pool);
        *pool = kept;
        result
    }

    /// `pool_map_unordered`: the map runs on its own thread, handing results to the script as
    /// chunks finish; its workers leave the pool until it ends, so the loop body may `pool_map`.
    fn map_unordered(
        self: &Arc<Self>,
        f: FnValue,
        items: Items,
        options: MapOptions,
    ) -> Result<Reply, Error> {
        let workers = if items.is_empty() {
            Vec::new()
        } else {
            self.take_pool_workers(&mut lock(&self.pool), options, items.len())?
        };
        let id = self.id();
        let results = self.woken(Arc::new(Results::default()));
        lock(&self.results).insert(id, results.clone());
        let hub = self.clone();
        let spawned = thread::Builder::new()
            .name("mpscript-unordered".into())
            .spawn(move || {
                if workers.is_empty() {
                    return results.finish(Ok(()));
                }
                let (result, kept) =
                    hub.run_map(f, &items, options, workers, Some(results.clone()));
                lock(&hub.pool).extend(kept);
                results.finish(result.map(|_| ()));
            });
        spawned.map_err(|e| Error::io("starting a pool_map_unordered thread", e))?;
        Ok(Reply::Id(id))
    }

    /// The next results of a `pool_map_unordered`.
    fn next_results(&self, id: u64, timeout: Option<f64>) -> Result<Reply, Error> {
        let results = lock(&self.results)
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no pool_map_unordered with id {id}")))?;
        match results.next(deadline(timeout), &self.config.interrupt) {
            Ok(Next::Batch(batch)) => Ok(Reply::Got(Some(batch))),
            Ok(Next::TimedOut) => Err(timed_out("pool_map_unordered", timeout)),
            ended => {
                lock(&self.results).remove(&id);
                ended.map(|_| Reply::Got(None))
            }
        }
    }

    /// The loop over a `pool_map_unordered` ended early: stop its map and forget it.
    fn close_results(&self, id: u64) {
        if let Some(results) = lock(&self.results).remove(&id) {
            results.close();
        }
    }

    /// Takes the workers a map wants out of `pool`, starting more if it has too few.
    fn take_pool_workers(
        self: &Arc<Self>,
        pool: &mut Vec<Arc<Worker>>,
        options: MapOptions,
        items: usize,
    ) -> Result<Vec<Arc<Worker>>, Error> {
        let want = options
            .workers
            .unwrap_or(self.config.workers)
            .min(items)
            .max(1);
        pool.retain(|w| *w.task() != Task::Dead);
        if pool.len() < want {
            let more = self.start_workers(want - pool.len())?;
            pool.extend(more);
        }
        Ok(pool.drain(..want).collect())
    }

    /// Runs one map on `workers`; gives its result and the workers still alive, idle again.
    fn run_map(
        self: &Arc<Self>,
        f: FnValue,
        items: &Items,
        options: MapOptions,
        workers: Vec<Arc<Worker>>,
        sink: Option<Arc<Results>>,
    ) -> (Result<Value, Error>, Vec<Arc<Worker>>) {
        let job = self.id();
        let (tx, events) = unbounded();
        lock(&self.jobs).insert(job, tx);
        let setup = MapSetup {
            f,
            timeout: options.timeout,
            spread: options.spread,
        };
        let mut run = MapRun::new(self, job, setup, items, options, workers, sink);
        let result = run.run(&events);
        lock(&self.jobs).remove(&job);
        let kept = run.into_workers();
        // A permit taken by an item that failed or timed out must not outlive the call.
        for w in &kept {
            self.forget_owner(Owner::Worker(w.id));
        }
        (result, kept)
    }

    fn read_loop(self: &Arc<Self>, worker: &Arc<Worker>) {
        loop {
            match worker.link.recv() {
                Ok(message) => self.on_message(worker, message),
                Err(e) => return self.on_gone(worker, &e),
            }
        }
    }

    fn on_message(self: &Arc<Self>, worker: &Arc<Worker>, message: FromWorker) {
        match message {
            FromWorker::Output { stream, text } => self.write(stream, &text),
            FromWorker::Done { call, outcome } => {
                if let Ok(slot) = self.process(call) {
                    slot.finish(outcome, || self.release_spare(worker));
                    self.process_ended(call);
                    slot.wake();
                }
            }
            FromWorker::MapPart { job, chunk, values } => {
                self.tell_job(job, JobEvent::Part { chunk, values })
            }
            FromWorker::MapDone { job, chunk, result } => {
                self.tell_job(job, JobEvent::Done { chunk, result })
            }
            FromWorker::Request { seq, op } => self.serve(worker, Some(seq), op),
            FromWorker::Post { op } => self.serve(worker, None, op),
            other => {
                self.notice(&format!(
                    "closing {}: unexpected message {other:?}",
                    worker.link.label()
                ));
                worker.link.kill();
            }
        }
    }

    /// The connection ended: reap the process and fail whatever it was running.
    fn on_gone(self: &Arc<Self>, worker: &Arc<Worker>, error: &Error) {
        if !error.is_disconnected() {
            self.notice(&format!("closing {}: {error}", worker.link.label()));
            worker.link.kill();
        }
        let task = worker.mark_dead();
        let mut death = worker.link.reap(EXIT_GRACE);
        if !error.is_disconnected() {
            death.status = format!("stopped after it sent a bad message ({error})");
        } else if let Some(words) = worker.link.last_words() {
            death.status = format!("{} after it {words}", death.status);
        }
        lock(&self.workers).remove(&worker.id);
        parked::forget(&**worker);
        lock(&self.spares).retain(|w| w.id != worker.id);
        for q in lock(&self.queues).values() {
            q.forget(worker.id);
        }
        match task {
            Task::Process(id) => {
                if let Ok(slot) = self.process(id) {
                    slot.died(death);
                    self.process_ended(id);
                    slot.wake();
                }
            }
            Task::Pool(job) => {
                self.forget_owner(Owner::Worker(worker.id));
                self.tell_job(
                    job,
                    JobEvent::Died {
                        worker: worker.id,
                        death,
                    },
                )
            }
            Task::Idle | Task::Dead => {}
        }
    }

    fn tell_job(&self, job: u64, event: JobEvent) {
        if let Some(tx) = lock(&self.jobs).get(&job) {
            let _ = tx.send(event);
        }
    }

    fn shutdown(&self) {
        parked::forget(self);
        for results in lock(&self.results).drain().map(|(_, r)| r) {
            results.close();
        }
        let workers: Vec<_> = lock(&self.workers).values().cloned().collect();
        for w in &workers {
            // Idle workers leave on request; work still running is abandoned, so stop it now.
            match *w.task() {
                Task::Idle | Task::Dead => w.request_shutdown(),
                Task::Process(_) | Task::Pool(_) => w.link.kill(),
            }
        }
        let deadline = Instant::now() + EXIT_GRACE;
        for w in &workers {
            w.link
                .reap(deadline.saturating_duration_since(Instant::now()));
        }
        lock(&self.spares).clear();
        lock(&self.pool).clear();
    }
}
