//! The results of a `pool_map_unordered`: batches handed over as chunks finish, read by the script
//! as it iterates, and a way for an abandoned loop to stop the map.

use crate::locks::lock;
use std::{
    collections::VecDeque,
    sync::{
        Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use super::wait::wait;
use crate::{Error, Interrupt, Value, stop::Wake};

#[derive(Default)]
pub(crate) struct Results {
    state: Mutex<State>,
    ready: Condvar,
    /// The reader has gone (a loop left early, or the run ended): the map should stop.
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    batches: VecDeque<Value>,
    /// How the map ended, once it has.
    end: Option<Result<(), Error>>,
}

impl Results {
    /// A chunk's results (an array value), in whatever order chunks finish.
    pub(crate) fn push(&self, batch: Value) {
        lock(&self.state).batches.push_back(batch);
        self.ready.notify_all();
    }

    /// The map has ended, well or with the error of its first failed item.
    pub(crate) fn finish(&self, end: Result<(), Error>) {
        lock(&self.state).end = Some(end);
        self.ready.notify_all();
    }

    /// The next batch, waiting until `deadline`; `End` once every batch was taken and the map
    /// ended; the map's error (once) after the batches that came before it.
    pub(crate) fn next(
        &self,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Next, Error> {
        let mut state = lock(&self.state);
        loop {
            if let Some(batch) = state.batches.pop_front() {
                return Ok(Next::Batch(batch));
            }
            if let Some(end) = state.end.replace(Ok(())) {
                return end.map(|()| Next::End);
            }
            state.end = None;
            state = match wait(&self.ready, state, deadline, interrupt)? {
                Some(state) => state,
                None => return Ok(Next::TimedOut),
            };
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Wake for Results {
    fn wake(&self) {
        let _state = lock(&self.state);
        self.ready.notify_all();
    }
}

/// What [`Results::next`] found.
pub(crate) enum Next {
    Batch(Value),
    End,
    TimedOut,
}
