//! slot-agent as PID 1 of a real pool container on the local Docker engine.

use std::time::Duration;

use serde_json::{json, Value};
use slotpack_tests::docker::{docker, pool_image, require_docker, Container};
use slotpack_tests::http::{request, Response};
use slotpack_tests::{children_of, wait_for};

const LONG: Duration = Duration::from_secs(20);
const TOKEN: &str = "container-token-9a7";

fn call(api: &str, method: &str, path: &str, body: &Value) -> Response {
    let auth = format!("Bearer {TOKEN}");
    request(
        api,
        method,
        path,
        &[("Authorization", &auth)],
        body.to_string().as_bytes(),
    )
    .unwrap()
}

fn status(api: &str, id: &str) -> Value {
    call(api, "GET", &format!("/v1/programs/{id}"), &Value::Null).json()
}

fn tenant(slot: u32, args: &[&str]) -> Value {
    let mut a = vec!["--host", "0.0.0.0"];
    a.extend_from_slice(args);
    json!({"command": "/usr/local/bin/test-tenant", "args": a, "slot": slot, "restart": {"startSecs": 0},
           "stop": {"timeoutMs": 1000}})
}

#[test]
fn pool_container_runs_programs_reaps_orphans_and_stops_cleanly() {
    if !require_docker("pool container") {
        return;
    }
    let c = Container::run(&[
        "-e",
        &format!("SLOT_AGENT_TOKEN={TOKEN}"),
        "-e",
        "MAX_BOTS_PER_CONTAINER=3",
        "-p",
        "127.0.0.1::8999",
        "-p",
        "127.0.0.1::9000",
        "-p",
        "127.0.0.1::9001",
        "--stop-timeout",
        "20",
        &pool_image(),
    ]);
    let api = c.published("8999/tcp");
    wait_for(LONG, "agent in the container answers", || {
        request(&api, "GET", "/v1/health", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    // The agent is PID 1 of the container.
    let agent = c.inspect("{{.State.Pid}}").parse::<i32>().unwrap();
    let st = std::fs::read_to_string(format!("/proc/{agent}/status")).unwrap();
    assert!(
        st.lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "{st}"
    );

    let r = call(
        &api,
        "PUT",
        "/v1/programs/bot-a",
        &tenant(0, &["--write-home", "secret=s3"]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = call(
        &api,
        "PUT",
        "/v1/programs/bot-b",
        &tenant(
            1,
            &[
                "--spawn-orphan-ms",
                "300",
                "--try-read",
                "/pool/slots/0/secret",
            ],
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Both answer on their published slot ports.
    for port in ["9000/tcp", "9001/tcp"] {
        let addr = c.published(port);
        let body = wait_for(LONG, "tenant ping through the published port", || {
            request(&addr, "GET", "/api/v1/ping", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        assert_eq!(body.text(), r#"{"status":"pong"}"#);
    }
    // The orphan left by bot-b is re-parented to PID 1 and reaped.
    wait_for(LONG, "orphan reaped", || {
        let kids = children_of(agent);
        (kids.len() == 2 && kids.iter().all(|(_, s)| *s != 'Z')).then_some(())
    });
    // Slot users are isolated in the container as well.
    let log = wait_for(LONG, "bot-b report", || {
        let l = call(&api, "GET", "/v1/programs/bot-b/logs?tail=50", &Value::Null).text();
        l.contains("try-read").then_some(l)
    });
    assert!(
        log.contains("try-read /pool/slots/0/secret: denied"),
        "{log}"
    );

    // docker stop sends SIGTERM to PID 1: a clean exit (code 0), not a SIGKILL.
    docker(&["stop", &c.id]);
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0");
    // docker start brings the programs back from the state volume.
    docker(&["start", &c.id]);
    let api = c.published("8999/tcp");
    wait_for(LONG, "programs back after container restart", || {
        request(&api, "GET", "/v1/health", &[], b"")
            .ok()
            .filter(|r| r.status == 200)?;
        let a = status(&api, "bot-a");
        let b = status(&api, "bot-b");
        (a["state"] == "running" && b["state"] == "running").then_some(())
    });
}
