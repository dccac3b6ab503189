//! Regular expressions, in linear time (regex-lite: no backtracking, so no pattern can hang a
//! worker), each pattern compiled once per process.

use crate::locks::lock;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use regex_lite::Regex;
use rhai::{Array, Dynamic, Engine};

use super::{Result, invalid};

/// Compiled patterns kept per process; past this many the cache starts again.
const CACHED_PATTERNS: usize = 256;

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "regex_is_match",
        |text: &str, pattern: &str| -> Result<bool> { Ok(regex(pattern)?.is_match(text)) },
    );
    engine.register_fn(
        "regex_find_all",
        |text: &str, pattern: &str| -> Result<Array> {
            Ok(strings(regex(pattern)?.find_iter(text).map(|m| m.as_str())))
        },
    );
    engine.register_fn(
        "regex_captures",
        |text: &str, pattern: &str| -> Result<Dynamic> {
            let regex = regex(pattern)?;
            Ok(regex.captures(text).map_or(Dynamic::UNIT, |groups| {
                Dynamic::from_array(
                    groups
                        .iter()
                        .map(|g| g.map_or(Dynamic::UNIT, |m| m.as_str().to_string().into()))
                        .collect(),
                )
            }))
        },
    );
    engine.register_fn(
        "regex_replace",
        |text: &str, pattern: &str, replacement: &str| -> Result<String> {
            Ok(regex(pattern)?.replace_all(text, replacement).into_owned())
        },
    );
    engine.register_fn(
        "regex_split",
        |text: &str, pattern: &str| -> Result<Array> { Ok(strings(regex(pattern)?.split(text))) },
    );
}

fn strings<'a>(parts: impl Iterator<Item = &'a str>) -> Array {
    parts.map(|s| Dynamic::from(s.to_string())).collect()
}

/// `pattern` compiled, from this process's cache when it was compiled before.
fn regex(pattern: &str) -> Result<Arc<Regex>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(regex) = lock(cache).get(pattern) {
        return Ok(regex.clone());
    }
    let regex = Arc::new(
        Regex::new(pattern)
            .map_err(|e| invalid(format!("bad regular expression {pattern:?}: {e}")))?,
    );
    let mut cache = lock(cache);
    if cache.len() >= CACHED_PATTERNS {
        cache.clear();
    }
    cache.insert(pattern.to_string(), regex.clone());
    Ok(regex)
}
