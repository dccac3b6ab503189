//! The script contract of `spawn`, `pool_map` and `queue`, over real worker processes.

mod common;

use common::{process_exists, run};

#[test]
fn pool_map_returns_10000_results_in_input_order() {
    let out = run(r#"
        let squares = pool_map(|x| x * x, 0..10000);
        let ok = true;
        for i in 0..10000 { if squares[i] != i * i { ok = false; } }
        print(`${squares.len()} ${ok}`);
        let words = pool_map(|s| s + "!", ["a", "b", "c"], #{ workers: 2, chunk_size: 1 });
        print(words);
    "#);
    out.assert_printed(&["10000 true", r#"["a!", "b!", "c!"]"#]);
}

#[test]
fn pool_map_accepts_named_functions_curried_pointers_and_ranges() {
    let out = run(r#"
        fn add(a, b) { a + b }
        print(pool_map(Fn("add").curry(10), [1, 2, 3]));
        print(pool_map(Fn("to_string"), 1..=3));
        print(pool_map(|x| x, []));
        print(pool_map(|x| x * 2, 5..5));
    "#);
    out.assert_printed(&["[11, 12, 13]", r#"["1", "2", "3"]"#, "[]", "[]"]);
}

#[test]
fn pool_map_runs_in_several_worker_processes_and_keeps_them_warm() {
    let out = run(r#"
        let first = pool_map(|x| { sleep(0.05); pid() }, 1..=8, #{ workers: 2, chunk_size: 1 });
        let second = pool_map(|x| pid(), 1..=8, #{ workers: 2, chunk_size: 1 });
        let seen = #{};
        for p in first { seen[p.to_string()] = true; }
        let reused = second.all(|p| seen.contains(p.to_string()));
        print(`${seen.len()} ${!seen.contains(pid().to_string())} ${reused}`);
    "#);
    assert_eq!(out.ok(), "2 true true\n");
}

#[test]
fn closures_carry_their_captured_values_to_workers() {
    let out = run(r#"
        let base = 1000;
        let names = #{ greeting: "héllo" };
        let p = spawn(|x| `${names.greeting} ${base + x}`, 5);
        print(p.join());
        let scale = 2.5;
        print(pool_map(|x| x * scale, [1.0, 2.0]));
        let inner = |x| x + base;
        print(pool_map(|x| inner.call(x) * 2, [1, 2]));
    "#);
    out.assert_printed(&["héllo 1005", "[2.5, 5.0]", "[2002, 2004]"]);
}

#[test]
fn a_worker_error_is_caught_in_the_script_with_its_index_pid_and_position() {
    let out = run(r#"
        fn check(x) {
            if x == 7 { throw `bad item ${x}`; }
            x
        }
        try {
            pool_map(Fn("check"), 0..20);
            print("not reached");
        } catch (e) {
            print(e);
        }
        print(pool_map(Fn("check"), [1, 2]));
        let p = spawn(|| 1 / 0);
        try { p.join(); } catch (e) { print(e); }
        print(p.exit_code);
    "#);
    let lines = out.lines();
    assert_eq!(lines.len(), 4, "{}", out.stderr);
    assert!(
        lines[0].starts_with("pool_map items[7] (8th of 20) failed: bad item 7 (worker "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with(", line 3, column 25, in 'check')"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "[1, 2]", "the pool stays usable after a failure");
    assert!(lines[2].starts_with("Division by zero"), "{}", lines[2]);
    assert!(lines[2].contains("in 'closure'"), "{}", lines[2]);
    assert_eq!(lines[3], "1");
}

#[test]
fn an_uncaught_worker_error_is_reported_at_the_call_and_where_it_was_raised() {
    let script = common::Script::named(
        "uncaught.rhai",
        "fn f(x) {\n    if x > 2 { throw \"too big\"; }\n    x\n}\nlet r = pool_map(Fn(\"f\"), [1, 2, 3]);\n",
    );
    let run = script.run(&[]);
    let err = run.fails_with(1);
    assert!(
        err.contains("pool_map items[2] (3rd of 3) failed: too big"),
        "{err}"
    );
    assert!(err.contains("uncaught.rhai:2:16"), "{err}");
    assert!(err.contains("raised here in worker"), "{err}");
    assert!(err.contains("called here"), "{err}");
}

#[test]
fn spawn_returns_at_once_and_join_returns_the_value() {
    let out = run(r#"
        fn slow(x) { sleep(1.0); x * 2 }
        let started = timestamp();
        let a = spawn(Fn("slow"), 1);
        let b = spawn(Fn("slow"), 2);
        let launch = started.elapsed;
        // Both sleep at once: well under the 2 s that running them one after the other takes.
        print(`${a.join() + b.join()} ${launch < 0.9} ${started.elapsed < 1.9}`);
        print(`${a.pid != b.pid} ${a.pid != pid()} ${type_of(a)}`);
        print(a);
    "#);
    let lines = out.lines();
    assert_eq!(lines[0], "6 true true", "{}", out.stderr);
    assert_eq!(lines[1], "true true Process");
    assert!(lines[2].starts_with("Process(pid "), "{}", lines[2]);
}

#[test]
fn join_with_a_timeout_then_kill() {
    let out = run(r#"
        let p = spawn(|| { sleep(30.0); 1 });
        try { p.join(0.2); } catch (e) { print(e); }
        print(`${p.is_alive()} ${p.exit_code}`);
        let pid = p.pid;
        p.kill();
        print(`${p.is_alive()} ${p.exit_code}`);
        try { p.join(); } catch (e) { print(e); }
        print(pid);
    "#);
    let lines = out.lines();
    assert!(lines[0].contains("timed out"), "{}", lines[0]);
    assert_eq!(lines[1], "true ");
    assert_eq!(lines[2], "false -9");
    assert!(
        lines[3].contains("died: killed by signal 9 (SIGKILL)"),
        "{}",
        lines[3]
    );
    let pid: u32 = lines[4].parse().unwrap();
    assert!(!process_exists(pid), "killed worker {pid} was reaped");
    assert!(out.elapsed.as_secs() < 10, "did not wait for the sleeper");
}

#[test]
fn a_bounded_queue_blocks_the_producer_until_the_consumer_takes() {
    let out = run(r#"
        fn producer(q) {
            let t = timestamp();
            for i in 1..=3 { q.put(i); }
            t.elapsed
        }
        let q = queue(1);
        let p = spawn(Fn("producer"), q);
        sleep(1.0);
        print(`held ${q.len()}`);
        let got = [q.get(), q.get(), q.get()];
        print(`${got} blocked ${p.join() >= 0.2}`);
        print(`empty ${q.try_get() == ()}`);
        try { q.get(0.1); } catch (e) { print(e); }
        q.put(1);
        try { q.put(2, 0.1); } catch (e) { print(e); }
        print(`still ${q.len()}`);
    "#);
    let lines = out.lines();
    assert_eq!(lines[0], "held 1", "{}", out.stderr);
    assert_eq!(lines[1], "[1, 2, 3] blocked true");
    assert_eq!(lines[2], "empty true");
    assert!(lines[3].contains("timed out"), "{}", lines[3]);
    assert_eq!(lines[4], "q.put on a full queue timed out after 0.1s");
    assert_eq!(lines[5], "still 1");
}

#[test]
fn queues_work_between_workers_and_in_pool_map() {
    let out = run(r#"
        let q = queue();
        pool_map(|x| { q.put(x * 10); x }, 1..=20, #{ workers: 2 });
        let total = 0;
        for i in 0..20 { total += q.get(5); }
        print(`${total} ${q.len()}`);
        let relay = queue();
        let a = spawn(|inq, outq| { for i in 0..3 { outq.put(inq.get() + 1); } }, q, relay);
        for i in 0..3 { q.put(i); }
        a.join();
        print([relay.get(), relay.get(), relay.get()]);
    "#);
    out.assert_printed(&["2100 0", "[1, 2, 3]"]);
}

#[test]
fn pool_map_results_keep_their_types_whether_a_chunk_holds_one_kind_or_several() {
    // Chunks of 50: ints, floats, booleans, a chunk that turns from booleans to ints halfway,
    // one from ints to strings, then every kind mixed; compared with the same map in one process.
    let out = run(r#"
        fn f(x) {
            switch x / 50 {
                0 => x, 1 => x * 0.5, 2 => x % 3 == 0,
                3 => if x % 50 < 25 { x % 2 == 0 } else { x },
                4 => if x % 50 < 25 { x } else { `s${x}` },
                _ => [x, x * 0.5, x % 2 == 0, (), `${x}`][x % 5],
            }
        }
        let items = [];
        for i in 0..400 { items.push(i); }
        let here = items.map(f);
        let there = pool_map(f, items, #{ workers: 2, chunk_size: 50 });
        let same = there.len() == here.len();
        for i in 0..here.len() {
            if type_of(here[i]) != type_of(there[i]) || here[i] != there[i] {
                print(`item ${i}: ${here[i].to_debug()} came back as ${there[i].to_debug()}`);
                same = false;
            }
        }
        print(`same: ${same}`);
        print(pool_map(|x| x > 1, [1, 2, 3]));
    "#);
    out.assert_printed(&["same: true", "[false, true, true]"]);
}

#[test]
fn every_sendable_type_round_trips_unchanged() {
    let out = run(r#"
        let values = [
            (), true, false, 0, -1, 9223372036854775807, -9223372036854775808,
            0.1, -2.5e300, 1e-300, 'x', 'ß', '😀', "", "héllo wörld ✓ 日本語 😀",
            [], [1, 2, 3], [1.5, 2.5], [true, false], [1, "two", 3.0, [4, [5]]],
            #{}, #{ a: 1, "key with space": #{ nested: [#{ deep: "yes" }] }, f: 0.5 },
            blob(4, 0xAB), blob(0),
        ];
        let echoed = spawn(|v| v, values).join();
        let mapped = pool_map(|v| v, values);
        let same = true;
        for i in 0..values.len() {
            let a = values[i]; let b = echoed[i]; let c = mapped[i];
            if type_of(a) != type_of(b) || a.to_debug() != b.to_debug() { print(`spawn changed ${i}: ${a.to_debug()} -> ${b.to_debug()}`); same = false; }
            if type_of(a) != type_of(c) || a.to_debug() != c.to_debug() { print(`pool_map changed ${i}: ${a.to_debug()} -> ${c.to_debug()}`); same = false; }
        }
        print(`same: ${same}, ${values.len()} values`);
        let q = queue();
        let p = spawn(|| 1);
        p.join();
        let handles = spawn(|a, b| [a, b], q, p).join();
        print(`${type_of(handles[0])} ${type_of(handles[1])} ${handles[1].pid == p.pid}`);
        let f = spawn(|| |x| x + 1).join();
        print(`${type_of(f)} ${spawn(|g| g.call(41), f).join()}`);
    "#);
    out.assert_printed(&["same: true, 24 values", "Queue Process true", "Fn 42"]);
}

#[test]
fn a_value_that_cannot_be_sent_is_a_clear_error_at_the_call_site() {
    let out = run(r#"
        try { spawn(|t| t, timestamp()); } catch (e) { print(e); }
        try { pool_map(|x| x, [1, timestamp()]); } catch (e) { print(e); }
        try { spawn(|| timestamp()).join(); } catch (e) { print(e); }
        let deep = [];
        for i in 0..200 { deep = [deep]; }
        try { spawn(|x| x, deep); } catch (e) { print(e); }
        try { pool_map(1, [1]); } catch (e) { print(e); }
        try { pool_map(|x| x, 5); } catch (e) { print(e); }
        try { pool_map(|x| x, [1], #{ wokers: 2 }); } catch (e) { print(e); }
    "#);
    let lines = out.lines();
    assert_eq!(
        lines[0],
        "spawn argument: a value of type `timestamp` cannot be sent to another process"
    );
    assert_eq!(
        lines[1],
        "pool_map items: a value of type `timestamp` cannot be sent to another process"
    );
    assert!(
        lines[2]
            .starts_with("the function's result cannot be sent back: a value of type `timestamp`"),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[3],
        "spawn argument: value nested deeper than 128 levels cannot be sent"
    );
    assert!(
        lines[4].starts_with("pool_map expects a function value"),
        "{}",
        lines[4]
    );
    assert_eq!(
        lines[5],
        "pool_map expects an array or a range of items, got i64"
    );
    assert_eq!(
        lines[6],
        "pool_map: unknown option `wokers` (known: workers, chunk_size, retries, timeout, progress, spread)"
    );
}

#[test]
fn worker_print_and_debug_reach_the_parent_as_whole_lines() {
    let out = run(r#"
        pool_map(|x| { let s = ""; s.pad(5000, 'x'); print(`line from item ${x} ${s}`); debug(x); x }, 1..=40);
        spawn(|| print("from a spawned process")).join();
    "#);
    let stdout = out.ok();
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 41);
    for line in &lines[..40] {
        assert!(line.starts_with("line from item ") && line.ends_with(&"x".repeat(5000)));
    }
    assert_eq!(lines[40], "from a spawned process");
    let debugs = out.stderr.lines().filter(|l| l.starts_with("[")).count();
    assert_eq!(debugs, 40, "{}", out.stderr);
}

#[test]
fn exit_codes_follow_the_script() {
    assert_eq!(run("print(1);").code, Some(0));
    assert_eq!(run("exit(7);").code, Some(7));
    assert_eq!(run("exit();").code, Some(0));
    assert_eq!(
        run("try { exit(3); } catch { print(\"caught\"); }").code,
        Some(3)
    );
    assert_eq!(run("throw \"no\";").code, Some(1));
    assert_eq!(run("let x = ;").code, Some(1));
    let out = run(
        "let p = spawn(|| exit(5)); try { p.join(); } catch(e) { print(e); } print(p.exit_code);",
    );
    assert_eq!(out.lines()[1], "5");
    assert!(out.lines()[0].contains("exit(5)"));
}

#[test]
fn cpu_count_pid_and_sleep() {
    let out = run(r#"
        let t = timestamp();
        sleep(0.1);
        sleep(0);
        print(`${cpu_count() >= 1} ${pid() > 0} ${t.elapsed >= 0.1}`);
        try { sleep(-1); } catch (e) { print(e); }
    "#);
    assert_eq!(out.lines()[0], "true true true");
    assert!(out.lines()[1].contains("zero or more"));
}

#[test]
fn no_worker_outlives_the_run() {
    let out = run(r#"
        let pids = pool_map(|x| { sleep(0.05); pid() }, 1..=4, #{ workers: 2, chunk_size: 1 });
        let p = spawn(|| pid());
        print(pids + [p.join()]);
    "#);
    let pids: Vec<u32> = out
        .ok()
        .trim()
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 5);
    for pid in pids {
        assert!(
            !process_exists(pid),
            "worker {pid} is still there after the run"
        );
    }
}

#[test]
fn a_run_waits_for_spawned_processes_that_are_still_running() {
    let out = run(r#"
        spawn(|| { sleep(0.3); print("late worker finished"); });
        print("script done");
    "#);
    out.assert_printed(&["script done", "late worker finished"]);
}

#[test]
fn workers_never_run_the_top_level() {
    let out = run(r#"
        print("top level ran");
        let p = pool_map(|x| x + 1, [1, 2, 3]);
        print(p);
    "#);
    out.assert_printed(&["top level ran", "[2, 3, 4]"]);
}

#[test]
fn functions_in_pool_map_can_spawn_but_not_nest_a_pool_map() {
    let out = run(r#"
        print(pool_map(|x| spawn(|y| y * 3, x).join(), [1, 2]));
        try { pool_map(|x| pool_map(|y| y, [x]), [1]); } catch (e) { print(e); }
        print(spawn(|| pool_map(|y| y + 1, [1, 2])).join());
    "#);
    let lines = out.lines();
    assert_eq!(lines[0], "[3, 6]", "{}", out.stderr);
    assert!(
        lines[1].contains("cannot be called from a function running in pool_map"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "[2, 3]");
}

#[test]
fn a_failed_run_stops_its_spawned_processes_instead_of_waiting() {
    let out = run(r#"
        let p = spawn(|| { sleep(60); 1 });
        print(p.pid);
        throw "script failed";
    "#);
    out.fails_with(1);
    let pid: u32 = out.stdout.trim().parse().unwrap();
    assert!(out.elapsed.as_secs() < 10, "waited for the sleeper");
    assert!(
        !process_exists(pid),
        "spawned worker {pid} outlived the failed run"
    );
}

#[test]
fn closures_created_inside_functions_called_by_pool_map_resolve_in_workers() {
    let out = run(r#"
        fn words(line) { line.split(" ").filter(|w| w != "").map(|w| w.len()) }
        print(pool_map(|l| words(l), ["ab c", "def"]));
    "#);
    assert_eq!(out.ok(), "[[2, 1], [3]]\n");
}

#[test]
fn the_grain_vm_and_the_tree_walker_give_the_same_results_and_errors() {
    let script = common::Script::new(
        r#"
        fn collatz(n) { let steps = 0; while n != 1 { n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 }; steps += 1; } steps }
        fn picky(x) { if x == 5 { throw `no ${x}`; } x / (x - 9) }
        let k = 0.5;
        print(pool_map(Fn("collatz"), 1..=30));
        print(pool_map(|x| x * k + 0.1, [1, 2, 3]));
        try { pool_map(Fn("picky"), 0..12); } catch (e) { print(e); }
        try { pool_map(Fn("picky"), 6..12); } catch (e) { print(e); }
        "#,
    );
    let outputs: Vec<String> = ["1", "0"]
        .iter()
        .map(|grain| {
            let out = std::process::Command::new(common::BIN)
                .args(["run", "-j", "2"])
                .arg(&script.path)
                .env("MPSCRIPT_GRAIN", grain)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Worker pids differ between runs; everything else must not.
            String::from_utf8_lossy(&out.stdout)
                .split("(worker ")
                .map(|part| part.split_once(',').map_or(part, |(_, rest)| rest))
                .collect::<Vec<_>>()
                .join("(worker,")
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    assert!(
        outputs[0].contains("pool_map items[5] (6th of 12) failed: no 5"),
        "{}",
        outputs[0]
    );
    assert!(outputs[0].contains("Division by zero"), "{}", outputs[0]);
}

#[test]
fn progress_is_shown_when_asked_and_never_on_a_pipe_otherwise() {
    let out = run(r#"
        let a = pool_map(|x| { sleep(0.01); x }, 1..=60, #{ workers: 2, progress: true });
        let b = pool_map(|x| { sleep(0.01); x }, 1..=60, #{ workers: 2 });
        print(`${a.len()} ${b.len()}`);
        try { pool_map(|x| x, [1], #{ progress: 1 }); } catch (e) { print(e); }
    "#);
    assert_eq!(out.lines()[0], "60 60");
    assert_eq!(
        out.lines()[1],
        "pool_map option `progress` must be true or false, got 1"
    );
    let progress: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("pool_map: "))
        .collect();
    assert!(!progress.is_empty(), "{}", out.stderr);
    assert!(
        progress
            .last()
            .unwrap()
            .starts_with("pool_map: 60/60 items"),
        "{}",
        out.stderr
    );
    let finished = progress
        .iter()
        .filter(|l| l.starts_with("pool_map: 60/60"))
        .count();
    assert_eq!(
        finished, 1,
        "the unasked map stays silent on a pipe: {}",
        out.stderr
    );
    assert_eq!(
        progress.len(),
        out.stderr.lines().count(),
        "only the asked map reports: {}",
        out.stderr
    );
}

#[test]
fn a_long_pool_map_shows_a_bar_on_a_terminal_and_worker_output_is_written_around_it() {
    let script = common::Script::new(
        r#"let r = pool_map(|x| { sleep(0.02); if x == 100 { print("a worker line"); } x }, 1..=150, #{ workers: 2 });
print(`done ${r.len()}`);"#,
    );
    // `script` (util-linux) runs the command on a pseudo-terminal, as a person at a terminal would.
    let command = format!("{} run {}", common::BIN, script.path.display());
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script(1) from util-linux runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("/150 items"), "no bar: {screen}");
    assert!(
        screen.contains("items/s") && screen.contains("ETA"),
        "{screen}"
    );
    assert!(
        screen.contains("a worker line\r\n"),
        "worker output kept whole: {screen}"
    );
    assert!(screen.contains("done 150"), "{screen}");
}
