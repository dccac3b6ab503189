//! Locks, re-entrant locks, semaphores, conditions, events and barriers shared by processes: they
//! live in the main process, and remember who holds or waits on them, so that a process that ends
//! never deadlocks the rest.

use crate::locks::lock;
use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Instant,
};

use super::{Caller, Inner, actors::MAIN, deadline, parked, wait::wait, worker::Task};
use crate::{
    Error, Interrupt,
    stop::Wake,
    value::HandleKind,
    wire::{Reply, SyncAction},
};

/// Who holds a permit or waits at a barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The main script (id 0) or a spawned process.
    Process(u64),
    /// A worker running `pool_map` items, by worker id.
    Worker(u64),
}

/// One shared object.
pub(crate) struct SyncObject {
    kind: HandleKind,
    /// Condition: the lock (or re-entrant lock) it releases while waiting.
    lock: Option<Arc<SyncObject>>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Lock, re-entrant lock and semaphore: permits free now.
    available: u64,
    /// Lock and semaphore: one entry per permit taken; re-entrant lock: one per acquire by its one
    /// holder; barrier: the parties waiting.
    holders: Vec<Owner>,
    /// Event: the flag.
    set: bool,
    /// Barrier: how many parties it waits for.
    parties: u64,
    /// Barrier: bumped each time every party has arrived.
    generation: u64,
    /// Barrier: bumped by a `reset()` that found parties waiting, which then fail.
    resets: u64,
    /// Barrier: why it is broken, if it is.
    broken: Option<String>,
    /// Condition: the waiters not yet notified, oldest first, by ticket.
    sleepers: VecDeque<(u64, Owner)>,
    /// Condition: tickets notified but not yet back from their wait.
    woken: HashSet<u64>,
    /// Condition: the next ticket.
    next_ticket: u64,
}

/// How a wait ended.
pub(crate) enum Waited {
    /// Got a permit, saw the event set, was notified, or passed the barrier as this arrival index.
    Yes(u64),
    /// The deadline passed first.
    TimedOut,
}

/// How a blocking wait on an object's state ended.
enum Until<R> {
    Ready(R),
    TimedOut,
    /// The run was interrupted.
    Stopped(Error),
}

/// A barrier party waiting to pass: its arrival index, and the barrier's counts when it came.
pub(crate) struct Arrival {
    index: u64,
    generation: u64,
    resets: u64,
}

/// A condition waiter: its ticket, and how often it held the lock it gave up.
pub(crate) struct Sleep {
    ticket: u64,
    pub(crate) held: u64,
}

/// What a blocking action needs besides the object: who asks, when to give up, and whether the
/// asker is still there.
pub(crate) struct Asker<'a> {
    pub(crate) owner: Owner,
    pub(crate) deadline: Option<Instant>,
    pub(crate) interrupt: &'a Interrupt,
    pub(crate) alive: &'a dyn Fn() -> bool,
}

impl SyncObject {
    /// A lock or re-entrant lock (`size` 1), semaphore (`size` permits), event, or barrier of
    /// `size` parties.
    pub(crate) fn new(kind: HandleKind, size: u64) -> SyncObject {
        SyncObject::with_lock(kind, size, None)
    }

    /// A condition over `lock`.
    pub(crate) fn condition(lock: Arc<SyncObject>) -> SyncObject {
        SyncObject::with_lock(HandleKind::Condition, 0, Some(lock))
    }

    fn with_lock(kind: HandleKind, size: u64, lock: Option<Arc<SyncObject>>) -> SyncObject {
        let state = State {
            available: size,
            parties: size,
            ..State::default()
        };
        SyncObject {
            kind,
            lock,
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    pub(crate) fn kind(&self) -> HandleKind {
        self.kind
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Performs `action` for `asker`; the one entry point of every shared object's methods.
    pub(crate) fn act(&self, action: SyncAction, asker: &Asker) -> Result<Reply, Error> {
        use HandleKind::*;
        let waited = |w: Waited| Reply::Bool(matches!(w, Waited::Yes(_)));
        match (self.kind, action) {
            (Condition, SyncAction::Acquire { .. } | SyncAction::Release) => {
                self.the_lock().act(action, asker)
            }
            (Lock | RLock | Semaphore, SyncAction::Acquire { .. }) => {
                self.acquire(asker, 1).map(waited)
            }
            (Lock | RLock | Semaphore, SyncAction::Release) => {
                self.release(asker.owner).map(|()| Reply::Unit)
            }
            (Event, SyncAction::Set | SyncAction::Clear) => {
                self.set(action == SyncAction::Set);
                Ok(Reply::Unit)
            }
            (Event, SyncAction::IsSet) => Ok(Reply::Bool(self.lock().set)),
            (Event, SyncAction::Wait { .. }) => self.wait_set(asker).map(waited),
            (Condition, SyncAction::Wait { .. }) => self.wait_notified(asker).map(waited),
            (Condition, SyncAction::Notify(n)) => self.notify(asker.owner, n).map(|()| Reply::Unit),
            (Barrier, SyncAction::Wait { timeout }) => match self.pass(asker)? {
                Waited::Yes(index) => Ok(Reply::Len(index)),
                Waited::TimedOut => Err(super::timed_out("barrier wait", timeout)),
            },
            (Barrier, SyncAction::Reset) => {
                self.reset();
                Ok(Reply::Unit)
            }
            (Barrier, SyncAction::Abort) => {
                self.break_barrier(self.lock(), "it was aborted");
                Ok(Reply::Unit)
            }
            (Barrier, SyncAction::Broken) => Ok(Reply::Bool(self.lock().broken.is_some())),
            (Barrier, SyncAction::Waiting) => Ok(Reply::Len(self.lock().holders.len() as u64)),
            (Barrier, SyncAction::Parties) => Ok(Reply::Len(self.lock().parties)),
            (kind, action) => Err(Error::InvalidArgument(format!(
                "{action:?} is not an operation of a {kind:?}"
            ))),
        }
    }

    /// Whether `owner` may take a permit now: one is free, or it already holds this re-entrant lock.
    fn can_take(&self, state: &State, owner: Owner) -> bool {
        state.available > 0
            || (self.kind == HandleKind::RLock && state.holders.first() == Some(&owner))
    }

    /// Waits under this object's lock until `ready` gives an answer, the deadline, or an interrupt.
    fn until<R>(
        &self,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
        mut ready: impl FnMut(&mut State) -> Option<R>,
    ) -> Until<R> {
        let mut state = self.lock();
        loop {
            if let Some(answer) = ready(&mut state) {
                return Until::Ready(answer);
            }
            state = match wait(&self.changed, state, deadline, interrupt) {
                Ok(Some(state)) => state,
                Ok(None) => return Until::TimedOut,
                Err(e) => return Until::Stopped(e),
            };
        }
    }

    /// Tells whoever waits on this object that its state changed.
    fn changed(&self) {
        self.changed.notify_all();
        parked::changed(self);
    }

    /// Takes a permit for `asker` (`times` over, for a re-entrant lock a condition gives back).
    fn acquire(&self, asker: &Asker, times: u64) -> Result<Waited, Error> {
        match self.until(asker.deadline, asker.interrupt, |state| {
            self.take(state, asker, times)
        }) {
            Until::Ready(taken) => taken.map(|()| Waited::Yes(1)),
            Until::TimedOut => Ok(Waited::TimedOut),
            Until::Stopped(e) => Err(e),
        }
    }

    /// Lock, re-entrant lock, semaphore: takes a permit for `asker` now if one is free, `times`
    /// over; `None` if none is. `alive` is asked under this object's lock, so a permit is never
    /// given to an owner whose end was already cleaned up.
    fn take(&self, state: &mut State, asker: &Asker, times: u64) -> Option<Result<(), Error>> {
        if !self.can_take(state, asker.owner) {
            return None;
        }
        if !(asker.alive)() {
            return Some(Err(Error::InvalidArgument(
                "the process asking for this permit has ended".into(),
            )));
        }
        let reentry = self.kind == HandleKind::RLock && state.holders.first() == Some(&asker.owner);
        if !reentry {
            state.available -= 1;
        }
        state.holders.extend((0..times).map(|_| asker.owner));
        Some(Ok(()))
    }

    /// Takes a permit now if one is free (`None` if none is): a parked acquire's retry.
    pub(crate) fn try_take(&self, asker: &Asker, times: u64) -> Option<Result<(), Error>> {
        self.take(&mut self.lock(), asker, times)
    }

    /// Gives back a permit. A re-entrant lock must be released by its holder, as often as it was
    /// acquired. A lock or semaphore released by another process gives back the oldest holder's
    /// permit (Python allows that), so that holder's end does not give it back a second time;
    /// releasing an unlocked lock is an error, and a semaphore with no holder counts up.
    fn release(&self, owner: Owner) -> Result<(), Error> {
        let mut state = self.lock();
        match self.kind {
            HandleKind::RLock => {
                if state.holders.last() != Some(&owner) {
                    return Err(Error::InvalidArgument(
                        "release() of a re-entrant lock this process does not hold (it is released \
                         as often as it was acquired, by the process that acquired it)"
                            .into(),
                    ));
                }
                state.holders.pop();
                if !state.holders.is_empty() {
                    return Ok(());
                }
            }
            _ => match state.holders.iter().position(|h| *h == owner) {
                Some(at) => {
                    state.holders.remove(at);
                }
                None if self.kind == HandleKind::Lock && state.holders.is_empty() => {
                    return Err(Error::InvalidArgument(
                        "release() of a lock that is not locked".into(),
                    ));
                }
                None if !state.holders.is_empty() => {
                    state.holders.remove(0);
                }
                None => {}
            },
        }
        state.available += 1;
        drop(state);
        self.changed();
        Ok(())
    }

    /// Condition: releases the lock entirely if `owner` holds it, answering how often it was held.
    fn release_all(&self, owner: Owner) -> Result<u64, Error> {
        let mut state = self.lock();
        let held = state.holders.iter().filter(|h| **h == owner).count() as u64;
        if held == 0 {
            return Err(not_held("wait"));
        }
        state.holders.retain(|h| *h != owner);
        state.available += if self.kind == HandleKind::RLock {
            1
        } else {
            held
        };
        drop(state);
        self.changed();
        Ok(held)
    }

    fn holds(&self, owner: Owner) -> bool {
        self.lock().holders.contains(&owner)
    }

    /// Event: sets or clears the flag.
    fn set(&self, on: bool) {
        self.lock().set = on;
        if on {
            self.changed();
        }
    }

    /// Event: waits for the flag.
    fn wait_set(&self, asker: &Asker) -> Result<Waited, Error> {
        match self.until(asker.deadline, asker.interrupt, |state| {
            state.set.then_some(())
        }) {
            Until::Ready(()) => Ok(Waited::Yes(1)),
            Until::TimedOut => Ok(Waited::TimedOut),
            Until::Stopped(e) => Err(e),
        }
    }

    /// Condition: releases the lock and joins the waiters, oldest last.
    pub(crate) fn sleep(&self, owner: Owner) -> Result<Sleep, Error> {
        let held = self.the_lock().release_all(owner)?;
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.sleepers.push_back((ticket, owner));
        Ok(Sleep { ticket, held })
    }

    /// Condition: `Some(Ok(()))` once `sleep` was notified, an error if its process ended meanwhile.
    fn notified(state: &mut State, sleep: &Sleep) -> Option<Result<(), Error>> {
        if state.woken.remove(&sleep.ticket) {
            return Some(Ok(()));
        }
        if !state.sleepers.iter().any(|(t, _)| *t == sleep.ticket) {
            return Some(Err(Error::InvalidArgument(
                "the process waiting on this condition has ended".into(),
            )));
        }
        None
    }

    /// Condition: whether `sleep` was notified (`None`: not yet): a parked wait's retry.
    pub(crate) fn was_notified(&self, sleep: &Sleep) -> Option<Result<(), Error>> {
        SyncObject::notified(&mut self.lock(), sleep)
    }

    /// Condition: `sleep` stops waiting (its deadline passed, or it was interrupted); `true` if it
    /// was notified all the same.
    pub(crate) fn wake_up(&self, sleep: &Sleep) -> bool {
        let mut state = self.lock();
        if state.woken.remove(&sleep.ticket) {
            return true;
        }
        state.sleepers.retain(|(t, _)| *t != sleep.ticket);
        false
    }

    /// The lock a condition's waiter takes back once its wait is over.
    pub(crate) fn the_lock(&self) -> &SyncObject {
        self.lock.as_deref().expect("a condition has a lock")
    }

    /// Condition: releases the lock, waits to be notified (or the deadline), takes the lock back
    /// as often as it was held. `Yes` when notified.
    fn wait_notified(&self, asker: &Asker) -> Result<Waited, Error> {
        let sleep = self.sleep(asker.owner)?;
        let notified = match self.until(asker.deadline, asker.interrupt, |state| {
            SyncObject::notified(state, &sleep)
        }) {
            Until::Ready(Ok(())) => true,
            // An ended waiter needs the lock no more.
            Until::Ready(Err(e)) => return Err(e),
            Until::TimedOut => self.wake_up(&sleep),
            Until::Stopped(e) => {
                self.wake_up(&sleep);
                return Err(e);
            }
        };
        let retake = Asker {
            deadline: None,
            ..*asker
        };
        self.the_lock().acquire(&retake, sleep.held)?;
        Ok(if notified {
            Waited::Yes(1)
        } else {
            Waited::TimedOut
        })
    }

    /// Condition: wakes up to `n` waiters, oldest first. The caller must hold the lock.
    fn notify(&self, owner: Owner, n: u64) -> Result<(), Error> {
        if !self.the_lock().holds(owner) {
            return Err(not_held("notify"));
        }
        wake(&mut self.lock(), n);
        self.changed();
        Ok(())
    }

    /// Barrier: `owner` arrives. `Ok(Ok(index))` if it was the last party (the barrier opens),
    /// `Ok(Err(arrival))` if it has to wait for the others.
    pub(crate) fn arrive(&self, owner: Owner) -> Result<Result<u64, Arrival>, Error> {
        let mut state = self.lock();
        broken(&state)?;
        let index = state.holders.len() as u64;
        state.holders.push(owner);
        if (state.holders.len() as u64) < state.parties {
            let (generation, resets) = (state.generation, state.resets);
            return Ok(Err(Arrival {
                index,
                generation,
                resets,
            }));
        }
        state.holders.clear();
        state.generation += 1;
        drop(state);
        self.changed();
        Ok(Ok(index))
    }

    /// Barrier: `Some` once `arrival` has passed (its index) or cannot (reset or broken).
    fn passed(state: &State, arrival: &Arrival) -> Option<Result<u64, Error>> {
        if state.generation != arrival.generation {
            return Some(Ok(arrival.index));
        }
        if state.resets != arrival.resets {
            return Some(Err(Error::InvalidArgument(
                "the barrier was reset while this party waited".into(),
            )));
        }
        broken(state).err().map(Err)
    }

    /// Barrier: whether `arrival` has passed (`None`: not yet): a parked wait's retry.
    pub(crate) fn has_passed(&self, arrival: &Arrival) -> Option<Result<u64, Error>> {
        SyncObject::passed(&self.lock(), arrival)
    }

    /// Barrier: `arrival` stops waiting, and breaks the barrier for the others (as in Python, so
    /// none waits for a party that will not come), unless it passed just now.
    pub(crate) fn give_up(&self, arrival: &Arrival, why: &str) -> Option<Result<u64, Error>> {
        let state = self.lock();
        let passed = SyncObject::passed(&state, arrival);
        if passed.is_none() {
            self.break_barrier(state, why);
        }
        passed
    }

    /// Barrier: waits until every party has arrived. A party that times out breaks the barrier for
    /// the others; a `reset()` or `abort()` while parties wait fails each of them.
    fn pass(&self, asker: &Asker) -> Result<Waited, Error> {
        let arrival = match self.arrive(asker.owner)? {
            Ok(index) => return Ok(Waited::Yes(index)),
            Err(arrival) => arrival,
        };
        let why = match self.until(asker.deadline, asker.interrupt, |state| {
            SyncObject::passed(state, &arrival)
        }) {
            Until::Ready(passed) => return passed.map(Waited::Yes),
            Until::TimedOut => Ok("a party timed out"),
            Until::Stopped(e) => Err(e),
        };
        let reason = match &why {
            Ok(why) => why,
            Err(_) => "a party was interrupted",
        };
        match self.give_up(&arrival, reason) {
            Some(passed) => passed.map(Waited::Yes),
            None => why.map(|_| Waited::TimedOut),
        }
    }

    /// Barrier: back to its first state. Parties waiting now get an error, as in Python.
    fn reset(&self) {
        let mut state = self.lock();
        state.broken = None;
        if !state.holders.is_empty() {
            state.resets += 1;
            state.holders.clear();
        }
        drop(state);
        self.changed();
    }

    /// Condition: the tickets for which `gone` is true leave; a notification one of them had not
    /// yet taken goes to the next waiter instead.
    fn leave(&self, mut state: MutexGuard<'_, State>, gone: impl Fn(u64) -> bool) {
        state.sleepers.retain(|(t, _)| !gone(*t));
        let lost = state.woken.iter().filter(|t| gone(**t)).count() as u64;
        state.woken.retain(|t| !gone(*t));
        wake(&mut state, lost);
        drop(state);
        self.changed();
    }

    fn break_barrier(&self, mut state: MutexGuard<'_, State>, why: &str) {
        state.broken.get_or_insert_with(|| why.to_string());
        state.holders.clear();
        drop(state);
        self.changed();
    }

    /// `owner` has ended: its permits come back, a barrier it waited at breaks, and a notification
    /// it had not taken goes to another waiter.
    pub(crate) fn forget(&self, owner: Owner) {
        let mut state = self.lock();
        if self.kind == HandleKind::Condition {
            let tickets: HashSet<u64> = state
                .sleepers
                .iter()
                .filter(|(_, o)| *o == owner)
                .map(|(t, _)| *t)
                .collect();
            if !tickets.is_empty() {
                self.leave(state, |t| tickets.contains(&t));
            }
            return;
        }
        let before = state.holders.len();
        state.holders.retain(|h| *h != owner);
        let gone = (before - state.holders.len()) as u64;
        if gone == 0 {
            return;
        }
        match self.kind {
            HandleKind::Barrier => return self.break_barrier(state, "a waiting process ended"),
            HandleKind::RLock => state.available = 1,
            _ => state.available += gone,
        }
        drop(state);
        self.changed();
    }
}

impl Wake for SyncObject {
    fn wake(&self) {
        let _state = self.lock();
        self.changed.notify_all();
    }
}

/// Moves up to `n` sleepers to the woken set, oldest first.
fn wake(state: &mut State, n: u64) {
    for _ in 0..n {
        let Some((ticket, _)) = state.sleepers.pop_front() else {
            break;
        };
        state.woken.insert(ticket);
    }
}

fn not_held(what: &str) -> Error {
    Error::InvalidArgument(format!(
        "{what}() on a condition whose lock this process does not hold: acquire() it first"
    ))
}

fn broken(state: &State) -> Result<(), Error> {
    match &state.broken {
        Some(why) => Err(Error::InvalidArgument(format!(
            "the barrier is broken ({why}); call reset() to use it again"
        ))),
        None => Ok(()),
    }
}

impl Inner {
    pub(super) fn sync_action(
        &self,
        caller: &Caller,
        id: u64,
        action: SyncAction,
    ) -> Result<Reply, Error> {
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

    pub(super) fn sync_object(&self, id: u64) -> Result<Arc<SyncObject>, Error> {
        lock(&self.syncs).get(&id).cloned().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no lock, semaphore, condition, event or barrier with id {id}"
            ))
        })
    }

    /// `condition()` over a new re-entrant lock, or `condition(lock)`.
    pub(super) fn new_condition(&self, lock_id: Option<u64>) -> Result<Reply, Error> {
        // A condition's own lock is reached only through the condition, so it gets no id: one
        // kept under an id that no handle names was never freed (300 bytes per `condition()`).
        let under = match lock_id {
            Some(id) => self.sync_object(id)?,
            None => self.woken(Arc::new(SyncObject::new(HandleKind::RLock, 1))),
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

    pub(super) fn new_sync(&self, kind: HandleKind, size: u64) -> u64 {
        let id = self.id();
        let object = self.woken(Arc::new(SyncObject::new(kind, size)));
        lock(&self.syncs).insert(id, object);
        id
    }

    /// Whether the holder of a permit is still there to release it.
    pub(super) fn is_alive(&self, owner: Owner) -> bool {
        match owner {
            Owner::Process(MAIN) => true,
            Owner::Process(id) => self.process(id).is_ok_and(|p| p.ending().is_none()),
            Owner::Worker(id) => lock(&self.workers)
                .get(&id)
                .is_some_and(|w| *w.task() != Task::Dead),
        }
    }

    pub(super) fn forget_owner(&self, owner: Owner) {
        let objects: Vec<_> = lock(&self.syncs).values().cloned().collect();
        for object in objects {
            object.forget(owner);
        }
    }
}
