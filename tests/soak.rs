//! A long run keeps the main process flat: the records, sockets and ids of processes that ended
//! and queues that were dropped are freed, so descriptors and memory do not grow with the count.

mod common;

use std::time::Duration;

use common::Live;

/// Descriptors and resident memory of a live process, from /proc.
#[cfg(target_os = "linux")]
fn footprint(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0);
    (fds, rss_kib)
}

#[cfg(target_os = "linux")]
#[test]
fn a_long_run_of_processes_queues_maps_locks_and_futures_keeps_the_parent_flat() {
    let mut live = Live::start(
        r#"
        for round in 0..10 {
            for batch in 0..200 {
                let ps = [];
                for j in 0..10 { ps.push(spawn(|x| x + 1, j)); }
                for p in ps { p.join(); }
            }
            for i in 0..200 { let q = queue(); q.put(i); q.get(); }
            for i in 0..20 { pool_map(|x| x * 2, 1..100); }
            for i in 0..500 {
                let l = lock(); l.acquire(); l.release();
                let c = condition(); let e = event(); e.set(); let b = barrier(1); b.wait();
            }
            let futures = [];
            for i in 0..40 { futures.push(pool_submit(|x| x + 1, i)); }
            for f in futures { f.get(); }
            for i in 0..10 { pool_submit(|x| x + 1, i); } // dropped unread
            print(`round ${round}`);
            sleep(0.3);
        }
        "#,
        &["-j", "2"],
    );
    let mut samples = Vec::new();
    for round in 0..10 {
        assert_eq!(live.line(), format!("round {round}"));
        std::thread::sleep(Duration::from_millis(100));
        samples.push(footprint(live.pid()));
    }
    let (code, _, stderr) = live.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    // After the first rounds have warmed everything up, nothing grows with the count.
    let (fds_warm, rss_warm) = samples[2];
    let (fds_end, rss_end) = samples[9];
    assert!(fds_end <= fds_warm + 4, "descriptors grew: {samples:?}");
    assert!(
        rss_end <= rss_warm + 2048,
        "memory grew by more than 2 MiB: {samples:?}"
    );
}

/// CPU time (user + system) a live process has used, in clock ticks.
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the command name: field 14 (utime) and 15 (stime) of proc(5), 1-based from the pid.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

#[cfg(target_os = "linux")]
#[test]
fn processes_blocked_in_waits_cost_the_parent_no_cpu_and_no_thread_each() {
    // 180 processes, each blocked in one kind of wait, timed or not.
    let mut live = Live::start(
        r#"
        let e = event(); let l = lock(); let s = semaphore(1); let b = barrier(21);
        let c = condition(); let q = queue(); let full = queue(1); full.put(0);
        l.acquire(); s.acquire();
        let ps = [];
        for i in 0..20 {
            ps.push(spawn(|e| e.wait(), e));
            ps.push(spawn(|e| e.wait(60.0), e));
            ps.push(spawn(|l| { l.acquire(); l.release(); true }, l));
            ps.push(spawn(|s| { let ok = s.acquire(60.0); s.release(); ok }, s));
            ps.push(spawn(|b| b.wait(60.0) >= 0, b));
            ps.push(spawn(|c| { c.acquire(); let r = c.wait(60.0); c.release(); r }, c));
            ps.push(spawn(|q| q.get(60.0) >= 0, q));
            ps.push(spawn(|full| { full.put(1, 60.0); true }, full));
        }
        for i in 0..20 { ps.push(spawn(|p| p.join(60.0), ps[i])); }
        print("waiting");
        sleep(4.0);
        e.set(); l.release(); s.release(); b.wait(10.0);
        for i in 0..20 { q.put(i); }
        c.acquire(); c.notify_all(); c.release();
        for i in 0..20 { full.get(10.0); }
        let all = true;
        for p in ps { all = all && p.join(20.0); }
        print(`done ${all} ${ps.len()} ${full.len()}`);
        "#,
        &[],
    );
    assert_eq!(live.line(), "waiting");
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(live.pid());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(live.pid()) - before;
    // One reader thread per worker; the waits themselves are parked, with no thread each (a
    // thread per wait made it 345).
    let threads = std::fs::read_dir(format!("/proc/{}/task", live.pid())).map_or(0, |d| d.count());
    assert_eq!(live.line(), "done true 180 1");
    assert!(
        threads < 180 + 30,
        "{threads} threads for 180 waiting processes"
    );
    // 200 waits polled every 20 ms cost about a tenth of a core; woken waits cost nothing.
    assert!(
        used <= 9,
        "the parent used {used} ticks in 3 s while every process waited"
    );
    let (code, _, stderr) = live.finish(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_record_stays_while_handles_made_elsewhere_may_still_ask_about_it() {
    let out = common::run(
        r#"
        // The main script drops its own handle; the process sends its self() handle back.
        let p = spawn(|| { parent().send(self()); sleep(0.1); 5 });
        p = ();
        let h = recv(5);
        sleep(0.4);
        print(h.join());
        // A monitor's notice carries a handle too.
        let w = spawn(|| 7);
        monitor(w);
        w = ();
        print(recv(5).process.exit_code);
        // And whereis() hands out the registered one.
        let named = spawn(|| { register("named", self()); 9 });
        named.join();
        named = ();
        print(whereis("named"));
        "#,
    );
    out.assert_printed(&["5", "0", ""]);
}
