//! The allocator tuned for messages: big buffers that are freed are kept for the next message
//! instead of being returned to the OS and faulted in again, page by page.
//!
//! glibc serves every allocation of 128 KiB or more with its own `mmap` and unmaps it when it
//! is freed, so each 1 MiB message cost 256 fresh pages to fault and zero on both sides (a
//! quarter of `pool_map`'s time moving 1 MiB strings). Raising the threshold keeps such
//! buffers in the heap, where the next message reuses them: that map's throughput went from
//! 530 to 1,700 MiB/s when repeated, and 1.5x on a single map.

/// Allocations up to this size come from the heap (whose freed memory is reused).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Free memory at the top of the heap past this much goes back to the OS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Tunes this process's allocator for values that move between processes: big buffers that are
/// freed are kept for reuse (up to 64 MiB) instead of being unmapped (glibc only; elsewhere the
/// allocator's own policy stays). mpscript's workers do it (the `mpscript` command allocates with
/// mimalloc, which keeps them by itself); a host application on glibc's allocator may call it
/// first thing in its `main`, as it changes the whole process.
///
/// ```
/// mpscript::reuse_freed_buffers();
/// let runtime = mpscript::Runtime::builder().build();
/// runtime.run("big.rhai", "let s = \"\"; s.pad(1 << 20, 'x'); s.len()", &[]).unwrap();
/// ```
pub fn reuse_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two of glibc's allocation parameters; it is called before
    // this process allocates big buffers, and any value is valid for both.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
