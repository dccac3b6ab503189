//! The script functions of a program as the tier reads them: name, parameters and body statements.

use std::{
    any::TypeId,
    collections::{HashMap, HashSet},
    sync::Arc,
};

use rhai::{AST, ASTNode, Array, Dynamic, Engine, Expr, FLOAT, INT, ImmutableString, Map, Stmt};

use super::{
    loops::LoopSource,
    native::{DirectCall, Native},
};
use crate::{data::DIRECT, permissions::Permissions};

/// One script function.
pub(crate) struct FnSource {
    pub(crate) params: Vec<String>,
    pub(crate) body: Vec<Stmt>,
    /// For each parameter, whether the body indexes it or takes its `len`: what the tier tries
    /// as an array of numbers when it decides whether to route the function.
    pub(crate) arrays: Vec<bool>,
    /// Why it can never be compiled (a method with `this`, a closure), if so.
    pub(crate) refusal: Option<String>,
    /// Whether it is a method (it uses `this`): a stand-in could not pass `this` on.
    pub(crate) is_method: bool,
    /// Whether it is a loop of the top-level code (see [`LoopSource`]), where `return` ends the
    /// script.
    pub(crate) top_level: bool,
}

/// Every script function of a program, by name and arity.
#[derive(Default)]
pub(crate) struct Source {
    fns: HashMap<(String, usize), FnSource>,
    /// Intrinsic names the host registered functions under (those calls go to the host's).
    overridden: HashSet<String>,
    /// Native functions by name and arity: a script function sharing one stays in Rhai, whose
    /// resolution (script first) a stand-in with untyped parameters would not keep.
    natives: HashSet<(String, usize)>,
    /// Why strings, arrays and maps are not compiled in this program, if they are not.
    pub(crate) no_heap: Option<String>,
    /// The data builtins compiled code may call, by name and arity: those the host did not
    /// register a function of its own for, when the engine carries the run's grants.
    direct: HashMap<(String, usize), DirectCall>,
}

/// The numeric functions the tier compiles inline.
pub(crate) const INTRINSICS: &[&str] = &[
    "to_float", "to_int", "abs", "sqrt", "floor", "ceiling", "round", "len",
];

impl Source {
    pub(crate) fn new(ast: &AST, engine: &Engine) -> Source {
        let mut fns = HashMap::new();
        for def in ast.iter_fn_def() {
            let (name, arity) = (def.name.to_string(), def.params.len());
            let refusal = def
                .this_type
                .is_some()
                .then(|| "is a method of a type (`fn type.name`)".to_string());
            let params: Vec<String> = def.params.iter().map(ToString::to_string).collect();
            let body = body_of(ast, &name, arity);
            let arrays = arrays_among(&params, &body);
            let is_method = def.this_type.is_some() || uses_this(&body);
            let source = FnSource {
                params,
                body,
                arrays,
                refusal,
                is_method,
                top_level: false,
            };
            fns.insert((name, arity), source);
        }
        // Functions registered on the engine itself (not the standard packages) are the host's;
        // they matter when they take what the tier compiles (`len` on a queue does not).
        let compiled = [
            TypeId::of::<INT>(),
            TypeId::of::<FLOAT>(),
            TypeId::of::<Array>(),
            TypeId::of::<ImmutableString>(),
            TypeId::of::<Map>(),
            TypeId::of::<char>(),
            TypeId::of::<Dynamic>(),
        ];
        let overridden = engine
            .collect_fn_metadata(
                None,
                |info| {
                    let name = info.metadata.name.as_str();
                    let first = info.metadata.param_types.first();
                    let applies = first.is_none_or(|ty| compiled.contains(ty));
                    let compiles = INTRINSICS.contains(&name) || Native::is_named(name);
                    (compiles && applies).then(|| name.to_string())
                },
                false,
            )
            .into_iter()
            .collect();
        // Only the script functions' own names are looked up, so nothing else is kept.
        let names: HashSet<&str> = fns.keys().map(|(name, _)| name.as_str()).collect();
        let natives = engine
            .collect_fn_metadata(
                None,
                |info| {
                    let name = info.metadata.name.as_str();
                    names
                        .contains(name)
                        .then(|| (name.to_string(), info.metadata.num_params))
                },
                true,
            )
            .into_iter()
            .collect();
        let no_heap = heap_refusal(engine, &fns);
        Source {
            fns,
            overridden,
            natives,
            no_heap,
            direct: direct_calls(engine),
        }
    }

    /// Adds a loop of the top-level code, as a function of the variables it uses.
    pub(crate) fn add_loop(&mut self, source: &LoopSource) {
        let params: Vec<String> = source.params.iter().map(ToString::to_string).collect();
        let body = vec![source.stmt.clone()];
        let function = FnSource {
            arrays: arrays_among(&params, &body),
            params,
            body,
            refusal: None,
            is_method: false,
            top_level: true,
        };
        self.fns
            .insert((source.name.clone(), function.params.len()), function);
    }

    /// The data builtin `name` of `arity` parameters, if compiled code may call it.
    pub(crate) fn direct(&self, name: &str, arity: usize) -> Option<&DirectCall> {
        self.direct.get(&(name.to_string(), arity))
    }

    pub(crate) fn get(&self, name: &str, arity: usize) -> Option<&FnSource> {
        self.fns.get(&(name.to_string(), arity))
    }

    /// Whether a native function has this name and arity too.
    pub(crate) fn shadows_native(&self, name: &str, arity: usize) -> bool {
        self.natives.contains(&(name.to_string(), arity))
    }

    pub(crate) fn overridden(&self, name: &str) -> bool {
        self.overridden.contains(name)
    }
}

/// The data builtins registered once only under their name and arity (a second registration is
/// the host's, which Rhai calls instead), with the grants `data::register` left on the engine.
fn direct_calls(engine: &Engine) -> HashMap<(String, usize), DirectCall> {
    let Some(grants) = engine.default_tag().clone().try_cast::<Arc<Permissions>>() else {
        return HashMap::new();
    };
    let registered: Vec<(String, usize)> = engine.collect_fn_metadata(
        None,
        |info| {
            let (name, arity) = (info.metadata.name.as_str(), info.metadata.num_params);
            DIRECT
                .iter()
                .any(|d| d.name == name && d.params.len() == arity)
                .then(|| (name.to_string(), arity))
        },
        true,
    );
    DIRECT
        .iter()
        .map(|f| ((f.name.to_string(), f.params.len()), f))
        .filter(|(key, _)| registered.iter().filter(|r| *r == key).count() == 1)
        .map(|(key, f)| {
            let grants = grants.clone();
            (key, DirectCall { f, grants })
        })
        .collect()
}

/// Why this engine and program rule out compiling strings, arrays and maps: size limits (checked
/// on every change in Rhai), a failing missing property, or a script's own `to_string` (which
/// interpolation and `string + value` call).
fn heap_refusal(engine: &Engine, fns: &HashMap<(String, usize), FnSource>) -> Option<String> {
    let limited = engine.max_string_size() + engine.max_array_size() + engine.max_map_size() > 0;
    if limited {
        Some("the engine limits string, array or map sizes".into())
    } else if engine.fail_on_invalid_map_property() {
        Some("the engine fails on a missing map property".into())
    } else if fns.contains_key(&("to_string".to_string(), 1)) {
        Some("the script defines its own `to_string`".into())
    } else {
        None
    }
}

/// The top-level statements of one function's body. Rhai 1.27 does not export the type of
/// `ScriptFuncDef::body`, so the body is read by walking an AST holding only that function: the
/// walk's root statements are the body's statements, in order. (`retain_functions`, because
/// 1.27's `clone_functions_only_filtered` into an empty module keeps every function.)
fn body_of(ast: &AST, name: &str, arity: usize) -> Vec<Stmt> {
    let mut only = ast.clone_functions_only();
    only.retain_functions(|_, _, n, a| n == name && a == arity);
    let mut body = Vec::new();
    only.walk(&mut |path: &[ASTNode]| {
        if let [ASTNode::Stmt(stmt)] = path {
            body.push((*stmt).clone());
        }
        true
    });
    body
}

fn uses_this(body: &[Stmt]) -> bool {
    let mut found = false;
    for stmt in body {
        stmt.walk(&mut Vec::new(), &mut |path: &[ASTNode]| {
            found |= matches!(path.last(), Some(ASTNode::Expr(Expr::ThisPtr(..))));
            !found
        });
    }
    found
}

/// Which of `params` the body indexes (`a[i]`) or measures (`a.len()`, `len(a)`).
fn arrays_among(params: &[String], body: &[Stmt]) -> Vec<bool> {
    let mut used = vec![false; params.len()];
    let mut mark = |e: &Expr| {
        if let Expr::Variable(var, ..) = e
            && let Some(at) = params.iter().position(|p| p == var.1.as_str())
        {
            used[at] = true;
        }
    };
    for stmt in body {
        stmt.walk(&mut Vec::new(), &mut |path: &[ASTNode]| {
            match path.last() {
                Some(ASTNode::Expr(Expr::Index(x, ..))) => mark(&x.lhs),
                Some(ASTNode::Expr(Expr::Dot(x, ..))) => {
                    if matches!(&x.rhs, Expr::MethodCall(call, _) if call.name == "len") {
                        mark(&x.lhs);
                    }
                }
                Some(ASTNode::Expr(Expr::FnCall(call, _))) if call.name == "len" => {
                    call.args.iter().for_each(&mut mark);
                }
                _ => {}
            }
            true
        });
    }
    used
}
