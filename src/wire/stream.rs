//! One local-socket connection shared by a reading thread and any number of writers.

use std::{
    io::{self, Read, Write},
    sync::{Arc, Mutex},
};

use interprocess::local_socket::Stream;
use serde::Serialize;

use super::{FrameReader, encode_frame};
use crate::Error;

/// A clonable byte-stream view of a shared socket (`&Stream` is `Read + Write`).
#[derive(Clone)]
pub(crate) struct SharedStream(pub(crate) Arc<Stream>);

impl Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for SharedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// The sending side of a connection: whole frames, one writer at a time.
pub(crate) struct Conn {
    stream: SharedStream,
    write_lock: Mutex<()>,
    peer: String,
}

impl Conn {
    pub(crate) fn new(stream: Stream, peer: impl Into<String>) -> Self {
        Conn {
            stream: SharedStream(Arc::new(stream)),
            write_lock: Mutex::new(()),
            peer: peer.into(),
        }
    }

    /// Who is at the other end, for error messages.
    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    /// Sends one message as one frame, so concurrent senders never interleave bytes.
    pub(crate) fn send<T: Serialize>(&self, msg: &T) -> Result<(), Error> {
        let frame = encode_frame(msg)?;
        self.send_encoded(&frame)
    }

    /// Sends a frame made by [`encode_frame`].
    pub(crate) fn send_encoded(&self, frame: &[u8]) -> Result<(), Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut stream = self.stream.clone();
        stream.write_all(frame).map_err(|_| Error::Disconnected {
            peer: self.peer.clone(),
        })
    }

    /// A frame reader over the same socket (only one thread should read).
    pub(crate) fn reader(&self) -> FrameReader<SharedStream> {
        FrameReader::new(self.stream.clone(), self.peer.clone())
    }
}
