//! JSON in and out: any JSON value (`null` is `()`, integers that fit stay ints), and always valid
//! JSON out (Rhai's own `to_json` writes control characters as `\u{1b}`, which is not JSON).

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, FLOAT, INT, Map};
use serde_json::{Number, Value as Json};

use super::{Result, files, invalid, method};
use crate::permissions::Permissions;

pub(super) fn register(engine: &mut Engine, permissions: &Arc<Permissions>) {
    engine.register_fn("from_json", |text: &str| from_json(text, "from_json"));
    // Also for maps and arrays, so these win over Rhai's own `to_json` for maps.
    engine.register_fn("to_json", |value: Dynamic| to_json(&value));
    engine.register_fn("to_json", |map: &mut Map| {
        to_json(&Dynamic::from_map(map.clone()))
    });
    engine.register_fn("to_json", |array: &mut Array| {
        to_json(&Dynamic::from_array(array.clone()))
    });
    let p = permissions.clone();
    method(engine, "read_json", move |path: &str| {
        from_json(&files::read_text(&p, path)?, path)
    });
    let p = permissions.clone();
    method(engine, "write_json", move |path: &str, value: Dynamic| {
        files::write(&p, path, to_json(&value)?.as_bytes(), false)
    });
}

/// Parses any JSON value; `source` names it in errors.
pub(super) fn from_json(text: &str, source: &str) -> Result<Dynamic> {
    let json: Json = serde_json::from_str(text)
        .map_err(|e| invalid(format!("{source}: not valid JSON: {e}")))?;
    Ok(dynamic(json))
}

fn dynamic(json: Json) -> Dynamic {
    match json {
        Json::Null => Dynamic::UNIT,
        Json::Bool(b) => b.into(),
        Json::Number(n) => match n.as_i64() {
            Some(i) => (i as INT).into(),
            None => (n.as_f64().unwrap_or(FLOAT::NAN) as FLOAT).into(),
        },
        Json::String(s) => s.into(),
        Json::Array(items) => Dynamic::from_array(items.into_iter().map(dynamic).collect()),
        Json::Object(entries) => Dynamic::from_map(
            entries
                .into_iter()
                .map(|(k, v)| (k.into(), dynamic(v)))
                .collect(),
        ),
    }
}

/// Writes any value that JSON can hold; a NaN, a function or a handle is an error naming it.
pub(super) fn to_json(value: &Dynamic) -> Result<String> {
    serde_json::to_string(&json(value)?).map_err(|e| invalid(format!("to_json: {e}")))
}

fn json(value: &Dynamic) -> Result<Json> {
    if value.is_unit() {
        return Ok(Json::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Json::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Json::Number(i.into()));
    }
    if let Ok(f) = value.as_float() {
        return Number::from_f64(f)
            .map(Json::Number)
            .ok_or_else(|| invalid(format!("to_json: {f} has no JSON form")));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Json::String(c.to_string()));
    }
    if let Some(s) = value.read_lock::<rhai::ImmutableString>() {
        return Ok(Json::String(s.to_string()));
    }
    if let Some(items) = value.read_lock::<Array>() {
        return items
            .iter()
            .map(json)
            .collect::<Result<_>>()
            .map(Json::Array);
    }
    if let Some(blob) = value.read_lock::<rhai::Blob>() {
        return Ok(Json::Array(blob.iter().map(|b| Json::from(*b)).collect()));
    }
    if let Some(map) = value.read_lock::<Map>() {
        return map
            .iter()
            .map(|(k, v)| Ok((k.to_string(), json(v)?)))
            .collect::<Result<_>>()
            .map(Json::Object);
    }
    Err(invalid(format!(
        "to_json: a {} has no JSON form",
        value.type_name()
    )))
}
