//! Program lifecycle on a real slot-agent: restarts, backoff, cooldown,
//! stop semantics, stop escalation, policies and memory limits.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use slotpack_tests::agent::{tenant_spec, Agent};
use slotpack_tests::{alive, wait_for};

const LONG: Duration = Duration::from_secs(15);

#[test]
fn kill_9_is_seen_at_once_and_restarted() {
    let a = Agent::start(3, &[]);
    let created = a.call(
        "PUT",
        "/v1/programs/bot-a",
        &tenant_spec(1, &[], json!({"restart": {"startSecs": 0}})).to_string(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let pid = a.wait_running("bot-a");
    // `running` (startSecs 0) comes at spawn; the port opens a moment later.
    let pong = a.wait_slot(1, "/api/v1/ping");
    assert_eq!(pong.text(), r#"{"status":"pong"}"#);
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let s = a.wait_status("bot-a", "restarted with a new pid", LONG, |s| {
        s["state"] == "running" && s["pid"].as_i64().is_some_and(|p| p as i32 != pid)
    });
    assert_eq!(s["restarts"], 1);
    assert_eq!(s["lastExit"]["signal"], "KILL");
    assert_eq!(s["port"], a.port(1));
    // The program got its slot's environment.
    let info = a.wait_slot(1, "/info").json();
    assert_eq!(info["tenant"], "bot-a");
    assert_eq!(info["slot"], "1");
    assert_eq!(info["port"], a.port(1).to_string());
}

#[test]
fn failed_starts_back_off_then_cool_down_then_try_again() {
    let a = Agent::start(2, &[]);
    // Exits at once with code 1: every start fails (startSecs 1).
    let spec = tenant_spec(
        0,
        &["--no-listen", "--exit-after-ms", "0", "--exit-code", "1"],
        json!({"restart": {"maxAttempts": 3, "backoffMs": 50, "cooldownMs": 1500, "startSecs": 1}}),
    );
    a.put("crashy", spec);
    let s = a.wait_status("crashy", "cooldown", LONG, |s| s["state"] == "cooldown");
    // Three failed starts: the first plus two backoff restarts.
    assert_eq!(s["restarts"], 2);
    assert_eq!(s["lastExit"]["code"], 1);
    assert!(s["pid"].is_null());
    // After the cooldown it tries again.
    a.wait_status("crashy", "retry after cooldown", LONG, |s| {
        s["restarts"].as_u64() >= Some(3)
    });
    let log = a.logs("crashy", 100);
    assert!(log.matches("exiting with 1").count() >= 3, "{log}");
}

#[test]
fn a_program_that_exits_during_start_secs_is_in_backoff() {
    let a = Agent::start(2, &[]);
    let spec = tenant_spec(
        0,
        &["--no-listen", "--exit-after-ms", "100", "--exit-code", "3"],
        json!({"restart": {"maxAttempts": 5, "backoffMs": 3000, "startSecs": 2}}),
    );
    a.put("slowfail", spec);
    let s = a.wait_status("slowfail", "backoff", LONG, |s| s["state"] == "backoff");
    assert_eq!(s["lastExit"]["code"], 3);
    assert_eq!(s["restarts"], 0);
}

#[test]
fn start_secs_gates_running() {
    let a = Agent::start(2, &[]);
    let st = a.put(
        "gated",
        tenant_spec(0, &[], json!({"restart": {"startSecs": 1}})),
    );
    assert_eq!(st["state"], "starting");
    assert_eq!(st["healthy"], false);
    a.wait_running("gated");
}

#[test]
fn stopped_through_the_api_stays_stopped_also_across_agent_restart() {
    let mut a = Agent::start(2, &[]);
    a.put(
        "keep-off",
        tenant_spec(0, &[], json!({"restart": {"startSecs": 0}})),
    );
    let pid = a.wait_running("keep-off");
    let r = a.call("POST", "/v1/programs/keep-off/stop", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "stopped");
    assert!(!alive(pid));
    assert_eq!(r.json()["lastExit"]["signal"], "TERM");
    // An agent restart keeps it stopped.
    a.signal_and_wait(Signal::SIGTERM);
    a.spawn();
    let s = a.status("keep-off");
    assert_eq!(s["state"], "stopped");
    assert!(s["pid"].is_null());
    // Start brings it back.
    let r = a.call("POST", "/v1/programs/keep-off/start", "");
    assert_eq!(r.status, 200, "{}", r.text());
    a.wait_running("keep-off");
}

#[test]
fn stop_escalates_to_sigkill_of_the_whole_group() {
    let a = Agent::start(2, &[]);
    let spec = tenant_spec(
        0,
        &["--ignore-term", "--spawn-orphan-ms", "60000"],
        json!({"restart": {"startSecs": 0}, "stop": {"signal": "TERM", "timeoutMs": 300}}),
    );
    a.put("stubborn", spec);
    let pid = a.wait_running("stubborn");
    // The grandchild lives in the program's process group.
    let grandchild = wait_for(LONG, "grandchild in the group", || {
        slotpack_tests::children_of(a.pid())
            .into_iter()
            .map(|(p, _)| p)
            .find(|p| *p != pid)
    });
    let r = a.call("POST", "/v1/programs/stubborn/stop", "");
    assert_eq!(r.json()["state"], "stopped", "{}", r.text());
    assert_eq!(r.json()["lastExit"]["signal"], "KILL");
    assert!(!alive(pid));
    wait_for(LONG, "grandchild ended", || {
        (!alive(grandchild)).then_some(())
    });
}

#[test]
fn restart_through_the_api_gives_a_new_process() {
    let a = Agent::start(2, &[]);
    a.put(
        "rs",
        tenant_spec(0, &[], json!({"restart": {"startSecs": 0}})),
    );
    let pid = a.wait_running("rs");
    let r = a.call("POST", "/v1/programs/rs/restart", "");
    assert_eq!(r.status, 200);
    let new_pid = r.json()["pid"].as_i64().unwrap() as i32;
    assert_ne!(new_pid, pid);
    assert_eq!(r.json()["restarts"], 1);
    assert!(!alive(pid));
}

#[test]
fn policies_on_failure_and_never() {
    let a = Agent::start(3, &[]);
    // on-failure: a clean exit after a good start is left alone.
    a.put(
        "clean",
        tenant_spec(
            0,
            &["--no-listen", "--exit-after-ms", "300"],
            json!({"restart": {"policy": "on-failure", "startSecs": 0}}),
        ),
    );
    let s = a.wait_status("clean", "exited", LONG, |s| s["state"] == "exited");
    assert_eq!(s["lastExit"]["code"], 0);
    assert_eq!(s["restarts"], 0);
    // on-failure: a crash is restarted.
    a.put(
        "crash",
        tenant_spec(
            1,
            &["--no-listen", "--crash-after-ms", "300"],
            json!({"restart": {"policy": "on-failure", "startSecs": 0}}),
        ),
    );
    let s = a.wait_status("crash", "restarted", LONG, |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    assert_eq!(s["lastExit"]["signal"], "ABRT");
    // never: a failed start is fatal.
    a.put(
        "never",
        tenant_spec(
            2,
            &["--no-listen", "--exit-after-ms", "0", "--exit-code", "4"],
            json!({"restart": {"policy": "never", "startSecs": 1}}),
        ),
    );
    let s = a.wait_status("never", "fatal", LONG, |s| s["state"] == "fatal");
    assert_eq!(s["restarts"], 0);
}

#[test]
fn a_missing_command_is_refused_and_one_that_cannot_exec_is_a_failed_start() {
    let a = Agent::start(2, &[]);
    let restart = json!({"maxAttempts": 2, "backoffMs": 10, "cooldownMs": 60000});
    // Missing: a 400 that says so, and nothing stored.
    let spec = json!({"command": "/nonexistent/bot", "slot": 0, "restart": restart});
    let r = a.call("PUT", "/v1/programs/ghost", &spec.to_string());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("does not exist"), "{}", r.text());
    assert_eq!(a.call("GET", "/v1/programs/ghost", "").status, 404);
    // Present but not a program: failed runs, then cooldown; the agent
    // itself is unharmed.
    let dir = std::env::temp_dir().join(format!("slot-agent-noexec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bot");
    std::fs::write(&file, b"\x01\x02 not a program").unwrap();
    for p in [&dir, &file] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let spec = json!({"command": file, "slot": 0, "restart": restart});
    let r = a.call("PUT", "/v1/programs/ghost", &spec.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    a.wait_status("ghost", "cooldown", LONG, |s| s["state"] == "cooldown");
    // (exec falls back to the shell, which says what it could not run.)
    let log = a.logs("ghost", 10);
    assert!(
        log.contains("not found") || log.contains("cannot start"),
        "{log}"
    );
    assert_eq!(a.call("GET", "/v1/health", "").status, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn memory_limit_restarts_the_program() {
    let a = Agent::start(2, &["--sample-ms", "100"]);
    let spec = tenant_spec(
        0,
        &["--leak-mb-per-sec", "16"],
        json!({"maxMemoryMb": 40, "restart": {"startSecs": 0}}),
    );
    a.put("leaky", spec);
    let pid = a.wait_running("leaky");
    let s = a.wait_status("leaky", "restarted for memory", LONG, |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    assert_ne!(s["pid"].as_i64().map(|p| p as i32), Some(pid));
    assert!(a.logs("leaky", 50).contains("memory limit exceeded"));
    // rssBytes is sampled while it runs.
    a.wait_status("leaky", "rss sampled", LONG, |s| {
        s["rssBytes"].as_u64() > Some(1_000_000)
    });
}

#[test]
fn put_is_idempotent_and_a_new_spec_replaces_the_run() {
    let a = Agent::start(3, &[]);
    let spec = tenant_spec(0, &[], json!({"restart": {"startSecs": 0}}));
    a.put("idem", spec.clone());
    let pid = a.wait_running("idem");
    let again = a.call("PUT", "/v1/programs/idem", &spec.to_string());
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["pid"].as_i64(), Some(pid as i64));
    // Moving it to another slot restarts it there.
    let moved = tenant_spec(2, &[], json!({"restart": {"startSecs": 0}}));
    a.put("idem", moved);
    let s = a.wait_status("idem", "moved", LONG, |s| {
        s["state"] == "running" && s["port"] == a.port(2) && s["pid"].as_i64() != Some(pid as i64)
    });
    assert_eq!(s["slot"], 2);
    a.wait_slot(2, "/api/v1/ping");
}

#[test]
fn delete_stops_and_forgets() {
    let a = Agent::start(2, &[]);
    a.put(
        "gone",
        tenant_spec(1, &[], json!({"restart": {"startSecs": 0}})),
    );
    let pid = a.wait_running("gone");
    let r = a.call("DELETE", "/v1/programs/gone", "");
    assert_eq!(r.status, 204);
    assert!(!alive(pid));
    assert_eq!(a.call("GET", "/v1/programs/gone", "").status, 404);
    assert!(!a.dir.join("programs/gone.json").exists());
    // The slot is free for another program.
    a.put("next", tenant_spec(1, &[], json!({})));
}

#[test]
fn a_deletion_under_way_is_finished_by_an_agent_restarted_after_a_crash() {
    let mut a = Agent::start(2, &[]);
    a.put(
        "stubborn",
        tenant_spec(
            0,
            &["--ignore-term"],
            json!({"restart": {"startSecs": 0}, "stop": {"timeoutMs": 120000}}),
        ),
    );
    let pid = a.wait_running("stubborn");
    // Serving: it has written its start-up line. (A program that writes to
    // its log pipe after the agent died gets EPIPE, and test-tenant exits
    // on that; the agent's restart ends such programs anyway.)
    a.wait_slot(0, "/api/v1/ping");
    // Begun, not waited for: the program ignores SIGTERM for two minutes.
    let r = a.call("DELETE", "/v1/programs/stubborn?wait=false", "");
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(alive(pid));
    // The agent dies meanwhile; the next one ends what the first left.
    let exit = a.signal_and_wait(nix::sys::signal::Signal::SIGKILL);
    assert!(!exit.success());
    assert!(alive(pid), "the program went with the agent");
    a.spawn();
    wait_for(LONG, "the program ended", || (!alive(pid)).then_some(()));
    assert_eq!(a.call("GET", "/v1/programs/stubborn", "").status, 404);
}

#[test]
fn end_leftovers_ends_what_an_agent_killed_hard_left_and_nothing_else() {
    let mut a = Agent::start(2, &[]);
    a.put(
        "left",
        tenant_spec(0, &[], json!({"restart": {"startSecs": 0}})),
    );
    let pid = a.wait_running("left");
    // Serving, so its start-up line is written before the agent dies (see
    // the test above).
    a.wait_slot(0, "/api/v1/ping");
    let exit = a.signal_and_wait(Signal::SIGKILL);
    assert!(!exit.success());
    assert!(alive(pid), "the program went with the agent");
    // A process of ours that only shares the pid space: never touched.
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let out = std::process::Command::new(slotpack_tests::bin("slot-agent"))
        .arg("--end-leftovers")
        .arg("--state-dir")
        .arg(&a.dir)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ended 1 program groups"
    );
    wait_for(LONG, "the program ended", || (!alive(pid)).then_some(()));
    assert!(Agent::noted_groups(&a.dir).is_empty(), "notes stay");
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "a bystander was ended"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    // Run again: nothing left to end.
    let out = std::process::Command::new(slotpack_tests::bin("slot-agent"))
        .args(["--end-leftovers", "--state-dir"])
        .arg(&a.dir)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ended 0 program groups"
    );
}
