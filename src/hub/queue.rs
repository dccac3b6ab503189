//! Queues live in the main process; every process reaches them through the hub.

use crate::locks::lock;
use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard},
    time::Instant,
};

use super::wait::wait;
use crate::{Error, Interrupt, Value};

/// How a `put` ended when it did not fail.
#[derive(Debug, PartialEq)]
pub(crate) enum Put {
    Done,
    /// The queue stayed full until the deadline; the value is given back.
    Full(Value),
}

/// Hands a value to a worker blocked in `get`; gives it back if that worker is gone.
pub(crate) type Deliver = Box<dyn FnOnce(Value) -> Result<(), Value> + Send>;

/// A FIFO of values with an optional bound, waited on with deadlines.
pub(crate) struct Queue {
    state: Mutex<State>,
    maxsize: Option<usize>,
    not_empty: Condvar,
    not_full: Condvar,
}

#[derive(Default)]
struct State {
    items: VecDeque<Value>,
    /// Workers blocked in `get` with no time limit, by worker id, oldest first: a `put` hands its
    /// value straight to the first, with no thread in between.
    waiting: VecDeque<(u64, Deliver)>,
}

impl State {
    /// Hands `value` to the oldest parked `get` whose worker is still there; gives it back if none.
    fn hand_to_waiting(&mut self, mut value: Value) -> Option<Value> {
        while let Some((_, deliver)) = self.waiting.pop_front() {
            match deliver(value) {
                Ok(()) => return None,
                Err(back) => value = back, // that worker is gone; try the next
            }
        }
        Some(value)
    }
}

impl Queue {
    pub(crate) fn new(maxsize: Option<usize>) -> Queue {
        Queue {
            state: Mutex::default(),
            maxsize,
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Appends `value`, waiting while the queue is full until `deadline`.
    pub(crate) fn put(
        &self,
        value: Value,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Put, Error> {
        let mut state = self.lock();
        let Some(value) = state.hand_to_waiting(value) else {
            return Ok(Put::Done);
        };
        while self.maxsize.is_some_and(|max| state.items.len() >= max) {
            state = match wait(&self.not_full, state, deadline, interrupt)? {
                Some(state) => state,
                None => return Ok(Put::Full(value)),
            };
        }
        state.items.push_back(value);
        drop(state);
        self.not_empty.notify_one();
        Ok(Put::Done)
    }

    /// Appends `value` even past the bound (notices that must not be lost).
    pub(crate) fn push(&self, value: Value) {
        let mut state = self.lock();
        if let Some(value) = state.hand_to_waiting(value) {
            state.items.push_back(value);
            drop(state);
            self.not_empty.notify_one();
        }
    }

    /// Takes the oldest value, waiting while the queue is empty; `None` if `deadline` passes.
    pub(crate) fn get(
        &self,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Option<Value>, Error> {
        let mut state = self.lock();
        loop {
            if let Some(value) = state.items.pop_front() {
                drop(state);
                self.not_full.notify_one();
                return Ok(Some(value));
            }
            state = match wait(&self.not_empty, state, deadline, interrupt)? {
                Some(state) => state,
                None => return Ok(None),
            };
        }
    }

    /// Takes the oldest value, or (when empty) parks `deliver` to receive the next one.
    pub(crate) fn get_or_park(&self, worker: u64, deliver: Deliver) -> Option<Value> {
        let mut state = self.lock();
        match state.items.pop_front() {
            Some(value) => {
                drop(state);
                self.not_full.notify_one();
                Some(value)
            }
            None => {
                state.waiting.push_back((worker, deliver));
                None
            }
        }
    }

    /// Drops the parked gets of a worker that died.
    pub(crate) fn forget(&self, worker: u64) {
        self.lock().waiting.retain(|(w, _)| *w != worker);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::Arc, thread, time::Duration};

    #[test]
    fn a_bounded_queue_blocks_until_a_get_makes_room() {
        let i = Interrupt::default();
        let q = Arc::new(Queue::new(Some(1)));
        assert_eq!(q.put(Value::Int(1), None, &i).unwrap(), Put::Done);
        let soon = Instant::now() + Duration::from_millis(20);
        let full = q.put(Value::Int(2), Some(soon), &i).unwrap();
        assert_eq!(full, Put::Full(Value::Int(2)));
        let getter = {
            let q = q.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                q.get(None, &Interrupt::default()).unwrap()
            })
        };
        assert_eq!(q.put(Value::Int(3), None, &i).unwrap(), Put::Done);
        assert_eq!(getter.join().unwrap(), Some(Value::Int(1)));
        assert_eq!(
            q.get(Some(Instant::now()), &i).unwrap(),
            Some(Value::Int(3))
        );
        assert_eq!(q.get(Some(Instant::now()), &i).unwrap(), None);
    }

    #[test]
    fn an_interrupt_ends_a_blocked_get() {
        let i = Interrupt::default();
        let q = Queue::new(None);
        let trigger = i.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            trigger.trigger(2);
        });
        let err = q.get(None, &i).unwrap_err();
        assert!(matches!(err, Error::Interrupted { signal: 2 }), "{err}");
    }
}
