//! Files and paths: reading and writing whole files and line ranges, listing and globbing, and
//! splitting a big file into ranges that workers read on their own.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, INT, ImmutableString, Map};

use super::{Result, invalid, method, script_error};
use crate::permissions::{Permissions, io_error};

pub(super) fn register(engine: &mut Engine, permissions: &Arc<Permissions>) {
    // `read_file` and `read_lines` are in `direct.rs`.
    let p = permissions.clone();
    method(engine, "read_blob", move |path: &str| read_bytes(&p, path));
    for (name, append) in [("write_file", false), ("append_file", true)] {
        let p = permissions.clone();
        method(engine, name, move |path: &str, text: ImmutableString| {
            write(&p, path, text.as_bytes(), append)
        });
        let p = permissions.clone();
        method(engine, name, move |path: &str, blob: Blob| {
            write(&p, path, &blob, append)
        });
    }
    let p = permissions.clone();
    method(engine, "exists", move |path: &str| -> Result<bool> {
        Ok(p.check_read(Path::new(path))
            .map_err(script_error)?
            .exists())
    });
    let p = permissions.clone();
    method(engine, "is_dir", move |path: &str| -> Result<bool> {
        Ok(p.check_read(Path::new(path))
            .map_err(script_error)?
            .is_dir())
    });
    let p = permissions.clone();
    method(engine, "file_size", move |path: &str| -> Result<INT> {
        let absolute = p.check_read(Path::new(path)).map_err(script_error)?;
        let meta = fs::metadata(&absolute).map_err(|e| os_error("reading", &absolute, e))?;
        Ok(meta.len() as INT)
    });
    let p = permissions.clone();
    method(engine, "list_dir", move |path: &str| list_dir(&p, path));
    let p = permissions.clone();
    method(engine, "glob", move |pattern: &str| glob(&p, pattern));
    let p = permissions.clone();
    method(engine, "make_dir", move |path: &str| -> Result<()> {
        let absolute = p.check_write(Path::new(path)).map_err(script_error)?;
        fs::create_dir_all(&absolute).map_err(|e| os_error("creating the directory", &absolute, e))
    });
    let p = permissions.clone();
    method(engine, "remove_file", move |path: &str| -> Result<()> {
        let absolute = p.check_write(Path::new(path)).map_err(script_error)?;
        fs::remove_file(&absolute).map_err(|e| os_error("removing", &absolute, e))
    });
    let p = permissions.clone();
    method(engine, "file_chunks", move |path: &str, n: INT| {
        chunks(&p, path, n, Boundary::Line)
    });
    let p = permissions.clone();
    method(engine, "csv_chunks", move |path: &str, n: INT| {
        chunks(&p, path, n, Boundary::CsvRecord)
    });
    register_paths(engine);
}

/// Path helpers: pure text, no access to anything.
fn register_paths(engine: &mut Engine) {
    engine.register_fn("path_join", |a: &str, b: &str| join(&[a, b]));
    engine.register_fn("path_join", |a: &str, b: &str, c: &str| join(&[a, b, c]));
    engine.register_fn("path_join", |a: &str, b: &str, c: &str, d: &str| {
        join(&[a, b, c, d])
    });
    engine.register_fn("path_join", |parts: Array| -> Result<String> {
        let parts: Vec<String> = parts
            .into_iter()
            .map(|p| {
                p.into_string()
                    .map_err(|t| invalid(format!("path_join: a {t} is not a path")))
            })
            .collect::<Result<_>>()?;
        Ok(join(&parts.iter().map(String::as_str).collect::<Vec<_>>()))
    });
    engine.register_fn("file_name", |p: &str| part(Path::new(p).file_name()));
    engine.register_fn("file_stem", |p: &str| part(Path::new(p).file_stem()));
    engine.register_fn("extension", |p: &str| part(Path::new(p).extension()));
    engine.register_fn("parent_dir", |p: &str| {
        part(
            Path::new(p)
                .parent()
                .map(Path::as_os_str)
                .filter(|s| !s.is_empty()),
        )
    });
}

fn join(parts: &[&str]) -> String {
    let path: PathBuf = parts.iter().collect();
    path.display().to_string()
}

/// A path component as a string, or `()` when there is none.
fn part(part: Option<&std::ffi::OsStr>) -> Dynamic {
    part.map_or(Dynamic::UNIT, |p| p.to_string_lossy().to_string().into())
}

/// An OS error as a script error naming what was done to which path.
fn os_error(doing: &str, path: &Path, e: std::io::Error) -> Box<EvalAltResult> {
    script_error(io_error(doing, path, e))
}

pub(super) fn read_bytes(permissions: &Permissions, path: &str) -> Result<Blob> {
    let (absolute, mut file) = permissions
        .open_read(Path::new(path))
        .map_err(script_error)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| os_error("reading", &absolute, e))?;
    Ok(bytes)
}

pub(super) fn read_text(permissions: &Permissions, path: &str) -> Result<String> {
    let bytes = read_bytes(permissions, path)?;
    text(bytes, path)
}

fn text(bytes: Vec<u8>, path: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        invalid(format!(
            "{path:?} is not UTF-8 text (byte {at}); read_blob reads bytes"
        ))
    })
}

pub(super) fn write(
    permissions: &Permissions,
    path: &str,
    bytes: &[u8],
    append: bool,
) -> Result<()> {
    let (absolute, mut file) = permissions
        .open_write(Path::new(path), append)
        .map_err(script_error)?;
    file.write_all(bytes)
        .map_err(|e| os_error("writing", &absolute, e))
}

/// A byte range of a file: `#{start, end}`, either optional.
#[derive(Default, Clone, Copy)]
pub(super) struct Range {
    pub(super) start: u64,
    pub(super) end: Option<u64>,
}

impl Range {
    pub(super) fn from_map(map: &Map) -> Result<Range> {
        let field = |name: &str| -> Result<Option<u64>> {
            match map.get(name) {
                None => Ok(None),
                Some(v) if v.is_unit() => Ok(None),
                Some(v) => v
                    .as_int()
                    .ok()
                    .and_then(|i| u64::try_from(i).ok())
                    .map(Some)
                    .ok_or_else(|| invalid(format!("`{name}` must be a byte offset, 0 or more"))),
            }
        };
        Ok(Range {
            start: field("start")?.unwrap_or(0),
            end: field("end")?,
        })
    }

    /// The bytes of the range of `file`.
    pub(super) fn read(self, file: &mut File, path: &Path) -> Result<Vec<u8>> {
        file.seek(SeekFrom::Start(self.start))
            .map_err(|e| os_error("reading", path, e))?;
        let mut bytes = Vec::new();
        let read = match self.end {
            Some(end) => file
                .take(end.saturating_sub(self.start))
                .read_to_end(&mut bytes),
            None => file.read_to_end(&mut bytes),
        };
        read.map_err(|e| os_error("reading", path, e))?;
        Ok(bytes)
    }
}

pub(super) fn read_lines(permissions: &Permissions, path: &str, range: Range) -> Result<Array> {
    let (absolute, mut file) = permissions
        .open_read(Path::new(path))
        .map_err(script_error)?;
    let text = text(range.read(&mut file, &absolute)?, path)?;
    Ok(text
        .lines()
        .map(|line| Dynamic::from(line.to_string()))
        .collect())
}

fn list_dir(permissions: &Permissions, path: &str) -> Result<Array> {
    let absolute = permissions
        .check_read(Path::new(path))
        .map_err(script_error)?;
    let entries = fs::read_dir(&absolute).map_err(|e| os_error("listing", &absolute, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| os_error("listing", &absolute, e))?;
        paths.push(
            Path::new(path)
                .join(entry.file_name())
                .display()
                .to_string(),
        );
    }
    paths.sort();
    Ok(paths.into_iter().map(Dynamic::from).collect())
}

/// The paths matching `pattern` (`*`, `?`, `[...]`, `**`), sorted. The directory the pattern
/// starts from must be readable; a match that leads out of the grants (a link) is left out.
fn glob(permissions: &Permissions, pattern: &str) -> Result<Array> {
    let literal: PathBuf = Path::new(pattern)
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect();
    let base = if literal.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &literal
    };
    permissions.check_read(base).map_err(script_error)?;
    let matches = ::glob::glob(pattern).map_err(|e| invalid(format!("glob({pattern:?}): {e}")))?;
    let mut paths: Vec<String> = matches
        .filter_map(|m| m.ok())
        .filter(|p| permissions.check_read(p).is_ok())
        .map(|p| p.display().to_string())
        .collect();
    paths.sort();
    Ok(paths.into_iter().map(Dynamic::from).collect())
}

/// Where a chunk of a file may start.
#[derive(Clone, Copy, PartialEq)]
enum Boundary {
    /// At the start of a line.
    Line,
    /// At the start of a CSV record: a line start outside quotes.
    CsvRecord,
}

/// At most `n` ranges `#{path, start, end}` that cover the file, each starting where `boundary`
/// allows, so each can be read on its own.
fn chunks(permissions: &Permissions, path: &str, n: INT, boundary: Boundary) -> Result<Array> {
    if n < 1 {
        return Err(invalid(format!(
            "the number of chunks must be 1 or more, not {n}"
        )));
    }
    let (absolute, file) = permissions
        .open_read(Path::new(path))
        .map_err(script_error)?;
    let size = file
        .metadata()
        .map_err(|e| os_error("reading", &absolute, e))?
        .len();
    let starts = chunk_starts(file, size, n as u64, boundary)
        .map_err(|e| os_error("reading", &absolute, e))?;
    let ends = starts.iter().skip(1).copied().chain([size]);
    Ok(starts
        .iter()
        .zip(ends)
        .map(|(&start, end)| {
            let mut chunk = Map::new();
            chunk.insert("path".into(), path.into());
            chunk.insert("start".into(), (start as INT).into());
            chunk.insert("end".into(), (end as INT).into());
            Dynamic::from_map(chunk)
        })
        .collect())
}

/// The first byte of each chunk: even shares of `size`, each moved on to the next boundary.
fn chunk_starts(file: File, size: u64, n: u64, boundary: Boundary) -> std::io::Result<Vec<u64>> {
    let mut reader = BufReader::new(file);
    let mut starts = vec![0];
    // A CSV boundary needs to know whether a position is inside quotes: scan from the start.
    let mut position = 0;
    let mut quoted = false;
    for share in 1..n {
        let target = size * share / n;
        if target <= position {
            continue;
        }
        let mut byte = [0u8; 1];
        if boundary == Boundary::Line {
            // The line that contains `target - 1` ends somewhere at or after it.
            reader.seek(SeekFrom::Start(target.saturating_sub(1).max(position)))?;
            position = target.saturating_sub(1).max(position);
            let mut line = Vec::new();
            position += reader.read_until(b'\n', &mut line)? as u64;
        } else {
            // Read on from where the last chunk started, knowing whether we are inside quotes.
            while reader.read(&mut byte)? == 1 {
                position += 1;
                match byte[0] {
                    b'"' => quoted = !quoted,
                    b'\n' if !quoted && position >= target => break,
                    _ => {}
                }
            }
        }
        if position >= size {
            break;
        }
        if position > *starts.last().unwrap_or(&0) {
            starts.push(position);
        }
    }
    Ok(starts)
}
