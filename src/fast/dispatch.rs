//! How compiled code is reached from Rhai: each script function the tier might compile is replaced,
//! in the program that runs, by a native function of the same name and arity that runs it compiled
//! or else calls the original, kept under another name. Calls from the script, from `pool_map`,
//! from `spawn` and from function values all resolve to it, in the main process and in workers.
//! In a profiled run every script function a stand-in can stand for is routed, and its stand-in
//! records each call for the profiler.

use std::sync::Arc;

use rhai::{
    AST, Dynamic, Engine, EvalAltResult, EvalContext, Expression, FnPtr, FuncRegistration, Module,
    NativeCallContext, Shared, Stmt,
};

use super::{
    Budget, FastTier, Mode, Notices,
    loops::{LOOP_NODE, Loops, wrap_loops},
};
use crate::{
    profile::{self, Frame},
    stop::StopCheck,
};

/// Functions with more parameters stay in Rhai.
const MAX_PARAMS: usize = 8;

const WALKER_PREFIX: &str = "__rhai__";
/// How Rhai names closures (`rhai::engine::FN_ANONYMOUS`, not exported).
const CLOSURE_PREFIX: &str = "anon$";

/// The name the original (tree-walked) function is kept under. A closure's keeps Rhai's prefix
/// for closures: Rhai looks other names that are not identifiers up among natives only.
fn walker_name(name: &str) -> String {
    match name.strip_prefix(CLOSURE_PREFIX) {
        Some(closure) => format!("{}{WALKER_PREFIX}{closure}", CLOSURE_PREFIX),
        None => format!("{WALKER_PREFIX}{name}"),
    }
}

/// The script's name for a function kept under `walker_name(name)`.
fn written_name(name: &str) -> Option<String> {
    match name.strip_prefix(CLOSURE_PREFIX) {
        Some(closure) => closure
            .strip_prefix(WALKER_PREFIX)
            .map(|rest| format!("{}{rest}", CLOSURE_PREFIX)),
        None => name.strip_prefix(WALKER_PREFIX).map(String::from),
    }
}

/// A program as written, and as it runs: with its compilable functions routed through the tier.
pub(crate) struct Accelerated {
    pub(crate) written: AST,
    pub(crate) running: AST,
    /// A function value for each routed function, by name: Rhai turns a bare function name into
    /// a function value only for script functions, so the engine that runs `running` must have
    /// these ([`Accelerated::install`]).
    names: Shared<Module>,
    pub(super) tier: Arc<FastTier>,
    /// Where the nodes standing for top-level loops lead, if `running` has any.
    loops: Option<Arc<Loops>>,
    stop: StopCheck,
    profiled: bool,
}

impl Accelerated {
    /// `stop` is checked inside compiled loops (Ctrl-C in the main process, a time limit in a
    /// worker); what the tier has to say goes to `notices`; `profiled`: calls are recorded.
    pub(crate) fn new(
        written: AST,
        engine: &Engine,
        stop: StopCheck,
        notices: Notices,
        profiled: bool,
    ) -> Accelerated {
        let tier = FastTier::new(&written, engine, Mode::from_env(), profiled).telling(notices);
        // A profiled run times calls, which a compiled loop makes without recording them.
        let (statements, loops) = match tier.is_enabled() && !profiled {
            true => {
                let compiles = |name: &str, arity| tier.compiles_call(name, arity);
                let (statements, loops) = wrap_loops(written.statements(), &compiles);
                (Some(statements), loops)
            }
            false => (None, Vec::new()),
        };
        let tier = Arc::new(tier.with_loops(&loops));
        let (running, names) = accelerate(&written, statements, &tier, &stop, profiled);
        let loops = (!loops.is_empty()).then(|| {
            Arc::new(Loops {
                sites: loops,
                stop: stop.clone(),
                explained: Default::default(),
            })
        });
        Accelerated {
            running,
            written,
            names: names.into(),
            tier,
            loops,
            stop,
            profiled,
        }
    }

    /// Calls `f` compiled when it can, skipping the stand-in (`pool_map` calls one function per
    /// item, closures included), else (and in verify mode, as well) with `rhai`.
    pub(crate) fn call(
        &self,
        f: &FnPtr,
        mut args: Vec<Dynamic>,
        engine: &Engine,
        rhai: impl FnOnce(Vec<Dynamic>) -> Result<Dynamic, Box<EvalAltResult>>,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        if self.profiled {
            return rhai(args); // through the stand-in, which records the call
        }
        // pool_map and spawn call from the top of a fresh call stack.
        let limits = || Budget::of(engine, Some(self.stop.clone()), 1);
        // A closure's captured values come first, as Rhai passes them.
        let compiled = self.tier.call(f.fn_name(), f.curry(), &mut args, limits);
        match compiled {
            Some(compiled) if self.tier.mode().verify => {
                FastTier::verify(f.fn_name(), compiled, || rhai(args))
            }
            Some(compiled) => compiled,
            None => rhai(args),
        }
    }

    /// Lets `engine` run this program: bare names of routed functions become function values.
    pub(crate) fn install(&self, engine: &mut Engine) {
        if !self.names.is_empty() {
            engine.register_global_module(self.names.clone());
        }
        if let Some(loops) = &self.loops {
            let (loops, tier) = (loops.clone(), self.tier.clone());
            let handler = move |ctx: &mut EvalContext, inputs: &[Expression], state: &Dynamic| {
                loops.run(&tier, ctx, inputs, state)
            };
            engine
                .register_custom_syntax_handler(LOOP_NODE, false, handler)
                .expect("the engine evaluates ASTs (rhai's `no_ast` is off)");
        }
    }

    /// Adds a chunk of program (a REPL input); compiled specializations start afresh.
    pub(crate) fn add(&mut self, chunk: AST, engine: &Engine) {
        self.written += chunk;
        let written = std::mem::take(&mut self.written);
        let notices = self.tier.notices.clone();
        *self = Accelerated::new(written, engine, self.stop.clone(), notices, self.profiled);
    }
}

/// `ast` with its compilable script functions (all of them, when `profiled`) routed through
/// `tier`, and its statements replaced by `statements` if given, and a function value for each
/// routed function by name; `stop` is checked inside compiled loops.
fn accelerate(
    ast: &AST,
    statements: Option<Vec<Stmt>>,
    tier: &Arc<FastTier>,
    stop: &StopCheck,
    profiled: bool,
) -> (AST, Module) {
    let mut names = Module::new();
    if !tier.is_enabled() && !profiled {
        return (ast.clone(), names);
    }
    let mut lib = Module::new();
    for def in ast.iter_fn_def() {
        let (name, arity) = (def.name.as_str(), def.params.len());
        let compiles = tier.is_enabled() && arity <= MAX_PARAMS && tier.may_route(name, arity);
        let timed = profiled && arity <= MAX_PARAMS && tier.may_profile(name, arity);
        if !compiles && !timed {
            lib.set_script_fn(def.clone());
            continue;
        }
        let mut walker = (**def).clone();
        walker.name = walker_name(name).into();
        let entry = Entry {
            tier: compiles.then(|| tier.clone()),
            name: name.into(),
            walker: walker.name.clone(),
            stop: stop.clone(),
            frame: timed.then(|| {
                profile::intern(Frame::Script {
                    name: name.into(),
                    arity: arity as u32,
                })
            }),
        };
        lib.set_script_fn(walker);
        register(&mut lib, arity, entry);
        if let Ok(value) = FnPtr::new(name) {
            names.set_var(name, value);
        }
    }
    let mut out = ast.clone();
    out.clear_functions();
    if let Some(statements) = statements {
        out.clear_statements();
        out += AST::new(statements, Module::new());
    }
    out += AST::new_from_module(lib);
    (out, names)
}

/// Registers `entry`, the native stand-in for its function with `arity` parameters. The first
/// argument comes by reference, as a method's does (pure: it is never changed), so that Rhai
/// does not copy a variable's array or map only for the tier to read it.
fn register(lib: &mut Module, arity: usize, entry: Entry) {
    let registration = FuncRegistration::new(entry.name.clone())
        .with_volatility(true)
        .with_purity(true);
    macro_rules! arities {
        ($($n:literal => ($($a:ident),*)),*) => {
            match arity {
                0 => {
                    registration.set_into_module(lib, move |ctx: NativeCallContext| {
                        entry.call(&ctx, None, &mut [])
                    });
                }
                $($n => {
                    registration.set_into_module(
                        lib,
                        move |ctx: NativeCallContext, first: &mut Dynamic, $($a: Dynamic),*| {
                            entry.call(&ctx, Some(first), &mut [$($a),*])
                        },
                    );
                })*
                _ => unreachable!("at most {MAX_PARAMS} parameters"),
            }
        };
    }
    arities!(
        1 => (), 2 => (b), 3 => (b, c), 4 => (b, c, d), 5 => (b, c, d, e), 6 => (b, c, d, e, f),
        7 => (b, c, d, e, f, g), 8 => (b, c, d, e, f, g, h)
    );
}

/// One stand-in: the function's name, the tier that runs it if it may compile, and the frame the
/// profiler records its calls under if the run is profiled.
struct Entry {
    tier: Option<Arc<FastTier>>,
    name: String,
    /// The name the original function is kept under.
    walker: rhai::ImmutableString,
    stop: StopCheck,
    frame: Option<u32>,
}

impl Entry {
    /// Calls the function on `first` (the caller's, only lent) then `rest`.
    fn call(
        &self,
        ctx: &NativeCallContext,
        first: Option<&mut Dynamic>,
        rest: &mut [Dynamic],
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let Some(frame) = self.frame else {
            return self.run(ctx, first, rest).0;
        };
        profile::enter(frame);
        let (result, compiled) = self.run(ctx, first, rest);
        profile::exit(compiled);
        result
    }

    /// Runs the function compiled if it can, else in Rhai; says whether it ran compiled.
    fn run(
        &self,
        ctx: &NativeCallContext,
        first: Option<&mut Dynamic>,
        rest: &mut [Dynamic],
    ) -> (Result<Dynamic, Box<EvalAltResult>>, bool) {
        let mut args = Lent::new(first, rest);
        let Some(tier) = &self.tier else {
            return (self.walk(ctx, args.copied()), false);
        };
        let engine = ctx.engine();
        // The call itself is at level `call_level()`, as the script function would have been.
        let limits = || Budget::of(engine, Some(self.stop.clone()), ctx.call_level());
        match tier.call(&self.name, &[], &mut args.values, limits) {
            Some(compiled) if tier.mode().verify => (
                FastTier::verify(&self.name, compiled, || {
                    profile::paused(|| self.walk(ctx, args.copied()))
                }),
                true,
            ),
            Some(compiled) => (compiled, true),
            None => (self.walk(ctx, args.copied()), false),
        }
    }

    /// Runs the original function in Rhai; errors name it as the script does. The native call
    /// and `call_fn_raw` each count a call level, so a recursion that runs here (a routed
    /// function the tier hands back) reaches Rhai's depth limit in fewer calls; below the limit
    /// compiled code runs it, and the walker never goes deeper than Rhai would.
    fn walk(
        &self,
        ctx: &NativeCallContext,
        mut args: Vec<Dynamic>,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let mut refs: Vec<&mut Dynamic> = args.iter_mut().collect();
        ctx.call_fn_raw(&self.walker, false, false, &mut refs)
            .map_err(|e| Box::new(rename(*e)))
    }
}

/// A stand-in's arguments, the first taken from the caller's variable and put back on drop.
struct Lent<'a> {
    first: Option<&'a mut Dynamic>,
    values: Vec<Dynamic>,
}

impl<'a> Lent<'a> {
    fn new(mut first: Option<&'a mut Dynamic>, rest: &mut [Dynamic]) -> Lent<'a> {
        let mut values = Vec::with_capacity(rest.len() + 1);
        values.extend(first.as_deref_mut().map(std::mem::take));
        values.extend(rest.iter_mut().map(std::mem::take));
        Lent { first, values }
    }

    /// The arguments as the function's own copies (Rhai moves them into its scope).
    fn copied(&mut self) -> Vec<Dynamic> {
        let values = std::mem::take(&mut self.values);
        if let Some(first) = self.first.take() {
            *first = values[0].clone();
        }
        values
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(first) = self.first.take() {
            *first = std::mem::take(&mut self.values[0]);
        }
    }
}

/// Gives walked functions their script names back in an error's call chain.
fn rename(error: EvalAltResult) -> EvalAltResult {
    match error {
        EvalAltResult::ErrorInFunctionCall(name, source, inner, pos) => {
            let name = written_name(&name).unwrap_or(name);
            EvalAltResult::ErrorInFunctionCall(name, source, Box::new(rename(*inner)), pos)
        }
        other => other,
    }
}
