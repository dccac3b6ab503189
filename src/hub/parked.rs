//! Requests that have to wait, kept without a thread each: one thread tries each again when the
//! object it waits on changes, and ends it at its deadline.
//!
//! Objects call [`changed`] after every change a waiter may be waiting for. A request is
//! registered under its object before it is first tried, so a change is never missed: either the
//! try sees it, or the change sees the registration and wakes the thread.

use crate::locks::lock;
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Instant,
};

use crossbeam_channel::{RecvTimeoutError, Sender, unbounded};

/// A request waiting on an object.
pub(crate) trait Retry: Send {
    /// The object whose changes may let it finish, by address.
    fn key(&self) -> usize;
    /// Tries to finish now, answering whoever asked; `false` if it has to wait on. With
    /// `expired` (its deadline has passed) it stops waiting for what it was waiting for: it gives
    /// its timeout answer, or goes on to a last wait with no deadline (a condition's waiter taking
    /// back its lock).
    fn attempt(&mut self, expired: bool) -> bool;
    /// Whether it was asked by, or on behalf of, `owner` (a worker or hub address), so it is
    /// dropped when that one leaves.
    fn belongs_to(&self, owner: usize) -> bool;
}

/// The address that names `object` as a key.
pub(crate) fn key_of<T: ?Sized>(object: &T) -> usize {
    std::ptr::from_ref(object).cast::<()>() as usize
}

/// Tries `retry` now, and if it has to wait, parks it until it finishes or `deadline` passes.
pub(crate) fn park(mut retry: Box<dyn Retry>, deadline: Option<Instant>) {
    watch(retry.key());
    if !finished(&mut retry, false) {
        send(Event::Park(retry, deadline));
    }
}

/// Tries `retry`, registered under its key, until it finishes (`true`) or its key holds still:
/// a request whose key changes as it goes (a condition's waiter, then taking back its lock) is
/// registered under the new key before it is tried again.
fn finished(retry: &mut Box<dyn Retry>, mut expired: bool) -> bool {
    loop {
        let key = retry.key();
        if retry.attempt(std::mem::take(&mut expired)) {
            unwatch(key);
            return true;
        }
        let now = retry.key();
        if now == key {
            return false;
        }
        watch(now);
        unwatch(key);
    }
}

/// `object` changed: the requests waiting on it are tried again.
pub(crate) fn changed<T: ?Sized>(object: &T) {
    if PARKED.load(Ordering::SeqCst) == 0 {
        return;
    }
    let key = key_of(object);
    if lock(watched()).contains_key(&key) {
        send(Event::Changed(key));
    }
}

/// `owner` (a worker or hub, by address) is gone: its parked requests are dropped unanswered.
pub(crate) fn forget<T: ?Sized>(owner: &T) {
    if PARKED.load(Ordering::SeqCst) > 0 {
        send(Event::Forget(key_of(owner)));
    }
}

enum Event {
    Park(Box<dyn Retry>, Option<Instant>),
    Changed(usize),
    Forget(usize),
}

/// Requests parked now, in every hub of this process: `changed` costs nothing while it is 0.
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// How many parked requests wait on each key.
fn watched() -> &'static Mutex<HashMap<usize, usize>> {
    static WATCHED: OnceLock<Mutex<HashMap<usize, usize>>> = OnceLock::new();
    WATCHED.get_or_init(Mutex::default)
}

fn watch(key: usize) {
    PARKED.fetch_add(1, Ordering::SeqCst);
    *lock(watched()).entry(key).or_default() += 1;
}

fn unwatch(key: usize) {
    let mut watched = lock(watched());
    if let Some(count) = watched.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            watched.remove(&key);
        }
    }
    drop(watched);
    PARKED.fetch_sub(1, Ordering::SeqCst);
}

fn send(event: Event) {
    static THREAD: OnceLock<Sender<Event>> = OnceLock::new();
    let tx = THREAD.get_or_init(|| {
        let (tx, rx) = unbounded();
        thread::Builder::new()
            .name("mpscript-waits".into())
            .spawn(move || {
                let mut shelf = Shelf::default();
                loop {
                    let event = match shelf.next_deadline() {
                        Some(at) => rx.recv_deadline(at),
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    };
                    match event {
                        Ok(event) => shelf.on(event),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    shelf.expire_due();
                }
            })
            .expect("cannot start the thread that keeps waiting requests");
        tx
    });
    // The receiver lives as long as the process.
    let _ = tx.send(event);
}

/// The waits thread's own record of what is parked.
#[derive(Default)]
struct Shelf {
    next_id: u64,
    parked: HashMap<u64, Box<dyn Retry>>,
    by_key: HashMap<usize, Vec<u64>>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Shelf {
    fn on(&mut self, event: Event) {
        match event {
            Event::Park(retry, deadline) => {
                let id = self.next_id;
                self.next_id += 1;
                if let Some(at) = deadline {
                    self.deadlines.push(Reverse((at, id)));
                }
                self.settle(id, retry, false);
            }
            Event::Changed(key) => {
                for id in self.by_key.remove(&key).unwrap_or_default() {
                    if let Some(retry) = self.parked.remove(&id) {
                        self.settle(id, retry, false);
                    }
                }
            }
            Event::Forget(owner) => {
                let gone: Vec<u64> = (self.parked.iter())
                    .filter(|(_, r)| r.belongs_to(owner))
                    .map(|(id, _)| *id)
                    .collect();
                for retry in gone.into_iter().filter_map(|id| self.take(id)) {
                    unwatch(retry.key());
                }
            }
        }
    }

    /// Tries `retry` and keeps it if it has to wait.
    fn settle(&mut self, id: u64, mut retry: Box<dyn Retry>, expired: bool) {
        if !finished(&mut retry, expired) {
            self.by_key.entry(retry.key()).or_default().push(id);
            self.parked.insert(id, retry);
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.deadlines.peek() {
            if self.parked.contains_key(id) {
                return Some(*at);
            }
            self.deadlines.pop(); // finished before its deadline
        }
        None
    }

    fn expire_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if let Some(retry) = self.take(id) {
                self.settle(id, retry, true);
            }
        }
    }

    /// Takes a parked request off the shelf before it has been changed (expired or forgotten).
    fn take(&mut self, id: u64) -> Option<Box<dyn Retry>> {
        let retry = self.parked.remove(&id)?;
        if let Some(ids) = self.by_key.get_mut(&retry.key()) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_key.remove(&retry.key());
            }
        }
        Some(retry)
    }
}
