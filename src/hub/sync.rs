//! Locks, semaphores, events and barriers shared by processes: they live in the main process, and
//! remember who holds or waits on them, so that a process that ends never deadlocks the rest.

use crate::locks::lock;
use std::{
    sync::{Condvar, Mutex, MutexGuard},
    time::Instant,
};

use super::wait::wait;
use crate::{Error, Interrupt, value::HandleKind};

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
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Lock and semaphore: permits free now.
    available: u64,
    /// Lock and semaphore: one entry per permit taken; barrier: the parties waiting.
    holders: Vec<Owner>,
    /// Event: the flag.
    set: bool,
    /// Barrier: how many parties it waits for.
    parties: u64,
    /// Barrier: bumped each time every party has arrived.
    generation: u64,
    /// Barrier: why it is broken, if it is.
    broken: Option<String>,
}

/// How a wait ended.
pub(crate) enum Waited {
    /// Got a permit, saw the event set, or passed the barrier as this arrival index.
    Yes(u64),
    /// The deadline passed first.
    TimedOut,
}

impl SyncObject {
    /// A lock (`size` 1), semaphore (`size` permits), event, or barrier of `size` parties.
    pub(crate) fn new(kind: HandleKind, size: u64) -> SyncObject {
        let state = State {
            available: size,
            parties: size,
            ..State::default()
        };
        SyncObject {
            kind,
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

    /// Takes a permit for `owner`. `alive` is asked under this object's lock, so a permit is
    /// never given to an owner whose end was already cleaned up.
    pub(crate) fn acquire(
        &self,
        owner: Owner,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
        alive: impl Fn() -> bool,
    ) -> Result<Waited, Error> {
        let mut state = self.lock();
        while state.available == 0 {
            state = match wait(&self.changed, state, deadline, interrupt)? {
                Some(state) => state,
                None => return Ok(Waited::TimedOut),
            };
        }
        if !alive() {
            return Err(Error::InvalidArgument(
                "the process asking for this permit has ended".into(),
            ));
        }
        state.available -= 1;
        state.holders.push(owner);
        Ok(Waited::Yes(1))
    }

    /// Gives back `owner`'s permit. A lock held by another is released too (as Python allows);
    /// releasing an unlocked lock is an error. A semaphore counts up, as Python's does.
    pub(crate) fn release(&self, owner: Owner) -> Result<(), Error> {
        let mut state = self.lock();
        match state.holders.iter().position(|h| *h == owner) {
            Some(at) => {
                state.holders.remove(at);
            }
            None if self.kind == HandleKind::Lock && state.holders.is_empty() => {
                return Err(Error::InvalidArgument(
                    "release() of a lock that is not locked".into(),
                ));
            }
            None if self.kind == HandleKind::Lock => {
                state.holders.remove(0);
            }
            None => {}
        }
        state.available += 1;
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// Event: sets or clears the flag.
    pub(crate) fn set(&self, on: bool) {
        self.lock().set = on;
        if on {
            self.changed.notify_all();
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.lock().set
    }

    /// Event: waits for the flag.
    pub(crate) fn wait_set(
        &self,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Waited, Error> {
        let mut state = self.lock();
        while !state.set {
            state = match wait(&self.changed, state, deadline, interrupt)? {
                Some(state) => state,
                None => return Ok(Waited::TimedOut),
            };
        }
        Ok(Waited::Yes(1))
    }

    /// Barrier: waits until every party has arrived. A party that times out breaks the barrier for
    /// the others, as in Python, so none waits for a party that will not come.
    pub(crate) fn pass(
        &self,
        owner: Owner,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Waited, Error> {
        let mut state = self.lock();
        broken(&state)?;
        let index = state.holders.len() as u64;
        state.holders.push(owner);
        if state.holders.len() as u64 >= state.parties {
            state.holders.clear();
            state.generation += 1;
            drop(state);
            self.changed.notify_all();
            return Ok(Waited::Yes(index));
        }
        let generation = state.generation;
        while state.generation == generation {
            broken(&state)?;
            state = match wait(&self.changed, state, deadline, interrupt) {
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

    /// Barrier: mends a broken barrier (parties still waiting get the broken error).
    pub(crate) fn reset(&self) {
        let mut state = self.lock();
        state.broken = None;
        state.holders.clear();
        state.generation += 1;
    }

    fn break_barrier(&self, mut state: MutexGuard<'_, State>, why: &str) {
        state.broken.get_or_insert_with(|| why.to_string());
        state.holders.clear();
        drop(state);
        self.changed.notify_all();
    }

    /// `owner` has ended: its permits come back, and a barrier it waited at breaks.
    pub(crate) fn forget(&self, owner: Owner) {
        let mut state = self.lock();
        let before = state.holders.len();
        state.holders.retain(|h| *h != owner);
        let gone = (before - state.holders.len()) as u64;
        if gone == 0 {
            return;
        }
        if self.kind == HandleKind::Barrier {
            self.break_barrier(state, "a waiting process ended");
        } else {
            state.available += gone;
            drop(state);
            self.changed.notify_all();
        }
    }
}

fn broken(state: &State) -> Result<(), Error> {
    match &state.broken {
        Some(why) => Err(Error::InvalidArgument(format!(
            "the barrier is broken ({why}); call reset() to use it again"
        ))),
        None => Ok(()),
    }
}
