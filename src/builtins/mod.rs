//! The script-facing builtins (`spawn`, `pool_map`, `queue`, ...): the same code in the parent and in
//! every worker; only the [`Backend`] behind them differs.

mod actor;
mod collections;
mod futures;
mod log;
mod pool;
mod process;
mod queue;
pub(crate) mod shared;
mod supervisor;
mod sync;
mod system;

use crate::locks::lock;
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, FuncRegistration, INT, Position};

use crate::{
    Error, RemoteError, Value,
    logging::{Level, LogRecord},
    settings::Settings,
    stop::StopCheck,
    value::{FnTable, FnValue, Held, ProcessHandle},
    wire::{Answer, Object, Op, Reply},
};

/// Where builtins send their operations: the hub itself in the parent, the parent over the socket in
/// a worker. This is the whole difference between the two sides.
pub(crate) trait Backend: Send + Sync {
    /// Performs `op`, blocking until it completes or fails.
    fn call(&self, op: Op) -> Result<Reply, Error>;

    /// Performs `op`, which cannot block, without waiting for an answer where that saves a round
    /// trip (a worker's put on an unbounded queue).
    fn post(&self, op: Op) -> Result<(), Error> {
        self.call(op).map(|_| ())
    }

    /// Hands a log record to the main process, which alone writes records.
    fn log(&self, record: LogRecord) -> Result<(), Error> {
        self.post(Op::Log(Box::new(record)))
    }
}

/// What a builtin returns to the script.
type ScriptResult = Result<Dynamic, Box<EvalAltResult>>;

/// What every builtin closure shares.
pub(crate) struct Ctx {
    backend: Arc<dyn Backend>,
    fns: FnTable,
    stop: StopCheck,
    last_remote: Mutex<Option<(String, RemoteError)>>,
    actor: Mutex<Actor>,
    /// How many messages `recv(pred)` may pass over and keep.
    mailbox_limit: usize,
    /// Log records below this level are not made.
    log_level: Level,
    /// The script's name, for log records.
    script: String,
    /// `host()`: the cluster agent running this process, or `local`.
    host: String,
    /// This is the main script's context, which counts its handles (see [`Held`]).
    counts_handles: bool,
}

/// This process as an actor: who it is, and the messages a selective `recv` passed over (oldest
/// first; they come before anything still in the main process's copy of the mailbox).
#[derive(Default)]
struct Actor {
    me: Option<ProcessHandle>,
    parent: Option<ProcessHandle>,
    saved: VecDeque<Dynamic>,
    next_tag: INT,
    /// The main process was told a `self()` handle of this process exists.
    shared: bool,
}

impl Ctx {
    /// The context of the main script (`me`) or of a worker (`None` until it runs a process).
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        fns: FnTable,
        stop: StopCheck,
        me: Option<ProcessHandle>,
        settings: &Settings,
        script: &str,
    ) -> Arc<Ctx> {
        let counts_handles = me.is_some();
        Arc::new(Ctx {
            backend,
            fns,
            stop,
            last_remote: Mutex::new(None),
            actor: Mutex::new(Actor {
                me,
                ..Actor::default()
            }),
            mailbox_limit: settings.limits.max_mailbox,
            log_level: settings.log_level,
            host: match settings.host.as_str() {
                "" => "local".into(),
                agent => agent.into(),
            },
            script: script.to_string(),
            counts_handles,
        })
    }

    /// Refuses `builtin` in a function running on a cluster agent: processes it would start
    /// would run on the parent's machine, not this one.
    pub(super) fn on_this_machine(&self, builtin: &str) -> Result<(), Box<EvalAltResult>> {
        match self.host.as_str() {
            "local" => Ok(()),
            agent => Err(invalid(format!(
                "{builtin}: this function runs on the cluster agent {agent}, where processes \
                 cannot be started; call {builtin} from the main script"
            ))),
        }
    }

    /// The main script's count of its copies of `object`'s handle; `None` elsewhere.
    fn held(&self, object: Object) -> Option<Held> {
        let backend = self.backend.clone();
        self.counts_handles.then(|| {
            Held::new(move || {
                let _ = backend.post(Op::Unreferenced(object)); // after the run: nothing to free
            })
        })
    }

    /// A worker starts running a spawned process (`me`), or with `None` pool_map items.
    pub(crate) fn become_process(&self, me: Option<ProcessHandle>, parent: Option<ProcessHandle>) {
        let mut actor = self.actor();
        actor.me = me;
        actor.parent = parent;
        actor.saved.clear();
        actor.shared = false;
    }

    fn actor(&self) -> MutexGuard<'_, Actor> {
        lock(&self.actor)
    }

    /// A number unique within this process, to match replies to requests.
    fn tag(&self) -> INT {
        let mut actor = self.actor();
        actor.next_tag += 1;
        actor.next_tag
    }

    /// The next message that `matches`, oldest first, waiting at most `timeout`; `None` if it
    /// passes. Messages that do not match stay, in order, for later receives.
    fn receive(
        &self,
        timeout: Option<f64>,
        mut matches: impl FnMut(&Dynamic) -> Result<bool, Box<EvalAltResult>>,
    ) -> Result<Option<Dynamic>, Box<EvalAltResult>> {
        let timeout = timeout.map(|t| seconds(t, "recv")).transpose()?;
        // Taken out while predicates run: a predicate may itself receive.
        let mut saved = std::mem::take(&mut self.actor().saved);
        let found = find_and_remove(&mut saved, &mut matches);
        {
            let mut actor = self.actor();
            saved.append(&mut actor.saved);
            actor.saved = saved;
        }
        if let Some(message) = found? {
            return Ok(Some(message));
        }
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64());
            let message = match self.ask(Op::Recv { timeout: left })? {
                Some(v) => self.to_dynamic(v),
                None => return Ok(None),
            };
            match matches(&message) {
                Ok(true) => return Ok(Some(message)),
                Ok(false) => self.pass_over(message)?,
                Err(e) => {
                    self.pass_over(message)?;
                    return Err(e);
                }
            }
        }
    }

    /// Keeps a message a selective receive did not want, within the mailbox limit.
    fn pass_over(&self, message: Dynamic) -> Result<(), Box<EvalAltResult>> {
        let mut actor = self.actor();
        actor.saved.push_back(message);
        if self.mailbox_limit > 0 && actor.saved.len() > self.mailbox_limit {
            return Err(invalid(format!(
                "{} messages are waiting that no recv(pred) matched (the mailbox limit is {})",
                actor.saved.len(),
                self.mailbox_limit
            )));
        }
        Ok(())
    }

    /// Performs `op`, answered with the type `T` its reply carries.
    fn ask<T: Answer>(&self, op: Op) -> Result<T, Box<EvalAltResult>> {
        let reply = self.backend.call(op).map_err(|e| self.script_error(e))?;
        T::from_reply(reply).map_err(|other| unexpected(&other))
    }

    fn post(&self, op: Op) -> Result<(), Box<EvalAltResult>> {
        self.backend.post(op).map_err(|e| self.script_error(e))
    }

    fn to_dynamic(&self, value: Value) -> Dynamic {
        value.into_dynamic(&self.fns)
    }

    /// When the running code must stop (Ctrl-C in the parent, a time limit in a worker).
    pub(crate) fn stop_check(&self) -> &StopCheck {
        &self.stop
    }

    /// Turns a runtime error into the string a script can catch, remembering a remote error's
    /// details so an uncaught one can be reported at both its call site and its origin.
    fn script_error(&self, error: Error) -> Box<EvalAltResult> {
        match error {
            Error::Interrupted { signal } => {
                return crate::stop::terminate(crate::stop::Stop::Interrupted(signal));
            }
            Error::Linked(_) => return crate::stop::terminate(crate::stop::Stop::Linked),
            _ => {}
        }
        let message = error.to_string();
        if let Some(remote) = remote_cause(&error) {
            *lock(&self.last_remote) = Some((message.clone(), remote.clone()));
        }
        EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into()
    }

    /// The worker-side error behind `message`, if a builtin raised it.
    pub(crate) fn remote_error_for(&self, message: &str) -> Option<RemoteError> {
        let stash = lock(&self.last_remote);
        stash
            .as_ref()
            .filter(|(m, _)| m == message)
            .map(|(_, remote)| remote.clone())
    }
}

fn remote_cause(error: &Error) -> Option<&RemoteError> {
    match error {
        Error::Remote(remote) => Some(remote),
        Error::MapItem { source, .. } => remote_cause(source),
        _ => None,
    }
}

fn find_and_remove(
    saved: &mut VecDeque<Dynamic>,
    matches: &mut impl FnMut(&Dynamic) -> Result<bool, Box<EvalAltResult>>,
) -> Result<Option<Dynamic>, Box<EvalAltResult>> {
    for at in 0..saved.len() {
        if matches(&saved[at])? {
            return Ok(saved.remove(at));
        }
    }
    Ok(None)
}

/// Registers every builtin and handle type on `engine`.
pub(crate) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    actor::register(engine, ctx);
    log::register(engine, ctx);
    futures::register(engine, ctx);
    supervisor::register(engine, ctx);
    sync::register(engine, ctx);
    process::register(engine, ctx);
    pool::register(engine, ctx);
    queue::register(engine, ctx);
    shared::register(engine);
    shared::register_map(engine, ctx);
    system::register(engine, ctx);
    collections::register(engine);
}

/// `name(f, a1, ..., aN)` is registered for N up to this many arguments.
const MAX_CALL_ARGS: usize = 8;

/// Starts a call of a function value with arguments: a process, or a future.
type Starter<R> = fn(&Ctx, FnValue, Vec<Value>) -> Result<R, Box<EvalAltResult>>;

/// Registers `name(f, args...)` (a function value, then up to [`MAX_CALL_ARGS`] arguments, each
/// checked to be sendable) as `start(ctx, f, args)`: `spawn` and `pool_submit`.
fn register_call_starter<R: rhai::Variant + Clone>(
    engine: &mut Engine,
    ctx: &Arc<Ctx>,
    name: &'static str,
    start: Starter<R>,
) {
    for arity in 1..=MAX_CALL_ARGS + 1 {
        let ctx = ctx.clone();
        engine.register_raw_fn(
            name,
            vec![std::any::TypeId::of::<Dynamic>(); arity],
            move |_, args| {
                let f = function_arg(args[0], name)?;
                let args = args[1..]
                    .iter()
                    .map(|a| sendable(a, &format!("{name} argument")))
                    .collect::<Result<_, _>>()?;
                start(&ctx, f, args)
            },
        );
    }
}

/// `==` and `!=` for a handle type.
fn register_equality<T: rhai::Variant + Clone + PartialEq>(engine: &mut Engine) {
    engine.register_fn("==", |a: T, b: T| a == b);
    engine.register_fn("!=", |a: T, b: T| a != b);
}

/// A plain script error with `message`.
/// A script error with `message`, at the call's position.
pub(crate) fn invalid(message: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into().into(), Position::NONE).into()
}

/// Converts a value to send, as a script error naming the value's type when it cannot be sent,
/// or saying it is nested too deep or too big for a message.
fn sendable(value: &Dynamic, what: &str) -> Result<Value, Box<EvalAltResult>> {
    Value::from_dynamic(value)
        .and_then(Value::fits_a_frame)
        .map_err(|e| invalid(format!("{what}: {e}")))
}

/// The function value a builtin was given.
fn function_arg(value: &Dynamic, builtin: &str) -> Result<FnValue, Box<EvalAltResult>> {
    let Some(f) = value.read_lock::<FnPtr>() else {
        return Err(invalid(format!(
            "{builtin} expects a function value (Fn(\"name\") or a closure) as its first argument, got {}",
            value.type_name()
        )));
    };
    FnValue::from_fn_ptr(&f).map_err(|e| invalid(format!("{builtin}: {e}")))
}

/// Seconds from an int or float argument, refusing negative and non-finite values.
fn seconds(value: f64, what: &str) -> Result<f64, Box<EvalAltResult>> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(invalid(format!(
            "{what} needs a time in seconds that is zero or more, got {value}"
        )))
    }
}

/// Registers a side-effecting method (volatile, so no optimizer ever runs it at compile time).
pub(crate) fn method<A: 'static, const N: usize, const X: bool, R, const F: bool>(
    engine: &mut Engine,
    name: &str,
    f: impl rhai::RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
) where
    R: rhai::Variant + Clone,
{
    FuncRegistration::new(name)
        .with_volatility(true)
        .register_into_engine(engine, f);
}

/// Registers `name()`, `name(secs)` and `name(secs_float)` on handle type `H`, all through
/// `f(ctx, handle, timeout)`: every blocking wait has its timeout twin.
fn waiting_method<H: rhai::Variant + Clone>(
    engine: &mut Engine,
    ctx: &Arc<Ctx>,
    name: &str,
    f: fn(&Ctx, &H, Option<f64>) -> ScriptResult,
) {
    let c = ctx.clone();
    method(engine, name, move |h: &mut H| f(&c, h, None));
    let c = ctx.clone();
    method(engine, name, move |h: &mut H, secs: INT| {
        f(&c, h, Some(secs as f64))
    });
    let c = ctx.clone();
    method(engine, name, move |h: &mut H, secs: f64| {
        f(&c, h, Some(secs))
    });
}

fn unexpected(reply: &Reply) -> Box<EvalAltResult> {
    invalid(format!("internal error: unexpected reply {reply:?}"))
}
