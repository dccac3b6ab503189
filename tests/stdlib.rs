//! The `pool` standard library, embedded in the binary: available directly, through `import`, in
//! workers and in the REPL.

mod common;

use common::run;

#[test]
fn starmap_chunks_sum_and_map_reduce() {
    let out = run(r#"
        print(starmap(|a, b| a * b, [[2, 3], [4, 5]]));
        print(starmap(Fn("max"), [[1, 9], [7, 2]]));
        print(chunks([1, 2, 3, 4, 5], 2));
        print(chunks([], 3));
        print(sum(pool_map(|x| x * x, 1..=4)));
        print(map_reduce(|x| x * x, 1..=4, |a, b| a + b, 0));
        try { chunks([1], 0); } catch (e) { print(e); }
        try { starmap(|a| a, [1]); } catch (e) { print(e); }
    "#);
    let lines = out.lines();
    assert_eq!(
        lines[..6],
        [
            "[6, 20]",
            "[9, 7]",
            "[[1, 2], [3, 4], [5]]",
            "[]",
            "30",
            "30"
        ],
        "{}",
        out.stderr
    );
    assert_eq!(lines[6], "chunks: size must be 1 or more, got 0");
    assert!(
        lines[7].contains("each item must be an array of arguments"),
        "{}",
        lines[7]
    );
}

#[test]
fn parallel_for_runs_every_index_in_workers() {
    let out = run(r#"
        let seen = queue();
        parallel_for(1..=20, |i| seen.put(i * 2));
        let total = 0;
        while seen.len() > 0 { total += seen.get(); }
        print(total);
    "#);
    assert_eq!(out.ok(), "420\n");
}

#[test]
fn a_pipeline_runs_each_stage_in_its_own_process_in_order() {
    let out = run(r#"
        let stages = [|x| [x, pid()], |pair| pair + [pid()]];
        let results = pipeline(stages, 1..=50);
        let ordered = true;
        for i in 0..50 { if results[i][0] != i + 1 { ordered = false; } }
        let first = results[0];
        print(`${results.len()} ${ordered} ${first[1] != first[2] && first[1] != pid()}`);
    "#);
    assert_eq!(out.ok(), "50 true true\n");
}

#[test]
fn the_library_is_importable_as_a_module_without_any_file() {
    let out = run(r#"
        import "pool" as pool;
        print(pool::chunks([1, 2, 3], 2));
        print(pool::starmap(|a, b| a + b, [[1, 1], [2, 2]]));
        print(pool::pipeline([|x| `<${x}>`], ["a", "b"]));
    "#);
    out.assert_printed(&["[[1, 2], [3]]", "[2, 4]", r#"["<a>", "<b>"]"#]);
}

#[test]
fn a_script_function_of_the_same_name_wins() {
    let out =
        run("fn sum(xs) { \"mine\" }\nprint(sum([1, 2]));\nprint(pool_map(|x| sum([x]), [1]));");
    out.assert_printed(&["mine", r#"["mine"]"#]);
}

#[test]
fn join_and_sort_by_key_work_on_arrays_of_any_values() {
    let out = run(r#"
        let people = [#{age: 31, name: "cy"}, #{age: 25, name: "al"}, #{age: 31, name: "bo"}, #{age: 27.5, name: "di"}];
        people.sort_by_key(|p| p.age);
        print(people.map(|p| p.name).join(","));
        people.sort_by_key(|p| p.name);
        print(people.map(|p| p.name).join(""));
        print([1, "x", 2.5, 'c'].join(", "));
        print([].join("-") == "");
        let calls = 0;
        let counted = [5, 3, 9, 1];
        counted.sort_by_key(|x| { calls += 1; -x });
        print(counted);
        print(calls);
        try { [1, "a"].sort_by_key(|x| x); } catch (e) { print(e); }
        let kept = [3, 1, 2];
        try { kept.sort_by_key(|x| if x == 2 { throw "no key" } else { x }); } catch (e) { print(e); }
        print(kept);
    "#);
    assert_eq!(
        out.lines(),
        [
            "al,di,cy,bo",
            "albocydi",
            "1, x, 2.5, c",
            "true",
            "[9, 5, 3, 1]",
            "4",
            "sort_by_key: cannot order a number key and a string key",
            "no key",
            "[3, 1, 2]",
        ],
        "{}",
        out.stderr
    );
}
