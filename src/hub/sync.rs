//! Locks, re-entrant locks, semaphores, conditions, events and barriers shared by processes: they
//! live in the main process, and remember who holds or waits on them, so that a process that ends
//! never deadlocks the rest.

use crate::locks::lock;
use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Instant,
};

use super::wait::wait;
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
    /// Event: what to do once it is set (workers' untimed waits, parked without a thread).
    when_set: Vec<Then>,
}

/// Something to do once a wait is over: answer a worker's request that was parked, not waited for
/// on a thread of its own.
pub(crate) type Then = Box<dyn FnOnce() + Send>;

/// How a wait ended.
pub(crate) enum Waited {
    /// Got a permit, saw the event set, was notified, or passed the barrier as this arrival index.
    Yes(u64),
    /// The deadline passed first.
    TimedOut,
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

    fn the_lock(&self) -> &SyncObject {
        self.lock.as_deref().expect("a condition has a lock")
    }

    /// Whether `owner` may take a permit now: one is free, or it already holds this re-entrant lock.
    fn can_take(&self, state: &State, owner: Owner) -> bool {
        state.available > 0
            || (self.kind == HandleKind::RLock && state.holders.first() == Some(&owner))
    }

    /// Takes a permit for `asker` (`times` over, for a re-entrant lock a condition gives back).
    /// `alive` is asked under this object's lock, so a permit is never given to an owner whose end
    /// was already cleaned up.
    fn acquire(&self, asker: &Asker, times: u64) -> Result<Waited, Error> {
        let mut state = self.lock();
        while !self.can_take(&state, asker.owner) {
            state = match wait(&self.changed, state, asker.deadline, asker.interrupt)? {
                Some(state) => state,
                None => return Ok(Waited::TimedOut),
            };
        }
        if !(asker.alive)() {
            return Err(Error::InvalidArgument(
                "the process asking for this permit has ended".into(),
            ));
        }
        let reentry = self.kind == HandleKind::RLock && state.holders.first() == Some(&asker.owner);
        if !reentry {
            state.available -= 1;
        }
        state.holders.extend((0..times).map(|_| asker.owner));
        Ok(Waited::Yes(1))
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
        self.changed.notify_all();
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
        self.changed.notify_all();
        Ok(held)
    }

    fn holds(&self, owner: Owner) -> bool {
        self.lock().holders.contains(&owner)
    }

    /// Event: sets or clears the flag.
    fn set(&self, on: bool) {
        let mut state = self.lock();
        state.set = on;
        if !on {
            return;
        }
        let parked = std::mem::take(&mut state.when_set);
        drop(state);
        self.changed.notify_all();
        parked.into_iter().for_each(|then| then());
    }

    /// Event: runs `then` once the flag is set (now, if it is). `false` (and `then` dropped) if
    /// this is not an event.
    pub(crate) fn when_set(&self, then: Then) -> bool {
        if self.kind != HandleKind::Event {
            return false;
        }
        let mut state = self.lock();
        if state.set {
            drop(state);
            then();
        } else {
            state.when_set.push(then);
        }
        true
    }

    /// Event: waits for the flag.
    fn wait_set(&self, asker: &Asker) -> Result<Waited, Error> {
        let mut state = self.lock();
        while !state.set {
            state = match wait(&self.changed, state, asker.deadline, asker.interrupt)? {
                Some(state) => state,
                None => return Ok(Waited::TimedOut),
            };
        }
        Ok(Waited::Yes(1))
    }

    /// Condition: releases the lock, waits to be notified (or the deadline), takes the lock back
    /// as often as it was held. `Yes` when notified.
    fn wait_notified(&self, asker: &Asker) -> Result<Waited, Error> {
        let lock = self.the_lock();
        let held = lock.release_all(asker.owner)?;
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.sleepers.push_back((ticket, asker.owner));
        let notified = loop {
            if state.woken.remove(&ticket) {
                break Ok(true);
            }
            if !state.sleepers.iter().any(|(t, _)| *t == ticket) {
                break Err(Error::InvalidArgument(
                    "the process waiting on this condition has ended".into(),
                ));
            }
            match wait(&self.changed, state, asker.deadline, asker.interrupt) {
                Ok(Some(s)) => state = s,
                Ok(None) => {
                    state = self.lock();
                    state.sleepers.retain(|(t, _)| *t != ticket);
                    break Ok(state.woken.remove(&ticket));
                }
                Err(e) => {
                    self.leave(self.lock(), |t| t == ticket);
                    return Err(e);
                }
            }
        };
        drop(state);
        // An ended or interrupted waiter needs the lock no more.
        let notified = notified?;
        let retake = Asker {
            deadline: None,
            ..*asker
        };
        lock.acquire(&retake, held)?;
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
        let mut state = self.lock();
        wake(&mut state, n);
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// Condition: the tickets for which `gone` is true leave; a notification one of them had not
    /// yet taken goes to the next waiter instead.
    fn leave(&self, mut state: MutexGuard<'_, State>, gone: impl Fn(u64) -> bool) {
        state.sleepers.retain(|(t, _)| !gone(*t));
        let lost = state.woken.iter().filter(|t| gone(**t)).count() as u64;
        state.woken.retain(|t| !gone(*t));
        wake(&mut state, lost);
        drop(state);
        self.changed.notify_all();
    }

    /// Barrier: waits until every party has arrived. A party that times out breaks the barrier for
    /// the others, as in Python, so none waits for a party that will not come; a `reset()` or
    /// `abort()` while parties wait fails each of them.
    fn pass(&self, asker: &Asker) -> Result<Waited, Error> {
        let mut state = self.lock();
        broken(&state)?;
        let index = state.holders.len() as u64;
        state.holders.push(asker.owner);
        if state.holders.len() as u64 >= state.parties {
            state.holders.clear();
            state.generation += 1;
            drop(state);
            self.changed.notify_all();
            return Ok(Waited::Yes(index));
        }
        let (generation, resets) = (state.generation, state.resets);
        while state.generation == generation {
            if state.resets != resets {
                return Err(Error::InvalidArgument(
                    "the barrier was reset while this party waited".into(),
                ));
            }
            broken(&state)?;
            state = match wait(&self.changed, state, asker.deadline, asker.interrupt) {
                Ok(Some(state)) => state,
                Ok(None) => {
                    self.break_barrier(self.lock(), "a party timed out");
                    return Ok(Waited::TimedOut);
                }
                Err(e) => {
                    self.break_barrier(self.lock(), "a party was interrupted");
                    return Err(e);
                }
            };
        }
        Ok(Waited::Yes(index))
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
        self.changed.notify_all();
    }

    fn break_barrier(&self, mut state: MutexGuard<'_, State>, why: &str) {
        state.broken.get_or_insert_with(|| why.to_string());
        state.holders.clear();
        drop(state);
        self.changed.notify_all();
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
        self.changed.notify_all();
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
