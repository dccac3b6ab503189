//! The one place a Rhai `Engine` is configured, identically in the main process and every worker:
//! same hashing seed, same tokens, same limits, same builtins.

use std::sync::Arc;

use rhai::{
    Dynamic, Engine, Token,
    module_resolvers::{FileModuleResolver, ModuleResolversCollection},
};

use crate::{
    Error,
    builtins::{self, Ctx},
    output::{OutStream, OutputSink},
    settings::Settings,
    stdlib,
};

/// Closures are named by a hash of their text and position; parent and workers must hash alike.
const HASHING_SEED: [u64; 4] = [
    0x6d70_7363_7269_7074,
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
];

/// Fixes Rhai's hashing seed for this process; must run before any `Engine` exists.
pub(crate) fn fix_hashing_seed() -> Result<(), Error> {
    let _ = rhai::config::hashing::set_hashing_seed(Some(HASHING_SEED));
    if rhai::config::hashing::get_hashing_seed() == &Some(HASHING_SEED) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "Rhai's hashing seed was fixed elsewhere before mpscript started; closures could not \
             be sent to workers. Create the mpscript Runtime before any other rhai::Engine."
                .into(),
        ))
    }
}

/// Whether running code checks `ctx`'s stop condition between operations. It costs about 7% of
/// interpreter speed, so workers use it only for calls with a time limit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopChecks {
    EveryOperation,
    OnlyInWaits,
}

/// A host's own registrations (functions, types), applied to every engine, in the main process and
/// in every worker.
pub(crate) type HostSetup = Arc<dyn Fn(&mut Engine) + Send + Sync>;

/// A fully configured engine whose builtins go through `ctx` and whose output goes to `output`.
/// Scripts get no file access: `import` works only below `module_dir`, when a host gives one.
pub(crate) fn new_engine(
    ctx: &Arc<Ctx>,
    settings: &Settings,
    host: Option<&HostSetup>,
    output: OutputSink,
    checks: StopChecks,
) -> Engine {
    let limits = &settings.limits;
    let mut engine = Engine::new();
    if checks == StopChecks::EveryOperation {
        let stop = ctx.stop_check().clone();
        // Rhai calls this after every operation; looking at the clock only every 64th keeps the
        // reaction within microseconds.
        engine.on_progress(move |ops| {
            if ops % 64 == 0 {
                stop().map(Dynamic::from)
            } else {
                None
            }
        });
    }
    // `spawn` is reserved in Rhai; make it an ordinary function name. (`on_parse_token` is marked
    // deprecated only to flag it as volatile API.)
    #[allow(deprecated)]
    engine.on_parse_token(|token, _, _| match token {
        Token::Reserved(word) if word.as_str() == "spawn" => Token::Identifier(word),
        other => other,
    });
    // Explicit, so debug and release builds behave alike. A profiled run reaches each script
    // function through a stand-in, which with its call of the function adds two levels
    // (`fast/dispatch.rs`): the limit stays the same number of script calls deep.
    let levels_per_call = if settings.profile { 3 } else { 1 };
    engine.set_max_call_levels(limits.max_call_levels.saturating_mul(levels_per_call));
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth);
    engine.set_max_operations(limits.max_operations);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    let print = output.clone();
    engine.on_print(move |text| print(OutStream::Stdout, text));
    engine.on_debug(move |text, source, pos| {
        let origin = match (source, pos.line()) {
            (Some(src), Some(line)) => format!("[{src}:{line}] "),
            (None, Some(line)) => format!("[line {line}] "),
            _ => String::new(),
        };
        output(OutStream::Stderr, &format!("{origin}{text}"))
    });
    builtins::register(&mut engine, ctx);
    crate::data::register(&mut engine, &Arc::new(settings.permissions.clone()));
    if let Some(host) = host {
        host(&mut engine);
    }
    // The standard library for `import`, then files below the module directory if there is one.
    let mut modules = ModuleResolversCollection::new();
    modules.push(stdlib::resolver());
    if let Some(dir) = settings.module_dir.as_deref() {
        modules.push(FileModuleResolver::new_with_path(dir));
    }
    engine.set_module_resolver(modules);
    engine
}

/// The text both sides compile: a UTF-8 byte-order mark is dropped, and a leading `#!` line is
/// blanked but keeps its newline, so every position (and so every closure name) stays the same.
pub(crate) fn script_text(source: &str) -> String {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    if source.starts_with("#!") {
        let end = source.find('\n').unwrap_or(source.len());
        source[end..].to_string()
    } else {
        source.to_string()
    }
}
