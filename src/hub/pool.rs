//! `pool_map` scheduling: guided chunks that shrink as work runs out (balancing uneven items without
//! per-item round trips), two chunks in flight per worker, results reassembled in input order.
//! A worker that dies fails exactly the item it was running (or retries it); everything else it
//! held is run again elsewhere, and a replacement worker joins the pool.

use crate::locks::lock;
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{
    Caller, Inner, deadline, profiling,
    progress::MapProgress,
    results::{Next, Results},
    sync::Owner,
    timed_out,
    worker::{Task, Worker},
};
use crate::{
    Error, Value,
    clock::now_ns,
    cluster::ClusterTransport,
    profile::{Frame, MapCall, Work},
    transport::Death,
    value::FnValue,
    wire::{ItemFailure, Items, MapOptions, MapSetup, Reply, ToWorker},
};

use std::thread;

use crossbeam_channel::unbounded;

/// What the reader threads tell a running `pool_map`.
pub(crate) enum JobEvent {
    /// A chunk's next results, while it runs.
    Part { chunk: u32, values: Value },
    /// A chunk finished.
    Done {
        chunk: u32,
        result: Result<Value, ItemFailure>,
    },
    /// A worker of this job died.
    Died { worker: u64, death: Death },
}

/// Chunks queued ahead per worker, so a worker never idles for a round trip. A
/// `pool_map_unordered` queues none: a result must not wait behind another worker's slow chunk.
const IN_FLIGHT: usize = 2;
/// How often the scheduler looks at interrupts and time limits while it waits.
const TICK: Duration = Duration::from_millis(20);
/// About how many bytes of items one chunk carries at most, so big values (1 MiB strings) stream
/// through the workers instead of queueing in a few huge messages.
const CHUNK_BYTES: usize = 1 << 20;
/// How long a call past its time limit gets to stop by itself before its worker is killed.
const KILL_GRACE: Duration = Duration::from_secs(1);

#[derive(PartialEq)]
enum ChunkState {
    Running,
    /// All its items (`start..end`, trimmed after a death) have results.
    Done,
    /// Abandoned with no results; its items were requeued or failed.
    Dropped,
}

struct Chunk {
    start: usize,
    end: usize,
    state: ChunkState,
    parts: Vec<Value>,
    received: usize,
}

struct Slot {
    worker: Arc<Worker>,
    /// Chunk ids in the order the worker runs them.
    in_flight: VecDeque<usize>,
    set_up: bool,
    alive: bool,
    /// The item whose time limit made us kill this worker.
    killed_for: Option<usize>,
}

/// One `pool_map` call.
pub(crate) struct MapRun<'a> {
    hub: &'a Arc<Inner>,
    job: u64,
    setup: MapSetup,
    items: &'a Items,
    options: MapOptions,
    slots: Vec<Slot>,
    chunks: Vec<Chunk>,
    /// The first item never handed out.
    next: usize,
    /// Ranges to hand out again (retries first).
    requeued: VecDeque<(usize, usize)>,
    /// How often each item lost its worker.
    attempts: HashMap<usize, u32>,
    failure: Option<(usize, Error)>,
    progress: MapProgress,
    /// `pool_map_unordered`: results go here as they come, not into the chunks.
    sink: Option<Arc<Results>>,
}

impl<'a> MapRun<'a> {
    pub(crate) fn new(
        hub: &'a Arc<Inner>,
        job: u64,
        setup: MapSetup,
        items: &'a Items,
        options: MapOptions,
        workers: Vec<Arc<Worker>>,
        sink: Option<Arc<Results>>,
    ) -> Self {
        let slots = workers
            .into_iter()
            .map(|worker| Slot {
                alive: worker.assign(Task::Pool(job)),
                worker,
                in_flight: VecDeque::new(),
                set_up: false,
                killed_for: None,
            })
            .collect();
        MapRun {
            hub,
            job,
            setup,
            items,
            options,
            slots,
            chunks: Vec::new(),
            next: 0,
            requeued: VecDeque::new(),
            attempts: HashMap::new(),
            failure: None,
            progress: MapProgress::new(items.len(), options.progress),
            sink,
        }
    }

    fn in_flight(&self) -> usize {
        match self.sink {
            Some(_) => 1,
            None => IN_FLIGHT,
        }
    }

    fn builtin(&self) -> &'static str {
        match self.sink {
            Some(_) => "pool_map_unordered",
            None => "pool_map",
        }
    }

    /// Keeps a chunk's next results: in the chunk for `pool_map`, handed on for
    /// `pool_map_unordered`.
    fn received(&mut self, chunk: usize, values: Value) {
        let n = values.array_len().unwrap_or(0);
        let c = &mut self.chunks[chunk];
        c.received += n;
        match &self.sink {
            Some(sink) => sink.push(values),
            None => c.parts.push(values),
        }
        self.progress.advance(n);
    }

    /// Runs the map until every item has a result or one has failed and nothing is in flight.
    pub(crate) fn run(&mut self, events: &Receiver<JobEvent>) -> Result<Value, Error> {
        self.dispatch_all();
        if self.slots.iter().all(|s| !s.alive) {
            let only_cluster = self
                .hub
                .config
                .cluster
                .as_ref()
                .is_some_and(|c| c.is_only());
            self.replace_worker(only_cluster);
        }
        while self.slots.iter().any(|s| !s.in_flight.is_empty()) {
            match events.recv_timeout(TICK) {
                Ok(event) => self.on_event(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if let Err(interrupted) = self.hub.config.interrupt.check() {
                self.abandon();
                return Err(interrupted);
            }
            if self.sink.as_ref().is_some_and(|s| s.is_closed()) {
                self.abandon();
                return Ok(Value::Unit);
            }
            self.enforce_time_limit();
            self.progress.tick();
            *lock(&self.hub.progress_bar) = self.progress.bar().cloned();
        }
        self.progress.finish();
        *lock(&self.hub.progress_bar) = None;
        self.result()
    }

    /// Stops the map at once: its busy workers are killed (the pool replaces them later), so an
    /// interrupted map leaves nothing running.
    fn abandon(&mut self) {
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.alive && !s.in_flight.is_empty())
        {
            slot.worker.link.kill();
            slot.alive = false;
        }
        self.progress.finish();
        *lock(&self.hub.progress_bar) = None;
    }

    /// The workers still alive (replacements included), idle again, for the pool to keep.
    pub(crate) fn into_workers(self) -> Vec<Arc<Worker>> {
        self.slots
            .into_iter()
            .filter(|s| s.alive && s.worker.assign(Task::Idle))
            .map(|s| s.worker)
            .collect()
    }

    fn remaining(&self) -> bool {
        !self.requeued.is_empty() || self.next < self.items.len()
    }

    fn first_remaining(&self) -> usize {
        self.requeued
            .iter()
            .map(|r| r.0)
            .chain((self.next < self.items.len()).then_some(self.next))
            .min()
            .unwrap_or(self.next)
    }

    fn take_range(&mut self) -> Option<(usize, usize)> {
        if let Some(range) = self.requeued.pop_front() {
            return Some(range);
        }
        let left = self.items.len() - self.next;
        if left == 0 {
            return None;
        }
        let alive = self.slots.iter().filter(|s| s.alive).count().max(1);
        let len = match self.options.chunk_size {
            Some(fixed) => fixed,
            None => left
                .div_ceil(2 * alive)
                .min(self.items.count_within(self.next, CHUNK_BYTES)),
        }
        .clamp(1, left);
        let range = (self.next, self.next + len);
        self.next += len;
        Some(range)
    }

    fn requeue(&mut self, start: usize, end: usize) {
        if start < end {
            self.requeued.push_back((start, end));
        }
    }

    /// Fills workers breadth-first, so no worker holds a second chunk while another has none.
    fn dispatch_all(&mut self) {
        for depth in 1..=self.in_flight() {
            for w in 0..self.slots.len() {
                self.fill(w, depth);
            }
        }
    }

    fn dispatch(&mut self, w: usize) {
        self.fill(w, self.in_flight());
    }

    /// Hands worker `w` chunks until it holds `depth`.
    fn fill(&mut self, w: usize, depth: usize) {
        while self.slots[w].alive && self.slots[w].in_flight.len() < depth && self.failure.is_none()
        {
            let Some((start, end)) = self.take_range() else {
                return;
            };
            let id = self.chunks.len();
            self.chunks.push(Chunk {
                start,
                end,
                state: ChunkState::Running,
                parts: Vec::new(),
                received: 0,
            });
            let slot = &mut self.slots[w];
            let message = ToWorker::Map {
                job: self.job,
                chunk: id as u32,
                setup: (!slot.set_up).then(|| self.setup.clone()),
                items: self.items.slice(start, end),
            };
            slot.set_up = true;
            slot.in_flight.push_back(id);
            match slot.worker.link.send(&message) {
                // A worker that hung up is reported dead by its reader thread, chunks and all.
                Ok(()) | Err(Error::Disconnected { .. }) => {}
                Err(e) => {
                    slot.in_flight.pop_back();
                    self.chunks[id].state = ChunkState::Dropped;
                    self.fail(start, e);
                }
            }
        }
    }

    fn on_event(&mut self, event: JobEvent) {
        match event {
            JobEvent::Part { chunk, values } => {
                if self.running_chunk(chunk).is_some() {
                    self.received(chunk as usize, values);
                }
            }
            JobEvent::Done { chunk, result } => self.on_done(chunk as usize, result),
            JobEvent::Died { worker, death } => {
                if let Some(w) = self.slots.iter().position(|s| s.worker.id == worker) {
                    self.on_died(w, &death);
                }
            }
        }
    }

    fn running_chunk(&mut self, chunk: u32) -> Option<&mut Chunk> {
        self.chunks
            .get_mut(chunk as usize)
            .filter(|c| c.state == ChunkState::Running)
    }

    fn on_done(&mut self, chunk: usize, result: Result<Value, ItemFailure>) {
        let Some(w) = self.slots.iter().position(|s| s.in_flight.contains(&chunk)) else {
            return;
        };
        self.slots[w].in_flight.retain(|&c| c != chunk);
        match result {
            Ok(values) => {
                self.received(chunk, values);
                self.chunks[chunk].state = ChunkState::Done;
                self.dispatch(w);
            }
            Err(failure) => {
                let c = &mut self.chunks[chunk];
                c.state = ChunkState::Dropped;
                let index = c.start + failure.offset as usize;
                let error = if failure.timed_out {
                    Error::Timeout {
                        what: format!("the call ({})", failure.error.location()),
                        after: self.time_limit(),
                    }
                } else {
                    Error::Remote(Box::new(failure.error))
                };
                self.fail(index, error);
            }
        }
    }

    /// Fails (or retries) the item the worker was running; everything else it held runs again.
    fn on_died(&mut self, w: usize, death: &Death) {
        let slot = &mut self.slots[w];
        slot.alive = false;
        let lost: Vec<usize> = slot.in_flight.drain(..).collect();
        let killed_for = slot.killed_for.take();
        let progress = slot.worker.link.progress();
        let (pid, remote) = (slot.worker.pid, slot.worker.link.is_remote());
        for (position, id) in lost.into_iter().enumerate() {
            let c = &mut self.chunks[id];
            let (start, end, resume) = (c.start, c.end, c.start + c.received);
            c.end = resume;
            c.state = if c.received > 0 {
                ChunkState::Done
            } else {
                ChunkState::Dropped
            };
            if position > 0 {
                self.requeue(resume, end); // queued behind the running chunk, never started
                continue;
            }
            let running = killed_for.unwrap_or_else(|| match progress {
                Some(p) if p.job == self.job && p.chunk == id as u64 => {
                    (start + p.offset as usize).clamp(resume, end - 1)
                }
                _ => resume,
            });
            // Finished before the death, but their results went with the worker.
            self.requeue(resume, running);
            self.requeue(running + 1, end);
            self.lost_item(running, pid, death, killed_for.is_some());
        }
        if self.remaining() && self.failure.is_none() {
            self.replace_worker(remote);
        }
        self.dispatch_all();
    }

    fn lost_item(&mut self, index: usize, pid: u32, death: &Death, killed_for_time: bool) {
        let attempts = self.attempts.entry(index).or_default();
        if killed_for_time {
            let what =
                format!("the call (worker {pid}, killed after a {KILL_GRACE:?} grace period)");
            let after = self.time_limit();
            self.fail(index, Error::Timeout { what, after });
        } else if *attempts < self.options.retries {
            *attempts += 1;
            self.requeued.push_front((index, index + 1));
        } else {
            let during = format!("items[{index}] of {}", self.builtin());
            let status = death.status.clone();
            self.fail(
                index,
                Error::WorkerDied {
                    pid,
                    status,
                    during,
                },
            );
        }
    }

    /// Starts a worker in place of a dead one (a cluster slot for a cluster slot), so the pool
    /// keeps its size and shape.
    fn replace_worker(&mut self, remote: bool) {
        let started = match &self.hub.config.cluster {
            Some(cluster) if remote => self.hub.start_on(&**cluster, 1),
            _ => self.hub.start_workers(1),
        };
        match started {
            Ok(mut started) => {
                let worker = started.remove(0);
                self.slots.push(Slot {
                    alive: worker.assign(Task::Pool(self.job)),
                    worker,
                    in_flight: VecDeque::new(),
                    set_up: false,
                    killed_for: None,
                });
            }
            Err(e) if !self.slots.iter().any(|s| s.alive) => {
                let index = self.first_remaining();
                self.fail(index, e);
            }
            Err(_) => {} // the others carry on
        }
    }

    /// Kills workers whose current call ignored its time limit (stuck in a native wait).
    fn enforce_time_limit(&mut self) {
        let Some(limit) = self.options.timeout else {
            return;
        };
        let patience = (Duration::from_secs_f64(limit) + KILL_GRACE).as_nanos() as u64;
        let now = now_ns();
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.alive && s.killed_for.is_none())
        {
            let (Some(&running), Some(p)) = (slot.in_flight.front(), slot.worker.link.progress())
            else {
                continue;
            };
            let c = &self.chunks[running];
            let stuck = p.job == self.job
                && p.chunk == running as u64
                && c.received <= p.offset as usize
                && p.started_ns != 0
                && now.saturating_sub(p.started_ns) > patience;
            if stuck {
                slot.killed_for = Some(c.start + p.offset as usize);
                slot.worker.link.kill();
            }
        }
    }

    fn time_limit(&self) -> Duration {
        Duration::from_secs_f64(self.options.timeout.unwrap_or_default())
    }

    /// Keeps the failure of the earliest item, so the report does not depend on timing.
    fn fail(&mut self, index: usize, error: Error) {
        if self.failure.as_ref().is_none_or(|(i, _)| index < *i) {
            self.failure = Some((index, error));
        }
    }

    fn result(&mut self) -> Result<Value, Error> {
        if let Some((index, error)) = self.failure.take() {
            return Err(Error::MapItem {
                builtin: self.builtin(),
                index,
                total: self.items.len(),
                source: Box::new(error),
            });
        }
        if self.sink.is_some() {
            return Ok(Value::Unit); // every result was handed on
        }
        let mut done: Vec<&mut Chunk> = self
            .chunks
            .iter_mut()
            .filter(|c| c.state == ChunkState::Done)
            .collect();
        done.sort_by_key(|c| c.start);
        debug_assert_eq!(
            done.iter().map(|c| c.end - c.start).sum::<usize>(),
            self.items.len()
        );
        Ok(concat(
            done.into_iter().flat_map(|c| std::mem::take(&mut c.parts)),
        ))
    }
}

/// Joins chunk results in order, keeping a compact array when every part is one of its kind.
fn concat(parts: impl Iterator<Item = Value>) -> Value {
    let mut parts = parts.filter(|p| p.array_len() != Some(0));
    let Some(mut joined) = parts.next() else {
        return Value::IntArray(Vec::new());
    };
    for part in parts {
        joined = match (joined, part) {
            (Value::IntArray(mut all), Value::IntArray(more)) => {
                all.extend(more);
                Value::IntArray(all)
            }
            (Value::FloatArray(mut all), Value::FloatArray(more)) => {
                all.extend(more);
                Value::FloatArray(all)
            }
            (Value::BoolArray(mut all), Value::BoolArray(more)) => {
                all.extend(more);
                Value::BoolArray(all)
            }
            (all, more) => {
                let mut all = all.into_items();
                all.extend(more.into_items());
                Value::Array(all)
            }
        };
    }
    joined
}

/// A map from inside a map's function would wait on the pool it runs in.
fn refuse_nested(caller: &Caller) -> Result<(), Error> {
    match caller {
        Caller::Worker(w) if matches!(*w.task(), Task::Pool(_)) => Err(Error::InvalidArgument(
            "pool_map cannot be called from a function running in pool_map (the pool would wait \
             on itself); use spawn there instead"
                .into(),
        )),
        _ => Ok(()),
    }
}

impl Inner {
    pub(super) fn pool_map_for(
        self: &Arc<Self>,
        caller: &Caller,
        f: FnValue,
        items: &Items,
        options: MapOptions,
        at: Option<Vec<Frame>>,
    ) -> Result<Reply, Error> {
        refuse_nested(caller)?;
        self.pool_map(f, items, options, at).map(Reply::Value)
    }

    pub(super) fn map_unordered_for(
        self: &Arc<Self>,
        caller: &Caller,
        f: FnValue,
        items: Items,
        options: MapOptions,
        at: Option<Vec<Frame>>,
    ) -> Result<Reply, Error> {
        refuse_nested(caller)?;
        self.map_unordered(f, items, options, at)
    }

    pub(super) fn pool_map(
        self: &Arc<Self>,
        f: FnValue,
        items: &Items,
        options: MapOptions,
        at: Option<Vec<Frame>>,
    ) -> Result<Value, Error> {
        if items.is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        // Held for the whole call: maps from several processes take turns on the one pool.
        let mut pool = lock(&self.pool);
        let workers = self.take_pool_workers(&mut pool, options, items.len())?;
        let (result, mut kept) = self.run_map(f, items, options, workers, None, at);
        kept.append(&mut pool);
        *pool = kept;
        result
    }

    /// A map that holds the pool only while it takes its workers, so others run beside it (a
    /// future's call on the cluster).
    pub(super) fn map_beside(
        self: &Arc<Self>,
        f: FnValue,
        items: &Items,
        options: MapOptions,
        at: Option<Vec<Frame>>,
    ) -> Result<Value, Error> {
        let workers = self.take_pool_workers(&mut lock(&self.pool), options, items.len())?;
        let (result, kept) = self.run_map(f, items, options, workers, None, at);
        lock(&self.pool).extend(kept);
        result
    }

    /// `pool_map_unordered`: the map runs on its own thread, handing results to the script as
    /// chunks finish; its workers leave the pool until it ends, so the loop body may `pool_map`.
    pub(super) fn map_unordered(
        self: &Arc<Self>,
        f: FnValue,
        items: Items,
        options: MapOptions,
        at: Option<Vec<Frame>>,
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
                    hub.run_map(f, &items, options, workers, Some(results.clone()), at);
                lock(&hub.pool).extend(kept);
                results.finish(result.map(|_| ()));
            });
        spawned.map_err(|e| Error::io("starting a pool_map_unordered thread", e))?;
        Ok(Reply::Id(id))
    }

    /// The next results of a `pool_map_unordered`.
    pub(super) fn next_results(&self, id: u64, timeout: Option<f64>) -> Result<Reply, Error> {
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
    pub(super) fn close_results(&self, id: u64) {
        if let Some(results) = lock(&self.results).remove(&id) {
            results.close();
        }
    }

    /// Takes the workers a map wants out of `pool`, starting more if it has too few.
    pub(super) fn take_pool_workers(
        self: &Arc<Self>,
        pool: &mut Vec<Arc<Worker>>,
        options: MapOptions,
        items: usize,
    ) -> Result<Vec<Arc<Worker>>, Error> {
        pool.retain(|w| *w.task() != Task::Dead);
        if let Some(cluster) = self.config.cluster.clone() {
            return self.take_cluster_workers(&cluster, pool, options, items);
        }
        let want = options
            .workers
            .unwrap_or(self.config.workers)
            .min(items)
            .max(1);
        if pool.len() < want {
            let more = self.start_workers(want - pool.len())?;
            pool.extend(more);
        }
        Ok(pool.drain(..want).collect())
    }

    /// The pool's local workers (none with `--cluster-only`) and a slot for each slot the
    /// cluster's agents offer now; `#{workers: N}` caps the two together.
    fn take_cluster_workers(
        self: &Arc<Self>,
        cluster: &ClusterTransport,
        pool: &mut Vec<Arc<Worker>>,
        options: MapOptions,
        items: usize,
    ) -> Result<Vec<Arc<Worker>>, Error> {
        let local_want = if cluster.is_only() {
            0
        } else {
            self.config.workers
        };
        let remote_want = cluster.slots();
        let remote_have = pool.iter().filter(|w| w.link.is_remote()).count();
        let local_have = pool.len() - remote_have;
        if local_have < local_want {
            pool.extend(self.start_workers(local_want - local_have)?);
        }
        if remote_have < remote_want {
            pool.extend(self.start_on(cluster, remote_want - remote_have)?);
        }
        let want = (local_want + remote_want)
            .min(options.workers.unwrap_or(usize::MAX))
            .min(items)
            .max(1);
        Ok(pool.drain(..want.min(pool.len())).collect())
    }

    /// Runs one map on `workers`; gives its result and the workers still alive, idle again.
    pub(super) fn run_map(
        self: &Arc<Self>,
        f: FnValue,
        items: &Items,
        options: MapOptions,
        workers: Vec<Arc<Worker>>,
        sink: Option<Arc<Results>>,
        at: Option<Vec<Frame>>,
    ) -> (Result<Value, Error>, Vec<Arc<Worker>>) {
        let job = self.id();
        let (tx, events) = unbounded();
        lock(&self.jobs).insert(job, tx);
        let started = Instant::now();
        let record = self
            .config
            .profile
            .clone()
            .zip(at.clone())
            .map(|(book, at)| {
                let call = MapCall {
                    builtin: if sink.is_some() {
                        "pool_map_unordered"
                    } else {
                        "pool_map"
                    },
                    function: profiling::frame_of(&f, 1),
                    at,
                    work: Work::Job(job),
                    wall_ns: 0,
                    workers: workers.len(),
                };
                (book, call)
            });
        let setup = MapSetup {
            f,
            timeout: options.timeout,
            spread: options.spread,
            at,
        };
        let mut run = MapRun::new(self, job, setup, items, options, workers, sink);
        let result = run.run(&events);
        lock(&self.jobs).remove(&job);
        if let Some((book, mut call)) = record {
            call.wall_ns = started.elapsed().as_nanos() as u64;
            book.map(call);
        }
        let kept = run.into_workers();
        // A permit taken by an item that failed or timed out must not outlive the call.
        for w in &kept {
            self.forget_owner(Owner::Worker(w.id));
        }
        (result, kept)
    }
}

#[cfg(test)]
mod tests;
