//! The parent side: owns every worker process, queue and spawned-process record, and serves the
//! builtins of the main script and of every worker.

mod launch;
mod pool;
mod process;
mod progress;
mod queue;
mod wait;
mod worker;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{Sender, unbounded};

use self::{
    launch::Launcher,
    pool::{JobEvent, MapRun},
    process::ProcSlot,
    queue::{Put, Queue},
    worker::{Task, Worker},
};
use crate::{
    Error, Interrupt, Value,
    builtins::Backend,
    runtime::OutputSink,
    value::FnValue,
    wire::{FromWorker, Items, MapOptions, MapSetup, Op, Program, Reply, ToWorker},
};

/// Idle warm workers kept for `spawn` beyond this are shut down.
fn spare_limit() -> usize {
    crate::cpu_count().max(2)
}

/// How long a worker gets to exit after being asked, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// What the hub needs to start workers.
pub(crate) struct HubConfig {
    pub(crate) exe: PathBuf,
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
    launcher: Launcher,
    config: HubConfig,
    workers: Mutex<HashMap<u64, Arc<Worker>>>,
    spares: Mutex<Vec<Arc<Worker>>>,
    pool: Mutex<Vec<Arc<Worker>>>,
    procs: Mutex<HashMap<u64, Arc<ProcSlot>>>,
    jobs: Mutex<HashMap<u64, Sender<JobEvent>>>,
    queues: Mutex<HashMap<u64, Arc<Queue>>>,
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

fn send_reply(worker: &Worker, seq: Option<u64>, result: Result<Reply, Error>) {
    match (seq, result) {
        (Some(seq), result) => {
            let result = result.map_err(|e| e.to_failure());
            let _ = worker.conn.send(&ToWorker::Reply { seq, result });
        }
        (None, Ok(_)) => {}
        (None, Err(e)) => eprintln!("mpscript: a post from {} failed: {e}", worker.conn.peer()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub(crate) fn new(config: HubConfig) -> Result<Hub, Error> {
        // Started as a worker, yet running a script of its own: the host's main skipped the worker
        // entry point. Starting workers from here would repeat that without end.
        if std::env::var_os(crate::worker::SOCKET_ENV).is_some() {
            return Err(Error::WorkerStart(
                "this process was started as an mpscript worker, but its main did not call \
                 run_worker_if_requested() first; it will not start workers of its own"
                    .into(),
            ));
        }
        Ok(Hub {
            inner: Arc::new(Inner {
                launcher: Launcher::new(config.exe.clone())?,
                chunks: Mutex::new(config.program.chunks.clone()),
                config,
                workers: Mutex::default(),
                spares: Mutex::default(),
                pool: Mutex::default(),
                procs: Mutex::default(),
                jobs: Mutex::default(),
                queues: Mutex::default(),
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
            let _ = w.conn.send(&message);
        }
        chunks.push(chunk);
    }

    /// The OS pids of the live worker processes.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = lock(&self.inner.workers).values().map(|w| w.pid).collect();
        pids.sort_unstable();
        pids
    }

    /// Waits for spawned processes that are still running, as Python waits for non-daemon ones.
    pub(crate) fn wait_for_processes(&self) -> Result<(), Error> {
        let running: Vec<_> = lock(&self.inner.procs).values().cloned().collect();
        for p in running {
            if let Err(e) = p.join(None, &self.inner.config.interrupt) {
                if e.is_interrupted() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

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

    fn handle(self: &Arc<Self>, op: Op, caller: &Caller) -> Result<Reply, Error> {
        match op {
            Op::Spawn { f, args } => self.spawn(f, args),
            Op::Join { process, timeout } => {
                let timeout = timeout.map(Duration::from_secs_f64);
                self.process(process)?
                    .join(timeout, &self.config.interrupt)
                    .map(Reply::Value)
            }
            Op::Status { process } => Ok(Reply::Status {
                exit_code: self.process(process)?.exit_code(),
            }),
            Op::Kill { process } => {
                self.process(process)?.kill();
                Ok(Reply::Unit)
            }
            Op::NewQueue { maxsize } => {
                let id = self.id();
                let queue = Queue::new(maxsize.map(|m| m as usize));
                lock(&self.queues).insert(id, Arc::new(queue));
                Ok(Reply::Queue(id))
            }
            Op::Put {
                queue,
                value,
                timeout,
            } => {
                let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
                match self
                    .queue(queue)?
                    .put(value, deadline, &self.config.interrupt)?
                {
                    Put::Done => Ok(Reply::Unit),
                    Put::Full(_) => Err(Error::Timeout {
                        what: "q.put on a full queue".into(),
                        after: Duration::from_secs_f64(timeout.unwrap_or_default()),
                    }),
                }
            }
            Op::Get { queue, timeout } => {
                let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
                let got = self.queue(queue)?.get(deadline, &self.config.interrupt)?;
                Ok(Reply::Got(got))
            }
            Op::Len { queue } => Ok(Reply::Len(self.queue(queue)?.len() as u64)),
            Op::PoolMap { f, items, options } => {
                if let Caller::Worker(w) = caller {
                    if matches!(*w.task(), Task::Pool(_)) {
                        return Err(Error::InvalidArgument(
                            "pool_map cannot be called from a function running in pool_map \
                             (the pool would wait on itself); use spawn there instead"
                                .into(),
                        ));
                    }
                }
                self.pool_map(f, &items, options).map(Reply::Value)
            }
        }
    }

    /// Serves a worker's request (`seq` to answer, `None` for a post) without blocking this reader
    /// thread: what can finish now is done inline, anything that has to wait on its own thread.
    fn serve(self: &Arc<Self>, worker: &Arc<Worker>, seq: Option<u64>, op: Op) {
        if let (
            Some(seq),
            Op::Get {
                queue,
                timeout: None,
            },
        ) = (seq, &op)
        {
            return self.get_or_park(worker, seq, *queue);
        }
        let caller = Caller::Worker(worker.clone());
        let op = match self.try_now(op, &caller) {
            Ok(result) => return send_reply(worker, seq, result),
            Err(op) => op,
        };
        let (hub, worker) = (self.clone(), worker.clone());
        let spawned = thread::Builder::new()
            .name("mpscript-request".into())
            .spawn(move || send_reply(&worker, seq, hub.handle(*op, &caller)));
        if let Err(e) = spawned {
            eprintln!("mpscript: cannot serve a worker request: {e}");
        }
    }

    /// A worker's untimed `get`: answered now, or by the `put` that fills the queue.
    fn get_or_park(&self, worker: &Arc<Worker>, seq: u64, queue: u64) {
        let q = match self.queue(queue) {
            Ok(q) => q,
            Err(e) => return send_reply(worker, Some(seq), Err(e)),
        };
        let to = worker.clone();
        let deliver = Box::new(move |value| {
            let reply = ToWorker::Reply {
                seq,
                result: Ok(Reply::Got(Some(value))),
            };
            match to.conn.send(&reply) {
                Ok(()) => Ok(()),
                Err(_) => match reply {
                    ToWorker::Reply {
                        result: Ok(Reply::Got(Some(value))),
                        ..
                    } => Err(value),
                    _ => unreachable!("built above"),
                },
            }
        });
        if let Some(value) = q.get_or_park(worker.id, deliver) {
            send_reply(worker, Some(seq), Ok(Reply::Got(Some(value))));
        }
    }

    /// Performs `op` if it can complete without waiting; gives it back otherwise.
    fn try_now(self: &Arc<Self>, op: Op, caller: &Caller) -> Result<Result<Reply, Error>, Box<Op>> {
        let now = Some(Instant::now());
        match op {
            Op::NewQueue { .. } | Op::Len { .. } | Op::Status { .. } => Ok(self.handle(op, caller)),
            Op::Get { queue, timeout } => match self.queue(queue) {
                Err(e) => Ok(Err(e)),
                Ok(q) => match q.get(now, &self.config.interrupt) {
                    Ok(Some(v)) => Ok(Ok(Reply::Got(Some(v)))),
                    Ok(None) if timeout == Some(0.0) => Ok(Ok(Reply::Got(None))),
                    Ok(None) => Err(Box::new(Op::Get { queue, timeout })),
                    Err(e) => Ok(Err(e)),
                },
            },
            Op::Put {
                queue,
                value,
                timeout,
            } => match self.queue(queue) {
                Err(e) => Ok(Err(e)),
                Ok(q) => match q.put(value, now, &self.config.interrupt) {
                    Ok(Put::Done) => Ok(Ok(Reply::Unit)),
                    Ok(Put::Full(value)) => Err(Box::new(Op::Put {
                        queue,
                        value,
                        timeout,
                    })),
                    Err(e) => Ok(Err(e)),
                },
            },
            other => Err(Box::new(other)),
        }
    }

    fn process(&self, id: u64) -> Result<Arc<ProcSlot>, Error> {
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

    fn spawn(self: &Arc<Self>, f: FnValue, args: Vec<Value>) -> Result<Reply, Error> {
        let id = self.id();
        loop {
            let worker = self.take_spare()?;
            let slot = Arc::new(ProcSlot::new(worker.clone()));
            lock(&self.procs).insert(id, slot);
            if !worker.assign(Task::Process(id)) {
                continue; // it died while idle; take another
            }
            let call = ToWorker::Call { call: id, f, args };
            // If the send fails the worker is dying; its reader thread records that in the slot.
            let _ = worker.conn.send(&call);
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
        let started = self.launcher.start(count, &program)?;
        let mut started_arcs = Vec::with_capacity(count);
        for worker in started {
            let worker = Arc::new(worker);
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
                let _ = w.conn.send(&ToWorker::AddChunk(chunk.clone()));
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
        let want = options
            .workers
            .unwrap_or(self.config.workers)
            .min(items.len())
            .max(1);
        let mut pool = lock(&self.pool);
        pool.retain(|w| *w.task() != Task::Dead);
        if pool.len() < want {
            let more = self.start_workers(want - pool.len())?;
            pool.extend(more);
        }
        let job = self.id();
        let (tx, events) = unbounded();
        lock(&self.jobs).insert(job, tx);
        let setup = MapSetup {
            f,
            timeout: options.timeout,
            spread: options.spread,
        };
        let workers = pool.drain(..want).collect();
        let mut run = MapRun::new(self, job, setup, items, options, workers);
        let result = run.run(&events);
        lock(&self.jobs).remove(&job);
        let mut kept = run.into_workers();
        kept.append(&mut pool);
        *pool = kept;
        result
    }

    fn read_loop(self: &Arc<Self>, worker: &Arc<Worker>) {
        let mut reader = worker.conn.reader();
        loop {
            match reader.read::<FromWorker>() {
                Ok(message) => self.on_message(worker, message),
                Err(e) => return self.on_gone(worker, &e),
            }
        }
    }

    fn on_message(self: &Arc<Self>, worker: &Arc<Worker>, message: FromWorker) {
        match message {
            FromWorker::Output { stream, text } => {
                let write = || (self.config.output)(stream, &text);
                match lock(&self.progress_bar).clone() {
                    Some(bar) => bar.suspend(write),
                    None => write(),
                }
            }
            FromWorker::Done { call, outcome } => {
                if let Ok(slot) = self.process(call) {
                    slot.finish(outcome, || self.release_spare(worker));
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
                eprintln!(
                    "mpscript: closing {}: unexpected message {other:?}",
                    worker.conn.peer()
                );
                worker.kill();
            }
        }
    }

    /// The connection ended: reap the process and fail whatever it was running.
    fn on_gone(&self, worker: &Arc<Worker>, error: &Error) {
        if !error.is_disconnected() {
            eprintln!("mpscript: closing {}: {error}", worker.conn.peer());
            worker.kill();
        }
        let task = worker.mark_dead();
        let mut death = worker.reap(EXIT_GRACE);
        if !error.is_disconnected() {
            death.status = format!("stopped after it sent a bad message ({error})");
        }
        lock(&self.workers).remove(&worker.id);
        lock(&self.spares).retain(|w| w.id != worker.id);
        for q in lock(&self.queues).values() {
            q.forget(worker.id);
        }
        match task {
            Task::Process(id) => {
                if let Ok(slot) = self.process(id) {
                    slot.died(death);
                }
            }
            Task::Pool(job) => self.tell_job(
                job,
                JobEvent::Died {
                    worker: worker.id,
                    death,
                },
            ),
            Task::Idle | Task::Dead => {}
        }
    }

    fn tell_job(&self, job: u64, event: JobEvent) {
        if let Some(tx) = lock(&self.jobs).get(&job) {
            let _ = tx.send(event);
        }
    }

    fn shutdown(&self) {
        let workers: Vec<_> = lock(&self.workers).values().cloned().collect();
        for w in &workers {
            // Idle workers leave on request; work still running is abandoned, so stop it now.
            match *w.task() {
                Task::Idle | Task::Dead => w.request_shutdown(),
                Task::Process(_) | Task::Pool(_) => w.kill(),
            }
        }
        let deadline = Instant::now() + EXIT_GRACE;
        for w in &workers {
            w.reap(deadline.saturating_duration_since(Instant::now()));
        }
        lock(&self.spares).clear();
        lock(&self.pool).clear();
    }
}
