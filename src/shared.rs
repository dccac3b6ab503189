//! Memory shared by processes: arrays of 64-bit atomics in a memfd that every process using one
//! maps, so a write in one worker is read in another with no message. A segment is reached by the
//! process that made it and its descriptor number (`/proc/PID/fd/N`), so a handle can be sent to a
//! worker that was already running.

use crate::locks::lock;
use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::{Arc, Mutex, OnceLock, Weak, atomic::AtomicU64},
};

/// One mapping of a shared segment; unmapped when the last handle in this process goes.
pub(crate) struct Segment {
    slots: NonNull<AtomicU64>,
    len: usize,
    /// Where other processes find it: the process that made it, and its descriptor there.
    pub(crate) owner: u32,
    pub(crate) fd: i32,
    /// In the process that made it: the descriptor itself.
    own_fd: Option<OwnedFd>,
}

// SAFETY: the mapping is only ever accessed through atomics.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

impl Segment {
    /// A new zeroed segment of `len` slots, made by this process.
    pub(crate) fn create(len: usize) -> io::Result<Arc<Segment>> {
        // SAFETY: plain syscalls; the descriptor is owned at once.
        let raw = unsafe { libc::memfd_create(c"mpscript-shared".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let bytes = (len.max(1) * 8) as libc::off_t;
        // SAFETY: resizing our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), bytes) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut segment = Segment::map(fd.as_raw_fd(), len)?;
        segment.owner = std::process::id();
        segment.fd = raw;
        segment.own_fd = Some(fd);
        let segment = Arc::new(segment);
        remember(&segment);
        Ok(segment)
    }

    /// The segment `fd` of process `owner`, of `len` slots: this process's mapping if it has one,
    /// else a new one.
    pub(crate) fn attach(owner: u32, fd: i32, len: usize) -> io::Result<Arc<Segment>> {
        if let Some(agent) = AGENT.get() {
            let why = format!(
                "a shared_array lives in the memory of the machine that made it; this function \
                 runs on the cluster agent {agent}, which cannot map it (pass the values instead)"
            );
            return Err(io::Error::other(why));
        }
        if let Some(segment) = lock(mapped()).get(&(owner, fd)).and_then(Weak::upgrade) {
            return Ok(segment);
        }
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{owner}/fd/{fd}"))?;
        let mut segment = Segment::map(file.as_raw_fd(), len)?;
        segment.owner = owner;
        segment.fd = fd;
        let segment = Arc::new(segment);
        remember(&segment);
        Ok(segment)
    }

    fn map(fd: i32, len: usize) -> io::Result<Segment> {
        // SAFETY: a shared mapping of a file at least this long.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1) * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let slots = NonNull::new(ptr.cast::<AtomicU64>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Segment {
            slots,
            len,
            owner: 0,
            fd: -1,
            own_fd: None,
        })
    }

    pub(crate) fn slots(&self) -> &[AtomicU64] {
        // SAFETY: `len` slots are mapped for our lifetime, aligned, only used through atomics.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr(), self.len) }
    }

    /// A handle to this segment is going to another process: the process that made it keeps its
    /// descriptor open from now on, so the receiver can still open it.
    pub(crate) fn sent(self: &Arc<Self>) {
        if self.own_fd.is_some() {
            lock(kept()).entry(self.fd).or_insert_with(|| self.clone());
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping, which nothing uses any more.
        unsafe { libc::munmap(self.slots.as_ptr().cast(), self.len.max(1) * 8) };
        lock(mapped()).remove(&(self.owner, self.fd));
    }
}

/// Mappings by the process that made the segment and its descriptor there.
type Mappings = Mutex<HashMap<(u32, i32), Weak<Segment>>>;

/// This process's mappings, so a handle received twice maps once.
fn mapped() -> &'static Mappings {
    static MAPPED: OnceLock<Mappings> = OnceLock::new();
    MAPPED.get_or_init(Mutex::default)
}

fn remember(segment: &Arc<Segment>) {
    lock(mapped()).insert((segment.owner, segment.fd), Arc::downgrade(segment));
}

/// Segments made here whose handles were sent elsewhere: kept for the life of this process.
fn kept() -> &'static Mutex<HashMap<i32, Arc<Segment>>> {
    static KEPT: OnceLock<Mutex<HashMap<i32, Arc<Segment>>>> = OnceLock::new();
    KEPT.get_or_init(Mutex::default)
}

/// Set in a worker of a cluster agent: shared memory made on another machine cannot be mapped.
static AGENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// This process runs on the cluster agent `name`: shared arrays sent here are clear errors.
pub(crate) fn on_agent(name: &str) {
    let _ = AGENT.set(name.to_string());
}
