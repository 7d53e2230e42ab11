//! The slot as a kernel sandbox, attacked by hostile Python tenants on the
//! local backend as root and on the docker backend (a Python pool class):
//! memory with shmem and `setsid` children, leftovers in SysV IPC, POSIX
//! message queues and temp folders, `/proc`, binds and connects to
//! guarded ports, a full `/tmp`. CI runs every one (as root, with Docker).

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Value};
use slotpack_tests::docker::{docker, pool_image, require_python_image, Deployment, PYTHON_IMAGE};
use slotpack_tests::http::request;
use slotpack_tests::orchestrator::{Slotpack, ADMIN};
use slotpack_tests::{in_ci, processes_of_uid, require_root, uid_of_port, wait_for};

const LONG: Duration = Duration::from_secs(30);

/// One hostile program with several modes (`python3 -c ATTACK MODE ARGS`).
const ATTACK: &str = r#"
import ctypes, json, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
KEY = 0x5107
TEMP = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
def out(*a):
    print(*a, flush=True)
mode = sys.argv[1]
if mode == "plant":
    out("shm", libc.shmget(KEY, 4096, 0o1666))
    out("mq", libc.mq_open(b"/slotpack-secret", os.O_CREAT | os.O_RDWR, 0o666, None))
    for d in TEMP:
        with open(d + "/secret", "w") as f:
            f.write("s3cret")
    out("planted")
elif mode == "look":
    seen = []
    if libc.shmget(KEY, 0, 0) >= 0:
        seen.append("shm")
    if libc.mq_open(b"/slotpack-secret", os.O_RDWR) >= 0:
        seen.append("mq")
    seen += [d for d in TEMP if os.path.exists(d + "/secret")]
    out("seen", " ".join(seen) or "nothing")
elif mode == "shm-hog":
    with open("/dev/shm/fill", "wb") as f:
        for i in range(400):
            f.write(b"x" * (1 << 20))
            f.flush()
    out("not stopped")
elif mode == "setsid-hog":
    if os.fork() == 0:
        os.setsid()
        x = bytearray(300 << 20)
        for i in range(0, len(x), 4096):
            x[i] = 1
        out("not stopped")
    time.sleep(1000)
elif mode == "fill-tmp":
    try:
        with open("/tmp/fill", "wb") as f:
            for i in range(int(sys.argv[2])):
                f.write(b"x" * (1 << 20))
                f.flush()
        out("tmp took it all")
    except OSError as e:
        out("tmp full", e.errno)
    with open(os.environ["HOME"] + "/note", "w") as f:
        f.write("home still writable")
    out("home ok")
elif mode == "procs":
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    cmdlines = []
    for p in pids:
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                cmdlines.append(f.read().replace(b"\0", b" ").decode())
        except OSError:
            pass
    out("pids", json.dumps(pids))
    out("cmdlines", json.dumps(cmdlines))
elif mode == "net":
    for what, fam, typ, host, port in json.loads(sys.argv[2]):
        s = socket.socket(socket.AF_INET6 if fam == 6 else socket.AF_INET,
                          socket.SOCK_DGRAM if typ == "udp" else socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            if what == "bind":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
            elif what == "send":
                s.sendto(b"x", (host, port))
            else:
                s.connect((host, port))
            out("try", what, typ, host, port, "ok")
        except OSError as e:
            out("try", what, typ, host, port, "errno", e.errno)
        s.close()
    out("net done")
if mode != "setsid-hog":
    time.sleep(1000)
"#;

/// Where a test's tenants run: the command for Python and extra spec fields.
struct Site {
    python: &'static str,
    extra: Value,
}

impl Site {
    fn local() -> Site {
        Site {
            python: "/usr/bin/python3",
            extra: json!({}),
        }
    }
    fn docker() -> Site {
        Site {
            python: "python3",
            extra: json!({"poolClass": "python"}),
        }
    }

    /// A tenant running the attack in `mode` with `args`.
    fn attack(&self, mode: &str, args: &[&str], more: Value) -> Value {
        let mut argv = vec![json!("-c"), json!(ATTACK), json!(mode)];
        argv.extend(args.iter().map(|a| json!(a)));
        let mut t = json!({"command": self.python, "args": argv, "ping": null,
                           "restart": {"startSecs": 0, "maxAttempts": 1, "cooldownMs": 600000},
                           "resources": {"memoryMb": 64, "cpuMillis": 10}});
        for src in [&self.extra, &more] {
            for (k, v) in src.as_object().unwrap() {
                t[k] = v.clone();
            }
        }
        t
    }
}

fn log_with(sp: &Slotpack, id: &str, marker: &str) -> String {
    wait_for(LONG, &format!("{id} logs {marker}"), || {
        let t = sp
            .call("GET", &format!("/api/tenants/{id}/logs?tail=500"), "")
            .text();
        t.contains(marker).then_some(t)
    })
}

fn tenant(sp: &Slotpack, id: &str) -> Value {
    sp.call("GET", &format!("/api/tenants/{id}"), "").json()["tenant"].clone()
}

fn port_of(sp: &Slotpack, id: &str) -> u16 {
    tenant(sp, id)["placement"]["port"].as_u64().unwrap() as u16
}

fn create(sp: &Slotpack, id: &str, body: Value) {
    let mut body = body;
    body["id"] = json!(id);
    let r = sp.call("POST", "/api/tenants", &body.to_string());
    assert_eq!(r.status, 201, "create {id}: {}", r.text());
}

/// DELETE each tenant, asserting 200.
fn delete(sp: &Slotpack, ids: &[&str]) {
    for id in ids {
        let r = sp.call("DELETE", &format!("/api/tenants/{id}"), "");
        assert_eq!(r.status, 200, "delete {id}: {}", r.text());
    }
}

/// The sandbox line of an agent at `addr` with `token`.
fn agent_sandbox(addr: &str, token: &str) -> String {
    let auth = format!("Bearer {token}");
    let r = request(addr, "GET", "/v1/health", &[("Authorization", &auth)], b"").unwrap();
    r.json()["sandbox"].as_str().unwrap_or("off").to_string()
}

/// On CI every part of the sandbox must be on (the machine has them all).
fn assert_sandbox_on(line: &str) {
    if in_ci() || slotpack_tests::is_root() {
        for part in [
            "cgroup v",
            "namespaces on",
            "landlock abi",
            "socket guard on",
        ] {
            assert!(line.contains(part), "sandbox lacks {part:?}: {line}");
        }
    }
}

/// Memory: an OOM from /dev/shm or a setsid child kills in its own slot
/// only, with a message and an event; the neighbour runs on untouched.
fn memory_attacks(sp: &Slotpack, site: &Site, neighbour: &str) {
    create(sp, "shm-hog", site.attack("shm-hog", &[], json!({})));
    create(sp, "setsid-hog", site.attack("setsid-hog", &[], json!({})));
    for id in ["shm-hog", "setsid-hog"] {
        let t = wait_for(LONG, &format!("{id} is told it ran out of memory"), || {
            sp.health_check();
            let t = tenant(sp, id);
            t["message"]
                .as_str()
                .is_some_and(|m| m.contains("memory limit exceeded"))
                .then_some(t)
        });
        let msg = t["message"].as_str().unwrap();
        assert!(msg.contains("kernel") && msg.contains("64 MiB"), "{msg}");
        let log = sp
            .call("GET", &format!("/api/tenants/{id}/logs?tail=200"), "")
            .text();
        assert!(
            !log.contains("not stopped"),
            "{id} outgrew its limit:\n{log}"
        );
    }
    let events = sp.call("GET", "/api/events?limit=200", "").text();
    for id in ["shm-hog", "setsid-hog"] {
        assert!(
            events.contains("tenant.memory") && events.contains(id),
            "{events}"
        );
    }
    let n = tenant(sp, neighbour);
    assert_eq!(n["state"], "running", "{n}");
    assert_eq!(n["restarts"], 0, "the neighbour paid for it: {n}");
    delete(sp, &["shm-hog", "setsid-hog"]);
}

/// Leftovers: what one tenant plants in IPC and temp folders is seen
/// neither by a neighbour meanwhile nor by the slot's next tenant.
fn leftover_attacks(sp: &Slotpack, site: &Site) {
    create(sp, "planter", site.attack("plant", &[], json!({})));
    let log = log_with(sp, "planter", "planted");
    assert!(!log.contains("shm -1") && !log.contains("mq -1"), "{log}");
    let port = port_of(sp, "planter");
    create(sp, "peeker", site.attack("look", &[], json!({})));
    let log = log_with(sp, "peeker", "seen ");
    assert!(log.contains("seen nothing"), "a neighbour saw: {log}");
    delete(sp, &["planter"]);
    create(sp, "next", site.attack("look", &[], json!({})));
    assert_eq!(
        port_of(sp, "next"),
        port,
        "the next tenant takes the same slot"
    );
    let log = log_with(sp, "next", "seen ");
    assert!(log.contains("seen nothing"), "the next tenant saw: {log}");
    delete(sp, &["peeker", "next"]);
}

/// A full /tmp is the filler's own ENOSPC; its home and its neighbours
/// keep writing.
fn disk_attack(sp: &Slotpack, site: &Site) {
    create(
        sp,
        "filler",
        site.attack(
            "fill-tmp",
            &["64"],
            json!({"resources": {"memoryMb": 128, "diskMb": 16}}),
        ),
    );
    let log = log_with(sp, "filler", "home ok");
    assert!(log.contains("tmp full 28"), "{log}");
    create(sp, "writer", site.attack("fill-tmp", &["4"], json!({})));
    let log = log_with(sp, "writer", "home ok");
    assert!(log.contains("tmp took it all"), "{log}");
    delete(sp, &["filler", "writer"]);
}

/// One net attempt: (what, family, type, host, port).
type Try = (&'static str, u8, &'static str, &'static str, u16);

/// Binds and connects from a slot: only its own port binds; guarded ports
/// (neighbour, agent, API) refuse connects at every local address;
/// `open` is a port the slot may still reach.
fn net_attack(sp: &Slotpack, site: &Site, guarded: &[u16], open: (&'static str, u16)) {
    create(sp, "prober", site.attack("net", &["[]"], json!({})));
    let own = port_of(sp, "prober");
    let _ = sp.call("DELETE", "/api/tenants/prober", "");
    let mut tries: Vec<Try> = vec![
        ("bind", 4, "tcp", "0.0.0.0", own),
        ("bind", 4, "udp", "127.0.0.1", own),
        ("bind", 6, "tcp", "::1", own),
        ("connect", 4, "tcp", open.0, open.1),
    ];
    for &p in guarded {
        for (fam, host) in [(4, "127.0.0.2"), (4, "0.0.0.0"), (6, "::1"), (6, "::")] {
            tries.push(("bind", fam, "tcp", host, p));
            tries.push(("bind", fam, "udp", host, p));
        }
        for (fam, host) in [
            (4, "127.0.0.1"),
            (4, "127.0.0.2"),
            (6, "::1"),
            (6, "::ffff:127.0.0.1"),
        ] {
            tries.push(("connect", fam, "tcp", host, p));
            tries.push(("send", fam, "udp", host, p));
        }
    }
    let spec = serde_json::to_string(&tries).unwrap();
    // Same slot again (the lowest free one).
    create(sp, "prober", site.attack("net", &[&spec], json!({})));
    assert_eq!(port_of(sp, "prober"), own);
    let log = log_with(sp, "prober", "net done");
    let result = |t: &Try| -> String {
        let head = format!("try {} {} {} {} ", t.0, t.2, t.3, t.4);
        log.lines()
            .find_map(|l| l.strip_prefix(&head))
            .unwrap_or_else(|| panic!("{head} not tried:\n{log}"))
            .to_string()
    };
    // A container without IPv6 has no ::1 (EADDRNOTAVAIL) at all.
    let no_v6 = |t: &Try, r: &str| t.1 == 6 && r == "errno 99";
    for t in &tries[..3] {
        let r = result(t);
        assert!(r == "ok" || no_v6(t, &r), "{t:?}: {r}:\n{log}");
    }
    // Reachable: it connects, or nothing listens there (refused).
    let r = result(&tries[3]);
    assert!(r == "ok" || r == "errno 111", "{r}:\n{log}");
    for t in &tries[4..] {
        let r = result(t);
        assert!(
            r == "errno 1" || r == "errno 13" || no_v6(t, &r),
            "{t:?} was allowed ({r}):\n{log}"
        );
    }
    delete(sp, &["prober"]);
}

/// `/proc` shows a slot its own processes only: no neighbour's argv, no
/// agent, no orchestrator.
fn proc_attack(sp: &Slotpack, site: &Site, hidden: &[i32]) {
    let secret = "--exchange-secret=hunter2-5107";
    let keeper = format!("sleep 1000; : {secret}");
    let mut body = site.attack("look", &[], json!({}));
    body["command"] = json!("/bin/sh");
    body["args"] = json!(["-c", keeper]);
    create(sp, "keeper", body);
    create(sp, "snoop", site.attack("procs", &[], json!({})));
    let log = log_with(sp, "snoop", "cmdlines");
    assert!(
        !log.contains("hunter2"),
        "a neighbour's argv is visible:\n{log}"
    );
    let pids: Vec<i32> = log
        .lines()
        .find_map(|l| l.strip_prefix("pids "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap();
    assert!(!pids.is_empty() && pids.len() <= 3, "sees {pids:?}");
    for h in hidden {
        assert!(!pids.contains(h), "sees pid {h}: {pids:?}");
    }
    delete(sp, &["keeper", "snoop"]);
}

#[test]
fn on_the_local_backend_a_slot_is_a_kernel_sandbox() {
    if !require_root("local sandbox") {
        return;
    }
    let sp = Slotpack::start_sized(4, 4, &[]);
    let site = Site::local();
    sp.create_ok("neighbour", json!({}));
    let neighbour = sp.wait_pong("neighbour");
    assert_sandbox_on(&sp.sandbox());
    // The slot's memory limit and CPU share are the kernel's.
    let pid = processes_of_uid(uid_of_port(neighbour))[0];
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = |ctrl: &str| {
        cg.lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, c, p) = (f.next()?, f.next()?, f.next()?);
                c.split(',').any(|x| x == ctrl).then(|| p.to_string())
            })
            .unwrap_or_else(|| panic!("no {ctrl} cgroup: {cg}"))
    };
    let mem = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{}/memory.limit_in_bytes",
        path("memory")
    ))
    .unwrap();
    assert_eq!(mem.trim(), (64u64 << 20).to_string());
    let shares =
        std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{}/cpu.shares", path("cpu"))).unwrap();
    assert_eq!(shares.trim(), "10", "10 millicores");
    assert!(path("memory").contains("/slot-agent-") && path("memory").ends_with("/slot-0"));
    // No capability can come back: an empty bounding set, no_new_privs.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for want in [
        "CapBnd:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        assert!(status.contains(want), "{want} missing:\n{status}");
    }
    let group = std::path::PathBuf::from(format!("/sys/fs/cgroup/memory{}", path("memory")));
    let agent_group = group.parent().unwrap().to_path_buf();

    memory_attacks(&sp, &site, "neighbour");
    leftover_attacks(&sp, &site);
    disk_attack(&sp, &site);
    // The API, the agent and a neighbour are guarded; a port outside the
    // deployment's range stays reachable.
    let listener = std::net::TcpListener::bind("127.0.0.1:1999")
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:1998"))
        .unwrap();
    let open_port = listener.local_addr().unwrap().port();
    let api_port: u16 = sp.addr.rsplit(':').next().unwrap().parse().unwrap();
    net_attack(
        &sp,
        &site,
        &[neighbour, sp.base_port - 1, api_port],
        ("127.0.0.1", open_port),
    );
    let agents: Vec<i32> = sp.agent_pids().into_iter().map(|(_, p)| p).collect();
    let mut hidden = vec![sp.pid(), pid];
    hidden.extend(agents);
    proc_attack(&sp, &site, &hidden);
    // No secret in any command line of slotpack's own.
    for p in hidden
        .iter()
        .take(1)
        .chain(sp.agent_pids().iter().map(|(_, p)| p))
    {
        let mut cmdline = String::new();
        std::fs::File::open(format!("/proc/{p}/cmdline"))
            .unwrap()
            .read_to_string(&mut cmdline)
            .unwrap();
        let token = std::fs::read_to_string(sp.data.join("pools/pool-1.token")).unwrap();
        assert!(
            !cmdline.contains(ADMIN) && !cmdline.contains(token.trim()),
            "{cmdline}"
        );
    }
    assert_eq!(tenant(&sp, "neighbour")["restarts"], 0);
    // A stopped agent leaves no group of its own behind.
    drop(sp);
    assert!(
        !agent_group.exists(),
        "{} outlived its agent",
        agent_group.display()
    );
}

#[test]
fn on_the_docker_backend_a_slot_is_a_kernel_sandbox() {
    if !require_python_image("docker sandbox") {
        return;
    }
    let _dep = Deployment("sandbox-dk".into());
    let dir = std::env::temp_dir().join(format!("slotpack-sbx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("slotpack.toml");
    std::fs::write(
        &config,
        format!("[classes.python]\nimage = \"{PYTHON_IMAGE}\"\nslots = 4\nmemory = \"1g\"\n"),
    )
    .unwrap();
    let sp = Slotpack::start_full(
        4,
        4,
        &[
            ("SLOTPACK_BACKEND", "docker"),
            ("SLOTPACK_POOL_IMAGE", &pool_image()),
            ("SLOTPACK_DEPLOYMENT", "sandbox-dk"),
        ],
        &["--config", config.to_str().unwrap()],
    );
    let site = Site::docker();
    let mut first = site.attack("look", &[], json!({}));
    first["command"] = json!("python3");
    first["args"] = json!(["server.py"]);
    first["workingDir"] = json!("/app");
    first["ping"] = json!({"kind": "http", "path": "/api/v1/ping", "intervalMs": 200});
    create(&sp, "neighbour", first);
    wait_for(LONG, "neighbour healthy", || {
        (tenant(&sp, "neighbour")["healthy"] == true).then_some(())
    });
    // The pool container's agent reports its sandbox.
    let id = docker(&[
        "ps",
        "-q",
        "--filter",
        "label=slotpack.deployment=sandbox-dk",
    ]);
    let id = id.lines().next().expect("a pool container").to_string();
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &id,
    ]);
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix("SLOT_AGENT_TOKEN="))
        .expect("agent token")
        .to_string();
    let agent = docker(&["port", &id, "8999/tcp"]);
    let agent = agent.lines().next().unwrap_or_default().trim().to_string();
    assert_sandbox_on(&agent_sandbox(&agent, &token));
    let neighbour = port_of(&sp, "neighbour");

    memory_attacks(&sp, &site, "neighbour");
    leftover_attacks(&sp, &site);
    disk_attack(&sp, &site);
    // Outbound from the pool container: the host's bridge address is not
    // the container's own, so it stays reachable.
    let gateway = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
        &id,
    ]);
    let gateway: &'static str = Box::leak(gateway.trim().to_string().into_boxed_str());
    let listener = std::net::TcpListener::bind(format!("{gateway}:0")).unwrap();
    let open_port = listener.local_addr().unwrap().port();
    net_attack(&sp, &site, &[neighbour, 8999], (gateway, open_port));
    proc_attack(&sp, &site, &[1]);
    assert_eq!(tenant(&sp, "neighbour")["restarts"], 0);
    drop(sp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run `slotpack serve` with `env` until it exits (at most 20 s); its
/// exit code (None: still running, then killed) and stderr.
fn serve_once(env: &[(String, String)], args: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(slotpack_tests::bin("slotpack"))
        .arg("serve")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
}

#[test]
fn serve_takes_its_admin_token_from_the_environment_or_a_file_never_argv() {
    let (code, err) = serve_once(&[], &["--admin-token", "visible-in-ps"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("SLOTPACK_ADMIN_TOKEN") && err.contains("--admin-token-file"),
        "{err}"
    );
    // From a file, with no token in the environment.
    let file = std::env::temp_dir().join(format!("slotpack-admin-{}", std::process::id()));
    std::fs::write(&file, format!("{ADMIN}\n")).unwrap();
    let sp = Slotpack::start_full(
        3,
        2,
        &[("SLOTPACK_ADMIN_TOKEN", "")],
        &["--admin-token-file", file.to_str().unwrap()],
    );
    let r = sp.call("GET", "/api/tenants", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", sp.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(ADMIN));
    drop(sp);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn two_deployments_on_one_host_never_share_slot_uids() {
    if !require_root("slot uid ranges") {
        return;
    }
    let registry = std::env::temp_dir().join(format!("slotpack-uids-{}", std::process::id()));
    let reg = registry.display().to_string();
    let a = Slotpack::start(&[("SLOTPACK_UID_REGISTRY", &reg)]);
    a.create_ok("mine", json!({}));
    let port = a.wait_pong("mine");
    let a_uid = uid_of_port(port);
    // B on other ports but with A's slot uids: refused, naming A.
    let b_ports = slotpack_tests::agent::free_ports(12);
    let b_data = std::env::temp_dir().join(format!("slotpack-b-{}-{b_ports}", std::process::id()));
    let env = |uid_base: u32| -> Vec<(String, String)> {
        [
            ("SLOTPACK_ADMIN_TOKEN", ADMIN.to_string()),
            ("SLOTPACK_DATA_DIR", b_data.display().to_string()),
            ("SLOTPACK_LISTEN", format!("127.0.0.1:{b_ports}")),
            ("POOL_BASE_PORT", (b_ports + 4).to_string()),
            ("MAX_BOTS_PER_CONTAINER", "3".to_string()),
            ("SLOT_UID_BASE", uid_base.to_string()),
            ("SLOTPACK_UID_REGISTRY", reg.clone()),
            (
                "SLOTPACK_AGENT_BIN",
                slotpack_tests::bin("slot-agent").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let (code, err) = serve_once(&env(a_uid - 1), &[]);
    assert!(code.is_some_and(|c| c != 0), "B started on A's uids: {err}");
    assert!(
        err.contains("overlap") && err.contains(&a.data.display().to_string()),
        "{err}"
    );
    // An account of /etc/passwd in the range: refused too (nobody, 65534).
    let (code, err) = serve_once(&env(65_533), &[]);
    assert!(code.is_some_and(|c| c != 0), "{err}");
    assert!(
        err.contains("65534") && err.contains("/etc/passwd"),
        "{err}"
    );
    // A running process of a uid in the range: refused.
    let squatter_uid = uid_of_port(b_ports + 4) + 1;
    let mut squatter = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={squatter_uid}"),
            &format!("--regid={squatter_uid}"),
            "--clear-groups",
            "sleep",
            "60",
        ])
        .spawn()
        .unwrap();
    wait_for(LONG, "the squatter runs", || {
        (!processes_of_uid(squatter_uid).is_empty()).then_some(())
    });
    let (code, err) = serve_once(&env(uid_of_port(b_ports + 4)), &[]);
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert!(code.is_some_and(|c| c != 0), "{err}");
    assert!(
        err.contains(&squatter_uid.to_string()) && err.contains("running process"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&b_data);
    // A's tenant never noticed.
    assert_eq!(tenant(&a, "mine")["restarts"], 0);
    drop(a);
    let _ = std::fs::remove_dir_all(&registry);
}
