//! Queues live in the main process; every process reaches them through the hub's requests here
//! (put, get, join, a process's own mailbox).

use crate::locks::lock;
use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard, TryLockError},
    time::{Duration, Instant},
};

use super::{Caller, Inner, deadline, parked, send_reply, timed_out, wait::wait, worker::Worker};
use crate::{Error, Interrupt, Value, stop::Wake};

use std::sync::Arc;

use crate::wire::{Op, Reply};

/// How long a `get` looks at an empty queue before it sleeps: a little more than a small message
/// takes to reach a worker and come back.
const POLL: Duration = Duration::from_micros(60);

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
    /// `joinable_queue()`: counts items put and not yet `task_done()`.
    joinable: bool,
    not_empty: Condvar,
    not_full: Condvar,
    /// Joinable: every item put has been marked done.
    all_done: Condvar,
}

#[derive(Default)]
struct State {
    items: VecDeque<Value>,
    /// Workers blocked in `get` with no time limit, by worker id, oldest first: a `put` hands its
    /// value straight to the first, with no thread in between.
    waiting: VecDeque<(u64, Deliver)>,
    /// Joinable: items put and not yet marked done.
    unfinished: u64,
    /// Threads blocked in `get` and in `put`: a change wakes them only if there are some, since
    /// every notify is a system call whether anyone waits or not (most gets and puts of a busy
    /// queue find it ready).
    getters: usize,
    putters: usize,
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
        Queue::with_joining(maxsize, false)
    }

    /// A queue that, if `joinable`, counts unfinished items for `task_done` and `join`.
    pub(crate) fn with_joining(maxsize: Option<usize>, joinable: bool) -> Queue {
        Queue {
            state: Mutex::default(),
            maxsize,
            joinable,
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_done: Condvar::new(),
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
        state.unfinished += u64::from(self.joinable);
        let Some(value) = state.hand_to_waiting(value) else {
            return Ok(Put::Done);
        };
        while self.maxsize.is_some_and(|max| state.items.len() >= max) {
            state = match self.wait(
                &self.not_full,
                state,
                |s| &mut s.putters,
                deadline,
                interrupt,
            ) {
                Ok(Some(state)) => state,
                stopped => {
                    let mut state = self.lock();
                    state.unfinished -= u64::from(self.joinable);
                    return stopped.map(|_| Put::Full(value));
                }
            };
        }
        state.items.push_back(value);
        let wake = state.getters > 0;
        drop(state);
        if wake {
            self.not_empty.notify_one();
        }
        parked::changed(self);
        Ok(Put::Done)
    }

    /// Appends `value` even past the bound (notices that must not be lost).
    pub(crate) fn push(&self, value: Value) {
        self.place(value, VecDeque::push_back);
    }

    /// Puts back, first in line, a value taken that could not be delivered.
    pub(crate) fn unget(&self, value: Value) {
        self.place(value, VecDeque::push_front);
    }

    /// Hands `value` to a parked `get`, or stores it with `store`, whatever the bound.
    fn place(&self, value: Value, store: fn(&mut VecDeque<Value>, Value)) {
        let mut state = self.lock();
        if let Some(value) = state.hand_to_waiting(value) {
            store(&mut state.items, value);
            let wake = state.getters > 0;
            drop(state);
            if wake {
                self.not_empty.notify_one();
            }
            parked::changed(self);
        }
    }

    /// Takes the oldest value, waiting while the queue is empty; `None` if `deadline` passes.
    pub(crate) fn get(
        &self,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Option<Value>, Error> {
        let mut state = self.lock();
        if state.items.is_empty() {
            drop(state);
            self.poll_briefly(deadline);
            state = self.lock();
        }
        loop {
            if let Some(value) = state.items.pop_front() {
                self.taken(state);
                return Ok(Some(value));
            }
            state = match self.wait(
                &self.not_empty,
                state,
                |s| &mut s.getters,
                deadline,
                interrupt,
            )? {
                Some(state) => state,
                None => return Ok(None),
            };
        }
    }

    /// Looks at an empty queue for up to [`POLL`] (or `deadline`), yielding the processor
    /// between looks, before `get` sleeps: a value put meanwhile (a worker's answer, through the
    /// hub's reader thread) is then taken with no wake-up. On a virtual machine, waking a thread
    /// whose processor went idle costs as much as the rest of a round trip. Only the waiting
    /// script polls: a hub thread that polled too (tried for a worker's parked get) kept both
    /// processors busy, and round trips took twice as long. Never on one processor, where it
    /// would only keep the putter from running.
    fn poll_briefly(&self, deadline: Option<Instant>) {
        if crate::cpu_count() < 2 {
            return;
        }
        let until = Instant::now() + POLL;
        let until = deadline.map_or(until, |d| d.min(until));
        while Instant::now() < until {
            std::thread::yield_now();
            match self.state.try_lock() {
                Ok(state) if state.items.is_empty() => {}
                Err(TryLockError::WouldBlock) => {}
                _ => return,
            }
        }
    }

    /// Takes the oldest value, or (when empty) parks `deliver` to receive the next one.
    pub(crate) fn get_or_park(&self, worker: u64, deliver: Deliver) -> Option<Value> {
        let mut state = self.lock();
        match state.items.pop_front() {
            Some(value) => {
                self.taken(state);
                Some(value)
            }
            None => {
                state.waiting.push_back((worker, deliver));
                None
            }
        }
    }

    /// A value was taken: there is room for a `put`.
    fn taken(&self, state: MutexGuard<'_, State>) {
        let wake = state.putters > 0;
        drop(state);
        if wake {
            self.not_full.notify_one();
        }
        parked::changed(self);
    }

    /// Waits once on `cv`, counted among the waiters `count` gives (see [`State::getters`]).
    fn wait<'a>(
        &'a self,
        cv: &Condvar,
        mut state: MutexGuard<'a, State>,
        count: fn(&mut State) -> &mut usize,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Option<MutexGuard<'a, State>>, Error> {
        *count(&mut state) += 1;
        match wait(cv, state, deadline, interrupt) {
            Ok(Some(mut state)) => {
                *count(&mut state) -= 1;
                Ok(Some(state))
            }
            // No guard is held here: wait dropped it.
            gave_up => {
                *count(&mut self.lock()) -= 1;
                gave_up
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

    /// Joinable: one item taken earlier is finished.
    pub(crate) fn task_done(&self) -> Result<(), Error> {
        if !self.joinable {
            return Err(not_joinable("task_done"));
        }
        let mut state = self.lock();
        if state.unfinished == 0 {
            return Err(Error::InvalidArgument(
                "task_done() called more times than items were put".into(),
            ));
        }
        state.unfinished -= 1;
        if state.unfinished == 0 {
            drop(state);
            self.all_done.notify_all();
            parked::changed(self);
        }
        Ok(())
    }

    /// Joinable: waits until every item put has been marked done; `Some(n)` with the number still
    /// unfinished if `deadline` passes first.
    pub(crate) fn join(
        &self,
        deadline: Option<Instant>,
        interrupt: &Interrupt,
    ) -> Result<Option<u64>, Error> {
        if !self.joinable {
            return Err(not_joinable("join"));
        }
        let mut state = self.lock();
        while state.unfinished > 0 {
            state = match wait(&self.all_done, state, deadline, interrupt)? {
                Some(state) => state,
                None => return Ok(Some(self.lock().unfinished)),
            };
        }
        Ok(None)
    }
}

impl Wake for Queue {
    fn wake(&self) {
        let _state = self.lock();
        self.not_empty.notify_all();
        self.not_full.notify_all();
        self.all_done.notify_all();
    }
}

fn not_joinable(what: &str) -> Error {
    Error::InvalidArgument(format!(
        "q.{what}() is for queues made by joinable_queue(); this one was made by queue()"
    ))
}

impl Inner {
    pub(super) fn new_queue(&self, maxsize: Option<u64>, joinable: bool) -> Reply {
        let id = self.id();
        let queue = Queue::with_joining(maxsize.map(|m| m as usize), joinable);
        lock(&self.queues).insert(id, self.woken(Arc::new(queue)));
        Reply::Id(id)
    }

    pub(super) fn put(
        &self,
        queue: u64,
        value: Value,
        timeout: Option<f64>,
    ) -> Result<Reply, Error> {
        let deadline = deadline(timeout);
        match self
            .queue(queue)?
            .put(value, deadline, &self.config.interrupt)?
        {
            Put::Done => Ok(Reply::Unit),
            Put::Full(_) => Err(timed_out("q.put on a full queue", timeout)),
        }
    }

    pub(super) fn get(&self, queue: u64, timeout: Option<f64>) -> Result<Reply, Error> {
        let got = self
            .queue(queue)?
            .get(deadline(timeout), &self.config.interrupt)?;
        Ok(Reply::Got(got))
    }

    pub(super) fn join_queue(&self, queue: u64, timeout: Option<f64>) -> Result<Reply, Error> {
        match self
            .queue(queue)?
            .join(deadline(timeout), &self.config.interrupt)?
        {
            None => Ok(Reply::Unit),
            Some(left) => Err(timed_out(
                &format!("q.join ({left} item(s) not yet task_done())"),
                timeout,
            )),
        }
    }

    /// `recv()`: the caller's own mailbox's next message.
    pub(super) fn recv(&self, caller: &Caller, timeout: Option<f64>) -> Result<Reply, Error> {
        let got = self
            .mailbox(caller)?
            .get(deadline(timeout), &self.config.interrupt)?;
        Ok(Reply::Got(got))
    }

    /// The caller's own mailbox.
    pub(super) fn mailbox(&self, caller: &Caller) -> Result<Arc<Queue>, Error> {
        let me = caller.process()?;
        self.actors
            .mailbox(me.id)
            .ok_or_else(|| Error::InvalidArgument(format!("process {} has ended", me.pid)))
    }

    /// The queue a `get` or `recv` takes its value from.
    /// `None` for a request that takes no value (most, so nothing is looked up or allocated).
    pub(super) fn source(&self, op: &Op, caller: &Caller) -> Option<Result<Arc<Queue>, Error>> {
        match op {
            Op::Get { queue, .. } => Some(self.queue(*queue)),
            Op::Recv { .. } => Some(self.mailbox(caller)),
            _ => None,
        }
    }

    /// A worker's untimed `get`: answered now, or by the `put` that fills the queue.
    pub(super) fn get_or_park(
        &self,
        worker: &Arc<Worker>,
        seq: u64,
        queue: Result<Arc<Queue>, Error>,
    ) {
        let q = match queue {
            Ok(q) => q,
            Err(e) => {
                send_reply(worker, seq, Err(e));
                return;
            }
        };
        let to = worker.clone();
        // A value that cannot reach this worker stays in the queue: either it hung up, or the
        // value is over the frame limit (then its get fails, saying so).
        let deliver =
            Box::new(
                move |value| match send_reply(&to, seq, Ok(Reply::Got(Some(value)))) {
                    Some(Reply::Got(Some(value))) => Err(value),
                    _ => Ok(()),
                },
            );
        if let Some(value) = q.get_or_park(worker.id, deliver) {
            self.answer(worker, Some(seq), Ok(Reply::Got(Some(value))), Some(&q));
        }
    }

    pub(super) fn queue(&self, id: u64) -> Result<Arc<Queue>, Error> {
        lock(&self.queues)
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no queue with id {id} in this run")))
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
        let q = i.wakes(Arc::new(Queue::new(None)));
        let trigger = i.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            trigger.trigger(2);
        });
        let err = q.get(None, &i).unwrap_err();
        assert!(matches!(err, Error::Interrupted { signal: 2 }), "{err}");
    }
}
