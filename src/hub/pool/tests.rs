//! The scheduler, run for real by the hub over in-process workers whose items behave on cue.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    Error, Interrupt, Value,
    builtins::Backend,
    hub::{Hub, HubConfig},
    settings::Settings,
    transport::inprocess::{Act, InProcess, Sent},
    value::FnValue,
    wire::{Items, MapOptions, Op, Program, Reply},
};

/// A hub of `workers` in-process workers doing `behaviour`, and what they were sent.
fn threads(workers: usize, behaviour: impl Fn(i64) -> Act + Send + Sync + 'static) -> (Hub, Log) {
    let transport = InProcess::new(behaviour);
    let log = transport.log();
    let program = Program {
        name: "test".into(),
        chunks: Vec::new(),
        settings: Settings::default(),
        host_functions: false,
    };
    let config = HubConfig {
        profile: None,
        cluster: None,
        transport: Arc::new(transport),
        program,
        workers,
        output: Arc::new(|_, _| {}),
        log: Arc::new(|_| {}),
        interrupt: Interrupt::default(),
    };
    (Hub::new(config).expect("an in-process hub"), Log(log))
}

struct Log(Arc<Mutex<Vec<Sent>>>);

impl Log {
    fn sent(&self) -> Vec<Sent> {
        let mut sent = self.0.lock().unwrap().clone();
        sent.sort_by_key(|s| s.chunk);
        sent
    }
}

fn f() -> FnValue {
    FnValue {
        name: "f".into(),
        curry: Vec::new(),
    }
}

fn map(hub: &Hub, n: i64, options: MapOptions) -> Result<Value, Error> {
    hub.inner
        .pool_map(f(), &Items::Range { start: 0, end: n }, options, None)
}

/// Counts how often each item was run.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<i64, u32>>>);

impl Runs {
    /// Counts a run of `n`; answers how many runs it has had, this one included.
    fn count(&self, n: i64) -> u32 {
        let mut runs = self.0.lock().unwrap();
        let count = runs.entry(n).or_default();
        *count += 1;
        *count
    }
}

fn doubled(n: i64) -> Value {
    Value::IntArray((0..n).map(|i| i * 2).collect())
}

#[test]
fn chunks_shrink_as_the_work_runs_out_and_a_fixed_size_is_kept() {
    let (hub, log) = threads(2, |n| Act::Return(n * 2));
    assert_eq!(map(&hub, 100, MapOptions::default()).unwrap(), doubled(100));
    let sizes: Vec<usize> = log.sent().iter().map(|s| s.items.len()).collect();
    // Guided: each chunk is what is left over twice the workers, so the last ones are small.
    assert_eq!(sizes[0], 25, "{sizes:?}");
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    assert_eq!(*sizes.last().unwrap(), 1, "{sizes:?}");

    let (hub, log) = threads(2, |n| Act::Return(n * 2));
    let fixed = MapOptions {
        chunk_size: Some(10),
        ..MapOptions::default()
    };
    assert_eq!(map(&hub, 95, fixed).unwrap(), doubled(95));
    let sizes: Vec<usize> = log.sent().iter().map(|s| s.items.len()).collect();
    assert_eq!(sizes, [10, 10, 10, 10, 10, 10, 10, 10, 10, 5]);
}

#[test]
fn pool_map_keeps_two_chunks_in_flight_per_worker_and_unordered_keeps_one() {
    let slow = |n| Act::Slowly(n * 2, Duration::from_millis(3));
    let fixed = MapOptions {
        chunk_size: Some(4),
        ..MapOptions::default()
    };
    let (hub, log) = threads(2, slow);
    assert_eq!(map(&hub, 40, fixed).unwrap(), doubled(40));
    let sent = log.sent();
    // While a worker runs a chunk, its next one is already waiting (but for the last ones).
    let waited = sent.iter().filter(|s| s.waiting_after >= 1).count();
    assert!(waited >= sent.len() - 2, "{sent:?}");
    assert!(sent.iter().all(|s| s.waiting_after <= 1), "{sent:?}");

    let (hub, log) = threads(2, slow);
    let Reply::Id(results) = hub
        .call(Op::MapUnordered {
            f: f(),
            items: Items::Range { start: 0, end: 40 },
            options: fixed,
            at: None,
        })
        .unwrap()
    else {
        panic!("pool_map_unordered answers the id of its results");
    };
    let mut got = Vec::new();
    while let Reply::Got(Some(Value::IntArray(batch))) = hub
        .call(Op::NextResults {
            results,
            timeout: Some(10.0),
        })
        .unwrap()
    {
        got.extend(batch);
    }
    got.sort_unstable();
    assert_eq!(Value::IntArray(got), doubled(40));
    let sent = log.sent();
    assert_eq!(sent.len(), 10);
    assert!(sent.iter().all(|s| s.waiting_after == 0), "{sent:?}");
}

#[test]
fn a_death_mid_chunk_is_charged_to_the_one_item_that_was_running() {
    // Item 37 kills its worker every time: with two retries it runs three times, then fails the
    // map under its own index; every other item is charged nothing.
    let runs = Runs::default();
    let counted = runs.clone();
    let (hub, _) = threads(2, move |n| {
        counted.count(n);
        if n == 37 { Act::Die } else { Act::Return(n) }
    });
    let options = MapOptions {
        retries: 2,
        ..MapOptions::default()
    };
    let err = map(&hub, 100, options).unwrap_err();
    let Error::MapItem { index, source, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(*index, 37, "{err}");
    assert!(source.is_worker_died(), "{err}");
    assert!(
        err.to_string()
            .contains("while running items[37] of pool_map"),
        "{err}"
    );
    assert_eq!(runs.0.lock().unwrap()[&37], 3);
}

#[test]
fn items_whose_worker_died_once_are_retried_and_nothing_is_lost() {
    let runs = Runs::default();
    let counted = runs.clone();
    let (hub, _) = threads(3, move |n| match (n, counted.count(n)) {
        (13 | 61 | 62, 1) => Act::Die,
        _ => Act::Return(n * 2),
    });
    let options = MapOptions {
        retries: 1,
        ..MapOptions::default()
    };
    assert_eq!(map(&hub, 120, options).unwrap(), doubled(120));
    let runs = runs.0.lock().unwrap();
    for n in [13, 61, 62] {
        assert_eq!(runs[&n], 2, "item {n}");
    }
    // Without retries the first death fails the map, under the item that was running.
    let (hub, _) = threads(1, |n| if n == 5 { Act::Die } else { Act::Return(n) });
    let err = map(&hub, 10, MapOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("pool_map items[5] (6th of 10) failed: worker"),
        "{err}"
    );
}

#[test]
fn an_item_past_its_time_limit_is_killed_with_its_worker_and_named() {
    let (hub, _) = threads(2, |n| if n == 7 { Act::Hang } else { Act::Return(n) });
    let options = MapOptions {
        timeout: Some(0.2),
        chunk_size: Some(5),
        ..MapOptions::default()
    };
    let started = Instant::now();
    let err = map(&hub, 20, options).unwrap_err();
    let Error::MapItem { index, source, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(*index, 7, "{err}");
    assert!(source.is_timeout(), "{err}");
    assert!(
        err.to_string().contains("killed after a 1s grace period"),
        "{err}"
    );
    // The limit, the grace period, and a scheduler tick or two.
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    // The pool heals: the next map runs on a replacement worker.
    let ok = map(&hub, 4, MapOptions::default()).unwrap();
    assert_eq!(ok, Value::IntArray(vec![0, 1, 2, 3]));
}

#[test]
fn a_throwing_item_fails_the_map_under_its_index_and_is_not_retried() {
    let runs = Runs::default();
    let counted = runs.clone();
    let (hub, _) = threads(2, move |n| {
        counted.count(n);
        if n == 9 { Act::Throw } else { Act::Return(n) }
    });
    let options = MapOptions {
        retries: 3,
        ..MapOptions::default()
    };
    let err = map(&hub, 30, options).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("pool_map items[9] (10th of 30) failed: item 9 threw"),
        "{err}"
    );
    assert_eq!(runs.0.lock().unwrap()[&9], 1);
}
