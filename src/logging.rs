//! Structured logs: `log_info(msg)` and its siblings make a record (time, level, pid, script file
//! and line) in whatever process calls them; only the main process formats and writes records, so
//! lines from many workers never interleave and workers need no access to the log file.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// How much a record matters; records below the run's level are dropped where they are made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    /// `log_debug`
    Debug,
    /// `log_info` (the default level)
    #[default]
    Info,
    /// `log_warn`
    Warn,
    /// `log_error`
    Error,
}

impl Level {
    /// The level's name in lower case, as `--log-level` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// A level from its name (`debug`, `info`, `warn` or `error`).
    ///
    /// ```
    /// assert_eq!(mpscript::Level::parse("warn"), Some(mpscript::Level::Warn));
    /// assert_eq!(mpscript::Level::parse("loud"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Level> {
        [Level::Debug, Level::Info, Level::Warn, Level::Error]
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
    }
}

/// One log record, as a host's [`RuntimeBuilder::on_log`](crate::RuntimeBuilder::on_log) receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When it was made.
    pub time: SystemTime,
    /// How much it matters.
    pub level: Level,
    /// The process that made it (a worker's pid, or the main process's).
    pub pid: u32,
    /// The machine it was made on: `local`, or the cluster agent's name (pids of different
    /// machines collide).
    pub host: String,
    /// The script it was made in.
    pub file: String,
    /// The line of the call, 0 if unknown.
    pub line: u32,
    /// What the script said (any value, as `print` shows it).
    pub message: String,
}

/// Where records go: called once per record, in the main process only.
pub type LogSink = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// How the CLI writes records: one line of text, or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-12-03T18:51:32.123Z INFO  pid 4242 primes.rhai:12: message`
    Text,
    /// `{"time":"2026-12-03T18:51:32.123Z","level":"info","pid":4242,"file":"primes.rhai","line":12,"message":"..."}`
    Json,
}

impl LogRecord {
    /// The record as one line (no newline) in `format`.
    ///
    /// ```
    /// use mpscript::{Level, LogFormat, LogRecord};
    /// let record = LogRecord {
    ///     time: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_500),
    ///     level: Level::Warn,
    ///     pid: 42,
    ///     host: "local".into(),
    ///     file: "job.rhai".into(),
    ///     line: 7,
    ///     message: "disk \"almost\" full".into(),
    /// };
    /// assert_eq!(record.line_in(LogFormat::Text), "1970-01-01T00:00:01.500Z WARN  pid 42 job.rhai:7: disk \"almost\" full");
    /// assert_eq!(
    ///     record.line_in(LogFormat::Json),
    ///     r#"{"time":"1970-01-01T00:00:01.500Z","level":"warn","pid":42,"file":"job.rhai","line":7,"message":"disk \"almost\" full"}"#
    /// );
    /// ```
    pub fn line_in(&self, format: LogFormat) -> String {
        let time = Rfc3339(self.time);
        match format {
            LogFormat::Text => format!(
                "{time} {:<5} pid {}{} {}:{}: {}",
                self.level.name().to_ascii_uppercase(),
                self.pid,
                self.remote_host()
                    .map_or(String::new(), |h| format!(" on {h}")),
                self.file,
                self.line,
                self.message
            ),
            LogFormat::Json => {
                // Fields in the order a reader scans them, time first.
                #[derive(Serialize)]
                struct Line<'a> {
                    time: String,
                    level: &'a str,
                    pid: u32,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    host: Option<&'a str>,
                    file: &'a str,
                    line: u32,
                    message: &'a str,
                }
                let line = Line {
                    time: time.to_string(),
                    level: self.level.name(),
                    pid: self.pid,
                    host: self.remote_host(),
                    file: &self.file,
                    line: self.line,
                    message: &self.message,
                };
                serde_json::to_string(&line).unwrap_or_default()
            }
        }
    }
}

impl LogRecord {
    /// The cluster agent it was made on, if not this machine.
    fn remote_host(&self) -> Option<&str> {
        (self.host != "local").then_some(self.host.as_str())
    }
}

/// A time as RFC 3339 in UTC with milliseconds.
struct Rfc3339(SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = since.as_secs();
        let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
        // Howard Hinnant's days-to-civil.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rest / 3_600,
            rest / 60 % 60,
            rest % 60,
            since.subsec_millis()
        )
    }
}
