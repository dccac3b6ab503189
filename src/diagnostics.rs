//! miette reports: a script error points at its line and column; a worker's error points at both
//! the call site in the main script and the line that failed in the worker.

use miette::{Diagnostic, LabeledSpan, NamedSource, Report};
use rhai::{EvalAltResult, Position};

use crate::{Error, RemoteError};

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct ScriptReport {
    message: String,
    code: NamedSource<String>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
}

impl Diagnostic for ScriptReport {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.code)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
}

/// A report for any error, with source snippets where the error has positions.
///
/// ```
/// let runtime = mpscript::Runtime::builder().build();
/// let err = runtime.run("bad.rhai", "let x = ;", &[]).unwrap_err();
/// let text = format!("{:?}", mpscript::report(&err));
/// assert!(text.contains("bad.rhai:1:9"), "{text}");
/// ```
pub fn report(error: &Error) -> Report {
    match error {
        Error::Script {
            name,
            text,
            error,
            remote,
        } => Report::new(script_report(name, text, error, remote.as_deref())),
        other => Report::msg(other.to_string()),
    }
}

/// The report of a spawned process that failed with nobody joining, monitoring or linking it,
/// printed at the end of the run as Python prints such a child's traceback.
pub(crate) fn unobserved(name: &str, text: &str, error: Error) -> Report {
    let heading = "a spawned process failed and nothing joined or monitored it";
    match error {
        Error::Remote(remote) if !text.is_empty() => {
            let message = format!("{heading}: {remote}");
            let error = EvalAltResult::ErrorRuntime(message.into(), Position::NONE);
            Report::new(script_report(name, text, &error, Some(&remote)))
        }
        other => Report::msg(format!("{heading}: {other}")),
    }
}

fn script_report(
    name: &str,
    source: &str,
    error: &EvalAltResult,
    remote: Option<&RemoteError>,
) -> ScriptReport {
    let mut labels = Vec::new();
    let mut inner = error;
    while let EvalAltResult::ErrorInFunctionCall(function, _, next, pos) = inner {
        let what = if function.starts_with("anon$") {
            "in this closure call".to_string()
        } else {
            format!("in call to '{function}'")
        };
        push_label(&mut labels, source, *pos, what);
        inner = next;
    }
    let message = crate::error::rhai_message(inner);
    let mut help = None;
    if let Some(remote) = remote {
        push_label(&mut labels, source, inner.position(), "called here".into());
        // An error with no position (a stack overflow) has line 0, which `Position` refuses.
        if remote.line > 0 {
            let pos = Position::new(remote.line as u16, remote.column as u16);
            let origin = format!("raised here in {}", remote.worker());
            push_label(&mut labels, source, pos, origin);
        }
        help = Some(format!("the function ran in {}", remote.worker()));
    } else {
        push_label(&mut labels, source, inner.position(), "here".into());
    }
    if let EvalAltResult::ErrorModuleNotFound(..) = inner {
        help = Some(module_help());
    }
    ScriptReport {
        message,
        code: NamedSource::new(name, source.to_string()),
        labels,
        help,
    }
}

/// Where `import` looks, for a module it did not find.
fn module_help() -> String {
    let builtin: Vec<&str> = crate::stdlib::MODULES
        .iter()
        .map(|(name, _)| *name)
        .collect();
    format!(
        "`import` loads script files only from below the directory given with --module-dir DIR \
         (RuntimeBuilder::module_dir in a host), by a path relative to it without `.rhai`; \
         built in: {}",
        builtin.join(", ")
    )
}

fn push_label(labels: &mut Vec<LabeledSpan>, source: &str, pos: Position, text: String) {
    if let (Some(line), Some(column)) = (pos.line(), pos.position()) {
        let offset = byte_offset(source, line, column);
        let len = source[offset..].chars().next().map_or(0, char::len_utf8);
        labels.push(LabeledSpan::new(Some(text), offset, len));
    }
}

/// Rhai positions are 1-based and count characters; miette wants byte offsets.
fn byte_offset(source: &str, line: usize, column: usize) -> usize {
    let line_start: usize = source
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let rest = &source[line_start.min(source.len())..];
    line_start
        + rest
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(rest.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::byte_offset;

    #[test]
    fn offsets_count_characters_not_bytes() {
        let src = "ab\nüx = 1\n";
        assert_eq!(byte_offset(src, 1, 1), 0);
        assert_eq!(byte_offset(src, 2, 1), 3);
        assert_eq!(byte_offset(src, 2, 2), 5);
    }
}
