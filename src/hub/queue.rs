//! Queues live in the main process; every process reaches them through the hub.

use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard},
    time::Instant,
};

use crate::Value;

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

    /// Appends `value`, waiting while the queue is full; gives the value back if `deadline` passes.
    pub(crate) fn put(&self, value: Value, deadline: Option<Instant>) -> Result<(), Value> {
        let mut items = self.lock();
        while self.maxsize.is_some_and(|max| items.len() >= max) {
            items = match wait(&self.not_full, items, deadline) {
                Some(items) => items,
                None => return Err(value),
            };
        }
        items.push_back(value);
        drop(items);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Takes the oldest value, waiting while the queue is empty; `None` if `deadline` passes.
    pub(crate) fn get(&self, deadline: Option<Instant>) -> Option<Value> {
        let mut items = self.lock();
        loop {
            if let Some(value) = items.pop_front() {
                drop(items);
                self.not_full.notify_one();
                return Some(value);
            }
            items = wait(&self.not_empty, items, deadline)?;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Waits on `cv` until notified; `None` once `deadline` has passed.
fn wait<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> Option<MutexGuard<'a, T>> {
    match deadline {
        None => Some(cv.wait(guard).unwrap_or_else(|e| e.into_inner())),
        Some(deadline) => {
            let left = deadline.checked_duration_since(Instant::now())?;
            Some(
                cv.wait_timeout(guard, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::Arc, thread, time::Duration};

    #[test]
    fn a_bounded_queue_blocks_until_a_get_makes_room() {
        let q = Arc::new(Queue::new(Some(1)));
        q.put(Value::Int(1), None).unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(q.put(Value::Int(2), Some(soon)), Err(Value::Int(2)));
        let getter = {
            let q = q.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                q.get(None)
            })
        };
        q.put(Value::Int(3), None).unwrap();
        assert_eq!(getter.join().unwrap(), Some(Value::Int(1)));
        assert_eq!(q.get(Some(Instant::now())), Some(Value::Int(3)));
        assert_eq!(q.get(Some(Instant::now())), None);
    }
}
