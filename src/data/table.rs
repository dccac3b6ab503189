//! CSV: a whole file or one byte range of it (see `csv_chunks`) as rows, and rows written back.

use std::{path::Path, sync::Arc};

use rhai::{Array, Dynamic, Engine, Map};

use super::{
    Result,
    files::{self, Range},
    invalid, method, script_error,
};
use crate::permissions::Permissions;

pub(super) fn register(engine: &mut Engine, permissions: &Arc<Permissions>) {
    let p = permissions.clone();
    method(engine, "read_csv", move |path: &str| {
        read_csv(&p, path, &Options::default())
    });
    let p = permissions.clone();
    method(engine, "read_csv", move |path: &str, options: Map| {
        read_csv(&p, path, &Options::from_map(&options)?)
    });
    let p = permissions.clone();
    method(engine, "write_csv", move |path: &str, rows: Array| {
        files::write(&p, path, &csv_text(&rows)?, false)
    });
}

struct Options {
    range: Range,
    header: bool,
    delimiter: u8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            range: Range::default(),
            header: true,
            delimiter: b',',
        }
    }
}

impl Options {
    fn from_map(map: &Map) -> Result<Options> {
        let mut options = Options {
            range: Range::from_map(map)?,
            ..Options::default()
        };
        if let Some(header) = map.get("header") {
            options.header = header
                .as_bool()
                .map_err(|_| invalid("`header` must be true or false"))?;
        }
        if let Some(delimiter) = map.get("delimiter") {
            let text = delimiter.clone().into_string().unwrap_or_default();
            options.delimiter = match text.as_bytes() {
                [one] => *one,
                _ => {
                    return Err(invalid(
                        "`delimiter` must be one ASCII character, like \",\"",
                    ));
                }
            };
        }
        Ok(options)
    }
}

/// Rows of a CSV file (or of one range of it): maps from the header's names when `header` is set,
/// else arrays; every field is a string.
fn read_csv(permissions: &Permissions, path: &str, options: &Options) -> Result<Array> {
    let (absolute, mut file) = permissions
        .open_read(Path::new(path))
        .map_err(script_error)?;
    let header = if options.header {
        // Every chunk that asks for the header reads it from the file's start.
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(options.delimiter)
            .from_reader(&mut file);
        let mut first = csv::StringRecord::new();
        reader
            .read_record(&mut first)
            .map_err(|e| invalid(format!("{path:?}: bad CSV: {e}")))?;
        Some(first.iter().map(str::to_string).collect::<Vec<_>>())
    } else {
        None
    };
    let bytes = options.range.read(&mut file, &absolute)?;
    let mut rows = records(&bytes, options.delimiter, path)?;
    if options.header && options.range.start == 0 {
        rows.next(); // the header itself
    }
    rows.map(|record| {
        let record = record?;
        Ok(match &header {
            Some(names) => Dynamic::from_map(
                names
                    .iter()
                    .zip(record)
                    .map(|(name, field)| (name.as_str().into(), field.into()))
                    .collect(),
            ),
            None => Dynamic::from_array(record.into_iter().map(Dynamic::from).collect()),
        })
    })
    .collect()
}

/// The records of CSV `bytes`, each as its fields.
fn records<'a>(
    bytes: &'a [u8],
    delimiter: u8,
    path: &'a str,
) -> Result<impl Iterator<Item = Result<Vec<String>>> + 'a> {
    let reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes);
    Ok(reader.into_records().map(move |record| {
        let record = record.map_err(|e| invalid(format!("{path:?}: bad CSV: {e}")))?;
        Ok(record.iter().map(str::to_string).collect())
    }))
}

/// `rows` as CSV text: arrays as they are, or maps under a header of the first map's keys.
fn csv_text(rows: &Array) -> Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| invalid(format!("write_csv: {e}"));
    let mut names: Option<Vec<String>> = None;
    for row in rows {
        if let Some(map) = row.read_lock::<Map>() {
            if names.is_none() {
                let header: Vec<String> = map.keys().map(|k| k.to_string()).collect();
                writer.write_record(&header).map_err(bad)?;
                names = Some(header);
            }
            let names = names.as_deref().unwrap_or_default();
            let fields = names
                .iter()
                .map(|n| map.get(n.as_str()).map_or(String::new(), field));
            writer.write_record(fields).map_err(bad)?;
        } else if let Some(items) = row.read_lock::<Array>() {
            writer.write_record(items.iter().map(field)).map_err(bad)?;
        } else {
            return Err(invalid(format!(
                "write_csv: each row must be an array or a map, not a {}",
                row.type_name()
            )));
        }
    }
    writer
        .into_inner()
        .map_err(|e| invalid(format!("write_csv: {e}")))
}

fn field(value: &Dynamic) -> String {
    if value.is_unit() {
        String::new()
    } else {
        value.to_string()
    }
}
