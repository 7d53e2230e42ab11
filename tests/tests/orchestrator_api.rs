//! The slotpack REST API over real sockets, with real pool agents.

use serde_json::{json, Value};
use slotpack_tests::http::{request, Response};
use slotpack_tests::orchestrator::{tenant, Slotpack, ADMIN};

fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let j = r.json();
    assert_eq!(j["success"], false, "{j}");
    assert_eq!(j["error"]["code"], code, "{j}");
    assert!(!j["error"]["message"].as_str().unwrap_or("").is_empty());
}

#[test]
fn tenants_are_placed_in_port_blocks_and_pools_only_grow_when_full() {
    let s = Slotpack::start(&[]);
    let mut ports = Vec::new();
    for i in 0..4 {
        let c = s.create_ok(&format!("bot-{i}"), json!({}));
        assert_eq!(c["success"], true);
        assert_eq!(c["placement"], c["tenant"]["placement"]);
        ports.push((
            c["placement"]["poolId"].as_str().unwrap().to_string(),
            c["placement"]["port"].as_u64().unwrap() as u16,
        ));
    }
    let b = s.base_port;
    // 3 slots per pool: pool-1 takes the first block, pool-2 the next.
    assert_eq!(
        ports,
        vec![
            ("pool-1".into(), b),
            ("pool-1".into(), b + 1),
            ("pool-1".into(), b + 2),
            ("pool-2".into(), b + 3)
        ]
    );
    for i in 0..4 {
        s.wait_pong(&format!("bot-{i}"));
    }
    // Health in the status is live: no health tick has run since these
    // tenants were created, yet they are reported healthy.
    let st = slotpack_tests::wait_for(
        std::time::Duration::from_secs(10),
        "live healthy status",
        || {
            let st = s.call("GET", "/api/pool/status", "").json();
            (st["health"]["status"] == "healthy").then_some(st)
        },
    );
    assert_eq!(st["health"]["bots"], json!({"total": 4, "healthy": 4}));
    assert_eq!(st["success"], true);
    assert_eq!(st["poolMode"], true);
    assert_eq!(st["totalPools"], 2);
    assert_eq!(st["totalBots"], 4);
    assert_eq!(st["pools"][0]["id"], "pool-1");
    assert_eq!(st["pools"][0]["containerName"], "slotpack-pool-1");
    assert_eq!(st["pools"][0]["status"], "running");
    assert_eq!(st["pools"][0]["botsCount"], 3);
    assert_eq!(st["pools"][0]["capacity"], 3);
    assert_eq!(st["pools"][0]["utilizationPercent"], 100);
    assert_eq!(st["pools"][0]["bots"], json!(["bot-0", "bot-1", "bot-2"]));
    assert_eq!(st["pools"][1]["utilizationPercent"], 33);
    // Once the agents' own pings succeeded, a health tick finds all healthy.
    let h = slotpack_tests::wait_for(std::time::Duration::from_secs(10), "healthy tick", || {
        let h = s.health_check();
        (h["issues"] == json!([])).then_some(h)
    });
    assert_eq!(h["success"], true);
    assert!(h["timestamp"].is_string() && h["durationMs"].is_number());
    assert_eq!(h["bots"].as_array().unwrap().len(), 4);
    assert_eq!(h["issues"], json!([]), "{h}");
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(
        st["health"],
        json!({"status": "healthy", "pools": {"total": 2, "healthy": 2}, "bots": {"total": 4, "healthy": 4}})
    );

    // A freed slot is reused before a new pool is made.
    assert_eq!(s.call("DELETE", "/api/tenants/bot-1", "").status, 200);
    let c = s.create_ok("bot-9", json!({}));
    assert_eq!(c["placement"]["port"], b + 1);
    // Emptying pool-2 lets cleanup remove it; its block is reused by the next pool.
    assert_eq!(s.call("DELETE", "/api/tenants/bot-3", "").status, 200);
    let agents_before = s.agent_pids();
    let r = s.call("POST", "/api/pool/cleanup", "").json();
    assert_eq!(
        r,
        json!({"success": true, "removedPools": 1, "message": "Cleaned up 1 empty pool containers"})
    );
    let gone = agents_before
        .iter()
        .find(|(id, _)| id == "pool-2")
        .unwrap()
        .1;
    slotpack_tests::wait_for(
        std::time::Duration::from_secs(20),
        "pool-2 agent gone",
        || (!slotpack_tests::alive(gone)).then_some(()),
    );
    let c = s.create_ok("bot-10", json!({}));
    assert_eq!(c["placement"]["poolId"], "pool-3");
    assert_eq!(c["placement"]["port"], b + 3);
    s.wait_pong("bot-10");
}

#[test]
fn bot_info_and_tenant_views() {
    let s = Slotpack::start(&[]);
    s.create_ok("user-bot-1", json!({}));
    let port = s.wait_pong("user-bot-1");
    let i = s.call("GET", "/api/pool/bot/user-bot-1", "").json();
    assert_eq!(
        i,
        json!({"success": true, "instanceId": "user-bot-1", "isPooled": true, "mode": "pooled",
               "connection": {"host": "127.0.0.1", "port": port, "url": format!("http://127.0.0.1:{port}")}})
    );
    let t = slotpack_tests::wait_for(
        std::time::Duration::from_secs(10),
        "running and healthy",
        || {
            let t = s.call("GET", "/api/tenants/user-bot-1", "").json();
            (t["tenant"]["state"] == "running" && t["tenant"]["healthy"] == true).then_some(t)
        },
    );
    assert_eq!(t["tenant"]["desired"], "running");
    assert_eq!(t["tenant"]["owner"], "admin");
    assert_eq!(
        t["tenant"]["resources"],
        json!({"memoryMb": 64, "cpuMillis": 10, "diskMb": 1024})
    );
    let l = s.call("GET", "/api/tenants", "").json();
    assert_eq!(l["tenants"].as_array().unwrap().len(), 1);
    // Stop, start, restart.
    let r = s.call("POST", "/api/tenants/user-bot-1/stop", "").json();
    assert_eq!(r["tenant"]["state"], "stopped");
    assert_eq!(r["tenant"]["desired"], "stopped");
    assert!(request(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/api/v1/ping",
        &[],
        b""
    )
    .is_err());
    let r = s.call("POST", "/api/tenants/user-bot-1/start", "").json();
    assert_eq!(r["tenant"]["desired"], "running");
    s.wait_pong("user-bot-1");
    let r = s.call("POST", "/api/tenants/user-bot-1/restart", "").json();
    assert!(r["tenant"]["restarts"].as_u64() >= Some(1), "{r}");
    // Logs come from the agent.
    let logs = s.call("GET", "/api/tenants/user-bot-1/logs?tail=5", "");
    assert_eq!(logs.status, 200);
    assert!(
        logs.text().contains("test-tenant: listening"),
        "{}",
        logs.text()
    );
}

#[test]
fn owners_see_and_change_only_their_own_tenants() {
    let s = Slotpack::start(&[]);
    let mk = |owner: &str| -> String {
        let r = s.call("POST", "/api/tokens", &json!({"owner": owner}).to_string());
        assert_eq!(r.status, 201, "{}", r.text());
        let j = r.json();
        assert_eq!(j["owner"], owner);
        j["token"].as_str().unwrap().to_string()
    };
    let alice = mk("alice");
    let bob = mk("bob");
    let r = s.call_as(
        Some(&alice),
        "POST",
        "/api/tenants",
        &tenant("a-bot", json!({})).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["tenant"]["owner"], "alice");
    // X-API-Key works the same as Bearer.
    let r = request(
        &s.addr,
        "POST",
        "/api/tenants",
        &[("X-API-Key", &bob)],
        tenant("b-bot", json!({})).to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // Each sees only its own.
    let ids = |tok: &str| -> Vec<String> {
        s.call_as(Some(tok), "GET", "/api/tenants", "").json()["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&alice), ["a-bot"]);
    assert_eq!(ids(&bob), ["b-bot"]);
    assert_eq!(ids(ADMIN), ["a-bot", "b-bot"]);
    for (m, p) in [
        ("GET", "/api/tenants/b-bot"),
        ("DELETE", "/api/tenants/b-bot"),
        ("POST", "/api/tenants/b-bot/stop"),
        ("GET", "/api/tenants/b-bot/logs"),
        ("GET", "/api/tenants/b-bot/proxy/api/v1/ping"),
        ("GET", "/api/pool/bot/b-bot"),
    ] {
        assert_error(&s.call_as(Some(&alice), m, p, ""), 404, "not_found");
    }
    // Admin-only routes.
    for (m, p) in [
        ("GET", "/api/pool/status"),
        ("POST", "/api/pool/health-check"),
        ("POST", "/api/pool/cleanup"),
        ("POST", "/api/tokens"),
    ] {
        assert_error(
            &s.call_as(Some(&alice), m, p, r#"{"owner":"x"}"#),
            403,
            "forbidden",
        );
    }
    // An owner cannot create for somebody else.
    let r = s.call_as(
        Some(&alice),
        "POST",
        "/api/tenants",
        &tenant("sneaky", json!({"owner": "bob"})).to_string(),
    );
    assert_error(&r, 403, "forbidden");
    // Bob's tenant still runs.
    assert_eq!(
        s.call_as(Some(&bob), "GET", "/api/tenants/b-bot", "")
            .status,
        200
    );
    s.wait_pong("b-bot");
}

#[test]
fn bad_input_gets_4xx_json_and_changes_nothing() {
    let s = Slotpack::start(&[]);
    s.create_ok("keep", json!({}));
    // Snapshot once steady (health in the status is live).
    let before_status =
        slotpack_tests::wait_for(std::time::Duration::from_secs(10), "keep healthy", || {
            let st = s.call("GET", "/api/pool/status", "").json();
            (st["health"]["status"] == "healthy").then_some(st)
        });
    let before_tenants = s.call("GET", "/api/tenants", "").json()["tenants"]
        .as_array()
        .unwrap()
        .len();
    let with = |k: &str, v: Value| {
        let mut t = tenant("new-1", json!({}));
        t[k] = v;
        t.to_string()
    };
    let cases: Vec<(String, u16, &str)> = vec![
        (with("bogus", json!(1)), 400, "bad_request"),
        (with("id", json!("Bad Id")), 400, "bad_request"),
        (with("id", json!("../x")), 400, "bad_request"),
        (with("command", json!("")), 400, "bad_request"),
        (
            with("resources", json!({"memoryMb": 999999})),
            400,
            "bad_request",
        ),
        (
            with("resources", json!({"memoryMb": 0})),
            400,
            "bad_request",
        ),
        (
            with("resources", json!({"cpuMillis": 999999})),
            400,
            "bad_request",
        ),
        (
            with("ping", json!({"kind": "http", "path": "no-slash"})),
            400,
            "bad_request",
        ),
        (with("stop", json!({"signal": "NOPE"})), 400, "bad_request"),
        (with("env", json!({"PORT": "1"})), 400, "bad_request"),
        (with("maxLifetimeSeconds", json!(0)), 400, "bad_request"),
        (
            with("maxLifetimeSeconds", json!(18_446_744_073_709_551_615u64)),
            400,
            "bad_request",
        ),
        (
            with("stop", json!({"timeoutMs": 300_000})),
            400,
            "bad_request",
        ),
        (
            with(
                "restart",
                json!({"cooldownMs": 18_446_744_073_709_551_615u64}),
            ),
            400,
            "bad_request",
        ),
        (
            with(
                "ping",
                json!({"kind": "tcp", "failureThreshold": 4_294_967_295u32}),
            ),
            400,
            "bad_request",
        ),
        (with("poolClass", json!("Not Valid")), 400, "bad_request"),
        (with("owner", json!("UPPER")), 400, "bad_request"),
        ("{not json".to_string(), 400, "bad_request"),
        ("".to_string(), 400, "bad_request"),
        (
            tenant("keep", json!({"args": ["--other"]})).to_string(),
            409,
            "conflict",
        ),
    ];
    for (body, status, code) in &cases {
        assert_error(&s.call("POST", "/api/tenants", body), *status, code);
    }
    let huge = with("args", json!(vec!["x".repeat(1000); 100]));
    assert_error(
        &s.call("POST", "/api/tenants", &huge),
        413,
        "payload_too_large",
    );
    assert_error(
        &s.call_as(None, "GET", "/api/tenants", ""),
        401,
        "unauthorized",
    );
    assert_error(
        &s.call_as(Some("wrong"), "GET", "/api/tenants", ""),
        401,
        "unauthorized",
    );
    assert_error(&s.call("GET", "/api/tenants/nobody", ""), 404, "not_found");
    assert_error(
        &s.call("POST", "/api/tenants/keep/explode", ""),
        404,
        "not_found",
    );
    assert_error(&s.call("GET", "/api/nothing", ""), 404, "not_found");
    assert_error(
        &s.call("PUT", "/api/tenants", "{}"),
        405,
        "method_not_allowed",
    );
    assert_error(
        &s.call("GET", "/api/tenants/keep/logs?tail=x", ""),
        400,
        "bad_request",
    );
    assert_error(
        &s.call("POST", "/api/tokens", r#"{"owner":"Bad Owner"}"#),
        400,
        "bad_request",
    );
    assert_error(
        &s.call("POST", "/api/tokens", r#"{"owner":"a","x":1}"#),
        400,
        "bad_request",
    );
    // The same request again is accepted idempotently (200, same placement).
    let again = s.create("keep", json!({}));
    assert_eq!(again.status, 200, "{}", again.text());
    // Nothing changed.
    assert_eq!(s.call("GET", "/api/pool/status", "").json(), before_status);
    assert_eq!(
        s.call("GET", "/api/tenants", "").json()["tenants"]
            .as_array()
            .unwrap()
            .len(),
        before_tenants
    );
    let events = std::fs::metadata(s.data.join("slotpack.db")).is_ok();
    assert!(events);
}

#[test]
fn serve_refuses_to_start_without_an_admin_token() {
    let out = std::process::Command::new(slotpack_tests::bin("slotpack"))
        .arg("serve")
        .env_remove("SLOTPACK_ADMIN_TOKEN")
        .env(
            "SLOTPACK_DATA_DIR",
            std::env::temp_dir().join("slotpack-notoken-test"),
        )
        .env("SLOTPACK_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin token") && err.contains("--insecure-dev"),
        "{err}"
    );
}

#[test]
fn metrics_and_openapi() {
    let s = Slotpack::start(&[]);
    s.create_ok("m-1", json!({}));
    s.wait_pong("m-1");
    s.health_check();
    assert_eq!(
        s.call("GET", "/api/tenants/m-1/proxy/api/v1/ping", "")
            .status,
        200
    );
    let m = s.call_as(None, "GET", "/metrics", "");
    assert_eq!(m.status, 200);
    let t = m.text();
    for want in [
        "slotpack_pools{status=\"running\"} 1",
        "slotpack_slots{state=\"used\"} 1",
        "slotpack_slots{state=\"free\"} 2",
        "slotpack_tenants{state=\"running\"} 1",
        "slotpack_placement_seconds_count 1",
        "slotpack_proxy_requests_total{code=\"2xx\"} 1",
        "slotpack_tenants_created_total 1",
        "slotpack_health_ticks_total",
    ] {
        assert!(t.contains(want), "missing {want} in\n{t}");
    }
    let o = s.call_as(None, "GET", "/openapi.json", "").json();
    assert!(o["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/tenants",
        "/api/tenants/{id}",
        "/api/pool/status",
        "/api/pool/health-check",
        "/api/pool/cleanup",
        "/api/pool/bot/{instanceId}",
        "/api/tokens",
    ] {
        assert!(o["paths"][p].is_object(), "openapi lacks {p}");
    }
    assert!(o["components"]["schemas"]["CreateTenant"].is_object());
    assert_eq!(
        s.call_as(None, "GET", "/healthz", "").json(),
        json!({"status": "ok"})
    );
}

#[test]
fn owner_tokens_are_listed_and_revoked_and_admin_is_reserved() {
    let s = Slotpack::start(&[]);
    let r = s.call("POST", "/api/tokens", r#"{"owner":"admin"}"#);
    assert_error(&r, 400, "bad_request");
    let tok = s.call("POST", "/api/tokens", r#"{"owner":"alice"}"#).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let other = s.call("POST", "/api/tokens", r#"{"owner":"bob"}"#).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // An owner token cannot create for "admin" either.
    let mut t = tenant("mine", json!({}));
    t["owner"] = json!("admin");
    assert_error(
        &s.call_as(Some(&tok), "POST", "/api/tenants", &t.to_string()),
        403,
        "forbidden",
    );
    let list = s.call("GET", "/api/tokens", "").json();
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{list}");
    assert!(
        !list.to_string().contains(&tok),
        "a token's secret is listed"
    );
    let id = tokens.iter().find(|t| t["owner"] == "alice").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_error(
        &s.call_as(Some(&tok), "GET", "/api/tokens", ""),
        403,
        "forbidden",
    );
    assert_eq!(s.call_as(Some(&tok), "GET", "/api/tenants", "").status, 200);
    let r = s.call("DELETE", &format!("/api/tokens/{id}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_error(
        &s.call_as(Some(&tok), "GET", "/api/tenants", ""),
        401,
        "unauthorized",
    );
    assert_eq!(
        s.call_as(Some(&other), "GET", "/api/tenants", "").status,
        200
    );
    assert_error(
        &s.call("DELETE", &format!("/api/tokens/{id}"), ""),
        404,
        "not_found",
    );
    // After a restart (tokens are read once, then served from memory) the
    // kept token works and the revoked one stays refused.
    let mut s = s;
    assert!(s.stop().success());
    s.spawn();
    assert_eq!(
        s.call_as(Some(&other), "GET", "/api/tenants", "").status,
        200
    );
    assert_error(
        &s.call_as(Some(&tok), "GET", "/api/tenants", ""),
        401,
        "unauthorized",
    );
}

#[test]
fn create_reveals_no_other_owners_tenant() {
    let s = Slotpack::start(&[]);
    let alice = s.call("POST", "/api/tokens", r#"{"owner":"alice"}"#).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = s.call("POST", "/api/tokens", r#"{"owner":"bob"}"#).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let body = tenant("taken", json!({})).to_string();
    assert_eq!(
        s.call_as(Some(&alice), "POST", "/api/tenants", &body)
            .status,
        201
    );
    let get = s.call_as(Some(&bob), "GET", "/api/tenants/taken", "");
    let create = s.call_as(Some(&bob), "POST", "/api/tenants", &body);
    assert_eq!((create.status, create.json()), (get.status, get.json()));
    assert_error(&create, 404, "not_found");
}

#[test]
fn repeated_actions_do_not_grow_the_event_log_and_old_events_go() {
    let s = Slotpack::start(&[("SLOTPACK_EVENTS_KEEP", "40")]);
    s.create_ok("calm", json!({}));
    s.wait_pong("calm");
    let count = || {
        s.call("GET", "/api/events?limit=10000", "").json()["events"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count();
    for _ in 0..50 {
        assert_eq!(s.call("POST", "/api/tenants/calm/start", "").status, 200);
    }
    assert_eq!(count(), before, "no-op starts were logged");
    for i in 0..60 {
        s.call("POST", "/api/tokens", &format!(r#"{{"owner":"o{i}"}}"#));
    }
    let events = s.call("GET", "/api/events?limit=10000", "").json();
    let list = events["events"].as_array().unwrap();
    assert_eq!(list.len(), 40, "{events}");
    assert_eq!(list.last().unwrap()["detail"], "o59");
    // Ranges of the query numbers.
    assert_error(
        &s.call("GET", "/api/events?limit=10001", ""),
        400,
        "bad_request",
    );
    assert_error(
        &s.call("GET", "/api/tenants/calm/logs?tail=100001", ""),
        400,
        "bad_request",
    );
}

#[test]
fn a_connection_that_never_finishes_its_headers_is_closed() {
    use std::io::{Read, Write};
    let s = Slotpack::start(&[("SLOTPACK_HEADER_TIMEOUT_MS", "300")]);
    let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    // The server closes it (with or without a 408): the read ends, no hang.
    let n = c.read_to_end(&mut buf);
    assert!(n.is_ok(), "{n:?}");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    // A whole request still works.
    assert_eq!(s.call("GET", "/healthz", "").status, 200);
}

#[test]
fn args_and_env_name_the_slots_port_and_host_without_a_shell() {
    let s = Slotpack::start(&[]);
    let t = s.create_ok(
        "noshell",
        json!({"args": ["--print-env", "--host", "${HOST}"],
               "env": {"MY_PORT": "${PORT}", "MY_ID": "${TENANT_ID}-${SLOT}", "LITERAL": "$${PORT} $5"}}),
    );
    let port = s.wait_pong("noshell");
    let log = s
        .call("GET", "/api/tenants/noshell/logs?tail=100", "")
        .text();
    let slot = t["tenant"]["placement"]["slot"].as_u64().unwrap();
    for want in [
        format!("env MY_PORT={port}"),
        format!("env MY_ID=noshell-{slot}"),
        "env LITERAL=${PORT} $5".to_string(),
        "env HOST=127.0.0.1".to_string(),
        format!("listening on 127.0.0.1:{port}"),
    ] {
        assert!(log.contains(&want), "missing {want:?} in\n{log}");
    }
    // A typo is a 400, not a program started with it.
    let r = s.create("typo", json!({"env": {"P": "${PROT}"}}));
    assert_error(&r, 400, "bad_request");
    assert!(r.text().contains("PROT"), "{}", r.text());
    assert_error(
        &s.create("typo2", json!({"args": ["${PORT"]})),
        400,
        "bad_request",
    );
    assert_error(
        &s.create("typo3", json!({"env": {"HOST": "x"}})),
        400,
        "bad_request",
    );
}

#[test]
fn a_create_never_waits_for_another_creates_pool_start() {
    // Agents start through a wrapper that waits while a hold file exists:
    // a pool start that takes as long as the test wants.
    let dir = std::env::temp_dir().join(format!("slotpack-slowpool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hold = dir.join("hold");
    let wrapper = dir.join("slow-agent");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nwhile [ -e {} ]; do sleep 0.05; done\nexec {} \"$@\"\n",
            hold.display(),
            slotpack_tests::bin("slot-agent").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Slotpack::start(&[
        ("SLOTPACK_AGENT_BIN", wrapper.to_str().unwrap()),
        ("SLOTPACK_POOL_MEMORY_MB", "300"),
    ]);
    let small = |mb: u64| json!({"resources": {"memoryMb": mb, "cpuMillis": 10}});
    s.create_ok("fast-1", small(100));
    s.create_ok("fast-2", small(100));
    // pool-1 has one slot and 100 MiB left. A 200 MiB tenant needs a new
    // pool, whose start is held.
    std::fs::write(&hold, b"").unwrap();
    let big = {
        let addr = s.addr.clone();
        let body = tenant("big", small(200)).to_string();
        std::thread::spawn(move || {
            request(
                &addr,
                "POST",
                "/api/tenants",
                &[("Authorization", &format!("Bearer {ADMIN}"))],
                body.as_bytes(),
            )
            .unwrap()
        })
    };
    // Wait until that pool is being started (its row is there).
    slotpack_tests::wait_for(
        std::time::Duration::from_secs(10),
        "pool-2 starting",
        || {
            let st = s.call("GET", "/api/pool/status", "").json();
            (st["totalPools"] == 2).then_some(())
        },
    );
    // Meanwhile a tenant that fits pool-1 is placed at once: the pool start
    // holds no lock. (Before, this create waited for the hold to end.)
    s.create_ok("fast-3", small(50));
    if big.is_finished() {
        panic!(
            "the held pool start ended early: {}\n{}",
            big.join().unwrap().text(),
            s.stderr()
        );
    }
    assert!(hold.exists());
    std::fs::remove_file(&hold).unwrap();
    let r = big.join().unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    s.wait_pong("big");
    s.wait_pong("fast-3");
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
