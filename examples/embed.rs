//! A host program that embeds mpscript: it registers its own Rust function, runs a script that
//! `pool_map`s that function across worker processes, and reads the result back as Rust values.
//!
//! `cargo run --example embed`

use std::collections::BTreeSet;

/// The host's native function: a stand-in for real work (a checksum of `n`'s decimal digits).
fn digit_checksum(n: i64) -> i64 {
    n.to_string()
        .bytes()
        .fold(7_i64, |acc, b| (acc * 31 + i64::from(b - b'0')) % 1_000_003)
}

fn host_functions(engine: &mut mpscript::rhai::Engine) {
    engine.register_fn("digit_checksum", digit_checksum);
}

const SCRIPT: &str = r#"
    // Runs in worker processes; digit_checksum is the host's Rust function.
    pool_map(|n| [pid(), digit_checksum(n)], 1..=1000, #{ workers: 2 })
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Workers are this very executable re-executed: they must stop here, with the same functions.
    let builder = mpscript::Runtime::builder().register(host_functions);
    builder.run_worker_if_requested();
    let runtime = builder.build();

    let pairs: Vec<mpscript::rhai::Array> = match runtime.eval::<mpscript::rhai::Array>(SCRIPT) {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|r| r.try_cast::<mpscript::rhai::Array>())
            .collect(),
        Err(e) => {
            eprintln!("{:?}", mpscript::report(&e));
            std::process::exit(e.exit_code());
        }
    };
    let workers: BTreeSet<i64> = pairs.iter().map(|p| p[0].as_int().unwrap_or(0)).collect();
    let checksums: Vec<i64> = pairs.iter().map(|p| p[1].as_int().unwrap_or(-1)).collect();

    let expected: Vec<i64> = (1..=1000).map(digit_checksum).collect();
    assert_eq!(
        checksums, expected,
        "the workers computed what the host computes"
    );
    assert!(
        !workers.contains(&i64::from(std::process::id())),
        "it ran in workers"
    );
    println!(
        "{} results from {} worker processes (not this process, {}); sum of checksums {}",
        checksums.len(),
        workers.len(),
        std::process::id(),
        checksums.iter().sum::<i64>()
    );
    Ok(())
}
