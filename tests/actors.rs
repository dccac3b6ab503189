//! Processes as actors, over real worker processes: mailboxes, selective receive, names, monitors,
//! links and supervisors.

mod common;

use common::{Script, mpscript, run};

#[test]
fn selective_receive_takes_the_first_match_and_keeps_the_rest_in_order() {
    let out = run(r#"
        let me = self();
        let p = spawn(|to| { for m in ["a", 1, "b", 2, "c", 3] { to.send(m); } }, me);
        p.join();
        print(recv(|m| type_of(m) == "i64"));
        print(recv(|m| m == "c"));
        let rest = [];
        while true { let m = try_recv(); if m == () { break; } rest.push(m); }
        print(rest);
    "#);
    out.assert_printed(&["1", "c", r#"["a", "b", 2, 3]"#]);
}

#[test]
fn messages_from_one_sender_arrive_in_the_order_sent() {
    let out = run(r#"
        fn count_to(to, name, n) { for i in 0..n { to.send(#{ from: name, i: i }); } }
        spawn(count_to, self(), "a", 2000);
        spawn(count_to, self(), "b", 2000);
        let next = #{ a: 0, b: 0 };
        let bad = 0;
        for n in 0..4000 {
            let m = recv(10);
            if m.i != next[m.from] { bad += 1; }
            next[m.from] = m.i + 1;
        }
        print(`${next.a + next.b} ${bad}`);
    "#);
    assert_eq!(out.ok(), "4000 0\n");
}

#[test]
fn recv_with_a_time_limit_throws_timed_out_and_try_recv_returns_unit() {
    let out = run(r#"
        try { recv(0.2); } catch (e) { print(e); }
        try { recv(|m| m == 1, 0.1); } catch (e) { print(e); }
        print(try_recv() == ());
        self().send(7);
        print(recv(0.0));
    "#);
    out.assert_printed(&[
        "recv timed out after 0.2s: no message arrived",
        "recv timed out after 0.1s: no matching message arrived",
        "true",
        "7",
    ]);
    assert!(out.elapsed.as_secs_f64() >= 0.3, "{:?}", out.elapsed);
}

#[test]
fn self_parent_and_names_let_any_process_reply_to_any_other() {
    let out = run(r#"
        fn server() {
            register("server", self());
            loop {
                let m = recv(10);
                if m.op == "stop" { return "stopped"; }
                m.reply_to.send(#{ answer: m.x * 2, from: self().pid });
            }
        }
        let s = spawn(server);
        while whereis("server") == () { sleep(0.01); }
        print(whereis("server") == s);
        let client = spawn(|| {
            whereis("server").send(#{ op: "double", x: 21, reply_to: self() });
            parent().send(recv(5).answer);
        });
        print(recv(5));
        s.send(#{ op: "stop" });
        print(s.join());
        print(whereis("server"));
        print(parent());
        try { register("main", s); } catch (e) { print(e.contains("has ended")); }
    "#);
    out.assert_printed(&["true", "42", "stopped", "", "", "true"]);
}

#[test]
fn a_full_mailbox_is_a_clear_error_at_the_sender() {
    let script = Script::new(
        r#"
        let idle = spawn(|| sleep(30));
        let sent = 0;
        try { for i in 0..10 { idle.send(i); sent += 1; } } catch (e) { print(e); }
        print(sent);
        idle.kill();
        "#,
    );
    let out = mpscript(&["run", "--max-mailbox", "5", script.path.to_str().unwrap()]);
    let lines = out.lines();
    assert!(
        lines[0].starts_with("the mailbox of process ") && lines[0].contains("is full (5 messages"),
        "{}",
        out.stdout
    );
    assert_eq!(lines[1], "5");
}

#[test]
fn a_monitor_hears_how_a_process_ended_even_when_it_was_killed() {
    let out = run(r#"
        let victim = spawn(|| sleep(30));
        let crasher = spawn(|| { sleep(0.1); throw "boom"; });
        let fine = spawn(|| 1);
        fine.join();
        for p in [victim, crasher, fine] { monitor(p); }
        victim.kill();
        let reasons = #{};
        for n in 0..3 {
            let m = recv(5);
            let who = if m.down == victim.pid { "victim" } else if m.process == crasher { "crasher" } else { "fine" };
            reasons[who] = m.reason;
        }
        print(reasons.victim);
        print(reasons.crasher);
        print(reasons.fine);
    "#);
    out.assert_printed(&["killed by signal 9 (SIGKILL)", "boom", "normal"]);
}

#[test]
fn a_link_ends_the_other_process_unless_it_traps_exits() {
    let out = run(r#"
        let sleeper = spawn(|| { sleep(30); "woke" });
        let crasher = spawn(|s| { link(s); sleep(0.1); throw "crashed"; }, sleeper);
        try { sleeper.join(10); } catch (e) { print(e); }
        print(sleeper.exit_code);

        let trapper = spawn(|| {
            trap_exits(true);
            let c = spawn(|| { sleep(0.1); throw "inner crash"; });
            link(c);
            let m = recv(5);
            `trapped ${m.reason}`
        });
        print(trapper.join(10));

        // A normal end does not take the linked process with it.
        let calm = spawn(|| { sleep(0.5); "still here" });
        let quick = spawn(|c| link(c), calm);
        print(calm.join(10));
    "#);
    let lines = out.lines();
    assert!(
        lines[0].contains("linked process") && lines[0].contains("ended: crashed"),
        "{}",
        out.stdout
    );
    assert_eq!(lines[1], "-9");
    assert_eq!(lines[2], "trapped inner crash");
    assert_eq!(lines[3], "still here");
}

#[test]
fn a_crash_of_a_process_linked_to_the_main_script_ends_the_run() {
    let out = run(r#"
        let p = spawn(|| { sleep(0.2); throw "child crashed"; });
        link(p);
        loop { }
    "#);
    let stderr = out.fails_with(1);
    assert!(
        stderr.contains("linked process") && stderr.contains("child crashed"),
        "{stderr}"
    );
}

#[test]
fn a_supervisor_restarts_crashed_children_and_gives_up_past_its_limit() {
    let out = run(r#"
        let starts = queue();
        let sup = supervise([|| { starts.put(1); sleep(0.05); throw "crash"; }],
                            #{ max_restarts: 3, within: 10 });
        monitor(sup);
        trap_exits(true);
        link(sup);
        let down = recv(|m| "down" in m, 10);
        print(down.reason);
        print(starts.len());
        print(sup.children());
        try { sup.stop(); } catch (e) { print(e.contains("gave up")); }
        print(recv(|m| "exit" in m, 5).reason == down.reason);
    "#);
    let lines = out.lines();
    assert_eq!(
        lines.get(4),
        Some(&"true"),
        "a linked process hears it too: {}",
        out.stdout
    );
    assert_eq!(
        lines[0], "supervisor gave up: child 0 ended (crash) more than 3 times within 10.0s",
        "{}",
        out.stderr
    );
    assert_eq!(lines[1], "4", "the first start and three restarts");
    assert_eq!(lines[2], "[]");
    assert_eq!(lines[3], "true");
}

#[test]
fn one_for_all_restarts_every_child_and_stop_ends_them() {
    let out = run(r#"
        let sup = supervise([|| sleep(30), || sleep(30)], #{ strategy: "one_for_all" });
        let before = sup.children();
        before[0].kill();
        let after = before;
        while after[1] == before[1] { sleep(0.02); after = sup.children(); }
        print(`${after[0] != before[0]} ${before[1].is_alive()}`);
        sup.stop();
        print(`${after[0].is_alive()} ${after[1].is_alive()} ${sup.process.is_alive()}`);
        try { supervise([|| 1], #{ strategy: "rest_for_one" }); } catch (e) { print(e); }
    "#);
    out.assert_printed(&[
        "true false",
        "false false false",
        r#"supervise: strategy must be "one_for_one" or "one_for_all", got "rest_for_one""#,
    ]);
}
