//! Failures, shutdown and hostile peers, over real processes: a crash fails one item, nothing hangs,
//! nothing is orphaned, nobody else gets in.

mod common;

use std::{
    io::{Read, Write},
    time::Duration,
};

use common::{Live, all_gone, run, sockets_of};

const SIGKILL: i32 = 9;

fn kill(pid: u32, signal: i32) {
    // SAFETY: signalling a worker of our own test run.
    unsafe { libc::kill(pid as i32, signal) };
}

/// The pid at the end of a line like "busy in 1234".
fn pid_in(line: &str) -> u32 {
    line.rsplit(' ').next().unwrap().parse().expect("a pid")
}

#[test]
fn a_worker_killed_mid_pool_map_fails_exactly_its_item_and_the_pool_heals() {
    let mut live = Live::start(
        r#"
        fn work(x) {
            if x == 13 { print(`busy in ${pid()}`); sleep(30); }
            x * 2
        }
        try { pool_map(Fn("work"), 0..40, #{ workers: 2 }); } catch (e) { print(e); }
        print(pool_map(|x| x + pid() - pid(), 1..=6, #{ workers: 2 }));
        "#,
        &["-j", "2"],
    );
    let worker = pid_in(&live.line());
    kill(worker, SIGKILL);
    let error = live.line();
    assert!(
        error.starts_with(&format!(
            "pool_map items[13] (14th of 40) failed: worker {worker} died: killed by signal 9 (SIGKILL), while running items[13]"
        )),
        "{error}"
    );
    assert_eq!(live.line(), "[1, 2, 3, 4, 5, 6]", "the next pool_map works");
    let (code, _, stderr) = live.finish(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn retries_rerun_an_item_whose_worker_died_and_lose_nothing() {
    let mut live = Live::start(
        r#"
        let first_time = queue();
        first_time.put(true);
        let r = pool_map(|x| {
            if x == 21 && first_time.try_get() != () { print(`busy in ${pid()}`); sleep(30); }
            x * x
        }, 0..100, #{ workers: 2, retries: 1 });
        let ok = true;
        for i in 0..100 { if r[i] != i * i { ok = false; } }
        print(`${r.len()} ${ok}`);
        "#,
        &["-j", "2"],
    );
    kill(pid_in(&live.line()), SIGKILL);
    assert_eq!(live.line(), "100 true");
    assert_eq!(live.finish(Duration::from_secs(10)).0, Some(0));
}

#[test]
fn a_spawned_process_that_dies_reports_it_through_join_and_exit_code() {
    let mut live = Live::start(
        r#"
        let p = spawn(|| { sleep(30); 1 });
        print(`busy in ${p.pid}`);
        try { p.join(); } catch (e) { print(e); }
        print(`${p.is_alive()} ${p.exit_code}`);
        "#,
        &[],
    );
    let worker = pid_in(&live.line());
    kill(worker, 6); // SIGABRT
    let error = live.line();
    assert!(
        error.contains(&format!(
            "worker {worker} died: killed by signal 6 (SIGABRT)"
        )),
        "{error}"
    );
    assert_eq!(live.line(), "false -6");
    live.finish(Duration::from_secs(10));
}

#[test]
fn a_call_that_loops_forever_times_out_and_the_pool_stays_usable() {
    let out = run(r#"
        let started = timestamp();
        try {
            pool_map(|x| { if x == 3 { loop { } } x }, 0..8, #{ timeout: 0.5 });
        } catch (e) { print(e); }
        print(`${started.elapsed < 5.0}`);
        print(pool_map(|x| x * 3, [1, 2, 3]));
    "#);
    let lines = out.lines();
    assert!(
        lines[0].starts_with("pool_map items[3] (4th of 8) failed: the call (worker ")
            && lines[0].ends_with(") timed out after 0.5s"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1..], ["true", "[3, 6, 9]"]);
}

#[test]
fn a_call_stuck_in_a_wait_is_killed_after_the_grace_period() {
    let out = run(r#"
        let never = queue();
        let started = timestamp();
        try {
            pool_map(|x| { if x == 1 { never.get(); } x }, 0..4, #{ timeout: 0.3, workers: 2 });
        } catch (e) { print(e); }
        print(`${started.elapsed < 5.0}`);
        print(pool_map(|x| x, [7]));
    "#);
    let lines = out.lines();
    assert!(
        lines[0].starts_with("pool_map items[1] (2nd of 4) failed: the call (worker "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("killed after a 1s grace period) timed out after 0.3s"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1..], ["true", "[7]"]);
}

#[test]
fn sigint_stops_the_run_with_130_and_leaves_no_worker() {
    let mut live = Live::start(
        r#"
        let p = spawn(|| { sleep(60); });
        print(`busy in ${p.pid}`);
        pool_map(|x| { print(`busy in ${pid()}`); sleep(60); x }, 1..=2, #{ workers: 2, chunk_size: 1 });
        "#,
        &[],
    );
    let workers = [live.line(), live.line(), live.line()].map(|l| pid_in(&l));
    live.signal(libc::SIGINT);
    let started = std::time::Instant::now();
    let (code, _, stderr) = live.finish(Duration::from_secs(5));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        all_gone(&workers, Duration::from_secs(1)),
        "workers {workers:?} outlived Ctrl-C"
    );
    assert!(
        !stderr.contains("mpscript worker"),
        "workers complained: {stderr}"
    );
}

#[test]
fn sigterm_exits_143() {
    let mut live = Live::start("print(\"ready\"); loop { }", &[]);
    assert_eq!(live.line(), "ready");
    live.signal(libc::SIGTERM);
    assert_eq!(live.finish(Duration::from_secs(5)).0, Some(143));
}

#[test]
fn workers_exit_by_themselves_when_the_parent_is_killed() {
    let mut live = Live::start(
        r#"
        let p = spawn(|| { sleep(60); });
        print(`busy in ${p.pid}`);
        pool_map(|x| { print(`busy in ${pid()}`); loop { } }, 1..=2, #{ workers: 2, chunk_size: 1 });
        "#,
        &[],
    );
    let workers = [live.line(), live.line(), live.line()].map(|l| pid_in(&l));
    let parent = live.pid();
    assert!(
        !sockets_of(parent).is_empty(),
        "the run's socket is listed while it runs"
    );
    live.child.kill().unwrap(); // SIGKILL: no chance to clean up
    live.child.wait().unwrap();
    assert!(
        all_gone(&workers, Duration::from_secs(1)),
        "orphans: {workers:?}"
    );
    assert!(sockets_of(parent).is_empty(), "a socket outlived its run");
}

#[test]
fn a_foreign_connection_is_refused_and_the_script_is_unaffected() {
    let mut live = Live::start(
        r#"
        let q = queue();
        print(spawn(|q| { q.put("from a worker"); 1 }, q).join());
        print("ready");
        sleep(1.5);
        print(`${q.get()} ${q.try_get() ?? "and nothing else"}`);
        print(pool_map(|x| x * 2, [1, 2]));
        "#,
        &[],
    );
    assert_eq!([live.line(), live.line()], ["1", "ready"]);
    let socket = sockets_of(live.pid()).pop().expect("the run's socket");
    use interprocess::local_socket::{GenericNamespaced, Stream, ToNsName, prelude::*};
    let connect = || {
        let stream = Stream::connect(socket.as_str().to_ns_name::<GenericNamespaced>().unwrap())
            .expect("the abstract socket accepts a connection");
        stream
            .set_recv_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    };
    // A well-formed hello with the wrong token, then bytes that are no frame at all. The hello
    // is the protocol's first message (variant 0 of what a worker sends), written as a stranger
    // who read the source would write it.
    #[derive(serde::Serialize)]
    enum FromWorker {
        Hello {
            token: String,
            worker: u64,
            pid: u32,
        },
    }
    let hello = FromWorker::Hello {
        token: "0".repeat(32),
        worker: 1,
        pid: std::process::id(),
    };
    let payload = postcard::to_stdvec(&hello).unwrap();
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend(payload);
    for bytes in [frame, b"\xff\xff\xff\x7fGET / HTTP/1.1\r\n".to_vec()] {
        let mut stream = connect();
        stream.write_all(&bytes).unwrap();
        let mut rest = Vec::new();
        let n = stream.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(
            n, 0,
            "the runtime must say nothing to a stranger and hang up"
        );
    }
    let (code, rest, stderr) = live.finish(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(rest, ["from a worker and nothing else", "[2, 4]"]);
    let me = std::process::id();
    assert!(
        stderr.contains(&format!(
            "refused a connection from pid {me}: wrong session token"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("frame length 2147483647 exceeds"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("refused a connection").count(),
        2,
        "{stderr}"
    );
}

#[test]
fn limits_apply_in_workers_with_clear_errors() {
    let script = common::Script::new(
        r#"
        try { pool_map(|x| { let n = 0; loop { n += 1; } }, [1]); } catch (e) { print(e); }
        try { spawn(|| { let a = []; a.pad(100, 0); a }).join(); } catch (e) { print(e); }
        fn deep(n) { deep(n + 1) }
        try { spawn(|| deep(0)).join(); } catch (e) { print(e); }
        "#,
    );
    let out = common::mpscript(&[
        "run",
        "--max-operations",
        "100000",
        "--max-array-size",
        "50",
        "--max-call-depth",
        "20",
        script.path.to_str().unwrap(),
    ]);
    let lines = out.lines();
    assert_eq!(lines.len(), 3, "{}\n{}", out.stdout, out.stderr);
    assert!(lines[0].contains("Too many operations"), "{}", lines[0]);
    assert!(lines[1].contains("Size of array"), "{}", lines[1]);
    assert!(lines[2].contains("Stack overflow"), "{}", lines[2]);
}

#[test]
fn scripts_have_no_file_access_unless_a_module_dir_is_given() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("helper.rhai"), "fn triple(x) { x * 3 }").unwrap();
    let main = dir.path().join("main.rhai");
    std::fs::write(
        &main,
        "import \"helper\" as h;\nprint(h::triple(2));\nprint(pool_map(|x| { import \"helper\" as h; h::triple(x) }, [1, 2]));\n",
    )
    .unwrap();
    let refused = common::mpscript(&["run", main.to_str().unwrap()]);
    assert!(
        refused.fails_with(1).contains("Module not found: helper"),
        "{}",
        refused.stderr
    );
    let allowed = common::mpscript(&[
        "run",
        "--module-dir",
        dir.path().to_str().unwrap(),
        main.to_str().unwrap(),
    ]);
    assert_eq!(allowed.ok(), "6\n[3, 6]\n");
}

#[test]
fn strangers_that_connect_and_trickle_are_bounded_in_number_and_time() {
    let mut live = Live::start(
        r#"
        let started = queue(); // the socket exists once the runtime has started
        print("ready");
        sleep(1.0);
        // Workers still start while strangers hold connections open.
        print(pool_map(|x| x * 2, [1, 2, 3], #{ workers: 3 }));
        sleep(7.0);
        print(pool_map(|x| x + 1, [1, 2]));
        "#,
        &[],
    );
    assert_eq!(live.line(), "ready");
    let socket = sockets_of(live.pid()).pop().expect("the run's socket");
    use interprocess::local_socket::{GenericNamespaced, Stream, ToNsName, prelude::*};
    let name = socket.as_str().to_ns_name::<GenericNamespaced>().unwrap();
    // 200 connections whose hello claims 64 bytes, then trickles them one every 400 ms: each
    // byte arrives well within any per-read timeout, so only a deadline for the whole hello ends it.
    let strangers: Vec<Stream> = (0..200)
        .filter_map(|_| Stream::connect(name.clone()).ok())
        .collect();
    let is_hung_up = |s: &Stream| {
        s.set_recv_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut byte = [0u8; 1];
        match (&*s).read(&mut byte) {
            Ok(n) => n == 0,
            // Closed with our bytes unread: reset. Still open: the read timed out.
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    };
    let trickle = |strangers: &[Stream], rounds: usize| {
        for round in 0..rounds {
            for s in strangers {
                let byte: &[u8] = if round == 0 { &[64, 0, 0, 0] } else { &[7] };
                let _ = (&*s).write_all(byte);
            }
            std::thread::sleep(Duration::from_millis(400));
        }
    };
    trickle(&strangers, 2);
    // Only 64 may be saying hello at once: the rest were hung up on as newer ones came.
    let early = strangers.iter().filter(|s| is_hung_up(s)).count();
    assert!(early >= 200 - 64, "only {early} of 200 hung up on at once");
    assert_eq!(live.line(), "[2, 4, 6]");
    trickle(&strangers, 14);
    let late = strangers.iter().filter(|s| is_hung_up(s)).count();
    assert_eq!(
        late,
        strangers.len(),
        "a trickling stranger outlived the hello deadline"
    );
    assert_eq!(live.line(), "[2, 3]");
    let (code, _, stderr) = live.finish(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    // Refusals are logged at most five a second; the rest are counted.
    let lines = stderr.matches("refused a connection").count();
    assert!(lines <= 40, "{lines} refusal lines:\n{stderr}");
    assert!(
        stderr.contains("more connection(s) in the last second"),
        "{stderr}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_flood_of_strangers_at_a_low_descriptor_limit_does_not_stop_workers_from_starting() {
    // 128 descriptors in all; strangers connect as fast as they can, holding up to 1,100
    // connections, while the script starts 30 workers. Strangers may hold an eighth of the limit
    // saying hello (and as many waiting to be read); the workers' own connections are never
    // dropped to make room for them.
    let mut live = Live::start_limited(
        r#"
        let started = queue(); // the socket exists once the runtime has started
        print("ready");
        sleep(1.0);
        let ps = [];
        for i in 0..30 { ps.push(spawn(|x| { sleep(1.0); x }, i)); }
        let sum = 0;
        for p in ps { sum += p.join(); }
        print(sum);
        "#,
        128,
    );
    assert_eq!(live.line(), "ready");
    let socket = sockets_of(live.pid()).pop().expect("the run's socket");
    use interprocess::local_socket::{GenericNamespaced, Stream, ToNsName, prelude::*};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let name = socket.as_str().to_ns_name::<GenericNamespaced>().unwrap();
            let mut held = std::collections::VecDeque::new();
            let mut connected = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match Stream::connect(name.clone()) {
                    Ok(s) => {
                        connected += 1;
                        held.push_back(s);
                        if held.len() > 1_100 {
                            held.pop_front();
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            connected
        })
    };
    let sum = live.line();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let connected = flood.join().unwrap();
    assert_eq!(sum, "435");
    assert!(
        connected > 1_100,
        "the flood made only {connected} connections"
    );
    let (code, _, stderr) = live.finish(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
}
