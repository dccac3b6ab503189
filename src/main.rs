//! The `mpscript` command: run or check a script; maps errors to reports and exit codes.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Run Rhai scripts that fan out over worker processes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a script; ARGS reach it as the array ARGV.
    Run {
        /// Default number of pool_map workers [default: number of CPUs].
        #[arg(short = 'j', long)]
        workers: Option<usize>,
        /// The script file.
        file: PathBuf,
        /// Arguments for the script.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Compile a script without running it, reporting syntax errors.
    Check {
        /// The script file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    mpscript::run_worker_if_requested();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            workers,
            file,
            args,
        } => {
            let mut builder = mpscript::Runtime::builder();
            if let Some(n) = workers {
                builder = builder.workers(n);
            }
            builder.build().run_file(&file, &args).map(|_| ())
        }
        Command::Check { file } => std::fs::read_to_string(&file)
            .map_err(|e| mpscript::Error::Io {
                context: format!("reading {}", file.display()),
                source: e,
            })
            .and_then(|source| {
                mpscript::Runtime::builder()
                    .build()
                    .check(&file.display().to_string(), &source)
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(mpscript::Error::Exit(code)) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("{:?}", mpscript::report(&e));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
