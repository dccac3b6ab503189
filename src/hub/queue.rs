//! Queues live in the main process; every process reaches them through the hub.

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

/// A FIFO of values with an optional bound, waited on with deadlines.
pub(crate) struct Queue {
    items: Mutex<VecDeque<Value>>,
    maxsize: Option<usize>,
    not_empty: Condvar,
    not_full: Condvar,
}

impl Queue {
    pub(crate) fn new(maxsize: Option<usize>) -> Queue {
        Queue {
            items: Mutex::new(VecDeque::new()),
            maxsize,
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Value>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `value`, waiting while the queue is full until `deadline`.
    pub(crate) fn put(
        &self,
        value: Value,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Put, Error> {
        let mut items = self.lock();
        while self.maxsize.is_some_and(|max| items.len() >= max) {
            items = match wait(&self.not_full, items, deadline, interrupt)? {
                Some(items) => items,
                None => return Ok(Put::Full(value)),
            };
        }
        items.push_back(value);
        drop(items);
        self.not_empty.notify_one();
        Ok(Put::Done)
    }

    /// Takes the oldest value, waiting while the queue is empty; `None` if `deadline` passes.
    pub(crate) fn get(
        &self,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Option<Value>, Error> {
        let mut items = self.lock();
        loop {
            if let Some(value) = items.pop_front() {
                drop(items);
                self.not_full.notify_one();
                return Ok(Some(value));
            }
            items = match wait(&self.not_empty, items, deadline, interrupt)? {
                Some(items) => items,
                None => return Ok(None),
            };
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
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
