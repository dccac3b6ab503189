//! Cases translated from CPython's `_test_multiprocessing`, `lock_tests` and
//! `test_concurrent_futures`, and the primitives Python users reach for, over real worker processes.

mod common;

use common::run;

#[test]
fn a_barrier_reset_while_parties_wait_fails_them_instead_of_letting_them_through() {
    let out = run(r#"
        let b = barrier(3);
        let waiters = [];
        for i in 0..2 {
            waiters.push(spawn(|b| { let r = (); try { r = `passed as ${b.wait(5)}`; } catch (e) { r = e; } r }, b));
        }
        while b.n_waiting < 2 { sleep(0.01); }
        b.reset();
        for w in waiters { print(w.join(5)); }
        print(b.broken);
        // Usable again after the reset.
        let others = [];
        for i in 0..2 { others.push(spawn(|b| b.wait(5), b)); }
        let arrivals = [b.wait(5)];
        for p in others { arrivals.push(p.join(5)); }
        arrivals.sort();
        print(arrivals);
    "#);
    out.assert_printed(&[
        "the barrier was reset while this party waited",
        "the barrier was reset while this party waited",
        "false",
        "[0, 1, 2]",
    ]);
}

#[test]
fn a_barrier_abort_breaks_it_for_waiting_and_later_parties() {
    let out = run(r#"
        let b = barrier(2);
        print(`${b.parties} ${b.n_waiting} ${b.broken}`);
        let waiter = spawn(|b| { let r = "passed"; try { b.wait(5); } catch (e) { r = e; } r }, b);
        while b.n_waiting < 1 { sleep(0.01); }
        b.abort();
        print(waiter.join(5));
        print(b.broken);
        try { b.wait(1); } catch (e) { print(e); }
        b.reset();
        print(b.broken);
    "#);
    out.assert_printed(&[
        "2 0 false",
        "the barrier is broken (it was aborted); call reset() to use it again",
        "true",
        "the barrier is broken (it was aborted); call reset() to use it again",
        "false",
    ]);
}

#[test]
fn a_semaphore_permit_released_by_another_process_is_not_given_back_twice() {
    // A acquires, another process releases for it, main acquires, A ends: A's end must not give
    // its permit back again, or a third process enters while main holds the only permit.
    let out = run(r#"
        let s = semaphore(1);
        let a = spawn(|s| { s.acquire(); sleep(0.3); }, s);
        sleep(0.1);
        spawn(|s| s.release(), s).join(5);
        print(s.acquire(5));
        a.join(5);
        let third = spawn(|s| s.acquire(0.2), s);
        print(third.join(5));
    "#);
    out.assert_printed(&["true", "false"]);
}

#[test]
fn cancelling_a_cancelled_future_is_true_again() {
    let out = run(r#"
        let busy = [];
        for i in 0..2 { busy.push(pool_submit(|| sleep(0.3))); }
        let waiting = pool_submit(|| 1);
        print(waiting.cancel());
        print(waiting.cancel());
        print(busy[0].cancel());
    "#);
    out.assert_printed(&["true", "true", "false"]);
}

#[test]
fn an_rlock_is_reentrant_and_released_as_often_as_acquired() {
    let out = run(r#"
        let r = rlock();
        print(r.acquire());
        print(r.acquire(0));
        let other = spawn(|r| r.acquire(0.2), r);
        print(other.join(5));
        r.release();
        print(spawn(|r| r.acquire(0.2), r).join(5));
        r.release();
        let next = spawn(|r| { let got = r.acquire(5); r.release(); got }, r);
        print(next.join(5));
        try { r.release(); } catch (e) { print(e.contains("does not hold")); }
        let holder = spawn(|r| { r.acquire(); r.acquire(); sleep(30); }, r);
        sleep(0.2);
        holder.kill();
        print(r.acquire(5));
        r.release();
        print(type_of(r));
    "#);
    out.assert_printed(&[
        "true", "true", "false", "false", "true", "true", "true", "RLock",
    ]);
}

#[test]
fn conditions_wait_notify_and_wait_for_across_processes() {
    let out = run(r#"
        let c = condition();
        let box = queue();
        let waiters = [];
        for i in 0..3 {
            waiters.push(spawn(|c, box, i| {
                c.acquire();
                let woken = c.wait(5);
                box.put(i);
                c.release();
                woken
            }, c, box, i));
        }
        sleep(0.3);
        c.acquire(); c.notify(); c.release();
        print(box.get(5) >= 0);
        print(box.try_get());
        c.acquire(); c.notify_all(); c.release();
        let results = [];
        for w in waiters { results.push(w.join(5)); }
        print(results);

        c.acquire();
        print(c.wait(0.1));
        c.release();
        try { c.notify(); } catch (e) { print(e); }
        try { c.wait(1); } catch (e) { print(e.contains("does not hold")); }

        let counter = queue();
        c.acquire();
        spawn(|c, q| { sleep(0.2); c.acquire(); q.put(1); c.notify(); c.release(); }, c, counter);
        print(c.wait_for(|| counter.len() > 0, 5));
        print(c.wait_for(|| false, 0.1));
        c.release();

        let l = lock();
        let over = condition(l);
        over.acquire();
        print(l.acquire(0));
        over.release();
        print(l.acquire(0));
        try { condition(semaphore(1)); } catch (e) { print(e); }
    "#);
    out.assert_printed(&[
        "true",
        "",
        "[true, true, true]",
        "false",
        "notify() on a condition whose lock this process does not hold: acquire() it first",
        "true",
        "true",
        "false",
        "false",
        "true",
        "condition(lock) needs a lock() or an rlock(), got Semaphore",
    ]);
}

#[test]
fn a_process_that_failed_unobserved_is_reported_once_at_the_end() {
    let out = run(r#"
        fn work(x) {
            if x > 1 { throw `bad ${x}`; }
            x
        }
        spawn(Fn("work"), 2);                                      // never joined: reported
        let joined = spawn(Fn("work"), 3);
        try { joined.join() } catch (e) { print("caught"); }      // seen: not reported
        let watched = spawn(Fn("work"), 4);
        monitor(watched);
        print(recv(5).reason);                                     // seen by a monitor
        let killed = spawn(|| sleep(30));
        killed.kill();                                             // ended on purpose
        spawn(Fn("work"), 1);                                      // returned: nothing to report
        spawn(|| { sleep(0.3); exit(7) });                         // still running at the end
        print("end");
    "#);
    assert_eq!(out.ok(), "caught\nbad 4\nend\n");
    let reports = out
        .stderr
        .matches("a spawned process failed and nothing joined or")
        .count();
    assert_eq!(reports, 2, "{}", out.stderr);
    assert!(out.stderr.contains("bad 2 (worker"), "{}", out.stderr);
    assert!(
        out.stderr.contains("raised here in worker"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("process called exit(7)"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("bad 3") && !out.stderr.contains("bad 4"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_joinable_queue_joins_when_every_item_is_done() {
    let out = run(r#"
        let q = joinable_queue();
        let results = queue();
        for w in 0..2 {
            spawn(|q, results| {
                loop {
                    let item = q.get();
                    if item == () { q.task_done(); return; }
                    sleep(0.02);
                    results.put(item * 10);
                    q.task_done();
                }
            }, q, results);
        }
        for i in 1..=6 { q.put(i); }
        q.join(10);
        print(results.len());
        try { q.join(0.1); print("joined again at once"); } catch (e) { print(e); }
        q.put(()); q.put(());
        q.join(5);
        try { q.task_done(); } catch (e) { print(e); }
        let stuck = joinable_queue(4);
        stuck.put(1);
        try { stuck.join(0.1); } catch (e) { print(e); }
        try { queue().task_done(); } catch (e) { print(e); }
    "#);
    out.assert_printed(&[
        "6",
        "joined again at once",
        "task_done() called more times than items were put",
        "q.join (1 item(s) not yet task_done()) timed out after 0.1s",
        "q.task_done() is for queues made by joinable_queue(); this one was made by queue()",
    ]);
}

#[test]
fn terminate_sends_sigterm_and_kill_sends_sigkill() {
    let out = run(r#"
        let t = spawn(|| sleep(30));
        let k = spawn(|| sleep(30));
        sleep(0.1);
        t.terminate();
        k.kill();
        print(t.exit_code);
        print(k.exit_code);
        try { t.join(); } catch (e) { print(e.contains("SIGTERM")); }
    "#);
    out.assert_printed(&["-15", "-9", "true"]);
}

#[test]
fn pool_map_unordered_takes_the_options_of_pool_map() {
    let out = run(r#"
        let order = [];
        for d in pool_map_unordered(|d| { sleep(d); d }, [0.4, 0.0, 0.2], #{ chunk_size: 1 }) {
            order.push(d);
        }
        print(order);
        let products = [];
        for x in pool_map_unordered(|a, b| a * b, [[2, 3], [4, 5]], #{ spread: true, workers: 1 }) {
            products.push(x);
        }
        products.sort();
        print(products);
        try {
            for x in pool_map_unordered(|x| { sleep(5); x }, [1], #{ timeout: 0.2 }) { print(x); }
        } catch (e) { print(e); }
        try { pool_map_unordered(|x| x, 1..=3, #{ frobs: 1 }); } catch (e) { print(e); }
    "#);
    let lines = out.lines();
    assert_eq!(lines[0], "[0.0, 0.2, 0.4]", "{}", out.stderr);
    assert_eq!(lines[1], "[6, 20]");
    assert!(
        lines[2].starts_with("pool_map_unordered items[0] (1st of 1) failed: the call (worker "),
        "{}",
        lines[2]
    );
    assert!(lines[2].ends_with("timed out after 0.2s"), "{}", lines[2]);
    assert!(
        lines[3].starts_with("pool_map: unknown option `frobs`"),
        "{}",
        lines[3]
    );
}

#[test]
fn pool_map_unordered_retries_an_item_whose_worker_died() {
    let mut live = common::Live::start(
        r#"
        let first_time = queue();
        first_time.put(true);
        let total = 0;
        for x in pool_map_unordered(|x| {
            if x == 7 && first_time.try_get() != () { print(`busy in ${pid()}`); sleep(30); }
            x
        }, 1..=10, #{ retries: 1, chunk_size: 1 }) { total += x; }
        print(total);
        "#,
        &["-j", "2"],
    );
    let line = live.line();
    let worker: i32 = line.rsplit(' ').next().unwrap().parse().unwrap();
    // SAFETY: signalling a worker of this test's own run.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    assert_eq!(live.line(), "55");
    let (code, _, stderr) = live.finish(std::time::Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn leaving_a_pool_map_unordered_loop_early_stops_its_map() {
    let out = run(r#"
        let started = queue();
        for x in pool_map_unordered(|x| { started.put(x); sleep(0.1); x }, 0..200, #{ chunk_size: 1 }) {
            break;
        }
        let t = timestamp();
        print(pool_map(|x| x + 1, [1, 2]));
        sleep(0.3);
        print(started.len() < 20);
        print(t.elapsed < 5.0);
        // From a spawned process, too.
        print(spawn(|| { let s = 0; for x in pool_map_unordered(|x| x * 2, 1..=10) { s += x; } s }).join());
    "#);
    out.assert_printed(&["[2, 3]", "true", "true", "110"]);
}

#[test]
fn as_completed_with_a_time_limit_throws_once_it_passes() {
    let out = run(r#"
        let fs = [pool_submit(|| { sleep(0.05); "quick" }), pool_submit(|| { sleep(1.5); "slow" })];
        let got = [];
        try {
            for f in as_completed(fs, 0.5) { got.push(f.get()); }
        } catch (e) { print(e); }
        print(got);
        fs[1].cancel();
        let all = [];
        for f in as_completed([pool_submit(|| 1), pool_submit(|| 2)], 5) { all.push(f.get()); }
        all.sort();
        print(all);
    "#);
    let lines = out.lines();
    assert_eq!(
        lines[0], "as_completed timed out after 0.5s: 1 of 2 futures not done",
        "{}",
        out.stderr
    );
    assert_eq!(lines[1..], ["[\"quick\"]", "[1, 2]"]);
}

/// Every way a value crosses between processes accepts the same nesting and refuses one level
/// more with the same error at the sending call, and no worker dies of it.
#[test]
fn one_nesting_limit_for_every_path_and_never_a_worker_death() {
    let out = run(r#"
        fn nest(n) { let v = 1; for i in 0..n { v = [v]; } v }
        fn depth(v) { let d = 0; while type_of(v) == "array" { v = v[0]; d += 1; } d }
        fn attempt(label, f) {
            let r = ();
            try { r = `${label}: ${f.call()}`; } catch (e) { r = `${label}: ${e}`; }
            print(r);
        }
        for n in [128, 129] {
            attempt("spawn argument", || spawn(|v| depth(v), nest(n)).join());
            attempt("spawn result", || depth(spawn(|n| nest(n), n).join()));
            attempt("pool_map item", || pool_map(|v| depth(v), [nest(n)]));
            attempt("pool_map result", || depth(pool_map(|n| nest(n), [n])[0]));
            attempt("queue", || { let q = queue(); q.put(nest(n)); spawn(|q| depth(q.get()), q).join() });
            attempt("mailbox", || { let p = spawn(|| depth(recv(5))); p.send(nest(n)); p.join() });
        }
        print(pool_map(|x| x + 1, [1, 2]));
    "#);
    let lines = out.lines();
    assert_eq!(lines.len(), 13, "{}\n{}", out.stdout, out.stderr);
    for line in &lines[..6] {
        assert!(
            line.ends_with(": 128") || line.ends_with(": [128]"),
            "{line}"
        );
    }
    for line in &lines[6..12] {
        assert!(line.contains("nested deeper than 128 levels"), "{line}");
        assert!(!line.contains("died"), "{line}");
    }
    assert_eq!(lines[12], "[2, 3]");
}

#[test]
fn a_value_over_the_frame_limit_fails_at_the_call_instead_of_hanging() {
    let out = run(r#"
        let big = blob(600 * 1024 * 1024);
        try { spawn(|b| b.len(), big).join(); } catch (e) { print(e); }
        try { queue().put(big); } catch (e) { print(e); }
        big = ();
        try { spawn(|| blob(600 * 1024 * 1024)).join(); } catch (e) { print(e); }
        try { pool_map(|x| blob(600 * 1024 * 1024), [1]); } catch (e) { print(e); }
        print(pool_map(|x| x * 2, [1, 2]));
    "#);
    let lines = out.lines();
    assert_eq!(lines.len(), 5, "{}\n{}", out.stdout, out.stderr);
    let limit = "a message of 600.0 MiB exceeds the frame limit of 512 MiB between processes";
    assert_eq!(lines[0], format!("spawn argument: {limit}"));
    assert_eq!(lines[1], format!("q.put: {limit}"));
    assert!(
        lines[2].contains(&format!("cannot be sent back: {limit}")),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("pool_map items[0] (1st of 1) failed"),
        "{}",
        lines[3]
    );
    assert!(lines[3].contains(limit), "{}", lines[3]);
    assert_eq!(lines[4], "[2, 4]");
}

#[test]
fn every_wait_that_runs_out_of_time_answers_alike_in_the_main_script_and_in_a_worker() {
    // A worker's waits are parked in the parent and ended there at their deadline; the main
    // script's waits block; both must answer the same, and leave the objects in the same state.
    let out = run(r#"
        fn waits(e, l, b, c, q, full, sleeper) {
            let out = [];
            out.push(e.wait(0.2));
            out.push(l.acquire(0.2));
            try { q.get(0.2); out.push("got?"); } catch (err) { out.push(`${err}`); }
            c.acquire(); out.push(c.wait(0.2)); c.release(); out.push("condition lock back");
            try { sleeper.join(0.2); out.push("joined?"); } catch (err) { out.push(`${err}`.split(" timed")[1]); }
            try { full.put(1, 0.2); out.push("put?"); } catch (err) { out.push(`${err}`); }
            try { b.wait(0.2); out.push("passed?"); } catch (err) { out.push(`${err}`); }
            out.push(b.broken);
            out
        }
        fn objects(sleeper) {
            let l = lock(); let full = queue(1); full.put(0);
            let holder = spawn(|l| { l.acquire(); sleep(5.0); }, l);
            while l.acquire(0) { l.release(); sleep(0.01); }
            [event(), l, barrier(3), condition(), queue(), full, sleeper, holder]
        }
        let sleeper = spawn(|| sleep(5.0));
        let o = objects(sleeper);
        let main = waits(o[0], o[1], o[2], o[3], o[4], o[5], o[6]);
        o[7].kill();
        let o = objects(sleeper);
        let worker = spawn(|o| waits(o[0], o[1], o[2], o[3], o[4], o[5], o[6]), o).join(10);
        o[7].kill();
        sleeper.kill();
        print(main == worker);
        for x in worker { print(x); }
    "#);
    out.assert_printed(&[
        "true",
        "false",
        "false",
        "q.get timed out after 0.2s: the queue stayed empty",
        "false",
        "condition lock back",
        " out after 0.2s",
        "q.put on a full queue timed out after 0.2s",
        "barrier wait timed out after 0.2s",
        "true",
    ]);
}

#[test]
fn a_future_or_lock_stays_usable_while_any_handle_to_it_is_alive() {
    // wait_any and as_completed answer futures given to them: those count as the same handles,
    // so the record lives while one does, and goes with the last.
    let out = run(r#"
        let f = wait_any([pool_submit(|x| x * 2, 21)]);
        print(f.get());
        let done = [];
        for g in as_completed([pool_submit(|x| x + 1, 1), pool_submit(|x| x + 1, 2)]) { done.push(g); }
        let sum = 0;
        for g in done { sum += g.get(); }
        print(sum);
        fn make() { let l = lock(); let c = condition(l); [l, c] }
        let lc = make();
        lc[1].acquire(); lc[1].notify_all(); lc[1].release();
        print(lc[0].acquire(0));
    "#);
    out.assert_printed(&["42", "5", "true"]);
}
