//! `mpscript worker --cluster URL`: an agent that takes chunks of any run from the shared work
//! queue, runs each on a local worker process of that run's program (so time limits, deaths and
//! healing are the local pool's), and relays every message of that worker back to the run.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, PullConsumer, pull},
    kv,
    stream::{self, RetentionPolicy, StorageType},
};
use futures_util::StreamExt;

use super::{
    AGENT_TTL, AGENTS, BUILD, CONSUMER, Cluster, REFRESH, RUN_TTL, RUNS, STREAM,
    bridge::{Bridge, cluster_error},
    envelope::{Back, Event, Work, decode, encode},
    parcel::Parcel,
    slot_subject,
    slots::programs_bucket,
};
use crate::{
    Error, Interrupt, OutStream, Permissions,
    locks::lock,
    output::write_line,
    transport::{Transport, WorkerLink, local::Launcher},
    wire::{FromWorker, Program, ToWorker},
};

/// How an agent is set up.
pub(crate) struct Agent<'a> {
    pub(crate) cluster: &'a Cluster,
    /// Its name in output lines and errors (pids of different hosts collide).
    pub(crate) name: String,
    /// Chunks it runs at once, each on its own worker process.
    pub(crate) slots: usize,
    /// What scripts may touch on this host, whatever a run grants.
    pub(crate) permissions: Permissions,
    /// Triggered (by SIGTERM): take no more work, finish what runs, return.
    pub(crate) interrupt: &'a Interrupt,
}

/// Serves runs until the agent is interrupted.
pub(crate) fn serve(agent: Agent) -> Result<(), Error> {
    agent.cluster.check()?;
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
    let bridge = Arc::new(Bridge::connect(agent.cluster, &agent.name)?);
    let consumer = bridge.wait(work_consumer(&bridge, agent.cluster))?;
    let agents = announce(&bridge, &agent)?;
    eprintln!(
        "mpscript worker {}: ready, {} slots on {}",
        agent.name,
        agent.slots,
        agent.cluster.url()
    );
    let runs = bridge.wait(super::bucket(&bridge, RUNS, RUN_TTL))?;
    let host = Arc::new(Host {
        runs,
        alive_runs: Mutex::default(),
        bridge: bridge.clone(),
        name: agent.name.clone(),
        permissions: agent.permissions.clone(),
        launcher: Launcher::new(exe, Arc::new(write_line))?,
        programs: Mutex::default(),
        idle: Mutex::default(),
        busy: AtomicUsize::new(0),
        beats: Mutex::default(),
        next_beat: AtomicU64::new(0),
    });
    let beating = heartbeats(&host)?;
    // A finished chunk says so at once: the next pull starts without a polling delay.
    let (finished, freed) = crossbeam_channel::unbounded::<()>();
    let (chunks, taken) = crossbeam_channel::unbounded::<jetstream::Message>();
    // Twice the slots: a thread still telling the run its last results leaves its slot free.
    let threads = (0..2 * agent.slots)
        .map(|_| {
            let (host, taken, finished) = (host.clone(), taken.clone(), finished.clone());
            thread::Builder::new()
                .name("mpscript-chunk".into())
                .spawn(move || {
                    for message in taken {
                        let slot = Slot {
                            host: host.clone(),
                            freed: finished.clone(),
                        };
                        host.run(message, slot);
                    }
                })
                .map_err(|e| Error::io("starting a chunk thread", e))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    while agent.interrupt.signal().is_none() {
        host.retire_idle();
        let free = agent.slots - host.busy.load(Ordering::Relaxed);
        if free == 0 {
            let _ = freed.recv_timeout(Duration::from_secs(1));
            continue;
        }
        for message in take(&bridge, &consumer, free) {
            host.busy.fetch_add(1, Ordering::Relaxed);
            let _ = chunks.send(message);
        }
    }
    drop(chunks); // the chunk threads finish what they run, then end
    for thread in threads {
        let _ = thread.join();
    }
    beating.store(false, Ordering::Relaxed);
    let _ = bridge.wait(agents.delete(&agent.name)); // runs stop counting its slots now
    Ok(())
}

/// Starts the agent's heartbeat thread, which beats every second until the returned flag is
/// cleared.
fn heartbeats(host: &Arc<Host>) -> Result<Arc<AtomicBool>, Error> {
    let beating = Arc::new(AtomicBool::new(true));
    let (flag, host) = (beating.clone(), host.clone());
    let every = (REFRESH.as_secs() as usize).max(1);
    thread::Builder::new()
        .name("mpscript-heartbeat".into())
        .spawn(move || {
            for n in 1.. {
                thread::sleep(Duration::from_secs(1));
                if !flag.load(Ordering::Relaxed) {
                    break;
                }
                host.beat(n % every == 0);
            }
        })
        .map_err(|e| Error::io("starting the heartbeat thread", e))?;
    Ok(beating)
}

/// The work queue and the consumer all agents share, made by the first agent.
async fn work_consumer(bridge: &Bridge, cluster: &Cluster) -> Result<PullConsumer, Error> {
    let stream = bridge
        .jetstream
        .get_or_create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["mps.work.>".into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| cluster_error("creating the work queue", e))?;
    stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: cluster.ack_wait,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| cluster_error("joining the agents' consumer", e))
}

/// Puts this agent's slot count in the agents bucket, and keeps it there while the agent lives.
/// The agents bucket is returned, to take the agent out when it stops.
fn announce(bridge: &Arc<Bridge>, agent: &Agent) -> Result<kv::Store, Error> {
    let store = bridge.wait(super::bucket(bridge, AGENTS, AGENT_TTL))?;
    let (name, slots) = (agent.name.clone(), agent.slots.to_string());
    let keeping = store.clone();
    bridge.spawn(async move {
        loop {
            let _ = keeping.put(&name, slots.clone().into()).await;
            tokio::time::sleep(AGENT_TTL / 4).await;
        }
    });
    Ok(store)
}

/// Up to `count` chunks, waiting at most a second for the first (a few while the server is away:
/// a pull asked of a server that went down is never answered).
fn take(bridge: &Bridge, consumer: &PullConsumer, count: usize) -> Vec<jetstream::Message> {
    let pull = async {
        let Ok(mut batch) = consumer
            .fetch()
            .max_messages(count)
            .expires(Duration::from_secs(1))
            .messages()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await; // the server is restarting
            return Vec::new();
        };
        let mut taken = Vec::new();
        while let Some(message) = batch.next().await {
            match message {
                Ok(message) => taken.push(message),
                Err(_) => break,
            }
        }
        taken
    };
    let pulled = bridge.wait(async { tokio::time::timeout(Duration::from_secs(3), pull).await });
    pulled.unwrap_or_default()
}

/// A warm worker, and since when it waits.
type Idle = (Arc<dyn WorkerLink>, Instant);

/// How long a warm worker of a program waits for more of its chunks before it is shut down.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// What the chunk threads share.
struct Host {
    bridge: Arc<Bridge>,
    /// The runs whose parents are alive.
    runs: kv::Store,
    /// When each run was last seen alive.
    alive_runs: Mutex<HashMap<String, Instant>>,
    name: String,
    permissions: Permissions,
    launcher: Launcher,
    /// Programs by key, as fetched.
    programs: Mutex<HashMap<String, Program>>,
    /// Warm workers by program key, and since when each waits.
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    /// Slots taken: a chunk's worker is at work in each (a freed slot's thread may still be
    /// telling the run its last results).
    busy: AtomicUsize,
    /// The running chunks' heartbeats, by number.
    beats: Mutex<HashMap<u64, Beat>>,
    next_beat: AtomicU64,
}

/// A slot taken by a chunk, free again when dropped: the agent pulls the next chunk then, while
/// the last results still travel to the run.
struct Slot {
    host: Arc<Host>,
    freed: crossbeam_channel::Sender<()>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.host.busy.fetch_sub(1, Ordering::Relaxed);
        let _ = self.freed.send(());
    }
}

impl Host {
    /// Runs one chunk and acknowledges it once its last message is sent (or its worker died:
    /// the run's scheduler then decides what runs again).
    fn run(self: &Arc<Self>, message: jetstream::Message, slot: Slot) {
        let ended = self.fetch(&message).and_then(|payload| {
            match decode::<Work>(&payload, "a parent") {
                Ok(work) => self.relay(work, &message, slot),
                Err(_) => Ok(()), // not ours to read: drop it
            }
        });
        if let Err(e) = ended {
            eprintln!("mpscript worker {}: {e}", self.name);
        }
        let _ = self.bridge.wait(message.ack());
    }

    /// A chunk's bytes, from the object store if it was too big for a message (tried while the
    /// server restarts: the parent deletes the object only once the chunk is done).
    fn fetch(&self, message: &jetstream::Message) -> Result<bytes::Bytes, Error> {
        let deadline = Instant::now() + CONFIRM_PATIENCE;
        loop {
            match self.bridge.wait(self.bridge.objects.unpack(message)) {
                Ok((payload, _)) => return Ok(payload),
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(250)),
                Err(e) => return Err(e),
            }
        }
    }

    fn relay(
        self: &Arc<Self>,
        work: Work,
        message: &jetstream::Message,
        slot: Slot,
    ) -> Result<(), Error> {
        let delivery = message
            .info()
            .map_or(1, |info| info.delivered.max(1) as u64);
        let teller = Teller {
            host: self.clone(),
            subject: slot_subject(&work.run, work.slot),
            run: work.run.clone(),
            delivery,
            sent: Arc::default(),
        };
        // Names this delivery of the chunk to the parent, and takes the replies to its requests.
        let inbox = self.bridge.client.new_inbox();
        let refuse = |why: String| {
            let (job, chunk) = chunk_key(&work.message);
            teller.tell(&inbox, Event::Refused { job, chunk, why })
        };
        if work.build != BUILD {
            return refuse(format!(
                "this agent is {}, the run is {}",
                BUILD, work.build
            ));
        }
        if !self.run_alive(&work.run) {
            return Ok(()); // its parent is gone: drop it
        }
        if delivery > 1 {
            // The agent that had it died or stopped: the parent retries item by item what it
            // has not heard the end of, so a chunk never runs twice (nor kills agent after agent).
            let (job, chunk) = chunk_key(&work.message);
            return teller.tell(&inbox, Event::Redelivered { job, chunk });
        }
        let worker = match self.worker(&work.program) {
            Ok(worker) => worker,
            Err(e) => return refuse(e.to_string()),
        };
        let replies = self
            .bridge
            .wait(self.bridge.client.subscribe(inbox.clone()))
            .map_err(|e| cluster_error("subscribing for replies", e))?;
        let _replying = self.forward_replies(replies, worker.clone());
        worker.send(&work.message)?;
        let heartbeat = self.heartbeat(message, &work.run, worker.clone(), teller.clone(), &inbox);
        loop {
            match worker.recv() {
                Ok(reply @ FromWorker::MapDone { .. }) => {
                    // The worker is free: the next chunk may come while this result travels.
                    drop(heartbeat);
                    let idle = (worker.clone(), Instant::now());
                    lock(&self.idle).entry(work.program).or_default().push(idle);
                    drop(slot);
                    return teller.tell(&inbox, Event::Message(reply));
                }
                Ok(reply) => teller.tell(&inbox, Event::Message(reply))?,
                Err(_) => {
                    let death = worker.reap(Duration::from_secs(1));
                    let started = worker.progress().map(|p| (p.job, p.chunk, p.offset));
                    let died = Event::Died {
                        status: death.status,
                        code: death.code,
                        started,
                    };
                    drop(heartbeat);
                    return teller.tell(&inbox, died);
                }
            }
        }
    }

    /// Shuts down workers that waited longer than [`IDLE_LIMIT`] (their run is likely over),
    /// and forgets programs no idle worker runs (fetched again if a chunk of one comes).
    fn retire_idle(&self) {
        let mut retired = Vec::new();
        let mut idle = lock(&self.idle);
        for workers in idle.values_mut() {
            let (old, young) = workers
                .drain(..)
                .partition(|(_, since)| since.elapsed() > IDLE_LIMIT);
            *workers = young;
            retired.extend(old.into_iter().map(|(worker, _)| worker));
        }
        idle.retain(|_, workers| !workers.is_empty());
        lock(&self.programs).retain(|key, _| idle.contains_key(key));
        drop(idle);
        for worker in retired {
            let _ = worker.send(&ToWorker::Shutdown);
            worker.reap(Duration::from_secs(1));
        }
    }

    /// Whether the run's parent still keeps its key (yes, while the server cannot say). Looked
    /// up at most once a second per run: each chunk of a busy run would pay a round trip.
    fn run_alive(&self, run: &str) -> bool {
        if lock(&self.alive_runs)
            .get(run)
            .is_some_and(|seen| seen.elapsed() < Duration::from_secs(1))
        {
            return true;
        }
        let alive = self
            .bridge
            .wait(self.runs.get(run))
            .map_or(true, |entry| entry.is_some());
        let mut seen = lock(&self.alive_runs);
        seen.retain(|_, at| at.elapsed() < RUN_TTL);
        if alive {
            seen.insert(run.to_string(), Instant::now());
        }
        alive
    }

    /// A warm worker of `program`, or a new one.
    fn worker(&self, key: &str) -> Result<Arc<dyn WorkerLink>, Error> {
        if let Some((worker, _)) = lock(&self.idle).get_mut(key).and_then(Vec::pop) {
            return Ok(worker);
        }
        let program = self.program(key)?;
        let started = self.launcher.start(1, &program)?.pop();
        started
            .map(Arc::from)
            .ok_or_else(|| Error::WorkerStart("no worker started".into()))
    }

    /// The program stored under `key`, its grants within this host's.
    fn program(&self, key: &str) -> Result<Program, Error> {
        if let Some(program) = lock(&self.programs).get(key) {
            return Ok(program.clone());
        }
        let bytes = self.bridge.wait(async {
            let store = programs_bucket(&self.bridge).await?;
            store
                .get(key)
                .await
                .map_err(|e| cluster_error("fetching the program", e))
        })?;
        let bytes = bytes.ok_or_else(|| cluster_error("fetching the program", "it is gone"))?;
        let mut program: Program = decode(&bytes, "the programs bucket")?;
        program.settings.permissions = program
            .settings
            .permissions
            .within(self.permissions.clone());
        program.settings.host = self.name.clone();
        // An embedding host's own functions live in its binary, not in this one: a call of one
        // on an agent fails as a function not found, naming it, rather than every chunk failing.
        program.host_functions = false;
        lock(&self.programs).insert(key.to_string(), program.clone());
        Ok(program)
    }

    /// Hands the parent's replies on the inbox to `worker`, until the returned sender drops.
    fn forward_replies(
        &self,
        mut replies: async_nats::Subscriber,
        worker: Arc<dyn WorkerLink>,
    ) -> tokio::sync::oneshot::Sender<()> {
        let (end, mut ended) = tokio::sync::oneshot::channel::<()>();
        let (objects, agent) = (self.bridge.objects.clone(), self.name.clone());
        self.bridge.spawn(async move {
            loop {
                let next = replies.next();
                futures_util::pin_mut!(next);
                match futures_util::future::select(next, &mut ended).await {
                    futures_util::future::Either::Left((Some(reply), _)) => {
                        let (payload, stored) = match objects.unpack(&reply).await {
                            Ok(unpacked) => unpacked,
                            Err(e) => {
                                write_line(OutStream::Stderr, &format!("{agent}: {e}"));
                                continue;
                            }
                        };
                        if let Some(name) = stored {
                            objects.discard(&name).await;
                        }
                        // A short write to a local socket the worker is reading, waiting.
                        match decode::<ToWorker>(&payload, "the parent") {
                            Ok(reply) => drop(worker.send(&reply)),
                            Err(e) => write_line(OutStream::Stderr, &format!("{agent}: {e}")),
                        }
                    }
                    _ => break,
                }
            }
            let _ = replies.unsubscribe().await;
        });
        end
    }

    /// Beats for this chunk until the returned guard is dropped (see [`Host::beat`]).
    fn heartbeat(
        self: &Arc<Self>,
        message: &jetstream::Message,
        run: &str,
        worker: Arc<dyn WorkerLink>,
        teller: Teller,
        inbox: &str,
    ) -> Heartbeat {
        let id = self.next_beat.fetch_add(1, Ordering::Relaxed);
        let beat = Beat {
            message: message.clone(),
            run: run.to_string(),
            worker,
            teller,
            inbox: inbox.to_string(),
            told: None,
        };
        lock(&self.beats).insert(id, beat);
        Heartbeat {
            host: self.clone(),
            id,
        }
    }

    /// One beat for every running chunk, from the agent's one heartbeat thread, every second:
    /// tells the broker the chunk is still worked on, tells the parent which item runs (so a
    /// death of this whole agent fails that item, not the others), and, every `look`-th beat,
    /// stops the worker if the run's parent is gone.
    fn beat(&self, look: bool) {
        let due: Vec<_> = lock(&self.beats)
            .values_mut()
            .map(|beat| {
                let started = beat
                    .worker
                    .progress()
                    .map(|p| (p.job, p.chunk as u32, p.offset as u32));
                let news = started.filter(|s| Some(*s) != beat.told);
                beat.told = started.or(beat.told);
                (beat.clone(), news)
            })
            .collect();
        for (beat, news) in due {
            let _ = self.bridge.wait(beat.message.ack_with(AckKind::Progress));
            if let Some((job, chunk, offset)) = news {
                let _ = beat
                    .teller
                    .tell(&beat.inbox, Event::Started { job, chunk, offset });
            }
            if look && !self.run_alive(&beat.run) {
                beat.worker.kill();
            }
        }
    }
}

/// What the heartbeat thread keeps of a running chunk.
#[derive(Clone)]
struct Beat {
    message: jetstream::Message,
    run: String,
    worker: Arc<dyn WorkerLink>,
    teller: Teller,
    inbox: String,
    /// The item last said to have started.
    told: Option<(u64, u32, u32)>,
}

/// A chunk's heartbeat, which stops when this is dropped.
struct Heartbeat {
    host: Arc<Host>,
    id: u64,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        lock(&self.host.beats).remove(&self.id);
    }
}

/// Tells the run that sent a chunk about it.
#[derive(Clone)]
struct Teller {
    host: Arc<Host>,
    /// The sending slot's subject.
    subject: String,
    run: String,
    delivery: u64,
    /// Messages sent so far (their sequence numbers).
    sent: Arc<AtomicU64>,
}

/// How long one message waits for the parent to confirm it, and all tries together.
const CONFIRM_WAIT: Duration = Duration::from_secs(2);
const CONFIRM_PATIENCE: Duration = Duration::from_secs(30);

impl Teller {
    /// Sends `event` and waits until the parent confirms it, sending it again while the server is
    /// away (a message published into a connection that just broke is lost, and the chunk would
    /// wait for it forever). The sequence number lets the parent drop a copy it already has.
    /// Which item started is only a hint: it is published once, unconfirmed and unnumbered.
    fn tell(&self, reply_to: &str, event: Event) -> Result<(), Error> {
        let hint = matches!(event, Event::Started { .. });
        let back = Back {
            host: self.host.name.clone(),
            reply_to: reply_to.to_string(),
            delivery: self.delivery,
            seq: if hint {
                0
            } else {
                self.sent.fetch_add(1, Ordering::Relaxed) + 1
            },
            event,
        };
        let bridge = &self.host.bridge;
        if hint {
            return bridge.publish(self.subject.clone(), encode(&back)?);
        }
        let prefix = format!("{}.back", self.run);
        let parcel = bridge.wait(bridge.objects.pack(encode(&back)?, &prefix))?;
        let told = self.until_confirmed(&parcel);
        if let Some(name) = parcel.stored {
            bridge.wait(bridge.objects.discard(&name)); // read by the parent, or never will be
        }
        told
    }

    /// Sends `parcel` until the parent says it has it (or its run is gone).
    fn until_confirmed(&self, parcel: &Parcel) -> Result<(), Error> {
        let bridge = &self.host.bridge;
        let deadline = Instant::now() + CONFIRM_PATIENCE;
        loop {
            let (headers, payload) = (parcel.headers.clone(), parcel.payload.clone());
            let asked = bridge
                .client
                .request_with_headers(self.subject.clone(), headers, payload);
            let answered = bridge.wait(async { tokio::time::timeout(CONFIRM_WAIT, asked).await });
            match answered {
                Ok(Ok(_)) => return Ok(()),
                _ if !self.host.run_alive(&self.run) => return Ok(()), // nobody to tell
                _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                Ok(Err(e)) => return Err(cluster_error("telling the run", e)),
                Err(_) => return Err(cluster_error("telling the run", "no answer")),
            }
        }
    }
}

/// Which job and chunk a chunk message is.
fn chunk_key(message: &ToWorker) -> (u64, u32) {
    match message {
        ToWorker::Map { job, chunk, .. } => (*job, *chunk),
        _ => (0, 0),
    }
}

/// The agent's own name when none is given: this machine's host name.
pub(crate) fn default_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|n| n.trim().to_string())
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("agent-{}", std::process::id()))
}
