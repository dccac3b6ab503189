//! One local-socket connection shared by a reading thread and any number of writers.

use crate::locks::lock;
use std::{
    io::{self, Read, Write},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use interprocess::local_socket::Stream;
use serde::Serialize;

use crate::{
    Error,
    wire::{FrameReader, append_frame},
};

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

/// How much posted data is held back before it is written anyway.
const POST_BUFFER: usize = 64 * 1024;
/// How long posted data may wait for more to join it.
const POST_DELAY: Duration = Duration::from_millis(1);

/// The sending side of a connection: whole frames, one writer at a time. Messages can be *sent*
/// (written now, after anything posted before them) or *posted* (batched into fewer writes, and
/// written within [`POST_DELAY`] by a flusher thread at the latest).
pub(crate) struct Conn {
    stream: SharedStream,
    pending: Mutex<Vec<u8>>,
    posted: Condvar,
    /// The flusher waits on `posted` (read and written under `pending`'s lock): only then is a
    /// post's notify, a system call, needed.
    flusher_waits: AtomicBool,
    peer: String,
}

impl Conn {
    pub(crate) fn new(stream: Stream, peer: impl Into<String>) -> Self {
        Conn {
            stream: SharedStream(Arc::new(stream)),
            pending: Mutex::new(Vec::new()),
            posted: Condvar::new(),
            flusher_waits: AtomicBool::new(false),
            peer: peer.into(),
        }
    }

    /// Who is at the other end, for error messages.
    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        lock(&self.pending)
    }

    /// Writes `msg` now, with everything posted before it, in order.
    pub(crate) fn send<T: Serialize>(&self, msg: &T) -> Result<(), Error> {
        let mut pending = self.lock();
        append_frame(msg, &mut pending)?;
        self.write_out(&mut pending)
    }

    /// Queues `msg` behind earlier messages; it is written with the next send, once
    /// [`POST_BUFFER`] bytes gather, or by the flusher thread.
    pub(crate) fn post<T: Serialize>(&self, msg: &T) -> Result<(), Error> {
        let mut pending = self.lock();
        let was_empty = pending.is_empty();
        append_frame(msg, &mut pending)?;
        if pending.len() >= POST_BUFFER {
            return self.write_out(&mut pending);
        }
        if was_empty && self.flusher_waits.load(Ordering::Relaxed) {
            self.posted.notify_one();
        }
        Ok(())
    }

    /// Writes whatever was posted.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        self.write_out(&mut self.lock())
    }

    fn write_out(&self, pending: &mut Vec<u8>) -> Result<(), Error> {
        if pending.is_empty() {
            return Ok(());
        }
        let result = self.stream.clone().write_all(pending);
        pending.clear();
        result.map_err(|_| Error::Disconnected {
            peer: self.peer.clone(),
        })
    }

    /// Starts the thread that writes posted messages no later than [`POST_DELAY`] after they were
    /// posted. It ends when the connection fails.
    pub(crate) fn start_flusher(self: &Arc<Self>) {
        let conn = self.clone();
        let _ = std::thread::Builder::new()
            .name("mpscript-flush".into())
            .spawn(move || {
                loop {
                    let mut pending = conn.lock();
                    while pending.is_empty() {
                        conn.flusher_waits.store(true, Ordering::Relaxed);
                        pending = conn.posted.wait(pending).unwrap_or_else(|e| e.into_inner());
                        conn.flusher_waits.store(false, Ordering::Relaxed);
                    }
                    drop(pending);
                    std::thread::sleep(POST_DELAY);
                    if conn.flush().is_err() {
                        return;
                    }
                }
            });
    }

    /// A frame reader over the same socket (only one thread should read).
    pub(crate) fn reader(&self) -> FrameReader<SharedStream> {
        FrameReader::new(self.stream.clone(), self.peer.clone())
    }
}
