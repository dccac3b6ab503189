//! The profiler through the real binary: exact call counts from the main process and from workers,
//! closure rows, map rows, folded stacks and flame graphs that parse, and a run that fails still
//! showing its profile.

mod common;

use std::{path::Path, process::Command};

use common::{BIN, Run, Script};

const FIB: &str = "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }\n";

/// `mpscript run -j 2 ARGS... FILE` in the script's directory (so rows name it as `FILE`), with
/// `MPSCRIPT_FAST` set to `fast`.
fn profiled(script: &Script, args: &[&str], fast: &str) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(script.path.parent().unwrap())
        .args(["run", "-j", "2"])
        .args(args)
        .arg(script.path.file_name().unwrap())
        .env("MPSCRIPT_FAST", fast);
    common::capture(cmd)
}

/// The table row whose label ends with `(name)`: its columns.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    let suffix = format!("({name})");
    table
        .lines()
        .find(|line| {
            line.split_whitespace()
                .nth(5)
                .is_some_and(|l| l.ends_with(&suffix))
        })
        .unwrap_or_else(|| panic!("no row for {name} in\n{table}"))
        .split_whitespace()
        .collect()
}

#[test]
fn fib_15_in_two_workers_is_1973_calls_each_compiled_or_not() {
    let script = Script::named(
        "fib.rhai",
        &format!("{FIB}print(pool_map(fib, [15, 15], #{{workers: 2}}));\n"),
    );
    for fast in ["on", "off"] {
        let run = profiled(&script, &["--profile"], fast);
        assert_eq!(run.ok(), "[610, 610]\n");
        let fib = row(&run.stderr, "fib");
        // Two primitive calls (one per item), 1973 calls each.
        assert_eq!(fib[0], "3946/2", "MPSCRIPT_FAST={fast}\n{}", run.stderr);
        assert_eq!(fib[5], "fib.rhai:1(fib)");
        assert_eq!(
            fib.get(6) == Some(&"[fast]"),
            fast == "on",
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("over 3 processes"), "{}", run.stderr);
        let map = run
            .stderr
            .lines()
            .find(|l| l.contains("pool_map(fib.rhai:1(fib)) in fib.rhai(<main>)"))
            .unwrap_or_else(|| panic!("no map row\n{}", run.stderr));
        let columns: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(
            &columns[..3],
            ["1", "2", "2"],
            "calls, items, workers: {map}"
        );
    }
}

#[test]
fn closures_are_rows_named_by_file_and_line_in_every_process() {
    let script = Script::named(
        "closures.rhai",
        "fn label(x) { `item ${x}` }\n\
         let words = [\"a\", \"bb\", \"ccc\"].map(|w| label(w.len()));\n\
         let k = 3;\n\
         print(pool_map(|x| x + k, [1, 2, 3, 4]));\n\
         print(words);\n",
    );
    let run = profiled(&script, &["--profile"], "on");
    assert_eq!(
        run.ok(),
        "[4, 5, 6, 7]\n[\"item 1\", \"item 2\", \"item 3\"]\n"
    );
    let rows: Vec<Vec<&str>> = run
        .stderr
        .lines()
        .filter(|l| l.contains("(<closure>)") && !l.contains("pool_map("))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let calls_at = |label: &str| rows.iter().find(|r| r[5] == label).map(|r| r[0]);
    assert_eq!(
        calls_at("closures.rhai:2(<closure>)"),
        Some("3"),
        "{}",
        run.stderr
    );
    assert_eq!(
        calls_at("closures.rhai:4(<closure>)"),
        Some("4"),
        "{}",
        run.stderr
    );
    assert_eq!(row(&run.stderr, "label")[0], "3");
}

#[test]
fn folded_stacks_parse_and_nest_worker_frames_under_the_parent_map() {
    let script = Script::named(
        "nest.rhai",
        &format!(
            "{FIB}fn work(n) {{ fib(n) }}\n\
             fn run_all() {{ pool_map(work, [18, 18, 18, 18]) }}\n\
             print(run_all());\n\
             print(pool_submit(fib, 12).get());\n"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("out.folded");
    let run = profiled(&script, &["--profile-out", folded.to_str().unwrap()], "off");
    assert_eq!(run.ok(), "[2584, 2584, 2584, 2584]\n144\n");
    assert!(
        run.stderr.contains("ncalls  tottime"),
        "--profile-out prints the table too"
    );
    let text = std::fs::read_to_string(&folded).unwrap();
    let mut paths = Vec::new();
    for line in text.lines() {
        let (path, count) = line.rsplit_once(' ').expect("`path count` lines");
        let count: u64 = count
            .parse()
            .unwrap_or_else(|_| panic!("count in {line:?}"));
        assert!(count > 0, "{line}");
        assert!(
            path.split(';').all(|f| !f.is_empty() && !f.contains(' ')),
            "{line}"
        );
        paths.push(path);
    }
    assert!(
        paths.contains(&"main;run_all;pool_map;work;fib;fib"),
        "{text}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("main;pool_submit;fib;fib")),
        "{text}"
    );
    assert!(paths.iter().all(|p| p.starts_with("main")), "{text}");
    // The worker's time under the map is about the items' time: 4 x fib(18) walked in Rhai.
    let svg_path = dir.path().join("out.svg");
    let run = profiled(
        &script,
        &["--profile-out", svg_path.to_str().unwrap()],
        "on",
    );
    run.ok();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("<title>work (") && svg.contains("<title>main ("),
        "{svg}"
    );
    assert_eq!(svg.matches("<g>").count(), svg.matches("</g>").count());
}

#[test]
fn a_failing_script_still_prints_its_table_sorted_as_asked() {
    let script = Script::named(
        "fail.rhai",
        "fn boom(x) { if x > 2 { throw \"bad\" } x }\n\
         fn rec(n) { if n == 0 { 0 } else { rec(n - 1) + 1 } }\n\
         fn once() { 1 }\n\
         print(rec(30) + once());\n\
         print(pool_map(boom, [1, 2, 3]));\n",
    );
    let run = profiled(&script, &["--profile", "--profile-sort", "calls"], "off");
    let stderr = run.fails_with(1);
    assert!(stderr.contains("Ordered by: call count"), "{stderr}");
    assert!(
        stderr.contains("raised here in worker"),
        "the error is reported too: {stderr}"
    );
    let rows: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("fail.rhai:") && l.contains(")") && !l.contains('│'))
        .filter(|l| l.split_whitespace().count() >= 6)
        .collect();
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.split_whitespace().nth(5))
        .collect();
    assert_eq!(
        &names[..3],
        ["fail.rhai:2(rec)", "fail.rhai:1(boom)", "fail.rhai:3(once)"],
        "{stderr}"
    );
    assert_eq!(row(stderr, "rec")[0], "31/1");
}

#[test]
fn profiling_keeps_the_depth_limit_and_methods_work() {
    let deep = "fn deep(n) { if n == 0 { 0 } else { deep(n - 1) + 1 } }\n";
    let fits = Script::new(&format!("{deep}print(deep(63));\n"));
    let run = profiled(&fits, &["--profile"], "off");
    assert_eq!(run.ok(), "63\n");
    assert_eq!(row(&run.stderr, "deep")[0], "64/1");
    let too_deep = Script::new(&format!("{deep}print(deep(64));\n"));
    let run = profiled(&too_deep, &["--profile"], "off");
    assert!(
        run.fails_with(1).contains("Stack overflow"),
        "{}",
        run.stderr
    );
    // A method (it uses `this`) runs as before; it has no row.
    let method =
        Script::new("fn bump(by) { this += by; this }\nlet x = 1;\nx.bump(2);\nprint(x);\n");
    let run = profiled(&method, &["--profile"], "on");
    assert_eq!(run.ok(), "3\n");
}

#[test]
fn an_unprofiled_run_prints_no_table() {
    let script = Script::new(&format!("{FIB}print(fib(10));\n"));
    let run = profiled(&script, &[], "on");
    assert_eq!(run.ok(), "55\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn the_profiled_primes_script_runs_profiled_through_its_shebang() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/primes_profiled.rhai");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(&script)
        .arg("2000")
        .env("PATH", path)
        .output()
        .expect("the script runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Found 303 primes up to 2000\n"
    );
    assert_eq!(row(&stderr, "is_prime")[0], "2000", "{stderr}");
    assert_eq!(row(&stderr, "count_primes")[0], "1", "{stderr}");
    assert!(
        stderr.contains("primes_profiled.rhai:6(is_prime)) in "),
        "the map has its row: {stderr}"
    );
}
