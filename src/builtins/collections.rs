//! Array natives users reach for that Rhai lacks: `a.join(sep)` and `a.sort_by_key(f)`, which
//! calls `f` once per item where a comparator `sort` calls its closure on every comparison.

use std::cmp::Ordering;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, NativeCallContext};

use super::invalid;

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("join", join);
    engine.register_fn("sort_by_key", sort_by_key);
}

/// The items as text, `sep` between them (strings as they are, other values as `to_string`).
fn join(items: &mut Array, sep: &str) -> String {
    let mut text = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push_str(sep);
        }
        match item.read_lock::<ImmutableString>() {
            Some(s) => text.push_str(&s),
            None => text.push_str(&item.to_string()),
        }
    }
    text
}

/// What items are ordered by: numbers (ints and floats together), strings, chars or bools.
#[derive(Clone)]
enum Key {
    Int(i64),
    Float(f64),
    Str(ImmutableString),
    Char(char),
    Bool(bool),
}

impl Key {
    fn of(value: Dynamic) -> Result<Key, Box<EvalAltResult>> {
        if let Ok(i) = value.as_int() {
            Ok(Key::Int(i))
        } else if let Ok(f) = value.as_float() {
            Ok(Key::Float(f))
        } else if let Ok(c) = value.as_char() {
            Ok(Key::Char(c))
        } else if let Ok(b) = value.as_bool() {
            Ok(Key::Bool(b))
        } else if let Some(s) = value.read_lock::<ImmutableString>() {
            Ok(Key::Str(s.clone()))
        } else {
            Err(invalid(format!(
                "sort_by_key: a key must be a number, a string, a char or a bool, not {}",
                value.type_name()
            )))
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Key::Int(_) | Key::Float(_) => "number",
            Key::Str(_) => "string",
            Key::Char(_) => "char",
            Key::Bool(_) => "bool",
        }
    }

    /// `None` for keys of different kinds.
    fn compare(&self, other: &Key) -> Option<Ordering> {
        Some(match (self, other) {
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (Key::Int(a), Key::Float(b)) => (*a as f64).total_cmp(b),
            (Key::Float(a), Key::Int(b)) => a.total_cmp(&(*b as f64)),
            (Key::Float(a), Key::Float(b)) => a.total_cmp(b),
            (Key::Str(a), Key::Str(b)) => a.as_str().cmp(b.as_str()),
            (Key::Char(a), Key::Char(b)) => a.cmp(b),
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            _ => return None,
        })
    }
}

/// Sorts in place, stably, by `key(item)`, calling `key` once per item. The array is unchanged
/// if a key fails or two keys cannot be compared.
fn sort_by_key(
    context: NativeCallContext,
    items: &mut Array,
    key: FnPtr,
) -> Result<(), Box<EvalAltResult>> {
    let keys = items
        .iter()
        .map(|item| Key::of(key.call_within_context(&context, (item.clone(),))?))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(first) = keys.first()
        && let Some(odd) = keys.iter().find(|k| first.compare(k).is_none())
    {
        return Err(invalid(format!(
            "sort_by_key: cannot order a {} key and a {} key",
            first.kind(),
            odd.kind()
        )));
    }
    let mut keyed: Vec<(Key, Dynamic)> = keys.into_iter().zip(items.drain(..)).collect();
    keyed.sort_by(|(a, _), (b, _)| a.compare(b).unwrap_or(Ordering::Equal));
    items.extend(keyed.into_iter().map(|(_, item)| item));
    Ok(())
}
