//! Builtins for real data: files, CSV, JSON, regular expressions, HTTP, images and the
//! environment. They run in the main process and in every worker alike, each access checked
//! against the run's [`Permissions`] in the process that makes it.

mod files;
mod http;
mod images;
mod json;
mod table;
mod text;

use std::sync::Arc;

use rhai::{Engine, EvalAltResult, Position};

use crate::{Error, builtins::method, permissions::Permissions};

/// Registers every data builtin on `engine`, checking accesses against `permissions`.
pub(crate) fn register(engine: &mut Engine, permissions: &Arc<Permissions>) {
    files::register(engine, permissions);
    json::register(engine, permissions);
    table::register(engine, permissions);
    http::register(engine, permissions);
    images::register(engine, permissions);
    // Host functions find the grants here (see `Permissions::of`).
    engine.set_default_tag(rhai::Dynamic::from(permissions.clone()));
    text::register(engine);
    let p = permissions.clone();
    method(
        engine,
        "env",
        move |name: &str| -> Result<rhai::Dynamic, Box<EvalAltResult>> {
            p.check_env(name).map_err(script_error)?;
            Ok(std::env::var(name).map_or(rhai::Dynamic::UNIT, Into::into))
        },
    );
}

/// An error as a script error at the call's position.
fn script_error(error: Error) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(error.to_string().into(), Position::NONE).into()
}

/// A script error with `message`.
fn fail(message: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into().into(), Position::NONE).into()
}
