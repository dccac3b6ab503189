//! Workers as threads of this process, linked by channels, each running a scripted behaviour
//! instead of a script: the hub and its scheduler run for real over them, in a unit test, with
//! deaths, hangs and slow items on cue.

use crate::locks::lock;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::{Death, Progress, Transport, WorkerLink};
use crate::{
    Error, RemoteError, Value,
    clock::now_ns,
    wire::{FromWorker, ItemFailure, Items, Program, ToWorker},
};

/// What a worker does with one `pool_map` item (an integer of a range).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Act {
    /// Returns this value.
    Return(i64),
    /// Returns this value after a pause.
    Slowly(i64, Duration),
    /// The function throws.
    Throw,
    /// The worker dies (as if by SIGKILL) while running the item.
    Die,
    /// The call never returns by itself (a native wait that ignores its time limit).
    Hang,
}

/// What each worker does with item `n`; asked once per run of an item.
pub(crate) type Behaviour = Arc<dyn Fn(i64) -> Act + Send + Sync>;

/// What the workers were sent, in order, for tests to look at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sent {
    pub(crate) worker: u32,
    pub(crate) chunk: u32,
    pub(crate) items: Vec<i64>,
    /// How many more chunks were already waiting for this worker when it finished this one.
    pub(crate) waiting_after: usize,
}

pub(crate) struct InProcess {
    behaviour: Behaviour,
    next_pid: AtomicU32,
    log: Arc<Mutex<Vec<Sent>>>,
}

impl InProcess {
    pub(crate) fn new(behaviour: impl Fn(i64) -> Act + Send + Sync + 'static) -> InProcess {
        InProcess {
            behaviour: Arc::new(behaviour),
            next_pid: AtomicU32::new(1),
            log: Arc::default(),
        }
    }

    /// Every chunk finished (or started, for one whose worker died) so far.
    pub(crate) fn log(&self) -> Arc<Mutex<Vec<Sent>>> {
        self.log.clone()
    }
}

impl Transport for InProcess {
    fn start(&self, count: usize, _program: &Program) -> Result<Vec<Box<dyn WorkerLink>>, Error> {
        Ok((0..count)
            .map(|_| {
                let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
                Box::new(ThreadLink::start(
                    pid,
                    self.behaviour.clone(),
                    self.log.clone(),
                )) as Box<dyn WorkerLink>
            })
            .collect())
    }
}

/// What the worker thread and its link share.
#[derive(Default)]
struct Shared {
    progress: Mutex<Option<Progress>>,
    killed: AtomicBool,
    death: Mutex<Option<Death>>,
}

struct ThreadLink {
    pid: u32,
    label: String,
    to_worker: Sender<ToWorker>,
    from_worker: Receiver<FromWorker>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ThreadLink {
    fn start(pid: u32, behaviour: Behaviour, log: Arc<Mutex<Vec<Sent>>>) -> ThreadLink {
        let (to_worker, inbox) = unbounded();
        let (outbox, from_worker) = unbounded();
        let shared = Arc::new(Shared::default());
        let worker = FakeWorker {
            pid,
            inbox,
            outbox,
            shared: shared.clone(),
            behaviour,
            log,
        };
        ThreadLink {
            pid,
            label: format!("thread worker {pid}"),
            to_worker,
            from_worker,
            shared,
            thread: Mutex::new(Some(thread::spawn(move || worker.run()))),
        }
    }
}

impl WorkerLink for ThreadLink {
    fn label(&self) -> &str {
        &self.label
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn send(&self, message: &ToWorker) -> Result<(), Error> {
        self.to_worker
            .send(message.clone())
            .map_err(|_| Error::Disconnected {
                peer: self.label.clone(),
            })
    }

    fn recv(&self) -> Result<FromWorker, Error> {
        self.from_worker.recv().map_err(|_| Error::Disconnected {
            peer: self.label.clone(),
        })
    }

    fn kill(&self) {
        self.shared.killed.store(true, Ordering::SeqCst);
        let _ = self.to_worker.send(ToWorker::Shutdown); // wakes an idle worker
    }

    fn terminate(&self) {
        self.kill();
    }

    fn reap(&self, grace: Duration) -> Death {
        let deadline = Instant::now() + grace;
        if let Some(thread) = lock(&self.thread).take() {
            while !thread.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            if !thread.is_finished() {
                self.kill();
            }
            let _ = thread.join();
        }
        lock(&self.shared.death).clone().unwrap_or(Death {
            status: "exit code 0".into(),
            code: 0,
        })
    }

    fn progress(&self) -> Option<Progress> {
        *lock(&self.shared.progress)
    }
}

struct FakeWorker {
    pid: u32,
    inbox: Receiver<ToWorker>,
    outbox: Sender<FromWorker>,
    shared: Arc<Shared>,
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<Sent>>>,
}

/// A fake worker was killed, or died on cue, while running a chunk.
struct Ended;

impl FakeWorker {
    fn run(self) {
        let mut timed = false;
        while let Ok(message) = self.inbox.recv() {
            if self.shared.killed.load(Ordering::SeqCst) {
                return self.die();
            }
            match message {
                ToWorker::Map {
                    job,
                    chunk,
                    setup,
                    items,
                } => {
                    if let Some(setup) = setup {
                        timed = setup.timeout.is_some();
                    }
                    if self.map(job, chunk, &items, timed).is_err() {
                        return self.die();
                    }
                }
                ToWorker::Shutdown => return,
                _ => {}
            }
        }
    }

    /// Runs one chunk, sending its results (or its first failure) back.
    fn map(&self, job: u64, chunk: u32, items: &Items, timed: bool) -> Result<(), Ended> {
        let Items::Range { start, end } = *items else {
            panic!("the in-process transport runs ranges only");
        };
        let mut sent = Sent {
            worker: self.pid,
            chunk,
            items: (start..end).collect(),
            waiting_after: 0,
        };
        let mut results = Vec::new();
        for (offset, n) in (start..end).enumerate() {
            *lock(&self.shared.progress) = Some(Progress {
                job,
                chunk: u64::from(chunk),
                offset: offset as u64,
                started_ns: if timed { now_ns() } else { 0 },
            });
            let value = match (self.behaviour)(n) {
                Act::Return(v) => v,
                Act::Slowly(v, pause) => {
                    self.pause(pause)?;
                    v
                }
                Act::Throw => {
                    let error = RemoteError {
                        message: format!("item {n} threw"),
                        pid: self.pid,
                        host: String::new(),
                        line: 1,
                        column: 1,
                        function: "f".into(),
                    };
                    let failure = ItemFailure {
                        offset: offset as u32,
                        error,
                        timed_out: false,
                    };
                    let done = FromWorker::MapDone {
                        job,
                        chunk,
                        result: Err(failure),
                    };
                    let _ = self.outbox.send(done);
                    return Ok(());
                }
                Act::Die => {
                    lock(&self.log).push(sent);
                    return Err(Ended);
                }
                Act::Hang => {
                    self.pause(Duration::from_secs(3600))?;
                    0
                }
            };
            results.push(value);
        }
        sent.waiting_after = self.inbox.len();
        lock(&self.log).push(sent);
        let done = FromWorker::MapDone {
            job,
            chunk,
            result: Ok(Value::IntArray(results)),
        };
        let _ = self.outbox.send(done);
        Ok(())
    }

    /// Waits `pause`, unless the worker is killed first.
    fn pause(&self, pause: Duration) -> Result<(), Ended> {
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if self.shared.killed.load(Ordering::SeqCst) {
                return Err(Ended);
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Ends as a SIGKILL would: nothing more is sent, the link reads end of stream.
    fn die(self) {
        *lock(&self.shared.death) = Some(Death {
            status: "killed by signal 9 (SIGKILL)".into(),
            code: -9,
        });
    }
}
