//! A page of memory shared between the parent and one worker, where the worker publishes which
//! `pool_map` item it is running and since when. The parent reads it when the worker dies, to name
//! the exact item (a SIGKILL leaves no time to say anything), and to spot calls past their time limit
//! that do not stop by themselves. Linux only (memfd); elsewhere there is no board and the parent
//! falls back to what the worker has reported.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a worker is running, as last published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) job: u64,
    pub(crate) chunk: u64,
    pub(crate) offset: u64,
    /// When the item started, in [`now_ns`] time.
    pub(crate) started_ns: u64,
}

#[repr(C)]
struct Slots {
    /// Odd while the worker is writing (a sequence lock).
    seq: AtomicU64,
    job: AtomicU64,
    chunk: AtomicU64,
    offset: AtomicU64,
    started_ns: AtomicU64,
}

/// Nanoseconds on the system-wide monotonic clock, comparable between processes.
pub(crate) fn now_ns() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
    #[cfg(not(unix))]
    {
        0
    }
}

pub(crate) use imp::Board;
#[cfg(target_os = "linux")]
pub(crate) use imp::inherit_in_child;

#[cfg(target_os = "linux")]
mod imp {
    use std::{
        io,
        os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        ptr::NonNull,
    };

    use super::{Ordering, Progress, Slots, now_ns};

    const SIZE: usize = 4096;

    /// One mapped page; unmapped on drop.
    pub(crate) struct Board {
        slots: NonNull<Slots>,
        /// Kept by the parent until the worker has been started with it.
        fd: Option<OwnedFd>,
    }

    // SAFETY: the page is only accessed through atomics.
    unsafe impl Send for Board {}
    unsafe impl Sync for Board {}

    impl Board {
        /// Parent side: a new zeroed page, to hand to a worker by file descriptor.
        pub(crate) fn create() -> io::Result<Board> {
            // SAFETY: plain syscalls; the fd is owned right away.
            let fd = unsafe { libc::memfd_create(c"mpscript-board".as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            if unsafe { libc::ftruncate(fd.as_raw_fd(), SIZE as libc::off_t) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut board = Board::map(fd.as_raw_fd())?;
            board.fd = Some(fd);
            Ok(board)
        }

        /// Worker side: maps the page the parent passed as `fd`, then closes `fd`.
        pub(crate) fn open(fd: RawFd) -> io::Result<Board> {
            // SAFETY: the parent passed us this descriptor; we take ownership of it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            Board::map(fd.as_raw_fd())
        }

        fn map(fd: RawFd) -> io::Result<Board> {
            // SAFETY: a fresh shared mapping of a file at least SIZE bytes long.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let slots = NonNull::new(ptr.cast::<Slots>()).ok_or_else(io::Error::last_os_error)?;
            Ok(Board { slots, fd: None })
        }

        /// The descriptor to pass to the worker (it must survive `exec`: see `inherit_in_child`).
        pub(crate) fn fd(&self) -> Option<RawFd> {
            self.fd.as_ref().map(AsRawFd::as_raw_fd)
        }

        /// Closes the parent's descriptor once the worker has its own; the mapping stays.
        pub(crate) fn close_fd(&mut self) {
            self.fd = None;
        }

        fn slots(&self) -> &Slots {
            // SAFETY: mapped for our lifetime, page-aligned, only used through atomics.
            unsafe { self.slots.as_ref() }
        }

        /// Worker side: "now running `offset` of `chunk` of `job`".
        pub(crate) fn publish(&self, job: u64, chunk: u64, offset: u64) {
            let s = self.slots();
            s.seq.fetch_add(1, Ordering::AcqRel);
            s.job.store(job, Ordering::Relaxed);
            s.chunk.store(chunk, Ordering::Relaxed);
            s.offset.store(offset, Ordering::Relaxed);
            s.started_ns.store(now_ns(), Ordering::Relaxed);
            s.seq.fetch_add(1, Ordering::AcqRel);
        }

        /// Parent side: the last published progress, if any was published.
        pub(crate) fn read(&self) -> Option<Progress> {
            let s = self.slots();
            for _ in 0..64 {
                let before = s.seq.load(Ordering::Acquire);
                if before % 2 == 1 {
                    std::hint::spin_loop();
                    continue;
                }
                let progress = Progress {
                    job: s.job.load(Ordering::Relaxed),
                    chunk: s.chunk.load(Ordering::Relaxed),
                    offset: s.offset.load(Ordering::Relaxed),
                    started_ns: s.started_ns.load(Ordering::Relaxed),
                };
                if s.seq.load(Ordering::Acquire) == before {
                    return (before > 0).then_some(progress);
                }
            }
            None
        }
    }

    impl Drop for Board {
        fn drop(&mut self) {
            // SAFETY: unmapping the page mapped in `map`.
            unsafe { libc::munmap(self.slots.as_ptr().cast(), SIZE) };
        }
    }

    /// In the forked child before `exec`: keep `fd` open across `exec`. Async-signal-safe.
    pub(crate) fn inherit_in_child(fd: RawFd) -> io::Result<()> {
        // SAFETY: fcntl on a descriptor this process holds.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    use super::Progress;

    /// No shared page on this platform.
    pub(crate) struct Board;

    impl Board {
        pub(crate) fn create() -> io::Result<Board> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub(crate) fn open(_fd: i32) -> io::Result<Board> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub(crate) fn fd(&self) -> Option<i32> {
            None
        }
        pub(crate) fn close_fd(&mut self) {}
        pub(crate) fn publish(&self, _job: u64, _chunk: u64, _offset: u64) {}
        pub(crate) fn read(&self) -> Option<Progress> {
            None
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_worker_mapping_sees_what_the_parent_mapping_reads() {
        let parent = Board::create().unwrap();
        assert_eq!(parent.read(), None);
        // SAFETY: dup gives the "worker" side its own descriptor, as exec inheritance would.
        let fd = unsafe { libc::dup(parent.fd().unwrap()) };
        let worker = Board::open(fd).unwrap();
        let before = now_ns();
        worker.publish(7, 3, 41);
        let seen = parent.read().unwrap();
        assert_eq!((seen.job, seen.chunk, seen.offset), (7, 3, 41));
        assert!(seen.started_ns >= before);
    }
}
