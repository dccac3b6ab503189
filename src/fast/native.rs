//! The native functions compiled code calls directly: Rhai's string, array and map functions the
//! tier resolves when compiling instead of by hash on every call, each written to give what
//! Rhai's own gives. A receiver or argument of another type, and any case where Rhai would raise
//! an error, answers `None`: the call then runs again in Rhai, which raises it.

use std::{collections::HashMap, ops::ControlFlow, sync::Arc};

use rhai::{Array, Dynamic, Identifier, ImmutableString, Map};

use super::{ir::BinOp, ops};
use crate::{data::Direct, permissions::Permissions};

/// A `switch` case's value: Rhai finds a case by the value's hash, which is equal for values of
/// the same type that are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SwitchKey {
    Unit,
    Bool(bool),
    Int(i64),
    Char(char),
    Str(ImmutableString),
}

impl SwitchKey {
    /// The key of a value of a type the tier matches (`None` for the others: floats, arrays...).
    pub(crate) fn of(d: &Dynamic) -> Option<SwitchKey> {
        Some(if d.is_unit() {
            SwitchKey::Unit
        } else if let Ok(b) = d.as_bool() {
            SwitchKey::Bool(b)
        } else if let Ok(i) = d.as_int() {
            SwitchKey::Int(i)
        } else if let Ok(c) = d.as_char() {
            SwitchKey::Char(c)
        } else {
            SwitchKey::Str(d.read_lock::<ImmutableString>()?.clone())
        })
    }

    /// The place in `keys` of the one equal to `d`'s key, found without copying a string
    /// (cases are few: a scan beats hashing); `None` for a value of a type the tier does not
    /// match.
    pub(crate) fn find(keys: &[SwitchKey], d: &Dynamic) -> Option<Option<usize>> {
        if let Some(s) = d.read_lock::<ImmutableString>() {
            let same =
                |k: &SwitchKey| matches!(k, SwitchKey::Str(key) if key.as_str() == s.as_str());
            return Some(keys.iter().position(same));
        }
        let key = SwitchKey::of(d)?;
        Some(keys.iter().position(|k| *k == key))
    }
}

/// An object map a compiled function builds by key (`counts[w] = (counts[w] ?? 0) + 1`), kept
/// as a hash table while only that function's reads, writes and `len`/`contains` see it. Rhai's
/// maps are B-trees, whose string comparisons took most of a word count's time. Wherever else the
/// map is used it is first made Rhai's map ([`settle`]): the same entries, in key order.
#[derive(Clone, Default)]
pub(crate) struct Tally(HashMap<Identifier, Dynamic, ahash::RandomState>);

/// `value` made a [`Tally`] if it is Rhai's map (any other value is left as it is).
pub(crate) fn hashed(value: Dynamic) -> Dynamic {
    match value.try_cast_result::<Map>() {
        Ok(map) => Dynamic::from(Tally(map.into_iter().collect())),
        Err(value) => value,
    }
}

/// Makes a [`Tally`] in `value` Rhai's own map, in place; any other value is left as it is.
pub(crate) fn settle(value: &mut Dynamic) {
    if value.is::<Tally>() {
        // Sorted by each key's first eight bytes, then by the whole key where those are the
        // same: comparing two ints, not two strings, made the sort 4x cheaper.
        let mut entries: Vec<(u64, Identifier, Dynamic)> = std::mem::take(value)
            .cast::<Tally>()
            .0
            .into_iter()
            .map(|(k, v)| (prefix(&k), k, v))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        *value = Dynamic::from_map(entries.into_iter().map(|(_, k, v)| (k, v)).collect());
    }
}

/// The first eight bytes of `key`, big-endian (zeros after a shorter key): what orders keys
/// that differ in those bytes as their strings are ordered.
fn prefix(key: &str) -> u64 {
    let mut bytes = [0; 8];
    let head = &key.as_bytes()[..key.len().min(8)];
    bytes[..head.len()].copy_from_slice(head);
    u64::from_be_bytes(bytes)
}

/// A call of one of mpscript's data builtins (`read_lines`, `regex_find_all`...), with the run's
/// grants, checked as the registered function checks them.
#[derive(Debug, Clone)]
pub(crate) struct DirectCall {
    pub(crate) f: &'static Direct,
    pub(crate) grants: Arc<Permissions>,
}

impl PartialEq for DirectCall {
    fn eq(&self, other: &DirectCall) -> bool {
        self.f == other.f
    }
}

impl DirectCall {
    pub(crate) fn call(&self, args: &[Dynamic]) -> Out {
        (self.f.call)(&self.grants, args)
    }
}

/// A native function, by Rhai's name and arity (a method's receiver counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Native {
    Len,
    Split,
    Contains,
    StartsWith,
    EndsWith,
    IndexOf,
    SubString,
    SubStringFrom,
    Trim,
    ToUpper,
    ToLower,
    Replace,
    ParseInt,
    ParseFloat,
    ToString,
    Push,
    Pad,
    Keys,
    Values,
    /// `array.extract(start, len)`: a copy of part of an array.
    Extract,
    /// `array.extract(start)`: from `start` to the end.
    ExtractFrom,
    /// `target[key]` (and `map.key`).
    Index,
    /// `string += value`.
    Append,
}

/// What a call answers: a value, or `None` to run the call in Rhai.
pub(crate) type Out = Option<Dynamic>;

impl Native {
    /// The native Rhai resolves for a call of `name` with `arity` arguments, if the tier has it.
    pub(crate) fn named(name: &str, arity: usize) -> Option<Native> {
        Some(match (name, arity) {
            ("len", 1) => Native::Len,
            ("split", 2) => Native::Split,
            ("contains", 2) => Native::Contains,
            ("starts_with", 2) => Native::StartsWith,
            ("ends_with", 2) => Native::EndsWith,
            ("index_of", 2) => Native::IndexOf,
            ("sub_string", 3) => Native::SubString,
            ("sub_string", 2) => Native::SubStringFrom,
            ("trim", 1) => Native::Trim,
            ("to_upper", 1) => Native::ToUpper,
            ("to_lower", 1) => Native::ToLower,
            ("replace", 3) => Native::Replace,
            ("parse_int", 1) => Native::ParseInt,
            ("parse_float", 1) => Native::ParseFloat,
            ("to_string", 1) => Native::ToString,
            ("push", 2) => Native::Push,
            ("pad", 3) => Native::Pad,
            ("keys", 1) => Native::Keys,
            ("values", 1) => Native::Values,
            ("extract", 3) => Native::Extract,
            ("extract", 2) => Native::ExtractFrom,
            _ => return None,
        })
    }

    /// Whether the tier has a native of this name (a host that registers one keeps it in Rhai).
    pub(crate) fn is_named(name: &str) -> bool {
        (1..=3).any(|arity| Native::named(name, arity).is_some())
    }

    /// Whether it changes its receiver (which must then be a variable for the change to count).
    pub(crate) fn changes_receiver(self) -> bool {
        matches!(
            self,
            Native::Trim | Native::Replace | Native::Push | Native::Pad | Native::Append
        )
    }

    /// Calls a native that only reads its receiver `this`, with the other arguments.
    pub(crate) fn read(self, this: &Dynamic, args: &[Dynamic]) -> Out {
        match (self, args) {
            (Native::Len, []) => len(this),
            (Native::Split, [by]) => split(&*this.read_lock::<ImmutableString>()?, by),
            (Native::Contains, [what]) => contains(this, what),
            (Native::StartsWith, [what]) => {
                let s = this.read_lock::<ImmutableString>()?;
                with_pattern(what, |p| s.starts_with(p)).map(Dynamic::from)
            }
            (Native::EndsWith, [what]) => {
                let s = this.read_lock::<ImmutableString>()?;
                with_pattern(what, |p| s.ends_with(p)).map(Dynamic::from)
            }
            (Native::IndexOf, [what]) => index_of(&this.read_lock::<ImmutableString>()?, what),
            (Native::SubString, [start, count]) => sub_string(
                &this.read_lock::<ImmutableString>()?,
                start.as_int().ok()?,
                count.as_int().ok()?,
            ),
            (Native::SubStringFrom, [start]) => sub_string(
                &this.read_lock::<ImmutableString>()?,
                start.as_int().ok()?,
                i64::MAX,
            ),
            (Native::ToUpper, []) => {
                let s = str_of(this)?;
                Some(match s.chars().all(char::is_uppercase) {
                    true => s.into(),
                    false => s.to_uppercase().into(),
                })
            }
            (Native::ToLower, []) => {
                let s = str_of(this)?;
                Some(match s.is_empty() || s.chars().all(char::is_lowercase) {
                    true => s.into(),
                    false => s.to_lowercase().into(),
                })
            }
            (Native::ParseInt, []) => {
                let s = this.read_lock::<ImmutableString>()?;
                s.trim().parse::<i64>().ok().map(Dynamic::from)
            }
            (Native::ParseFloat, []) => {
                let s = this.read_lock::<ImmutableString>()?;
                s.trim().parse::<f64>().ok().map(Dynamic::from)
            }
            (Native::ToString, []) => display(this).map(Dynamic::from),
            (Native::Keys, []) => {
                let map = this.as_map_ref().ok()?;
                let keys = map
                    .keys()
                    .map(|k| Dynamic::from(ImmutableString::from(k.as_str())));
                Some(Dynamic::from_array(keys.collect()))
            }
            (Native::Values, []) => {
                let map = this.as_map_ref().ok()?;
                Some(Dynamic::from_array(map.values().cloned().collect()))
            }
            (Native::Extract, [start, len]) => {
                extract(this, start.as_int().ok()?, len.as_int().ok()?)
            }
            (Native::ExtractFrom, [start]) => extract(this, start.as_int().ok()?, i64::MAX),
            (Native::Index, [key]) => index(this, key),
            _ => None,
        }
    }

    /// Calls a native that changes its receiver `this` in place (see
    /// [`Native::changes_receiver`]), with the other arguments (which it may take).
    pub(crate) fn change(self, this: &mut Dynamic, args: &mut [Dynamic]) -> Out {
        match (self, args) {
            (Native::Trim, []) => {
                let s = str_of(this)?;
                let trimmed = s.trim();
                if trimmed != s.as_str() {
                    *this = ImmutableString::from(trimmed).into();
                }
            }
            (Native::Replace, [find, with]) => {
                let s = str_of(this)?;
                let (find, with) = (
                    find.read_lock::<ImmutableString>()?,
                    with.read_lock::<ImmutableString>()?,
                );
                if !s.is_empty() {
                    *this = s.replace(find.as_str(), with.as_str()).into();
                }
            }
            (Native::Push, [item]) => this.as_array_mut().ok()?.push(std::mem::take(item)),
            (Native::Pad, [to, item]) => {
                let mut array = this.as_array_mut().ok()?;
                if let Ok(to) = usize::try_from(to.as_int().ok()?)
                    && to > array.len()
                {
                    array.resize(to, item.clone());
                }
            }
            (Native::Append, [value]) => append(this, value)?,
            _ => return None,
        }
        Some(Dynamic::UNIT)
    }
}

/// `map.key` (and `map["key"]`): the key's value, `()` when it is missing; `None` on anything but
/// a map, where Rhai raises an error.
pub(crate) fn property(this: &Dynamic, key: &str) -> Out {
    let value = match this.is_map() {
        true => this.read_lock::<Map>()?.get(key).cloned(),
        false => this.read_lock::<Tally>()?.0.get(key).cloned(),
    };
    Some(value.unwrap_or(Dynamic::UNIT))
}

/// `this[at]` on an array (negative counts from the end); `None` on anything else, or out of
/// bounds, where Rhai raises an error (a string's character is left to [`index`]).
pub(crate) fn element(this: &Dynamic, at: i64) -> Out {
    with_element(this, at, Dynamic::clone)
}

/// `read` on the array `this`'s element `at` where it is; `None` as [`element`].
pub(crate) fn with_element<T>(
    this: &Dynamic,
    at: i64,
    read: impl FnOnce(&Dynamic) -> T,
) -> Option<T> {
    let array = this.read_lock::<Array>()?;
    let at = ops::element_at(array.len(), at)?;
    Some(read(&array[at]))
}

/// `this[key]`: an array's element (negative counts from the end), a string's character, a map's
/// value (`()` when missing: the tier is off for an engine that fails on a missing property).
pub(crate) fn index(this: &Dynamic, key: &Dynamic) -> Out {
    if let Ok(array) = this.as_array_ref() {
        let at = ops::element_at(array.len(), key.as_int().ok()?)?;
        return Some(array[at].clone());
    }
    if this.is_map() || this.is::<Tally>() {
        return property(this, &key.read_lock::<ImmutableString>()?);
    }
    let s = this.read_lock::<ImmutableString>()?;
    let i = key.as_int().ok()?;
    let c = if i >= 0 {
        s.chars().nth(usize::try_from(i).ok()?)
    } else {
        s.chars()
            .rev()
            .nth(usize::try_from(i.unsigned_abs() - 1).ok()?)
    };
    c.map(Dynamic::from)
}

/// `this[key] = make(element)` on an array or a map, the element found once (a missing key is
/// added, and `make` gets `()`, what reading it gives).
pub(crate) fn update_item<E>(
    this: &mut Dynamic,
    key: &Dynamic,
    make: impl FnOnce(Dynamic) -> Result<Dynamic, E>,
) -> Result<(), Option<E>> {
    let place = |slot: &mut Dynamic| {
        let item = std::mem::take(slot);
        put_back(slot, make(item).map_err(Some)?);
        Ok(())
    };
    // A tally first: it is what a counting loop updates.
    if let Some(mut tally) = this.write_lock::<Tally>() {
        let key = key.read_lock::<ImmutableString>().ok_or(None)?;
        return match tally.0.get_mut(key.as_str()) {
            Some(slot) => place(slot),
            None => place(tally.0.entry(key.as_str().into()).or_default()),
        };
    }
    if let Some(mut map) = this.write_lock::<Map>() {
        let key = key.read_lock::<ImmutableString>().ok_or(None)?;
        return match map.get_mut(key.as_str()) {
            Some(slot) => place(slot),
            None => place(map.entry(key.as_str().into()).or_default()),
        };
    }
    let mut array = this.write_lock::<Array>().ok_or(None)?;
    let at = ops::element_at(array.len(), key.as_int().map_err(|_| None)?).ok_or(None)?;
    place(&mut array[at])
}

/// `*place = value` where `place` holds the `()` left by taking its value out: there is nothing
/// to drop, and not calling `Dynamic`'s drop saves a tenth of a counting loop's instructions.
pub(crate) fn put_back(place: &mut Dynamic, value: Dynamic) {
    let taken = std::mem::replace(place, value);
    debug_assert!(taken.is_unit());
    std::mem::forget(taken);
}

/// Drops `value`, with no call to `Dynamic`'s drop for a scalar, which owns nothing (a value read
/// as bits is dropped on every iteration of a loop).
pub(crate) fn discard(value: Dynamic) {
    let owns_nothing = !value.is_shared()
        && (value.is_unit()
            || value.is_int()
            || value.is_float()
            || value.is_bool()
            || value.is_char());
    if owns_nothing {
        std::mem::forget(value);
    }
}

/// `this[key] = value` on an array or a map (a missing key is added).
pub(crate) fn set_item(this: &mut Dynamic, key: &Dynamic, value: Dynamic) -> Option<()> {
    if this.is_array() {
        let mut array = this.as_array_mut().ok()?;
        let at = ops::element_at(array.len(), key.as_int().ok()?)?;
        array[at] = value;
        return Some(());
    }
    if let Some(mut tally) = this.write_lock::<Tally>() {
        let key = key.read_lock::<ImmutableString>()?;
        tally.0.insert(key.as_str().into(), value);
        return Some(());
    }
    let mut map = this.as_map_mut().ok()?;
    let key = key.read_lock::<ImmutableString>()?;
    match map.get_mut(key.as_str()) {
        Some(slot) => *slot = value,
        None => {
            map.insert(key.as_str().into(), value);
        }
    }
    Some(())
}

/// A string's own `ImmutableString` (shared, not copied).
fn str_of(d: &Dynamic) -> Option<ImmutableString> {
    d.read_lock::<ImmutableString>().map(|s| s.clone())
}

fn len(this: &Dynamic) -> Out {
    let n = if let Some(s) = this.read_lock::<ImmutableString>() {
        s.chars().count()
    } else if let Ok(array) = this.as_array_ref() {
        array.len()
    } else if let Some(tally) = this.read_lock::<Tally>() {
        tally.0.len()
    } else {
        this.as_map_ref().ok()?.len()
    };
    Some((n as i64).into())
}

/// `f` on what `split`, `contains` and their kin look for, a string or a character, as text
/// (Rhai's functions for a character do what those for a one-character string do); a character
/// is encoded on the stack, as these run once per character in a scan.
fn with_pattern<T>(d: &Dynamic, f: impl FnOnce(&str) -> T) -> Option<T> {
    match d.as_char() {
        Ok(c) => Some(f(c.encode_utf8(&mut [0; 4]))),
        Err(_) => Some(f(d.read_lock::<ImmutableString>()?.as_str())),
    }
}

fn split(s: &ImmutableString, by: &Dynamic) -> Out {
    let parts: Array = with_pattern(by, |by| {
        if s.is_empty() || !by.is_empty() && !s.contains(by) {
            return vec![s.clone().into()];
        }
        // Counted first for one byte, so that the array is allocated once.
        let mut parts = match by.as_bytes() {
            &[b] => Array::with_capacity(1 + s.bytes().filter(|&c| c == b).count()),
            _ => Array::new(),
        };
        let _ = each_piece::<()>(s, by, |piece| {
            parts.push(ImmutableString::from(piece).into());
            ControlFlow::Continue(())
        });
        parts
    })?;
    Some(Dynamic::from_array(parts))
}

/// `f` on each piece Rhai's `split` makes of `s` at `by`, in order, until `f` breaks.
pub(crate) fn each_piece<B>(
    s: &str,
    by: &str,
    mut f: impl FnMut(&str) -> ControlFlow<B>,
) -> ControlFlow<B> {
    match by.as_bytes() {
        _ if s.is_empty() => f(s),
        // A byte loop: the pieces of a line are short, and `str::split`'s searcher costs more to
        // set up at each piece than this takes to reach it.
        &[b] => {
            let mut start = 0;
            for (at, _) in s.bytes().enumerate().filter(|&(_, c)| c == b) {
                f(&s[start..at])?;
                start = at + 1;
            }
            f(&s[start..])
        }
        _ => s.split(by).try_for_each(f),
    }
}

/// `this.split(by)` with `f` on each piece (see [`each_piece`]); `None` when `this` is not a
/// string or `by` not a string or character, before any piece.
pub(crate) fn for_pieces<B>(
    this: &Dynamic,
    by: &Dynamic,
    f: impl FnMut(&str) -> ControlFlow<B>,
) -> Option<ControlFlow<B>> {
    let s = this.read_lock::<ImmutableString>()?;
    with_pattern(by, |by| each_piece(&s, by, f))
}

/// `*dest = this.split(by)` reusing what `dest` holds: its array, and each of its strings that
/// nothing else refers to, are written over (a line's fields split into the same variable on
/// every line allocate nothing once the first line is done).
pub(crate) fn split_into(dest: &mut Dynamic, this: &Dynamic, by: &Dynamic) -> Option<()> {
    let reusable = !dest.is_shared() && dest.is_array();
    if !reusable {
        *dest = split(&*this.read_lock::<ImmutableString>()?, by)?;
        return Some(());
    }
    let mut array = dest.write_lock::<Array>()?;
    let mut n = 0;
    let _ = for_pieces::<()>(this, by, |piece| {
        match array.get_mut(n) {
            Some(item) => overwrite_text(item, piece),
            None => array.push(ImmutableString::from(piece).into()),
        }
        n += 1;
        ControlFlow::Continue(())
    })?;
    array.truncate(n);
    Some(())
}

/// `*d = text` in the string `d` already holds when nothing else refers to it.
pub(crate) fn overwrite_text(d: &mut Dynamic, text: &str) {
    if !d.is_shared()
        && let Some(mut held) = d.write_lock::<ImmutableString>()
        && let Some(held) = held.get_mut()
    {
        held.clear();
        held.push_str(text);
        return;
    }
    *d = ImmutableString::from(text).into();
}

fn contains(this: &Dynamic, what: &Dynamic) -> Out {
    if let Some(tally) = this.read_lock::<Tally>() {
        let key = what.read_lock::<ImmutableString>()?;
        return Some(tally.0.contains_key(key.as_str()).into());
    }
    if let Ok(map) = this.as_map_ref() {
        let key = what.read_lock::<ImmutableString>()?;
        return Some(map.contains_key(key.as_str()).into());
    }
    let s = this.read_lock::<ImmutableString>()?;
    if let Ok(c) = what.as_char() {
        return Some(s.contains(c).into());
    }
    with_pattern(what, |p| s.contains(p)).map(Dynamic::from)
}

fn index_of(s: &str, what: &Dynamic) -> Out {
    if s.is_empty() {
        return Some((-1_i64).into());
    }
    let at = with_pattern(what, |p| s.find(p))?.map_or(-1, |at| {
        i64::try_from(s[..at].chars().count()).unwrap_or(-1)
    });
    Some(at.into())
}

/// Rhai's `extract`: a negative start counts from the end, a length past the end stops there.
fn extract(this: &Dynamic, start: i64, len: i64) -> Out {
    let array = this.as_array_ref().ok()?;
    if array.is_empty() || len <= 0 {
        return Some(Dynamic::from_array(Array::new()));
    }
    let size = array.len();
    let start = match usize::try_from(start) {
        Ok(start) if start >= size => return Some(Dynamic::from_array(Array::new())),
        Ok(start) => start,
        Err(_) => size - usize::try_from(start.unsigned_abs()).map_or(size, |back| back.min(size)),
    };
    let len = usize::try_from(len).map_or(size - start, |len| len.min(size - start));
    Some(Dynamic::from_array(array[start..start + len].to_vec()))
}

/// Rhai's `sub_string(start, len)`, characters counted; `len` `i64::MAX` for "to the end".
fn sub_string(s: &str, start: i64, len: i64) -> Out {
    sub_str(s, start, len).map(|piece| ImmutableString::from(piece).into())
}

/// The piece of `s` that Rhai's `s.sub_string(start, len)` makes (characters, not bytes; a
/// negative `start` counts from the end).
pub(crate) fn sub_str(s: &str, start: i64, len: i64) -> Option<&str> {
    if s.is_empty() || len <= 0 {
        return Some("");
    }
    let count = s.chars().count();
    let offset = if start < 0 {
        let Ok(back) = usize::try_from(start.unsigned_abs()) else {
            return Some("");
        };
        count.saturating_sub(back)
    } else {
        let start = usize::try_from(start).ok()?;
        if start >= count {
            return Some("");
        }
        start
    };
    let len = usize::try_from(len).map_or(count - offset, |len| match len.checked_add(offset) {
        Some(end) if end <= count => len,
        _ => count - offset,
    });
    // The byte where character `at` starts (ASCII text: `at` itself).
    let byte = |at: usize| match count == s.len() {
        true => at,
        false => s.char_indices().nth(at).map_or(s.len(), |(b, _)| b),
    };
    Some(&s[byte(offset)..byte(offset + len)])
}

/// What `to_string` (and so interpolation and `string + value`) makes of a value the tier
/// knows how to show: a string, a character, a number, a bool or `()`; `None` for the rest,
/// whose text Rhai builds with functions a script may redefine.
pub(crate) fn display(d: &Dynamic) -> Option<ImmutableString> {
    if let Some(s) = d.read_lock::<ImmutableString>() {
        return Some(s.clone());
    }
    // Short text stays inline: one allocation, for the string's own cell.
    let mut text = Identifier::new();
    display_into(&mut text, d)?;
    Some(text.into())
}

/// [`display`], written at the end of `out`.
pub(crate) fn display_into(out: &mut impl std::fmt::Write, d: &Dynamic) -> Option<()> {
    if let Some(s) = d.read_lock::<ImmutableString>() {
        out.write_str(&s).ok()?;
    } else if let Ok(i) = d.as_int() {
        // Rhai shows an int as Rust does; itoa writes the same digits without `fmt`'s machinery.
        out.write_str(itoa::Buffer::new().format(i)).ok()?;
    } else if let Ok(c) = d.as_char() {
        out.write_char(c).ok()?;
    } else if d.is_float() || d.is_bool() {
        write!(out, "{d}").ok()?;
    } else if !d.is_unit() {
        return None;
    }
    Some(())
}

/// `string += value` in place (the string is not copied when nothing else holds it).
fn append(this: &mut Dynamic, value: &Dynamic) -> Option<()> {
    let mut s = this.as_immutable_string_mut().ok()?;
    display_into(s.make_mut(), value)
}

/// `lhs op rhs` where the types are known only when it runs: numbers (an int meeting a float
/// becomes a float), strings and characters joined or compared, bools compared.
pub(crate) fn mixed(op: BinOp, lhs: &Dynamic, rhs: &Dynamic) -> Out {
    if let (Some(x), Some(y)) = (int(lhs), int(rhs)) {
        return ints(op, x, y);
    }
    if let (Some(x), Some(y)) = (number(lhs), number(rhs)) {
        return floats(op, x, y);
    }
    if op == BinOp::Add {
        return join(lhs, rhs);
    }
    let ordering = if let (Some(x), Some(y)) = (
        lhs.read_lock::<ImmutableString>(),
        rhs.read_lock::<ImmutableString>(),
    ) {
        x.as_str().cmp(y.as_str())
    } else if let (Ok(x), Ok(y)) = (lhs.as_char(), rhs.as_char()) {
        x.cmp(&y)
    } else if let (Ok(x), Ok(y)) = (lhs.as_bool(), rhs.as_bool()) {
        x.cmp(&y)
    } else {
        return None;
    };
    compared(op, ordering)
}

/// An int's value (checked first: a failed `as_int` builds its error's type name).
fn int(d: &Dynamic) -> Option<i64> {
    d.is_int().then(|| d.as_int().ok()).flatten()
}

fn number(d: &Dynamic) -> Option<f64> {
    match d.is_float() {
        true => d.as_float().ok(),
        false => int(d).map(|i| i as f64),
    }
}

fn ints(op: BinOp, x: i64, y: i64) -> Out {
    let value = match op {
        BinOp::Add => x.checked_add(y)?,
        BinOp::Sub => x.checked_sub(y)?,
        BinOp::Mul => x.checked_mul(y)?,
        BinOp::Div => ops::int_div(x, y)?,
        BinOp::Rem => x.checked_rem(y)?,
        op if op.is_comparison() => return compared(op, x.cmp(&y)),
        _ => return None,
    };
    Some(value.into())
}

fn floats(op: BinOp, x: f64, y: f64) -> Out {
    let value = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Rem => x % y,
        BinOp::Eq => return Some(ops::float_eq(x, y).into()),
        BinOp::Ne => return Some(ops::float_ne(x, y).into()),
        BinOp::Lt => return Some(ops::float_lt(x, y).into()),
        BinOp::Le => return Some(ops::float_le(x, y).into()),
        BinOp::Gt => return Some(ops::float_gt(x, y).into()),
        BinOp::Ge => return Some(ops::float_ge(x, y).into()),
        _ => return None,
    };
    Some(value.into())
}

fn compared(op: BinOp, ordering: std::cmp::Ordering) -> Out {
    holds(op, ordering).map(Dynamic::from)
}

/// Whether comparison `op` holds of two values in this `ordering`; `None` for other operators.
pub(crate) fn holds(op: BinOp, ordering: std::cmp::Ordering) -> Option<bool> {
    use std::cmp::Ordering::*;
    Some(match op {
        BinOp::Eq => ordering == Equal,
        BinOp::Ne => ordering != Equal,
        BinOp::Lt => ordering == Less,
        BinOp::Le => ordering != Greater,
        BinOp::Gt => ordering == Greater,
        BinOp::Ge => ordering != Less,
        _ => return None,
    })
}

/// `lhs + rhs` with a string or a character on one side at least: the other side's text joined.
fn join(lhs: &Dynamic, rhs: &Dynamic) -> Out {
    let chars = lhs.is_char() && rhs.is_char();
    if !lhs.is_string() && !rhs.is_string() && !chars {
        return None;
    }
    let (mut text, tail) = (display(lhs)?.to_string(), display(rhs)?);
    text.push_str(&tail);
    Some(text.into())
}
