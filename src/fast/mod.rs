//! The fast tier: script functions that only compute with ints, floats and bools are compiled, per
//! list of argument types, to closures over unboxed slots, and run 10x and more faster than Rhai's
//! tree-walker. Anything else, and any call that would raise an error, runs in Rhai unchanged, so
//! results and errors are always Rhai's.
//!
//! `MPSCRIPT_FAST` chooses: unset or `on`; `off`; `verify` (every compiled call is also run in Rhai
//! and the two compared; a difference is an error); `explain` (each decision is printed on stderr).
//! Values combine with commas: `verify,explain`.

mod closure;
mod dispatch;
mod inline;
mod ir;
mod loops;
mod lower;
mod native;
mod ops;
mod shape;
mod source;
#[cfg(test)]
mod tests;

use crate::locks::lock;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use rhai::{AST, Dynamic, Engine, EvalAltResult, Position};

pub(crate) use closure::Budget;
use closure::{Bail, Program, Scalar};
pub(crate) use dispatch::Accelerated;
use ir::Ty;
use loops::LoopSource;
use lower::{SpecKey, label};
use source::Source;

/// Specializations per function (argument type lists) before the rest run in Rhai.
const MAX_SPECIALIZATIONS: usize = 4;

/// The environment variable that chooses the tier's mode.
pub(crate) const MODE_ENV: &str = "MPSCRIPT_FAST";

/// How the tier runs, from [`MODE_ENV`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mode {
    pub(crate) on: bool,
    pub(crate) verify: bool,
    pub(crate) explain: bool,
}

impl Mode {
    pub(crate) fn from_env() -> Mode {
        let value = std::env::var(MODE_ENV).unwrap_or_default();
        let words: Vec<&str> = value.split(',').map(str::trim).collect();
        Mode {
            on: !words.contains(&"off"),
            verify: words.contains(&"verify"),
            explain: words.contains(&"explain"),
        }
    }
}

enum Entry {
    Compiled(Arc<Program>),
    Refused,
}

/// Where the tier says what it decided (explain mode) and what differed (verify mode): the
/// runtime's notices, so a host's output sink receives them.
pub(crate) type Notices = Arc<dyn Fn(&str) + Send + Sync>;

/// The tier for one program (in one process): its functions, and what has been compiled.
pub(crate) struct FastTier {
    source: Source,
    mode: Mode,
    notices: Notices,
    /// Why the engine's settings rule the tier out, if they do.
    disabled: Option<String>,
    /// By function name: each list of argument types tried, and what came of it.
    specs: Mutex<HashMap<String, Tried>>,
    /// Tells this tier's entries in [`LAST_LOOKUP`] from another's.
    id: u64,
    /// Compiled code records its calls for the profiler.
    profiled: bool,
}

/// The last specialization a thread looked up: `pool_map` looks up the same one for every item,
/// and a lock and a hash per item showed in its overhead (2.7% of a refused closure's map).
struct LastLookup {
    tier: u64,
    name: String,
    types: Vec<Ty>,
    program: Option<Arc<Program>>,
}

thread_local! {
    static LAST_LOOKUP: std::cell::RefCell<Option<LastLookup>> =
        const { std::cell::RefCell::new(None) };
}

/// The argument type lists tried for one function, and what came of each.
type Tried = Vec<(Vec<Ty>, Entry)>;

/// Arguments a compiled call takes at most (more run in Rhai).
const MAX_ARGS: usize = 8;

impl FastTier {
    /// The tier for the functions of `ast`; `profiled`: compiled calls are recorded for the
    /// profiler (and the functions are read even when the tier is off, to route them).
    pub(crate) fn new(ast: &AST, engine: &Engine, mode: Mode, profiled: bool) -> FastTier {
        let disabled = if !engine.fast_operators() {
            Some("the engine's fast operators are off (operator overloads may apply)")
        } else if !engine.allow_shadowing() {
            Some("the engine forbids shadowing")
        } else {
            None
        };
        FastTier {
            source: if (mode.on && disabled.is_none()) || profiled {
                Source::new(ast, engine)
            } else {
                Source::default()
            },
            mode,
            notices: Arc::new(|_| {}),
            disabled: disabled.map(String::from),
            specs: Mutex::default(),
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            profiled,
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    fn is_enabled(&self) -> bool {
        self.mode.on && self.disabled.is_none()
    }

    /// Whether the profiler can time `name` with `arity` parameters through a stand-in: not a
    /// method (a stand-in cannot pass `this` on) and sharing no native's name and arity.
    fn may_profile(&self, name: &str, arity: usize) -> bool {
        self.source
            .get(name, arity)
            .is_some_and(|f| !f.is_method && !self.source.shadows_native(name, arity))
    }

    /// Whether `name` with `arity` parameters is a script function worth routing through the
    /// tier: it compiles for all-int or all-float arguments (one that never could, a string
    /// function say, stays a plain script function at no cost), it can be routed by name
    /// (closures are compiled only where `pool_map` calls them), and no native shares its name.
    /// In explain mode, says why not.
    fn may_route(&self, name: &str, arity: usize) -> bool {
        let Some(source) = self.source.get(name, arity) else {
            return false;
        };
        let why_not = if !rhai::is_valid_identifier(name) {
            return false;
        } else if let Some(why) = &source.refusal {
            format!("{name}: {why}")
        } else if self.source.shadows_native(name, arity) {
            format!("{name}: a native function has the same name and arity")
        } else {
            // All numbers ints, or all floats; parameters the body indexes as arrays of them.
            let types = |number: Ty, array: Ty| -> Vec<Ty> {
                let arrays = source.arrays.iter();
                arrays.map(|&a| if a { array } else { number }).collect()
            };
            let ints = (name.to_string(), types(Ty::Int, Ty::IntArray));
            let floats = (name.to_string(), types(Ty::Float, Ty::FloatArray));
            // Strings, arrays and maps: every parameter a value whose type is checked as it runs.
            let values = (name.to_string(), vec![Ty::Dyn; source.params.len()]);
            let refusal = |key: &SpecKey| lower::lower(&self.source, key).err();
            let (Some(_), Some(_), Some(why)) =
                (refusal(&ints), refusal(&floats), refusal(&values))
            else {
                return true;
            };
            // The last try takes any value: its reason is the one no argument type avoids. Name
            // the parameters, not types nobody passed.
            match why.strip_prefix(&lower::label(&values)) {
                Some(rest) => format!("{name}({}){rest}", source.params.join(", ")),
                None => why,
            }
        };
        // The standard library's functions are in every program; say nothing of them.
        if !crate::stdlib::defines(name) {
            self.explain(&format!("not compiled: {why_not}"));
        }
        false
    }

    /// Whether compiled code can make a call of `name` with `arity` arguments (a script
    /// function, a native the tier knows, a data builtin it calls directly).
    fn compiles_call(&self, name: &str, arity: usize) -> bool {
        self.source.get(name, arity).is_some()
            || native::Native::is_named(name)
            || source::INTRINSICS.contains(&name)
            || self.source.direct(name, arity).is_some()
    }

    /// The tier compiles `loops` of the top-level code too.
    pub(crate) fn with_loops(mut self, loops: &[LoopSource]) -> FastTier {
        if self.is_enabled() {
            loops.iter().for_each(|l| self.source.add_loop(l));
        }
        self
    }

    /// The tier says what it decides and what differs to `notices` (by default, to nobody).
    pub(crate) fn telling(mut self, notices: Notices) -> FastTier {
        self.notices = notices;
        self
    }

    /// One notice in explain mode.
    fn explain(&self, what: &str) {
        if self.mode.explain {
            (self.notices)(&format!("fast tier: {what}"));
        }
    }

    /// Runs script function `name` on a closure's `captured` values then `args`, compiled, if it
    /// can be; `None` means: run it in Rhai (not compilable, or it would raise an error, which
    /// Rhai then raises exactly). `limits` is asked for only when there is compiled code to run.
    /// A string, array or map in `args` is lent to a function that does not change it, and is
    /// back in place when this returns.
    pub(crate) fn call(
        &self,
        name: &str,
        captured: &[Dynamic],
        args: &mut [Dynamic],
        limits: impl FnOnce() -> Budget,
    ) -> Option<Result<Dynamic, Box<EvalAltResult>>> {
        let count = captured.len() + args.len();
        if !self.is_enabled() || count > MAX_ARGS {
            return None;
        }
        // Fixed arrays: a call the tier refuses should cost next to nothing.
        let mut scalars = [Scalar::Unit; MAX_ARGS];
        let mut types = [Ty::Unit; MAX_ARGS];
        // An array of numbers is copied in, unboxed; its scalar is its place in `arrays`.
        let mut arrays = Vec::new();
        for (i, a) in captured.iter().chain(args.iter()).enumerate() {
            (scalars[i], types[i]) = match scalar(a) {
                Some(s) => (s, scalar_ty(&s)),
                None => match numeric_array(a) {
                    Some((ty, values)) => {
                        arrays.push(values);
                        (Scalar::Int(arrays.len() as i64 - 1), ty)
                    }
                    None => (Scalar::Unit, heap_ty(a)?),
                },
            };
        }
        let mut program = self.program(name, &types[..count]);
        if program.is_none() && !arrays.is_empty() {
            // Not compiled for arrays of numbers: as arrays of any values, then.
            types[..count].iter_mut().for_each(Ty::rebox);
            arrays = Vec::new();
            program = self.program(name, &types[..count]);
        }
        let program = program?;
        let limits = limits();
        if limits.max_depth == 0 {
            return None;
        }
        // A string, array or map is passed as it is: lent (and given back), or a copy as Rhai
        // passes it (a clone shares a string, and copies an array or map only when changed).
        let lend = program.keeps_heap_params();
        let (mut heap, mut lent) = (Vec::new(), Vec::new());
        for (i, _) in types[..count]
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_heap())
        {
            let arg = i.checked_sub(captured.len());
            heap.push(match arg {
                Some(arg) if lend => std::mem::take(&mut args[arg]),
                Some(arg) => args[arg].clone(),
                None => captured[i].clone(),
            });
            lent.push(arg.filter(|_| lend));
        }
        let result = program.call(&mut scalars[..count], &mut heap, arrays, &limits);
        for (value, arg) in heap.into_iter().zip(lent) {
            if let Some(arg) = arg {
                args[arg] = value;
            }
        }
        match result {
            Ok(value) => Some(Ok(value)),
            Err(Bail::Stop(error)) => Some(Err(error)),
            Err(Bail::Fallback | Bail::Escape(_)) => None,
        }
    }

    /// The compiled specialization of `name` for `types`, compiling it on first use.
    fn program(&self, name: &str, types: &[Ty]) -> Option<Arc<Program>> {
        let remembered = LAST_LOOKUP.with_borrow(|last| match last {
            Some(last) if last.tier == self.id && last.name == name && last.types == types => {
                Some(last.program.clone())
            }
            _ => None,
        });
        if let Some(program) = remembered {
            return program;
        }
        let program = self.look_up(name, types);
        LAST_LOOKUP.set(Some(LastLookup {
            tier: self.id,
            name: name.to_string(),
            types: types.to_vec(),
            program: program.clone(),
        }));
        program
    }

    /// [`FastTier::program`] without the thread's memo.
    fn look_up(&self, name: &str, types: &[Ty]) -> Option<Arc<Program>> {
        let mut specs = lock(&self.specs);
        let tried = specs.get(name).map(Vec::as_slice).unwrap_or_default();
        if let Some((_, entry)) = tried.iter().find(|(t, _)| t == types) {
            return match entry {
                Entry::Compiled(p) => Some(p.clone()),
                Entry::Refused => None,
            };
        }
        self.source.get(name, types.len())?;
        let key: SpecKey = (name.to_string(), types.to_vec());
        let same_fn = tried.len();
        let started = Instant::now();
        let outcome = if same_fn >= MAX_SPECIALIZATIONS {
            Err(format!(
                "{}: {MAX_SPECIALIZATIONS} other argument types already tried",
                label(&key)
            ))
        } else {
            lower::lower(&self.source, &key).map(|lowered| {
                Arc::new(Program::new(
                    &lowered.functions,
                    lowered.entry,
                    self.profiled,
                ))
            })
        };
        self.explain(&match &outcome {
            Ok(_) => format!(
                "{} compiled in {} µs (pid {})",
                label(&key),
                started.elapsed().as_micros(),
                std::process::id()
            ),
            Err(why) => format!("not compiled: {why}"),
        });
        let entry = match outcome {
            Ok(p) => Entry::Compiled(p),
            Err(_) => Entry::Refused,
        };
        let program = match &entry {
            Entry::Compiled(p) => Some(p.clone()),
            Entry::Refused => None,
        };
        specs.entry(key.0).or_default().push((key.1, entry));
        program
    }

    /// For verify mode: the compiled result against Rhai's; a difference is an error naming both.
    /// Not compared: a stop (Ctrl-C, a time limit, the operation limit), which must not be run
    /// again, and Rhai's stack overflow against a compiled value, because the re-run happens
    /// from inside the stand-in, deeper than the call it checks (depth limits have tests of
    /// their own).
    pub(crate) fn verify(
        name: &str,
        compiled: Result<Dynamic, Box<EvalAltResult>>,
        rhai: impl FnOnce() -> Result<Dynamic, Box<EvalAltResult>>,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        if let Err(e) = &compiled
            && matches!(
                e.unwrap_inner(),
                EvalAltResult::ErrorTerminated(..) | EvalAltResult::ErrorTooManyOperations(..)
            )
        {
            return compiled;
        }
        let rhai = rhai();
        if let (Ok(_), Err(e)) = (&compiled, &rhai)
            && matches!(e.unwrap_inner(), EvalAltResult::ErrorStackOverflow(..))
        {
            return compiled;
        }
        let same = match (&compiled, &rhai) {
            (Ok(a), Ok(b)) => same_value(a, b),
            (Err(a), Err(b)) => a.to_string() == b.to_string(),
            _ => false,
        };
        if same {
            return rhai;
        }
        let show = |r: &Result<Dynamic, Box<EvalAltResult>>| match r {
            Ok(v) => format!("{v:?} ({})", v.type_name()),
            Err(e) => format!("error: {e}"),
        };
        let message = format!(
            "fast tier mismatch in {name}: compiled gave {}, Rhai gave {}",
            show(&compiled),
            show(&rhai)
        );
        Err(EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into())
    }
}

/// The heap type an argument is compiled for: a string, an array or a map, not shared with a
/// closure (a change through it would be seen outside).
fn heap_ty(d: &Dynamic) -> Option<Ty> {
    if d.is_shared() {
        None
    } else if d.is_string() {
        Some(Ty::Str)
    } else if d.is_array() {
        Some(Ty::Array)
    } else if d.is_map() {
        Some(Ty::Map)
    } else {
        None
    }
}

fn scalar(d: &Dynamic) -> Option<Scalar> {
    if let Ok(i) = d.as_int() {
        Some(Scalar::Int(i))
    } else if let Ok(f) = d.as_float() {
        Some(Scalar::Float(f))
    } else if let Ok(b) = d.as_bool() {
        Some(Scalar::Bool(b))
    } else if let Ok(c) = d.as_char() {
        Some(Scalar::Char(c))
    } else if d.is_unit() {
        Some(Scalar::Unit)
    } else {
        None
    }
}

/// An array whose elements are all ints, or all floats, unboxed (floats as their bits); an empty
/// array counts as ints.
pub(crate) fn numeric_array(d: &Dynamic) -> Option<(Ty, Vec<i64>)> {
    let array = d.read_lock::<rhai::Array>()?;
    let ty = match array.first() {
        Some(first) if first.is_float() => Ty::FloatArray,
        _ => Ty::IntArray,
    };
    let values = array
        .iter()
        .map(|v| match ty {
            Ty::IntArray => v.as_int().ok(),
            _ => v.as_float().ok().map(|f| f.to_bits() as i64),
        })
        .collect::<Option<Vec<i64>>>()?;
    Some((ty, values))
}

fn scalar_ty(s: &Scalar) -> Ty {
    match s {
        Scalar::Int(_) => Ty::Int,
        Scalar::Float(_) => Ty::Float,
        Scalar::Bool(_) => Ty::Bool,
        Scalar::Char(_) => Ty::Char,
        Scalar::Unit => Ty::Unit,
    }
}

fn dynamic(s: Scalar) -> Dynamic {
    match s {
        Scalar::Int(i) => i.into(),
        Scalar::Float(f) => f.into(),
        Scalar::Bool(b) => b.into(),
        Scalar::Char(c) => c.into(),
        Scalar::Unit => Dynamic::UNIT,
    }
}

/// Same type and same bits (so NaN equals NaN and -0.0 differs from 0.0), element by element
/// in arrays and maps.
fn same_value(a: &Dynamic, b: &Dynamic) -> bool {
    if let (Ok(x), Ok(y)) = (a.as_array_ref(), b.as_array_ref()) {
        return x.len() == y.len() && x.iter().zip(y.iter()).all(|(x, y)| same_value(x, y));
    }
    if let (Ok(x), Ok(y)) = (a.as_map_ref(), b.as_map_ref()) {
        return x.len() == y.len()
            && x.iter()
                .zip(y.iter())
                .all(|((kx, x), (ky, y))| kx == ky && same_value(x, y));
    }
    if let (Some(x), Some(y)) = (
        a.read_lock::<rhai::ImmutableString>(),
        b.read_lock::<rhai::ImmutableString>(),
    ) {
        return *x == *y;
    }
    match (scalar(a), scalar(b)) {
        (Some(Scalar::Float(x)), Some(Scalar::Float(y))) => x.to_bits() == y.to_bits(),
        (Some(x), Some(y)) => x == y,
        (None, None) => a.type_name() == b.type_name() && format!("{a:?}") == format!("{b:?}"),
        _ => false,
    }
}
