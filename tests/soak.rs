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
fn twenty_thousand_processes_two_thousand_queues_and_two_hundred_maps_keep_the_parent_flat() {
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
