//! A tenant is a hostile stranger sharing the pool: each test plays one with
//! a real program (`/bin/sh` scripts and the test tenant) against a real
//! `slotpack serve` on the local backend, as root (CI runs them; elsewhere
//! they skip without root).

use std::time::Duration;

use serde_json::{json, Value};
use slotpack_tests::orchestrator::{Slotpack, ADMIN};
use slotpack_tests::{bin, is_root, processes_of_uid, require_root, uid_of_port, wait_for};

const LONG: Duration = Duration::from_secs(20);

/// A tenant that runs `script` under `/bin/sh -c`, with no ping.
fn shell(script: &str) -> Value {
    json!({"command": "/bin/sh", "args": ["-c", script], "ping": null,
           "restart": {"startSecs": 0}})
}

/// The tenant's log once it holds `marker`.
fn log_with(sp: &Slotpack, id: &str, marker: &str) -> String {
    wait_for(LONG, &format!("{id} logs {marker}"), || {
        let r = sp.call("GET", &format!("/api/tenants/{id}/logs?tail=500"), "");
        let t = r.text();
        t.contains(marker).then_some(t)
    })
}

fn port_of(sp: &Slotpack, id: &str) -> u16 {
    let t = sp.call("GET", &format!("/api/tenants/{id}"), "").json();
    t["tenant"]["placement"]["port"].as_u64().unwrap() as u16
}

#[test]
fn a_tenant_reaches_no_token_no_database_and_no_other_tenants_env() {
    if !require_root("secrets") {
        return;
    }
    let sp = Slotpack::start(&[]);
    sp.create_ok(
        "victim",
        json!({"env": {"EXCHANGE_SECRET": "sekrit-4417"}, "args": ["--print-env"]}),
    );
    sp.wait_pong("victim");
    let data = sp.data.display().to_string();
    let agent_pid = sp.agent_pids()[0].1;
    let agent_token = std::fs::read_to_string(sp.data.join("pools/pool-1.token")).unwrap();
    let targets = [
        format!("{data}/slotpack.db"),
        format!("{data}/slotpack.db-wal"),
        format!("{data}/slotpack.db-shm"),
        format!("{data}/pools/pool-1.token"),
        format!("{data}/pools/pool-1.log"),
        format!("{data}/pools/pool-1/programs/victim.json"),
        format!("{data}/pools/pool-1/logs/victim.log"),
        format!("/proc/{}/environ", sp.pid()),
        format!("/proc/{agent_pid}/environ"),
    ];
    let mut script = String::new();
    for t in &targets {
        script.push_str(&format!(
            "if cat '{t}' 2>/dev/null; then echo 'READ {t}'; else echo 'denied {t}'; fi\n"
        ));
    }
    script.push_str(&format!(
        "ls '{data}' >/dev/null 2>&1 && echo 'LISTED data' || echo 'denied listing'\n"
    ));
    script.push_str(&format!(
        "ls '{data}/homes/pool-1' >/dev/null 2>&1 && echo 'LISTED homes' || echo 'denied homes'\n"
    ));
    script.push_str("echo done-snooping; exec sleep 1000\n");
    sp.create_ok("snoop", shell(&script));
    let log = log_with(&sp, "snoop", "done-snooping");
    for t in &targets {
        assert!(log.contains(&format!("denied {t}")), "{t} was read:\n{log}");
    }
    assert!(
        log.contains("denied listing") && log.contains("denied homes"),
        "{log}"
    );
    for secret in ["sekrit-4417", ADMIN, agent_token.trim()] {
        assert!(!log.contains(secret), "a secret reached the tenant:\n{log}");
    }
    // The files themselves: private to the orchestrator.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o711);
    for f in ["slotpack.db", "slotpack.db-wal", "pools/pool-1.token"] {
        assert_eq!(mode(&format!("{data}/{f}")) & 0o077, 0, "{f}");
    }
    // No API answer carries a tenant's env.
    for path in [
        "/api/tenants/victim",
        "/api/tenants",
        "/api/events?limit=1000",
        "/api/pool/status",
    ] {
        let r = sp.call("GET", path, "");
        assert_eq!(r.status, 200, "{path}");
        assert!(!r.text().contains("sekrit-4417"), "{path} shows the env");
    }
}

#[test]
fn a_setsid_escape_dies_with_its_slot_and_leaves_no_files_for_the_next_tenant() {
    if !require_root("setsid escape") {
        return;
    }
    let sp = Slotpack::start(&[]);
    let leak = format!("/tmp/slotpack-leak-{}", std::process::id());
    let tenant = slotpack_tests::bin_seen_by_slots("test-tenant")
        .display()
        .to_string();
    let script = format!(
        "setsid sh -c 'exec sleep 1001' </dev/null >/dev/null 2>&1 &\n\
         echo private-notes > {leak}; chmod 644 {leak}\n\
         exec {tenant}"
    );
    sp.create_ok("runaway", shell(&script));
    let port = sp.wait_pong("runaway");
    let uid = uid_of_port(port);
    wait_for(LONG, "the escaped sleep runs", || {
        (processes_of_uid(uid).len() >= 2).then_some(())
    });
    // In a sandbox the file lands in the slot's own /tmp, not the host's.
    let sandboxed = sp.sandboxed();
    assert_eq!(std::path::Path::new(&leak).exists(), !sandboxed);
    // A stop leaves nothing of the slot's user running.
    let r = sp.call("POST", "/api/tenants/runaway/stop", "");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for(LONG, "no process of the slot user", || {
        processes_of_uid(uid).is_empty().then_some(())
    });
    // Start again, then delete: processes and files outside the home go.
    assert_eq!(
        sp.call("POST", "/api/tenants/runaway/start", "").status,
        200
    );
    wait_for(LONG, "escape again", || {
        (processes_of_uid(uid).len() >= 2).then_some(())
    });
    assert_eq!(sp.call("DELETE", "/api/tenants/runaway", "").status, 200);
    assert!(
        processes_of_uid(uid).is_empty(),
        "{:?}",
        processes_of_uid(uid)
    );
    assert!(
        !std::path::Path::new(&leak).exists(),
        "{leak} outlived its tenant"
    );
    // The next tenant of the slot (same uid) finds nothing.
    let body = shell(&format!(
        "cat {leak} 2>/dev/null || echo nothing-left; exec sleep 1000"
    ));
    sp.create_ok("next", body);
    assert_eq!(port_of(&sp, "next"), port, "same slot, same uid");
    let log = log_with(&sp, "next", "nothing-left");
    assert!(!log.contains("private-notes"), "{log}");
}

#[test]
fn a_fork_bomb_stays_in_its_slot_and_programs_cannot_gain_privileges() {
    if !require_root("fork bomb") {
        return;
    }
    let sp = Slotpack::start(&[("SLOT_MAX_PROCS", "40")]);
    sp.create_ok("neighbour", json!({}));
    let neighbour = sp.wait_pong("neighbour");
    // Forks without end (retrying when refused), and every child lives on.
    let flood = "import os, time\nwhile True:\n    try:\n        if os.fork() == 0:\n            os.execv('/bin/sleep', ['sleep', '1000'])\n    except OSError:\n        time.sleep(0.01)\n";
    sp.create_ok(
        "bomb",
        json!({"command": "/usr/bin/python3", "args": ["-c", flood], "ping": null,
               "restart": {"startSecs": 0}}),
    );
    let uid = uid_of_port(port_of(&sp, "bomb"));
    wait_for(LONG, "the bomb hits its limit", || {
        (processes_of_uid(uid).len() >= 30).then_some(())
    });
    for _ in 0..20 {
        let n = processes_of_uid(uid).len();
        assert!(n <= 40, "{n} processes in one slot");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The neighbour and the pool still answer.
    let r = sp.call("GET", "/api/tenants/neighbour/proxy/api/v1/ping", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let state = sp.call("GET", "/api/tenants/neighbour", "").json()["tenant"]["state"].clone();
    assert_eq!(state, "running");
    let status = std::fs::read_to_string(format!(
        "/proc/{}/status",
        processes_of_uid(uid_of_port(neighbour))[0]
    ))
    .unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert_eq!(sp.call("DELETE", "/api/tenants/bomb", "").status, 200);
    assert!(processes_of_uid(uid).is_empty());
}

#[test]
fn a_stubborn_tenant_cannot_hold_the_health_tick() {
    let sp = Slotpack::start(&[]);
    let stubborn = json!({"args": ["--ignore-term"], "stop": {"timeoutMs": 300000}});
    let r = sp.create("stubborn", stubborn);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("stop.timeoutMs"), "{}", r.text());
    // At the maximum, with a lifetime of one second: it expires while ignoring
    // SIGTERM, and the ticks that delete it answer long before its stop
    // timeout would (the client gives up after 30 s; the stop takes 120 s).
    sp.create_ok(
        "stubborn",
        json!({"args": ["--ignore-term"], "stop": {"timeoutMs": 120000},
               "maxLifetimeSeconds": 1}),
    );
    sp.wait_pong("stubborn");
    std::thread::sleep(Duration::from_millis(1100));
    let h = sp.health_check();
    assert!(h["recoveryActions"].to_string().contains("stubborn"), "{h}");
    // Meanwhile another tenant is still created and recovered as usual.
    sp.create_ok("other", json!({}));
    sp.wait_pong("other");
    let again = sp.health_check();
    assert!(again["success"] == true, "{again}");
    let list = sp.call("GET", "/api/tenants", "").json();
    assert!(!list.to_string().contains("\"stubborn\""), "{list}");
}

#[test]
fn changing_slots_per_pool_between_runs_never_overlaps_ports_or_users() {
    // Two full pools of 5 slots, then 3 slots per pool: block 2 of width 3
    // (ports +6..+9) would overlap the second pool (+5..+10).
    let mut sp = Slotpack::start_sized(5, 8, &[]);
    for i in 0..10 {
        sp.create_ok(&format!("wide-{i}"), json!({}));
    }
    sp.stop();
    sp.set_env("MAX_BOTS_PER_CONTAINER", "3");
    sp.spawn();
    for i in 0..3 {
        sp.create_ok(&format!("narrow-{i}"), json!({}));
    }
    let status = sp.call("GET", "/api/pool/status", "").json();
    let list = sp.call("GET", "/api/tenants", "").json();
    let mut ports: Vec<u64> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["placement"]["port"].as_u64().unwrap())
        .collect();
    ports.sort();
    let n = ports.len();
    ports.dedup();
    assert_eq!((n, ports.len()), (13, 13), "{list}");
    // Port ranges of pools never overlap (uids follow the ports one to one).
    let mut ranges: Vec<(u64, u64)> = status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let b = p["basePort"].as_u64().unwrap();
            (b, b + p["capacity"].as_u64().unwrap())
        })
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping pools {ranges:?}");
    }
    for id in ["wide-9", "narrow-2"] {
        sp.wait_pong(id);
    }
    if is_root() {
        // Each running slot's processes run as their own user.
        let uids: Vec<u32> = ports.iter().map(|p| uid_of_port(*p as u16)).collect();
        for (p, u) in ports.iter().zip(&uids) {
            wait_for(LONG, &format!("a process of uid {u} on {p}"), || {
                (!processes_of_uid(*u).is_empty()).then_some(())
            });
        }
    }
}

/// A hostile Python tenant: binds every port given (as servers do, with
/// SO_REUSEADDR), says which it got, then answers every request with a pong
/// and logs the request line and headers it received.
const THIEF: &str = r#"
import select, socket, sys
socks = []
for p in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p)); s.listen(16); socks.append(s); print("bound", p, flush=True)
    except OSError as e:
        print("refused", p, e, flush=True)
print("thief ready", flush=True)
while socks:
    for s in select.select(socks, [], [])[0]:
        c, _ = s.accept()
        c.settimeout(2)
        try:
            print("GOT", c.recv(65536).decode(errors="replace").replace("\r\n", " | "), flush=True)
            c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{"status":"pong"}')
        except OSError:
            pass
        c.close()
"#;

fn thief(ports: &[u16]) -> Value {
    let mut args = vec!["-c".to_string(), THIEF.to_string()];
    args.extend(ports.iter().map(|p| p.to_string()));
    json!({"command": "/usr/bin/python3", "args": args, "ping": null,
           "restart": {"startSecs": 0}})
}

#[test]
fn a_tenant_cannot_take_a_free_slots_port_nor_block_a_new_pool() {
    let sp = Slotpack::start(&[]);
    let b = sp.base_port;
    // Pool 1 holds slots b..b+3 (agent on b-1); the next block would be
    // b+3..b+6 with its agent on b-2.
    let grab = [b + 1, b + 2, b - 2, b + 3, b + 4, b + 5];
    sp.create_ok("thief", thief(&grab));
    let log = log_with(&sp, "thief", "thief ready");
    for p in [b + 1, b + 2] {
        assert!(
            log.contains(&format!("refused {p}")),
            "took free slot port {p}:\n{log}"
        );
    }
    // In a sandbox a slot binds its own port only; without, the next
    // block's ports are free for the taking (and that block is skipped).
    let sandboxed = sp.sandboxed();
    for p in [b - 2, b + 3] {
        let word = if sandboxed { "refused" } else { "bound" };
        assert!(log.contains(&format!("{word} {p}")), "{log}");
    }
    // The next tenants of pool 1 get their own traffic.
    for id in ["victim", "second"] {
        sp.create_ok(id, json!({}));
        let port = sp.wait_pong(id);
        let info = sp.call("GET", &format!("/api/tenants/{id}/proxy/info"), "");
        assert_eq!(info.status, 200, "{}", info.text());
        if is_root() {
            assert_eq!(info.json()["uid"], uid_of_port(port), "{id}");
        }
    }
    // The squatted block is skipped: a new pool starts elsewhere.
    let r = sp.create("third", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    let port = sp.wait_pong("third");
    if !sandboxed {
        assert!(!grab.contains(&port), "placed on a squatted port {port}");
    }
    let agent = sp.call("GET", "/api/pool/status", "").json();
    assert_eq!(agent["totalPools"], 2, "{agent}");
    let log = sp
        .call("GET", "/api/tenants/thief/logs?tail=500", "")
        .text();
    assert!(!log.contains("GOT"), "the thief received a request:\n{log}");
}

#[test]
fn a_tenant_on_a_neighbours_port_gets_none_of_its_traffic_and_is_ended() {
    if !require_root("port theft") {
        return;
    }
    let sp = Slotpack::start(&[]);
    // The victim does not bind its port at once (as a slow starter would).
    sp.create_ok("victim", json!({"args": ["--no-listen"], "ping": null}));
    let victim_port = port_of(&sp, "victim");
    sp.create_ok("thief", thief(&[victim_port]));
    if sp.sandboxed() {
        // The kernel refuses the bind: nothing to police.
        log_with(&sp, "thief", &format!("refused {victim_port}"));
        return;
    }
    log_with(&sp, "thief", &format!("bound {victim_port}"));
    let r = sp.call("GET", "/api/tenants/victim/proxy/api/v1/ping", "");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("held by uid"), "{}", r.text());
    // The agent ends the thief (its program restarts by its own policy).
    let log = log_with(&sp, "thief", "listened on port");
    assert!(!log.contains("GOT"), "the thief received a request:\n{log}");
}

#[test]
fn without_isolation_serve_takes_one_owners_tenants_unless_told_otherwise() {
    // As root, serve runs as nobody; otherwise it is not root anyway.
    let uid = is_root().then_some(65_534);
    let mut sp = Slotpack::start_as(uid, &[]);
    sp.create_ok("first", json!({"owner": "alice"}));
    let r = sp.create("second", json!({"owner": "bob"}));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("isolation is off"), "{}", r.text());
    sp.create_ok("third", json!({"owner": "alice"}));
    assert!(sp.stderr().contains("not root"), "{}", sp.stderr());
    sp.stop();
    sp.set_env("SLOTPACK_ALLOW_SHARED_UID", "true");
    sp.spawn();
    sp.create_ok("second", json!({"owner": "bob"}));
    sp.wait_pong("second");
}

#[test]
fn a_nested_data_dir_lets_slot_users_reach_their_homes_or_serve_says_why_not() {
    if !require_root("data dir reach") {
        return;
    }
    // A data dir two levels down: the parents must stay traversable.
    let top = std::env::temp_dir().join(format!("slotpack-nested-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&top);
    let nested = top.join("deploy/data");
    let sp = Slotpack::start(&[("SLOTPACK_DATA_DIR", nested.to_str().unwrap())]);
    sp.create_ok("reach", json!({}));
    sp.wait_pong("reach");
    drop(sp);
    // An ancestor nobody else may traverse: serve refuses, and says why.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = top.with_extension("stderr");
    let mut serve = std::process::Command::new(bin("slotpack"))
        .arg("serve")
        .env("SLOTPACK_ADMIN_TOKEN", "x")
        .env("SLOTPACK_DATA_DIR", &nested)
        .env("SLOTPACK_LISTEN", "127.0.0.1:0")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let exited = wait_for(LONG, "serve to refuse", || {
        let st = serve.try_wait().ok().flatten();
        if st.is_none() && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("serving")) {
            let _ = serve.kill();
            let _ = serve.wait();
            panic!("serve started on a data dir slot users cannot reach");
        }
        st
    });
    let err = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(!exited.success());
    assert!(
        err.contains("chmod o+x") && err.contains(top.to_str().unwrap()),
        "{err}"
    );
    std::fs::remove_dir_all(&top).unwrap();
}

#[test]
fn a_command_the_slot_user_cannot_run_is_a_clear_400_not_a_restart_loop() {
    if !require_root("command access") {
        return;
    }
    let sp = Slotpack::start(&[]);
    // A program below a private folder, as a venv in a 0700 home would be.
    let private = std::env::temp_dir().join(format!("slotpack-private-{}", std::process::id()));
    std::fs::create_dir_all(private.join("venv/bin")).unwrap();
    let cmd = private.join("venv/bin/test-tenant");
    std::fs::copy(bin("test-tenant"), &cmd).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let r = sp.create("locked-out", json!({"command": cmd.display().to_string()}));
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("cannot be run by the slot's user") && msg.contains(private.to_str().unwrap()),
        "{msg}"
    );
    // Nothing was kept: not listed, and the same id works once it can run.
    assert_eq!(sp.call("GET", "/api/tenants/locked-out", "").status, 404);
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    sp.create_ok("locked-out", json!({"command": cmd.display().to_string()}));
    sp.wait_pong("locked-out");
    drop(sp);
    std::fs::remove_dir_all(&private).unwrap();
}

#[test]
fn a_command_or_folder_every_tenant_could_change_is_refused() {
    if !require_root("shared writable command") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let sp = Slotpack::start(&[]);
    // An "image" folder left world-writable: a neighbour could replace the
    // program (or drop files into the folder it starts in).
    let shared = std::env::temp_dir().join(format!("slotpack-shared-{}", std::process::id()));
    std::fs::create_dir_all(&shared).unwrap();
    let cmd = shared.join("test-tenant");
    std::fs::copy(bin("test-tenant"), &cmd).unwrap();
    let mode = |p: &std::path::Path, m| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(&shared, 0o777);
    let r = sp.create("victim", json!({"command": cmd.display().to_string()}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("writable by every user"), "{}", r.text());
    mode(&shared, 0o755);
    mode(&cmd, 0o777);
    let r = sp.create("victim", json!({"command": cmd.display().to_string()}));
    assert_eq!(r.status, 400, "{}", r.text());
    mode(&cmd, 0o755);
    let workdir = shared.join("work");
    std::fs::create_dir_all(&workdir).unwrap();
    mode(&workdir, 0o777);
    let spec =
        json!({"command": cmd.display().to_string(), "workingDir": workdir.display().to_string()});
    let r = sp.create("victim", spec.clone());
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(sp.call("GET", "/api/tenants/victim", "").status, 404);
    // Once only root may change them, the same spec runs.
    mode(&workdir, 0o755);
    sp.create_ok("victim", spec);
    sp.wait_pong("victim");
    drop(sp);
    std::fs::remove_dir_all(&shared).unwrap();
}
