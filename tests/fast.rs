//! The fast tier through the real binary: compiled code gives Rhai's results and Rhai's error
//! reports, obeys limits and Ctrl-C, and says what it compiled.

mod common;

use std::time::Duration;

use common::{Live, Script};

/// Runs `source` with the tier on and off; both must print and exit alike (stderr too, with
/// worker pids masked).
fn same_both_ways(source: &str) -> common::Run {
    let script = Script::new(source);
    let path = script.path.to_str().unwrap();
    let fast = common::mpscript(&["run", "-j", "2", path]);
    let rhai = common::mpscript(&["run", "-j", "2", "--no-fast", path]);
    assert_eq!(fast.stdout, rhai.stdout, "stdout differs\n{}", fast.stderr);
    assert_eq!(
        mask_pids(&fast.stderr),
        mask_pids(&rhai.stderr),
        "stderr differs"
    );
    assert_eq!(fast.code, rhai.code);
    fast
}

/// Worker pids (after "worker " or "process ") differ from run to run.
fn mask_pids(text: &str) -> String {
    let mut out = text.to_string();
    for marker in ["worker ", "process "] {
        let mut masked = String::new();
        let mut rest = out.as_str();
        while let Some(at) = rest.find(marker) {
            let (head, tail) = rest.split_at(at + marker.len());
            masked.push_str(head);
            rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
            if rest.len() != tail.len() {
                masked.push_str("<pid>");
            }
        }
        masked.push_str(rest);
        out = masked;
    }
    out
}

#[test]
fn numeric_kernels_give_rhai_results() {
    let out = same_both_ways(
        r#"
        fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }
        fn basel(terms) { let s = 0.0; for k in 1..=terms { s += 1.0 / (k * k).to_float(); } s }
        fn collatz(n) { let s = 0; while n != 1 { if n % 2 == 0 { n = n / 2; } else { n = 3 * n + 1; } s += 1; } s }
        print(fib(20));
        print(basel(1000));
        print(pool_map(|n| collatz(n), 1..=10));
        print(spawn(|| fib(15)).join());
        "#,
    );
    out.assert_printed(&[
        "6765",
        "1.6439345666815615",
        "[0, 1, 7, 2, 5, 8, 16, 3, 19, 6]",
        "610",
    ]);
}

#[test]
fn arrays_of_numbers_give_rhai_results_and_errors() {
    let out = same_both_ways(
        r#"
        fn norm(row) { let s = 0.0; for i in 0..row.len() { s += row[i] * row[i]; } s.sqrt() }
        fn shifted(xs, by) { for i in 0..xs.len() { xs[i] += by; } xs[0] + xs[-1] }
        let rows = [[3.0, 4.0], [5.0, 12.0], [1.0, 1.0]];
        print(pool_map(|row| norm(row), rows));
        let xs = [1, 2, 3];
        print(shifted(xs, 10));
        print(xs);
        print(shifted([1, 2.5], 1));
        print(shifted(xs, 9223372036854775800));
        "#,
    );
    assert_eq!(out.code, Some(1));
    out.assert_printed(&["[5.0, 13.0, 1.4142135623730951]", "24", "[1, 2, 3]", "5.5"]);
    assert!(out.stderr.contains("Addition overflow"), "{}", out.stderr);
    let explained = common::mpscript(&[
        "run",
        "--explain-fast",
        Script::new("fn first(a) { a[0] } print(first([1.5]));")
            .path
            .to_str()
            .unwrap(),
    ]);
    assert!(
        explained.stderr.contains("first([float]) compiled"),
        "{}",
        explained.stderr
    );
}

#[test]
fn a_variable_passed_to_a_compiled_function_is_lent_and_comes_back_unchanged() {
    let out = same_both_ways(
        r#"
        fn total(words) { let n = 0; for w in words { n += w.len(); } n }
        fn grown(words) { words.push("more"); words.len() }
        fn at(words, i) { words[i].len() }
        const fixed = ["a", "bc"];
        let words = ["one", "two", "three"];
        let m = #{a: "x"};
        fn keys_of(m) { m.keys().len() + m.a.len() }
        print(total(words));
        print(grown(words));
        print(at(words, 2));
        print(total(fixed) + total(fixed));
        print(keys_of(m));
        print(`${words} ${fixed} ${m}`);
        let caught = "no"; try { at(words, 7); } catch (e) { caught = "caught"; }
        print(`${caught} ${words}`);
        print(at(words, 7));
        "#,
    );
    assert_eq!(out.code, Some(1));
    out.assert_printed(&[
        "11",
        "4",
        "5",
        "6",
        "2",
        r#"["one", "two", "three"] ["a", "bc"] #{"a": "x"}"#,
        r#"caught ["one", "two", "three"]"#,
    ]);
    assert!(out.stderr.contains("out of bounds"), "{}", out.stderr);
}

#[test]
fn an_error_in_compiled_code_is_reported_exactly_as_rhai_reports_it() {
    let out = same_both_ways(
        "fn grow(x) {\n    let y = x;\n    loop { y = y * 3; }\n}\nfn outer(x) { grow(x) + 1 }\nprint(outer(5));\n",
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("Multiplication overflow") && out.stderr.contains("grow"),
        "{}",
        out.stderr
    );
    let out = same_both_ways("fn f(x) { x / (x - x) }\nprint(pool_map(|x| f(x), [1]));\n");
    assert!(out.stderr.contains("Division by zero"), "{}", out.stderr);
}

#[test]
fn the_call_depth_limit_is_rhai_s_compiled_or_not() {
    // `deep` compiles; `text_deep` (a string) runs in Rhai through its stand-in.
    for n in [40, 62, 63, 64, 100] {
        let out = same_both_ways(&format!(
            "fn deep(n) {{ if n == 0 {{ 0 }} else {{ 1 + deep(n - 1) }} }}\n\
             fn text_deep(n) {{ if n == 0 {{ \"\" }} else {{ \"x\" + text_deep(n - 1) }} }}\n\
             print(deep({n}));\nprint(text_deep({n}).len());\n\
             print(spawn(|n| deep(n), {n}).join());\n"
        ));
        // The spawned closure is a call level of its own: one level less for `deep`.
        let n_text = n.to_string();
        let fits = [n <= 63, true, n <= 62];
        let expected: Vec<&str> = fits
            .iter()
            .take_while(|fits| **fits)
            .map(|_| n_text.as_str())
            .collect();
        assert_eq!(out.lines(), expected, "{n}: {}", out.stderr);
        if expected.len() < 3 {
            assert!(out.stderr.contains("Stack overflow"), "{n}: {}", out.stderr);
        }
    }
}

#[test]
fn explain_says_what_was_compiled_and_why_not() {
    let script = Script::new(
        "fn sq(x) { x * x }\nfn label(x) { `n=${x}` }\nfn field(m, k) { m.a + k }\nfn shout(x) { print(x); x }\nprint(sq(4));\nprint(label(2));\nprint(field(#{a: 1}, 2));\nshout(7);\nprint(pool_map(|x| sq(x) + 1, [1, 2]));\n",
    );
    let out = common::mpscript(&["run", "--explain-fast", script.path.to_str().unwrap()]);
    out.assert_printed(&["16", "n=2", "3", "7", "[2, 5]"]);
    for compiled in ["sq(int)", "label(int)", "field(map, int)"] {
        assert!(
            out.stderr
                .contains(&format!("fast tier: {compiled} compiled in")),
            "{}",
            out.stderr
        );
    }
    // Named by its parameters, not by types nobody passed.
    assert!(
        out.stderr
            .contains("fast tier: not compiled: shout(x): calls the native function `print`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("fast tier: closure(int) compiled"),
        "{}",
        out.stderr
    );
}

#[test]
fn top_level_loops_run_compiled_with_rhai_s_results_and_errors() {
    // `pool_map` in the header runs once, in Rhai; the loop over what it gave runs compiled.
    let source = "let total = #{};\n\
                  for counts in pool_map(|n| #{a: n, b: n * 2}, [1, 2, 3]) {\n    \
                      for word in counts.keys() { total[word] = (total[word] ?? 0) + counts[word]; }\n\
                  }\n\
                  print(total);\n\
                  let n = 1;\n\
                  for i in 0..100 { n *= 1000; }\n";
    let out = same_both_ways(source);
    out.assert_printed(&["#{\"a\": 6, \"b\": 12}"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("Multiplication overflow") && out.stderr.contains(":7:"),
        "{}",
        out.stderr
    );
    let script = Script::new(source);
    let out = common::mpscript(&["run", "--explain-fast", script.path.to_str().unwrap()]);
    for said in [
        "fast tier: loop at line 2 (on array, map) compiled",
        "fast tier: loop at line 7 (on int) compiled",
    ] {
        assert!(out.stderr.contains(said), "{}", out.stderr);
    }
    // A variable of a type the tier does not take keeps the loop in Rhai, and explain says so.
    let script = Script::new("let q = queue();\nfor i in 0..2 { q.put(i); }\nprint(q.get());\n");
    let out = common::mpscript(&["run", "--explain-fast", script.path.to_str().unwrap()]);
    out.assert_printed(&["0"]);
    assert!(
        out.stderr
            .contains("fast tier: not compiled: loop at line 2: uses `q`, a "),
        "{}",
        out.stderr
    );
}

#[test]
fn limits_and_time_limits_stop_compiled_loops() {
    let script =
        Script::new("fn spin(n) { let i = 0; while i >= 0 { i += n - n; } i }\nprint(spin(1));\n");
    let path = script.path.to_str().unwrap();
    let out = common::mpscript(&["run", "--max-operations", "100000", path]);
    assert!(out.stderr.contains("Too many operations"), "{}", out.stderr);
    let out = common::run(
        "fn spin(n) { let i = 0; while i >= 0 { i += n - n; } i }\n\
         try { pool_map(|x| spin(x), [1], #{ timeout: 0.3 }); } catch (e) { print(e); }\n",
    );
    assert!(
        out.stdout.contains("timed out after 0.3s"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
}

#[test]
fn ctrl_c_stops_a_compiled_loop_in_the_main_script() {
    let mut live = Live::start(
        "fn spin(n) { let i = 0; while i >= 0 { i += n - n; } i }\nprint(\"spinning\");\nspin(1);\n",
        &[],
    );
    assert_eq!(live.line(), "spinning");
    std::thread::sleep(Duration::from_millis(200));
    live.signal(libc::SIGINT);
    let (code, _, _) = live.finish(Duration::from_secs(5));
    assert_eq!(code, Some(130));
}
