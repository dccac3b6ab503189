//! `pool_map` scheduling: guided chunks that shrink as work runs out (balancing uneven items without
//! per-item round trips), two chunks in flight per worker, results reassembled in input order.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::worker::{Death, Worker};
use crate::{
    Error, Value,
    value::FnValue,
    wire::{ItemFailure, Items, ToWorker},
};

/// What the reader threads tell a running `pool_map`.
pub(crate) enum JobEvent {
    /// A chunk finished.
    Done {
        chunk: u32,
        result: Result<Value, ItemFailure>,
    },
    /// A worker of this job died; its chunks in flight are lost.
    Died { worker: u64, death: Death },
}

/// Chunks queued ahead per worker, so a worker never idles for a round trip.
const IN_FLIGHT: usize = 2;

enum ChunkState {
    Pending,
    Done(Value),
    Failed,
}

struct Chunk {
    start: usize,
    end: usize,
    worker: usize,
    state: ChunkState,
}

/// One `pool_map` call over a fixed set of workers.
pub(crate) struct MapRun<'a> {
    pub(crate) job: u64,
    pub(crate) f: FnValue,
    pub(crate) items: &'a Items,
    pub(crate) workers: &'a [Arc<Worker>],
    pub(crate) chunk_size: Option<usize>,
}

struct Progress {
    next: usize,
    chunks: Vec<Chunk>,
    in_flight: Vec<usize>,
    fn_sent: Vec<bool>,
    alive: Vec<bool>,
    failure: Option<(usize, Error)>,
}

impl MapRun<'_> {
    /// Runs the map to completion: every dispatched chunk is answered or its worker reported dead.
    pub(crate) fn run(&self, events: &Receiver<JobEvent>) -> Result<Value, Error> {
        let n = self.workers.len();
        let mut p = Progress {
            next: 0,
            chunks: Vec::new(),
            in_flight: vec![0; n],
            fn_sent: vec![false; n],
            alive: vec![true; n],
            failure: None,
        };
        for w in 0..n {
            self.dispatch(&mut p, w);
        }
        while p.in_flight.iter().any(|&k| k > 0) {
            let Ok(event) = events.recv() else { break };
            match event {
                JobEvent::Done { chunk, result } => self.on_done(&mut p, chunk as usize, result),
                JobEvent::Died { worker, death } => self.on_died(&mut p, worker, &death),
            }
        }
        match p.failure {
            Some((index, error)) => Err(Error::MapItem {
                index,
                total: self.items.len(),
                source: Box::new(error),
            }),
            None => Ok(concat(p.chunks.into_iter().map(|c| match c.state {
                ChunkState::Done(v) => v,
                _ => unreachable!("no failure means every chunk is done"),
            }))),
        }
    }

    fn chunk_len(&self, remaining: usize) -> usize {
        let guided = remaining.div_ceil(2 * self.workers.len());
        self.chunk_size.unwrap_or(guided).clamp(1, remaining)
    }

    fn dispatch(&self, p: &mut Progress, w: usize) {
        let total = self.items.len();
        while p.alive[w] && p.in_flight[w] < IN_FLIGHT && p.next < total && p.failure.is_none() {
            let (start, end) = (p.next, p.next + self.chunk_len(total - p.next));
            let message = ToWorker::Map {
                job: self.job,
                chunk: p.chunks.len() as u32,
                f: (!p.fn_sent[w]).then(|| self.f.clone()),
                items: self.items.slice(start, end),
            };
            p.chunks.push(Chunk {
                start,
                end,
                worker: w,
                state: ChunkState::Pending,
            });
            p.next = end;
            p.fn_sent[w] = true;
            p.in_flight[w] += 1;
            match self.workers[w].conn.send(&message) {
                // A worker that hung up is reported dead by its reader thread, chunks and all.
                Ok(()) | Err(Error::Disconnected { .. }) => {}
                Err(e) => {
                    p.in_flight[w] -= 1;
                    fail(p, start, e);
                    if let Some(c) = p.chunks.last_mut() {
                        c.state = ChunkState::Failed;
                    }
                }
            }
        }
    }

    fn on_done(&self, p: &mut Progress, chunk: usize, result: Result<Value, ItemFailure>) {
        let Some(c) = p.chunks.get_mut(chunk) else {
            return;
        };
        if !matches!(c.state, ChunkState::Pending) {
            return;
        }
        let (w, start) = (c.worker, c.start);
        p.in_flight[w] -= 1;
        match result {
            Ok(values) => {
                c.state = ChunkState::Done(values);
                self.dispatch(p, w);
            }
            Err(ItemFailure { offset, error }) => {
                c.state = ChunkState::Failed;
                fail(p, start + offset as usize, Error::Remote(Box::new(error)));
            }
        }
    }

    fn on_died(&self, p: &mut Progress, worker: u64, death: &Death) {
        let Some(w) = self.workers.iter().position(|x| x.id == worker) else {
            return;
        };
        p.alive[w] = false;
        p.in_flight[w] = 0;
        let pid = self.workers[w].pid;
        let mut lost = Vec::new();
        for c in p.chunks.iter_mut().filter(|c| c.worker == w) {
            if matches!(c.state, ChunkState::Pending) {
                c.state = ChunkState::Failed;
                lost.push((c.start, c.end));
            }
        }
        for (start, end) in lost {
            let error = Error::WorkerDied {
                pid,
                status: death.status.clone(),
                during: format!("items {start}..{end} of pool_map"),
            };
            fail(p, start, error);
        }
    }
}

/// Keeps the failure of the earliest item, so the report does not depend on timing.
fn fail(p: &mut Progress, index: usize, error: Error) {
    if p.failure.as_ref().is_none_or(|(i, _)| index < *i) {
        p.failure = Some((index, error));
    }
}

/// Joins chunk results in order, keeping the compact array forms when every chunk has them.
fn concat(parts: impl Iterator<Item = Value>) -> Value {
    let parts: Vec<Value> = parts.collect();
    if parts.iter().all(|v| matches!(v, Value::IntArray(_))) {
        return Value::IntArray(
            parts
                .into_iter()
                .flat_map(|v| match v {
                    Value::IntArray(v) => v,
                    _ => Vec::new(),
                })
                .collect(),
        );
    }
    Value::Array(parts.into_iter().flat_map(array_items).collect())
}

fn array_items(v: Value) -> Vec<Value> {
    match v {
        Value::IntArray(v) => v.into_iter().map(Value::Int).collect(),
        Value::FloatArray(v) => v.into_iter().map(Value::Float).collect(),
        Value::Array(v) => v,
        other => vec![other],
    }
}
