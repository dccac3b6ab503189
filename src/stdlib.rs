//! The standard library: Rhai-source modules embedded in the binary. Each is the first chunk of
//! every program (so its functions exist in the main process and in every worker, and its closures
//! resolve there by name) and is also served to `import "name"`, with no file on disk.

use rhai::{Engine, Module, Scope, module_resolvers::StaticModuleResolver};

/// Every module: its import name and its source.
pub(crate) const MODULES: &[(&str, &str)] = &[
    ("pool", include_str!("../stdlib/pool.rhai")),
    ("actors", include_str!("../stdlib/actors.rhai")),
];

/// The chunk name under which a module's text is compiled.
pub(crate) fn chunk_name(module: &str) -> String {
    format!("stdlib/{module}.rhai")
}

/// Serves the modules to `import`, compiled by `engine`.
pub(crate) fn resolver(engine: &Engine) -> StaticModuleResolver {
    let mut resolver = StaticModuleResolver::new();
    for (name, source) in MODULES {
        let module = engine
            .compile(source)
            .map_err(Into::into)
            .and_then(|ast| Module::eval_ast_as_new(Scope::new(), &ast, engine));
        match module {
            Ok(module) => resolver.insert(*name, module),
            Err(e) => unreachable!("stdlib module {name} does not compile: {e}"),
        }
    }
    resolver
}
