//! The REPL driven through stdin as a person would: functions typed interactively go to workers,
//! errors are reported and the session goes on, Ctrl-C stops a running evaluation.

mod common;

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    time::Duration,
};

fn repl() -> std::process::Child {
    Command::new(common::BIN)
        .args(["repl", "-j", "2"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpscript repl starts")
}

/// Types `input` into a fresh REPL, closes its stdin, and collects how it ended.
fn session(input: &[u8]) -> (Option<i32>, String, String) {
    let mut child = repl();
    child.stdin.as_mut().unwrap().write_all(input).unwrap();
    finish(child)
}

fn finish(mut child: std::process::Child) -> (Option<i32>, String, String) {
    drop(child.stdin.take());
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap().code(), stdout, stderr)
}

#[test]
fn functions_typed_in_the_repl_run_in_workers_and_errors_do_not_end_the_session() {
    let (code, stdout, stderr) = session(
        br#"fn sq(x) { x * x }
pool_map(Fn("sq"), [1, 2, 3])
let k = 10;
pool_map(|x| x + k + pid() - pid(), [1, 2])
fn add(a,
       b) {
  a + b
}
spawn(|| add(40, 2)).join()
1 / 0
"still here"
:fns
:vars
:nonsense
"#,
    );
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "=> [1, 4, 9]",
            "=> [11, 12]",
            "=> 42",
            r#"=> "still here""#,
            "add(a, b)",
            "sq(x)",
            "k: i64",
        ],
        "{stderr}"
    );
    assert!(stderr.contains("Division by zero"), "{stderr}");
    assert!(stderr.contains("<input 7>:1:3"), "{stderr}");
    assert!(stderr.contains("unknown command :nonsense"), "{stderr}");
}

#[test]
fn loops_typed_in_the_repl_run_compiled_over_the_session_s_variables() {
    let (code, stdout, stderr) = session(
        b"let t = 0;\nfor i in 0..10 { t += i; }\nt\n\
          let m = #{};\nfor w in pool_map(|x| `w${x % 2}`, [1, 2, 3]) { m[w] = (m[w] ?? 0) + 1; }\nm\n\
          for i in 0..3 { t *= 9223372036854775807; }\nt\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["=> 45", r#"=> #{"w0": 1, "w1": 2}"#, "=> 45"],
        "{stderr}"
    );
    assert!(stderr.contains("Multiplication overflow"), "{stderr}");
}

#[test]
fn ctrl_c_stops_a_running_evaluation_and_its_workers_but_not_the_repl() {
    let mut child = repl();
    let stdin = child.stdin.as_mut().unwrap();
    stdin
        .write_all(b"pool_map(|x| { loop { } }, [1, 2], #{ workers: 2 })\n")
        .unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(500));
    let stdin = child.stdin.as_mut().unwrap();
    stdin
        .write_all(b"pool_map(|x| x * 2, [21], #{ workers: 2 })\n:workers\n")
        .unwrap();
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "=> [42]", "{stdout}\n{stderr}");
    // The two looping workers are gone; the one-item map started a single fresh one.
    assert!(lines[1].starts_with("1 worker processes"), "{stdout}");
}

#[test]
fn exit_in_the_repl_leaves_with_its_code() {
    let (code, stdout, _) = session(b"print(1);\nexit(4);\nprint(2);\n");
    assert_eq!(code, Some(4));
    assert_eq!(stdout, "1\n");
}

#[test]
fn an_actor_typed_in_the_repl_answers_messages() {
    let (code, stdout, stderr) = session(
        br#"fn echo() { let m = recv(5); m.from.send(m.text + "!"); }
let p = spawn(echo);
p.send(#{ from: self(), text: "hi" })
recv(5)
"#,
    );
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["=> true", "=> \"hi!\""], "{stderr}");
}

#[test]
fn comments_and_strings_do_not_leave_the_repl_waiting_and_errors_point_at_their_input() {
    let (code, stdout, stderr) = session(
        br#"let x = 1; // it's { not open
x + 1
let s = "never closed
"after the bad string"
fn halve(n) {
    n / 0
}
halve(4)
queue()
[lock(), "a"]
pool_map(Fn("halve"), [1])
"#,
    );
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "=> 2",
            r#"=> "after the bad string""#,
            "=> Queue(1)",
            r#"=> [Lock(2), "a"]"#
        ],
        "{stderr}"
    );
    assert!(stderr.contains("Open string is not terminated"), "{stderr}");
    // The division is in the input that defined `halve`, line 2 of it, run here or in a worker.
    assert_eq!(stderr.matches("<input 5>:2:7").count(), 2, "{stderr}");
    assert!(stderr.contains("raised here in worker"), "{stderr}");
    assert!(stderr.contains("n / 0"), "{stderr}");
}

/// A terminal session through a pseudo-terminal, as a person types it.
#[cfg(target_os = "linux")]
#[test]
fn on_a_terminal_tab_completes_names_and_history_recalls_a_whole_input() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, slave) = {
        let (mut m, mut s) = (0, 0);
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two descriptors we then own.
        let ok = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(ok, 0, "openpty");
        // SAFETY: fresh descriptors from openpty.
        unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
    };
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::BIN)
        .args(["repl", "-j", "1"])
        .env("HOME", home.path())
        .env("TERM", "xterm")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("mpscript repl starts");
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let (mut reader, screen) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let wait_for = |what: &str| {
        let start = std::time::Instant::now();
        while !screen.lock().unwrap().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {what:?} on the screen:\n{}",
                screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut type_in = |keys: &[u8]| {
        master.write_all(keys).unwrap();
        master.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
    };
    wait_for("mps> ");
    type_in(b"fn collatz_steps(n) { n * 3 }\r");
    type_in(b"collatz_s\t(7)\r");
    wait_for("=> 21");
    type_in(b"[100,\r");
    type_in(b"200].len() + 40\r");
    wait_for("=> 42");
    screen.lock().unwrap().clear();
    // Up arrow: the whole two-line input comes back as one entry.
    type_in(b"\x1b[A\r");
    wait_for("=> 42");
    type_in(b":quit\r");
    let status = child.wait().unwrap();
    assert!(status.success());
    let history = std::fs::read_to_string(home.path().join(".mpscript_history")).unwrap();
    assert!(history.contains("[100,"), "{history}");
}

#[test]
fn a_process_that_fails_unobserved_in_the_repl_is_reported_after_the_input() {
    let (code, stdout, stderr) = session(
        br#"fn bad(x) {
    throw `bad ${x}`;
}
let p = spawn(Fn("bad"), 1);
sleep(0.3);
let q = spawn(Fn("bad"), 2);
q.join(5)
"still here"
"#,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.ends_with("=> \"still here\"\n"), "{stdout}");
    // The unjoined one once, against the input that defined `bad`; the joined one only as its error.
    assert_eq!(
        stderr.matches("nothing joined or monitored").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("<input 1>:2:5"), "{stderr}");
    assert!(stderr.contains("bad 2"), "{stderr}");
}
