//! One clock for time limits that a worker sets and its parent checks: the system-wide monotonic
//! clock, comparable between processes of one machine.

/// Nanoseconds on the system-wide monotonic clock, comparable between processes.
pub(crate) fn now_ns() -> u64 {
    clock_ns(CLOCK_PRECISE)
}

/// The same clock read cheaply to within a few milliseconds, for per-item checks.
pub(crate) fn coarse_now_ns() -> u64 {
    clock_ns(CLOCK_COARSE)
}

#[cfg(target_os = "linux")]
const CLOCK_COARSE: i32 = libc::CLOCK_MONOTONIC_COARSE;
#[cfg(all(unix, not(target_os = "linux")))]
const CLOCK_COARSE: i32 = libc::CLOCK_MONOTONIC;
#[cfg(unix)]
const CLOCK_PRECISE: i32 = libc::CLOCK_MONOTONIC;
#[cfg(not(unix))]
const CLOCK_COARSE: i32 = 0;
#[cfg(not(unix))]
const CLOCK_PRECISE: i32 = 0;

fn clock_ns(clock: i32) -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(clock as libc::clockid_t, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
    #[cfg(not(unix))]
    {
        let _ = clock;
        0
    }
}
