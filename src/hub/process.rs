//! Spawned processes: the parent's record of each (running, or how it ended), and the requests
//! about them (spawn, join, status, kill) and what follows when one ends.

use crate::locks::lock;
use std::{
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    Caller, Inner,
    actors::{Ending, MAIN, NORMAL},
    main_process, parked,
    sync::Owner,
    wait::wait,
    worker::{Task, Worker},
};
use crate::{
    Error, Interrupt, Value,
    profile::Frame,
    stop::Wake,
    transport::Death,
    value::{FnValue, ProcessHandle},
    wire::{KillSignal, Object, Outcome, Reply, ToWorker},
};

enum State {
    Running,
    Ended(Outcome),
    Died(Death),
}

/// Whether it ended with a failure: a throw, a non-zero `exit`, a death.
fn failed(state: &State) -> bool {
    !matches!(
        state,
        State::Running | State::Ended(Outcome::Returned(_) | Outcome::Exited(0))
    )
}

pub(crate) struct ProcSlot {
    pid: u32,
    /// The worker running it, until it ends: then the record keeps no socket or buffer alive.
    worker: Mutex<Option<Arc<Worker>>>,
    state: Mutex<State>,
    ended: Condvar,
    /// Why it is being ended by the runtime (a linked process ended), reported instead of the
    /// signal that does it.
    doom: Mutex<Option<String>>,
    /// Set once the end has been told to monitors, links and names: joins return only then.
    woken: AtomicBool,
    /// Set once someone learned how it ended (a join, `exit_code`, a monitor or link, a kill), or
    /// its failure was reported at the end of the run: a failure nobody saw is reported once.
    observed: AtomicBool,
    /// The main script holds no handle to it, and never sent one elsewhere.
    unreferenced: AtomicBool,
    /// Handles to it were made where nobody counts them (`self()`, monitor notices, names): its
    /// record stays for the rest of the run.
    shared: AtomicBool,
}

impl Wake for ProcSlot {
    fn wake(&self) {
        let _state = self.lock();
        self.ended.notify_all();
    }
}

impl ProcSlot {
    pub(crate) fn new(worker: Arc<Worker>) -> ProcSlot {
        let slot = ProcSlot::elsewhere();
        *lock(&slot.worker) = Some(worker.clone());
        ProcSlot {
            pid: worker.pid,
            ..slot
        }
    }

    /// A process that runs on no worker of this machine (a future on the cluster).
    pub(crate) fn elsewhere() -> ProcSlot {
        ProcSlot {
            pid: 0,
            worker: Mutex::new(None),
            state: Mutex::new(State::Running),
            ended: Condvar::new(),
            doom: Mutex::default(),
            woken: AtomicBool::new(false),
            observed: AtomicBool::new(false),
            unreferenced: AtomicBool::new(false),
            shared: AtomicBool::new(false),
        }
    }

    /// A handle to it was made where nobody counts it.
    pub(crate) fn share(&self) {
        self.shared.store(true, Ordering::Relaxed);
    }

    /// The main script dropped its last handle.
    pub(crate) fn unreference(&self) {
        self.unreferenced.store(true, Ordering::Relaxed);
    }

    /// Whether nothing can ask about it any more: it has ended, no handle is left (none was made
    /// outside the main script's count), and its end was seen or was not a failure (a failure
    /// nobody saw waits to be reported).
    pub(crate) fn is_forgettable(&self) -> bool {
        if !self.unreferenced.load(Ordering::Relaxed) || self.shared.load(Ordering::Relaxed) {
            return false;
        }
        let state = self.lock();
        !matches!(*state, State::Running)
            && (self.observed.load(Ordering::Relaxed) || !failed(&state))
    }

    /// Someone has learned, or will learn, how it ended.
    pub(crate) fn observe(&self) {
        self.observed.store(true, Ordering::Relaxed);
    }

    /// The error of a process that failed without anyone learning of it; `Some` only once.
    pub(crate) fn unobserved_failure(&self) -> Option<Error> {
        let state = self.lock();
        if !failed(&state) || self.observed.swap(true, Ordering::Relaxed) {
            return None;
        }
        self.result(&state).err()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Records the function's outcome, then runs `release` (returning the worker to the warm set)
    /// under the same lock, so a concurrent `kill` can never hit a worker that was handed on.
    /// Joiners wake at [`ProcSlot::wake`], once the end has been told to monitors and links.
    pub(crate) fn finish(&self, outcome: Outcome, release: impl FnOnce()) {
        let mut current = self.lock();
        if matches!(*current, State::Running) {
            *current = State::Ended(outcome);
            release();
            lock(&self.worker).take();
        }
    }

    /// Records how the worker died (or why the runtime ended it); joiners wake at `wake`.
    pub(crate) fn died(&self, mut death: Death) {
        let mut current = self.lock();
        if matches!(*current, State::Running) {
            if let Some(why) = lock(&self.doom).take() {
                death.status = why;
            }
            *current = State::Died(death);
            lock(&self.worker).take();
        }
    }

    /// Wakes whoever waits for the end (join, kill).
    pub(crate) fn wake(&self) {
        let state = self.lock();
        self.woken.store(true, Ordering::Release);
        self.ended.notify_all();
        drop(state);
        parked::changed(self);
    }

    /// Waits for the end (at most `timeout`) and returns the function's value, or its error.
    pub(crate) fn join(
        &self,
        timeout: Option<Duration>,
        interrupt: &Interrupt,
    ) -> Result<Value, Error> {
        let state = self
            .wait(timeout, interrupt)?
            .ok_or_else(|| Error::Timeout {
                what: format!("join of process {}", self.pid),
                after: timeout.unwrap_or_default(),
            })?;
        self.observe();
        self.result(&state)
    }

    /// What a join of an ended process gives: the function's value, or its error.
    fn result(&self, state: &State) -> Result<Value, Error> {
        match state {
            State::Running => unreachable!("only an ended process has a result"),
            State::Ended(Outcome::Returned(v)) => Ok(v.clone()),
            State::Ended(Outcome::Threw(e)) => Err(Error::Remote(Box::new(e.clone()))),
            State::Ended(Outcome::Exited(0)) => Ok(Value::Unit),
            State::Ended(Outcome::Exited(code)) => {
                let message = format!("process called exit({code})");
                Err(Error::Remote(Box::new(crate::RemoteError::unplaced(
                    message, self.pid,
                ))))
            }
            State::Died(death) => Err(Error::WorkerDied {
                pid: self.pid,
                status: death.status.clone(),
                during: "a spawned process".into(),
            }),
        }
    }

    /// Waits for the end, at most `timeout`, without taking its result (the end of a run waits so).
    pub(crate) fn wait_end(&self, timeout: Duration, interrupt: &Interrupt) -> Result<(), Error> {
        self.wait(Some(timeout), interrupt).map(|_| ())
    }

    /// The ended state, or `None` if `timeout` passed first.
    fn wait(
        &self,
        timeout: Option<Duration>,
        interrupt: &Interrupt,
    ) -> Result<Option<MutexGuard<'_, State>>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.lock();
        while matches!(*state, State::Running) || !self.woken.load(Ordering::Acquire) {
            state = match wait(&self.ended, state, deadline, interrupt)? {
                Some(state) => state,
                None => return Ok(None),
            };
        }
        Ok(Some(state))
    }

    /// `None` while running; else Python's exit code convention (0 ok, 1 error, -N signal).
    pub(crate) fn exit_code(&self) -> Option<i64> {
        let state = self.lock();
        if !matches!(*state, State::Running) {
            self.observe();
        }
        match &*state {
            State::Running => None,
            State::Ended(Outcome::Returned(_)) => Some(0),
            State::Ended(Outcome::Threw(_)) => Some(1),
            State::Ended(Outcome::Exited(code)) => Some(*code),
            State::Died(death) => Some(death.code),
        }
    }

    /// How it ended, as monitors and links are told; `None` while running.
    pub(crate) fn ending(&self) -> Option<String> {
        match &*self.lock() {
            State::Running => None,
            State::Ended(Outcome::Returned(_) | Outcome::Exited(0)) => Some(NORMAL.into()),
            State::Ended(Outcome::Threw(e)) => Some(e.message.clone()),
            State::Ended(Outcome::Exited(code)) => Some(format!("exit({code})")),
            State::Died(death) => Some(death.status.clone()),
        }
    }

    /// Ends it for `why` (a linked process ended), without waiting.
    pub(crate) fn terminate(&self, why: String) {
        let state = self.lock();
        if matches!(*state, State::Running) {
            *lock(&self.doom) = Some(why);
            self.signal(KillSignal::Kill);
        }
    }

    /// Signals the worker while it runs this process (the caller holds the state lock).
    fn signal(&self, signal: KillSignal) {
        if let Some(worker) = &*lock(&self.worker) {
            match signal {
                KillSignal::Kill => worker.link.kill(),
                KillSignal::Terminate => worker.link.terminate(),
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills (or terminates) the worker if it is still running this process, and waits until its
    /// end is recorded.
    pub(crate) fn kill(&self, signal: KillSignal) {
        self.observe();
        {
            let state = self.lock();
            if !matches!(*state, State::Running) {
                return;
            }
            self.signal(signal);
        }
        // The reader thread records the death within milliseconds; an interrupt may cut this short.
        let _ = self.wait(Some(Duration::from_secs(5)), &Interrupt::default());
    }
}

impl Inner {
    /// `spawn(f, args...)` by `caller`: the child's `parent()` is the caller.
    pub(super) fn spawn_for(
        self: &Arc<Self>,
        caller: &Caller,
        f: FnValue,
        args: Vec<Value>,
        at: Option<Vec<Frame>>,
    ) -> Result<Reply, Error> {
        let parent = caller.parent_of_new();
        self.share(parent.id); // the child's parent() is a handle nobody counts
        self.spawn(self.id(), f, args, parent, at)
    }

    pub(super) fn join(&self, process: u64, timeout: Option<f64>) -> Result<Reply, Error> {
        let timeout = timeout.map(Duration::from_secs_f64);
        self.process(process)?
            .join(timeout, &self.config.interrupt)
            .map(Reply::Value)
    }

    pub(super) fn status(&self, process: u64) -> Result<Reply, Error> {
        let exit_code = self.process(process)?.exit_code();
        Ok(Reply::Status { exit_code })
    }

    pub(super) fn kill(&self, process: u64, signal: KillSignal) -> Result<Reply, Error> {
        self.process(process)?.kill(signal);
        Ok(Reply::Unit)
    }

    pub(super) fn process(&self, id: u64) -> Result<Arc<ProcSlot>, Error> {
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

    /// A process handle from its id (0 is the main script).
    pub(super) fn process_handle(&self, id: u64) -> Result<ProcessHandle, Error> {
        if id == MAIN {
            return Ok(main_process());
        }
        Ok(ProcessHandle::new(id, self.process(id)?.pid()))
    }

    /// A process ended: tell its monitors and links, end the processes linked to it, free what it
    /// held, and start the next future if it ran one.
    pub(super) fn process_ended(self: &Arc<Self>, id: u64) {
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
    pub(super) fn unreferenced(&self, object: Object) {
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
            Object::SharedMap(id) => {
                lock(&self.shared_maps).remove(&id);
            }
        }
    }

    /// Keeps the record of process `id` for the rest of the run: a handle to it was made where
    /// nobody counts it.
    pub(super) fn share(&self, id: u64) {
        if let Ok(slot) = self.process(id) {
            slot.share();
        }
    }

    /// Frees the record of process `id` if nothing can ask about it any more.
    pub(super) fn forget_if_done(&self, id: u64) {
        let mut procs = lock(&self.procs);
        if procs.get(&id).is_some_and(|slot| slot.is_forgettable()) {
            procs.remove(&id);
        }
    }

    /// Starts `f(args...)` as process `id`, its mailbox open before anyone can know the id.
    pub(super) fn spawn(
        self: &Arc<Self>,
        id: u64,
        f: FnValue,
        args: Vec<Value>,
        parent: ProcessHandle,
        at: Option<Vec<Frame>>,
    ) -> Result<Reply, Error> {
        self.actors.open(id);
        let call = ToWorker::Call {
            call: id,
            f,
            args,
            parent,
            at,
        };
        let started = self.start_call(id, &call);
        if started.is_err() {
            self.actors.close(id);
        }
        started
    }

    pub(super) fn start_call(self: &Arc<Self>, id: u64, call: &ToWorker) -> Result<Reply, Error> {
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
}
