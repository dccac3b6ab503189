//! Rhai is the oracle: every case runs compiled and in Rhai, and the two must agree (value and
//! type bit for bit; where Rhai raises an error the tier must hand the call back to Rhai).

use crate::locks::lock;
use proptest::{prelude::*, sample::select};
use rhai::{CallFnOptions, Dynamic, Engine, Scope};

use super::{Accelerated, Budget, Entry, FastTier, Mode};

/// An engine set up as mpscript's are (explicit limits, so debug and release builds agree).
fn engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(0, 0);
    engine
}

fn limits() -> Budget {
    Budget::of(&engine(), None, 1)
}

/// Runs `f(args)` both ways; panics on any disagreement. Returns whether it ran compiled.
fn check(script: &str, f: &str, args: Vec<Dynamic>) -> bool {
    check_on(&engine(), script, f, args)
}

/// [`check`] on `engine`.
fn check_on(engine: &Engine, script: &str, f: &str, mut args: Vec<Dynamic>) -> bool {
    let ast = engine
        .compile(script)
        .unwrap_or_else(|e| panic!("{script}\n{e}"));
    let tier = FastTier::new(
        &ast,
        engine,
        Mode {
            on: true,
            verify: false,
            explain: false,
        },
        false,
    );
    let compiled = tier.call(f, &[], &mut args, limits);
    let options = CallFnOptions::new().eval_ast(false);
    let rhai = engine.call_fn_with_options::<Dynamic>(options, &mut Scope::new(), &ast, f, args);
    match compiled {
        None => false,
        Some(compiled) => {
            // Stricter than verify mode: here Rhai runs at the same depth, so a stack overflow
            // against a compiled value is a difference too.
            if let (Ok(v), Err(e)) = (&compiled, &rhai) {
                panic!("{script}\ncompiled gave {v}, Rhai: {e}");
            }
            if let Err(e) = FastTier::verify(f, compiled, || rhai) {
                panic!("{script}\n{e}");
            }
            true
        }
    }
}

fn compiles(script: &str, f: &str, args: Vec<Dynamic>) {
    assert!(
        check(script, f, args),
        "expected {f} to run compiled:\n{script}"
    );
}

fn falls_back(script: &str, f: &str, args: Vec<Dynamic>) {
    assert!(
        !check(script, f, args),
        "expected {f} to run in Rhai:\n{script}"
    );
}

const PRIMES: &str = r#"
fn is_prime(n) {
    if n < 2 { return false; }
    let i = 2;
    while i * i <= n {
        if n % i == 0 { return false; }
        i += 1;
    }
    true
}
fn count(lim) { let c = 0; for n in 1..=lim { if is_prime(n) { c += 1; } } c }
"#;

#[test]
fn the_benchmark_kernels_compile_and_agree() {
    compiles(PRIMES, "count", vec![10_000.into()]);
    compiles(PRIMES, "is_prime", vec![97.into()]);
    let fib = "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }";
    compiles(fib, "fib", vec![20.into()]);
    let collatz = r#"
        fn steps(n) { let s = 0; while n != 1 { if n % 2 == 0 { n = n / 2; } else { n = 3 * n + 1; } s += 1; } s }
        fn total(lim) { let t = 0; for i in 1..lim { t += steps(i); } t }
    "#;
    compiles(collatz, "total", vec![2_000.into()]);
    let nested = "fn nested(n) { let s = 0; for i in 0..n { for j in 0..n { s += i * j; } } s }";
    compiles(nested, "nested", vec![100.into()]);
    let basel = "fn basel(n) { let s = 0.0; for k in 1..=n { s += 1.0 / (k * k).to_float(); } s }";
    compiles(basel, "basel", vec![10_000.into()]);
}

#[test]
fn errors_go_back_to_rhai_which_raises_them() {
    let f = "fn f(x, y) { x + y }";
    falls_back(f, "f", vec![i64::MAX.into(), 1.into()]);
    compiles(f, "f", vec![1.into(), 2.into()]);
    compiles(f, "f", vec![1.into(), 2.5.into()]);
    let overflows: &[(&str, i64, i64)] = &[
        ("-", i64::MIN, 1),
        ("*", i64::MIN, -1),
        ("/", i64::MIN, -1),
        ("/", 1, 0),
        ("%", i64::MIN, -1),
        ("%", 1, 0),
        ("**", 2, 64),
        ("**", 2, 1 << 40),
    ];
    for (op, x, y) in overflows {
        let f = format!("fn f(x, y) {{ x {op} y }}");
        falls_back(&f, "f", vec![(*x).into(), (*y).into()]);
    }
    falls_back("fn f(x) { -x }", "f", vec![i64::MIN.into()]);
    falls_back("fn f(x) { x.abs() }", "f", vec![i64::MIN.into()]);
    falls_back("fn f(x) { x.to_int() }", "f", vec![1e300.into()]);
    falls_back("fn f(x) { 2 ** x }", "f", vec![(-1).into()]);
    let deep = "fn deep(n) { if n == 0 { 0 } else { 1 + deep(n - 1) } }";
    compiles(deep, "deep", vec![30.into()]);
    compiles(deep, "deep", vec![63.into()]);
    falls_back(deep, "deep", vec![64.into()]);
    let wrapped = format!("{deep} fn wrap(n) {{ deep(n) }}");
    compiles(&wrapped, "wrap", vec![62.into()]);
    falls_back(&wrapped, "wrap", vec![63.into()]);
    falls_back(deep, "deep", vec![1000.into()]);
}

#[test]
fn rhai_semantics_that_differ_from_rust_are_kept() {
    let cases: &[(&str, Vec<Dynamic>)] = &[
        ("fn f(x, y) { x << y }", vec![1.into(), 64.into()]),
        ("fn f(x, y) { x << y }", vec![8.into(), (-2).into()]),
        ("fn f(x, y) { x >> y }", vec![(-8).into(), 100.into()]),
        ("fn f(x, y) { x % y }", vec![(-7).into(), 2.into()]),
        ("fn f(x, y) { x / y }", vec![(-7).into(), 2.into()]),
        ("fn f(x, y) { x == y }", vec![0.3.into(), 0.1.into()]),
        ("fn f(x) { x + 0.2 == 0.3 }", vec![0.1.into()]),
        ("fn f(x, y) { x < y }", vec![1.into(), 1.5.into()]),
        ("fn f(x, y) { x == y }", vec![1.into(), 1.0.into()]),
        ("fn f(x) { x == x }", vec![f64::NAN.into()]),
        ("fn f(x) { -x }", vec![0.0.into()]),
        ("fn f(x) { x ** 0.5 }", vec![2.into()]),
        ("fn f(x) { x.to_int() }", vec![(-2.7).into()]),
        ("fn f(x) { x.to_int() }", vec![f64::NAN.into()]),
        ("fn f(x, y) { x ^ y }", vec![true.into(), false.into()]),
        ("fn f(x, y) { x > y }", vec![true.into(), false.into()]),
        ("fn f(x) { let y = 1.0; y += x; y }", vec![2.into()]),
        (
            "fn f(x) { let x = x * 2; { let x = x + 1; } x }",
            vec![5.into()],
        ),
        ("fn f(x) { if x > 0 { 1 } else { 2 } }", vec![3.into()]),
        (
            "fn f(x) { let y = if x > 0 { 1.5 } else { 2.5 }; y }",
            vec![(-3).into()],
        ),
        (
            "fn f(x) { let n = 0; do { n += 1; } until n >= x; n }",
            vec![5.into()],
        ),
        (
            "fn f(x) { let n = 0; do { n += 1; } while n < x; n }",
            vec![0.into()],
        ),
        (
            "fn f(x) { let s = 0; for (v, i) in 10..x { s += v * i; } s }",
            vec![15.into()],
        ),
        (
            "fn f(x) { let s = 0; for v in 0..=x { if v % 2 == 0 { continue; } if v > 7 { break; } s += v; } s }",
            vec![20.into()],
        ),
        (
            "fn f(x) { let s = 0; for v in 5..x { s += v; } s }",
            vec![2.into()],
        ),
        (
            "fn f(x) { let n = 0; loop { n += 1; if n == x { return n * 10; } } }",
            vec![4.into()],
        ),
        ("fn f(x) { x > 1 && x < 5 || x == 9 }", vec![9.into()]),
        ("fn f(x) { !(x > 1) }", vec![0.into()]),
        (
            "fn f(x) { x.sqrt().floor() + x.ceiling() - x.round() }",
            vec![10.5.into()],
        ),
        ("fn f(x) { to_float(x) / 3 }", vec![10.into()]),
        ("fn f() { }", vec![]),
        ("fn f(x) { x }", vec![Dynamic::UNIT]),
        (
            "fn f(x) { x / 4 + x % 8 + (x - 3) / 2 }",
            vec![(-13).into()],
        ),
        ("fn f(x) { 3 * x + 1 - x * x / 2 }", vec![(-7).into()]),
    ];
    for (script, args) in cases {
        compiles(script, "f", args.clone());
    }
}

fn ints(values: &[i64]) -> Dynamic {
    values
        .iter()
        .map(|&v| Dynamic::from(v))
        .collect::<Vec<_>>()
        .into()
}

fn floats(values: &[f64]) -> Dynamic {
    values
        .iter()
        .map(|&v| Dynamic::from(v))
        .collect::<Vec<_>>()
        .into()
}

#[test]
fn arrays_of_numbers_are_indexed_measured_and_written() {
    let dot = "fn dot(a, b) { let s = 0.0; for i in 0..a.len() { s += a[i] * b[i]; } s }";
    compiles(
        dot,
        "dot",
        vec![floats(&[1.5, -2.0, 1e300]), floats(&[2.0, 0.5, 0.0])],
    );
    let total = "fn total(a) { let s = 0; for i in 0..len(a) { s += a[i]; } s }";
    compiles(total, "total", vec![ints(&[1, 2, 3, i64::MAX - 6])]);
    compiles(total, "total", vec![ints(&[])]);
    // Negative indexes count from the end, as far as the length.
    let ends = "fn ends(a, i) { a[i] * 1000 + a[-i - 1] }";
    for i in [0, 1, 2, -1, -3] {
        compiles(ends, "ends", vec![ints(&[7, 8, 9]), i.into()]);
    }
    // Writes change the callee's copy only, with the element type kept.
    let bump =
        "fn bump(a, n) { for i in 0..a.len() { a[i] += n; } a[-1] = a[0] * 2; a[1] + a[-1] }";
    compiles(bump, "bump", vec![ints(&[1, 2, 3]), 5.into()]);
    compiles(
        "fn f(a) { a[0] = a[1] / 2.0; a[0] }",
        "f",
        vec![floats(&[1.0, 3.0])],
    );
    // Element methods continue the chain.
    compiles(
        "fn f(a) { a[0].abs() + a[1].to_float() }",
        "f",
        vec![floats(&[-2.5, 1.0])],
    );
    compiles("fn f(a) { a.len().to_float() }", "f", vec![ints(&[1, 2])]);
}

#[test]
fn array_errors_and_other_arrays_stay_rhais() {
    let get = "fn get(a, i) { a[i] }";
    for i in [3, -4, i64::MIN, i64::MAX] {
        falls_back(get, "get", vec![ints(&[1, 2, 3]), i.into()]);
    }
    falls_back(get, "get", vec![ints(&[]), 0.into()]);
    falls_back(
        "fn f(a, i) { a[i] = 0; a[0] }",
        "f",
        vec![ints(&[1]), 1.into()],
    );
    falls_back("fn f(a) { a[0] + 1 }", "f", vec![ints(&[i64::MAX])]);
    let refused: &[(&str, Vec<Dynamic>)] = &[
        // Nested arrays, `?[`, an array passed to a function that Rhai's call would give it
        // unboxed.
        ("fn f(a) { a[0][0] }", vec![vec![ints(&[1])].into()]),
        ("fn g(a) { a[0] } fn f(a) { g(a) }", vec![ints(&[1])]),
        ("fn f(a) { a?[0] }", vec![ints(&[1])]),
    ];
    for (script, args) in refused {
        falls_back(script, "f", args.clone());
    }
    // Arrays the unboxed form cannot take run as arrays of any values (a host's i32 included).
    let boxed: &[(&str, Vec<Dynamic>)] = &[
        (
            "fn f(a) { a[1] }",
            vec![vec![Dynamic::from(1.0), Dynamic::from(1_i32)].into()],
        ),
        ("fn f(a) { a[0] }", vec![vec![Dynamic::from("x")].into()]),
        ("fn f(a) { a[0] = 1.5; a }", vec![ints(&[1])]),
        ("fn f(a) { a }", vec![ints(&[1])]),
        ("fn f(a) { let b = a; b[0] }", vec![ints(&[1])]),
        // An array passed on is the callee's own copy.
        (
            "fn g(a) { a[0] = \"x\"; a[0] } fn f(a) { [g(a), a[0]] }",
            vec![ints(&[1])],
        ),
    ];
    for (script, args) in boxed {
        compiles(script, "f", args.clone());
    }
}

#[test]
fn division_by_powers_of_two_rounds_as_rhai_does() {
    for x in [
        i64::MIN,
        i64::MIN + 1,
        -9,
        -8,
        -7,
        -1,
        0,
        1,
        7,
        8,
        9,
        i64::MAX,
    ] {
        for (op, k) in [
            ("/", 2i64),
            ("%", 2),
            ("/", 8),
            ("%", 8),
            ("/", 1 << 62),
            ("%", 1 << 62),
        ] {
            compiles(&format!("fn f(x) {{ x {op} {k} }}"), "f", vec![x.into()]);
        }
        compiles(
            "fn f(x) { if x % 2 == 0 { x / 2 } else { x % 4 } }",
            "f",
            vec![x.into()],
        );
    }
}

#[test]
fn copied_calls_keep_values_errors_and_limits() {
    let cases: &[(&str, Vec<Dynamic>)] = &[
        // Several parameters and locals: the copy's slots must not overlap the caller's.
        (
            "fn g(x, y) { let d = x - y; d * d + x } fn f(x) { let y = 3; g(x, y) + g(y, x) + y }",
            vec![7.into()],
        ),
        // Copies in argument positions, nested.
        (
            "fn g(x, y) { x * 2 + y } fn f(x) { g(g(x, 1), g(1, x)) }",
            vec![5.into()],
        ),
        // Float and bool results.
        (
            "fn g(x) { x / 2.0 } fn f(x) { g(x.to_float()) + g(1.0) }",
            vec![3.into()],
        ),
        (
            "fn g(x) { x % 2 == 0 } fn f(x) { g(x) && !g(x + 1) }",
            vec![4.into()],
        ),
        // A callee with a loop or a return stays a call.
        (
            "fn g(x) { let s = 0; for i in 0..x { s += i; } s } fn f(x) { g(x) * 2 }",
            vec![9.into()],
        ),
        (
            "fn g(x) { if x > 0 { return 1; } 0 } fn f(x) { g(x) + g(-x) }",
            vec![2.into()],
        ),
        // An error inside a copy: Rhai reports it, call chain included.
        (
            "fn g(x) { x * x } fn f(x) { g(x) + 1 }",
            vec![i64::MAX.into()],
        ),
        ("fn g(x) { 10 / x } fn f(x) { g(x) }", vec![0.into()]),
    ];
    for (script, args) in cases {
        check(script, "f", args.clone());
    }
    compiles(
        "fn g(x, y) { x * 2 + y } fn f(x) { g(g(x, 1), g(1, x)) }",
        "f",
        vec![5.into()],
    );
    // Copies count call levels as calls do.
    let fib = "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }";
    compiles(fib, "fib", vec![20.into()]);
    let chain = "fn a(n) { b(n) + 1 } fn b(n) { c(n) + 1 } fn c(n) { d(n) + 1 }
                 fn d(n) { if n == 0 { 0 } else { a(n - 1) } }";
    compiles(chain, "a", vec![15.into()]);
    falls_back(chain, "a", vec![16.into()]);
}

#[test]
fn mutual_recursion_settles_its_types() {
    let script = "fn even(n) { if n == 0 { true } else { odd(n - 1) } }
                  fn odd(n) { if n == 0 { false } else { even(n - 1) } }";
    for n in 0..12 {
        compiles(script, "even", vec![n.into()]);
    }
    let halves = "fn h(x) { if x < 1.0 { x } else { h(x / 2.0) } }";
    compiles(halves, "h", vec![100.0.into()]);
}

#[test]
fn what_the_tier_does_not_compile_runs_in_rhai() {
    let refused: &[(&str, Vec<Dynamic>)] = &[
        ("fn f(x) { let s = 0; s += 0.5; s }", vec![1.into()]),
        ("fn f(x) { if x > 0 { 1 } else { 2.0 } }", vec![1.into()]),
        ("fn f(x) { if x > 0 { return 1; } 2.0 }", vec![1.into()]),
        ("fn f(x) { print(x); x }", vec![1.into()]),
        ("fn f(x) { if x { 1 } else { 2 } }", vec![1.into()]),
        ("fn f(x) { x.sqrt() }", vec![4.into()]),
        ("fn f(x) { throw x; }", vec![1.into()]),
        ("fn f(x) { let g = |y| y + x; g.call(1) }", vec![1.into()]),
    ];
    for (script, args) in refused {
        falls_back(script, "f", args.clone());
    }
}

#[test]
fn an_operation_limit_stops_a_compiled_loop() {
    let engine = engine();
    let ast = engine.compile("fn spin() { loop { } }").unwrap();
    let tier = FastTier::new(
        &ast,
        &engine,
        Mode {
            on: true,
            ..Mode::default()
        },
        false,
    );
    let limits = Budget {
        max_operations: 100_000,
        ..limits()
    };
    let err = tier
        .call("spin", &[], &mut [], || limits)
        .unwrap()
        .unwrap_err();
    assert_eq!(err.to_string(), "Too many operations");
}

#[test]
fn a_stop_request_ends_a_compiled_loop() {
    let engine = engine();
    let ast = engine
        .compile("fn spin(n) { let i = 0; while true { i += 1; } i }")
        .unwrap();
    let tier = FastTier::new(
        &ast,
        &engine,
        Mode {
            on: true,
            ..Mode::default()
        },
        false,
    );
    let started = std::time::Instant::now();
    let limits = Budget {
        stop: Some(std::sync::Arc::new(move || {
            (started.elapsed().as_millis() > 50).then_some(crate::stop::Stop::Interrupted(2))
        })),
        ..limits()
    };
    let err = tier
        .call("spin", &[], &mut [1.into()], || limits)
        .unwrap()
        .unwrap_err();
    assert_eq!(
        crate::stop::stop_reason(&err),
        Some(crate::stop::Stop::Interrupted(2))
    );
}

/// Runs `script` as mpscript runs a script, its top-level loops compiled where they can be, and
/// in plain Rhai: the result or error, and every variable after, must agree. Answers how many
/// loops ran compiled.
fn check_top_level(script: &str) -> usize {
    let plain = engine();
    let ast = plain
        .compile(script)
        .unwrap_or_else(|e| panic!("{script}\n{e}"));
    let program = Accelerated::new(
        ast.clone(),
        &plain,
        std::sync::Arc::new(|| None),
        std::sync::Arc::new(|_| {}),
        false,
    );
    let mut fast = engine();
    program.install(&mut fast);
    let run = |engine: &Engine, ast: &rhai::AST| {
        let mut scope = Scope::new();
        let result = engine.eval_ast_with_scope::<Dynamic>(&mut scope, ast);
        let variables: Vec<_> = scope.iter().collect();
        format!("{result:?}\n{variables:?}")
    };
    assert_eq!(run(&fast, &program.running), run(&plain, &ast), "{script}");
    let specs = lock(&program.tier.specs);
    let tried = specs.iter().filter(|(name, _)| name.starts_with("loop at"));
    let entries = tried.flat_map(|(_, tried)| tried.iter().map(|(_, entry)| entry));
    entries.filter(|e| matches!(e, Entry::Compiled(_))).count()
}

/// Whether `f(m)`, lowered for a map, reads `m[k]` in its loop over `m.keys()` from the entry.
fn reads_entries(script: &str) -> bool {
    use super::{ir::Stmt, lower, source::Source};
    let engine = engine();
    let ast = engine.compile(script).unwrap();
    let key = ("f".to_string(), vec![super::Ty::Map]);
    let lowered = lower::lower(&Source::new(&ast, &engine), &key).unwrap();
    let body = &lowered.functions[lowered.entry].body;
    body.stmts
        .iter()
        .any(|s| matches!(s, Stmt::ForEach { value: Some(_), .. }))
}

#[test]
fn a_loop_over_a_map_s_keys_reads_each_value_from_its_entry() {
    assert!(reads_entries(
        "fn f(m) { let t = 0; for k in m.keys() { t += m[k] * m[k]; } t }"
    ));
    assert!(!reads_entries(
        "fn f(m) { let t = 0; for k in m.keys() { m[k] = 1; t += m[k]; } t }"
    ));
    assert!(!reads_entries(
        "fn f(m) { let t = 0; for k in m.keys() { k = \"a\"; t += m[k]; } t }"
    ));
    assert!(!reads_entries(
        "fn f(m) { let t = 0; for k in m.keys() { t += k.len(); } t }"
    ));
}

#[test]
fn top_level_loops_run_compiled_and_leave_rhai_s_variables() {
    let merged = check_top_level(
        r#"
        let parts = [#{a: 1, b: 2}, #{b: 5, c: 1}, #{}];
        let total = #{};
        for counts in parts {
            for word in counts.keys() { total[word] = (total[word] ?? 0) + counts[word]; }
        }
        let n = 0; let text = "";
        while n < 5 { n += 1; if n == 2 { continue; } text += `${n};`; }
        do { n -= 2; } until n < 0;
        if n < 0 { for i in 0..3 { n += i; } }
        { let inner = 10; for i in 0..inner { if i > 3 { break; } inner += 1; } }
        let m = #{z: 0}; let copy = #{}; let seen = [];
        for i in 0..6 { m[`k${i % 3}`] = i; m["z"] = m.z + (m[`k${i % 2}`] ?? 10); seen.push(m.keys()); copy = m; }
        total
        "#,
    );
    // Verify mode runs the outer loop in Rhai too, which then compiles the inner one.
    assert!(merged >= 6, "{merged}");
    // `sq` is compiled into the loop; `fixed` is a constant the loop only reads.
    let calls = check_top_level(
        "fn sq(x) { x * x }\nconst fixed = [1, 2, 3];\nlet t = 0;\nfor i in 0..10 { t += sq(i) + fixed.len(); }\nt",
    );
    assert_eq!(calls, 1);
}

#[test]
fn a_top_level_loop_rhai_must_run_gives_rhai_s_values_and_errors() {
    let cases = [
        // Overflow midway: Rhai runs the loop again from the variables as they were.
        (
            "let m = #{}; let n = 0;\nfor i in 0..10 { m[`k${i}`] = i; n += i; if i == 5 { n += 9223372036854775807; } }",
            1,
        ),
        (
            "let m = #{}; let n = 0;\ntry { for i in 0..10 { m[`k${i}`] = i; n += i * 9223372036854775807; } } catch (e) { n = -1; }\nn",
            1,
        ),
        ("const c = [5];\nfor i in 0..3 { c.push(i); }", 1),
        (
            "let total = 0; let f = || total;\nfor i in 0..5 { total += i; }\nf.call()",
            0,
        ),
        ("for i in 0..10 { if i == 3 { return i; } }\n99", 0),
        (
            "let x = 1; let y = 0;\nfor i in 0..3 { let x = i * 2; y += x; }\nx + y",
            1,
        ),
        ("for i in 0..3 { zz += 1; }", 0),
        ("let x = 1;\nfor i in 0..3 { x = \"a\"; }\nx", 0),
        ("let q = [1, 2];\nfor i in 0..3 { q.push(i); q[9] = 1; }", 1),
        // A header the tier does not compile (`drain`) is evaluated once, by Rhai, whether the
        // loop then runs compiled or not.
        (
            "let q = [1, 2, 3, 4]; let t = 0;\nfor x in q.drain(0, 2) { t += x; }\n[q, t]",
            1,
        ),
        (
            "let q = [1, 2, 3]; let t = 0;\nfor x in q.drain(0, 2) { t += x * 9223372036854775807; }",
            1,
        ),
        (
            "let q = [1, 2, 3]; let t = [];\nfor x in q.drain(0, 2) { t.push(x); print(x); }\n[q, t]",
            0,
        ),
    ];
    // How many loops compiled: those that could not ran in Rhai from the start.
    for (case, compiled) in cases {
        assert_eq!(check_top_level(case), compiled, "{case}");
    }
}

const INT_OPS: &[&str] = &["+", "-", "*", "/", "%", "**", "<<", ">>", "&", "|", "^"];
const FLOAT_OPS: &[&str] = &["+", "-", "*", "/", "%", "**"];
const COMPARISONS: &[&str] = &["==", "!=", "<", "<=", ">", ">="];

/// Random typed functions: int and float expressions over two parameters, with lets, a loop and
/// `if` expressions, at edge values.
fn int_expr(depth: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(2),
            Just(63),
            Just(64),
            Just(i64::MAX),
            Just(i64::MIN + 1),
            any::<i8>().prop_map(i64::from),
        ]
        .prop_map(|k| if k < 0 {
            format!("({k})")
        } else {
            k.to_string()
        }),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let inner = int_expr(depth - 1);
    prop_oneof![
        leaf,
        (inner.clone(), select(INT_OPS), inner.clone())
            .prop_map(|(x, op, y)| format!("({x} {op} {y})")),
        inner.clone().prop_map(|x| format!("(-{x})")),
        (bool_expr(depth - 1), inner.clone(), inner.clone())
            .prop_map(|(c, x, y)| format!("(if {c} {{ {x} }} else {{ {y} }})")),
        float_expr(depth - 1).prop_map(|x| format!("({x}).to_int()")),
    ]
    .boxed()
}

fn float_expr(depth: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("a.to_float()".to_string()),
        Just("0.0".to_string()),
        Just("(-0.0)".to_string()),
        Just("0.1".to_string()),
        Just("1e300".to_string()),
        (-1000i32..1000).prop_map(|k| format!("({k}.5)")),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let inner = float_expr(depth - 1);
    prop_oneof![
        leaf,
        (
            inner.clone(),
            select(FLOAT_OPS),
            prop_oneof![inner.clone(), int_expr(depth - 1)]
        )
            .prop_map(|(x, op, y)| format!("({x} {op} {y})")),
        inner.prop_map(|x| format!("({x}).abs()")),
    ]
    .boxed()
}

fn bool_expr(depth: u32) -> BoxedStrategy<String> {
    let cmp = select(COMPARISONS);
    prop_oneof![
        (int_expr(depth), cmp.clone(), int_expr(depth))
            .prop_map(|(x, op, y)| format!("({x} {op} {y})")),
        (float_expr(depth), cmp, int_expr(depth)).prop_map(|(x, op, y)| format!("({x} {op} {y})")),
    ]
    .boxed()
}

/// `f(a, b)` with a loop, and a small `g(a, b)` it calls, which the tier copies into `f`.
fn function() -> impl Strategy<Value = String> {
    let f = (int_expr(3), int_expr(2), bool_expr(1), 0i64..6);
    let g = (int_expr(2), int_expr(1), int_expr(1), int_expr(1));
    (f, g).prop_map(|((value, step, cond, n), (t, u, x, y))| {
        format!(
            "fn g(a, b) {{ let t = {t}; t ^ {u} }}
             fn f(a, b) {{ let acc = 0; for i in 0..{n} {{ if {cond} {{ acc = acc ^ i; }} let b = {step}; }} (acc + {value}) ^ g({x}, {y}) }}"
        )
    })
}

/// Top-level code over variables `a` and `b`: a loop that changes an int, a string and a map.
fn top_level_loop() -> impl Strategy<Value = String> {
    (int_expr(2), int_expr(2), bool_expr(1), 0i64..6).prop_map(|(value, step, cond, n)| {
        format!(
            "let acc = 0; let m = #{{}}; let s = \"\";
             for i in 0..{n} {{ if {cond} {{ acc = acc ^ i; s += `${{i}},`; }} let k = `k${{i % 3}}`; m[k] = (m[k] ?? 0) + {step}; let b = {value}; }}
             acc"
        )
    })
}

/// `f(v, a, b)` over an array of ints: every element rewritten in a loop, then read at random
/// indexes (often out of bounds, which Rhai must report).
fn array_function() -> impl Strategy<Value = String> {
    let index = || {
        prop_oneof![
            select(&["0", "1", "(-1)", "(-2)", "3", "(a % 4)", "(v.len() - 1)"][..])
                .prop_map(String::from),
            int_expr(1),
        ]
    };
    (int_expr(2), index(), index()).prop_map(|(w, i, j)| {
        format!(
            "fn f(v, a, b) {{ let acc = v.len(); for i in 0..v.len() {{ v[i] = v[i] ^ {w}; acc += v[i] % 1000; }} acc ^ v[{i}] ^ v[{j}] }}"
        )
    })
}

/// Text for the string fuzzer: words, numbers, separators, non-ASCII and blank runs.
fn text() -> impl Strategy<Value = String> {
    let piece = select(
        &[
            "a", "bb", "Ab", "42", "-7", " ", "  ", ",", ",,", "\n", "é", "日本", "x1", "+3", "",
            "INFO", "3.5", "1e3",
        ][..],
    );
    proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

/// A string or char expression over `s` (a string), `w` (a string taken from `lines`) and `a`.
fn str_expr(depth: u32) -> BoxedStrategy<String> {
    let leaf =
        select(&["s", "w", "\"a,b\"", "\"\"", "\" x \"", "`${a}`"][..]).prop_map(String::from);
    if depth == 0 {
        return leaf.boxed();
    }
    let inner = str_expr(depth - 1);
    let pat = || {
        prop_oneof![
            inner.clone(),
            select(&["','", "' '", "'é'", "\",\"", "\" \""][..]).prop_map(String::from)
        ]
    };
    let small = || select(&["0", "1", "2", "(-1)", "(-3)", "a", "(a % 5)", "100"][..]);
    prop_oneof![
        leaf,
        (inner.clone(), inner.clone()).prop_map(|(x, y)| format!("({x} + {y})")),
        (inner.clone(), int_expr(0)).prop_map(|(x, y)| format!("({x} + {y})")),
        (inner.clone(), small(), small()).prop_map(|(x, i, n)| format!("{x}.sub_string({i}, {n})")),
        (inner.clone(), small()).prop_map(|(x, i)| format!("{x}.sub_string({i})")),
        inner.clone().prop_map(|x| format!("{x}.to_upper()")),
        inner.clone().prop_map(|x| format!("{x}.to_lower()")),
        (inner.clone(), int_expr(0)).prop_map(|(x, y)| format!("`<${{{x}}}|${{{y}}}>`")),
        (inner.clone(), pat(), small()).prop_map(|(x, p, i)| format!(
            "{{ let t = {x}.split({p}); if t.len() > 0 {{ t[{i} % t.len()] }} else {{ \"\" }} }}"
        )),
        (inner.clone(), small()).prop_map(|(x, i)| format!(
            "{{ let t = {x}; if t.len() > 0 {{ t[{i} % t.len()].to_string() }} else {{ \"-\" }} }}"
        )),
    ]
    .boxed()
}

/// `f(s, lines, a)`: string natives, a map counting words, `??`, `switch`, and a char scan.
fn string_function() -> impl Strategy<Value = String> {
    let test = select(&["contains", "starts_with", "ends_with", "index_of"][..]);
    (str_expr(2), str_expr(1), test, str_expr(1), str_expr(1)).prop_map(|(x, y, t, p, key)| {
        format!(
            "fn f(s, lines, a) {{
                let counts = #{{}};
                let acc = \"\";
                for w in lines {{
                    let k = {key};
                    counts[k] = (counts[k] ?? 0) + 1;
                    let v = {x};
                    v.trim();
                    acc += v.len();
                    switch k {{ \"a\" => acc += \"!\", \"\" => {{ acc += \"0\"; }} _ => {{}} }}
                    acc += `${{({y}).{t}({p})}};`;
                }}
                let n = 0;
                for c in s {{ if c >= '0' && c <= '9' {{ n += 1; }} }}
                let total = 0;
                for v in counts.values() {{ total += v; }}
                let p = s;
                p.replace(\",\", \";\");
                [acc, n, total, counts.keys().len(), p]
            }}"
        )
    })
}

/// `f(a)` over an array of records: one to three of `filter`, `map`, `sort`, `all`/`some`, with
/// closures drawn from consistent, inconsistent and erroring ones, then a result that shows the
/// order.
fn closure_function() -> impl Strategy<Value = String> {
    let step = select(
        &[
            ".filter(|r| (r.score ?? 0) >= 40)",
            ".filter(|r, i| i % 3 != 1)",
            ".filter(|r| r.name.contains(\"b\"))",
            ".filter(|r| r.score)",
            ".map(|r| #{id: r.id, score: (r.score ?? 0) * 2, name: r.name})",
            ".map(|r, i| #{id: i, score: r.id, name: `${r.name}${i}`})",
            ".sort(|a, b| a.score - b.score)",
            ".sort(|a, b| b.id - a.id)",
            ".sort(|a, b| a.score < b.score)",
            ".sort(|a, b| (b.score ?? 0) - (a.score ?? 0))",
            ".sort(|a, b| if a.score == b.score { a.id - b.id } else { b.score - a.score })",
            ".sort(|a, b| a.name > b.name)",
            ".sort(|a, b| 0)",
            // Captured variables (`k` and `tag` are the function's locals).
            ".filter(|r| (r.score ?? 0) >= k)",
            ".filter(|r| r.name.contains(tag))",
            ".sort(|a, b| (a.score ?? k) - (b.score ?? k))",
            ".map(|r| #{id: r.id, score: (r.score ?? 0) + k, name: `${tag}${r.name}`})",
        ][..],
    );
    let end = select(
        &[
            "v.map(|r| r.id)",
            "v.reduce(|t, r| t + (r.score ?? 0), 0)",
            "[v.all(|r| r.id >= 0), v.some(|r| r.score == 50), v.len()]",
            "v.reduce(|t, r| `${t ?? \"\"}${r.name},`)",
        ][..],
    );
    (proptest::collection::vec(step, 1..4), end).prop_map(|(steps, end)| {
        let steps: String = steps
            .iter()
            .map(|s| match s.strip_prefix(".sort") {
                Some(sort) => format!("v.sort{sort};"),
                None => format!("v = v{s};"),
            })
            .collect();
        format!("fn f(a) {{ let k = 40; let tag = \"b\"; let v = a; {steps} {end} }}")
    })
}

/// Records `#{id, score, name}`: scores repeat, some are missing or not numbers.
fn records() -> impl Strategy<Value = Dynamic> {
    let score = prop_oneof![
        8 => (0_i64..100).prop_map(|s| Some(Dynamic::from(s / 10 * 10))),
        1 => Just(None),
        1 => Just(Some(Dynamic::from("x"))),
    ];
    let name = select(&["ab", "b", "cab", "", "é"][..]);
    proptest::collection::vec((score, name), 0..12).prop_map(|items| {
        let records = items.into_iter().enumerate().map(|(id, (score, name))| {
            let mut m = rhai::Map::new();
            m.insert("id".into(), (id as i64).into());
            m.insert("name".into(), name.into());
            if let Some(score) = score {
                m.insert("score".into(), score);
            }
            Dynamic::from_map(m)
        });
        Dynamic::from_array(records.collect())
    })
}

fn arg() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(63),
        Just(64),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i16>().prop_map(i64::from),
        any::<i64>(),
    ]
}

/// Reports every 1,000 cases of a fuzzer (`kind`) how many ran compiled (the rest overflowed, went
/// out of bounds or divided by zero, and ran in Rhai).
fn count_coverage(kind: &'static str, compiled: bool) {
    use std::{collections::HashMap, sync::Mutex};
    static COUNTS: Mutex<Option<HashMap<&str, (usize, usize)>>> = Mutex::new(None);
    let mut counts = lock(&COUNTS);
    let (runs, hits) = counts.get_or_insert_default().entry(kind).or_default();
    *runs += 1;
    *hits += usize::from(compiled);
    if *runs % 1000 == 0 {
        eprintln!("fast tier fuzzer ({kind}): {hits} of {runs} calls ran compiled");
    }
}

/// 300 cases from a fixed seed unless `PROPTEST_CASES` / `PROPTEST_RNG_SEED` say otherwise.
fn fuzz_config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 300;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(0x6d70_7363_7269_7074);
    }
    config
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn random_typed_functions_agree_with_rhai(f in function(), a in arg(), b in arg()) {
        let compiled = check(&f, "f", vec![a.into(), b.into()]);
        count_coverage("scalars", compiled);
    }

    #[test]
    fn random_string_functions_agree_with_rhai(
        f in string_function(),
        text in text(),
        a in arg(),
    ) {
        let lines: Vec<Dynamic> = text.split('\n').map(|l| Dynamic::from(l.to_string())).collect();
        let compiled = check(&f, "f", vec![text.into(), lines.into(), a.into()]);
        count_coverage("strings", compiled);
    }

    #[test]
    fn random_closures_agree_with_rhai(f in closure_function(), a in records()) {
        let compiled = check(&f, "f", vec![a]);
        count_coverage("closures", compiled);
    }

    #[test]
    fn random_top_level_loops_agree_with_rhai(code in top_level_loop(), a in arg(), b in arg()) {
        let compiled = check_top_level(&format!("let a = {a}; let b = {b};\n{code}"));
        count_coverage("top-level loops", compiled > 0);
    }

    #[test]
    fn random_array_functions_agree_with_rhai(
        f in array_function(),
        v in proptest::collection::vec(arg(), 0..6),
        a in arg(),
        b in arg(),
    ) {
        let compiled = check(&f, "f", vec![ints(&v), a.into(), b.into()]);
        count_coverage("arrays", compiled);
    }
}

/// Closures given to `map`, `filter`, `reduce`, `sort`, `all` and `some`, and script calls that
/// pass and return heap values, over arrays of mixed values: both ways, and they must agree.
#[test]
fn closures_and_calls_with_heap_values_agree_with_rhai() {
    let cases: &[&str] = &[
        "fn f(a) { a.map(|v| v * 2) }",
        "fn f(a) { a.map(|v, i| `${i}:${v}`) }",
        "fn f(a) { a.filter(|v| v > 2) }",
        "fn f(a) { a.filter(|v| v) }",
        "fn f(a) { a.filter(|v, i| i % 2 == 1) }",
        "fn f(a) { a.reduce(|r, v| (r ?? 0) + v) }",
        "fn f(a) { a.reduce(|r, v, i| r + i, 10) }",
        "fn f(a) { let b = a; b.sort(|x, y| x - y); b }",
        "fn f(a) { let b = a; b.sort(|x, y| x < y); [b, a] }",
        "fn f(a) { let b = a; b.sort(|x, y| y.score - x.score); b }",
        "fn f(a) { let b = a; b.sort(|x, y| \"text\"); b }",
        "fn f(a) { [a.all(|v| v != 1), a.some(|v| v == 1), a.all(|v| 1)] }",
        "fn f(a) { a.filter(|r| (r.score ?? 0) >= 5).map(|r| r.id) }",
        "fn f(a) { a.map(|v| { v += 1; v }) }",
        "fn f(a) { let b = a; b.sort(|x, y| y - x); b.reduce(|r, v| `${r}${v},`, \"\") }",
        "fn g(x, s) { s + x.len() } fn f(a) { [g(a, \"n\"), g(\"abc\", \"s\")] }",
        "fn tail(a) { a.extract(1) } fn f(a) { [tail(a), a.extract(-2, 1), a.extract(0, 100), a.extract(9)] }",
        "fn big(v) { v > 2 } fn f(a) { a.filter(Fn(\"big\")) }",
        "fn label(r) { `#${r}` } fn f(a) { a.map(|v| label(v)) }",
        // Small callees that return strings (copied in place unless they return heap values).
        "fn dash(n) { \"-\" + n } fn f(a) { dash(a.len()) + dash(1) }",
        "fn xs(n) { if n == 0 { \"\" } else { \"x\" + xs(n - 1) } } fn f(a) { xs(a.len()) }",
        "fn f(a) { let e = []; e.sort(|x, y| 1); a.map(|v| [v].map(|w| w)) }",
        // A function that changes its parameter changes a copy, never the caller's element.
        "fn f(a) { let b = a; b.sort(|x, y| { let c = x; c.id = 0; y.id - c.id }); [a, b] }",
        "fn g(m) { m.id = 100; m.id } fn f(a) { let b = a; b.sort(|x, y| g(x) - g(y)); [a, b] }",
        "fn f(a) { [a.map(|v| { v.id = 0; v }), a] }",
        "fn f(a) { [a.filter(|r| { r.score = 1; true }), a] }",
        "fn f(a) { let b = a; b.sort(|x, y| { x += 1; y - x }); [a, b] }",
        "fn f(a) { [a.map(|v| v), a.reduce(|r, v| v, 0), a] }",
        // Arrays of any values passed to functions that run on unboxed numbers: unboxed at the
        // call (floats, ints, one of each), or passed as they are when they hold other values.
        "fn dot(x, y) { let s = 0.0; for i in 0..x.len() { s += x[i] * y[i]; } s } fn f(a) { let b = []; for v in a { b.push(v * 1.5); } [dot(b, b), dot(b, [2.0, 4.0, 1.0]), dot([0.5], a)] }",
        "fn total(x) { let s = 0; for i in 0..x.len() { s += x[i]; } s } fn f(a) { let c = a; c.push(1); [total(a), total(c), total([]), total([2.5])] }",
        "fn zero(x) { x[0] = 0; x[0] + x.len() } fn scaled(x, k, s) { let t = 0; for i in 0..x.len() { t += x[i] * k; } t + s.len() } fn f(a) { let b = a; b.push(2); [zero(b), b, scaled(b, 3, \"ab\"), scaled(a, 2, \"\")] }",
        // Closures that capture variables: scalars, strings, maps, the array itself.
        "fn f(a) { let k = 2; a.filter(|v| v > k) }",
        "fn f(a) { let k = 2; let t = \"x\"; a.map(|v| `${t}${v + k}`) }",
        "fn f(a) { let lim = 5; let b = a; b.sort(|x, y| (x - y) * lim); b }",
        "fn f(a) { let w = #{k: 1}; [a.map(|v| w.k + v), w] }",
        "fn f(a) { let n = 1; let r = a.reduce(|s, v| s + v * n, 0); n += 1; [r, n] }",
        "fn f(a) { let m = #{id: 3}; a.filter(|r| r.id != m.id).map(|r, i| r.id + m.id + i) }",
    ];
    let records = |scores: &[Dynamic]| -> Dynamic {
        let items = scores.iter().enumerate().map(|(id, score)| {
            let mut m = rhai::Map::new();
            m.insert("id".into(), (id as i64).into());
            if !score.is_unit() {
                m.insert("score".into(), score.clone());
            }
            Dynamic::from_map(m)
        });
        Dynamic::from_array(items.collect())
    };
    let inputs = [
        ints(&[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]),
        ints(&[]),
        ints(&[7]),
        Dynamic::from_array(vec!["b".into(), "a".into(), "c".into()]),
        Dynamic::from_array(vec![1.into(), "x".into(), 2.5.into(), Dynamic::UNIT]),
        records(&[5.into(), 9.into(), 5.into(), 1.into()]),
        records(&[5.into(), Dynamic::UNIT, 9.into()]),
    ];
    // Sort keys whose differences overflow (Rhai's error), and big ones whose differences do not.
    let extremes = [
        ints(&[i64::MAX, 0, i64::MIN, 5]),
        records(&[
            (1_i64 << 61).into(),
            (-1_i64 << 61).into(),
            (1_i64 << 61).into(),
            3.into(),
        ]),
    ];
    for script in cases.iter().filter(|c| c.contains(".sort(")) {
        for input in &extremes {
            check(script, "f", vec![input.clone()]);
        }
    }
    let mut ran_compiled = 0;
    for script in cases {
        for input in &inputs {
            ran_compiled += usize::from(check(script, "f", vec![input.clone()]));
        }
    }
    assert!(
        ran_compiled >= cases.len() * inputs.len() / 2,
        "{ran_compiled} ran compiled"
    );
    compiles(cases[9], "f", vec![inputs[5].clone()]);
    compiles(cases[12], "f", vec![inputs[6].clone()]);
    for captures in cases.iter().filter(|c| c.contains("let k = 2")) {
        compiles(captures, "f", vec![inputs[0].clone()]);
    }
    // A constant cannot be sorted; a captured variable, `this` and a script `filter` stay Rhai's.
    let refused = [
        "fn f(a) { const b = [2, 1]; b.sort(|x, y| x - y); b }",
        "fn f(a) { let k = 0; a.filter(|v| { k += 1; v > k }); k }",
        "fn f(a) { let m = #{n: 0}; a.filter(|v| { m.n = v; true }); m }",
        "fn f(a) { a.filter(|v| a.len() > v) }",
        "fn f(a) { a.map(|| this * 2) }",
        "fn filter(a, b) { 1 } fn f(a) { a.filter(|v| true) }",
        "fn f(a) { a.reduce(|r| r) }",
    ];
    for script in refused {
        falls_back(script, "f", vec![ints(&[2, 1])]);
    }
}

/// Strings, characters, arrays of any values and maps, case by case: each runs both ways and must
/// agree; where Rhai raises an error the compiled call hands back to Rhai.
#[test]
fn strings_arrays_and_maps_agree_with_rhai() {
    let cases: &[&str] = &[
        "fn f(s) { s.len() + s.split(\",\").len() }",
        "fn f(s) { let t = s; t.trim(); t + \"|\" + s }",
        "fn f(s) { s.to_upper() + s.to_lower() }",
        "fn f(s) { let t = s; t.replace(\"a\", \"xy\"); t }",
        "fn f(s) { [s.contains(\"a\"), s.contains('b'), s.starts_with(\" \"), s.ends_with('d')] }",
        "fn f(s) { [s.index_of(\"b\"), s.index_of('日'), s.sub_string(1, 2), s.sub_string(-2)] }",
        "fn f(s) { [s[0], s[-1]] }",
        "fn f(s) { s[100] }",
        "fn f(s) { let n = 0; for c in s { if \"aeiou\".contains(c) { n += 1; } } n }",
        "fn f(s) { let n = 0; for (c, i) in s { if c == 'a' { n += i; } } n }",
        "fn f(s) { s.parse_int() }",
        "fn f(s) { s.parse_float() }",
        "fn f(s) { let out = \"\"; for i in 0..5 { out += `${i}:${s},${i * 1.5};`; } out }",
        "fn f(s) { let out = \"\"; out += 'c'; out += (); out += 1; out += true; out }",
        "fn f(s) { [s + 1, 1 + s, s + 'x', 'x' + s, 'a' + 'b', s + ()] }",
        "fn f(s) { [s == \"abc\", s < \"b\", s >= \"a\", 'a' < 'b'] }",
        "fn f(s) { let m = #{}; for w in s.split(\" \") { m[w] = (m[w] ?? 0) + 1; } m }",
        "fn f(s) { let m = #{a: 1, b: \"x\"}; m.c = 3; [m.a, m.b, m.c, m.d, m.contains(\"a\"), m.len()] }",
        "fn f(s) { let m = #{a: 1}; m[\"a\"] += 5; m.keys() + m.values() }",
        "fn f(s) { let a = []; a.push(s); a.push(1); a.pad(5, 0); a[1] = 2; a[-1] = 9; a }",
        "fn f(s) { let a = [1, 2]; a[5] }",
        "fn f(s) { let t = 0; for x in [1, 2.5, 3] { t += x; } t }",
        "fn f(s) { switch s { \"abc\" => 1, \"x\" | \"y\" => 2, _ => 3 } }",
        "fn f(s) { switch s.len() { 3 => \"three\", _ => \"other\" } }",
        "fn f(s) { let n = 0; for w in s.split(\" \") { switch w { \"a\" => n += 1, _ => { n -= 1; } } } n }",
        "fn f(s) { let x = #{}.a; x ?? \"none\" }",
        "fn f(s) { s.to_string() + 5.to_string() + 1.5.to_string() + 'c'.to_string() }",
        "fn f(s) { let v = [3, 1, 2]; let best = 0; for x in v { if x > best { best = x; } } best }",
        "fn f(s) { let v = [\"a\", 1]; v[0] + v[1] }",
        "fn f(s) { let v = [2, 3]; v[0] * v[1] - v[0] / v[1] }",
        "fn f(s) { let m = #{a: 1}; m.a + m.b }",
        "fn f(s) { let a = [0, 0, 0]; let i = 0; for c in s { a[i % 3] += 1; a[-1] += i; i += 1; } a }",
        "fn f(s) { let m = #{a: 1}; m.a = m.a * m.a + m[\"a\"]; m.b = m.b ?? s; m[s] = (m[s] ?? \"\") + s; m }",
        "fn f(s) { let m = #{}; m[s] = m[s] + 1; m }",
        "fn f(s) { let m = #{x: s}; m.x += m.x; m.y = m.x.len() + m.len(); m }",
        // `text += `..``: parts appended in one go, the text itself not read meanwhile.
        "fn f(s) { let t = \"\"; for c in s { t += `${c}:${s.len() * 3} ${c == 'a'} ${1.5}|`; } t }",
        "fn f(s) { let t = s; let u = t; for c in s { t += `${t.len()}${c}`; } [t, u] }",
        "fn f(s) { let t = s; t += 'c'; t += 3; t += (); t += 2.5; t += `${s}${()}`; t }",
        // Split pieces read in place (`fields[1].parse_int()`).
        "fn f(s) { let p = `${s},${s.len()},x`.split(\",\"); [p[1].parse_int(), p[0].len(), p[-1].to_upper(), p] }",
        // Pieces written over the loop's string, or over the strings of the array split into,
        // unless something kept them (a pushed piece, a map key, a second variable).
        "fn f(s) { let kept = []; let n = 0; for (w, i) in s.split(' ') { kept.push(w); n += i; if w == \"a\" { break; } } [kept, n] }",
        "fn f(s) { let t = \"\"; for w in `${s}|${s}|`.split(\"|\") { if w.len() > 2 { return [w]; } t += w; } [t] }",
        "fn f(s) { let out = []; let key = \"\"; for line in [s, `${s} x`, \"\", s] { let p = line.split(\" \"); key = p[0]; out.push(p); out.push(key); } out }",
        "fn f(s) { let p = [1]; let q = p; for i in 0..3 { p = `${s},${i}`.split(\",\"); } [p, q, s.split(\"\"), s.split(\"ab\")] }",
        "fn f(s) { let m = #{}; for line in [s, s, `${s} ${s}`] { let p = line.split(\" \"); for w in p { m[w] = p; } } m }",
        // A local's last use moves its value; an earlier one, or one beside another, copies.
        "fn f(s) { let a = [s, #{k: s}, [s]]; let b = a; b.push(1); let k = b.filter(|x| x != 1); for x in k { x.len(); } k }",
        "fn f(s) { let a = [s, 1, 2]; let k = a.filter(|x| x != 1); a.push(k); let m = a; [m, a, k] }",
        "fn f(s) { let a = [3, s, 2]; let k = a.filter(|x| x > 1); k }",
        "fn f(s) { let a = [s, s + s]; let n = a.len(); let k = a.filter(|x| x.len() < n + 3); [a, k] }",
        "fn f(s) { let m = #{a: s}; let n = m; n[\"b\"] = 1; [n, n.a] }",
        // The key of an update read in place, unless the new value reads it too.
        "fn f(s) { let m = #{}; for w in s.split(\" \") { m[w] = (m[w] ?? \"\") + w; m[w] = (m[w] ?? \"\") + 1; } m }",
        // `sub_string(..).parse_int()` parsed where the piece is.
        "fn f(s) { let t = `日x 12:34 ${s}`; let h = t.sub_string(3, 2).parse_int(); [h, t.sub_string(-7, 3).parse_int(), t.sub_string(6, 99).parse_int()] }",
        "fn f(s) { let n = s.sub_string(0, s.len() - 1).parse_int(); n + s.sub_string(-1).len() }",
        // Counts: `(m[k] ?? base) + n` on an int, a missing key, another type, an overflow.
        "fn f(s) { let m = #{b: 7}; for w in [\"a\", \"b\", \"a\"] { m[w] = (m[w] ?? 5) + s.len(); } m }",
        "fn f(s) { let m = #{a: \"x\"}; m[\"a\"] = (m[\"a\"] ?? 0) + 1; m }",
        "fn f(s) { let m = #{a: 9223372036854775807}; m[\"a\"] = (m[\"a\"] ?? 0) + 1; m }",
        "fn f(s) { let m = #{a: 1, b: \"x\", c: 2.5}; let add = [1, s, 2.5, ()]; for v in add { for k in [\"a\", \"b\", \"c\", \"d\"] { m[k] = (m[k] ?? 0) + v; } } m }",
        "fn f(s) { let m = #{a: 9223372036854775800}; let add = [3, 5]; for v in add { m[\"a\"] = (m[\"a\"] ?? 0) + v; } m }",
        // `m[k]` in a loop over `m.keys()` read from the entry, unless `m` or `k` changes.
        "fn f(s) { let m = #{}; for w in s.split(\" \") { m[w] = w.len(); } let t = 0; let u = []; for k in m.keys() { t += m[k]; u.push(`${k}=${m[k]}`); } [t, u] }",
        "fn f(s) { let m = #{a: 1, b: s}; let t = []; for (k, i) in m.keys() { t.push(m[k]); m[k] = i; t.push(m[k]); } [t, m] }",
        "fn f(s) { let m = #{a: 1, b: 2}; let t = []; for k in m.keys() { t.push(m[k]); k = \"b\"; t.push(m[k]); } t }",
        "fn f(s) { let m = #{a: [1], b: s}; let t = []; for k in m.keys() { m.c = 0; t.push(m[k]); } [t, m] }",
        "fn f(s) { let m = #{a: 2, b: s}; let t = 0; for k in m.keys() { t += m[k]; } t }",
        // Maps built from `#{}` (hash tables until they are read as maps).
        "fn f(s) { let m = #{}; for c in s { m[`${c}`] = c; } [m.len(), m.contains(\"a\"), m.a, m[\"b\"], m.keys(), m] }",
        "fn f(s) { let m = #{}; m[\"z\"] = 1; m[s] = s; let k = m.keys(); m[\"b\"] = k.len(); [k, m.values(), m] }",
        "fn f(s) { let m = #{}; let n = m; m[s] = 1; n[s] = 2; [m, n] }",
        "fn f(s) { let m = #{}; for w in s.split(\" \") { m[w] = (m[w] ?? 0) + 1; } s.split(\" \").filter(|w| m[w] > 1) }",
        "fn g(m) { m.len() * 10 } fn f(s) { let m = #{}; m[s] = s.len(); g(m) + m.len() }",
        "fn f(s) { let m = #{}; m[s] = (m[s] ?? 0) + 1; for k in m.keys() { m[k + k] = m[k]; } m }",
    ];
    let inputs = ["abc", "", " a b a ", "日本語 a", "12", " -3 ", "2.5e1", "x"];
    let mut ran_compiled = 0;
    for script in cases {
        for input in inputs {
            ran_compiled += usize::from(check(script, "f", vec![input.into()]));
        }
    }
    // Every case compiles; the inputs that make Rhai raise an error run there.
    assert!(
        ran_compiled >= cases.len() * inputs.len() * 2 / 3,
        "{ran_compiled} ran compiled"
    );
    for script in &cases[..7] {
        compiles(script, "f", vec!["abc".into()]);
    } // Changing a constant is Rhai's error; a script method may be what `s.f()` calls.
    let refused = [
        "fn f(s) { const a = [1]; a.push(s); a }",
        "fn f(s) { const t = s; t.trim(); t }",
        "fn len() { 7 } fn f(s) { s.len() }",
        "fn split(x) { 8 } fn f(s) { s.split(\",\") }",
        "fn split(a, b) { 9 } fn f(s) { s.split(\",\") }",
    ];
    for script in refused {
        falls_back(script, "f", vec!["a,b".into()]);
    }
}

/// Where Rhai checks every change of a string, array or map (size limits) or fails on a missing
/// property, or the script has its own `to_string`, heap values stay in Rhai; numbers still
/// compile.
#[test]
fn engines_and_scripts_that_rule_out_heap_values_keep_them_in_rhai() {
    let script = "fn words(s) { s.split(\" \").len() } fn sq(x) { x * x }";
    let with = |set: fn(&mut Engine)| {
        let mut engine = engine();
        set(&mut engine);
        engine
    };
    let own_to_string = format!("{script} fn to_string(x) {{ \"!\" }}");
    let runs = [
        (
            with(|e| _ = e.set_max_string_size(1000)),
            script.to_string(),
        ),
        (with(|e| _ = e.set_max_array_size(1000)), script.to_string()),
        (
            with(|e| _ = e.set_fail_on_invalid_map_property(true)),
            script.to_string(),
        ),
        (engine(), own_to_string),
    ];
    let mode = Mode {
        on: true,
        ..Mode::default()
    };
    for (i, (engine, script)) in runs.iter().enumerate() {
        let ast = engine.compile(script).unwrap();
        let tier = FastTier::new(&ast, engine, mode, false);
        assert!(
            tier.call("words", &[], &mut ["a b".into()], limits)
                .is_none(),
            "{i}"
        );
        assert!(
            tier.call("sq", &[], &mut [3.into()], limits).is_some(),
            "{i}"
        );
    }
}

/// mpscript's data builtins (`read_lines`, `regex_find_all`...) are called directly, with the
/// run's grants: a denied read, a missing file or a bad pattern goes back to Rhai, which raises
/// the error; a host's function of the same name and arity keeps the call in Rhai.
#[test]
fn data_builtins_are_called_directly_with_the_run_s_grants() {
    use crate::permissions::{Access, Permissions};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("words.txt");
    std::fs::write(
        &file,
        "The cat's hat\nthe CAT, the hat\n\nÉté: été, the end\n",
    )
    .unwrap();
    let path = Dynamic::from(file.display().to_string());
    let missing = Dynamic::from(dir.path().join("none.txt").display().to_string());
    let script = r#"
        fn count(path, range) {
            let counts = #{};
            for line in read_lines(path, range) {
                for word in regex_find_all(line.to_lower(), `[a-z']+`) {
                    counts[word] = (counts[word] ?? 0) + 1;
                }
            }
            counts
        }
        fn lines(path) { read_lines(path).len() }
        fn size(path) { read_file(path).len() }
        fn matching(path, pattern) { read_lines(path).filter(|l| regex_is_match(l, pattern)).len() }
        fn kept(path, pattern) {
            let out = [];
            for line in read_lines(path) {
                for (w, i) in regex_find_all(line, pattern) { if i > 1 { break; } out.push(w); }
            }
            out
        }
    "#;
    let granted = |host: fn(&mut Engine)| {
        let read = [dir.path().to_str().unwrap()];
        let grants = Permissions::none().allow(Access::Read, &read).unwrap();
        let mut engine = engine();
        crate::data::register(&mut engine, &std::sync::Arc::new(grants));
        host(&mut engine);
        engine
    };
    let engine = granted(|_| {});
    let range = |m: &str| engine.eval::<Dynamic>(m).unwrap();
    for r in ["#{}", "#{start: 4}", "#{start: 0, end: 30}", "#{end: 1000}"] {
        assert!(
            check_on(&engine, script, "count", vec![path.clone(), range(r)]),
            "{r}"
        );
    }
    assert!(check_on(&engine, script, "lines", vec![path.clone()]));
    assert!(check_on(&engine, script, "size", vec![path.clone()]));
    for pattern in [r"\w+", "^the", "t$", "[a-z]+h"] {
        let args = vec![path.clone(), pattern.into()];
        assert!(
            check_on(&engine, script, "matching", args.clone()),
            "{pattern}"
        );
        assert!(check_on(&engine, script, "kept", args), "{pattern}");
    }
    // Errors Rhai raises: a bad range, a missing file, a bad pattern, a type it does not take.
    for (f, args) in [
        ("count", vec![path.clone(), range("#{start: -1}")]),
        ("lines", vec![missing.clone()]),
        ("size", vec![missing]),
        ("matching", vec![path.clone(), "[".into()]),
        ("kept", vec![path.clone(), "[".into()]),
        ("lines", vec![42.into()]),
    ] {
        assert!(!check_on(&engine, script, f, args.clone()), "{f}{args:?}");
    }
    // No grant: Rhai raises the denial.
    let mut denied = super::tests::engine();
    crate::data::register(&mut denied, &std::sync::Arc::new(Permissions::none()));
    assert!(!check_on(&denied, script, "lines", vec![path.clone()]));
    // A host's own `regex_find_all` is the one Rhai calls, so the tier keeps the call in Rhai.
    let host = granted(|e| {
        e.register_fn("regex_find_all", |_: &str, _: &str| rhai::Array::new());
    });
    let args = vec![path.clone(), range("#{}")];
    assert!(!check_on(&host, script, "count", args));
    assert!(check_on(&host, script, "lines", vec![path]));
}
