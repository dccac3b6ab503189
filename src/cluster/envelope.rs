//! What travels through the broker: a chunk of work for any agent, and, for the parent, each
//! message of the worker that runs it, wrapped with where it ran.

use serde::{Deserialize, Serialize};

use crate::{
    Error,
    wire::{FromWorker, ToWorker},
};

/// A chunk on the work queue (or a worker's reply to a request, on that worker's own subject).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Work {
    /// The parent's [`super::BUILD`]: an agent of another build refuses the chunk.
    pub(crate) build: String,
    pub(crate) run: String,
    /// The program's key in the programs bucket.
    pub(crate) program: String,
    /// The parent's slot that sent it: the agent answers on that slot's subject.
    pub(crate) slot: u64,
    /// The `Map` message itself, its job's setup always included (any worker may take it).
    pub(crate) message: ToWorker,
}

/// One thing an agent tells the parent about a slot's chunk.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Back {
    /// The agent's name.
    pub(crate) host: String,
    /// Where the parent answers the worker's requests.
    pub(crate) reply_to: String,
    /// Which delivery of its chunk this is (1 unless an agent died or stopped with it).
    pub(crate) delivery: u64,
    /// This message's number among those about its chunk's delivery (from 1; 0: a hint that is
    /// never sent twice), so a copy sent again is dropped.
    pub(crate) seq: u64,
    pub(crate) event: Event,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Event {
    /// A message of the worker that runs the chunk.
    Message(FromWorker),
    /// The worker started this item of this chunk (said about once a second).
    Started { job: u64, chunk: u32, offset: u32 },
    /// That worker died; the item it had started, if it said.
    Died {
        status: String,
        code: i64,
        started: Option<(u64, u64, u64)>,
    },
    /// This chunk came again after the ack wait: the agent that had it died or stopped. It is not
    /// run again; the parent decides what does.
    Redelivered { job: u64, chunk: u32 },
    /// The agent cannot run this chunk (another build, a program that does not compile there).
    Refused { job: u64, chunk: u32, why: String },
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(value).map_err(|e| Error::Protocol {
        peer: "cluster".into(),
        detail: format!("cannot encode a message: {e}"),
    })
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], peer: &str) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Protocol {
        peer: peer.into(),
        detail: format!("not a message of this build: {e}"),
    })
}
