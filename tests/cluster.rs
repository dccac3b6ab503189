//! Many machines on one: a real nats-server per test on a free loopback port with its own store,
//! agents as separate `mpscript worker` processes with different names, and `mpscript run
//! --cluster` against them.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{BIN, Run, Script};

/// A nats-server with JetStream, stopped (by pid) when dropped.
struct Nats {
    child: Child,
    url: String,
    port: u16,
    store: tempfile::TempDir,
    /// The server's options beyond its address and store.
    options: Vec<String>,
    /// What every mpscript process started against it gets beyond the URL.
    flags: Vec<String>,
    /// The token every mpscript process started against it has in its environment.
    token: Option<String>,
}

impl Nats {
    /// Starts one, or `None` where nats-server is not installed (`.ci/run` installs it).
    fn start() -> Option<Nats> {
        Nats::start_with(Vec::new())
    }

    /// One that takes only TLS connections (`tls`'s certificate) with `token`; mpscript processes
    /// get the CA by flag and the token in their environment.
    fn start_tls(tls: &Certificates, token: &str) -> Option<Nats> {
        let options = [
            "--tls",
            "--tlscert",
            &tls.server_cert,
            "--tlskey",
            &tls.server_key,
            "--auth",
            token,
        ];
        let mut nats = Nats::start_with(options.map(String::from).to_vec())?;
        nats.url = format!("tls://localhost:{}", nats.port);
        nats.flags = vec!["--cluster-ca".into(), tls.ca.clone()];
        nats.token = Some(token.into());
        Some(nats)
    }

    fn start_with(options: Vec<String>) -> Option<Nats> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let store = tempfile::tempdir().unwrap();
        let Ok(child) = server(port, store.path(), &options) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is missing; .ci/run installs it"
            );
            eprintln!("nats-server is not installed: skipping");
            return None;
        };
        wait_for(port);
        Some(Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store,
            options,
            flags: Vec::new(),
            token: None,
        })
    }

    /// `mpscript ARGS --cluster URL` with this server's flags and token.
    fn mpscript(&self, bin: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(bin);
        command
            .args(args)
            .args(["--cluster", &self.url])
            .args(&self.flags)
            .env_remove("MPSCRIPT_CLUSTER_TOKEN");
        if let Some(token) = &self.token {
            command.env("MPSCRIPT_CLUSTER_TOKEN", token);
        }
        command
    }

    /// Stops the server (SIGKILL) and starts it again on the same port and store after `down`.
    fn restart(&mut self, down: Duration) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(down);
        let restarted = server(self.port, self.store.path(), &self.options);
        self.child = restarted.expect("nats-server restarts");
        wait_for(self.port);
    }

    /// An agent named `name` with `slots` slots, once it said it is ready; a chunk it had
    /// when it died moves after 2 s.
    fn agent(&self, name: &str, slots: usize) -> Agent {
        self.agent_granting(name, slots, &[])
    }

    /// An agent whose scripts get `grants` (`--allow-read=...`) at most.
    fn agent_granting(&self, name: &str, slots: usize, grants: &[&str]) -> Agent {
        self.agent_of(BIN.as_ref(), name, slots, grants)
    }

    /// An agent run by the mpscript binary at `bin`.
    fn agent_of(&self, bin: &Path, name: &str, slots: usize, grants: &[&str]) -> Agent {
        let mut command = self.mpscript(bin, &["worker"]);
        command
            .args(["--name", name])
            .args(grants)
            .args(["--cluster-ack-wait", "2", "-j"])
            .arg(slots.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A binary just written is busy while a process forked meanwhile still holds it open.
        let mut child = loop {
            match command.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                started => break started.expect("mpscript worker starts"),
            }
        };
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = lines.next().expect("a first line").expect("text");
        assert_eq!(
            ready,
            format!(
                "mpscript worker {name}: ready, {slots} slots on {}",
                self.url
            )
        );
        std::thread::spawn(move || lines.for_each(drop));
        Agent { child }
    }

    fn run(&self, script: &Script, extra: &[&str]) -> Run {
        finished(self.start_run(script, extra))
    }

    fn start_run(&self, script: &Script, extra: &[&str]) -> Child {
        self.mpscript(BIN.as_ref(), &["run"])
            .args(extra)
            .arg(&script.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mpscript runs")
    }
}

fn finished(child: Child) -> Run {
    common::finish(child, "mpscript against the cluster")
}

fn server(port: u16, store: &Path, options: &[String]) -> std::io::Result<Child> {
    Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .args(options)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_map_spreads_over_two_agents_and_comes_back_in_order() {
    let Some(nats) = Nats::start() else { return };
    let _a = nats.agent("host-a", 2);
    let _b = nats.agent("host-b", 2);
    let script = Script::new(
        "let out = pool_map(|x| { sleep(0.02); [x * x, host()] }, 0..40, #{chunk_size: 2});\n\
         let squares = []; for x in 0..40 { squares.push(x * x); }\n\
         print(out.map(|r| r[0]) == squares);\n\
         let hosts = out.map(|r| r[1]);\n\
         print(hosts.contains(\"host-a\") && hosts.contains(\"host-b\"));\n\
         print(hosts.filter(|h| h == \"local\").len());\n\
         print(host());\n",
    );
    let run = nats.run(&script, &["--cluster-only"]);
    run.assert_printed(&["true", "true", "0", "local"]);
}

#[test]
fn remote_output_reaches_the_parent_and_errors_name_the_item() {
    let Some(nats) = Nats::start() else { return };
    let _a = nats.agent("host-a", 1);
    let script = Script::new(
        "fn shout(x) { print(`item ${x}`); debug(`debugging ${x}`); log_warn(`logged ${x}`); x }\n\
         print(pool_map(shout, [1, 2, 3], #{chunk_size: 3}));\n\
         pool_map(|x| if x == 2 { throw \"two is bad\" } else { x }, [1, 2, 3]);\n",
    );
    let run = nats.run(&script, &["--cluster-only"]);
    assert_eq!(
        run.stdout, "item 1\nitem 2\nitem 3\n[1, 2, 3]\n",
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("[host-a] "),
        "debug lines name the host: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(" on host-a "),
        "log records name the host: {}",
        run.stderr
    );
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("two is bad"), "{}", run.stderr);
    let help = run.stderr.split("the function ran in worker ").nth(1);
    let pid_then = help.map(|h| h.trim_start_matches(|c: char| c.is_ascii_digit()));
    assert!(
        pid_then.is_some_and(|h| h.starts_with(" on host-a")),
        "the error names the worker and its host: {}",
        run.stderr
    );
}

#[test]
fn a_server_off_this_machine_needs_tls_and_credentials() {
    let script = Script::new("print(1);\n");
    let run = common::mpscript(&[
        "run",
        "--cluster",
        "nats://192.0.2.1:4222",
        script.path.to_str().unwrap(),
    ]);
    let stderr = run.fails_with(2);
    assert!(
        stderr.contains("TLS") && stderr.contains("credentials"),
        "{stderr}"
    );
    assert_eq!(run.stdout, "", "nothing ran");
    let run = common::mpscript(&["worker", "--cluster", "tls://192.0.2.1:4222"]);
    assert!(
        run.fails_with(2).contains("lacks credentials"),
        "{}",
        run.stderr
    );
    let run = common::mpscript(&["worker", "--cluster", "nats://u:p@127.0.0.1:4222"]);
    assert!(
        run.fails_with(2).contains("carries credentials"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_agent_killed_mid_chunk_loses_nothing_and_with_no_retries_fails_its_running_item() {
    let Some(nats) = Nats::start() else { return };
    let mut a = nats.agent("host-a", 1);
    let _b = nats.agent("host-b", 1);
    // Two 3-second items, one on each agent; host-a is killed while its item runs.
    let source = |retries: u32| {
        format!(
            "let out = pool_map(|x| {{ sleep(3); [x, host()] }}, [1, 2], \
             #{{chunk_size: 1, retries: {retries}}});\n\
             print(out.map(|r| r[0]));\n\
             print(out.map(|r| r[1]).contains(\"host-a\"));\n"
        )
    };
    let again = Script::new(&source(1));
    let run = nats.start_run(&again, &["--cluster-only"]);
    std::thread::sleep(Duration::from_millis(2000));
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let run = finished(run);
    run.assert_printed(&["[1, 2]", "false"]);

    let mut a = nats.agent("host-a", 1);
    let once = Script::new(&source(0));
    let run = nats.start_run(&once, &["--cluster-only"]);
    std::thread::sleep(Duration::from_millis(2000));
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let run = finished(run);
    let stderr = flat(run.fails_with(1));
    let why = "stopped answering on host-a (its chunk went to host-b after the ack wait), while \
               running items[";
    assert!(stderr.contains(why), "{stderr}");
}

#[test]
fn a_dead_agent_s_chunk_is_not_run_again_whole_only_its_unfinished_items_are() {
    let Some(nats) = Nats::start() else { return };
    let mut a = nats.agent("host-a", 1);
    // One chunk of four 1-second items on host-a, killed while it runs the third.
    let script = Script::new(
        "let runs = shared_map();\n\
         let out = pool_map(|x| { runs.add(`${x}`, 1); sleep(1); [x, host()] }, [0, 1, 2, 3], \
         #{chunk_size: 4, retries: 1});\n\
         print(out.map(|r| r[0]));\n\
         print(out.map(|r| r[1]));\n\
         print([runs[\"0\"], runs[\"1\"], runs[\"2\"], runs[\"3\"]]);\n",
    );
    let run = nats.start_run(&script, &["--cluster-only"]);
    // host-b joins once host-a has the chunk (were both pulling, either could get it).
    std::thread::sleep(Duration::from_millis(1000));
    let _b = nats.agent("host-b", 1);
    std::thread::sleep(Duration::from_millis(1500));
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    // Its finished items are kept, the running one runs again and the last one for the first
    // time, both on host-b (a cluster slot replaces a cluster slot under --cluster-only).
    finished(run).assert_printed(&[
        "[0, 1, 2, 3]",
        r#"["host-a", "host-a", "host-b", "host-b"]"#,
        "[1, 1, 2, 1]",
    ]);
}

/// A report as one line: miette wraps long messages to the terminal's width.
fn flat(report: &str) -> String {
    let lines = report
        .lines()
        .map(|l| l.trim().trim_start_matches(['│', '×']).trim());
    lines.collect::<Vec<_>>().join(" ")
}

#[test]
fn a_killed_parent_s_work_stops_on_the_agents_within_15_seconds() {
    let Some(nats) = Nats::start() else { return };
    let _a = nats.agent("host-a", 1);
    let long = Script::new("pool_map(|x| { sleep(60); x }, [1]);\n");
    let mut parent = nats.start_run(&long, &["--cluster-only"]);
    std::thread::sleep(Duration::from_millis(1500));
    parent.kill().unwrap();
    parent.wait().unwrap();
    // The agent's only slot is taken until the dead run's item is stopped.
    let started = Instant::now();
    let quick = Script::new("print(pool_map(|x| x + 1, [1]));\n");
    nats.run(&quick, &["--cluster-only"])
        .assert_printed(&["[2]"]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the slot came free after {:?}",
        started.elapsed()
    );
}

#[test]
fn an_agent_told_to_stop_finishes_what_it_runs_and_exits_0() {
    let Some(nats) = Nats::start() else { return };
    let mut a = nats.agent("host-a", 1);
    let script = Script::new("print(pool_map(|x| { sleep(2); x * 10 }, [4]));\n");
    let run = nats.start_run(&script, &["--cluster-only"]);
    std::thread::sleep(Duration::from_millis(1000));
    unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
    finished(run).assert_printed(&["[40]"]);
    let status = a.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn without_cluster_only_the_local_pool_takes_work_too() {
    let Some(nats) = Nats::start() else { return };
    let _a = nats.agent("host-a", 1);
    let script = Script::new(
        "let hosts = pool_map(|x| { sleep(0.05); host() }, 0..30, #{chunk_size: 1});\n\
         print(hosts.contains(\"local\") && hosts.contains(\"host-a\"));\n",
    );
    nats.run(&script, &["-j", "1"]).assert_printed(&["true"]);
}

#[test]
fn a_stopped_agent_s_late_result_is_dropped() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.agent("host-a", 1);
    let _b = nats.agent("host-b", 1);
    let script = Script::new(
        "let out = pool_map(|x| { sleep(3); x }, [1, 2], #{chunk_size: 1, retries: 1});\n\
         print(out);\n",
    );
    let run = nats.start_run(&script, &["--cluster-only"]);
    std::thread::sleep(Duration::from_millis(1000));
    let pid = a.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(3500));
    unsafe { libc::kill(pid, libc::SIGCONT) };
    finished(run).assert_printed(&["[1, 2]"]);
}

#[test]
fn remote_functions_reach_the_parent_s_queues_and_refuse_what_cannot_work_there() {
    let Some(nats) = Nats::start() else { return };
    let _a = nats.agent("host-a", 2);
    let script = Script::new(
        "let q = queue();\n\
         let m = shared_map();\n\
         pool_map(|x| { q.put(x * 2); m.add(\"n\", 1); x }, [1, 2, 3]);\n\
         let got = [q.get(), q.get(), q.get()];\n\
         got.sort();\n\
         print(got);\n\
         print(m[\"n\"]);\n\
         try { pool_map(|x| spawn(|| 1), [1]); } catch (e) { print(e.contains(\"spawn: this function runs on the cluster agent host-a\")); }\n\
         let a = shared_array(\"int\", 3);\n\
         try { pool_map(|i| a[i], [0]); } catch (e) { print(e.contains(\"cluster agent host-a, which cannot map it\")); }\n",
    );
    nats.run(&script, &["--cluster-only"])
        .assert_printed(&["[2, 4, 6]", "3", "true", "true"]);
}

#[test]
fn a_run_completes_across_a_restart_of_the_server() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let _a = nats.agent("host-a", 2);
    let script = Script::new(
        "let out = pool_map(|x| { sleep(0.25); x * 3 }, 0..24, #{chunk_size: 1});\n\
         let want = []; for x in 0..24 { want.push(x * 3); }\n\
         print(out == want);\n",
    );
    let run = nats.start_run(&script, &["--cluster-only"]);
    std::thread::sleep(Duration::from_millis(1000));
    nats.restart(Duration::from_millis(500));
    finished(run).assert_printed(&["true"]);
}

#[test]
fn a_run_on_an_agent_gets_the_intersection_of_its_grants_and_the_agent_s() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (open, closed) = (dir.path().join("open"), dir.path().join("closed"));
    for d in [&open, &closed] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("f.txt"), "hello").unwrap();
    }
    let agent_grant = format!("--allow-read={}", open.display());
    let _a = nats.agent_granting("host-a", 1, &[&agent_grant]);
    let script = Script::new(&format!(
        "for p in [{:?}, {:?}] {{\n\
           try {{ print(pool_map(|p| read_file(p), [p])[0]); }} catch (e) {{ print(\"denied\"); }}\n\
         }}\n",
        open.join("f.txt").display().to_string(),
        closed.join("f.txt").display().to_string()
    ));
    // The run grants nothing: the agent's grant does not widen it.
    nats.run(&script, &["--cluster-only"])
        .assert_printed(&["denied", "denied"]);
    // The run grants both directories: only what the agent grants too is readable.
    let both = format!("--allow-read={}", dir.path().display());
    nats.run(&script, &["--cluster-only", &both])
        .assert_printed(&["hello", "denied"]);
}

#[test]
fn values_over_the_server_s_message_limit_travel_through_its_object_store() {
    let Some(nats) = Nats::start() else { return };
    let _a = nats.agent("host-a", 2);
    // 3 MiB items in, 2 MiB results out, and a 2 MiB value through a queue, over a 1 MiB limit.
    let script = Script::new(
        "fn big(n, c) { let s = \"\"; s.pad(n, c); s }\n\
         let items = [big(3_000_000, 'a'), big(3_000_001, 'b'), big(10, 'c')];\n\
         let q = queue();\n\
         let out = pool_map(|s| { q.put(big(2_000_000, s[0])); if s.len() > 10 { big(s.len() - 1_000_000, s[0]) } else { s } }, items);\n\
         print(out.map(|s| s.len()));\n\
         print(out[0][1_999_999] == 'a' && out[1][0] == 'b');\n\
         let got = [q.get().len(), q.get().len(), q.get().len()];\n\
         print(got);\n",
    );
    nats.run(&script, &["--cluster-only"]).assert_printed(&[
        "[2000000, 2000001, 10]",
        "true",
        "[2000000, 2000000, 2000000]",
    ]);
}

#[test]
fn an_agent_of_another_build_refuses_the_run_visibly() {
    let Some(nats) = Nats::start() else { return };
    // Another build: this binary with the message format's number in its build id changed.
    let build = concat!(
        "mpscript ",
        env!("CARGO_PKG_VERSION"),
        " (rhai 1.27, wire 1)"
    );
    let other = build.replace("wire 1", "wire 9");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("mpscript-other");
    let mut code = std::fs::read(BIN).unwrap();
    let spots: Vec<usize> = (0..code.len() - build.len())
        .filter(|&i| code[i..].starts_with(build.as_bytes()))
        .collect();
    assert!(!spots.is_empty(), "the build id is in the binary");
    for i in spots {
        code[i..i + other.len()].copy_from_slice(other.as_bytes());
    }
    std::fs::write(&bin, code).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let _old = nats.agent_of(&bin, "host-old", 1, &[]);
    let script = Script::new("print(pool_map(|x| x + 1, [1, 2]));\n");
    let run = nats.run(&script, &["--cluster-only"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let said = flat(&run.stderr);
    assert!(
        said.contains(&format!(
            "refused the run: this agent is {other}, the run is {build} (cluster agent host-old)"
        )),
        "{said}"
    );
}

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1, made with openssl.
struct Certificates {
    _dir: tempfile::TempDir,
    ca: String,
    server_cert: String,
    server_key: String,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name).display().to_string();
        let (ca, ca_key) = (at("ca.pem"), at("ca.key"));
        let (server_cert, server_key, request) = (at("server.pem"), at("server.key"), at("req"));
        let names = at("names");
        std::fs::write(&names, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(&format!(
            "req -x509 -days 2 -subj /CN=ca {key} -keyout {ca_key} -out {ca}"
        ));
        openssl(&format!(
            "req -subj /CN=localhost {key} -keyout {server_key} -out {request}"
        ));
        openssl(&format!(
            "x509 -req -days 2 -in {request} -CA {ca} -CAkey {ca_key} -CAcreateserial \
             -extfile {names} -out {server_cert}"
        ));
        Certificates {
            _dir: dir,
            ca,
            server_cert,
            server_key,
        }
    }
}

/// Runs `openssl ARGS` (the temporary paths in them have no spaces).
fn openssl(args: &str) {
    let made = Command::new("openssl")
        .args(args.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(made.status.success(), "openssl {args}: {made:?}");
}

#[test]
fn tls_and_a_token_carry_a_run_end_to_end_and_a_wrong_one_is_a_clear_error() {
    let tls = Certificates::make();
    let Some(nats) = Nats::start_tls(&tls, "s3cret-token") else {
        return;
    };
    let _a = nats.agent("host-a", 2);
    let script = Script::new("print(pool_map(|x| [x * x, host()], [1, 2, 3]));\n");
    nats.run(&script, &["--cluster-only"])
        .assert_printed(&["[[1, \"host-a\"], [4, \"host-a\"], [9, \"host-a\"]]"]);

    // The token from a file works as well as from the environment; a wrong one is refused.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let mut run = nats.mpscript(BIN.as_ref(), &["run"]);
    let run = run.arg("--cluster-token-file").arg(&wrong);
    let run = run.arg(&script.path).output().unwrap();
    let said = flat(&String::from_utf8_lossy(&run.stderr));
    assert_eq!(run.status.code(), Some(2), "{said}");
    assert!(said.contains("cannot reach the cluster at"), "{said}");
    assert!(said.contains("authorization violation"), "{said}");

    // Without the CA the server's certificate is not trusted.
    let untrusting = Command::new(BIN)
        .args(["run", "--cluster", &nats.url])
        .arg(&script.path)
        .env("MPSCRIPT_CLUSTER_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    let said = flat(&String::from_utf8_lossy(&untrusting.stderr));
    assert_eq!(untrusting.status.code(), Some(2), "{said}");
    assert!(said.contains("cannot reach the cluster at"), "{said}");
    assert!(said.contains("certificate"), "{said}");
}

#[test]
fn functions_typed_in_the_repl_run_on_the_agents() {
    let Some(nats) = Nats::start() else { return };
    let _a = nats.agent("host-a", 2);
    let mut repl = nats.mpscript(BIN.as_ref(), &["repl"]);
    let repl = repl
        .arg("--cluster-only")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The second function is typed after the agent's workers started with the first.
    let input = b"fn sq(x) { x * x }\n\
        pool_map(|x| [sq(x), host()], [1, 2, 3])\n\
        fn cube(x) { x * sq(x) }\n\
        pool_map(cube, [1, 2, 3])\n";
    std::io::Write::write_all(&mut repl.stdin.as_ref().unwrap(), input).unwrap();
    let run = finished(repl);
    assert_eq!(
        run.lines(),
        [
            r#"=> [[1, "host-a"], [4, "host-a"], [9, "host-a"]]"#,
            "=> [1, 8, 27]"
        ],
        "{}",
        run.stderr
    );
}

#[test]
fn with_no_agent_connected_the_local_pool_does_the_work_or_the_run_says_it_waits() {
    let Some(nats) = Nats::start() else { return };
    let script = Script::new("print(pool_map(|x| [x + 1, host()], [1, 2]));\n");
    nats.run(&script, &[])
        .assert_printed(&[r#"[[2, "local"], [3, "local"]]"#]);

    let mut run = nats.start_run(&script, &["--cluster-only"]);
    let mut stderr = BufReader::new(run.stderr.take().unwrap()).lines();
    let said = stderr.next().unwrap().unwrap();
    assert!(
        said.starts_with(&format!(
            "mpscript: no cluster agent is connected to {}",
            nats.url
        )),
        "{said}"
    );
    let _a = nats.agent("host-a", 1);
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[[2, \"host-a\"], [3, \"host-a\"]]\n"
    );
}

#[test]
fn futures_and_unordered_maps_run_on_the_agents() {
    let Some(nats) = Nats::start() else { return };
    let _a = nats.agent("host-a", 2);
    let script = Script::new(
        "let fs = [];\n\
         for x in 0..4 { fs.push(pool_submit(|x, y| [x * y, host()], x, 10)); }\n\
         print(fs.map(|f| f.get()));\n\
         print([pool_submit(|x| x * 2, 21).get(), pool_submit(|x| x / 2.0, 21).get()]);\n\
         let bad = pool_submit(|| throw \"nope\");\n\
         try { bad.get(); } catch (e) { print(e.contains(\"nope\") && e.contains(\" on host-a\")); }\n\
         let got = [];\n\
         for r in pool_map_unordered(|x| [x, host()], [1, 2, 3]) { got.push(r); }\n\
         got.sort(|a, b| a[0] - b[0]);\n\
         print(got);\n",
    );
    nats.run(&script, &["--cluster-only"]).assert_printed(&[
        r#"[[0, "host-a"], [10, "host-a"], [20, "host-a"], [30, "host-a"]]"#,
        "[42, 10.5]",
        "true",
        r#"[[1, "host-a"], [2, "host-a"], [3, "host-a"]]"#,
    ]);
}
