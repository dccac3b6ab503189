//! The protocol between the main process and its workers: typed messages, and the bytes that carry them.

mod frame;
#[cfg(test)]
mod fuzz;
mod message;
mod stream;

#[cfg(test)]
pub(crate) use frame::encode_frame;
pub(crate) use frame::{FrameReader, MAX_VALUE, append_frame, over_the_frame_limit};
pub use message::{
    Failure, FailureKind, FromWorker, ItemFailure, Items, KillSignal, Limits, MapOptions, MapSetup,
    Object, Op, OutStream, Outcome, Program, Reply, SyncAction, ToWorker,
};
pub(crate) use stream::{Conn, SharedStream};
