//! Real data from scripts, through the real binary: files, CSV, JSON, regex, images and HTTP (from
//! a server this test runs), every permission rule in the main process and in workers, and the
//! `data_*` examples of `scripts/` on data made here.

mod common;

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::Path,
};

use common::{Run, mpscript_in};

/// A temporary directory with `files` (path, text) in it.
fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Runs `source` as `test.rhai` in `dir` with `flags`.
fn run_in(dir: &Path, flags: &[&str], source: &str) -> Run {
    std::fs::write(dir.join("test.rhai"), source).unwrap();
    let mut args = vec!["run", "-j", "2"];
    args.extend(flags);
    args.push("test.rhai");
    mpscript_in(dir, &args)
}

/// A small HTTP server on a free loopback port: `/a.html`, `/b.html`, `/moved` (to `/a.html`),
/// `/away` (to the same server as `localhost`), `/slow` (never answers), anything else 404.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream, port));
        }
    });
    port
}

fn serve(mut stream: std::net::TcpStream, port: u16) {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        request.push(byte[0]);
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, extra, body) = match path {
        "/a.html" => (
            "200 OK",
            String::new(),
            "<html><title>Page A</title>aaaa</html>",
        ),
        "/b.html" => (
            "200 OK",
            String::new(),
            "<html><title>Page B</title>b</html>",
        ),
        "/moved" => ("302 Found", "Location: /a.html\r\n".into(), ""),
        "/away" => (
            "302 Found",
            format!("Location: http://localhost:{port}/a.html\r\n"),
            "",
        ),
        "/slow" => {
            std::thread::sleep(std::time::Duration::from_secs(30));
            return;
        }
        _ => ("404 Not Found", String::new(), "no such page"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: text/html\r\nX-Test: Yes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// A PNG of `width` x `height` at `path`.
fn png(path: &Path, width: u32, height: u32) {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
    });
    image.save(path).unwrap();
}

#[test]
fn files_csv_json_and_regex_from_the_main_process_and_from_workers() {
    let dir = folder(&[
        ("in/a.txt", "one two\nthree\n"),
        (
            "in/sales.csv",
            "region,amount\nnorth,10\n\"south, east\",\"5\n\"\nwest,7\n",
        ),
        (
            "in/data.json",
            r#"{"n": 12345678901, "f": 0.5, "list": [null, true, "x"]}"#,
        ),
    ]);
    let out = run_in(
        dir.path(),
        &["--allow-read=in,out", "--allow-write=out"],
        r#"
        print(read_file("in/a.txt").len());
        print(read_lines("in/a.txt"));
        print(pool_map(|p| read_lines(p).len(), ["in/a.txt", "in/a.txt"]));
        print(read_csv("in/sales.csv").map(|r| r.region));
        let chunks = csv_chunks("in/sales.csv", 3);
        let sums = pool_map(|c| read_csv(c.path, c).reduce(|s, r| { let a = r.amount; a.trim(); s + parse_int(a) }, 0), chunks);
        print(sums.reduce(|a, b| a + b, 0));
        print(chunks[0].start == 0 && chunks[chunks.len() - 1].end == file_size("in/sales.csv"));
        let j = read_json("in/data.json");
        print([type_of(j.n), j.n, j.f, j.list]);
        make_dir("out/deep");
        write_json("out/deep/x.json", #{text: "tab\there \x1b", list: [1, ()]});
        print(read_file("out/deep/x.json"));
        write_csv("out/rows.csv", [#{a: 1, b: "x,y"}, #{a: 2, b: ()}]);
        print(read_file("out/rows.csv"));
        append_file("out/deep/x.json", "\n");
        print(exists("out/deep/x.json") && is_dir("out/deep") && !exists("out/none"));
        print(glob("in/*.txt") + list_dir("out"));
        print([regex_is_match("a1", `\d`), regex_captures("k=v", `(\w)=(\w)`), regex_replace("a.b.c", `\.`, "-")]);
        print(regex_split("a, b,c", `,\s*`));
        print([path_join("a", "b", "c.txt"), file_name("a/b.txt"), file_stem("a/b.tar.gz"), extension("a/b.txt"), parent_dir("a/b.txt")]);
        remove_file("out/rows.csv");
        print(exists("out/rows.csv"));
        "#,
    );
    out.assert_printed(&[
        "14",
        r#"["one two", "three"]"#,
        "[2, 2]",
        r#"["north", "south, east", "west"]"#,
        "22",
        "true",
        r#"["i64", 12345678901, 0.5, [(), true, "x"]]"#,
        r#"{"list":[1,null],"text":"tab\there \u001b"}"#,
        "a,b",
        "1,\"x,y\"",
        "2,",
        "",
        "true",
        r#"["in/a.txt", "out/deep", "out/rows.csv"]"#,
        r#"[true, ["k=v", "k", "v"], "a-b-c"]"#,
        r#"["a", "b", "c"]"#,
        r#"["a/b/c.txt", "b.txt", "b.tar", "txt", "a"]"#,
        "false",
    ]);
}

#[test]
fn a_denied_access_names_the_flag_in_the_main_process_and_in_workers() {
    let dir = folder(&[("in/a.txt", "a"), ("other/b.txt", "b")]);
    let root = dir.path().canonicalize().unwrap();
    let cases = [
        (r#"read_file("other/b.txt")"#, "read", "other/b.txt"),
        (r#"write_file("in/new.txt", "x")"#, "write", "in/new.txt"),
        (r#"exists("other/b.txt")"#, "read", "other/b.txt"),
        (r#"glob("other/*")"#, "read", "other"),
    ];
    for (call, access, path) in cases {
        let message = format!(
            "{access} access to \"{}\" denied: run again with --allow-{access}={}",
            root.join(path).display(),
            root.join(path).display()
        );
        // Caught and printed, so the message is not wrapped as a report would be.
        let main = run_in(
            dir.path(),
            &["--allow-read=in"],
            &format!("try {{ {call}; }} catch (e) {{ print(e); }}"),
        );
        assert!(main.ok().starts_with(&message), "{}", main.stdout);
        let worker = run_in(
            dir.path(),
            &["--allow-read=in"],
            &format!("try {{ spawn(|| {call}).join(); }} catch (e) {{ print(e); }}"),
        );
        assert!(worker.ok().starts_with(&message), "{}", worker.stdout);
        let report = run_in(dir.path(), &["--allow-read=in"], &format!("{call};"));
        assert!(
            report.fails_with(1).contains("--allow-"),
            "{}",
            report.stderr
        );
    }
    let env = run_in(
        dir.path(),
        &["--allow-env=HOME"],
        r#"print(env("HOME") != ()); try { env("PATH"); } catch (e) { print(e); }"#,
    );
    env.assert_printed(&[
        "true",
        "env access to PATH denied: run again with --allow-env=PATH",
    ]);
    let port = http_server();
    let net = run_in(
        dir.path(),
        &[],
        &format!(
            r#"try {{ pool_map(|u| http_get(u), ["http://127.0.0.1:{port}/a.html"]); }} catch (e) {{ print(e); }}"#
        ),
    );
    assert!(
        net.ok().contains(&format!(
            "net access to 127.0.0.1:{port} denied: run again with --allow-net=127.0.0.1"
        )),
        "{}",
        net.stdout
    );
}

#[test]
fn no_escape_by_dots_or_links_and_a_denial_beats_a_grant() {
    let dir = folder(&[
        ("in/a.txt", "a"),
        ("in/sub/c.txt", "c"),
        ("secret.txt", "s"),
    ]);
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("in/link.txt"),
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path(), dir.path().join("in/up")).unwrap();
    let root = dir.path().canonicalize().unwrap();
    let out = run_in(
        dir.path(),
        &["--allow-read=in", "--allow-write=in", "--deny-read=in/sub"],
        r#"
        print(read_file("in/sub/../a.txt"));
        for path in ["in/../secret.txt", "in/link.txt", "in/up/secret.txt", "in/sub/c.txt"] {
            try { read_file(path); print(`read ${path}`); } catch (e) { print(e); }
        }
        try { write_file("in/link.txt", "overwritten"); } catch (e) { print(e); }
        try { spawn(|| write_file("in/up/secret.txt", "x")).join(); } catch (e) { print("worker refused"); }
        print(glob("in/*.txt"));
        "#,
    );
    let secret = root.join("secret.txt").display().to_string();
    let lines = out.lines();
    assert_eq!(lines[0], "a");
    assert!(
        lines[1].contains(&format!("read access to \"{secret}\" denied")),
        "{lines:?}"
    );
    assert!(
        lines[2].contains(&format!(
            "(a link to \"{secret}\") denied: run again with --allow-read={secret}"
        )),
        "{lines:?}"
    );
    assert!(
        lines[3].contains(&format!("(a link to \"{secret}\")")),
        "{lines:?}"
    );
    assert!(
        lines[4].contains(&format!(
            "--deny-read={} forbids it",
            root.join("in/sub").display()
        )),
        "{lines:?}"
    );
    assert!(lines[5].contains("write access to"), "{lines:?}");
    assert_eq!(lines[6], "worker refused");
    // A link out of the grant is left out of a listing.
    assert_eq!(lines[7], r#"["in/a.txt"]"#);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secret.txt")).unwrap(),
        "s"
    );
}

#[test]
fn grants_reach_processes_spawned_by_workers_and_are_never_widened() {
    let dir = folder(&[("in/a.txt", "inside"), ("out.txt", "outside")]);
    let out = run_in(
        dir.path(),
        &["--allow-read=in"],
        r#"
        let nested = spawn(|| spawn(|| pool_submit(|| read_file("in/a.txt")).get()).join()).join();
        print(nested);
        let refused = spawn(|| spawn(|| {
            let got = "read";
            try { read_file("out.txt"); } catch (e) { got = "refused"; }
            got
        }).join()).join();
        print(refused);
        "#,
    );
    out.assert_printed(&["inside", "refused"]);
}

#[test]
fn http_answers_follow_redirects_hop_by_hop_and_fail_clearly() {
    let dir = folder(&[]);
    let port = http_server();
    let out = run_in(
        dir.path(),
        &["--allow-net=127.0.0.1"],
        &format!(
            r#"
        let base = "http://127.0.0.1:{port}";
        let a = http_get(`${{base}}/a.html`);
        print([a.status, a.body.len(), a.headers["x-test"], a.headers["content-type"]]);
        let moved = http_get(`${{base}}/moved`, #{{timeout: 5}});
        print([moved.status, file_name(moved.url)]);
        print(http_get(`${{base}}/nothing`).status);
        let posted = http_request(#{{method: "post", url: `${{base}}/b.html`, body: "x=1", headers: #{{"x-mine": "1"}}}});
        print(posted.status);
        try {{ http_get(`${{base}}/away`); }} catch (e) {{ print(e); }}
        try {{ http_get(`${{base}}/slow`, #{{timeout: 0.5}}); }} catch (e) {{ print(e); }}
        try {{ http_get("http://127.0.0.1:1/"); }} catch (e) {{ print(e.starts_with("http://127.0.0.1:1/: ")); }}
        "#
        ),
    );
    let lines = out.lines();
    assert_eq!(
        lines[0], r#"[200, 38, "Yes", "text/html"]"#,
        "{}",
        out.stderr
    );
    assert_eq!(lines[1], r#"[200, "a.html"]"#);
    assert_eq!(lines[2], "404");
    assert_eq!(lines[3], "200");
    assert!(
        lines[4].contains(&format!(
            "net access to localhost:{port} denied: run again with --allow-net=localhost"
        )),
        "{lines:?}"
    );
    assert!(
        lines[5].contains("/slow: timed out after 0.5s"),
        "{lines:?}"
    );
    assert_eq!(lines[6], "true");
}

#[test]
fn images_are_measured_and_resized_keeping_their_aspect() {
    let dir = folder(&[]);
    std::fs::create_dir(dir.path().join("img")).unwrap();
    png(&dir.path().join("img/wide.png"), 200, 100);
    let out = run_in(
        dir.path(),
        &["--allow-read=img,out", "--allow-write=out"],
        r#"
        print(image_info("img/wide.png"));
        make_dir("out");
        print(image_resize("img/wide.png", "out/a.jpg", #{width: 50}));
        print(image_resize("img/wide.png", "out/b.png", #{height: 33}));
        print(image_resize("img/wide.png", "out/c.png", #{width: 10, height: 40, filter: "nearest"}));
        print(image_info("out/a.jpg").format + " " + image_info("out/c.png").height);
        try { image_resize("img/wide.png", "out/d.gif", #{width: 5}); } catch (e) { print(e); }
        "#,
    );
    let lines = out.lines();
    assert_eq!(
        lines[0], r#"#{"format": "png", "height": 100, "width": 200}"#,
        "{}",
        out.stderr
    );
    assert_eq!(lines[1], r#"#{"height": 25, "width": 50}"#);
    assert_eq!(lines[2], r#"#{"height": 33, "width": 66}"#);
    assert_eq!(lines[3], r#"#{"height": 40, "width": 10}"#);
    assert_eq!(lines[4], "jpeg 40");
    assert!(
        lines[5].contains("must end in .png, .jpg or .jpeg"),
        "{lines:?}"
    );
}

#[test]
fn log_records_from_every_process_are_written_by_the_main_one_only() {
    let dir = folder(&[]);
    let log = dir.path().join("run.log");
    let out = run_in(
        dir.path(),
        &[
            "--log-level=debug",
            "--log-format=json",
            "--log-file",
            log.to_str().unwrap(),
        ],
        r#"
        log_info("from main");
        pool_map(|x| { log_warn(`item ${x}`); x }, [1, 2, 3]);
        log_debug(#{deep: [1]});
        "#,
    );
    assert_eq!(out.ok(), "");
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5, "{text}");
    assert_eq!(records[0]["message"], "from main");
    assert_eq!(records[0]["level"], "info");
    assert_eq!(records[0]["file"], "test.rhai");
    assert_eq!(records[0]["line"], 2);
    let items: Vec<_> = records.iter().filter(|r| r["level"] == "warn").collect();
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|r| r["line"] == 3 && r["file"] == "test.rhai")
    );
    assert!(
        items.iter().any(|r| r["pid"] != records[0]["pid"]),
        "{text}"
    );
    assert_eq!(records[4]["level"], "debug");
    // Without --log-file, text on stderr; below the level, nothing.
    let quiet = run_in(
        dir.path(),
        &["--log-level=warn"],
        r#"log_info("hidden"); log_error("shown");"#,
    );
    quiet.ok();
    assert!(!quiet.stderr.contains("hidden"), "{}", quiet.stderr);
    assert!(quiet.stderr.contains(" ERROR pid "), "{}", quiet.stderr);
    assert!(
        quiet.stderr.contains("test.rhai:1: shown"),
        "{}",
        quiet.stderr
    );
}

#[test]
fn the_data_examples_print_their_expected_output() {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let expected = |name: &str| std::fs::read_to_string(scripts.join(name)).unwrap();
    let script = |name: &str| scripts.join(name).display().to_string();

    let dir = folder(&[
        (
            "texts/a.txt",
            "The quick brown fox\njumps over the lazy dog\nthe end\n",
        ),
        ("texts/b.txt", "It's the dog's life.\nQuick, quick!\n"),
        ("texts/c.txt", &"the fox and the dog\n".repeat(50)),
    ]);
    let run = mpscript_in(
        dir.path(),
        &[
            "run",
            "--allow-read=texts",
            &script("data_wordcount.rhai"),
            "texts",
        ],
    );
    assert_eq!(run.ok(), expected("data_wordcount.out"), "{}", run.stderr);

    std::fs::create_dir(dir.path().join("photos")).unwrap();
    png(&dir.path().join("photos/one.png"), 640, 480);
    png(&dir.path().join("photos/two.png"), 300, 600);
    let run = mpscript_in(
        dir.path(),
        &[
            "run",
            "--allow-read=photos",
            "--allow-write=thumbs",
            &script("data_thumbnails.rhai"),
            "photos",
            "thumbs",
        ],
    );
    assert_eq!(run.ok(), expected("data_thumbnails.out"), "{}", run.stderr);
    assert!(dir.path().join("thumbs/two.jpg").exists());

    let port = http_server();
    let url = |page: &str| format!("http://127.0.0.1:{port}/{page}");
    let run = mpscript_in(
        dir.path(),
        &[
            "run",
            "--allow-net=127.0.0.1",
            &script("data_fetch.rhai"),
            &url("a.html"),
            &url("b.html"),
            &url("missing.html"),
        ],
    );
    assert_eq!(run.ok(), expected("data_fetch.out"), "{}", run.stderr);
}
