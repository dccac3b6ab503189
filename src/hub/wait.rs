//! The one way the hub blocks: on a condition variable, until notified, a deadline, or an
//! interrupt. An interrupt wakes the waits on the objects registered with it
//! ([`Interrupt::wakes`]); a slow look at the flag is only the safety net.

use std::{
    sync::{Condvar, MutexGuard},
    time::{Duration, Instant},
};

/// How often a wait looks at the interrupt flag by itself, in case its object was not
/// registered to be woken. Rare enough to cost nothing with hundreds of waits.
const SAFETY_NET: Duration = Duration::from_secs(1);

use crate::{Error, Interrupt};

/// Waits once on `cv`. `Ok(None)` when `deadline` has passed, `Err` when the run was interrupted.
/// Callers loop, so a spurious wake-up only costs a look at their state.
pub(crate) fn wait<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    interrupt: &Interrupt,
) -> Result<Option<MutexGuard<'a, T>>, Error> {
    interrupt.check()?;
    let slice = match deadline {
        None => SAFETY_NET,
        Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => left.min(SAFETY_NET),
            _ => return Ok(None),
        },
    };
    let (guard, _) = cv
        .wait_timeout(guard, slice)
        .unwrap_or_else(|e| e.into_inner());
    Ok(Some(guard))
}
