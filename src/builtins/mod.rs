//! The script-facing builtins (`spawn`, `pool_map`, `queue`, ...): the same code in the parent and in
//! every worker; only the [`Backend`] behind them differs.

mod pool;
mod process;
mod queue;
mod system;

use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, FuncRegistration, INT, Position};

use crate::{
    Error, RemoteError, Value,
    stop::StopCheck,
    value::{FnTable, FnValue},
    wire::{Op, Reply},
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
}

/// What a builtin returns to the script.
type ScriptResult = Result<Dynamic, Box<EvalAltResult>>;

/// What every builtin closure shares.
pub(crate) struct Ctx {
    backend: Arc<dyn Backend>,
    fns: FnTable,
    stop: StopCheck,
    last_remote: Mutex<Option<(String, RemoteError)>>,
}

impl Ctx {
    pub(crate) fn new(backend: Arc<dyn Backend>, fns: FnTable, stop: StopCheck) -> Arc<Ctx> {
        Arc::new(Ctx {
            backend,
            fns,
            stop,
            last_remote: Mutex::new(None),
        })
    }

    fn call(&self, op: Op) -> Result<Reply, Box<EvalAltResult>> {
        self.backend.call(op).map_err(|e| self.script_error(e))
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
        if let Error::Interrupted { signal } = error {
            return crate::stop::terminate(crate::stop::Stop::Interrupted(signal));
        }
        let message = error.to_string();
        if let Some(remote) = remote_cause(&error) {
            *self.last_remote.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((message.clone(), remote.clone()));
        }
        EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into()
    }

    /// The worker-side error behind `message`, if a builtin raised it.
    pub(crate) fn remote_error_for(&self, message: &str) -> Option<RemoteError> {
        let stash = self.last_remote.lock().unwrap_or_else(|e| e.into_inner());
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

/// Registers every builtin and handle type on `engine`.
pub(crate) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    process::register(engine, ctx);
    pool::register(engine, ctx);
    queue::register(engine, ctx);
    system::register(engine, ctx);
}

/// A plain script error with `message`.
fn invalid(message: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into().into(), Position::NONE).into()
}

/// Converts a value to send, as a script error naming the value's type when it cannot be sent.
fn sendable(value: &Dynamic, what: &str) -> Result<Value, Box<EvalAltResult>> {
    Value::from_dynamic(value).map_err(|e| invalid(format!("{what}: {e}")))
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
pub(super) fn method<A: 'static, const N: usize, const X: bool, R, const F: bool>(
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
