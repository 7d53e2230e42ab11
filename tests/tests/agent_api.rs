//! The slot-agent HTTP API: auth, bad input, events, metrics, persistence.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use slotpack_tests::agent::{tenant_spec, Agent, TOKEN};
use slotpack_tests::http::request;
use slotpack_tests::{alive, wait_for};

const LONG: Duration = Duration::from_secs(15);

fn assert_error(r: &slotpack_tests::http::Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let j = r.json();
    assert_eq!(j["success"], false);
    assert_eq!(j["error"]["code"], code, "{j}");
    assert!(!j["error"]["message"].as_str().unwrap_or("").is_empty());
}

#[test]
fn auth_is_required_except_for_health_and_metrics() {
    let a = Agent::start(1, &[]);
    let none = request(&a.addr, "GET", "/v1/programs", &[], b"").unwrap();
    assert_error(&none, 401, "unauthorized");
    let wrong = request(
        &a.addr,
        "GET",
        "/v1/programs",
        &[("Authorization", "Bearer nope")],
        b"",
    )
    .unwrap();
    assert_error(&wrong, 401, "unauthorized");
    let basic = request(
        &a.addr,
        "GET",
        "/v1/events",
        &[("Authorization", &format!("Basic {TOKEN}"))],
        b"",
    )
    .unwrap();
    assert_error(&basic, 401, "unauthorized");
    assert_eq!(
        request(&a.addr, "GET", "/v1/health", &[], b"")
            .unwrap()
            .json()["status"],
        "ok"
    );
    assert_eq!(
        request(&a.addr, "GET", "/metrics", &[], b"")
            .unwrap()
            .status,
        200
    );
    assert_eq!(a.call("GET", "/v1/programs", "").json(), json!([]));
}

#[test]
fn bad_input_gets_4xx_json_and_changes_nothing() {
    let a = Agent::start(3, &[]);
    a.put(
        "keep",
        tenant_spec(0, &[], json!({"restart": {"startSecs": 0}})),
    );
    let pid = a.wait_running("keep");
    let before = a.call("GET", "/v1/programs", "").json();
    let files_before = std::fs::read_dir(a.dir.join("programs")).unwrap().count();
    let ok = tenant_spec(1, &[], json!({}));
    let with = |k: &str, v: Value| {
        let mut s = ok.clone();
        s[k] = v;
        s.to_string()
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/v1/programs/new-1",
            with("bogus", json!(1)),
            400,
            "bad_request",
        ),
        (
            "/v1/programs/new-1",
            with("slot", json!(3)),
            400,
            "bad_request",
        ),
        (
            "/v1/programs/new-1",
            with("port", json!(a.port(2))),
            400,
            "bad_request",
        ),
        (
            "/v1/programs/new-1",
            with("port", json!(80)),
            400,
            "bad_request",
        ),
        (
            "/v1/programs/new-1",
            with("slot", json!(-1)),
            400,
            "bad_request",
        ),
        (
            "/v1/programs/new-1",
            with("slot", json!(0)),
            409,
            "conflict",
        ),
        (
            "/v1/programs/new-1",
            with("command", json!("")),
            400,
            "bad_request",
        ),
        (
            "/v1/programs/new-1",
            with("env", json!({"PORT": "1"})),
            400,
            "bad_request",
        ),
        (
            "/v1/programs/new-1",
            with("stop", json!({"signal": "BOOM"})),
            400,
            "bad_request",
        ),
        (
            "/v1/programs/new-1",
            with("ping", json!({"kind": "udp"})),
            400,
            "bad_request",
        ),
        (
            "/v1/programs/new-1",
            with("ping", json!({"kind": "http", "failureThreshold": 0})),
            400,
            "bad_request",
        ),
        (
            "/v1/programs/new-1",
            with("restart", json!({"policy": "sometimes"})),
            400,
            "bad_request",
        ),
        ("/v1/programs/new-1", "{not json".into(), 400, "bad_request"),
        ("/v1/programs/new-1", "".into(), 400, "bad_request"),
        ("/v1/programs/..%2Fx", ok.to_string(), 400, "bad_request"),
        ("/v1/programs/UPPER", ok.to_string(), 400, "bad_request"),
        ("/v1/programs/-lead", ok.to_string(), 400, "bad_request"),
        (
            "/v1/programs/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ok.to_string(),
            400,
            "bad_request",
        ),
    ];
    for (path, body, status, code) in &cases {
        let r = a.call("PUT", path, body);
        assert_error(&r, *status, code);
    }
    // A huge body.
    let huge = with("args", json!(vec!["x".repeat(1000); 200]));
    assert_error(
        &a.call("PUT", "/v1/programs/new-1", &huge),
        413,
        "payload_too_large",
    );
    // Unknown programs, routes, methods and queries.
    assert_error(&a.call("GET", "/v1/programs/nobody", ""), 404, "not_found");
    assert_error(
        &a.call("POST", "/v1/programs/nobody/start", ""),
        404,
        "not_found",
    );
    assert_error(
        &a.call("DELETE", "/v1/programs/nobody", ""),
        404,
        "not_found",
    );
    assert_error(&a.call("GET", "/v1/nothing", ""), 404, "not_found");
    assert_error(
        &a.call("PATCH", "/v1/programs/keep", "{}"),
        405,
        "method_not_allowed",
    );
    assert_error(
        &a.call("GET", "/v1/programs/keep/logs?tail=abc", ""),
        400,
        "bad_request",
    );
    // Nothing changed.
    let after = a.call("GET", "/v1/programs", "").json();
    assert_eq!(before, after);
    assert_eq!(
        std::fs::read_dir(a.dir.join("programs")).unwrap().count(),
        files_before
    );
    assert_eq!(a.status("keep")["pid"].as_i64(), Some(pid as i64));
}

#[test]
fn events_stream_every_state_change() {
    let a = Agent::start(2, &[]);
    let mut s = TcpStream::connect(&a.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("200"), "{line}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if line.to_ascii_lowercase().starts_with("content-type") {
            assert!(line.contains("text/event-stream"), "{line}");
        }
    }
    a.put(
        "ev",
        tenant_spec(0, &[], json!({"restart": {"startSecs": 1}})),
    );
    let mut states = Vec::new();
    while states.len() < 2 {
        line.clear();
        r.read_line(&mut line).unwrap();
        if let Some(data) = line.trim().strip_prefix("data:") {
            let ev: Value = serde_json::from_str(data.trim()).unwrap();
            assert_eq!(ev["id"], "ev");
            assert!(ev["at"].is_string());
            states.push(ev["state"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(states, ["starting", "running"]);
}

#[test]
fn metrics_are_prometheus_text() {
    let a = Agent::start(2, &[]);
    a.put(
        "m1",
        tenant_spec(
            0,
            &[],
            json!({"restart": {"startSecs": 0}, "ping": {"kind": "http", "intervalMs": 100}}),
        ),
    );
    a.wait_status("m1", "pinged", LONG, |s| s["lastPing"]["ok"] == true);
    let r = request(&a.addr, "GET", "/metrics", &[], b"").unwrap();
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let t = r.text();
    for want in [
        "slot_agent_programs 1",
        "slot_agent_program_up{id=\"m1\",slot=\"0\"} 1",
        "slot_agent_program_state{id=\"m1\",state=\"running\"} 1",
        "slot_agent_program_state{id=\"m1\",state=\"stopped\"} 0",
        "slot_agent_program_restarts_total{id=\"m1\"} 0",
        "# TYPE slot_agent_program_restarts_total counter",
        "slot_agent_program_rss_bytes{id=\"m1\"}",
        "slot_agent_program_ping_latency_seconds{id=\"m1\"}",
    ] {
        assert!(t.contains(want), "missing {want} in\n{t}");
    }
    // Every sample line is `name{labels} number`.
    for l in t.lines().filter(|l| !l.starts_with('#')) {
        let v = l.rsplit(' ').next().unwrap();
        assert!(v.parse::<f64>().is_ok(), "bad sample {l}");
    }
}

#[test]
fn a_restarted_agent_brings_its_programs_back() {
    let mut a = Agent::start(3, &[]);
    a.put(
        "p1",
        tenant_spec(0, &[], json!({"restart": {"startSecs": 0}})),
    );
    a.put(
        "p2",
        tenant_spec(2, &[], json!({"restart": {"startSecs": 0}})),
    );
    let old1 = a.wait_running("p1");
    let old2 = a.wait_running("p2");
    // Both up and past their start-up output (a write into the log pipe
    // after the agent died would end them).
    a.wait_slot(0, "/info");
    a.wait_slot(2, "/info");
    // Crash the agent: its programs are left behind.
    a.signal_and_wait(Signal::SIGKILL);
    assert!(alive(old1) && alive(old2));
    a.spawn();
    // The new agent ended the leftovers and started fresh runs on the same ports.
    for (id, old, slot) in [("p1", old1, 0), ("p2", old2, 2)] {
        let pid = a.wait_running(id);
        assert_ne!(pid, old);
        wait_for(LONG, "old run ended", || (!alive(old)).then_some(()));
        wait_for(LONG, "tenant answers", || {
            request(
                &format!("127.0.0.1:{}", a.port(slot)),
                "GET",
                "/info",
                &[],
                b"",
            )
            .ok()
            .filter(|r| r.status == 200 && r.json()["pid"] == pid)
        });
    }
    // Specs on disk are complete JSON (atomic writes leave no temp files).
    for e in std::fs::read_dir(a.dir.join("programs")).unwrap() {
        let p = e.unwrap().path();
        assert!(
            p.extension().is_some_and(|x| x == "json"),
            "{}",
            p.display()
        );
        serde_json::from_slice::<Value>(&std::fs::read(&p).unwrap()).unwrap();
    }
}

#[test]
fn sigterm_stops_all_programs_concurrently_then_exits() {
    let mut a = Agent::start(4, &[]);
    let mut pids = Vec::new();
    for slot in 0..3u16 {
        a.put(
            &format!("s{slot}"),
            tenant_spec(slot, &[], json!({"restart": {"startSecs": 0}})),
        );
    }
    // One that ignores SIGTERM: the agent must SIGKILL it after its timeout.
    a.put(
        "stub",
        tenant_spec(
            3,
            &["--ignore-term"],
            json!({"restart": {"startSecs": 0}, "stop": {"timeoutMs": 500}}),
        ),
    );
    for id in ["s0", "s1", "s2", "stub"] {
        pids.push(a.wait_running(id));
    }
    let status = a.signal_and_wait(Signal::SIGTERM);
    assert!(status.success(), "{status:?}: {}", a.stderr());
    for p in pids {
        assert!(!alive(p), "pid {p} survived the agent");
    }
    // SIGINT works the same.
    a.spawn();
    let p = a.wait_running("s0");
    assert!(a.signal_and_wait(Signal::SIGINT).success());
    assert!(!alive(p));
}

#[test]
fn orphans_are_reaped_by_the_subreaper_agent() {
    let a = Agent::start(2, &[]);
    a.put(
        "orphaner",
        tenant_spec(
            0,
            &["--spawn-orphan-ms", "300"],
            json!({"restart": {"startSecs": 0}}),
        ),
    );
    let pid = a.wait_running("orphaner");
    // The grandchild's parent died, so it was re-parented to the agent.
    let orphan = wait_for(LONG, "orphan re-parented to the agent", || {
        slotpack_tests::children_of(a.pid())
            .into_iter()
            .map(|(p, _)| p)
            .find(|p| *p != pid)
    });
    // It exits after 300 ms and must not stay a zombie.
    wait_for(LONG, "orphan reaped", || {
        (!std::path::Path::new(&format!("/proc/{orphan}")).exists()).then_some(())
    });
    assert!(slotpack_tests::children_of(a.pid())
        .iter()
        .all(|(_, st)| *st != 'Z'));
    let _ = kill(Pid::from_raw(pid), None);
}

#[test]
fn the_agent_refuses_to_start_without_a_token() {
    let out = std::process::Command::new(slotpack_tests::bin("slot-agent"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            "/tmp/slotpack-notoken",
        ])
        .env_remove("SLOT_AGENT_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API token"));
}

#[test]
fn idle_connections_to_the_agent_are_capped_and_closed() {
    let a = Agent::start(
        1,
        &["--max-connections", "32", "--header-timeout-ms", "300"],
    );
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", a.pid()))
            .unwrap()
            .count()
    };
    let before = fds();
    // A flood of connections that never send a byte.
    let mut flood: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&a.addr).unwrap())
        .collect();
    let during = fds();
    assert!(
        during <= before + 32 + 2,
        "{during} descriptors open (from {before}) with a cap of 32"
    );
    // Each one is closed by the agent: at once over the cap, else after
    // the header timeout.
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1];
        match std::io::Read::read(s, &mut buf) {
            Ok(n) => assert_eq!(n, 0, "an idle connection got data"),
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "an idle connection stayed open: {e}"
            ),
        }
    }
    drop(flood);
    // And the API answers as before.
    let r = a.call("GET", "/v1/programs", "");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for(LONG, "descriptors back", || {
        (fds() <= before + 2).then_some(())
    });
}
