//! What one thread of one process records while profiling: a stack of open calls, totals per
//! function (cProfile's rules), and own time per call path (for folded stacks).

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::{Mutex, OnceLock},
    time::Instant,
};

use serde::{Deserialize, Serialize};

use crate::locks::lock;

/// A frame of a call path: a script function, or a builtin that runs script code elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// A script function by name and arity (closures have Rhai's `anon$...` names); the main
    /// process gives it a file and line.
    Script { name: String, arity: u32 },
    /// The main script's top level (`main`), `pool_map`, `spawn`, `pool_submit`, ...
    Builtin(String),
}

/// Frames by a small number, the same in every thread of a process.
#[derive(Default)]
struct Interner {
    ids: HashMap<Frame, u32>,
    frames: Vec<Frame>,
}

fn interner() -> &'static Mutex<Interner> {
    static FRAMES: OnceLock<Mutex<Interner>> = OnceLock::new();
    FRAMES.get_or_init(Mutex::default)
}

/// The number `frame` is recorded under in this process.
pub(crate) fn intern(frame: Frame) -> u32 {
    let mut names = lock(interner());
    if let Some(&id) = names.ids.get(&frame) {
        return id;
    }
    let id = names.frames.len() as u32;
    names.frames.push(frame.clone());
    names.ids.insert(frame, id);
    id
}

fn frame_of(id: u32) -> Frame {
    lock(interner()).frames[id as usize].clone()
}

/// One function's totals, as cProfile keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    /// Calls made while the function was not already running (not recursive).
    pub(crate) primitive: u64,
    /// Time in the function itself, not in the script functions it called.
    pub(crate) own_ns: u64,
    /// Time from outermost entry to exit: recursive calls are not counted twice.
    pub(crate) cumulative_ns: u64,
    /// Calls that ran compiled by the fast tier.
    pub(crate) compiled: u64,
}

impl Totals {
    pub(crate) fn add(&mut self, other: &Totals) {
        self.calls += other.calls;
        self.primitive += other.primitive;
        self.own_ns += other.own_ns;
        self.cumulative_ns += other.cumulative_ns;
        self.compiled += other.compiled;
    }
}

struct Open {
    id: u32,
    node: u32,
    start: Instant,
    children_ns: u64,
    /// A builtin's frame (`pool_map`): a path of its own in folded stacks, but in the table its
    /// time is its caller's own time, as a native function's is.
    builtin: bool,
    /// Own time of builtins called from here.
    builtins_ns: u64,
}

/// A node of the tree of call paths: the frame, and the path it extends.
#[derive(Clone, Copy)]
struct Node {
    frame: u32,
    parent: u32,
}

/// Hashes the (parent node, frame) pairs looked up on every call: SipHash's resistance to chosen
/// keys buys nothing for the runtime's own small numbers, and it was a fifth of a profiled call.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The tree's root: the empty path.
const ROOT: u32 = 0;

/// One thread's record.
pub(crate) struct Recorder {
    stack: Vec<Open>,
    /// By frame id.
    totals: Vec<Totals>,
    /// By frame id: how many of its calls are open.
    running: Vec<u32>,
    nodes: Vec<Node>,
    children: HashMap<(u32, u32), u32, BuildHasherDefault<PairHasher>>,
    /// By node: time spent in that path's last frame itself.
    own_ns: Vec<u64>,
    /// Where calls made with an empty stack hang in the tree.
    base: u32,
    top_level_ns: u64,
    /// A worker's times per job and call.
    work: HashMap<Work, WorkTimes>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            stack: Vec::new(),
            totals: Vec::new(),
            running: Vec::new(),
            nodes: vec![Node {
                frame: u32::MAX,
                parent: ROOT,
            }],
            children: HashMap::default(),
            own_ns: vec![0],
            base: ROOT,
            top_level_ns: 0,
            work: HashMap::new(),
        }
    }
}

impl Recorder {
    /// A record for code that runs inside an open call of `outer` (compiled code): it knows
    /// which functions are already running there, and is merged with [`Recorder::absorb`] only
    /// if that code finishes.
    pub(crate) fn nested(outer: &Recorder) -> Recorder {
        Recorder {
            running: outer.running.clone(),
            ..Recorder::default()
        }
    }

    /// Calls made with an empty stack hang under `path` from now on.
    pub(crate) fn set_base(&mut self, path: &[Frame]) {
        let mut node = ROOT;
        for frame in path {
            node = self.child(node, intern(frame.clone()));
        }
        self.base = node;
    }

    fn child(&mut self, parent: u32, frame: u32) -> u32 {
        if let Some(&node) = self.children.get(&(parent, frame)) {
            return node;
        }
        let node = self.nodes.len() as u32;
        self.nodes.push(Node { frame, parent });
        self.own_ns.push(0);
        self.children.insert((parent, frame), node);
        node
    }

    pub(crate) fn enter(&mut self, id: u32) {
        self.open(id, false);
    }

    /// Opens a builtin's frame (see [`Open::builtin`]).
    pub(crate) fn enter_builtin(&mut self, id: u32) {
        self.open(id, true);
    }

    fn open(&mut self, id: u32, builtin: bool) {
        let at = self.stack.last().map_or(self.base, |open| open.node);
        let node = self.child(at, id);
        let index = id as usize;
        if self.running.len() <= index {
            self.running.resize(index + 1, 0);
        }
        self.running[index] += 1;
        self.stack.push(Open {
            id,
            node,
            start: Instant::now(),
            children_ns: 0,
            builtin,
            builtins_ns: 0,
        });
    }

    /// Closes the innermost open call; `compiled` says it ran in the fast tier.
    pub(crate) fn exit(&mut self, compiled: bool) {
        let Some(open) = self.stack.pop() else {
            return;
        };
        let elapsed = open.start.elapsed().as_nanos() as u64;
        let own = elapsed.saturating_sub(open.children_ns);
        self.own_ns[open.node as usize] += own;
        match self.stack.last_mut() {
            Some(caller) => {
                caller.children_ns += elapsed;
                if open.builtin {
                    caller.builtins_ns += own;
                }
            }
            None => self.top_level_ns += elapsed,
        }
        let index = open.id as usize;
        self.running[index] -= 1;
        if open.builtin {
            return;
        }
        let own = own + open.builtins_ns;
        let outermost = self.running[index] == 0;
        if self.totals.len() <= index {
            self.totals.resize(index + 1, Totals::default());
        }
        let totals = &mut self.totals[index];
        totals.calls += 1;
        totals.own_ns += own;
        totals.compiled += compiled as u64;
        if outermost {
            totals.primitive += 1;
            totals.cumulative_ns += elapsed;
        }
    }

    /// The times of `work` so far.
    pub(crate) fn work(&mut self, work: Work) -> &mut WorkTimes {
        self.work
            .entry(work)
            .or_insert_with(|| WorkTimes::new(work))
    }

    /// The frames of the open calls, outermost first, under the base path.
    pub(crate) fn path(&self) -> Vec<Frame> {
        let node = self.stack.last().map_or(self.base, |open| open.node);
        self.path_of(node)
    }

    fn path_of(&self, mut node: u32) -> Vec<Frame> {
        let mut frames = Vec::new();
        while node != ROOT {
            let n = self.nodes[node as usize];
            frames.push(frame_of(n.frame));
            node = n.parent;
        }
        frames.reverse();
        frames
    }

    /// Adds the record of code that ran inside the innermost open call (see [`Recorder::nested`]).
    pub(crate) fn absorb(&mut self, inner: Recorder) {
        let at = self.stack.last().map_or(self.base, |open| open.node);
        let mut mapped = vec![at; inner.nodes.len()];
        // Parents come before their children in `nodes`.
        for (index, node) in inner.nodes.iter().enumerate().skip(1) {
            mapped[index] = self.child(mapped[node.parent as usize], node.frame);
            self.own_ns[mapped[index] as usize] += inner.own_ns[index];
        }
        if self.totals.len() < inner.totals.len() {
            self.totals.resize(inner.totals.len(), Totals::default());
        }
        for (mine, theirs) in self.totals.iter_mut().zip(&inner.totals) {
            mine.add(theirs);
        }
        let inside: u64 = inner.own_ns.iter().sum();
        match self.stack.last_mut() {
            Some(open) => open.children_ns += inside,
            None => self.top_level_ns += inside,
        }
    }

    /// Adds `ns` of own time to the base path's last frame (the main script's top level).
    pub(crate) fn charge_base(&mut self, ns: u64) {
        self.own_ns[self.base as usize] += ns;
    }

    /// Time spent in calls made with an empty stack.
    pub(crate) fn top_level_ns(&self) -> u64 {
        self.top_level_ns
    }

    /// What this thread recorded, by frame.
    pub(crate) fn finish(self) -> Recorded {
        let functions = self
            .totals
            .iter()
            .enumerate()
            .filter(|(_, t)| t.calls > 0)
            .map(|(id, t)| (frame_of(id as u32), *t))
            .collect();
        let stacks = (1..self.nodes.len() as u32)
            .filter(|&node| self.own_ns[node as usize] > 0)
            .map(|node| (self.path_of(node), self.own_ns[node as usize]))
            .collect();
        Recorded {
            functions,
            stacks,
            work: self.work.into_values().collect(),
        }
    }
}

/// A process's record, as a worker sends it at its end and as the main process merges them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Recorded {
    pub(crate) functions: Vec<(Frame, Totals)>,
    /// Own nanoseconds by call path.
    pub(crate) stacks: Vec<(Vec<Frame>, u64)>,
    /// What this worker did for `pool_map` jobs and calls.
    pub(crate) work: Vec<WorkTimes>,
}

/// Which piece of work a worker's times belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Work {
    /// A `pool_map` job.
    Job(u64),
    /// A spawned call (`spawn`, `pool_submit`) by its process id.
    Call(u64),
}

/// Item samples kept per job and worker, for the median: bounded, so a long map stays cheap.
const MAX_SAMPLES: usize = 100_000;

/// How long a worker spent on one job's items, and on moving their data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkTimes {
    pub(crate) work: Work,
    pub(crate) items: u64,
    pub(crate) busy_ns: u64,
    /// Turning items into values and results into messages, and sending them.
    pub(crate) moving_ns: u64,
    pub(crate) min_ns: u64,
    pub(crate) max_ns: u64,
    /// The first items' times.
    pub(crate) samples: Vec<u64>,
}

impl WorkTimes {
    pub(crate) fn new(work: Work) -> WorkTimes {
        WorkTimes {
            work,
            items: 0,
            busy_ns: 0,
            moving_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            samples: Vec::new(),
        }
    }

    pub(crate) fn item(&mut self, ns: u64) {
        self.items += 1;
        self.busy_ns += ns;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(ns);
        }
    }
}
