//! A worker's request that has to wait (a join, a get, an acquire, a barrier...) is parked on the
//! object it waits for and answered from there, so a thousand waiting processes cost no thread.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    Caller, Inner, deadline,
    parked::{self, Retry, key_of},
    queue::Put,
    sync::{Arrival, Asker, Sleep, SyncObject},
    worker::Worker,
};
use crate::{
    Error, Value,
    value::HandleKind,
    wire::{Op, Reply, SyncAction},
};

/// A parked request, with whom to answer.
struct Waiting {
    hub: Arc<Inner>,
    worker: Arc<Worker>,
    seq: u64,
    wait: Wait,
}

/// What a parked request waits for.
enum Wait {
    /// A request tried again as it is, with no time left, until it can be answered.
    Again { op: Op, key: usize },
    /// A barrier party, until the others come.
    Barrier {
        barrier: Arc<SyncObject>,
        arrival: Arrival,
        timeout: Option<f64>,
    },
    /// A condition's waiter, until it is notified.
    Sleep {
        condition: Arc<SyncObject>,
        sleep: Sleep,
    },
    /// A condition's waiter taking back its lock, with whether it was notified.
    Retake {
        condition: Arc<SyncObject>,
        held: u64,
        notified: bool,
    },
}

impl Inner {
    /// Answers `op`, a request that may wait on one object, now or once it can be, with no thread
    /// waiting meanwhile.
    pub(super) fn park(self: &Arc<Self>, worker: &Arc<Worker>, seq: u64, mut op: Op) {
        let caller = Caller::Worker(worker.clone());
        let parked = |wait: Wait, timeout: Option<f64>| {
            let waiting = Waiting {
                hub: self.clone(),
                worker: worker.clone(),
                seq,
                wait,
            };
            parked::park(Box::new(waiting), deadline(timeout));
        };
        let timeout = op.limit().and_then(|t| *t);
        let key = match self.waits_on(&op, &caller) {
            Ok(key) => key,
            Err(e) => return self.answer(worker, Some(seq), Err(e), None),
        };
        let Op::Sync { id, action } = op else {
            return parked(Wait::Again { op, key }, timeout);
        };
        let object = match self.sync_object(id) {
            Ok(object) => object,
            Err(e) => return self.answer(worker, Some(seq), Err(e), None),
        };
        let owner = caller.owner();
        match (object.kind(), action) {
            (HandleKind::Barrier, SyncAction::Wait { timeout }) => match object.arrive(owner) {
                Ok(Err(arrival)) => parked(
                    Wait::Barrier {
                        barrier: object,
                        arrival,
                        timeout,
                    },
                    timeout,
                ),
                Ok(Ok(index)) => self.answer(worker, Some(seq), Ok(Reply::Len(index)), None),
                Err(e) => self.answer(worker, Some(seq), Err(e), None),
            },
            (HandleKind::Condition, SyncAction::Wait { timeout }) => match object.sleep(owner) {
                Ok(sleep) => parked(
                    Wait::Sleep {
                        condition: object,
                        sleep,
                    },
                    timeout,
                ),
                Err(e) => self.answer(worker, Some(seq), Err(e), None),
            },
            (_, action) => parked(
                Wait::Again {
                    op: Op::Sync { id, action },
                    key,
                },
                timeout,
            ),
        }
    }

    /// The address of the object `op` waits on.
    fn waits_on(&self, op: &Op, caller: &Caller) -> Result<usize, Error> {
        Ok(match op {
            Op::Join { process, .. } => key_of(&*self.process(*process)?),
            Op::Get { queue, .. } | Op::Put { queue, .. } | Op::JoinQueue { queue, .. } => {
                key_of(&*self.queue(*queue)?)
            }
            Op::Recv { .. } => key_of(&*self.mailbox(caller)?),
            Op::Await { .. } | Op::WaitAny { .. } => key_of(&*self.executor),
            Op::Sync { id, action } => {
                let object = self.sync_object(*id)?;
                match (object.kind(), action) {
                    (HandleKind::Condition, SyncAction::Acquire { .. }) => {
                        key_of(object.the_lock())
                    }
                    _ => key_of(&*object),
                }
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "{other:?} is not a request that waits"
                )));
            }
        })
    }

    /// Performs `op` with no time left: `Err` with what it answers at its deadline if it would
    /// still have to wait.
    fn try_again(self: &Arc<Self>, op: &mut Op, caller: &Caller) -> Result<Answer, Answer> {
        if let Op::Put { queue, value, .. } = op {
            let queue = match self.queue(*queue) {
                Ok(queue) => queue,
                Err(e) => return Ok(Err(e)),
            };
            let now = Some(Instant::now());
            return match queue.put(
                std::mem::replace(value, Value::Unit),
                now,
                &self.config.interrupt,
            ) {
                Ok(Put::Done) => Ok(Ok(Reply::Unit)),
                Ok(Put::Full(back)) => {
                    *value = back;
                    Err(Err(super::timed_out("q.put on a full queue", Some(0.0))))
                }
                Err(e) => Ok(Err(e)),
            };
        }
        let mut now = op.clone();
        if let Some(limit) = now.limit() {
            *limit = Some(0.0);
        }
        let result = self.handle(now, caller);
        let waiting = match &result {
            Ok(Reply::Got(None) | Reply::Bool(false)) => true,
            Err(e) => e.is_timeout(),
            Ok(_) => false,
        };
        if waiting { Err(result) } else { Ok(result) }
    }
}

type Answer = Result<Reply, Error>;

impl Waiting {
    fn answer(&self, result: Result<Reply, Error>) -> bool {
        let caller = Caller::Worker(self.worker.clone());
        let source = match &self.wait {
            Wait::Again { op, .. } => self.hub.source(op, &caller).and_then(Result::ok),
            _ => None,
        };
        self.hub
            .answer(&self.worker, Some(self.seq), result, source.as_deref());
        true
    }
}

impl Retry for Waiting {
    fn key(&self) -> usize {
        match &self.wait {
            Wait::Again { key, .. } => *key,
            Wait::Barrier { barrier, .. } => key_of(&**barrier),
            Wait::Sleep { condition, .. } => key_of(&**condition),
            Wait::Retake { condition, .. } => key_of(condition.the_lock()),
        }
    }

    fn attempt(&mut self, expired: bool) -> bool {
        let caller = Caller::Worker(self.worker.clone());
        match &mut self.wait {
            Wait::Again { op, .. } => {
                let timeout = op.limit().and_then(|t| *t);
                match self.hub.try_again(op, &caller) {
                    Ok(result) => self.answer(result),
                    Err(at_deadline) if expired => self.answer(after(at_deadline, timeout)),
                    Err(_) => false,
                }
            }
            Wait::Barrier {
                barrier,
                arrival,
                timeout,
            } => {
                let passed = if expired {
                    barrier.give_up(arrival, "a party timed out")
                } else {
                    barrier.has_passed(arrival)
                };
                match passed {
                    Some(passed) => self.answer(passed.map(Reply::Len)),
                    None if expired => {
                        let timeout = *timeout;
                        self.answer(Err(super::timed_out("barrier wait", timeout)))
                    }
                    None => false,
                }
            }
            Wait::Sleep { condition, sleep } => {
                let notified = match condition.was_notified(sleep) {
                    Some(Ok(())) => true,
                    Some(Err(e)) => return self.answer(Err(e)),
                    None if expired => condition.wake_up(sleep),
                    None => return false,
                };
                self.wait = Wait::Retake {
                    condition: condition.clone(),
                    held: sleep.held,
                    notified,
                };
                false // tried again under the lock's key
            }
            Wait::Retake {
                condition,
                held,
                notified,
            } => {
                let (condition, held, notified) = (condition.clone(), *held, *notified);
                let owner = caller.owner();
                let asker = Asker {
                    owner,
                    deadline: None,
                    interrupt: &self.hub.config.interrupt,
                    alive: &|| self.hub.is_alive(owner),
                };
                match condition.the_lock().try_take(&asker, held) {
                    Some(taken) => self.answer(taken.map(|()| Reply::Bool(notified))),
                    None => false,
                }
            }
        }
    }

    fn belongs_to(&self, owner: usize) -> bool {
        owner == key_of(&*self.worker) || owner == key_of(&*self.hub)
    }
}

/// A timeout answer given with no time left, as given after `timeout`.
fn after(answer: Answer, timeout: Option<f64>) -> Answer {
    match answer {
        Err(Error::Timeout { what, .. }) => Err(Error::Timeout {
            what,
            after: Duration::from_secs_f64(timeout.unwrap_or_default()),
        }),
        answer => answer,
    }
}
