//! A real embedding host: this test has its own `main` (no harness), so its workers are this very
//! executable re-executed, as in an app that links mpscript. Each case runs the host as a child
//! process in one mode (`HOST_MODE`, which its workers inherit) and looks at what it printed.

use std::process::Command;

use mpscript::{Runtime, RuntimeBuilder, rhai};

fn host_functions(engine: &mut rhai::Engine) {
    engine.register_fn("weight", |n: i64| n % 7);
    engine.register_fn("explode", |n: i64| -> i64 {
        if n == 3 {
            panic!("exploded on {n}");
        }
        n
    });
}

fn main() {
    let mode = std::env::var("HOST_MODE").unwrap_or_default();
    let builder = Runtime::builder().register(host_functions).workers(2);
    match mode.as_str() {
        "free-entry" => mpscript::run_worker_if_requested(),
        "no-entry" => {}
        _ => builder.run_worker_if_requested(),
    }
    if mode.is_empty() {
        drive();
    } else {
        host(builder);
    }
}

/// The host proper: runs one script and prints its value or its error.
fn host(builder: RuntimeBuilder) {
    let script = match std::env::var("HOST_MODE").unwrap_or_default().as_str() {
        "panic" => "pool_map(|n| explode(n), 1..=5)",
        _ => "print(`top level ran in ${pid()}`); pool_map(|n| weight(n), [8, 9, 10])",
    };
    match builder.build().run("host.rhai", script, &[]) {
        Ok(value) => println!("value: {value:?}"),
        Err(e) => println!("error: {e}"),
    }
}

/// Looks at a host's stdout and stderr.
type Check = fn(&str, &str);

/// The test driver: each case as a separate host process.
fn drive() {
    let cases: [(&str, Check); 4] = [
        ("registered", |out, _| {
            assert!(out.ends_with("value: [1, 2, 3]\n"), "{out}");
            assert_eq!(out.matches("top level ran").count(), 1, "{out}");
        }),
        ("panic", |out, _| {
            let line = 1 + include_str!("host.rs")
                .lines()
                .position(|l| l.trim_start().starts_with("panic!(\"exploded"))
                .expect("the panic is in this file");
            let place = format!("panicked at tests/host.rs:{line}:13: exploded on 3");
            assert!(out.contains("pool_map items[2] (3rd of 5) failed"), "{out}");
            assert!(out.contains(&place), "expected `{place}` in {out}");
        }),
        ("free-entry", |out, _| {
            assert!(out.contains("builder.run_worker_if_requested()"), "{out}");
            assert!(!out.contains("Function not found"), "{out}");
        }),
        ("no-entry", |out, err| {
            // The workers ran the host's main up to `build()`, not the script's top level.
            assert_eq!(out.matches("top level ran").count(), 1, "{out}");
            assert_eq!(
                out.matches("ran the host's main instead").count(),
                1,
                "{out}"
            );
            assert!(!err.contains("ran the host's main"), "{err}");
        }),
    ];
    for (mode, check) in cases {
        let run = Command::new(std::env::current_exe().expect("this test's path"))
            .env("HOST_MODE", mode)
            .output()
            .expect("the host runs");
        let out = String::from_utf8_lossy(&run.stdout);
        let err = String::from_utf8_lossy(&run.stderr);
        check(&out, &err);
        println!("host mode {mode}: ok");
    }
}
