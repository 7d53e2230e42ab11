//! The operator's console (issue L): the CLI in the supervisorctl manner,
//! the log and event streams (follow, owner scope, resume, bounds, end on
//! revocation), per-tenant use numbers, and `agents stop`; all against a
//! real `slotpack serve` on the local backend.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slotpack_tests::http::read_head;
use slotpack_tests::orchestrator::{Slotpack, ADMIN};
use slotpack_tests::{alive, bin, wait_for};

/// `slotpack ARGS` against `s` as `token`; (exit success, stdout, stderr).
fn cli(s: &Slotpack, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("slotpack"))
        .args(args)
        .args(["--url", &format!("http://{}", s.addr)])
        .env_remove("SLOTPACK_ADMIN_TOKEN")
        .env("SLOTPACK_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `slotpack` command left running, its stdout lines gathered as they come.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn start(s: &Slotpack, token: &str, args: &[&str]) -> Follower {
        let mut child = Command::new(bin("slotpack"))
            .args(args)
            .args(["--url", &s.addr])
            .env_remove("SLOTPACK_ADMIN_TOKEN")
            .env("SLOTPACK_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait until a line containing `text` has come; all lines so far.
    fn wait_line(&mut self, text: &str) -> &[String] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.seen.iter().any(|l| l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line with {text:?}; got {:#?}", self.seen),
            }
        }
        &self.seen
    }

    /// Wait for the command to end by itself; its success.
    fn wait_end(&mut self) -> bool {
        let st = wait_for(Duration::from_secs(20), "the follower ends", || {
            self.child.try_wait().unwrap()
        });
        st.success()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Say `text` through tenant `id`'s own port, so that it prints it.
fn say(s: &Slotpack, id: &str, text: &str) {
    let t = s.call("GET", &format!("/api/tenants/{id}"), "").json();
    let port = t["tenant"]["placement"]["port"].as_u64().unwrap();
    let mut c = TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    write!(
        c,
        "GET /say/{text} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.contains("said"), "{answer}");
}

fn owner_token(s: &Slotpack, owner: &str) -> (String, String) {
    let r = s
        .call("POST", "/api/tokens", &json!({"owner": owner}).to_string())
        .json();
    (
        r["token"].as_str().unwrap().to_string(),
        r["id"].as_str().unwrap().to_string(),
    )
}

fn restarts(s: &Slotpack, id: &str) -> u64 {
    s.call("GET", &format!("/api/tenants/{id}"), "").json()["tenant"]["restarts"]
        .as_u64()
        .unwrap()
}

#[test]
fn the_cli_lists_acts_on_and_deletes_tenants_with_script_fit_output() {
    let s = Slotpack::start(&[]);
    s.create_ok("c-1", json!({}));
    s.create_ok("c-2", json!({}));
    s.wait_pong("c-1");
    s.wait_pong("c-2");
    let (ok, out, err) = cli(&s, ADMIN, &["tenants"]);
    assert!(ok, "{err}");
    println!("{out}");
    let header = out.lines().next().unwrap();
    for col in [
        "ID",
        "STATE",
        "HEALTH",
        "POOL/SLOT",
        "PORT",
        "UPTIME",
        "RESTARTS",
        "MEMORY",
    ] {
        assert!(header.contains(col), "{col} in {header}");
    }
    let line = out.lines().find(|l| l.starts_with("c-1 ")).unwrap();
    assert!(
        line.contains("running") && line.contains("healthy") && line.contains("pool-1/0"),
        "{line}"
    );
    // --json is the API's answer, for scripts.
    let (ok, out, _) = cli(&s, ADMIN, &["tenants", "--json"]);
    assert!(ok);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["tenants"].as_array().unwrap().len(), 2);

    // restart several at once, a line each; restarts counted.
    let before = restarts(&s, "c-1");
    let (ok, out, err) = cli(&s, ADMIN, &["restart", "c-1", "c-2"]);
    assert!(ok, "{err}");
    assert_eq!(out, "c-1: restarted\nc-2: restarted\n");
    wait_for(Duration::from_secs(10), "c-1 restarted", || {
        (restarts(&s, "c-1") > before).then_some(())
    });
    // A restart is a line of the event feed (stop and start are too).
    let ev = s.call("GET", "/api/events?tenant=c-1", "").text();
    assert!(
        ev.contains("tenant.restarted") && ev.contains("by the admin"),
        "{ev}"
    );
    // One unknown among known ones: the others are done, the exit code fails.
    let (ok, out, err) = cli(&s, ADMIN, &["stop", "c-2", "nope"]);
    assert!(!ok);
    assert!(
        out.contains("c-2: stopped") && out.contains("nope: ERROR (404)"),
        "{out}"
    );
    assert!(err.contains("1 of 2 tenants failed"), "{err}");
    let t = s.call("GET", "/api/tenants/c-2", "").json();
    assert_eq!(t["tenant"]["desired"], "stopped");
    let (ok, out, _) = cli(&s, ADMIN, &["start", "c-2", "--json"]);
    assert!(ok);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j[0]["ok"], true, "{j}");
    s.wait_pong("c-2");

    // An owner acts on its own tenants only.
    let (alice, _) = owner_token(&s, "alice");
    let (ok, out, _) = cli(&s, &alice, &["restart", "c-1"]);
    assert!(!ok);
    assert!(out.contains("c-1: ERROR (404)"), "{out}");
    let (ok, out, _) = cli(&s, &alice, &["tenants"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
    // No token: a clear error that says how to give one.
    let (ok, _, err) = cli(&s, "", &["tenants"]);
    assert!(!ok);
    assert!(err.contains("401") && err.contains("--token-file"), "{err}");

    // status says where it asked and how it got its token.
    let dir = s.data.with_extension("token");
    std::fs::write(&dir, format!("{ADMIN}\n")).unwrap();
    let out = Command::new(bin("slotpack"))
        .args(["status", "--url", &s.addr, "--token-file"])
        .arg(&dir)
        .env_remove("SLOTPACK_ADMIN_TOKEN")
        .env_remove("SLOTPACK_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("token from the file"), "{text}");
    std::fs::remove_file(&dir).unwrap();

    let (ok, out, _) = cli(&s, ADMIN, &["delete", "c-1"]);
    assert!(ok);
    assert_eq!(out, "c-1: deleted\n");
    assert_eq!(s.call("GET", "/api/tenants/c-1", "").status, 404);
}

#[test]
fn logs_follow_across_restarts_until_the_tenant_goes_or_the_token_is_revoked() {
    let s = Slotpack::start(&[]);
    let (alice, alice_id) = owner_token(&s, "alice");
    s.create_ok("lg-1", json!({"owner": "alice"}));
    s.wait_pong("lg-1");
    let mut f = Follower::start(&s, &alice, &["logs", "-f", "lg-1"]);
    f.wait_line("listening on");
    // A line printed after the follower started reaches it.
    say(&s, "lg-1", "first-word");
    f.wait_line("said first-word");
    // Across a restart: the new run's lines come on the same stream.
    s.call("POST", "/api/tenants/lg-1/restart", "");
    s.wait_pong("lg-1");
    say(&s, "lg-1", "after-restart");
    f.wait_line("said after-restart");
    // Revoking the owner's token ends the stream.
    let t0 = Instant::now();
    assert_eq!(
        s.call("DELETE", &format!("/api/tokens/{alice_id}"), "")
            .status,
        200
    );
    f.wait_end();
    println!("log stream ended {:?} after the revocation", t0.elapsed());

    // The tenant's deletion ends an admin's follower, which exits cleanly.
    let mut g = Follower::start(&s, ADMIN, &["logs", "--follow", "-n", "1", "lg-1"]);
    g.wait_line("said after-restart");
    let t0 = Instant::now();
    s.call("DELETE", "/api/tenants/lg-1", "");
    assert!(g.wait_end(), "logs -f exits 0 when the tenant is gone");
    println!("log stream ended {:?} after the deletion", t0.elapsed());
    // ?follow=true of an unknown tenant is a 404, not a stream.
    assert_eq!(
        s.call("GET", "/api/tenants/nope/logs?follow=true", "")
            .status,
        404
    );
    assert_eq!(
        s.call("GET", "/api/tenants/lg-1/logs?follow=maybe", "")
            .status,
        400
    );
}

/// A raw `GET path` with `headers`: the answer's head, and the stream.
fn open_stream(
    s: &Slotpack,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, TcpStream) {
    let mut c = TcpStream::connect(&s.addr).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = String::from_utf8(read_head(&mut c)).unwrap();
    (head, c)
}

/// Read from `c` until `text` has come; what was read.
fn read_until(c: &mut TcpStream, text: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(text) {
        let n = c.read(&mut buf).unwrap_or(0);
        assert!(
            n > 0,
            "stream ended before {text:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn the_event_stream_is_owner_scoped_resumable_bounded_and_ends_on_revocation() {
    let s = Slotpack::start(&[("SLOTPACK_MAX_STREAMS_PER_CLIENT", "2")]);
    let (alice, alice_id) = owner_token(&s, "alice");
    // The CLI follows the admin's whole feed and alice's own.
    let mut all = Follower::start(&s, ADMIN, &["events", "-f"]);
    let mut own = Follower::start(&s, &alice, &["events", "-f", "--json"]);
    // Both are up once the admin's feed shows alice's token being made
    // before them; make tenants now.
    std::thread::sleep(Duration::from_millis(500));
    s.create_ok("ev-admin", json!({}));
    s.create_ok("ev-alice", json!({"owner": "alice"}));
    all.wait_line("ev-admin");
    all.wait_line("ev-alice");
    let lines = own.wait_line("ev-alice").to_vec();
    let placed: Value =
        serde_json::from_str(lines.iter().find(|l| l.contains("tenant.placed")).unwrap()).unwrap();
    assert_eq!(placed["tenant"], "ev-alice");
    // alice never sees the admin's tenant, also not later.
    s.call("DELETE", "/api/tenants/ev-alice", "");
    own.wait_line("tenant.removed");
    assert!(
        own.seen.iter().all(|l| !l.contains("ev-admin")),
        "{:#?}",
        own.seen
    );

    // Resume: after Last-Event-ID come exactly the later events, in order.
    let list = s.call("GET", "/api/events?limit=1000", "").json();
    let seqs: Vec<i64> = list["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    let from = seqs[seqs.len() - 3];
    let (head, mut c) = open_stream(
        &s,
        ADMIN,
        "/api/events/stream",
        &[("Last-Event-ID", &from.to_string())],
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("text/event-stream"), "{head}");
    let last = seqs[seqs.len() - 1];
    let text = read_until(&mut c, &format!("id: {last}\n"));
    let got: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(got, seqs[seqs.len() - 2..], "{text}");
    drop(c);
    // A bad Last-Event-ID is a 400.
    let r = slotpack_tests::http::request(
        &s.addr,
        "GET",
        "/api/events/stream",
        &[
            ("Authorization", &format!("Bearer {ADMIN}")),
            ("Last-Event-ID", "soon"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 400);

    // Bounded per credential: alice holds one (the CLI) + one more; the
    // third is a 429 with Retry-After, and another credential is not held
    // back by hers.
    let (h2, _c2) = open_stream(&s, &alice, "/api/events/stream", &[]);
    assert!(h2.starts_with("HTTP/1.1 200"), "{h2}");
    let (h3, _c3) = open_stream(&s, &alice, "/api/tenants/x/logs?follow=true", &[]);
    assert!(h3.starts_with("HTTP/1.1 429"), "{h3}");
    assert!(h3.to_lowercase().contains("retry-after: "), "{h3}");
    let (bob, _) = owner_token(&s, "bob");
    let (hb, _cb) = open_stream(&s, &bob, "/api/events/stream", &[]);
    assert!(hb.starts_with("HTTP/1.1 200"), "{hb}");

    // Revocation ends alice's streams: the CLI exits, the raw one closes.
    let mut c2 = _c2;
    assert_eq!(
        s.call("DELETE", &format!("/api/tokens/{alice_id}"), "")
            .status,
        200
    );
    own.wait_end();
    let mut rest = Vec::new();
    let _ = c2.read_to_end(&mut rest);
    // Her slots are given back: a new token of hers may stream again.
    let (alice2, _) = owner_token(&s, "alice");
    let (h4, _c4) = open_stream(&s, &alice2, "/api/events/stream", &[]);
    assert!(h4.starts_with("HTTP/1.1 200"), "{h4}");
    drop(all);
}

#[test]
fn each_tenant_reports_cpu_memory_and_disk_use_against_its_limits() {
    let s = Slotpack::start(&[]);
    // 40 kB in its home: the numbers show it.
    s.create_ok(
        "use-1",
        json!({"resources": {"memoryMb": 64, "cpuMillis": 100, "diskMb": 20},
               "args": ["--write-home", &format!("big={}", "x".repeat(40_000))]}),
    );
    s.wait_pong("use-1");
    let t = wait_for(Duration::from_secs(30), "use numbers", || {
        let t = s.call("GET", "/api/tenants/use-1", "").json()["tenant"].clone();
        (t["usage"]["memory"]["bytes"].as_u64()? > 0 && t["usage"]["disk"]["bytes"].as_u64()? > 0)
            .then_some(t)
    });
    println!("{}", serde_json::to_string_pretty(&t["usage"]).unwrap());
    let u = &t["usage"];
    let mem = u["memory"]["bytes"].as_u64().unwrap();
    let pct = u["memory"]["percent"].as_f64().unwrap();
    let want = (mem as f64 / (64.0 * 1048576.0) * 1000.0).round() / 10.0;
    assert!((pct - want).abs() < 0.11, "{pct} vs {want}");
    assert!(u["disk"]["bytes"].as_u64().unwrap() >= 40_000, "{u}");
    assert!(u["cpu"]["millis"].is_u64(), "{u}");
    assert!(
        ["healthy", "warning", "critical"].contains(&u["level"].as_str().unwrap()),
        "{u}"
    );
    assert!(t["startedAt"].is_string(), "{t}");
    // The health report and the metrics carry them too.
    s.health_check();
    let m = s.call("GET", "/metrics", "").text();
    for name in [
        "slotpack_tenant_memory_bytes{tenant=\"use-1\"}",
        "slotpack_tenant_disk_bytes{tenant=\"use-1\"}",
        "slotpack_tenant_cpu_millis{tenant=\"use-1\"}",
        "slotpack_tenant_level{tenant=\"use-1\"}",
        "slotpack_tenant_usage_percent{resource=\"memory\",tenant=\"use-1\"}",
    ] {
        assert!(m.contains(name), "{name} missing from the metrics");
    }
    let (ok, out, _) = cli(&s, ADMIN, &["tenants"]);
    assert!(ok);
    let line = out.lines().find(|l| l.starts_with("use-1")).unwrap();
    assert!(line.contains("/64.0M"), "{line}");
}

#[test]
fn agents_stop_ends_a_local_deployments_agents_only_when_serve_is_gone() {
    let mut s = Slotpack::start(&[]);
    s.create_ok("ag-1", json!({}));
    s.wait_pong("ag-1");
    let agents = s.agent_pids();
    assert!(!agents.is_empty());
    let stop = |s: &Slotpack| {
        Command::new(bin("slotpack"))
            .args(["agents", "stop", "--data-dir"])
            .arg(&s.data)
            .env("SLOTPACK_AGENT_BIN", bin("slot-agent"))
            .output()
            .unwrap()
    };
    // While serve holds the data dir it would start them again: refused,
    // naming serve's pid.
    let out = stop(&s);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}", s.pid())), "{err}");
    assert!(agents.iter().all(|(_, p)| alive(*p)));
    // Ctrl-C on serve leaves them (and the tenant) running, and says how
    // to end them.
    s.stop();
    assert!(agents.iter().all(|(_, p)| alive(*p)));
    let said = s.stderr();
    assert!(
        said.contains("keep running") && said.contains("slotpack agents stop --data-dir"),
        "{said}"
    );
    let out = stop(&s);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pool-1: stopped"), "{text}");
    assert!(agents.iter().all(|(_, p)| !alive(*p)), "{text}");
    assert!(s.program_groups().iter().all(|g| !alive(*g)));
    // The tenant was kept: the next serve starts it again.
    s.spawn();
    s.wait_pong("ag-1");
}

#[test]
fn a_command_that_does_not_exist_is_a_400_at_create_and_at_put_and_changes_nothing() {
    let s = Slotpack::start(&[]);
    let r = s.create(
        "ghost",
        json!({"command": "/usr/local/bin/not-installed-here"}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("does not exist"), "{}", r.text());
    assert_eq!(s.call("GET", "/api/tenants/ghost", "").status, 404);
    let r = s.create("ghost", json!({"command": "no-such-command"}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("PATH"), "{}", r.text());
    // A PUT to a missing command is refused; the tenant runs on as it was.
    s.create_ok("real", json!({}));
    s.wait_pong("real");
    let body = slotpack_tests::orchestrator::tenant("real", json!({"command": "/nope/x"}));
    let r = s.call("PUT", "/api/tenants/real", &body.to_string());
    assert_eq!(r.status, 400, "{}", r.text());
    s.wait_pong("real");
    let t = s.call("GET", "/api/tenants/real", "").json();
    assert_eq!(t["tenant"]["state"], "running", "{t}");
    let list = s.call("GET", "/api/tenants", "").json();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1, "{list}");
}
