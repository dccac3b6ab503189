use mpscript::rhai;

fn host_functions(engine: &mut rhai::Engine) {
    engine.register_fn("digit_checksum", |n: i64| n % 97);
}

fn main() {
    // The one rule: workers are this executable re-executed, so build the builder and let it turn
    // the process into a worker first, before anything with side effects.
    let builder = mpscript::Runtime::builder().register(host_functions);
    builder.run_worker_if_requested();
    let runtime = builder.build();

    let sums: rhai::Array = runtime
        .eval("pool_map(|n| digit_checksum(n), 1..=1000)")
        .unwrap_or_else(|e| panic!("{:?}", mpscript::report(&e)));
    println!("{} results", sums.len());
}
