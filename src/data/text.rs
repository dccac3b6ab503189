//! Regular expressions, in linear time (regex-lite: no backtracking, so no pattern can hang a
//! worker), each pattern compiled once per process.

use crate::locks::lock;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use regex_lite::Regex;
use rhai::{Array, Dynamic, Engine, ImmutableString};

use super::{Result, invalid};

/// Compiled patterns kept per process; past this many the cache starts again.
const CACHED_PATTERNS: usize = 256;

pub(super) fn register(engine: &mut Engine) {
    // `regex_is_match` and `regex_find_all` are in `direct.rs`.
    engine.register_fn(
        "regex_captures",
        |text: &str, pattern: &str| -> Result<Dynamic> {
            let regex = &regex(pattern)?.regex;
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
            Ok(regex(pattern)?
                .regex
                .replace_all(text, replacement)
                .into_owned())
        },
    );
    engine.register_fn(
        "regex_split",
        |text: &str, pattern: &str| -> Result<Array> {
            Ok(strings(regex(pattern)?.regex.split(text)))
        },
    );
}

/// `regex_is_match(text, pattern)`: whether the pattern matches anywhere in the text.
pub(super) fn is_match(text: &str, pattern: &str) -> Result<bool> {
    let pattern = regex(pattern)?;
    Ok(match &pattern.run {
        Some(run) => run.is_match(text),
        None => pattern.regex.is_match(text),
    })
}

/// `regex_find_all(text, pattern)`: every match, left to right, as strings.
pub(super) fn find_all(text: &str, pattern: &str) -> Result<Array> {
    let pattern = regex(pattern)?;
    Ok(match &pattern.run {
        Some(run) => strings(run.find_iter(text)),
        None => strings(pattern.regex.find_iter(text).map(|m| m.as_str())),
    })
}

/// `f` on each match `find_all` would make, left to right, while it answers true; whether every
/// match was seen.
pub(super) fn each_match(
    text: &str,
    pattern: &str,
    f: &mut dyn FnMut(&str) -> bool,
) -> Result<bool> {
    let pattern = regex(pattern)?;
    Ok(match &pattern.run {
        Some(run) => run.find_iter(text).all(f),
        None => pattern.regex.find_iter(text).all(|m| f(m.as_str())),
    })
}

fn strings<'a>(parts: impl Iterator<Item = &'a str>) -> Array {
    parts
        .map(|s| Dynamic::from(ImmutableString::from(s)))
        .collect()
}

/// A compiled pattern, with its byte scanner when it is one class repeated.
struct Pattern {
    regex: Regex,
    run: Option<ClassRun>,
}

/// `pattern` compiled, from this process's cache when it was compiled before.
fn regex(pattern: &str) -> Result<Arc<Pattern>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Pattern>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(regex) = lock(cache).get(pattern) {
        return Ok(regex.clone());
    }
    let regex = Arc::new(Pattern {
        regex: Regex::new(pattern)
            .map_err(|e| invalid(format!("bad regular expression {pattern:?}: {e}")))?,
        run: ClassRun::of(pattern),
    });
    let mut cache = lock(cache);
    if cache.len() >= CACHED_PATTERNS {
        cache.clear();
    }
    cache.insert(pattern.to_string(), regex.clone());
    Ok(regex)
}

/// A pattern that is one ASCII character class repeated (`[a-z']+`, `\\w+`, `[^,]+`), the usual
/// way to cut text into words or fields: found by a byte scan instead of regex-lite's Pike VM,
/// which spends most of a word count's time there. It finds exactly what the regex finds: the
/// leftmost longest run of the class (regex-lite's classes are ASCII-only, and a non-ASCII
/// character is in a negated class and not in the others, the same for each of its bytes).
#[derive(Debug, PartialEq)]
struct ClassRun {
    ascii: [bool; 128],
    negated: bool,
}

impl ClassRun {
    /// The scanner for `pattern`, if it is such a class followed by `+` and nothing else.
    fn of(pattern: &str) -> Option<ClassRun> {
        let class = pattern.strip_suffix('+')?;
        let (mut ascii, negated) = match class {
            r"\d" | r"\w" | r"\s" => (perl_class(class.as_bytes()[1])?, false),
            r"\D" | r"\W" | r"\S" => (perl_class(class.as_bytes()[1].to_ascii_lowercase())?, true),
            _ => {
                let inner = class.strip_prefix('[')?.strip_suffix(']')?;
                match inner.strip_prefix('^') {
                    Some(inner) => (bracket_items(inner)?, true),
                    None => (bracket_items(inner)?, false),
                }
            }
        };
        if negated {
            ascii.iter_mut().for_each(|b| *b = !*b);
        }
        Some(ClassRun { ascii, negated })
    }

    fn has(&self, byte: u8) -> bool {
        self.ascii
            .get(usize::from(byte))
            .copied()
            .unwrap_or(self.negated)
    }

    fn is_match(&self, text: &str) -> bool {
        text.bytes().any(|b| self.has(b))
    }

    fn find_iter<'t>(&'t self, text: &'t str) -> impl Iterator<Item = &'t str> + 't {
        let bytes = text.as_bytes();
        let mut at = 0;
        std::iter::from_fn(move || {
            let start = at + bytes[at..].iter().position(|&b| self.has(b))?;
            let len = bytes[start..].iter().position(|&b| !self.has(b));
            at = len.map_or(bytes.len(), |len| start + len);
            text.get(start..at)
        })
    }
}

/// The members of `\d`, `\w` or `\s` (ASCII-only in regex-lite).
fn perl_class(letter: u8) -> Option<[bool; 128]> {
    let mut set = [false; 128];
    for b in 0..128u8 {
        set[usize::from(b)] = match letter {
            b'd' => b.is_ascii_digit(),
            b'w' => b.is_ascii_alphanumeric() || b == b'_',
            b's' => matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' '),
            _ => return None,
        };
    }
    Some(set)
}

/// The members of a bracket class's items: plain characters, `a-z` ranges and `\d`, `\w`, `\s`.
/// Anything with other syntax (escapes, nested classes, set operations, a `-` or `^` that is not
/// a range) answers `None` and is left to the regex.
fn bracket_items(items: &str) -> Option<[bool; 128]> {
    let bytes = items.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let plain = |b: u8| b.is_ascii_graphic() && !b"[]\\^-&~".contains(&b) || b == b' ';
    let mut set = [false; 128];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i..] {
            [b'\\', letter, ..] => {
                let members = perl_class(letter)?;
                set.iter_mut().zip(members).for_each(|(s, m)| *s |= m);
                i += 2;
            }
            [lo, b'-', hi, ..] if plain(lo) && plain(hi) && lo <= hi => {
                set[usize::from(lo)..=usize::from(hi)].fill(true);
                i += 3;
            }
            [b, ..] if plain(b) => {
                set[usize::from(b)] = true;
                i += 1;
            }
            _ => return None,
        }
    }
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scanner against regex-lite itself, on text with every kind of byte it treats apart.
    #[test]
    fn class_runs_find_what_the_regex_finds() {
        let patterns = [
            r"[a-z']+",
            r"\w+",
            r"\d+",
            r"\s+",
            r"\S+",
            r"\W+",
            r"[^,]+",
            r"[^\s,]+",
            r"[A-Za-z0-9_]+",
            r"[a-c x]+",
            r"[0-9.]+",
            r"[\w']+",
            r"[.+(#]+",
            r"[^a-z\d]+",
        ];
        let alphabet: Vec<char> = "ab xyzAZ09_,.'\t\n\u{b}é€𝄞-[]+(#".chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let text: String = (0..(seed % 24))
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            for pattern in patterns {
                let run = ClassRun::of(pattern).expect(pattern);
                let regex = Regex::new(pattern).unwrap();
                let want: Vec<&str> = regex.find_iter(&text).map(|m| m.as_str()).collect();
                assert_eq!(
                    run.find_iter(&text).collect::<Vec<_>>(),
                    want,
                    "{pattern} on {text:?}"
                );
                assert_eq!(
                    run.is_match(&text),
                    regex.is_match(&text),
                    "{pattern} on {text:?}"
                );
            }
        }
    }

    #[test]
    fn other_syntax_is_left_to_the_regex() {
        for pattern in [
            r"[a-z]",
            r"[a-z]+?",
            r"[a-z]*",
            r"[[a-z]]+",
            r"[a-z&&b]+",
            r"[a-]+",
            r"[z-a]+",
            r"\.+",
            r"[\.]+",
            r"[é]+",
            r"(?i)[a-z]+",
            r"[]+",
            r"a+",
            r"[a-z]+$",
            r"\p{L}+",
        ] {
            assert_eq!(ClassRun::of(pattern), None, "{pattern}");
        }
    }
}
