//! `pool_submit`'s futures: calls queued in the main process and run as processes, at most one per
//! pool worker at a time, with a bounded backlog so a submitting loop waits instead of copying
//! every argument up front.

use crate::locks::lock;
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Condvar, Mutex, MutexGuard},
    time::Instant,
};

use super::{Caller, Inner, deadline, parked, process::ProcSlot, profiling, timed_out, wait::wait};
use crate::{
    Error, Interrupt, RemoteError, Value,
    profile::Frame,
    stop::Wake,
    transport::Death,
    value::{FnValue, ProcessHandle},
    wire::{Items, MapOptions, Outcome, Reply},
};

use std::{sync::Arc, thread};

/// A call waiting for a free slot.
pub(crate) struct Call {
    pub(crate) f: FnValue,
    pub(crate) args: Vec<Value>,
    pub(crate) parent: ProcessHandle,
    /// Where the caller was, in a profiled run.
    pub(crate) at: Option<Vec<Frame>>,
}

enum Future {
    Pending(Call),
    /// Running (as the process `by_process` maps to it).
    Running,
    /// Ended; its result is that process's.
    Finished(u64),
    Cancelled,
    /// Could not be started.
    Failed(String),
}

/// How a finished future ended, for `get`.
pub(crate) enum Settled {
    /// Join process `0` for the result.
    Process(u64),
    Cancelled,
    Failed(String),
}

#[derive(Default)]
struct State {
    futures: HashMap<u64, Future>,
    pending: VecDeque<u64>,
    running: usize,
    /// Running future by process id.
    by_process: HashMap<u64, u64>,
    /// Futures not yet done whose handles the main script dropped: forgotten once done.
    dropped: HashSet<u64>,
}

pub(crate) struct Executor {
    state: Mutex<State>,
    changed: Condvar,
    /// Futures running at once.
    slots: usize,
    /// Futures waiting to start before `submit` waits.
    backlog: usize,
}

/// Calls to start now, each with the process id it must run as.
pub(crate) type Starts = Vec<(u64, u64, Call)>;

impl Executor {
    pub(crate) fn new(slots: usize) -> Executor {
        Executor {
            state: Mutex::default(),
            changed: Condvar::new(),
            slots: slots.max(1),
            backlog: (4 * slots).max(16),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Tells whoever waits on a future that one changed.
    fn changed(&self) {
        self.changed.notify_all();
        parked::changed(self);
    }

    /// Queues `call` as future `id` once the backlog has room; returns what can start now.
    pub(crate) fn submit(
        &self,
        id: u64,
        call: Call,
        interrupt: &Interrupt,
        new_process: impl FnMut() -> u64,
    ) -> Result<Starts, Error> {
        let mut state = self.lock();
        while state.pending.len() >= self.backlog {
            state = wait(&self.changed, state, None, interrupt)?.expect("no deadline");
        }
        state.futures.insert(id, Future::Pending(call));
        state.pending.push_back(id);
        Ok(self.starts(state, new_process))
    }

    /// Moves pending futures into free slots.
    fn starts(
        &self,
        mut state: MutexGuard<'_, State>,
        mut new_process: impl FnMut() -> u64,
    ) -> Starts {
        let mut starts = Vec::new();
        while state.running < self.slots {
            let Some(id) = state.pending.pop_front() else {
                break;
            };
            let process = new_process();
            if let Some(Future::Pending(call)) = state.futures.insert(id, Future::Running) {
                state.running += 1;
                state.by_process.insert(process, id);
                starts.push((id, process, call));
            }
        }
        drop(state);
        self.changed(); // the backlog shrank
        starts
    }

    /// A future's process could not start.
    pub(crate) fn failed(&self, id: u64, process: u64, why: String) {
        let mut state = self.lock();
        state.by_process.remove(&process);
        state.running -= 1;
        if !state.dropped.remove(&id) {
            state.futures.insert(id, Future::Failed(why));
        }
        drop(state);
        self.changed();
    }

    /// Process `process` ended; if it ran a future, that future is done and its slot is free.
    /// With the calls that can start now, whether that future's handles were all dropped (then
    /// nothing will ask for the process's result).
    pub(crate) fn process_ended(
        &self,
        process: u64,
        new_process: impl FnMut() -> u64,
    ) -> (Starts, bool) {
        let mut state = self.lock();
        let Some(id) = state.by_process.remove(&process) else {
            return (Vec::new(), false);
        };
        state.running -= 1;
        let dropped = state.dropped.remove(&id);
        if dropped {
            state.futures.remove(&id);
        } else {
            state.futures.insert(id, Future::Finished(process));
        }
        (self.starts(state, new_process), dropped)
    }

    /// The main script dropped its last handle to future `id`: forgets it once done (now, if it
    /// is), though it still runs. Answers the process whose result nothing will ask for now.
    pub(crate) fn unreferenced(&self, id: u64) -> Option<u64> {
        let mut state = self.lock();
        match state.futures.get(&id)? {
            Future::Pending(_) | Future::Running => {
                state.dropped.insert(id);
                None
            }
            Future::Finished(process) => {
                let process = *process;
                state.futures.remove(&id);
                Some(process)
            }
            Future::Cancelled | Future::Failed(_) => {
                state.futures.remove(&id);
                None
            }
        }
    }

    /// Waits until future `id` is done (at most until `deadline`: `None` then).
    pub(crate) fn settle(
        &self,
        id: u64,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Option<Settled>, Error> {
        let mut state = self.lock();
        loop {
            match state.futures.get(&id) {
                None => return Err(no_future(id)),
                Some(Future::Finished(p)) => return Ok(Some(Settled::Process(*p))),
                Some(Future::Cancelled) => return Ok(Some(Settled::Cancelled)),
                Some(Future::Failed(why)) => return Ok(Some(Settled::Failed(why.clone()))),
                Some(Future::Pending(_) | Future::Running) => {}
            }
            state = match wait(&self.changed, state, deadline, interrupt)? {
                Some(state) => state,
                None => return Ok(None),
            };
        }
    }

    /// Whether no future is running or waiting to start.
    pub(crate) fn is_idle(&self) -> bool {
        let state = self.lock();
        state.running == 0 && state.pending.is_empty()
    }

    /// Forgets a future whose result was taken.
    pub(crate) fn forget(&self, id: u64) {
        self.lock().futures.remove(&id);
    }

    pub(crate) fn is_done(&self, id: u64) -> Result<bool, Error> {
        match self.lock().futures.get(&id) {
            None => Err(no_future(id)),
            Some(f) => Ok(!matches!(f, Future::Pending(_) | Future::Running)),
        }
    }

    /// Cancels a future that has not started; `false` if it has started (a future cancelled
    /// before stays cancelled: `true`, as in Python).
    pub(crate) fn cancel(&self, id: u64) -> Result<bool, Error> {
        let mut state = self.lock();
        match state.futures.get(&id) {
            None => Err(no_future(id)),
            Some(Future::Pending(_)) => {
                state.futures.insert(id, Future::Cancelled);
                state.pending.retain(|p| *p != id);
                drop(state);
                self.changed();
                Ok(true)
            }
            Some(Future::Cancelled) => Ok(true),
            Some(_) => Ok(false),
        }
    }

    /// The first of `ids` that is done, waiting until `deadline` (`None` then).
    pub(crate) fn wait_any(
        &self,
        ids: &[u64],
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Option<u64>, Error> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument(
                "wait_any needs at least one future".into(),
            ));
        }
        let mut state = self.lock();
        loop {
            for id in ids {
                match state.futures.get(id) {
                    None => return Err(no_future(*id)),
                    Some(Future::Pending(_) | Future::Running) => {}
                    Some(_) => return Ok(Some(*id)),
                }
            }
            state = match wait(&self.changed, state, deadline, interrupt)? {
                Some(state) => state,
                None => return Ok(None),
            };
        }
    }
}

impl Wake for Executor {
    fn wake(&self) {
        let _state = self.lock();
        self.changed.notify_all();
    }
}

fn no_future(id: u64) -> Error {
    Error::InvalidArgument(format!(
        "no future with id {id} in this run (its result was already taken)"
    ))
}

impl Inner {
    /// `pool_submit(f, args...)` by `caller`: the call's `parent()` is the caller.
    pub(super) fn submit(
        self: &Arc<Self>,
        caller: &Caller,
        f: FnValue,
        args: Vec<Value>,
        at: Option<Vec<Frame>>,
    ) -> Result<Reply, Error> {
        let parent = caller.parent_of_new();
        let id = self.id();
        let call = Call {
            f,
            args,
            parent,
            at,
        };
        let starts = self
            .executor
            .submit(id, call, &self.config.interrupt, || self.id())?;
        self.start_futures(starts);
        Ok(Reply::Id(id))
    }

    pub(super) fn wait_any(&self, futures: &[u64], timeout: Option<f64>) -> Result<Reply, Error> {
        self.executor
            .wait_any(futures, deadline(timeout), &self.config.interrupt)?
            .map(Reply::Id)
            .ok_or_else(|| timed_out("wait_any", timeout))
    }

    pub(super) fn await_future(
        &self,
        future: u64,
        timeout: Option<f64>,
        take: bool,
    ) -> Result<Reply, Error> {
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

    pub(super) fn start_futures(self: &Arc<Self>, starts: Starts) {
        for (future, process, call) in starts {
            if let (Some(book), Some(at)) = (&self.config.profile, &call.at) {
                let function = profiling::frame_of(&call.f, call.args.len());
                book.submitted(process, function, at.clone());
            }
            let only_cluster = self.config.cluster.as_ref().is_some_and(|c| c.is_only());
            let started = if only_cluster {
                self.submit_to_cluster(process, call)
            } else {
                self.spawn(process, call.f, call.args, call.parent, call.at)
                    .map(|_| ())
            };
            if let Err(e) = started {
                self.executor.failed(future, process, e.to_string());
            }
        }
    }

    /// Runs a future's call on the cluster, as a map of one item on an agent's slot, recorded as
    /// process `process` (which has no pid here and cannot be signalled) so `get` finds it.
    fn submit_to_cluster(self: &Arc<Self>, process: u64, call: Call) -> Result<(), Error> {
        let slot = self.woken(Arc::new(ProcSlot::elsewhere()));
        lock(&self.procs).insert(process, slot.clone());
        self.actors.open(process);
        let hub = self.clone();
        let spawned = thread::Builder::new()
            .name("mpscript-cluster-future".into())
            .spawn(move || {
                let options = MapOptions {
                    workers: Some(1),
                    spread: true,
                    progress: Some(false),
                    ..MapOptions::default()
                };
                let items = Items::Values(Value::Array(vec![Value::Array(call.args)]));
                let ran = hub.map_beside(call.f, &items, options, call.at);
                match ran {
                    Ok(values) => {
                        // One item, in whichever array form the map gives.
                        let value = values.into_items().pop().unwrap_or(Value::Unit);
                        slot.finish(Outcome::Returned(value), || {})
                    }
                    Err(e) => match *unwrap_item(e) {
                        Error::Remote(e) => slot.finish(Outcome::Threw(*e), || {}),
                        Error::WorkerDied { status, .. } => slot.died(Death { status, code: -9 }),
                        e => slot.finish(
                            Outcome::Threw(RemoteError::unplaced(e.to_string(), 0)),
                            || {},
                        ),
                    },
                }
                hub.process_ended(process);
                slot.wake();
            });
        spawned.map_err(|e| Error::io("starting a cluster future's thread", e))?;
        Ok(())
    }
}

/// The reason a map's item failed, without the map's framing.
fn unwrap_item(e: Error) -> Box<Error> {
    match e {
        Error::MapItem { source, .. } => source,
        e => Box::new(e),
    }
}
