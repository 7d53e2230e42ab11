//! Pings, memory and logs on a real slot-agent.

use std::time::Duration;

use serde_json::json;
use slotpack_tests::agent::{tenant_spec, Agent};

const LONG: Duration = Duration::from_secs(15);

#[test]
fn failing_http_pings_restart_the_program() {
    let a = Agent::start(2, &[]);
    let spec = tenant_spec(
        0,
        &["--hang-after-ms", "400"],
        json!({
            "restart": {"startSecs": 0},
            "ping": {"kind": "http", "intervalMs": 100, "timeoutMs": 100, "failureThreshold": 3}
        }),
    );
    a.put("hangs", spec);
    let pid = a.wait_running("hangs");
    a.wait_status("hangs", "a good ping", LONG, |s| {
        s["lastPing"]["ok"] == true && s["healthy"] == true
    });
    let s = a.wait_status("hangs", "restart for failed pings", LONG, |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    assert_ne!(s["pid"].as_i64(), Some(pid as i64));
    assert!(a.logs("hangs", 100).contains("failed pings in a row"));
}

#[test]
fn http_ping_needs_2xx_and_tcp_ping_needs_a_listener() {
    let a = Agent::start(3, &[]);
    // Listens, but the ping path answers 404: never healthy, restarted.
    a.put(
        "wrongpath",
        tenant_spec(0, &[], json!({"restart": {"startSecs": 0}, "ping": {"kind": "http", "path": "/nope", "intervalMs": 100, "failureThreshold": 2}})),
    );
    let s = a.wait_status("wrongpath", "failed ping seen", LONG, |s| {
        s["lastPing"]["ok"] == false
    });
    assert_eq!(s["healthy"], false);
    a.wait_status("wrongpath", "restart", LONG, |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    // tcp ping against a listener: healthy, with latency.
    a.put(
        "tcpok",
        tenant_spec(
            1,
            &[],
            json!({"restart": {"startSecs": 0}, "ping": {"kind": "tcp", "intervalMs": 100}}),
        ),
    );
    let s = a.wait_status("tcpok", "healthy", LONG, |s| s["healthy"] == true);
    assert!(s["lastPing"]["latencyMs"].as_f64().is_some());
    // tcp ping with nothing listening: restarted after the threshold.
    a.put(
        "tcpbad",
        tenant_spec(2, &["--no-listen"], json!({"restart": {"startSecs": 0}, "ping": {"kind": "tcp", "intervalMs": 100, "failureThreshold": 2}})),
    );
    a.wait_status("tcpbad", "restart", LONG, |s| {
        s["restarts"].as_u64() >= Some(1)
    });
}

#[test]
fn within_the_initial_delay_pings_run_but_failures_do_not_count() {
    let a = Agent::start(2, &[]);
    // A slow starter that never answers: pinged (every 250 ms at most),
    // never restarted within its delay.
    a.put(
        "late",
        tenant_spec(0, &["--no-listen"], json!({"restart": {"startSecs": 0}, "ping": {"kind": "http", "intervalMs": 100, "failureThreshold": 1, "initialDelayMs": 60000}})),
    );
    a.wait_status("late", "pinged and failing", LONG, |s| {
        s["lastPing"]["ok"] == false
    });
    // One that answers at once is healthy at once, delay or not.
    a.put(
        "early",
        tenant_spec(
            1,
            &[],
            json!({"restart": {"startSecs": 0}, "ping": {"kind": "http", "intervalMs": 100, "initialDelayMs": 60000}}),
        ),
    );
    a.wait_status("early", "healthy", LONG, |s| s["healthy"] == true);
    let late = a.status("late");
    assert_eq!(late["state"], "running", "{late}");
    assert_eq!(late["restarts"], 0, "{late}");
    assert_eq!(late["healthy"], false, "{late}");
}

#[test]
fn logs_are_captured_rotated_and_tailed() {
    let a = Agent::start(2, &["--log-max-bytes", "4000", "--log-backups", "2"]);
    a.put(
        "chatty",
        tenant_spec(
            0,
            &["--no-listen", "--log-lines", "500"],
            json!({"restart": {"startSecs": 0}}),
        ),
    );
    a.wait_running("chatty");
    let tail = slotpack_tests::wait_for(LONG, "last line logged", || {
        let t = a.logs("chatty", 3);
        t.contains("log line 499").then_some(t)
    });
    assert_eq!(
        tail,
        "test-tenant: log line 497\ntest-tenant: log line 498\ntest-tenant: log line 499\n"
    );
    let logs = a.dir.join("logs");
    assert!(logs.join("chatty.log.1").exists());
    assert!(logs.join("chatty.log.2").exists());
    assert!(!logs.join("chatty.log.3").exists());
    for f in ["chatty.log", "chatty.log.1", "chatty.log.2"] {
        assert!(std::fs::metadata(logs.join(f)).unwrap().len() <= 4000);
    }
    // stderr is captured too.
    a.put(
        "errs",
        tenant_spec(
            1,
            &["--bogus-flag"],
            json!({"restart": {"policy": "never"}}),
        ),
    );
    slotpack_tests::wait_for(LONG, "stderr in the log", || {
        a.logs("errs", 5)
            .contains("unknown flag --bogus-flag")
            .then_some(())
    });
}

#[test]
fn a_program_that_binds_late_is_healthy_without_waiting_a_whole_interval() {
    let a = Agent::start(2, &[]);
    // The first ping comes at spawn, before the port is bound; with a 60 s
    // interval the agent must still find it healthy within the grace.
    a.put(
        "late-bind",
        tenant_spec(
            0,
            &[],
            json!({"restart": {"startSecs": 0}, "ping": {"kind": "http", "intervalMs": 60000}}),
        ),
    );
    let s = a.wait_status("late-bind", "healthy", LONG, |s| s["healthy"] == true);
    assert_eq!(s["restarts"], 0);
}

#[test]
fn agent_kills_back_off_and_cool_down_instead_of_restarting_forever() {
    let a = Agent::start(3, &[]);
    let pacing = json!({"startSecs": 0, "maxAttempts": 3, "backoffMs": 50, "cooldownMs": 600000});
    // Hangs at once: every run is killed for failed pings.
    a.put(
        "hangs",
        tenant_spec(
            0,
            &["--hang-after-ms", "0"],
            json!({"restart": pacing,
                   "ping": {"kind": "http", "intervalMs": 50, "timeoutMs": 50, "failureThreshold": 1}}),
        ),
    );
    // Grows past its memory limit: every run is killed for memory.
    a.put(
        "leaks",
        tenant_spec(
            1,
            &["--leak-mb-per-sec", "200"],
            json!({"restart": pacing, "maxMemoryMb": 20}),
        ),
    );
    // Exits at once with startSecs 0 (the /bin/true loop).
    a.put(
        "instant",
        json!({"command": "/bin/true", "slot": 2, "restart": pacing}),
    );
    for id in ["hangs", "leaks", "instant"] {
        let s = a.wait_status(id, "cooldown", Duration::from_secs(30), |s| {
            s["state"] == "cooldown"
        });
        // The first run and two paced restarts, then the cooldown holds.
        assert_eq!(s["restarts"], 2, "{id}: {s}");
    }
    assert!(a.logs("hangs", 50).contains("failed pings in a row"));
    // Too small a limit is said so, in the log and the status.
    let msg = a.status("leaks")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("in its first run") && msg.contains("raise resources.memoryMb"),
        "{msg}"
    );
    // With cgroups the kernel enforces the limit; without, the sampler.
    let told = if a.sandboxed() {
        "at the slot's limit of 20 MiB"
    } else {
        "passed the limit of 20 MiB"
    };
    let log = a.logs("leaks", 50);
    assert!(log.contains(told), "{log}");
}
