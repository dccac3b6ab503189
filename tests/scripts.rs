//! Every example in `scripts/` runs through the real binary and prints exactly its `.out` file
//! (the `data_*` ones with the files, images and HTTP server they need: see `tests/data.rs`).

mod common;

use std::path::Path;

#[test]
fn every_example_script_prints_its_expected_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .expect("scripts/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("data_")
        })
        .collect();
    scripts.sort();
    assert!(
        scripts.len() >= 4,
        "expected the seed scripts, found {scripts:?}"
    );
    for script in scripts {
        let expected_path = script.with_extension("out");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no {}", script.display(), expected_path.display()));
        let run = common::run_file(&script, &[]);
        assert_eq!(
            run.ok(),
            expected,
            "{} printed something else\n--- stderr\n{}",
            script.display(),
            run.stderr
        );
    }
}

/// Each example is also an executable (`./scripts/primes.rhai`), through its shebang line.
#[cfg(unix)]
#[test]
fn every_example_script_is_executable_through_its_shebang() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for entry in std::fs::read_dir(&dir).expect("scripts/ exists") {
        let script = entry.expect("dir entry").path();
        if script.extension().is_none_or(|e| e != "rhai") {
            continue;
        }
        let text = std::fs::read_to_string(&script).unwrap();
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first == "#!/usr/bin/env -S mpscript run"
                || first.starts_with("#!/usr/bin/env -S mpscript run --"),
            "{}: {first}",
            script.display()
        );
        let mode = std::fs::metadata(&script).unwrap().permissions().mode();
        assert_ne!(mode & 0o111, 0, "{} is not executable", script.display());
    }
    let out = std::process::Command::new(dir.join("primes.rhai"))
        .arg("1000")
        .env("PATH", path)
        .output()
        .expect("the script runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Found 168 primes up to 1000\n"
    );
}

#[test]
fn primes_takes_its_limit_from_argv() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/primes.rhai");
    let run = common::run_file(&script, &["1000"]);
    assert_eq!(run.ok(), "Found 168 primes up to 1000\n");
}

/// The README's script examples are run as written, so the documentation cannot drift.
#[test]
fn every_rhai_example_in_the_readme_runs() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let blocks: Vec<&str> = readme
        .split("```rhai\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .collect();
    assert!(blocks.len() >= 4, "README lost its examples");
    for block in blocks {
        let run = common::run(block);
        assert_eq!(
            run.code,
            Some(0),
            "README example failed:\n{block}\n--- stderr\n{}",
            run.stderr
        );
    }
}

/// The README's embedding snippet is `examples/readme-host`, which CI builds as a crate of its own.
#[test]
fn the_readme_embedding_snippet_is_the_readme_host_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let snippet = readme
        .split("```rust,no_run\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has its embedding snippet");
    let host = std::fs::read_to_string(root.join("examples/readme-host/src/main.rs")).unwrap();
    assert_eq!(
        snippet, host,
        "README snippet and examples/readme-host/src/main.rs differ"
    );
}
