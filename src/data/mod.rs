//! Builtins for real data: files, CSV, JSON, regular expressions, HTTP, images and the
//! environment. They run in the main process and in every worker alike, each access checked
//! against the run's [`Permissions`] in the process that makes it.

mod direct;
mod files;
mod http;
mod images;
mod json;
mod table;
mod text;

use std::sync::Arc;

pub(crate) use direct::{DIRECT, Direct, Kind, Pieces};

use rhai::{Engine, EvalAltResult};

use crate::{
    Error,
    builtins::{invalid, method},
    permissions::Permissions,
};

/// Registers every data builtin on `engine`, checking accesses against `permissions`.
pub(crate) fn register(engine: &mut Engine, permissions: &Arc<Permissions>) {
    files::register(engine, permissions);
    direct::register(engine, permissions);
    json::register(engine, permissions);
    table::register(engine, permissions);
    http::register(engine, permissions);
    images::register(engine, permissions);
    // Host functions find the grants here (see `Permissions::of`).
    engine.set_default_tag(rhai::Dynamic::from(permissions.clone()));
    text::register(engine);
    let p = permissions.clone();
    method(engine, "env", move |name: &str| -> Result<rhai::Dynamic> {
        p.check_env(name).map_err(script_error)?;
        Ok(std::env::var(name).map_or(rhai::Dynamic::UNIT, Into::into))
    });
}

/// What a data builtin returns.
type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

/// An error as a script error at the call's position.
fn script_error(error: Error) -> Box<EvalAltResult> {
    invalid(error.to_string())
}
