//! The command line: run, check, --help, --version, ARGV, shebang lines, miette reports.

mod common;

use common::{Script, mpscript, mpscript_fed, run};

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

/// Rhai's optimizer puts a constant's value in place of its name, and Rhai 1.27 then panics on an
/// assignment into an element of it; mpscript reports it as the error it is, before running.
#[test]
fn an_assignment_into_a_constant_is_a_report_not_a_panic() {
    let cases = [
        (
            "const m = #{};\nm[\"x\"] = 1;\n",
            "Cannot modify constant m",
            "constant.rhai:3:1",
        ),
        (
            "fn f(s) { const a = #{}; a[\"y\"] = s; a }\nprint(f(2));\n",
            "Cannot modify constant a",
            "constant.rhai:2:26",
        ),
    ];
    for (source, message, place) in cases {
        let script = Script::named("constant.rhai", &format!("print(\"never\");\n{source}"));
        let out = script.run(&[]);
        let err = out.fails_with(1);
        assert_eq!(out.stdout, "");
        assert!(err.contains(message), "{err}");
        assert!(err.contains(place), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
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

#[test]
fn everything_after_the_script_path_belongs_to_the_script() {
    let script = Script::new("print(ARGV);\n");
    let path = script.path.to_str().unwrap();
    let out = mpscript(&["run", path, "--help", "-j", "1", "--", "x"]);
    out.assert_printed(&[r#"["--help", "-j", "1", "--", "x"]"#]);
    let out = mpscript(&[
        "run",
        "-j",
        "1",
        "--max-operations",
        "100000",
        path,
        "-j",
        "2",
    ]);
    out.assert_printed(&[r#"["-j", "2"]"#]);
    let out = mpscript(&["run", "--workers=1", "--", path, "y"]);
    out.assert_printed(&[r#"["y"]"#]);
}

#[cfg(unix)]
#[test]
fn a_shebang_script_receives_its_own_flags() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new(common::BIN).parent().unwrap();
    let script = Script::new("#!/usr/bin/env -S mpscript run\nprint(ARGV);\n");
    std::fs::set_permissions(&script.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    let out = std::process::Command::new(&script.path)
        .args(["--help", "-j", "3"])
        .env("PATH", format!("{}:{path}", dir.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "[\"--help\", \"-j\", \"3\"]\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_script_can_come_from_standard_input() {
    let out = mpscript_fed(
        &["run", "-", "a", "b"],
        b"print(ARGV); print(pool_map(|x| x + 1, [1, 2]));",
    );
    out.assert_printed(&[r#"["a", "b"]"#, "[2, 3]"]);
    let piped = mpscript_fed(&[], b"print(\"piped\");");
    piped.assert_printed(&["piped"]);
    let bad = mpscript_fed(&["run", "-"], b"let x = ;");
    assert!(bad.fails_with(1).contains("<stdin>:1:9"), "{}", bad.stderr);
    let checked = mpscript_fed(&["check", "-"], b"let y = (1 + ;");
    assert!(
        checked.fails_with(1).contains("<stdin>:1:"),
        "{}",
        checked.stderr
    );
}

#[test]
fn a_byte_order_mark_is_accepted_and_bad_utf8_names_its_byte() {
    let bom = Script::new("\u{feff}let k = 2;\nprint(pool_map(|x| x * k, [1, 2]));\n");
    bom.run(&[]).assert_printed(&["[2, 4]"]);
    let latin1 = Script::new("");
    std::fs::write(&latin1.path, b"print(\"caf\xe9\");").unwrap();
    let out = latin1.run(&[]);
    let err = out.fails_with(1);
    assert!(
        err.contains("not UTF-8 text (byte 10") && err.contains("0xe9"),
        "{err}"
    );
}

#[test]
fn exit_keeps_the_low_eight_bits_of_its_code_as_a_shell_does() {
    for (code, status) in [(-1, 255), (300, 44), (3, 3), (256, 0)] {
        let out = run(&format!("exit({code});"));
        assert_eq!(out.code, Some(status), "exit({code}): {}", out.stderr);
    }
    let out = run(
        "let p = spawn(|| exit(-1)); try { p.join() } catch (e) { print(e) } print(p.exit_code);",
    );
    assert_eq!(out.lines()[1], "255", "{}", out.stderr);
    assert!(out.lines()[0].contains("exit(255)"), "{}", out.stdout);
}

#[test]
fn zero_workers_and_missing_modules_are_explained() {
    let script = Script::new("print(1);");
    let out = mpscript(&["run", "-j", "0", script.path.to_str().unwrap()]);
    assert!(
        out.fails_with(2).contains("a pool needs 1 worker or more"),
        "{}",
        out.stderr
    );
    let out = run("import \"helpers\" as h;");
    assert!(out.fails_with(1).contains("--module-dir"), "{}", out.stderr);
}
