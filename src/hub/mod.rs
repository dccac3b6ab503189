//! The parent side: owns every worker process, queue and spawned-process record, and serves the
//! builtins of the main script and of every worker.

mod actors;
mod futures;
mod parked;
mod pool;
mod process;
mod profiling;
mod progress;
mod queue;
mod results;
mod shared_maps;
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

use crossbeam_channel::Sender;

use self::{
    actors::{Actors, MAIN},
    futures::Executor,
    pool::JobEvent,
    process::ProcSlot,
    queue::Queue,
    results::Results,
    sync::{Owner, SyncObject},
    worker::{Task, Worker},
};
use crate::{
    Error, Interrupt,
    builtins::Backend,
    logging::LogSink,
    output::{OutStream, OutputSink},
    stop::Wake,
    transport::Transport,
    value::ProcessHandle,
    wire::{FromWorker, Op, Program, Reply, ToWorker},
};
pub(crate) use profiling::ProfileBook;

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
    /// Where log records go, the workers' too.
    pub(crate) log: LogSink,
    pub(crate) interrupt: Interrupt,
    /// In a profiled run, where workers' records and the maps' times are kept.
    pub(crate) profile: Option<Arc<ProfileBook>>,
    /// Where `pool_map` also finds workers: the slots of a cluster's agents.
    pub(crate) cluster: Option<Arc<crate::cluster::ClusterTransport>>,
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
    shared_maps: Mutex<HashMap<u64, shared_maps::SharedMap>>,
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
    /// The `parent()` of a process the caller starts: itself, or the main script for a function
    /// running in `pool_map`.
    fn parent_of_new(&self) -> ProcessHandle {
        self.process().unwrap_or_else(|_| main_process())
    }

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
                shared_maps: Mutex::default(),
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

    /// Performs `op` for `caller`: one line per request, each handled next to the state it touches
    /// (processes in `process.rs`, queues in `queue.rs`, maps in `pool.rs`, messages in
    /// `actors.rs`, shared objects in `sync.rs`, futures in `futures.rs`).
    fn handle(self: &Arc<Self>, op: Op, caller: &Caller) -> Result<Reply, Error> {
        match op {
            Op::Spawn { f, args, at } => self.spawn_for(caller, f, args, at),
            Op::Join { process, timeout } => self.join(process, timeout),
            Op::Status { process } => self.status(process),
            Op::Kill { process, signal } => self.kill(process, signal),
            Op::Shared { process } => {
                self.share(process);
                Ok(Reply::Unit)
            }
            Op::Unreferenced(object) => {
                self.unreferenced(object);
                Ok(Reply::Unit)
            }
            Op::NewQueue { maxsize, joinable } => Ok(self.new_queue(maxsize, joinable)),
            Op::Put {
                queue,
                value,
                timeout,
            } => self.put(queue, value, timeout),
            Op::Get { queue, timeout } => self.get(queue, timeout),
            Op::Len { queue } => Ok(Reply::Len(self.queue(queue)?.len() as u64)),
            Op::TaskDone { queue } => self.queue(queue)?.task_done().map(|()| Reply::Unit),
            Op::JoinQueue { queue, timeout } => self.join_queue(queue, timeout),
            Op::PoolMap {
                f,
                items,
                options,
                at,
            } => self.pool_map_for(caller, f, &items, options, at),
            Op::MapUnordered {
                f,
                items,
                options,
                at,
            } => self.map_unordered_for(caller, f, items, options, at),
            Op::NextResults { results, timeout } => self.next_results(results, timeout),
            Op::CloseResults { results } => {
                self.close_results(results);
                Ok(Reply::Unit)
            }
            Op::Send { to, value } => self.send(to, value),
            Op::Recv { timeout } => self.recv(caller, timeout),
            Op::Register { name, process } => self.register(name, process),
            Op::Whereis { name } => Ok(self.whereis(&name)),
            Op::Watch { process, link, on } => self.watch(caller, process, link, on),
            Op::TrapExits(on) => self.trap_exits(caller, on),
            Op::NewSync { kind, size } => Ok(Reply::Id(self.new_sync(kind, size))),
            Op::NewCondition { lock } => self.new_condition(lock),
            Op::Sync { id, action } => self.sync_action(caller, id, action),
            Op::Submit { f, args, at } => self.submit(caller, f, args, at),
            Op::Await {
                future,
                timeout,
                take,
            } => self.await_future(future, timeout, take),
            Op::IsDone { future } => self.executor.is_done(future).map(Reply::Bool),
            Op::Cancel { future } => self.executor.cancel(future).map(Reply::Bool),
            Op::WaitAny { futures, timeout } => self.wait_any(&futures, timeout),
            Op::NewSharedMap => Ok(self.new_shared_map()),
            Op::SharedMap { id, action } => self.shared_map(id, action),
            Op::Log(record) => {
                (self.config.log)(&record);
                Ok(Reply::Unit)
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
                    let source = self.source(&op, &caller).expect("a get has a source");
                    self.get_or_park(worker, seq, source);
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
                let source = self.source(&op, &caller).and_then(Result::ok);
                let result = self.handle(op, &caller);
                self.answer(worker, seq, result, source.as_deref());
            }
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
        self.start_on(&*self.config.transport, count)
    }

    /// Starts `count` workers through `transport` (local processes, or cluster slots).
    fn start_on(
        self: &Arc<Self>,
        transport: &dyn Transport,
        count: usize,
    ) -> Result<Vec<Arc<Worker>>, Error> {
        let mut program = self.config.program.clone();
        program.chunks = lock(&self.chunks).clone();
        let known = program.chunks.len();
        let started = transport.start(count, &program)?;
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
                if let Some(book) = &self.config.profile {
                    book.finished(call);
                }
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
            FromWorker::Profile(record) if self.config.profile.is_some() => {
                if let Some(book) = &self.config.profile {
                    book.report(worker.id, *record);
                }
            }
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
        if let Some(book) = &self.config.profile {
            book.gone(worker.id);
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
        if self.config.profile.is_some() {
            // Each reader thread hands its worker's record to the book, then forgets the worker.
            while !lock(&self.workers).is_empty() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(2));
            }
        }
        lock(&self.spares).clear();
        lock(&self.pool).clear();
    }
}
