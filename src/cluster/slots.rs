//! The parent's side: each cluster slot is a [`WorkerLink`] whose chunks go onto the work queue
//! and whose messages come back from whichever agent took them, so the hub's scheduler, healing
//! and request serving work unchanged.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use async_nats::jetstream::kv;
use crossbeam_channel::{Receiver, Sender, select, unbounded};
use futures_util::StreamExt;

use super::{
    AGENTS, BUILD, Cluster, PROGRAMS, REFRESH, RUN_TTL, RUNS,
    bridge::{Bridge, cluster_error},
    envelope::{Back, Event, Work, decode, encode},
    parcel::Parcel,
    slot_subject, work_subject,
};
use crate::{
    Error,
    locks::lock,
    transport::{Death, Progress, Transport, WorkerLink, local::random_hex},
    wire::{FromWorker, MapSetup, Program, ToWorker},
};

/// How long a count of the agents' slots is used.
const OFFERED_FRESH: Duration = Duration::from_secs(1);
/// How long a chunk's publish is retried while the server cannot be reached.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);

/// Starts cluster slots for one run.
pub(crate) struct ClusterTransport {
    bridge: Arc<Bridge>,
    /// This run's name on the broker.
    run: String,
    next_slot: AtomicU64,
    only: bool,
    /// The server's URL, for messages.
    url: String,
    /// Whether the run was told no agent is connected.
    said_no_agents: AtomicBool,
    /// The agents' slots when last counted, and when.
    offered: Mutex<Option<(Instant, usize)>>,
}

impl ClusterTransport {
    /// Connects to `cluster` (after its loopback rule passed).
    pub(crate) fn connect(cluster: &Cluster) -> Result<ClusterTransport, Error> {
        cluster.check()?;
        let bridge = Arc::new(Bridge::connect(cluster, "mpscript run")?);
        let run = random_hex()?;
        let runs = bridge.wait(super::bucket(&bridge, RUNS, RUN_TTL))?;
        let key = run.clone();
        let keeping = bridge.wait(runs.put(&key, "running".into()));
        keeping.map_err(|e| cluster_error("announcing the run", e))?;
        bridge.spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let _ = runs.put(&key, "running".into()).await;
            }
        });
        Ok(ClusterTransport {
            bridge,
            run,
            next_slot: AtomicU64::new(1),
            only: cluster.is_only(),
            url: cluster.url().to_string(),
            said_no_agents: AtomicBool::new(false),
            offered: Mutex::default(),
        })
    }

    /// Whether the run keeps no local pool.
    pub(crate) fn is_only(&self) -> bool {
        self.only
    }

    /// How many slots a map takes on the cluster: those the agents connected now offer. With no
    /// local pool it is at least one, so the work waits for an agent (saying so once).
    pub(crate) fn slots(&self) -> usize {
        let offered = self.offered();
        if offered > 0 || !self.only {
            return offered;
        }
        if !self.said_no_agents.swap(true, Ordering::Relaxed) {
            let url = &self.url;
            let waiting = format!(
                "mpscript: no cluster agent is connected to {url}; the work waits for one \
                 (start one with `mpscript worker --cluster {url}`)"
            );
            crate::output::write_line(crate::OutStream::Stderr, &waiting);
        }
        1
    }

    /// How many slots the agents connected now offer, counted at most once a second: listing
    /// the agents costs a round trip per agent, and a loop of small maps would pay it each time.
    fn offered(&self) -> usize {
        let mut counted = lock(&self.offered);
        match *counted {
            Some((at, slots)) if at.elapsed() < OFFERED_FRESH => slots,
            _ => {
                let slots = self.count_offered();
                *counted = Some((Instant::now(), slots));
                slots
            }
        }
    }

    fn count_offered(&self) -> usize {
        let counted = self.bridge.wait(async {
            let store = self.bridge.jetstream.get_key_value(AGENTS).await.ok()?;
            let mut keys = store.keys().await.ok()?;
            let mut total = 0;
            while let Some(Ok(key)) = keys.next().await {
                if let Ok(Some(value)) = store.get(key).await {
                    total += std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                }
            }
            Some(total)
        });
        counted.unwrap_or(0)
    }

    fn slot(&self, program: &Program, key: &str) -> Result<RemoteSlot, Error> {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let subject = slot_subject(&self.run, slot);
        let mut subscriber = self
            .bridge
            .wait(self.bridge.client.subscribe(subject))
            .map_err(|e| cluster_error("subscribing to a slot", e))?;
        let (tx, messages) = unbounded();
        let client = self.bridge.client.clone();
        let objects = self.bridge.objects.clone();
        self.bridge.spawn(async move {
            while let Some(message) = subscriber.next().await {
                // Unconfirmed, the agent sends it again (and keeps what it stored until then).
                let Ok((payload, _)) = objects.unpack(&message).await else {
                    continue;
                };
                // Received: the agent may go on.
                if let Some(reply) = message.reply {
                    let _ = client.publish(reply, bytes::Bytes::new()).await;
                }
                if tx.send(payload.to_vec()).is_err() {
                    break;
                }
            }
        });
        let (close, closed) = unbounded();
        Ok(RemoteSlot {
            label: format!("cluster slot {slot}"),
            bridge: self.bridge.clone(),
            run: self.run.clone(),
            program: Mutex::new((program.clone(), key.to_string())),
            slot,
            messages,
            close,
            closed,
            setups: Mutex::default(),
            state: Mutex::default(),
        })
    }
}

/// Stores `program` in the programs bucket (once) and gives its key.
fn store(bridge: &Bridge, program: &Program) -> Result<String, Error> {
    let bytes = encode(program)?;
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let key = format!("{:016x}", hasher.finish());
    bridge.wait(async {
        let store = programs_bucket(bridge).await?;
        store
            .put(&key, bytes.into())
            .await
            .map_err(|e| cluster_error("storing the program", e))
    })?;
    Ok(key)
}

/// The programs bucket, made by whoever needs it first.
pub(super) async fn programs_bucket(bridge: &Bridge) -> Result<kv::Store, Error> {
    super::bucket(bridge, PROGRAMS, Duration::from_secs(24 * 3600)).await
}

impl Drop for ClusterTransport {
    /// The run is over: agents drop whatever of it is left at once.
    fn drop(&mut self) {
        let bridge = &self.bridge;
        let _ = bridge.wait(async {
            let runs = bridge.jetstream.get_key_value(RUNS).await.ok()?;
            runs.delete(&self.run).await.ok()
        });
    }
}

impl Transport for ClusterTransport {
    fn start(&self, count: usize, program: &Program) -> Result<Vec<Box<dyn WorkerLink>>, Error> {
        let key = store(&self.bridge, program)?;
        (0..count)
            .map(|_| {
                self.slot(program, &key)
                    .map(|s| Box::new(s) as Box<dyn WorkerLink>)
            })
            .collect()
    }
}

/// One slot of the cluster, as the hub sees a worker.
struct RemoteSlot {
    label: String,
    bridge: Arc<Bridge>,
    run: String,
    /// What its chunks run (grown by the REPL's inputs), and its key in the programs bucket.
    program: Mutex<(Program, String)>,
    slot: u64,
    messages: Receiver<Vec<u8>>,
    close: Sender<()>,
    closed: Receiver<()>,
    /// Each job's setup: every chunk carries it, since any agent may take it.
    setups: Mutex<HashMap<u64, MapSetup>>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Where the worker running this slot's chunk takes replies to its requests.
    reply_to: Option<String>,
    /// The agent that ran the last chunk.
    host: Option<String>,
    progress: Option<Progress>,
    death: Option<Death>,
    /// The chunks under way, by job and chunk: which delivery, where, and its last started item.
    chunks: HashMap<(u64, u32), Delivery>,
    /// Chunks whose results all came: a later delivery of one (its ack was lost while the server
    /// restarted) is ignored.
    done: HashSet<(u64, u32)>,
    /// The last message number from each chunk delivery (by its reply inbox).
    last_seq: HashMap<String, u64>,
    /// Chunks too big for one message, by where they were stored until they are done.
    stored: HashMap<(u64, u32), String>,
}

struct Delivery {
    number: u64,
    host: String,
    started: Option<u32>,
}

/// The job and chunk an agent's message is about, if it says.
fn chunk_of(event: &Event) -> Option<(u64, u32)> {
    match event {
        Event::Message(FromWorker::MapPart { job, chunk, .. })
        | Event::Message(FromWorker::MapDone { job, chunk, .. })
        | Event::Started { job, chunk, .. }
        | Event::Redelivered { job, chunk } => Some((*job, *chunk)),
        _ => None,
    }
}

impl RemoteSlot {
    fn publish_chunk(&self, message: ToWorker) -> Result<(), Error> {
        let ToWorker::Map {
            job,
            chunk,
            setup,
            items,
        } = message
        else {
            unreachable!("only chunks are published")
        };
        let setup = {
            let mut setups = lock(&self.setups);
            if let Some(setup) = setup {
                setups.insert(job, setup);
            }
            setups.get(&job).cloned()
        };
        let work = Work {
            build: BUILD.to_string(),
            run: self.run.clone(),
            program: lock(&self.program).1.clone(),
            slot: self.slot,
            message: ToWorker::Map {
                job,
                chunk,
                setup,
                items,
            },
        };
        let id = format!("{}.{}.{job}.{chunk}", self.run, self.slot);
        let parcel = self.bridge.objects.pack(encode(&work)?, &id);
        let Parcel {
            mut headers,
            payload,
            stored,
        } = self.bridge.wait(parcel)?;
        if let Some(name) = stored {
            lock(&self.state).stored.insert((job, chunk), name);
        }
        headers.insert("Nats-Msg-Id", id.as_str());
        let subject = work_subject(&self.run);
        // While the server restarts the publish fails; the message id makes a retry safe.
        let deadline = Instant::now() + PUBLISH_PATIENCE;
        loop {
            let published = self.bridge.wait(async {
                let js = &self.bridge.jetstream;
                let sent =
                    js.publish_with_headers(subject.clone(), headers.clone(), payload.clone());
                sent.await?.await.map(|_| ())
            });
            match published {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(250)),
                Err(e) => return Err(cluster_error("publishing a chunk", e)),
            }
        }
    }

    /// What the agent said, as the hub reads a worker (`None`: nothing for the hub): output to
    /// stderr names the host. A chunk delivered again means the agent that had it died or
    /// stopped (unless the chunk is done): the slot dies as a local worker would, the item it had
    /// started named, and the scheduler retries item by item.
    fn received(&self, back: Back) -> Result<Option<FromWorker>, Error> {
        let mut state = lock(&self.state);
        if back.seq > 0 {
            let last = state.last_seq.entry(back.reply_to.clone()).or_default();
            if back.seq <= *last {
                return Ok(None); // sent again after its confirmation was lost
            }
            *last = back.seq;
        }
        if let Some(key) = chunk_of(&back.event) {
            if state.done.contains(&key) {
                return Ok(None);
            }
            match state.chunks.get(&key) {
                Some(seen) if back.delivery < seen.number => {
                    return Ok(None); // a late word from an agent the chunk was taken from
                }
                Some(seen) if back.delivery > seen.number => {
                    let status = format!(
                        "stopped answering on {} (its chunk went to {} after the ack wait)",
                        seen.host, back.host
                    );
                    let started = seen.started;
                    return Err(self.lost(&mut state, key, started, status));
                }
                None if matches!(back.event, Event::Redelivered { .. }) => {
                    let status = format!(
                        "its agent took the chunk and stopped answering before it said anything \
                         (the chunk went to {} after the ack wait)",
                        back.host
                    );
                    return Err(self.lost(&mut state, key, None, status));
                }
                _ => {}
            }
            let seen = state.chunks.entry(key).or_insert_with(|| Delivery {
                number: back.delivery,
                host: back.host.clone(),
                started: None,
            });
            match &back.event {
                Event::Started { offset, .. } => seen.started = Some(*offset),
                Event::Message(FromWorker::MapDone { .. }) => {
                    if let Some(name) = state.stored.remove(&key) {
                        let objects = self.bridge.objects.clone();
                        self.bridge
                            .spawn(async move { objects.discard(&name).await });
                    }
                    state.chunks.remove(&key);
                    state.done.insert(key);
                    state.last_seq.remove(&back.reply_to);
                }
                _ => {}
            }
        }
        state.reply_to = Some(back.reply_to);
        state.host = Some(back.host.clone());
        match back.event {
            Event::Started { .. } | Event::Redelivered { .. } => Ok(None),
            Event::Message(FromWorker::Output { stream, text })
                if stream != crate::OutStream::Stdout =>
            {
                Ok(Some(FromWorker::Output {
                    stream,
                    text: format!("[{}] {text}", back.host),
                }))
            }
            Event::Message(FromWorker::MapDone {
                job,
                chunk,
                result: Err(mut failure),
            }) => {
                failure.error.host = back.host;
                let result = Err(failure);
                Ok(Some(FromWorker::MapDone { job, chunk, result }))
            }
            Event::Message(message) => Ok(Some(message)),
            Event::Died {
                status,
                code,
                started,
            } => {
                state.progress = started.map(|(job, chunk, offset)| Progress {
                    job,
                    chunk,
                    offset,
                    started_ns: 0,
                });
                state.death = Some(Death {
                    status: format!("{status} on {}", back.host),
                    code,
                });
                Err(Error::Disconnected {
                    peer: self.label.clone(),
                })
            }
            // Another agent would likely refuse too: the chunk fails at its first item, visibly.
            Event::Refused { job, chunk, why } => {
                let mut error = crate::RemoteError::unplaced(format!("refused the run: {why}"), 0);
                error.host = back.host;
                let failure = crate::wire::ItemFailure {
                    offset: 0,
                    error,
                    timed_out: false,
                };
                Ok(Some(FromWorker::MapDone {
                    job,
                    chunk,
                    result: Err(failure),
                }))
            }
        }
    }
}

impl Drop for RemoteSlot {
    /// Chunks stored for the slot that never finished are not needed any more.
    fn drop(&mut self) {
        let stored = std::mem::take(&mut lock(&self.state).stored);
        for name in stored.into_values() {
            self.bridge.wait(self.bridge.objects.discard(&name));
        }
    }
}

impl RemoteSlot {
    /// The slot dies as a local worker would, with the item its agent had started, if it said.
    fn lost(
        &self,
        state: &mut SlotState,
        key: (u64, u32),
        started: Option<u32>,
        status: String,
    ) -> Error {
        let (job, chunk) = key;
        state.progress = started.map(|offset| Progress {
            job,
            chunk: chunk as u64,
            offset: offset as u64,
            started_ns: 0,
        });
        state.death = Some(Death { status, code: -1 });
        Error::Disconnected {
            peer: self.label.clone(),
        }
    }
}

impl WorkerLink for RemoteSlot {
    fn label(&self) -> &str {
        &self.label
    }

    fn pid(&self) -> u32 {
        0
    }

    fn send(&self, message: &ToWorker) -> Result<(), Error> {
        match message {
            ToWorker::Map { .. } => self.publish_chunk(message.clone()),
            ToWorker::Reply { .. } => {
                let reply_to = lock(&self.state).reply_to.clone();
                let Some(reply_to) = reply_to else {
                    return Ok(()); // nobody asked
                };
                // The agent deletes what was stored once it read it.
                let prefix = format!("{}.reply", self.run);
                let bridge = &self.bridge;
                let parcel = bridge.wait(bridge.objects.pack(encode(message)?, &prefix))?;
                let sent =
                    bridge
                        .client
                        .publish_with_headers(reply_to, parcel.headers, parcel.payload);
                bridge
                    .wait(sent)
                    .map_err(|e| cluster_error("answering a request", e))
            }
            ToWorker::Shutdown => {
                let _ = self.close.send(());
                Ok(())
            }
            ToWorker::AddChunk(chunk) => {
                // Functions typed in the REPL: agents fetch the grown program by its new key.
                let mut program = lock(&self.program);
                program.0.chunks.push(chunk.clone());
                program.1 = store(&self.bridge, &program.0)?;
                Ok(())
            }
            ToWorker::Program(_) => Ok(()),
            ToWorker::Call { .. } => Err(Error::InvalidArgument(
                "spawned processes run in this process's pool, not on the cluster".into(),
            )),
        }
    }

    fn recv(&self) -> Result<FromWorker, Error> {
        loop {
            let bytes = select! {
                recv(self.messages) -> bytes => bytes,
                recv(self.closed) -> _ => Err(crossbeam_channel::RecvError),
            };
            let Ok(bytes) = bytes else {
                return Err(Error::Disconnected {
                    peer: self.label.clone(),
                });
            };
            if let Some(message) = self.received(decode(&bytes, &self.label)?)? {
                return Ok(message);
            }
        }
    }

    fn kill(&self) {
        let _ = self.close.send(());
    }

    fn terminate(&self) {
        self.kill();
    }

    fn reap(&self, _grace: Duration) -> Death {
        lock(&self.state).death.clone().unwrap_or_else(|| Death {
            status: "left the cluster".into(),
            code: 0,
        })
    }

    fn progress(&self) -> Option<Progress> {
        lock(&self.state).progress
    }

    fn is_remote(&self) -> bool {
        true
    }
}
