//! A page of memory shared between the parent and one worker, where the worker publishes which
//! `pool_map` item it is running and since when. The parent reads it when the worker dies, to name
//! the exact item (a SIGKILL leaves no time to say anything), and to spot calls past their time limit
//! that do not stop by themselves. Linux only (memfd); elsewhere there is no board and the parent
//! falls back to what the worker has reported. A worker that panics leaves its last words there
//! too, so its death is reported with the panic's message and place.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::transport::Progress;

#[repr(C)]
struct Slots {
    job: AtomicU64,
    /// Chunk in the high 32 bits, offset in the low 32, plus one (0: nothing published yet).
    position: AtomicU64,
    /// When the item started, if the job has a time limit (else 0).
    started_ns: AtomicU64,
    /// Bytes of last words written (0: none), stored after them.
    words_len: AtomicU64,
    /// The last words (a panic message), eight bytes to a slot.
    words: [AtomicU64; WORDS_SLOTS],
}

/// Room for last words: 2 KiB.
const WORDS_SLOTS: usize = 256;

/// Packs `text` (cut at a character boundary to fit) into `slots`, then publishes its length.
fn store_words(len: &AtomicU64, slots: &[AtomicU64; WORDS_SLOTS], text: &str) {
    let mut end = text.len().min(WORDS_SLOTS * 8);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    for (slot, bytes) in slots.iter().zip(text.as_bytes()[..end].chunks(8)) {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        slot.store(u64::from_le_bytes(word), Ordering::Relaxed);
    }
    len.store(end as u64, Ordering::Release);
}

fn load_words(len: &AtomicU64, slots: &[AtomicU64; WORDS_SLOTS]) -> Option<String> {
    let len = (len.load(Ordering::Acquire) as usize).min(WORDS_SLOTS * 8);
    if len == 0 {
        return None;
    }
    let bytes: Vec<u8> = slots
        .iter()
        .flat_map(|slot| slot.load(Ordering::Relaxed).to_le_bytes())
        .take(len)
        .collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

pub(crate) use imp::Board;

#[cfg(target_os = "linux")]
mod imp {
    use std::{
        io,
        os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        ptr::NonNull,
    };

    use super::{Ordering, Progress, Slots, load_words, store_words};
    use crate::clock::now_ns;

    const SIZE: usize = 4096;
    const _: () = assert!(std::mem::size_of::<Slots>() <= SIZE);

    /// One mapped page; unmapped on drop.
    pub(crate) struct Board {
        slots: NonNull<Slots>,
        /// Kept by the parent until the worker has been started with it.
        pub(super) fd: Option<OwnedFd>,
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

        /// The page's descriptor as a worker's standard input: handed over at spawn (so no
        /// `pre_exec` is needed and the spawn stays a cheap `posix_spawn`), and the parent keeps
        /// only its mapping.
        pub(crate) fn take_as_stdin(&mut self) -> Option<std::process::Stdio> {
            self.fd.take().map(std::process::Stdio::from)
        }

        fn slots(&self) -> &Slots {
            // SAFETY: mapped for our lifetime, page-aligned, only used through atomics.
            unsafe { self.slots.as_ref() }
        }

        /// Worker side: "now running `offset` of `chunk` of `job`", timestamped when `timed`.
        /// Plain stores, cheap enough for every item: the start time and job are written before
        /// the position, so a reader that sees a position never sees an older start.
        pub(crate) fn publish(&self, job: u64, chunk: u32, offset: u32, timed: bool) {
            let s = self.slots();
            s.started_ns
                .store(if timed { now_ns() } else { 0 }, Ordering::Relaxed);
            s.job.store(job, Ordering::Relaxed);
            let position = ((chunk as u64) << 32 | offset as u64) + 1;
            s.position.store(position, Ordering::Release);
        }

        /// Parent side: the last published progress, if any was published.
        pub(crate) fn read(&self) -> Option<Progress> {
            let s = self.slots();
            let position = s.position.load(Ordering::Acquire).checked_sub(1)?;
            Some(Progress {
                job: s.job.load(Ordering::Relaxed),
                chunk: position >> 32,
                offset: position & 0xffff_ffff,
                started_ns: s.started_ns.load(Ordering::Relaxed),
            })
        }
    }

    impl Board {
        /// Worker side: what to report if this worker dies now (a panic's message and place).
        pub(crate) fn say_last_words(&self, text: &str) {
            let s = self.slots();
            store_words(&s.words_len, &s.words, text);
        }

        /// Parent side: the worker's last words, if it left any.
        pub(crate) fn last_words(&self) -> Option<String> {
            let s = self.slots();
            load_words(&s.words_len, &s.words)
        }
    }

    impl Drop for Board {
        fn drop(&mut self) {
            // SAFETY: unmapping the page mapped in `map`.
            unsafe { libc::munmap(self.slots.as_ptr().cast(), SIZE) };
        }
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
        pub(crate) fn take_as_stdin(&mut self) -> Option<std::process::Stdio> {
            None
        }
        pub(crate) fn publish(&self, _job: u64, _chunk: u32, _offset: u32, _timed: bool) {}
        pub(crate) fn read(&self) -> Option<Progress> {
            None
        }
        pub(crate) fn say_last_words(&self, _text: &str) {}
        pub(crate) fn last_words(&self) -> Option<String> {
            None
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::clock::now_ns;

    #[test]
    fn a_worker_mapping_sees_what_the_parent_mapping_reads() {
        let mut parent = Board::create().unwrap();
        assert_eq!(parent.read(), None);
        // What a spawn hands over as the worker's standard input.
        let given = parent.fd.take().expect("a new board has its descriptor");
        let worker = Board::open(std::os::fd::IntoRawFd::into_raw_fd(given)).unwrap();
        let before = now_ns();
        worker.publish(7, 3, 41, true);
        let seen = parent.read().unwrap();
        assert_eq!((seen.job, seen.chunk, seen.offset), (7, 3, 41));
        assert!(seen.started_ns >= before);
        worker.publish(7, 4, 0, false);
        let seen = parent.read().unwrap();
        assert_eq!((seen.chunk, seen.offset, seen.started_ns), (4, 0, 0));
        assert_eq!(parent.last_words(), None);
        worker.say_last_words("panicked at src/main.rs:3:5: é");
        assert_eq!(
            parent.last_words().unwrap(),
            "panicked at src/main.rs:3:5: é"
        );
        worker.say_last_words(&"x".repeat(5000));
        assert_eq!(parent.last_words().unwrap().len(), 2048);
    }
}
