//! Workers as local processes of this same executable, reached over an abstract local socket:
//! spawned and admitted by [`Launcher`], each with a memory page where it says which item it runs.

mod board;
pub(crate) mod child;
mod launch;
mod link;
mod stream;

pub(crate) use launch::{Launcher, random_hex};
