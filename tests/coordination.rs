//! Locks, semaphores, events, barriers and futures shared by real worker processes.

mod common;

use common::run;

#[test]
fn a_lock_held_by_a_killed_process_is_released() {
    let out = run(r#"
        let l = lock();
        let holder = spawn(|l| { l.acquire(); sleep(30); }, l);
        sleep(0.2);
        print(l.acquire(0.2));
        holder.kill();
        print(l.acquire(5));
        l.release();
        try { l.release(); } catch (e) { print(e); }
    "#);
    out.assert_printed(&["false", "true", "release() of a lock that is not locked"]);
}

#[test]
fn permits_taken_in_pool_map_do_not_outlive_the_call() {
    let out = run(r#"
        let s = semaphore(1);
        // Stopped by its time limit while holding the permit; the worker lives on.
        try { pool_map(|s| { s.acquire(); sleep(30); }, [s], #{ timeout: 0.2 }); } catch (e) { print(e.contains("timed out")); }
        print(s.acquire(2));
        s.release();
        // Stuck in a wait past its time limit: its worker is killed.
        try { pool_map(|s| { s.acquire(); event().wait(); }, [s], #{ timeout: 0.2 }); } catch (e) { print(e.contains("timed out")); }
        print(s.acquire(2));
    "#);
    out.assert_printed(&["true", "true", "true", "true"]);
}

#[test]
fn semaphores_events_and_barriers_coordinate_processes() {
    let out = run(r#"
        let s = semaphore(2);
        print(`${s.acquire(0)} ${s.acquire(0)} ${s.acquire(0)}`);
        s.release();
        print(s.acquire(0));

        let e = event();
        print(e.is_set());
        spawn(|e| { sleep(0.1); e.set(); }, e);
        print(e.wait(5));
        e.clear();
        print(e.wait(0.05));

        let b = barrier(3);
        let parties = [];
        for i in 0..2 { parties.push(spawn(|b| b.wait(5), b)); }
        let arrivals = [b.wait(5)];
        for p in parties { arrivals.push(p.join()); }
        arrivals.sort();
        print(arrivals);

        let lonely = barrier(3);
        let waiter = spawn(|b| { let r = (); try { r = b.wait(5); } catch (e) { r = e; } r }, lonely);
        try { lonely.wait(0.1); } catch (e) { print(e); }
        print(waiter.join(5).contains("broken"));
        lonely.reset();
    "#);
    out.assert_printed(&[
        "true true false",
        "true",
        "false",
        "true",
        "false",
        "[0, 1, 2]",
        "barrier wait timed out after 0.1s",
        "true",
    ]);
}

#[test]
fn futures_get_done_and_cancel() {
    let out = run(r#"
        let slow = pool_submit(|x| { sleep(0.4); x * 2 }, 21);
        print(slow.done());
        try { slow.get(0.05); } catch (e) { print(e); }
        print(slow.get());
        print(slow.done());
        // Two workers: the first two run, the rest wait and can be cancelled.
        let queued = [];
        for i in 0..6 { queued.push(pool_submit(|i| { sleep(0.3); i }, i)); }
        print(queued[5].cancel());
        print(queued[5].done());
        try { queued[5].get(); } catch (e) { print(e); }
        print(queued[0].cancel());
        print(queued[4].get());
        let failing = pool_submit(|| throw "task failed");
        try { failing.get(); } catch (e) { print(e.contains("task failed")); }
    "#);
    out.assert_printed(&[
        "false",
        "fut.get timed out after 0.05s",
        "42",
        "true",
        "true",
        "true",
        "the future was cancelled before it started",
        "false",
        "4",
        "true",
    ]);
}

#[test]
fn wait_any_and_as_completed_give_futures_in_completion_order() {
    let out = run(r#"
        let fs = [];
        for d in [0.5, 0.05, 0.25] { fs.push(pool_submit(|d| { sleep(d); d }, d)); }
        print(wait_any(fs).get());
        let order = [];
        for f in as_completed(fs) { order.push(f.get()); }
        print(order);
        let never = pool_submit(|| sleep(5));
        try { wait_any([never], 0.1); } catch (e) { print(e); }
    "#);
    out.assert_printed(&["0.05", "[0.05, 0.25, 0.5]", "wait_any timed out after 0.1s"]);
}

#[test]
fn pool_map_unordered_yields_results_as_they_finish() {
    let out = run(r#"
        let order = [];
        for d in pool_map_unordered(|d| { sleep(d); d }, [0.4, 0.0, 0.2]) { order.push(d); }
        print(order);
        let total = 0;
        for x in pool_map_unordered(|x| x * x, 1..=200) { total += x; }
        print(total);
        let seen = [];
        try {
            for x in pool_map_unordered(|x| if x == 3 { throw "bad item" } else { x }, 0..5) { seen.push(x); }
        } catch (e) { print(e.contains("bad item")); }
    "#);
    out.assert_printed(&["[0.0, 0.2, 0.4]", "2686700", "true"]);
}

#[test]
fn submitting_far_more_than_the_pool_holds_waits_instead_of_queueing_everything() {
    let out = run(r#"
        let start = timestamp();
        let futures = [];
        for i in 0..40 { futures.push(pool_submit(|i| { sleep(0.1); i }, i)); }
        let submitting = start.elapsed;
        let total = 0;
        for f in futures { total += f.get(); }
        print(total);
        print(submitting);
    "#);
    let lines = out.lines();
    assert_eq!(lines[0], "780", "{}", out.stderr);
    // Two run at a time and 16 may wait: the loop must have waited for about 11 rounds of 0.1 s.
    let submitting: f64 = lines[1].parse().unwrap();
    assert!(submitting >= 0.6, "submitting took only {submitting}s");
}

#[test]
fn mailboxes_belong_to_processes_not_to_pool_map_items() {
    let out = run(r#"
        try { pool_map(|x| self(), [1]); } catch (e) { print(e); }
    "#);
    assert!(
        out.stdout
            .contains("self() is for the main script and spawned processes"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn a_run_that_ends_normally_waits_for_every_submitted_future() {
    let out = run(r#"
        for i in 0..20 { pool_submit(|i| { sleep(0.02); print(`task ${i}`); }, i); }
    "#);
    let mut lines = out.lines();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), 20, "{}\n{}", out.stdout, out.stderr);
}

#[test]
fn a_run_waiting_for_processes_says_what_it_waits_for() {
    let out = run(r#"
        let p = spawn(|| { sleep(3.6); "late" });
    "#);
    out.ok();
    assert!(
        out.stderr
            .contains("waiting for 1 process(es) still running"),
        "{}",
        out.stderr
    );
}
