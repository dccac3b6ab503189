//! The library API as a host uses it: a Runtime whose workers are the mpscript binary, output
//! captured through a callback, results read back as Rust values.

use std::sync::{Arc, Mutex};

use mpscript::{OutStream, Runtime};

fn runtime(output: Arc<Mutex<Vec<(OutStream, String)>>>) -> Runtime {
    Runtime::builder()
        .workers(2)
        .worker_exe(env!("CARGO_BIN_EXE_mpscript"))
        .on_output(move |stream, text| output.lock().unwrap().push((stream, text.to_string())))
        .build()
}

#[test]
fn a_host_runs_a_parallel_script_and_reads_the_result() {
    let output = Arc::new(Mutex::new(Vec::new()));
    let rt = runtime(output.clone());
    let value = rt
        .run(
            "embedded",
            "let k = 3; pool_map(|x| { print(`item ${x}`); x * k }, 1..=4)",
            &[],
        )
        .expect("script runs");
    let numbers: Vec<i64> = value
        .into_array()
        .unwrap()
        .into_iter()
        .map(|v| v.as_int().unwrap())
        .collect();
    assert_eq!(numbers, [3, 6, 9, 12]);
    let mut lines: Vec<String> = output
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| t.clone())
        .collect();
    lines.sort();
    assert_eq!(lines, ["item 1", "item 2", "item 3", "item 4"]);
}

#[test]
fn a_remote_error_reaches_the_host_as_a_script_error_with_its_origin() {
    let rt = runtime(Arc::default());
    let err = rt
        .run(
            "embedded",
            "fn f(x) { throw \"nope\" }\npool_map(Fn(\"f\"), [1])",
            &[],
        )
        .unwrap_err();
    assert!(err.is_script());
    let mpscript::Error::Script { remote, .. } = &err else {
        panic!("expected a script error, got {err}");
    };
    let remote = remote.as_ref().expect("the worker-side error is attached");
    assert_eq!((remote.message.as_str(), remote.line), ("nope", 1));
    assert_ne!(remote.pid, std::process::id());
}

#[test]
fn exit_codes_and_argv_reach_the_host() {
    let rt = runtime(Arc::default());
    let err = rt
        .run("embedded", "exit(ARGV.len())", &["a".into(), "b".into()])
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn a_worker_executable_that_is_not_mpscript_is_a_clear_error_not_a_hang() {
    for exe in ["/bin/true", "/definitely/missing/worker"] {
        let rt = Runtime::builder().worker_exe(exe).build();
        let started = std::time::Instant::now();
        let err = rt.run("embedded", "spawn(|| 1).join()", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("could not start a worker"), "{exe}: {text}");
        assert!(
            started.elapsed().as_secs() < 10,
            "{exe}: took {:?}",
            started.elapsed()
        );
        // The same runtime still runs scripts that need no workers.
        assert_eq!(rt.run("plain", "1 + 1", &[]).unwrap().as_int().unwrap(), 2);
    }
}
