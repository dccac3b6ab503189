//! What the hub keeps for the profiler in a profiled run: the records workers send as they exit,
//! and the maps and submitted calls it ran (their wall time and workers, which only it sees).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use crate::{
    locks::lock,
    profile::{Frame, MapCall, Recorded, Work},
    value::FnValue,
};

/// The hub's part of a run's profile.
#[derive(Default)]
pub(crate) struct ProfileBook {
    records: Mutex<Vec<Recorded>>,
    reported: Mutex<HashSet<u64>>,
    unreported: AtomicUsize,
    maps: Mutex<Vec<MapCall>>,
    /// `pool_submit` calls not finished yet, by process id.
    submitted: Mutex<HashMap<u64, Submitted>>,
}

/// A `pool_submit` call: what it runs, where from, since when.
struct Submitted {
    function: Frame,
    at: Vec<Frame>,
    since: Instant,
}

/// What the hub collected: worker records, how many workers never reported, and the maps.
pub(crate) struct Collected {
    pub(crate) records: Vec<Recorded>,
    pub(crate) unreported: usize,
    pub(crate) maps: Vec<MapCall>,
}

/// The frame of the function `f` names, called with `args` arguments besides its captured ones.
pub(crate) fn frame_of(f: &FnValue, args: usize) -> Frame {
    Frame::Script {
        name: f.name.clone(),
        arity: (f.curry.len() + args) as u32,
    }
}

impl ProfileBook {
    /// Worker `worker` sent its record.
    pub(crate) fn report(&self, worker: u64, record: Recorded) {
        lock(&self.reported).insert(worker);
        lock(&self.records).push(record);
    }

    /// Worker `worker` is gone; if it never reported, its calls are missing.
    pub(crate) fn gone(&self, worker: u64) {
        if !lock(&self.reported).contains(&worker) {
            self.unreported.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn map(&self, call: MapCall) {
        lock(&self.maps).push(call);
    }

    /// `pool_submit` started process `id` running `function`, called from `at`.
    pub(crate) fn submitted(&self, id: u64, function: Frame, at: Vec<Frame>) {
        let since = Instant::now();
        lock(&self.submitted).insert(
            id,
            Submitted {
                function,
                at,
                since,
            },
        );
    }

    /// Process `id` finished; if `pool_submit` started it, that is one more submitted call.
    pub(crate) fn finished(&self, id: u64) {
        let Some(call) = lock(&self.submitted).remove(&id) else {
            return;
        };
        self.map(MapCall {
            builtin: "pool_submit",
            function: call.function,
            at: call.at,
            work: Work::Call(id),
            wall_ns: call.since.elapsed().as_nanos() as u64,
            workers: 1,
        });
    }

    pub(crate) fn take(&self) -> Collected {
        Collected {
            records: std::mem::take(&mut *lock(&self.records)),
            unreported: self.unreported.swap(0, Ordering::Relaxed),
            maps: std::mem::take(&mut *lock(&self.maps)),
        }
    }
}
