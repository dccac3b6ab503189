//! Shared arrays, values and maps across real worker processes: the contract Python's
//! `multiprocessing.Array`, `Value` and `Manager().dict()` give, with atomic updates.

mod common;

use common::run;

#[test]
fn concurrent_atomic_adds_from_many_processes_are_exact() {
    let out = run(r#"
        let a = shared_array("int", 4);
        let f = shared_value(0.0);
        let ps = [];
        for w in 0..4 {
            ps.push(spawn(|a, f| {
                for i in 0..2500 { a.add(i % 4, 1); f.add(0.5); }
            }, a, f));
        }
        for p in ps { p.join(); }
        print(a.to_array());
        print([a.sum(), f.value]);
    "#);
    out.assert_printed(&["[2500, 2500, 2500, 2500]", "[10000, 5000.0]"]);
}

#[test]
fn writes_in_pool_map_are_seen_by_the_main_script_and_by_warm_workers() {
    let out = run(r#"
        // Python's example: Array('i', range(10)), each worker writing its square.
        let a = shared_array("int", 0..10);
        pool_map(|i| { a[i] = a[i] * a[i]; }, 0..10);
        print(a.to_array());
        // A handle made after the workers started reaches them through a queue.
        let q = queue();
        let worker = spawn(|q| { let got = q.get(); got[-1] = 99; got.len() }, q);
        sleep(0.2);
        let late = shared_array("float", 3);
        q.put(late);
        print([worker.join(), late.to_array()]);
        print([a, late.max(), late.min(), shared_array("int", 0).max(), shared_array("int", 0).sum()]);
    "#);
    out.assert_printed(&[
        "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "[3, [0.0, 0.0, 99.0]]",
        "[SharedArray(int, 10), 99.0, 0.0, (), 0]",
    ]);
}

#[test]
fn a_killed_worker_leaves_the_memory_intact_for_the_rest() {
    let out = run(r#"
        let a = shared_array("int", [1, 2, 3]);
        let p = spawn(|a| { a[0] = 10; sleep(30); }, a);
        while a[0] != 10 { sleep(0.01); }
        p.kill();
        print([a.to_array(), spawn(|a| a.add(1, 5), a).join()]);
    "#);
    out.assert_printed(&["[[10, 2, 3], 7]"]);
}

#[test]
fn kinds_indexes_and_overflow_are_clear_errors_at_the_call() {
    let out = run(r#"
        let a = shared_array("int", 2);
        fn said(e) { if type_of(e) == "map" { e.message } else { e } }
        try { a[0] = 1.5; } catch (e) { print(said(e)); }
        try { a[0] = "x"; } catch (e) { print(said(e)); }
        try { a[2]; } catch (e) { print(said(e)); }
        try { a.add(0, 9223372036854775807); a.add(0, 1); } catch (e) { print(said(e)); }
        try { shared_array("text", 1); } catch (e) { print(said(e)); }
        let f = shared_array("float", [1, 2.5]);
        f[0] = 3;
        print([f.to_array(), f.cas(1, 2.5, 0.0), f.cas(1, 2.5, 9.0), f.swap(0, 7), f[-2]]);
        let v = shared_value(5);
        print([v.add(-2), v.cas(3, 4), v.value, v]);
    "#);
    out.assert_printed(&[
        "a f64 cannot be stored in a shared int array",
        "a string cannot be stored in a shared int array",
        "Array index 2 out of bounds: only 2 elements in array",
        "Addition overflow: 9223372036854775807 + 1",
        r#"a shared array holds "int" or "float", not "text""#,
        "[[3.0, 2.5], true, false, 3.0, 7.0]",
        "[3, true, 4, SharedValue(int, 4)]",
    ]);
}

#[test]
fn shared_map_counters_are_exact_under_contention() {
    let out = run(r#"
        let m = shared_map();
        pool_map(|i| { m.add("hits", 1); m.add(`k${i % 3}`, 1); }, 0..600, #{chunk_size: 7});
        let ps = [];
        for w in 0..3 { ps.push(spawn(|m| { for i in 0..200 { m.add("hits", 1); } }, m)); }
        for p in ps { p.join(); }
        print([m["hits"], m["k0"] + m["k1"] + m["k2"], m.keys()]);
        m["name"] = #{nested: [1, 2]};
        print([m.get("missing"), m.get("missing", 0), m.contains("name"), m["name"].nested, m.len()]);
        print([m.cas("none", (), 1), m.cas("none", (), 2), m.remove("none"), m.remove("none")]);
        print(m.to_map().keys());
    "#);
    out.assert_printed(&[
        r#"[1200, 600, ["hits", "k0", "k1", "k2"]]"#,
        "[(), 0, true, [1, 2], 5]",
        "[true, false, 1, ()]",
        r#"["hits", "k0", "k1", "k2", "name"]"#,
    ]);
}
