//! A real `slotpack serve` on the local backend, on free loopback ports,
//! with its own data dir. Dropping it stops the orchestrator and every pool
//! agent it started (by the pids in its data dir).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::agent::free_ports;
use crate::http::{request, Response};
use crate::{alive, bin, wait_for};

/// The admin token of test orchestrators.
pub const ADMIN: &str = "admin-token-77e2";

/// A running orchestrator.
pub struct Slotpack {
    child: Option<Child>,
    /// API address.
    pub addr: String,
    /// `POOL_BASE_PORT`.
    pub base_port: u16,
    /// Data dir.
    pub data: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    stderr: PathBuf,
    uid: Option<u32>,
}

impl Slotpack {
    /// Start with 3 slots per pool, room for 15 pools, no automatic health
    /// ticks (tests run them through the API), and extra env.
    pub fn start(env: &[(&str, &str)]) -> Slotpack {
        Slotpack::start_sized(3, 15, env)
    }

    /// Start with `slots` per pool and port room for `pools` pools.
    pub fn start_sized(slots: u16, pools: u16, env: &[(&str, &str)]) -> Slotpack {
        Slotpack::start_full(slots, pools, env, &[])
    }

    /// Like [`Slotpack::start`], running `slotpack serve` as `uid` (when
    /// given; the tests must be root for that).
    pub fn start_as(uid: Option<u32>, env: &[(&str, &str)]) -> Slotpack {
        Slotpack::start_inner(3, 15, env, &[], uid)
    }

    /// Like [`Slotpack::start_sized`], with extra `serve` flags.
    pub fn start_full(slots: u16, pools: u16, env: &[(&str, &str)], args: &[&str]) -> Slotpack {
        Slotpack::start_inner(slots, pools, env, args, None)
    }

    fn start_inner(
        slots: u16,
        pools: u16,
        env: &[(&str, &str)],
        args: &[&str],
        uid: Option<u32>,
    ) -> Slotpack {
        let width = 1 + pools + pools * slots;
        let first = free_ports(width);
        let base_port = first + 1 + pools;
        let data =
            std::env::temp_dir().join(format!("slotpack-orch-{}-{first}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut all: Vec<(String, String)> = vec![
            ("SLOTPACK_ADMIN_TOKEN".into(), ADMIN.into()),
            ("SLOTPACK_DATA_DIR".into(), data.display().to_string()),
            ("SLOTPACK_LISTEN".into(), format!("127.0.0.1:{first}")),
            ("POOL_BASE_PORT".into(), base_port.to_string()),
            ("MAX_BOTS_PER_CONTAINER".into(), slots.to_string()),
            ("HEALTH_CHECK_INTERVAL".into(), "3600000".into()),
            // Slot users never shared with a concurrent test: uid = 100000 + port.
            (
                "SLOT_UID_BASE".into(),
                crate::uid_of_port(base_port).to_string(),
            ),
            (
                "SLOTPACK_AGENT_BIN".into(),
                bin("slot-agent").display().to_string(),
            ),
        ];
        for (k, v) in env {
            all.retain(|(x, _)| x != k);
            all.push((k.to_string(), v.to_string()));
        }
        // A test may choose the data dir; the agents are found there.
        let data = env
            .iter()
            .find(|(k, _)| *k == "SLOTPACK_DATA_DIR")
            .map_or(data, |(_, v)| PathBuf::from(v));
        let mut s = Slotpack {
            child: None,
            addr: format!("127.0.0.1:{first}"),
            base_port,
            stderr: data.with_extension("stderr"),
            data,
            env: all,
            args: args.iter().map(|a| a.to_string()).collect(),
            uid,
        };
        s.spawn();
        s
    }

    /// (Re)start `slotpack serve` on the same data dir and ports.
    pub fn spawn(&mut self) {
        if let Some(dir) = self.stderr.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let mut cmd = Command::new(bin("slotpack"));
        if let Some(uid) = self.uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let child = cmd
            .arg("serve")
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn slotpack");
        self.child = Some(child);
        wait_for(Duration::from_secs(30), "orchestrator up", || {
            request(&self.addr, "GET", "/healthz", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    /// Set (or replace) an environment variable for the next [`Slotpack::spawn`].
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// What the orchestrator printed.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The orchestrator's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Kill the orchestrator with SIGKILL (pools keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop the orchestrator with SIGTERM.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        wait_for(Duration::from_secs(30), "orchestrator exit", || {
            c.try_wait().ok().flatten()
        })
    }

    /// A request with a token (`None`: no auth header).
    pub fn call_as(&self, token: Option<&str>, method: &str, path: &str, body: &str) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        request(&self.addr, method, path, &h, body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// An admin request.
    pub fn call(&self, method: &str, path: &str, body: &str) -> Response {
        self.call_as(Some(ADMIN), method, path, body)
    }

    /// Create a test tenant as admin with extra fields; returns the answer.
    pub fn create(&self, id: &str, extra: Value) -> Response {
        self.call("POST", "/api/tenants", &tenant(id, extra).to_string())
    }

    /// Create, asserting 201; returns the created body.
    pub fn create_ok(&self, id: &str, extra: Value) -> Value {
        let r = self.create(id, extra);
        assert_eq!(r.status, 201, "create {id}: {}", r.text());
        r.json()
    }

    /// Wait until the tenant answers its ping on its own port; returns the port.
    pub fn wait_pong(&self, id: &str) -> u16 {
        let t = self.call("GET", &format!("/api/tenants/{id}"), "").json();
        let port = t["tenant"]["placement"]["port"]
            .as_u64()
            .unwrap_or_else(|| panic!("{t}")) as u16;
        wait_for(
            Duration::from_secs(20),
            &format!("{id} answers on {port}"),
            || {
                request(
                    &format!("127.0.0.1:{port}"),
                    "GET",
                    "/api/v1/ping",
                    &[],
                    b"",
                )
                .ok()
                .filter(|r| r.status == 200 && r.text().contains("pong"))
            },
        );
        port
    }

    /// One health tick through the API.
    pub fn health_check(&self) -> Value {
        let r = self.call("POST", "/api/pool/health-check", "");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// The sandbox pool-1's agent reports (`off` without one); the pool
    /// must be running.
    pub fn sandbox(&self) -> String {
        let token =
            std::fs::read_to_string(self.data.join("pools/pool-1.token")).expect("pool-1 runs");
        let auth = format!("Bearer {}", token.trim());
        let r = request(
            &format!("127.0.0.1:{}", self.base_port - 1),
            "GET",
            "/v1/health",
            &[("Authorization", &auth)],
            b"",
        )
        .expect("agent health");
        r.json()["sandbox"].as_str().unwrap_or("off").to_string()
    }

    /// Whether pool-1's slots are kernel sandboxes (cgroups and namespaces).
    pub fn sandboxed(&self) -> bool {
        let s = self.sandbox();
        s.starts_with("cgroup v") && s.contains("namespaces on")
    }

    /// Pids of the pool agents (from the data dir).
    pub fn agent_pids(&self) -> Vec<(String, i32)> {
        let Ok(rd) = std::fs::read_dir(self.data.join("pools")) else {
            return Vec::new();
        };
        let mut v: Vec<(String, i32)> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".pid")?.to_string();
                let pid = std::fs::read_to_string(e.path())
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((id, pid))
            })
            .collect();
        v.sort();
        v
    }

    /// Every process group noted by the pool agents (their programs).
    pub fn program_groups(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for (id, _) in self.agent_pids() {
            out.extend(crate::agent::Agent::noted_groups(
                &self.data.join("pools").join(id),
            ));
        }
        out
    }
}

impl Drop for Slotpack {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        let groups = self.program_groups();
        let agents: Vec<i32> = self
            .agent_pids()
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| alive(*p))
            .collect();
        for a in &agents {
            let _ = kill(Pid::from_raw(*a), Signal::SIGTERM);
        }
        let _ = std::panic::catch_unwind(|| {
            wait_for(Duration::from_secs(20), "pool agents exit", || {
                agents.iter().all(|a| !alive(*a)).then_some(())
            })
        });
        for g in groups.into_iter().chain(agents) {
            if alive(g) {
                let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
            }
        }
        // What agents killed hard left in their slots' cgroups.
        if let Ok(rd) = std::fs::read_dir(self.data.join("pools")) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                crate::agent::end_leftovers(&e.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// A test-tenant create request with extra fields merged in.
pub fn tenant(id: &str, extra: Value) -> Value {
    let mut t = json!({
        "id": id,
        "command": bin("test-tenant").display().to_string(),
        "resources": {"memoryMb": 64, "cpuMillis": 10},
        "restart": {"startSecs": 0},
        "ping": {"kind": "http", "intervalMs": 200},
    });
    if let (Some(m), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    t
}
