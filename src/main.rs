//! The `mpscript` command: run or check a script, or start the REPL; maps errors to reports and
//! exit codes.

mod repl;

// mimalloc: the fast tier's string, map and array code is mostly allocation (a record kernel
// spent a quarter of its instructions in glibc's malloc and free; 15% fewer with mimalloc). It
// also keeps freed big buffers for the next message, which `mpscript::reuse_freed_buffers` asks
// of glibc for embedders. +0.2 MB of code; without transparent huge pages (`no_thp`), which made
// an idle worker 8 MiB bigger.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    ffi::OsString,
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
};

use clap::{Args, CommandFactory, Parser, Subcommand};
use mpscript::{
    Access, Cluster, Error, Interrupt, Level, Limits, LogFormat, LogRecord, LogSink, Permissions,
    Profile, ProfileSort, Runtime,
};
use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};

#[derive(Parser)]
#[command(version, about = "Run Rhai scripts that fan out over worker processes")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a script; everything after FILE reaches it as the array ARGV.
    Run {
        #[command(flatten)]
        options: RunOptions,
        #[command(flatten)]
        profile: ProfileOptions,
        /// The script file, or - for standard input.
        file: PathBuf,
        /// Arguments for the script (all of them, `--help` and `--` included).
        args: Vec<String>,
    },
    /// Compile a script without running it, reporting syntax errors.
    Check {
        /// The script file, or - for standard input.
        file: PathBuf,
    },
    /// Start an interactive session (also what `mpscript` alone does on a terminal).
    Repl {
        #[command(flatten)]
        options: RunOptions,
    },
    /// Serve as a cluster agent: run the chunks of any `mpscript run --cluster URL` on this host.
    Worker {
        #[command(flatten)]
        cluster: ClusterOptions,
        /// Chunks run at once, each on its own worker process [default: number of CPUs].
        #[arg(short = 'j', long, value_parser = at_least_one)]
        slots: Option<usize>,
        /// This agent's name in the runs' output [default: the host name].
        #[arg(long, default_value = "")]
        name: String,
        /// Seconds a chunk taken by an agent that died or stopped waits before another agent
        /// gets it (the agents' shared setting: the first agent on a server sets it) [default: 10].
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        cluster_ack_wait: Option<u64>,
        #[command(flatten)]
        grants: Grants,
    },
}

/// Where the cluster is and how to reach it (`run --cluster` and `worker`).
#[derive(Args, Default)]
struct ClusterOptions {
    /// The NATS server: nats://HOST:PORT, or tls://HOST:PORT.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// Read the server's token from FILE (else from MPSCRIPT_CLUSTER_TOKEN).
    #[arg(long, value_name = "FILE")]
    cluster_token_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for the server's TLS, and require TLS.
    #[arg(long, value_name = "FILE")]
    cluster_ca: Option<PathBuf>,
    /// Connect to a server off this machine without TLS and credentials.
    #[arg(long)]
    cluster_insecure: bool,
}

impl ClusterOptions {
    fn cluster(&self) -> Option<Cluster> {
        let url = self.cluster.as_ref()?;
        let mut cluster = Cluster::new(url).insecure(self.cluster_insecure);
        if let Some(file) = &self.cluster_token_file {
            cluster = cluster.token_file(file);
        }
        if let Some(ca) = &self.cluster_ca {
            cluster = cluster.tls_ca(ca);
        }
        Some(cluster)
    }
}

#[derive(Args, Default)]
struct RunOptions {
    /// Default number of pool_map workers, 1 or more [default: number of CPUs].
    #[arg(short = 'j', long, value_parser = at_least_one)]
    workers: Option<usize>,
    /// Let the script `import` modules from files below this directory (no file access otherwise).
    #[arg(long, value_name = "DIR")]
    module_dir: Option<PathBuf>,
    /// Stop any script run or worker call after this many operations.
    #[arg(long, value_name = "N")]
    max_operations: Option<u64>,
    /// Maximum function call depth.
    #[arg(long, value_name = "N")]
    max_call_depth: Option<usize>,
    /// Maximum string length in bytes.
    #[arg(long, value_name = "N")]
    max_string_size: Option<usize>,
    /// Maximum array length.
    #[arg(long, value_name = "N")]
    max_array_size: Option<usize>,
    /// Maximum messages waiting in a process's mailbox (0: no limit) [default: 100000].
    #[arg(long, value_name = "N")]
    max_mailbox: Option<usize>,
    /// Print on stderr which functions the fast tier compiles, and why others run in Rhai.
    #[arg(long)]
    explain_fast: bool,
    /// Run every function in Rhai's interpreter (turn the fast tier off).
    #[arg(long, conflicts_with = "explain_fast")]
    no_fast: bool,
    #[command(flatten)]
    grants: Grants,
    /// The least level of log records written: debug, info, warn or error [default: info].
    #[arg(long, value_name = "LEVEL", value_parser = log_level)]
    log_level: Option<Level>,
    #[command(flatten)]
    cluster: ClusterOptions,
    /// With --cluster: keep no local pool, run every pool_map item on the agents.
    #[arg(long, requires = "cluster")]
    cluster_only: bool,
    /// How log records are written: text or json [default: text].
    #[arg(long, value_name = "FORMAT", value_parser = log_format)]
    log_format: Option<LogFormat>,
    /// Write log records to this file (appended) instead of stderr.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
}

/// The profiler's flags (`run` only); any of them turns profiling on.
#[derive(Args, Default)]
struct ProfileOptions {
    /// Print a profile of the run on stderr at its end: calls and times of every script
    /// function, over the main process and every worker, and what each pool_map cost.
    #[arg(long)]
    profile: bool,
    /// Order the profile's rows by: calls, tottime or cumtime [default: cumtime].
    #[arg(long, value_name = "KEY", value_parser = profile_sort)]
    profile_sort: Option<ProfileSort>,
    /// Also write the profile's folded stacks to FILE (a flame graph if FILE ends in .svg).
    #[arg(long, value_name = "FILE")]
    profile_out: Option<PathBuf>,
}

/// Where a profiled run's profile is kept until the run ends.
type ProfileSlot = std::sync::Arc<std::sync::Mutex<Option<Profile>>>;

impl ProfileOptions {
    /// The slot the run's profile lands in, if it is profiled.
    fn slot(&self) -> Option<ProfileSlot> {
        let on = self.profile || self.profile_sort.is_some() || self.profile_out.is_some();
        on.then(ProfileSlot::default)
    }

    /// Prints the table on stderr and writes folded stacks (or a flame graph) to the file asked.
    fn report(self, profile: &Profile, script: &std::path::Path) -> Result<(), Error> {
        eprint!("\n{}", profile.table(self.profile_sort.unwrap_or_default()));
        let Some(out) = self.profile_out else {
            return Ok(());
        };
        let text = match out.extension().is_some_and(|e| e == "svg") {
            true => profile.flamegraph(&format!("mpscript run {}", script.display())),
            false => profile.folded(),
        };
        std::fs::write(&out, text).map_err(|e| Error::Io {
            context: format!("writing the profile to {}", out.display()),
            source: e,
        })
    }
}

/// Deno-style permissions: nothing is granted unless asked for; a flag without a list grants the
/// whole kind, a directory what is below it, and a denial beats a grant.
#[derive(Args, Default)]
struct Grants {
    /// Grant everything (every --allow-* below).
    #[arg(short = 'A', long)]
    allow_all: bool,
    /// Let scripts read files: all, or these paths and what is below them.
    #[arg(long, value_name = "PATH,...", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
    allow_read: Option<Vec<String>>,
    /// Let scripts write files: all, or these paths and what is below them.
    #[arg(long, value_name = "PATH,...", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
    allow_write: Option<Vec<String>>,
    /// Let scripts reach hosts over the network: all, or these HOST[:PORT]s.
    #[arg(long, value_name = "HOST,...", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
    allow_net: Option<Vec<String>>,
    /// Let scripts read environment variables: all, or these.
    #[arg(long, value_name = "VAR,...", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
    allow_env: Option<Vec<String>>,
    /// Forbid reading these paths (all without a list), whatever is granted.
    #[arg(long, value_name = "PATH,...", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
    deny_read: Option<Vec<String>>,
    /// Forbid writing these paths (all without a list), whatever is granted.
    #[arg(long, value_name = "PATH,...", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
    deny_write: Option<Vec<String>>,
    /// Forbid reaching these hosts (all without a list), whatever is granted.
    #[arg(long, value_name = "HOST,...", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
    deny_net: Option<Vec<String>>,
    /// Forbid reading these environment variables (all without a list), whatever is granted.
    #[arg(long, value_name = "VAR,...", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
    deny_env: Option<Vec<String>>,
}

impl Grants {
    /// The permissions these flags grant, resolved against the working directory now.
    fn permissions(&self) -> Result<Permissions, Error> {
        let mut permissions = if self.allow_all {
            Permissions::all()
        } else {
            Permissions::none()
        };
        let flags = [
            (Access::Read, &self.allow_read, &self.deny_read),
            (Access::Write, &self.allow_write, &self.deny_write),
            (Access::Net, &self.allow_net, &self.deny_net),
            (Access::Env, &self.allow_env, &self.deny_env),
        ];
        for (access, allow, deny) in flags {
            if let Some(list) = allow {
                permissions = permissions.allow(access, &entries(list))?;
            }
            if let Some(list) = deny {
                permissions = permissions.deny(access, &entries(list))?;
            }
        }
        Ok(permissions)
    }
}

/// A flag's list without the empty entry a bare flag gives.
fn entries(list: &[String]) -> Vec<&str> {
    list.iter()
        .map(String::as_str)
        .filter(|e| !e.is_empty())
        .collect()
}

fn log_level(text: &str) -> Result<Level, String> {
    Level::parse(text).ok_or_else(|| "expected debug, info, warn or error".into())
}

fn profile_sort(text: &str) -> Result<ProfileSort, String> {
    text.parse()
}

fn log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected text or json".into()),
    }
}

/// Writes each record as one line, with one write, to `file` or stderr.
fn log_writer(format: LogFormat, file: Option<PathBuf>) -> Result<LogSink, Error> {
    let out: Box<dyn Write + Send> = match &file {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::Io {
                    context: format!("opening the log file {}", path.display()),
                    source: e,
                })?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let out = std::sync::Mutex::new(out);
    Ok(std::sync::Arc::new(move |record: &LogRecord| {
        let line = format!("{}\n", record.line_in(format));
        if let Ok(mut out) = out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }))
}

impl RunOptions {
    /// The runtime these options make; its runs' profiles go to `profile`, if given.
    fn runtime(self, profile: Option<ProfileSlot>) -> Result<Runtime, Error> {
        self.fast_tier_mode();
        let defaults = Limits::default();
        let limits = Limits {
            max_operations: self.max_operations.unwrap_or(defaults.max_operations),
            max_call_levels: self.max_call_depth.unwrap_or(defaults.max_call_levels),
            max_string_size: self.max_string_size.unwrap_or(defaults.max_string_size),
            max_array_size: self.max_array_size.unwrap_or(defaults.max_array_size),
            max_mailbox: self.max_mailbox.unwrap_or(defaults.max_mailbox),
            ..defaults
        };
        let mut builder = Runtime::builder().limits(limits);
        if let Some(cluster) = self.cluster.cluster() {
            // The loopback rule, before anything connects or runs.
            cluster.check()?;
            builder = builder.cluster(cluster.only(self.cluster_only));
        }
        if let Some(n) = self.workers {
            builder = builder.workers(n);
        }
        if let Some(dir) = self.module_dir {
            builder = builder.module_dir(dir);
        }
        if let Some(level) = self.log_level {
            builder = builder.log_level(level);
        }
        if self.log_format.is_some() || self.log_file.is_some() {
            let format = self.log_format.unwrap_or(LogFormat::Text);
            let sink = log_writer(format, self.log_file)?;
            builder = builder.on_log(move |record| sink(record));
        }
        if let Some(slot) = profile {
            builder = builder.profile(move |p| {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone())
            });
        }
        Ok(builder.permissions(self.grants.permissions()?).build())
    }
}

impl RunOptions {
    /// The fast tier reads its mode from the environment, in this process and in the workers
    /// that inherit it.
    fn fast_tier_mode(&self) {
        let word = match (self.explain_fast, self.no_fast) {
            (true, _) => "explain",
            (_, true) => "off",
            _ => return,
        };
        let mode = match std::env::var(mpscript::FAST_TIER_ENV) {
            Ok(current) if !current.is_empty() => format!("{current},{word}"),
            _ => word.to_string(),
        };
        // SAFETY: called while parsing the command line, before any other thread exists.
        unsafe { std::env::set_var(mpscript::FAST_TIER_ENV, mode) };
    }
}

fn main() -> ExitCode {
    mpscript::run_worker_if_requested();
    let (ours, script_args) = split_at_script(std::env::args_os().collect());
    let command = match Cli::parse_from(ours).command {
        Some(Command::Run {
            options,
            profile,
            file,
            ..
        }) => Command::Run {
            options,
            profile,
            file,
            args: script_args,
        },
        Some(command) => command,
        None if std::io::stdin().is_terminal() => Command::Repl {
            options: RunOptions::default(),
        },
        // Piped in, as `python` reads a script from a pipe.
        None => Command::Run {
            options: RunOptions::default(),
            profile: ProfileOptions::default(),
            file: "-".into(),
            args: Vec::new(),
        },
    };
    let result = match command {
        Command::Repl { options } => match options.runtime(None) {
            Ok(runtime) => {
                stop_on_signals(runtime.interrupt(), Repeat::InterruptAgain);
                return repl::run(&runtime);
            }
            Err(e) => Err(e),
        },
        Command::Run {
            options,
            profile,
            file,
            args,
        } => {
            let slot = profile.slot();
            let ran = options.runtime(slot.clone()).and_then(|runtime| {
                stop_on_signals(runtime.interrupt(), Repeat::Exit);
                runtime.run_file(&file, &args).map(|_| ())
            });
            let taken = slot.and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take());
            // A failed run still shows its profile; its error is the one reported.
            let written = taken.map_or(Ok(()), |p| profile.report(&p, &file));
            ran.and(written)
        }
        Command::Check { file } => Runtime::builder().build().check_file(&file),
        Command::Worker {
            cluster,
            slots,
            name,
            cluster_ack_wait,
            grants,
        } => {
            let wait = cluster_ack_wait.map(std::time::Duration::from_secs);
            serve_as_agent(&cluster, slots, &name, wait, &grants)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (Error::Exit(_) | Error::Interrupted { .. })) => exit_code(e.exit_code()),
        Err(e) => {
            eprintln!("{:?}", mpscript::report(&e));
            exit_code(e.exit_code())
        }
    }
}

/// `mpscript worker --cluster URL`: serves until SIGTERM or Ctrl-C, then finishes what it runs.
fn serve_as_agent(
    options: &ClusterOptions,
    slots: Option<usize>,
    name: &str,
    ack_wait: Option<std::time::Duration>,
    grants: &Grants,
) -> Result<(), Error> {
    let Some(mut cluster) = options.cluster() else {
        return Err(Error::Config(
            "mpscript worker needs --cluster nats://HOST:PORT".into(),
        ));
    };
    if let Some(wait) = ack_wait {
        cluster = cluster.ack_wait(wait);
    }
    let permissions = grants.permissions()?;
    let interrupt = Interrupt::default();
    stop_on_signals(interrupt.clone(), Repeat::InterruptAgain);
    let slots = slots.unwrap_or_else(mpscript::cpu_count);
    cluster.serve(name, slots, permissions, &interrupt)
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("a pool needs 1 worker or more".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Cuts `mpscript run [OPTIONS] FILE ARGS...` after FILE: everything after the script path
/// belongs to the script (as with python, node and deno), `--help`, `-j` and `--` included, also
/// through a `#!/usr/bin/env -S mpscript run` line. Clap sees only what comes before.
fn split_at_script(mut argv: Vec<OsString>) -> (Vec<OsString>, Vec<String>) {
    if argv.get(1).is_none_or(|a| a != "run") {
        return (argv, Vec::new());
    }
    let command = Cli::command();
    let run = command.find_subcommand("run").expect("run is a subcommand");
    let takes_value = |flag: &str| {
        run.get_arguments().any(|a| {
            let named = match flag.strip_prefix("--") {
                Some(long) => a.get_long() == Some(long),
                None => flag.len() == 2 && a.get_short() == flag.chars().nth(1),
            };
            named && a.get_action().takes_values() && !a.is_require_equals_set()
        })
    };
    let mut at = 2;
    while let Some(arg) = argv.get(at).and_then(|a| a.to_str()) {
        match arg {
            "--" => {
                argv.remove(at); // `run -- -odd-name.rhai`: the script path may start with a dash
                break;
            }
            "-" => break,
            flag if flag.starts_with('-') && !flag.contains('=') && takes_value(flag) => at += 2,
            flag if flag.starts_with('-') => at += 1,
            _ => break,
        }
    }
    let script_args = argv
        .split_off((at + 1).min(argv.len()))
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    (argv, script_args)
}

/// What a second Ctrl-C does while the first is still being handled.
#[derive(Clone, Copy, PartialEq)]
enum Repeat {
    /// Exit at once (a script run); workers follow by themselves (parent-death signal, EOF).
    Exit,
    /// Interrupt again (the REPL, which clears the interrupt before each input).
    InterruptAgain,
}

/// Ctrl-C or SIGTERM stops the running script (workers are shut down, a run exits with
/// 128 + signal).
fn stop_on_signals(interrupt: Interrupt, repeat: Repeat) {
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let exit = repeat == Repeat::Exit || signal == SIGTERM;
            if exit && interrupt.signal().is_some() {
                std::process::exit(128 + signal);
            }
            interrupt.trigger(signal);
        }
    });
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from((code & 0xff) as u8)
}
