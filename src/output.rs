//! Where text goes: the script's `print` and `debug`, its workers', and the runtime's own notices,
//! all through one sink a host can replace.

use std::{io::Write, sync::Arc};

use serde::{Deserialize, Serialize};

/// Which stream a text belongs to.
///
/// ```
/// use mpscript::OutStream;
/// use std::sync::{Arc, Mutex};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = seen.clone();
/// let runtime = mpscript::Runtime::builder()
///     .on_output(move |stream, text| sink.lock().unwrap().push((stream, text.to_string())))
///     .build();
/// runtime.run("hello", r#"print("out"); debug("err");"#, &[]).unwrap();
/// let seen = seen.lock().unwrap();
/// assert_eq!(seen[0], (OutStream::Stdout, "out".to_string()));
/// assert_eq!(seen[1].0, OutStream::Stderr);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OutStream {
    /// `print`
    Stdout,
    /// `debug`
    Stderr,
    /// The runtime's own notices, not the script's: a refused stranger connection, a worker
    /// closed for a bad message. The default sink writes them on stderr, prefixed `mpscript: `.
    Notice,
}

/// Where script, worker and runtime output goes: called once per text, with the whole text.
pub type OutputSink = Arc<dyn Fn(OutStream, &str) + Send + Sync>;

/// The default output: whole lines, one write each, so worker lines never interleave mid-line.
pub(crate) fn write_line(stream: OutStream, text: &str) {
    let _ = match stream {
        OutStream::Stdout => std::io::stdout()
            .lock()
            .write_all(format!("{text}\n").as_bytes()),
        OutStream::Stderr => std::io::stderr()
            .lock()
            .write_all(format!("{text}\n").as_bytes()),
        OutStream::Notice => std::io::stderr()
            .lock()
            .write_all(format!("mpscript: {text}\n").as_bytes()),
    };
}
