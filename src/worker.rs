//! The child side: connect, handshake, compile the parent's program once, then serve calls with
//! `eval_ast(false)` semantics (a worker never runs the script's top level).

use std::{
    collections::VecDeque,
    env,
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use interprocess::local_socket::{GenericNamespaced, Stream, ToNsName, prelude::*};
use rhai::{AST, Dynamic, Engine, EvalAltResult, FnPtr};

use crate::{
    Error, RemoteError, Value,
    builtins::{Backend, Ctx, exit_code},
    engine,
    value::{FnTable, FnValue},
    wire::{
        Conn, FrameReader, FromWorker, ItemFailure, Items, Op, OutStream, Outcome, Reply,
        SharedStream, ToWorker,
    },
};

/// Environment variable naming the parent's socket; its presence makes a process a worker.
pub(crate) const SOCKET_ENV: &str = "MPSCRIPT_WORKER_SOCKET";
/// Environment variable carrying the per-run secret (never argv, which other users can read).
pub(crate) const TOKEN_ENV: &str = "MPSCRIPT_WORKER_TOKEN";
/// Environment variable carrying the id the parent gave this worker.
pub(crate) const ID_ENV: &str = "MPSCRIPT_WORKER_ID";

/// Turns this process into an mpscript worker if the runtime started it as one, and never returns
/// in that case; otherwise returns at once.
///
/// Call it first thing in `main` of any program that embeds mpscript: workers are that same
/// executable, re-executed with an environment variable set. The one rule: nothing with side effects
/// may run before this call.
///
/// ```no_run
/// // The first line of the host's `main`:
/// mpscript::run_worker_if_requested();
/// // ... the host program proper ...
/// ```
pub fn run_worker_if_requested() {
    let Some(socket) = env::var_os(SOCKET_ENV) else {
        return;
    };
    let token = env::var(TOKEN_ENV).unwrap_or_default();
    let id = env::var(ID_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: called before any other thread of this process exists.
    unsafe {
        env::remove_var(SOCKET_ENV);
        env::remove_var(TOKEN_ENV);
        env::remove_var(ID_ENV);
    }
    let code = match serve(&socket.to_string_lossy(), token, id) {
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

fn serve(socket: &str, token: String, worker: u64) -> Result<(), Error> {
    engine::fix_hashing_seed()?;
    let name = socket
        .to_ns_name::<GenericNamespaced>()
        .map_err(|e| Error::io("naming the parent socket", e))?;
    let stream = Stream::connect(name).map_err(|e| Error::io("connecting to the parent", e))?;
    let conn = Arc::new(Conn::new(stream, "parent"));
    conn.send(&FromWorker::Hello {
        token,
        worker,
        pid: std::process::id(),
    })?;
    let link = Arc::new(ParentLink {
        reader: Mutex::new(conn.reader()),
        queued: Mutex::default(),
        conn: conn.clone(),
        next_seq: AtomicU64::new(1),
    });
    let program = match link.next()? {
        ToWorker::Program(program) => program,
        other => return Err(unexpected(&other)),
    };
    let fns = FnTable::default();
    let ctx = Ctx::new(link.clone(), fns.clone());
    let output = {
        let conn = conn.clone();
        Arc::new(move |stream: OutStream, text: &str| {
            let _ = conn.send(&FromWorker::Output {
                stream,
                text: text.to_string(),
            });
        })
    };
    let engine = engine::new_engine(&ctx, &program.limits, output);
    let ast = match engine.compile(&program.source) {
        Ok(ast) => ast,
        Err(e) => return conn.send(&FromWorker::CompileFailed(e.to_string())),
    };
    fns.add(&ast);
    conn.send(&FromWorker::Ready)?;
    Calls {
        engine,
        ast,
        fns,
        job_fn: None,
    }
    .serve(&link)
}

/// The loop that runs the parent's calls.
struct Calls {
    engine: Engine,
    ast: AST,
    fns: FnTable,
    /// The function of the current `pool_map` job, sent once with its first chunk.
    job_fn: Option<(u64, FnPtr)>,
}

impl Calls {
    fn serve(mut self, link: &ParentLink) -> Result<(), Error> {
        loop {
            match link.next()? {
                ToWorker::Call { call, f, args } => {
                    let outcome = self.call(f, args);
                    link.conn.send(&FromWorker::Done { call, outcome })?;
                }
                ToWorker::Map {
                    job,
                    chunk,
                    f,
                    items,
                } => {
                    let result = self.map(job, f, items);
                    link.conn
                        .send(&FromWorker::MapDone { job, chunk, result })?;
                }
                ToWorker::Shutdown => return Ok(()),
                other => return Err(unexpected(&other)),
            }
        }
    }

    fn call(&self, f: FnValue, args: Vec<Value>) -> Outcome {
        let f = f.into_fn_ptr(&self.fns);
        let args: Vec<Dynamic> = args
            .into_iter()
            .map(|a| a.into_dynamic(&self.fns))
            .collect();
        match f.call::<Dynamic>(&self.engine, &self.ast, args) {
            Ok(v) => match Value::from_dynamic(&v) {
                Ok(v) => Outcome::Returned(v),
                Err(e) => Outcome::Threw(unsendable_result(&e)),
            },
            Err(e) => match exit_code(&e) {
                Some(code) => Outcome::Exited(code),
                None => Outcome::Threw(RemoteError::from_rhai(&e)),
            },
        }
    }

    fn map(&mut self, job: u64, f: Option<FnValue>, items: Items) -> Result<Value, ItemFailure> {
        if let Some(f) = f {
            self.job_fn = Some((job, f.into_fn_ptr(&self.fns)));
        }
        let f = match &self.job_fn {
            Some((j, f)) if *j == job => f.clone(),
            _ => {
                return Err(ItemFailure {
                    offset: 0,
                    error: protocol_remote("chunk arrived without its function"),
                });
            }
        };
        let mut results = Results::with_capacity(items.len());
        for (offset, item) in self.items(items).enumerate() {
            let failure = |error| ItemFailure {
                offset: offset as u32,
                error,
            };
            let value = f
                .call::<Dynamic>(&self.engine, &self.ast, (item,))
                .map_err(|e| failure(item_error(&e)))?;
            results
                .push(&value)
                .map_err(|e| failure(unsendable_result(&e)))?;
        }
        Ok(results.finish())
    }

    fn items(&self, items: Items) -> Box<dyn Iterator<Item = Dynamic> + '_> {
        match items {
            Items::Range { start, end } => Box::new((start..end).map(Dynamic::from)),
            Items::Values(Value::IntArray(v)) => Box::new(v.into_iter().map(Dynamic::from)),
            Items::Values(Value::FloatArray(v)) => Box::new(v.into_iter().map(Dynamic::from)),
            Items::Values(Value::Array(v)) => {
                Box::new(v.into_iter().map(|x| x.into_dynamic(&self.fns)))
            }
            Items::Values(other) => Box::new(std::iter::once(other.into_dynamic(&self.fns))),
        }
    }
}

/// Collects a chunk's results, staying a compact int array while every result is an int.
enum Results {
    Ints(Vec<i64>),
    Values(Vec<Value>),
}

impl Results {
    fn with_capacity(n: usize) -> Results {
        Results::Ints(Vec::with_capacity(n))
    }

    fn push(&mut self, value: &Dynamic) -> Result<(), Error> {
        match (&mut *self, value.as_int()) {
            (Results::Ints(ints), Ok(i)) => ints.push(i),
            (Results::Ints(ints), Err(_)) => {
                let mut values: Vec<Value> = ints.drain(..).map(Value::Int).collect();
                values.push(Value::from_dynamic(value)?);
                *self = Results::Values(values);
            }
            (Results::Values(values), _) => values.push(Value::from_dynamic(value)?),
        }
        Ok(())
    }

    fn finish(self) -> Value {
        match self {
            Results::Ints(ints) => Value::IntArray(ints),
            Results::Values(values) => Value::Array(values),
        }
    }
}

fn item_error(e: &EvalAltResult) -> RemoteError {
    match exit_code(e) {
        Some(code) => protocol_remote(&format!(
            "exit({code}) was called inside a pool_map function"
        )),
        None => RemoteError::from_rhai(e),
    }
}

fn unsendable_result(e: &Error) -> RemoteError {
    protocol_remote(&format!("the function's result cannot be sent back: {e}"))
}

fn protocol_remote(message: &str) -> RemoteError {
    RemoteError {
        message: message.into(),
        pid: std::process::id(),
        line: 0,
        column: 0,
        function: String::new(),
    }
}

fn unexpected(message: &ToWorker) -> Error {
    Error::Protocol {
        peer: "parent".into(),
        detail: format!("unexpected message {message:?}"),
    }
}

/// The worker's backend: every operation is a request to the parent, answered in order.
struct ParentLink {
    conn: Arc<Conn>,
    reader: Mutex<FrameReader<SharedStream>>,
    /// Work that arrived while a request waited for its reply (the parent pipelines chunks).
    queued: Mutex<VecDeque<ToWorker>>,
    next_seq: AtomicU64,
}

impl ParentLink {
    /// The next piece of work: queued first, then from the socket.
    fn next(&self) -> Result<ToWorker, Error> {
        if let Some(message) = lock(&self.queued).pop_front() {
            return Ok(message);
        }
        self.read()
    }

    fn read(&self) -> Result<ToWorker, Error> {
        lock(&self.reader).read::<ToWorker>()
    }
}

impl Backend for ParentLink {
    fn call(&self, op: Op) -> Result<Reply, Error> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.conn.send(&FromWorker::Request { seq, op })?;
        loop {
            match self.read()? {
                ToWorker::Reply { seq: s, result } if s == seq => {
                    return result.map_err(Error::Relayed);
                }
                // The parent is tearing down while this call waits: leave quietly.
                ToWorker::Shutdown => std::process::exit(0),
                work @ (ToWorker::Call { .. } | ToWorker::Map { .. }) => {
                    lock(&self.queued).push_back(work)
                }
                other => return Err(unexpected(&other)),
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
