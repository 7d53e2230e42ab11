//! Slot isolation (root only) and PID 1 duties in a PID namespace.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use slotpack_tests::agent::{tenant_spec, Agent, TOKEN};
use slotpack_tests::{alive, children_of, require_root, wait_for};

const LONG: Duration = Duration::from_secs(15);

#[test]
fn slots_cannot_read_or_signal_each_other_and_never_see_the_token() {
    if !require_root("isolation") {
        return;
    }
    let a = Agent::start(3, &[]);
    a.put(
        "victim",
        tenant_spec(
            2,
            &["--write-home", "secret=hunter2", "--try-read", "secret"],
            json!({"restart": {"startSecs": 0}}),
        ),
    );
    let victim = a.wait_running("victim");
    wait_for(LONG, "victim wrote its secret", || {
        a.logs("victim", 10)
            .contains("try-read secret: ok: hunter2")
            .then_some(())
    });
    // The victim's home is its tenant's own (not its slot's).
    let home2 = a.dir.join("tenants/victim/home");
    let secret = home2.join("secret").display().to_string();
    let victim_pid = victim.to_string();
    a.put(
        "snoop",
        tenant_spec(
            1,
            &[
                "--no-listen",
                "--print-env",
                "--try-read",
                &secret,
                "--try-kill",
                &victim_pid,
            ],
            json!({"restart": {"startSecs": 0}}),
        ),
    );
    let log = wait_for(LONG, "snoop's report", || {
        let l = a.logs("snoop", 200);
        l.contains("try-kill").then_some(l)
    });
    assert!(log.contains(&format!("try-read {secret}: denied")), "{log}");
    assert!(
        log.contains(&format!("try-kill {victim_pid}: denied")),
        "{log}"
    );
    assert!(alive(victim));
    assert!(
        !log.contains(TOKEN),
        "token leaked into a program's environment:\n{log}"
    );
    assert!(
        log.contains("env SLOT=1") && log.contains("env TENANT_ID=snoop"),
        "{log}"
    );
    assert!(log.contains(&format!("env PORT={}", a.port(1))), "{log}");
    // Each slot runs as its own user with a private home.
    let info = a.wait_slot(2, "/info").json();
    assert_eq!(info["uid"], a.uid(2));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(&home2).unwrap();
    assert_eq!(m.uid(), a.uid(2));
    assert_eq!(m.permissions().mode() & 0o777, 0o700);
    // Logs and specs are the agent's alone.
    for d in ["logs", "programs", "run"] {
        let mode = std::fs::metadata(a.dir.join(d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{d} is open to others");
    }
}

#[test]
fn as_pid_1_in_a_pid_namespace_it_reaps_orphans_and_exits_on_sigterm() {
    if !require_root("pid namespace") {
        return;
    }
    let mut a = Agent::start_wrapped(2, &[], &["unshare", "--fork", "--pid", "--mount-proc"]);
    let agent = a.pid();
    let status = std::fs::read_to_string(format!("/proc/{agent}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.trim_end().ends_with("\t1"),
        "agent is not PID 1 in its namespace: {nspid}"
    );
    a.put(
        "orphaner",
        tenant_spec(
            0,
            &["--spawn-orphan-ms", "300"],
            json!({"restart": {"startSecs": 0}}),
        ),
    );
    a.put(
        "plain",
        tenant_spec(
            1,
            &["--ignore-term"],
            json!({"restart": {"startSecs": 0}, "stop": {"timeoutMs": 300}}),
        ),
    );
    a.wait_running("orphaner");
    a.wait_running("plain");
    // Two programs plus the orphan whose parent died.
    wait_for(LONG, "orphan re-parented to PID 1", || {
        (children_of(agent).len() == 3).then_some(())
    });
    wait_for(LONG, "orphan reaped", || {
        (children_of(agent).len() == 2).then_some(())
    });
    assert!(children_of(agent).iter().all(|(_, st)| *st != 'Z'));
    let programs: Vec<i32> = children_of(agent).iter().map(|(p, _)| *p).collect();
    let exit = a.signal_and_wait(Signal::SIGTERM);
    assert!(exit.success(), "{exit:?}: {}", a.stderr());
    for p in programs {
        assert!(!alive(p), "program {p} outlived the agent");
    }
}

#[test]
fn end_leftovers_kills_what_a_dead_agents_slots_hold_and_removes_their_groups() {
    if !require_root("slot cgroups of a dead agent") {
        return;
    }
    let mut a = Agent::start(3, &[]);
    a.put(
        "escaper",
        json!({"command": "/bin/sh", "args": ["-c", "setsid sleep 1001 & exec sleep 1002"],
               "slot": 2, "ping": null, "restart": {"startSecs": 0}}),
    );
    let uid = a.uid(2);
    wait_for(LONG, "both sleeps run", || {
        (slotpack_tests::processes_of_uid(uid).len() >= 2).then_some(())
    });
    let pid = slotpack_tests::processes_of_uid(uid)[0];
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = cg
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()));
    a.signal_and_wait(Signal::SIGKILL);
    // The slot's processes outlive their agent until someone ends them.
    assert_eq!(slotpack_tests::processes_of_uid(uid).len(), 2);
    let out = std::process::Command::new(slotpack_tests::bin("slot-agent"))
        .args(["--end-leftovers", "--state-dir", a.dir.to_str().unwrap()])
        .env("SLOT_AGENT_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for(LONG, "the slot's processes end", || {
        slotpack_tests::processes_of_uid(uid)
            .is_empty()
            .then_some(())
    });
    if let Some(path) = memory {
        let agent_group = std::path::Path::new(&format!("/sys/fs/cgroup/memory{path}"))
            .parent()
            .unwrap()
            .to_path_buf();
        assert!(!agent_group.exists(), "{} left", agent_group.display());
    }
}
