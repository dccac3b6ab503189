//! The worker process's loop, the mirror of the builtins: once its transport has connected it,
//! compile the parent's program once, then serve calls with `eval_ast(false)` semantics (a
//! worker never runs the script's top level).

use crate::locks::lock;
use std::{
    collections::VecDeque,
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rhai::{AST, Dynamic, Engine, EvalAltResult, FnPtr, NativeCallContext, Position};

use crate::{
    Error, OutStream, RemoteError, Value,
    builtins::{Backend, Ctx},
    clock::{coarse_now_ns, now_ns},
    engine::{self, HostSetup, StopChecks},
    fast::Accelerated,
    profile::{self, Frame, Work},
    stop::{Stop, StopCheck, stop_reason},
    transport::{ParentLink, local},
    value::{FnTable, FnValue, ProcessHandle},
    wire::{FromWorker, ItemFailure, Items, MapSetup, Op, Outcome, Reply, ToWorker},
};

const SKIPPED_ENTRY: &str = "it ran the host's main instead of serving: call \
    run_worker_if_requested() (or RuntimeBuilder::run_worker_if_requested()) first thing in main, \
    before anything with side effects";

const NO_HOST_FUNCTIONS: &str = "it was started by the free mpscript::run_worker_if_requested(), \
    which does not know the functions the host registered with RuntimeBuilder::register: call \
    builder.run_worker_if_requested() on the same builder instead";

/// How many bytes of results a chunk gathers before it sends them, however little time passed.
const PART_BYTES: usize = 16 << 20;

/// How often a long chunk sends the results it has so far.
const PART_INTERVAL_NS: u64 = 50_000_000;

/// Turns this process into an mpscript worker if the runtime started it as one, and never returns
/// in that case; otherwise returns at once.
///
/// Call it first thing in `main` of any program that embeds mpscript: workers are that same
/// executable, re-executed with an environment variable set. The one rule: nothing with side effects
/// may run before this call. A host that registers its own functions calls
/// [`RuntimeBuilder::run_worker_if_requested`](crate::RuntimeBuilder::run_worker_if_requested)
/// instead, so its workers know them too.
///
/// ```no_run
/// // The first line of the host's `main`:
/// mpscript::run_worker_if_requested();
/// // ... the host program proper ...
/// ```
pub fn run_worker_if_requested() {
    serve_if_requested(None);
}

/// [`run_worker_if_requested`] with the host's registrations.
pub(crate) fn serve_if_requested(host: Option<HostSetup>) {
    if local::child::is_worker() {
        become_worker(Entry::Served(host));
    }
}

/// A process started as a worker is building a runtime: its `main` skipped the entry point and
/// ran the host's own code. Say so to the parent, which reports it once, and exit without
/// starting workers of its own (that would repeat without end).
pub(crate) fn refuse_if_unserved() {
    if local::child::is_worker() {
        become_worker(Entry::Skipped);
    }
}

/// How a process started as a worker got here.
enum Entry {
    /// Through `run_worker_if_requested`, with the host's registrations if it has any.
    Served(Option<HostSetup>),
    /// Through the host's `main`, which did not call `run_worker_if_requested` first.
    Skipped,
}

/// Serves the parent as a worker (or tells it why not); never returns.
fn become_worker(entry: Entry) -> ! {
    crate::memory::reuse_freed_buffers();
    let served = local::child::connect().and_then(|parent| serve(Arc::new(parent), entry));
    let code = match served {
        Ok(()) => 0,
        Err(e) if e.is_disconnected() => 0,
        Err(e) => {
            // One write, so lines from several workers never interleave.
            let line = format!("mpscript worker {}: {e}\n", std::process::id());
            let _ = std::io::stderr().write_all(line.as_bytes());
            1
        }
    };
    std::process::exit(code);
}

fn serve(conn: Arc<dyn ParentLink>, entry: Entry) -> Result<(), Error> {
    engine::fix_hashing_seed()?;
    let link = Arc::new(Parent {
        queued: Mutex::default(),
        conn: conn.clone(),
        next_seq: AtomicU64::new(1),
    });
    let program = match link.next()? {
        ToWorker::Program(program) => program,
        other => return Err(unexpected(&other)),
    };
    let host = match entry {
        Entry::Skipped => return conn.send(&FromWorker::CompileFailed(SKIPPED_ENTRY.into())),
        Entry::Served(None) if program.host_functions => {
            return conn.send(&FromWorker::CompileFailed(NO_HOST_FUNCTIONS.into()));
        }
        Entry::Served(host) => host,
    };
    let fns = FnTable::default();
    let deadline = Arc::new(Deadline::default());
    let stop: StopCheck = {
        let deadline = deadline.clone();
        Arc::new(move || deadline.passed().map(Stop::TimedOut))
    };
    let ctx = Ctx::new(
        link.clone(),
        fns.clone(),
        stop.clone(),
        None,
        &program.settings,
        &program.name,
    );
    let identity = ctx.clone();
    let output = {
        let conn = conn.clone();
        Arc::new(move |stream: OutStream, text: &str| {
            let _ = conn.post(&FromWorker::Output {
                stream,
                text: text.to_string(),
            });
        })
    };
    let settings = program.settings.clone();
    let profiled = settings.profile;
    if !settings.host.is_empty() {
        crate::shared::on_agent(&settings.host);
    }
    if profiled {
        profile::start(&[]);
    }
    let notices = output.clone();
    let make_engine =
        move |checks| engine::new_engine(&ctx, &settings, host.as_ref(), output.clone(), checks);
    let mut engine = make_engine(StopChecks::OnlyInWaits);
    let mut ast = AST::empty();
    for chunk in &program.chunks {
        match engine.compile(chunk) {
            Ok(chunk) => ast += chunk,
            Err(e) => {
                let why = format!("the program does not compile there: {e}");
                return conn.send(&FromWorker::CompileFailed(why));
            }
        }
    }
    fns.add(&ast);
    conn.send(&FromWorker::Ready)?;
    #[cfg(feature = "grain")]
    let grain = rhai::grain::Compiler::new().compile(&ast);
    let notices = Arc::new(move |text: &str| notices(OutStream::Notice, text));
    let program = Accelerated::new(ast, &engine, stop, notices, profiled);
    program.install(&mut engine);
    Calls {
        #[cfg(feature = "grain")]
        grain,
        program,
        engine,
        timed_engine: None,
        make_engine: Box::new(make_engine),
        fns,
        identity,
        job: None,
        deadline,
    }
    .serve(&link)
}

/// The loop that runs the parent's calls.
struct Calls {
    #[cfg(feature = "grain")]
    grain: rhai::grain::Program<'static>,
    engine: Engine,
    /// The same engine checking time limits between operations, made for the first timed job.
    timed_engine: Option<Engine>,
    make_engine: Box<dyn Fn(StopChecks) -> Engine>,
    /// The program, its numeric functions routed through the fast tier.
    program: Accelerated,
    fns: FnTable,
    /// Who this worker is now: a spawned process (for `self()`, `recv`), or a pool worker.
    identity: Arc<Ctx>,
    /// The current `pool_map` job, set up by its first chunk.
    job: Option<Job>,
    deadline: Arc<Deadline>,
}

struct Job {
    id: u64,
    f: FnPtr,
    timeout: Option<Duration>,
    spread: bool,
    /// Where the map was called, in a profiled run.
    at: Option<Vec<Frame>>,
}

/// The running call's time limit, checked by `on_progress` and `sleep`.
#[derive(Default)]
struct Deadline {
    at_ns: AtomicU64,
    limit_ns: AtomicU64,
}

impl Deadline {
    fn start(&self, limit: Option<Duration>) {
        let limit = limit.map_or(0, |d| d.as_nanos() as u64);
        self.limit_ns.store(limit, Ordering::Relaxed);
        let at = if limit == 0 { 0 } else { now_ns() + limit };
        self.at_ns.store(at, Ordering::Relaxed);
    }

    /// The limit, once it has passed.
    fn passed(&self) -> Option<Duration> {
        let at = self.at_ns.load(Ordering::Relaxed);
        (at != 0 && now_ns() > at)
            .then(|| Duration::from_nanos(self.limit_ns.load(Ordering::Relaxed)))
    }
}

impl Calls {
    fn serve(mut self, link: &Parent) -> Result<(), Error> {
        loop {
            match link.next()? {
                ToWorker::Call {
                    call,
                    f,
                    args,
                    parent,
                    at,
                } => {
                    let me = ProcessHandle::new(call, std::process::id());
                    self.identity.become_process(Some(me), Some(parent));
                    if let Some(at) = &at {
                        profile::set_base(at);
                    }
                    let outcome = self.call(f, args, Work::Call(call));
                    let done = FromWorker::Done { call, outcome };
                    send_or_fail(&*link.conn, &done, |e| FromWorker::Done {
                        call,
                        outcome: Outcome::Threw(unsendable_result(&e)),
                    })?;
                }
                ToWorker::Map {
                    job,
                    chunk,
                    setup,
                    items,
                } => {
                    self.identity.become_process(None, None);
                    let result = self.map(link, job, chunk, setup, items);
                    let done = FromWorker::MapDone { job, chunk, result };
                    send_or_fail(&*link.conn, &done, |e| FromWorker::MapDone {
                        job,
                        chunk,
                        result: Err(ItemFailure::threw(0, unsendable_result(&e))),
                    })?;
                }
                ToWorker::AddChunk(chunk) => self.add_chunk(&chunk)?,
                ToWorker::Shutdown => {
                    if let Some(record) = profile::take() {
                        let _ = link
                            .conn
                            .send(&FromWorker::Profile(Box::new(record.finish())));
                    }
                    return Ok(());
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Merges a chunk the parent compiled after this worker started (a REPL input).
    fn add_chunk(&mut self, chunk: &str) -> Result<(), Error> {
        let chunk = self.engine.compile(chunk).map_err(|e| Error::Protocol {
            peer: "parent".into(),
            detail: format!("a chunk the parent compiled does not compile here: {e}"),
        })?;
        self.fns.add(&chunk);
        self.program.add(chunk, &self.engine);
        self.program.install(&mut self.engine);
        if let Some(timed) = &mut self.timed_engine {
            self.program.install(timed);
        }
        #[cfg(feature = "grain")]
        {
            self.grain = rhai::grain::Compiler::new().compile(&self.program.written);
        }
        Ok(())
    }

    fn call(&self, f: FnValue, args: Vec<Value>, work: Work) -> Outcome {
        let mut stopwatch = Stopwatch::start(work);
        let f = f.into_fn_ptr(&self.fns);
        let args: Vec<Dynamic> = args
            .into_iter()
            .map(|a| a.into_dynamic(&self.fns))
            .collect();
        stopwatch.moved();
        let result = self.program.call(&f, args, &self.engine, |args| {
            f.call::<Dynamic>(&self.engine, &self.program.running, args)
        });
        stopwatch.ran();
        let outcome = self.outcome(result);
        stopwatch.moved();
        outcome
    }

    fn outcome(&self, result: Result<Dynamic, Box<EvalAltResult>>) -> Outcome {
        match result {
            Ok(v) => match Value::from_dynamic(&v).and_then(Value::fits_a_frame) {
                Ok(v) => Outcome::Returned(v),
                Err(e) => Outcome::Threw(unsendable_result(&e)),
            },
            Err(e) => match stop_reason(&e) {
                Some(Stop::Exit(code)) => Outcome::Exited(code),
                _ => Outcome::Threw(RemoteError::from_rhai(&e)),
            },
        }
    }

    fn map(
        &mut self,
        link: &Parent,
        job: u64,
        chunk: u32,
        setup: Option<MapSetup>,
        items: Items,
    ) -> Result<Value, ItemFailure> {
        if let Some(setup) = setup {
            self.job = Some(Job {
                id: job,
                f: setup.f.into_fn_ptr(&self.fns),
                timeout: setup.timeout.map(Duration::from_secs_f64),
                spread: setup.spread,
                at: setup.at,
            });
        }
        let (f, timeout, spread) = match &self.job {
            Some(j) if j.id == job => {
                if let Some(at) = &j.at {
                    profile::set_base(at);
                }
                (j.f.clone(), j.timeout, j.spread)
            }
            _ => {
                let error = worker_error("chunk arrived without its function");
                return Err(ItemFailure::threw(0, error));
            }
        };
        if timeout.is_some() && self.timed_engine.is_none() {
            let mut timed = (self.make_engine)(StopChecks::EveryOperation);
            self.program.install(&mut timed);
            self.timed_engine = Some(timed);
        }
        let engine = match (&self.timed_engine, timeout) {
            (Some(timed), Some(_)) => timed,
            _ => &self.engine,
        };
        // One call context per chunk: FnPtr::call would build Rhai's global state for every item.
        let mut global = engine.new_global_runtime_state();
        global.lib.push(self.program.running.shared_lib().clone());
        let context = NativeCallContext::new_with_all_fields(
            engine,
            f.fn_name(),
            None,
            &global,
            Position::NONE,
        );
        #[cfg(feature = "grain")]
        let mut grain_vm = self.grain_vm(engine, &f);
        let mut results = Results::with_capacity(items.len());
        let mut next_part = coarse_now_ns() + PART_INTERVAL_NS;
        let mut stopwatch = Stopwatch::start(Work::Job(job));
        for (offset, item) in self.items(items).enumerate() {
            stopwatch.moved();
            link.conn
                .starting(job, chunk, offset as u32, timeout.is_some());
            if timeout.is_some() {
                self.deadline.start(timeout);
            }
            let args = arguments(item, spread)
                .map_err(|message| ItemFailure::threw(offset, worker_error(&message)))?;
            #[cfg(feature = "grain")]
            let value = match (&mut grain_vm, spread) {
                (Some(vm), false) => grain_call(vm, &self.grain, &f, args),
                _ => self
                    .program
                    .call(&f, args, engine, |args| f.call_raw(&context, None, args)),
            };
            #[cfg(not(feature = "grain"))]
            let value = self
                .program
                .call(&f, args, engine, |args| f.call_raw(&context, None, args));
            stopwatch.ran();
            if timeout.is_some() {
                self.deadline.start(None);
            }
            let value = value.map_err(|e| item_failure(offset, &e))?;
            results
                .push(&value)
                .map_err(|e| ItemFailure::threw(offset, unsendable_result(&e)))?;
            if coarse_now_ns() >= next_part || results.bytes >= PART_BYTES {
                let values = results.take();
                // Parts are bounded by time and bytes, so a failure here is the parent gone.
                let part = FromWorker::MapPart { job, chunk, values };
                link.conn
                    .send(&part)
                    .map_err(|e| ItemFailure::threw(offset, unsendable_result(&e)))?;
                next_part = coarse_now_ns() + PART_INTERVAL_NS;
            }
        }
        let values = results.take();
        stopwatch.moved();
        Ok(values)
    }

    /// A grain VM for `f` when `MPSCRIPT_GRAIN=1` asks for one and `f` is a script function
    /// (native ones stay on the tree-walker). Opt-in: on Rhai 1.27 a closure created inside a
    /// function running on grain and called from a native function (`filter`, `map`) is not found.
    #[cfg(feature = "grain")]
    fn grain_vm<'e>(&self, engine: &'e Engine, f: &FnPtr) -> Option<rhai::grain::Vm<'e>> {
        if std::env::var_os("MPSCRIPT_GRAIN").is_none_or(|v| v != "1") {
            return None;
        }
        let arity = f.curry().len() + 1;
        self.program
            .written
            .iter_functions()
            .any(|m| m.name == f.fn_name() && m.params.len() == arity)
            .then(|| rhai::grain::Vm::new(engine))
    }

    fn items(&self, items: Items) -> Box<dyn Iterator<Item = Dynamic> + '_> {
        match items {
            Items::Range { start, end } => Box::new((start..end).map(Dynamic::from)),
            Items::Values(Value::IntArray(v)) => Box::new(v.into_iter().map(Dynamic::from)),
            Items::Values(Value::FloatArray(v)) => Box::new(v.into_iter().map(Dynamic::from)),
            Items::Values(Value::BoolArray(v)) => Box::new(v.into_iter().map(Dynamic::from)),
            Items::Values(Value::Array(v)) => {
                Box::new(v.into_iter().map(|x| x.into_dynamic(&self.fns)))
            }
            Items::Values(other) => Box::new(std::iter::once(other.into_dynamic(&self.fns))),
        }
    }
}

/// Splits a worker's time on a piece of work between running script functions and moving data
/// (turning items and results into values and messages, sending parts), in a profiled run.
struct Stopwatch {
    work: Work,
    /// When the last lap ended; `None` when not profiling.
    last: Option<Instant>,
}

impl Stopwatch {
    fn start(work: Work) -> Stopwatch {
        Stopwatch {
            work,
            last: profile::is_on().then(Instant::now),
        }
    }

    fn lap(&mut self) -> Option<u64> {
        let last = self.last.as_mut()?;
        let now = Instant::now();
        let ns = now.duration_since(*last).as_nanos() as u64;
        *last = now;
        Some(ns)
    }

    /// The time since the last lap went to moving data.
    fn moved(&mut self) {
        if let Some(ns) = self.lap() {
            profile::moving(self.work, ns);
        }
    }

    /// The time since the last lap ran one item (or call).
    fn ran(&mut self) {
        if let Some(ns) = self.lap() {
            profile::item(self.work, ns);
        }
    }
}

#[cfg(feature = "grain")]
fn grain_call(
    vm: &mut rhai::grain::Vm<'_>,
    program: &rhai::grain::Program<'static>,
    f: &FnPtr,
    call_args: Vec<Dynamic>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let mut args: Vec<Dynamic> = f.curry().to_vec();
    args.extend(call_args);
    let options = rhai::CallFnOptions::new().eval_ast(false);
    vm.call_fn_with_options::<Dynamic>(options, &mut rhai::Scope::new(), program, f.fn_name(), args)
}

/// The arguments of one call: the item, or with `spread` the item's elements.
fn arguments(item: Dynamic, spread: bool) -> Result<Vec<Dynamic>, String> {
    if !spread {
        return Ok(vec![item]);
    }
    let type_name = item.type_name();
    item.into_array().map_err(|_| {
        format!("each item must be an array of arguments (starmap / spread), got {type_name}")
    })
}

/// Collects a chunk's results as an array value, a compact one (ints, floats or booleans) while
/// every result is of its kind.
struct Results {
    kept: Value,
    /// About how many bytes they take on the wire.
    bytes: usize,
    /// Room to make for the results, before the first part is taken.
    capacity: usize,
}

impl Results {
    fn with_capacity(capacity: usize) -> Results {
        Results {
            kept: Value::Array(Vec::new()),
            bytes: 0,
            capacity,
        }
    }

    /// Adds one result; one that cannot be sent (nested too deep, over a frame) fails its item.
    fn push(&mut self, value: &Dynamic) -> Result<(), Error> {
        if self.kept.array_len() == Some(0) {
            self.kept = Value::array_for(value, self.capacity);
        }
        if self.kept.push_compact(value) {
            self.bytes += 8;
            return Ok(());
        }
        let value = Value::from_dynamic(value)?;
        self.bytes += value.frame_size()?;
        if self.kept.is_compact() {
            self.kept = Value::Array(std::mem::replace(&mut self.kept, Value::Unit).into_items());
        }
        if let Value::Array(values) = &mut self.kept {
            values.push(value);
        }
        Ok(())
    }

    /// The results so far; collecting starts again, empty.
    fn take(&mut self) -> Value {
        self.bytes = 0;
        self.capacity = 0;
        std::mem::replace(&mut self.kept, Value::Array(Vec::new()))
    }
}

/// Sends `message`; if it cannot be encoded (over the frame limit, say) sends what `instead`
/// makes of the error, so the parent learns of the failure and this worker lives on.
fn send_or_fail(
    conn: &dyn ParentLink,
    message: &FromWorker,
    instead: impl FnOnce(Error) -> FromWorker,
) -> Result<(), Error> {
    match conn.send(message) {
        Err(e) if !e.is_disconnected() => conn.send(&instead(e)),
        sent => sent,
    }
}

fn item_failure(offset: usize, e: &EvalAltResult) -> ItemFailure {
    let mut error = RemoteError::from_rhai(e);
    match stop_reason(e) {
        Some(Stop::TimedOut(limit)) => {
            error.message = format!("timed out after {}s", limit.as_secs_f64());
            return ItemFailure {
                offset: offset as u32,
                error,
                timed_out: true,
            };
        }
        Some(Stop::Exit(code)) => {
            error.message = format!("exit({code}) was called inside a pool_map function");
        }
        _ => {}
    }
    ItemFailure::threw(offset, error)
}

impl ItemFailure {
    fn threw(offset: usize, error: RemoteError) -> ItemFailure {
        ItemFailure {
            offset: offset as u32,
            error,
            timed_out: false,
        }
    }
}

fn unsendable_result(e: &Error) -> RemoteError {
    worker_error(&format!("the function's result cannot be sent back: {e}"))
}

fn worker_error(message: &str) -> RemoteError {
    RemoteError::unplaced(message, std::process::id())
}

fn unexpected(message: &ToWorker) -> Error {
    Error::Protocol {
        peer: "parent".into(),
        detail: format!("unexpected message {message:?}"),
    }
}

/// The worker's backend: every operation is a request to the parent, answered in order.
struct Parent {
    conn: Arc<dyn ParentLink>,
    /// Work that arrived while a request waited for its reply (the parent pipelines chunks).
    queued: Mutex<VecDeque<ToWorker>>,
    next_seq: AtomicU64,
}

impl Parent {
    /// The next piece of work: queued first, then from the link.
    fn next(&self) -> Result<ToWorker, Error> {
        if let Some(message) = lock(&self.queued).pop_front() {
            return Ok(message);
        }
        self.conn.recv()
    }
}

impl Backend for Parent {
    fn post(&self, op: Op) -> Result<(), Error> {
        self.conn.post(&FromWorker::Post { op })
    }

    fn call(&self, op: Op) -> Result<Reply, Error> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.conn.send(&FromWorker::Request { seq, op })?;
        loop {
            match self.conn.recv()? {
                ToWorker::Reply { seq: s, result } if s == seq => {
                    return result.map_err(Error::from);
                }
                // The parent is tearing down while this call waits: leave quietly.
                ToWorker::Shutdown => {
                    let _ = self.conn.flush();
                    std::process::exit(0)
                }
                work @ (ToWorker::Call { .. } | ToWorker::Map { .. } | ToWorker::AddChunk(_)) => {
                    lock(&self.queued).push_back(work)
                }
                other => return Err(unexpected(&other)),
            }
        }
    }
}
