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
