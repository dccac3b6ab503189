//! The standard library: Rhai-source modules embedded in the binary. Each is the first chunk of
//! every program (so its functions exist in the main process and in every worker, and its closures
//! resolve there by name) and is also served to `import "name"`, with no file on disk.

use crate::locks::lock;
use std::{collections::HashMap, sync::Mutex};

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};

/// Every module: its import name and its source.
pub(crate) const MODULES: &[(&str, &str)] = &[
    ("pool", include_str!("../stdlib/pool.rhai")),
    ("actors", include_str!("../stdlib/actors.rhai")),
];

/// Whether a standard library module defines a function `name`.
pub(crate) fn defines(name: &str) -> bool {
    let definition = format!("fn {name}(");
    MODULES
        .iter()
        .any(|(_, source)| source.contains(&definition))
}

/// The chunk name under which a module's text is compiled.
pub(crate) fn chunk_name(module: &str) -> String {
    format!("stdlib/{module}.rhai")
}

/// Serves the modules to `import`, each compiled on its first import (not with every engine: a
/// worker that never imports never pays for it).
pub(crate) fn resolver() -> Stdlib {
    Stdlib::default()
}

/// The standard library as a module resolver.
#[derive(Default)]
pub(crate) struct Stdlib {
    compiled: Mutex<HashMap<String, Shared<Module>>>,
}

impl ModuleResolver for Stdlib {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let Some((_, source)) = MODULES.iter().find(|(name, _)| *name == path) else {
            return Err(EvalAltResult::ErrorModuleNotFound(path.into(), pos).into());
        };
        let mut compiled = lock(&self.compiled);
        if let Some(module) = compiled.get(path) {
            return Ok(module.clone());
        }
        let ast = engine
            .compile(source)
            .map_err(|e| EvalAltResult::ErrorInModule(path.into(), Box::new(e.into()), pos))?;
        let module: Shared<Module> = Module::eval_ast_as_new(Scope::new(), &ast, engine)?.into();
        compiled.insert(path.to_string(), module.clone());
        Ok(module)
    }
}
