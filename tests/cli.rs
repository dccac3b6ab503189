//! The command line: run, check, --help, --version, ARGV, shebang lines, miette reports.

mod common;

use common::{Script, mpscript, run};

#[test]
fn help_and_version() {
    let help = mpscript(&["--help"]);
    assert!(help.ok().contains("run"), "{}", help.stdout);
    assert!(help.stdout.contains("check"));
    let run_help = mpscript(&["run", "--help"]);
    assert!(run_help.ok().contains("--workers"));
    let version = mpscript(&["--version"]);
    assert_eq!(
        version.ok().trim(),
        format!("mpscript {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(mpscript(&["frobnicate"]).code, Some(2));
}

#[test]
fn argv_reaches_the_script_and_a_shebang_line_is_allowed() {
    let script =
        Script::new("#!/usr/bin/env -S mpscript run\nprint(ARGV);\nprint(type_of(ARGV));\n");
    let out = script.run(&["one", "--two", "3"]);
    out.assert_printed(&[r#"["one", "--two", "3"]"#, "array"]);
}

#[test]
fn closures_resolve_in_workers_when_the_script_has_a_shebang() {
    let script =
        Script::new("#!/usr/bin/env mpscript\nlet k = 3;\nprint(pool_map(|x| x * k, [1, 2]));\n");
    assert_eq!(script.run(&[]).ok(), "[3, 6]\n");
}

#[test]
fn a_runtime_error_is_a_report_with_file_line_column_and_caret() {
    let script = Script::named(
        "broken.rhai",
        "fn half(x) {\n    x / 0\n}\nprint(\"before\");\nhalf(4);\nprint(\"after\");\n",
    );
    let out = script.run(&[]);
    let err = out.fails_with(1);
    assert_eq!(out.stdout, "before\n");
    assert!(err.contains("Division by zero"), "{err}");
    assert!(err.contains("broken.rhai:2:7"), "{err}");
    assert!(err.contains("2 │     x / 0"), "{err}");
    assert!(err.contains("╰── here"), "{err}");
    assert!(err.contains("in call to 'half'"), "{err}");
}

#[test]
fn check_reports_syntax_errors_without_running() {
    let bad = Script::named("bad.rhai", "print(\"x\");\nlet y = (1 + ;\n");
    let out = mpscript(&["check", bad.path.to_str().unwrap()]);
    let err = out.fails_with(1);
    assert!(out.stdout.is_empty(), "check must not run the script");
    assert!(err.contains("Syntax error"), "{err}");
    assert!(err.contains("bad.rhai:2:14"), "{err}");
    let good = Script::new("print(\"never printed\");\nspawn(|| 1);\n");
    let out = mpscript(&["check", good.path.to_str().unwrap()]);
    assert_eq!(out.ok(), "");
}

#[test]
fn a_syntax_error_in_run_is_a_report_and_a_missing_file_is_an_error() {
    let out = run("let a = [1, 2;\n");
    assert!(out.fails_with(1).contains("test.rhai:1:"), "{}", out.stderr);
    let missing = mpscript(&["run", "/definitely/not/here.rhai"]);
    assert!(
        missing.fails_with(1).contains("not/here.rhai"),
        "{}",
        missing.stderr
    );
}

#[test]
fn spawn_is_an_ordinary_function_name() {
    assert_eq!(
        run("let p = spawn(|| 40 + 2); print(p.join());").ok(),
        "42\n"
    );
}
