//! The protocol between the main process and its workers: typed messages, and the bytes that carry them.

mod frame;
#[cfg(test)]
mod fuzz;
mod message;

#[cfg(test)]
pub(crate) use frame::encode_frame;
pub(crate) use frame::{FrameReader, MAX_VALUE, append_frame, over_the_frame_limit};
pub(crate) use message::{
    Answer, ExitCode, FromWorker, Id, ItemFailure, Items, KillSignal, MapAction, MapOptions,
    MapSetup, NewProcess, Object, Op, Outcome, Program, Reply, SyncAction, ToWorker,
};
