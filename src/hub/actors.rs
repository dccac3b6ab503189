//! Processes as actors: every process's mailbox, registered names, monitors and links, all kept in
//! the main process so that any process can reach any other through its one connection.

use crate::locks::lock;
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use super::queue::{Put, Queue};
use crate::{Error, Interrupt, Value, value::ProcessHandle, wire::Reply};

use super::{Caller, Inner};

/// The process id of the main script.
pub(crate) const MAIN: u64 = 0;

/// How a process ended, as monitors and links see it.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    pub(crate) process: ProcessHandle,
    /// `"normal"` for a return (or `exit(0)`), else the error, exit code or signal.
    pub(crate) reason: String,
}

impl Ending {
    pub(crate) fn is_normal(&self) -> bool {
        self.reason == NORMAL
    }
}

/// The reason of a process that returned.
pub(crate) const NORMAL: &str = "normal";

/// Someone interested in a process's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// `monitor`: this process gets a `#{down: ...}` message.
    Monitor { by: u64 },
    /// `link`: the two end together (or, trapping exits, get an `#{exit: ...}` message).
    Link { with: u64 },
}

/// What the hub must do because a process ended: end these linked processes too.
pub(crate) type Doomed = Vec<(u64, String)>;

pub(crate) struct Actors {
    mailboxes: Mutex<HashMap<u64, Arc<Queue>>>,
    names: Mutex<HashMap<String, ProcessHandle>>,
    /// By watched process.
    watches: Mutex<HashMap<u64, Vec<Watch>>>,
    trapping: Mutex<HashSet<u64>>,
    /// Messages a mailbox may hold; 0 for no limit.
    limit: usize,
    /// Wakes the processes waiting in `recv` when the run is interrupted.
    interrupt: Interrupt,
}

impl Actors {
    pub(crate) fn new(limit: usize, interrupt: Interrupt) -> Actors {
        let actors = Actors {
            mailboxes: Mutex::default(),
            names: Mutex::default(),
            watches: Mutex::default(),
            trapping: Mutex::default(),
            limit,
            interrupt,
        };
        actors.open(MAIN);
        actors
    }

    /// Gives a new process its mailbox, before anything can know its id.
    pub(crate) fn open(&self, process: u64) {
        let bound = (self.limit > 0).then_some(self.limit);
        let mailbox = self.interrupt.wakes(Arc::new(Queue::new(bound)));
        lock(&self.mailboxes).insert(process, mailbox);
    }

    /// Takes back the mailbox of a process that never started.
    pub(crate) fn close(&self, process: u64) {
        lock(&self.mailboxes).remove(&process);
    }

    pub(crate) fn mailbox(&self, process: u64) -> Option<Arc<Queue>> {
        lock(&self.mailboxes).get(&process).cloned()
    }

    /// Puts `value` in `to`'s mailbox; `false` if that process has ended.
    pub(crate) fn send(
        &self,
        to: ProcessHandle,
        value: Value,
        interrupt: &Interrupt,
    ) -> Result<bool, Error> {
        let Some(mailbox) = self.mailbox(to.id) else {
            return Ok(false);
        };
        match mailbox.put(value, Some(Instant::now()), interrupt)? {
            Put::Done => Ok(true),
            Put::Full(_) => Err(Error::MailboxFull {
                pid: to.pid,
                limit: self.limit,
            }),
        }
    }

    /// `register(name, p)`: fails if the name belongs to another process that is still running.
    pub(crate) fn register(&self, name: String, process: ProcessHandle) -> Result<(), Error> {
        if self.mailbox(process.id).is_none() {
            return Err(Error::InvalidArgument(format!(
                "register(\"{name}\", ...): process {} has ended",
                process.pid
            )));
        }
        let mut names = lock(&self.names);
        match names.get(&name) {
            Some(owner) if *owner != process && self.mailbox(owner.id).is_some() => {
                Err(Error::InvalidArgument(format!(
                    "register: the name \"{name}\" is already taken by process {}",
                    owner.pid
                )))
            }
            _ => {
                names.insert(name, process);
                Ok(())
            }
        }
    }

    pub(crate) fn whereis(&self, name: &str) -> Option<ProcessHandle> {
        lock(&self.names).get(name).cloned()
    }

    pub(crate) fn trap_exits(&self, process: u64, on: bool) {
        let mut trapping = lock(&self.trapping);
        if on {
            trapping.insert(process);
        } else {
            trapping.remove(&process);
        }
    }

    /// Starts (or with `on: false` stops) `by` watching `target`. `ended` says, under the lock that
    /// orders this against [`Actors::ended`], whether the target has already ended and how; then
    /// the watch fires at once.
    pub(crate) fn watch(
        &self,
        by: ProcessHandle,
        target: ProcessHandle,
        link: bool,
        on: bool,
        ended: impl FnOnce() -> Option<Ending>,
    ) -> Doomed {
        let mut watches = lock(&self.watches);
        let (there, back) = if link {
            (
                Watch::Link { with: by.id },
                Some(Watch::Link { with: target.id }),
            )
        } else {
            (Watch::Monitor { by: by.id }, None)
        };
        if !on {
            remove(&mut watches, target.id, there);
            if let Some(back) = back {
                remove(&mut watches, by.id, back);
            }
            return Vec::new();
        }
        if let Some(ending) = ended() {
            drop(watches);
            return self.fire(there, &ending);
        }
        watches.entry(target.id).or_default().push(there);
        if let Some(back) = back {
            watches.entry(by.id).or_default().push(back);
        }
        Vec::new()
    }

    /// `process` ended: tells its monitors and links, closes its mailbox, frees its name, and
    /// returns the linked processes that must end with it.
    /// Whether a monitor or link will be told of `process`'s end.
    pub(crate) fn is_watched(&self, process: u64) -> bool {
        lock(&self.watches)
            .get(&process)
            .is_some_and(|w| !w.is_empty())
    }

    pub(crate) fn ended(&self, ending: &Ending) -> Doomed {
        let id = ending.process.id;
        lock(&self.mailboxes).remove(&id);
        lock(&self.names).retain(|_, p| p.id != id);
        lock(&self.trapping).remove(&id);
        let fired = {
            let mut watches = lock(&self.watches);
            let fired = watches.remove(&id).unwrap_or_default();
            for watch in &fired {
                if let Watch::Link { with } = watch {
                    remove(&mut watches, *with, Watch::Link { with: id });
                }
            }
            fired
        };
        fired
            .into_iter()
            .flat_map(|watch| self.fire(watch, ending))
            .collect()
    }

    fn fire(&self, watch: Watch, ending: &Ending) -> Doomed {
        match watch {
            Watch::Monitor { by } => {
                self.notify(by, "down", ending);
                Vec::new()
            }
            Watch::Link { with } if lock(&self.trapping).contains(&with) => {
                self.notify(with, "exit", ending);
                Vec::new()
            }
            Watch::Link { .. } if ending.is_normal() => Vec::new(),
            Watch::Link { with } => vec![(
                with,
                format!(
                    "linked process {} ended: {}",
                    ending.process.pid, ending.reason
                ),
            )],
        }
    }

    /// Delivers `#{<what>: pid, process: p, reason: ...}`, past the mailbox limit: losing a
    /// notice would be worse than a few extra messages.
    fn notify(&self, to: u64, what: &str, ending: &Ending) {
        let Some(mailbox) = self.mailbox(to) else {
            return;
        };
        let p = &ending.process;
        mailbox.push(Value::Map(vec![
            (what.into(), Value::Int(p.pid.into())),
            (
                "process".into(),
                Value::Process {
                    id: p.id,
                    pid: p.pid,
                },
            ),
            ("reason".into(), Value::Str(ending.reason.as_str().into())),
        ]));
    }
}

fn remove(watches: &mut HashMap<u64, Vec<Watch>>, process: u64, watch: Watch) {
    if let Some(list) = watches.get_mut(&process)
        && let Some(at) = list.iter().position(|w| *w == watch)
    {
        list.remove(at);
    }
}

impl Inner {
    /// `p.send(msg)`: `false` if the process has ended.
    pub(super) fn send(&self, to: u64, value: Value) -> Result<Reply, Error> {
        let to = self.process_handle(to)?;
        let sent = self.actors.send(to, value, &self.config.interrupt)?;
        Ok(Reply::Bool(sent))
    }

    pub(super) fn register(&self, name: String, process: u64) -> Result<Reply, Error> {
        self.share(process); // whereis() hands out handles nobody counts
        let process = self.process_handle(process)?;
        self.actors.register(name, process).map(|()| Reply::Unit)
    }

    pub(super) fn whereis(&self, name: &str) -> Reply {
        Reply::Value(
            self.actors
                .whereis(name)
                .map_or(Value::Unit, |p| Value::Process {
                    id: p.id,
                    pid: p.pid,
                }),
        )
    }

    pub(super) fn trap_exits(&self, caller: &Caller, on: bool) -> Result<Reply, Error> {
        self.actors.trap_exits(caller.process()?.id, on);
        Ok(Reply::Unit)
    }

    /// `monitor`, `link` and their undoing. The main script never ends before the others, so
    /// watching it does nothing.
    pub(super) fn watch(
        &self,
        caller: &Caller,
        process: u64,
        link: bool,
        on: bool,
    ) -> Result<Reply, Error> {
        let by = caller.process()?;
        if process == MAIN || process == by.id {
            return Ok(Reply::Unit);
        }
        let slot = self.process(process)?;
        let target = ProcessHandle::new(process, slot.pid());
        let doomed = self.actors.watch(by, target.clone(), link, on, || {
            slot.ending().map(|reason| Ending {
                process: target.clone(),
                reason,
            })
        });
        if on {
            slot.observe(); // its end will be told, even if it came first
            slot.share(); // in a notice carrying a handle nobody counts
        }
        self.doom(doomed);
        Ok(Reply::Unit)
    }

    /// Ends processes whose linked process ended abnormally.
    pub(super) fn doom(&self, doomed: Doomed) {
        for (id, why) in doomed {
            if id == MAIN {
                self.config.interrupt.end_by_link(why);
            } else if let Ok(slot) = self.process(id) {
                slot.terminate(why);
            }
        }
    }
}
