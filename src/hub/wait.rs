//! The one way the hub blocks: on a condition variable, until notified, a deadline, or an interrupt.

use std::{
    sync::{Condvar, MutexGuard},
    time::{Duration, Instant},
};

use crate::{Error, Interrupt};

/// How often a wait looks at the interrupt flag.
const INTERRUPT_POLL: Duration = Duration::from_millis(20);

/// Waits once on `cv`. `Ok(None)` when `deadline` has passed, `Err` when the run was interrupted.
pub(crate) fn wait<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    interrupt: &Interrupt,
) -> Result<Option<MutexGuard<'a, T>>, Error> {
    interrupt.check()?;
    let slice = match deadline {
        None => INTERRUPT_POLL,
        Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => left.min(INTERRUPT_POLL),
            _ => return Ok(None),
        },
    };
    let (guard, _) = cv
        .wait_timeout(guard, slice)
        .unwrap_or_else(|e| e.into_inner());
    Ok(Some(guard))
}
