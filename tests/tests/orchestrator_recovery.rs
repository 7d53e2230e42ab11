//! Health loop, recovery and reconciliation of the orchestrator.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use slotpack_tests::http::request;
use slotpack_tests::orchestrator::Slotpack;
use slotpack_tests::{alive, bin, wait_for};

const LONG: Duration = Duration::from_secs(20);

#[test]
fn a_dead_agent_is_restarted_and_its_tenants_come_back() {
    let s = Slotpack::start(&[]);
    s.create_ok("r-1", json!({}));
    s.create_ok("r-2", json!({}));
    let p1 = s.wait_pong("r-1");
    s.wait_pong("r-2");
    let (_, agent) = s.agent_pids()[0].clone();
    let old_groups = s.program_groups();
    // Crash the agent (its programs are ended by the restarted agent).
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    wait_for(LONG, "agent gone", || (!alive(agent)).then_some(()));
    let h = s.health_check();
    let issues = h["issues"].to_string();
    let actions = h["recoveryActions"].to_string();
    assert!(issues.contains("pool-1: agent unreachable"), "{h}");
    assert!(actions.contains("restarted pool-1"), "{h}");
    let (_, new_agent) = s.agent_pids()[0].clone();
    assert_ne!(new_agent, agent);
    for g in old_groups {
        wait_for(LONG, "old program ended", || (!alive(g)).then_some(()));
    }
    assert_eq!(s.wait_pong("r-1"), p1);
    s.wait_pong("r-2");
    // The next tick finds everything healthy.
    let h = wait_for(LONG, "healthy tick", || {
        let h = s.health_check();
        (h["issues"] == json!([])).then_some(h)
    });
    assert_eq!(h["pools"][0]["healthy"], true);
}

#[test]
fn pools_survive_an_orchestrator_restart_and_are_adopted() {
    let mut s = Slotpack::start(&[]);
    s.create_ok("keep-1", json!({}));
    let port = s.wait_pong("keep-1");
    let agents = s.agent_pids();
    // SIGTERM: pools keep running.
    assert!(s.stop().success(), "{}", s.stderr());
    let pong = request(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/api/v1/ping",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(pong.status, 200);
    s.spawn();
    assert_eq!(
        s.agent_pids(),
        agents,
        "agents were replaced instead of adopted"
    );
    assert_eq!(s.wait_pong("keep-1"), port);
    let h = s.health_check();
    assert_eq!(h["recoveryActions"], json!([]), "{h}");
    // And after kill -9 as well.
    s.kill9();
    s.spawn();
    assert_eq!(s.agent_pids(), agents);
    s.wait_pong("keep-1");
}

#[test]
fn start_up_reconciliation_recreates_missing_programs_and_removes_orphans() {
    let mut s = Slotpack::start(&[]);
    s.create_ok("kept", json!({}));
    s.create_ok("lost", json!({}));
    s.wait_pong("kept");
    s.wait_pong("lost");
    assert!(s.stop().success());
    // Behind the orchestrator's back: one program deleted, one orphan added.
    let token = std::fs::read_to_string(s.data.join("pools/pool-1.token")).unwrap();
    let agent = format!("127.0.0.1:{}", s.base_port - 1);
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    assert_eq!(
        request(&agent, "DELETE", "/v1/programs/lost", &h, b"")
            .unwrap()
            .status,
        204
    );
    let orphan = json!({"command": bin("test-tenant").display().to_string(), "slot": 2, "restart": {"startSecs": 0}});
    assert_eq!(
        request(
            &agent,
            "PUT",
            "/v1/programs/stray",
            &h,
            orphan.to_string().as_bytes()
        )
        .unwrap()
        .status,
        201
    );
    s.spawn();
    // Start-up reconciled: lost is back, stray is gone.
    s.wait_pong("lost");
    let progs = request(&agent, "GET", "/v1/programs", &h, b"")
        .unwrap()
        .json();
    let ids: Vec<&str> = progs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["kept", "lost"]);
    assert!(
        s.stderr().contains("start-up issue") || s.stderr().contains("serving"),
        "{}",
        s.stderr()
    );
    let events = s.call("GET", "/api/tenants", "").json();
    assert_eq!(events["tenants"].as_array().unwrap().len(), 2);
}

#[test]
fn the_health_loop_runs_by_itself() {
    let s = Slotpack::start(&[("HEALTH_CHECK_INTERVAL", "200")]);
    s.create_ok("auto", json!({}));
    s.wait_pong("auto");
    let (_, agent) = s.agent_pids()[0].clone();
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    // No health-check call: the loop notices and restarts the pool.
    wait_for(LONG, "pool restarted by the loop", || {
        s.agent_pids()
            .first()
            .filter(|(_, p)| *p != agent && alive(*p))
            .map(|_| ())
    });
    s.wait_pong("auto");
    // The tick counts its actions when it ends.
    wait_for(LONG, "recovery counted in metrics", || {
        let m = s.call_as(None, "GET", "/metrics", "").text();
        let line = m
            .lines()
            .find(|l| l.starts_with("slotpack_recovery_actions_total "))?
            .to_string();
        (line != "slotpack_recovery_actions_total 0").then_some(())
    });
}

#[test]
fn tenants_past_their_lifetime_are_removed() {
    let s = Slotpack::start(&[]);
    s.create_ok("short", json!({"maxLifetimeSeconds": 1}));
    s.create_ok("long", json!({}));
    s.wait_pong("short");
    let h = wait_for(LONG, "expiry", || {
        let h = s.health_check();
        h["recoveryActions"]
            .to_string()
            .contains("short")
            .then_some(h)
    });
    assert!(
        h["recoveryActions"]
            .to_string()
            .contains("end of its lifetime"),
        "{h}"
    );
    assert_eq!(s.call("GET", "/api/tenants/short", "").status, 404);
    assert_eq!(s.call("GET", "/api/tenants/long", "").status, 200);
}

#[test]
fn warm_slots_are_kept_ready() {
    let s = Slotpack::start(&[("SLOTPACK_WARM_SLOTS", "2")]);
    // Before any tenant a pool is ready.
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["totalPools"], 1, "{st}");
    s.create_ok("w-1", json!({}));
    s.create_ok("w-2", json!({}));
    // 3 slots, 2 used: one free, so a second pool is made to keep 2 free
    // (after the create answered: the refill is off its path).
    slotpack_tests::wait_for(Duration::from_secs(20), "a second, warm pool", || {
        let st = s.call("GET", "/api/pool/status", "").json();
        (st["totalPools"] == 2).then_some(())
    });
    // Cleanup keeps the warm pool.
    let c = s.call("POST", "/api/pool/cleanup", "").json();
    assert_eq!(c["removedPools"], 0);
}

#[test]
fn legacy_mode_gives_every_tenant_its_own_pool() {
    let s = Slotpack::start(&[("POOL_MODE_ENABLED", "false")]);
    let a = s.create_ok("leg-1", json!({}));
    let b = s.create_ok("leg-2", json!({}));
    assert_ne!(a["placement"]["poolId"], b["placement"]["poolId"]);
    s.wait_pong("leg-1");
    let i = s.call("GET", "/api/pool/bot/leg-2", "").json();
    assert_eq!(i["isPooled"], false);
    assert_eq!(i["mode"], "legacy");
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["poolMode"], false);
    assert_eq!(st["pools"][0]["capacity"], 1);
    // Deleting a legacy tenant removes its pool.
    assert_eq!(s.call("DELETE", "/api/tenants/leg-1", "").status, 200);
    assert_eq!(
        s.call("GET", "/api/pool/status", "").json()["totalPools"],
        1
    );
}

#[test]
fn tenants_of_a_pool_that_cannot_come_back_move_to_another_pool() {
    let s = Slotpack::start(&[("MAX_RESTART_ATTEMPTS", "2"), ("BOT_PING_TIMEOUT", "1000")]);
    s.create_ok("mv-1", json!({}));
    s.create_ok("mv-2", json!({}));
    let old_port = s.wait_pong("mv-1");
    s.wait_pong("mv-2");
    let (_, agent) = s.agent_pids()[0].clone();
    let old_groups = s.program_groups();
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    wait_for(LONG, "agent gone", || (!alive(agent)).then_some(()));
    // Hold the agent's port: pool-1 cannot be started again.
    let _blocker = std::net::TcpListener::bind(("127.0.0.1", s.base_port - 1)).unwrap();
    let h = s.health_check();
    let issues = h["issues"].to_string();
    assert!(
        issues.contains("pool-1: restart") && issues.contains("failed"),
        "{h}"
    );
    assert_eq!(
        s.call("GET", "/api/tenants/mv-1", "").json()["tenant"]["placement"]["poolId"],
        "pool-1"
    );
    // The second failure (MAX_RESTART_ATTEMPTS) moves the tenants.
    let h = s.health_check();
    let actions = h["recoveryActions"].to_string();
    assert!(
        actions.contains("moved mv-1, mv-2 to other pools and removed pool-1"),
        "{h}"
    );
    for id in ["mv-1", "mv-2"] {
        let t = s.call("GET", &format!("/api/tenants/{id}"), "").json();
        assert_eq!(t["tenant"]["placement"]["poolId"], "pool-2", "{t}");
        s.wait_pong(id);
    }
    assert_ne!(s.wait_pong("mv-1"), old_port);
    for g in old_groups {
        wait_for(LONG, "old program ended", || (!alive(g)).then_some(()));
    }
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["totalPools"], 1, "{st}");
    assert_eq!(st["pools"][0]["id"], "pool-2");
    assert_eq!(st["pools"][0]["bots"], json!(["mv-1", "mv-2"]));
    let ev = s
        .call("GET", "/api/events?tenant=mv-2", "")
        .json()
        .to_string();
    assert!(ev.contains("tenant.moved"), "{ev}");
    // The proxy follows the move.
    assert_eq!(
        s.call("GET", "/api/tenants/mv-2/proxy/api/v1/ping", "")
            .status,
        200
    );
}

#[test]
fn a_spec_changed_behind_our_back_is_put_back() {
    let s = Slotpack::start(&[]);
    s.create_ok("kept", json!({}));
    let port = s.wait_pong("kept");
    // Someone with the agent's token swaps the program for another one.
    let token = std::fs::read_to_string(s.data.join("pools/pool-1.token")).unwrap();
    let agent = format!("127.0.0.1:{}", s.base_port - 1);
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    let hijack = json!({"command": "/bin/sleep", "args": ["1000"], "slot": 0,
                        "restart": {"startSecs": 0}});
    let r = request(
        &agent,
        "PUT",
        "/v1/programs/kept",
        &h,
        hijack.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let h1 = s.health_check();
    assert!(
        h1["issues"].to_string().contains("changed behind our back"),
        "{h1}"
    );
    assert!(h1["recoveryActions"].to_string().contains("Put"), "{h1}");
    assert_eq!(s.wait_pong("kept"), port);
    let info = s.call("GET", "/api/tenants/kept/proxy/info", "").json();
    assert_eq!(info["tenant"], "kept");
    // Converged: the next tick changes nothing.
    let h2 = s.health_check();
    assert_eq!(h2["recoveryActions"], json!([]), "{h2}");
}

#[test]
fn an_agent_nobody_noted_is_adopted_when_it_answers_with_the_pools_token() {
    let mut s = Slotpack::start(&[]);
    s.create_ok("kept", json!({}));
    let port = s.wait_pong("kept");
    let agents = s.agent_pids();
    // The orchestrator dies before it noted the agent it had just started.
    s.kill9();
    std::fs::remove_file(s.data.join("pools/pool-1.pid")).unwrap();
    s.spawn();
    let status = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(status["pools"][0]["status"], "running", "{status}");
    assert_eq!(s.agent_pids(), agents, "a second agent was started");
    assert_eq!(s.wait_pong("kept"), port);
    // Its agent's own ping says so too (pings run from the start: one may
    // have failed before the program listened).
    wait_for(Duration::from_secs(20), "kept healthy", || {
        let t = s.call("GET", "/api/tenants/kept", "").json();
        (t["tenant"]["healthy"] == true).then_some(())
    });
    let h = s.health_check();
    assert_eq!(h["issues"], json!([]), "{h}");
}

#[test]
fn a_memory_limit_too_small_for_the_first_run_is_said_so() {
    let s = Slotpack::start(&[]);
    s.create_ok(
        "hungry",
        json!({"args": ["--leak-mb-per-sec", "100"],
               "resources": {"memoryMb": 20},
               "restart": {"startSecs": 0, "backoffMs": 50, "maxAttempts": 2, "cooldownMs": 600000}}),
    );
    let msg = wait_for(LONG, "the tenant's message", || {
        let t = s.call("GET", "/api/tenants/hungry", "").json();
        t["tenant"]["message"].as_str().map(str::to_string)
    });
    assert!(
        msg.contains("in its first run") && msg.contains("raise resources.memoryMb"),
        "{msg}"
    );
    // Each tick reports it as an issue; the event is written once.
    for _ in 0..2 {
        let h = s.health_check();
        assert!(h["issues"].to_string().contains("in its first run"), "{h}");
    }
    let ev = s.call("GET", "/api/events?tenant=hungry", "").json();
    let memory: Vec<&Value> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "tenant.memory")
        .collect();
    assert_eq!(memory.len(), 1, "{ev}");
}

/// The `--listen` address of agent `pid`.
fn agent_listen(pid: i32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmd
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == "--listen").unwrap();
    args[i + 1].clone()
}

/// Kill pool-1's agent and hold its port, so that no restart can bring it
/// back until the listener is dropped.
fn down_and_blocked(s: &Slotpack) -> std::net::TcpListener {
    let (_, agent) = s
        .agent_pids()
        .into_iter()
        .find(|(id, _)| id == "pool-1")
        .unwrap();
    let listen = agent_listen(agent);
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    wait_for(LONG, "agent gone", || (!alive(agent)).then_some(()));
    wait_for(LONG, "its port free", || {
        std::net::TcpListener::bind(&listen).ok()
    })
}

fn pool_of(s: &Slotpack, id: &str) -> String {
    let r = s.call("GET", &format!("/api/tenants/{id}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["tenant"]["placement"]["poolId"]
        .as_str()
        .unwrap()
        .to_string()
}

fn pool_ids(s: &Slotpack) -> Vec<String> {
    let st = s.call("GET", "/api/pool/status", "").json();
    let mut ids: Vec<String> = st["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn metric(s: &Slotpack, line_start: &str) -> String {
    let m = s.call("GET", "/metrics", "").text();
    m.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{m}"))
        .to_string()
}

/// Issue J's bug: a pool that a health tick brings back must take tenants
/// again (placement, status and metrics agree), and a pool whose restart
/// failed must take none (no create lands on a dead agent).
#[test]
fn placement_status_and_metrics_follow_a_pool_that_fails_and_comes_back() {
    let mut s = Slotpack::start_sized(2, 3, &[("MAX_RESTART_ATTEMPTS", "1000")]);
    for i in 1..=4 {
        s.create_ok(&format!("rf-{i}"), json!({}));
    }
    assert_eq!(pool_of(&s, "rf-2"), "pool-1");
    assert_eq!(pool_of(&s, "rf-4"), "pool-2");
    assert_eq!(s.call("DELETE", "/api/tenants/rf-2", "").status, 200);

    // 1. pool-1 cannot start while serve starts; a later tick restarts it.
    assert!(s.stop().success(), "{}", s.stderr());
    let hold = down_and_blocked(&s);
    s.spawn();
    let status = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(status["pools"][0]["status"], "failed", "{status}");
    drop(hold);
    let h = s.health_check();
    assert!(
        h["recoveryActions"]
            .to_string()
            .contains("restarted pool-1"),
        "{h}"
    );
    // The next create lands in pool-1's free slot: no new pool.
    s.create_ok("rf-5", json!({}));
    assert_eq!(pool_of(&s, "rf-5"), "pool-1");
    assert_eq!(pool_ids(&s), ["pool-1", "pool-2"]);
    assert_eq!(
        metric(&s, "slotpack_slots{state=\"free\"}"),
        "slotpack_slots{state=\"free\"} 0"
    );
    s.wait_pong("rf-5");

    // 2. A restart that fails at run time closes the pool to creates.
    assert_eq!(s.call("DELETE", "/api/tenants/rf-5", "").status, 200);
    let hold = down_and_blocked(&s);
    let h = s.health_check();
    let issues = h["issues"].to_string();
    assert!(
        issues.contains("pool-1: restart") && issues.contains("failed"),
        "{h}"
    );
    let r = s.create("rf-6", json!({}));
    assert_eq!(
        r.status,
        201,
        "a create must not land on the dead agent: {}",
        r.text()
    );
    assert_eq!(pool_of(&s, "rf-6"), "pool-3");
    drop(hold);
    let h = s.health_check();
    assert!(
        h["recoveryActions"]
            .to_string()
            .contains("restarted pool-1"),
        "{h}"
    );
    s.create_ok("rf-7", json!({}));
    assert_eq!(pool_of(&s, "rf-7"), "pool-1");
    for id in ["rf-1", "rf-3", "rf-4", "rf-6", "rf-7"] {
        s.wait_pong(id);
    }
}
