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

    /// Asserts the run printed exactly these lines; a failure shows its stderr.
    #[track_caller]
    pub fn assert_printed(&self, expected: &[&str]) {
        assert_eq!(self.lines(), expected, "{}", self.stderr);
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

/// Runs `mpscript` with raw arguments in the working directory `dir`.
pub fn mpscript_in(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args);
    capture(cmd)
}

/// Runs `mpscript` with raw arguments and `input` on its standard input.
pub fn mpscript_fed(args: &[&str], input: &[u8]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    capture_with(cmd, Some(input))
}

/// Runs a script given as text.
pub fn run(source: &str) -> Run {
    Script::new(source).run(&[])
}

/// How long one run of the binary may take before the test fails instead of hanging CI.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Runs `cmd` with nothing on stdin; fails the test past [`RUN_LIMIT`].
pub fn capture(cmd: Command) -> Run {
    capture_with(cmd, None)
}

/// Runs `cmd` with `input` (or nothing) on stdin; kills it and fails the test past [`RUN_LIMIT`].
fn capture_with(mut cmd: Command, input: Option<&[u8]>) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpscript starts");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).expect("write stdin");
    }
    let run = finish(child, &format!("{cmd:?}"));
    Run {
        elapsed: started.elapsed(),
        ..run
    }
}

/// Waits for a started `child` (stdout and stderr piped), closing its stdin first; kills it and
/// fails the test past [`RUN_LIMIT`]. `elapsed` counts from this call.
pub fn finish(child: std::process::Child, what: &str) -> Run {
    let started = Instant::now();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    if finished.recv_timeout(RUN_LIMIT).is_err() {
        // SAFETY: kill(2) of the child this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("mpscript ran longer than {RUN_LIMIT:?}: {what}");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = waiter.join().expect("waiter").expect("mpscript runs");
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

/// A running `mpscript run` whose stdout is read line by line as it comes.
pub struct Live {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    _script: Script,
}

impl Live {
    pub fn start(source: &str, extra_args: &[&str]) -> Live {
        Live::start_in(Command::new(BIN), source, extra_args)
    }

    /// Like `start`, with at most `open_files` descriptors (soft and hard limit), set by a shell.
    pub fn start_limited(source: &str, open_files: u32) -> Live {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
            .arg(BIN);
        Live::start_in(shell, source, &[])
    }

    fn start_in(mut command: Command, source: &str, extra_args: &[&str]) -> Live {
        let script = Script::new(source);
        let mut child = command
            .arg("run")
            .args(extra_args)
            .arg(&script.path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mpscript starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Live {
            child,
            lines,
            _script: script,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, failing the test (with mpscript's stderr) if none comes in time.
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let mut stderr = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = err.read_to_string(&mut stderr);
                }
                panic!("no line from mpscript ({e}); its stderr:\n{stderr}");
            }
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, signal) }, 0);
    }

    /// Waits for the exit (failing after `limit`); returns the status code, the rest of stdout and
    /// all of stderr.
    pub fn finish(&mut self, limit: Duration) -> (Option<i32>, Vec<String>, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("mpscript did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        let rest = self.lines.try_iter().collect();
        (status.code(), rest, stderr)
    }
}

impl Drop for Live {
    /// A failing test must not leave its `mpscript` (and so its workers) running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `limit` for every pid to be gone.
pub fn all_gone(pids: &[u32], limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if pids.iter().all(|&p| !process_exists(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The abstract socket names of a run, as every local user can see them in /proc/net/unix.
pub fn sockets_of(pid: u32) -> Vec<String> {
    let prefix = format!("@mpscript-{pid}-");
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| name.starts_with(&prefix))
        .map(|name| name.trim_start_matches('@').to_string())
        .collect()
}
