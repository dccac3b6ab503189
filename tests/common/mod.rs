//! Drives the real `mpscript` binary: write a script, run it, look at what came out.

#![allow(dead_code)]

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_mpscript");

/// What a run printed and how it ended.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
    pub elapsed: Duration,
}

impl Run {
    /// Asserts a zero exit and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts a failing exit with `code` and returns stderr.
    pub fn fails_with(&self, code: i32) -> &str {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }

    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// A script in its own temporary directory.
pub struct Script {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Script {
    pub fn new(source: &str) -> Script {
        Script::named("test.rhai", source)
    }

    pub fn named(name: &str, source: &str) -> Script {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(source.as_bytes()))
            .expect("write script");
        Script { _dir: dir, path }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run_file(&self.path, args)
    }
}

/// `mpscript run -j 2 FILE ARGS...` with no stdin, no colours.
pub fn run_file(path: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("run").arg("-j").arg("2").arg(path).args(args);
    capture(cmd)
}

/// Runs `mpscript` with raw arguments.
pub fn mpscript(args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    capture(cmd)
}

/// Runs a script given as text.
pub fn run(source: &str) -> Run {
    Script::new(source).run(&[])
}

fn capture(mut cmd: Command) -> Run {
    let started = Instant::now();
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("mpscript runs");
    Run {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        code: status.code(),
        elapsed: started.elapsed(),
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
