//! A real `slot-agent` process on free loopback ports, with its own state dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::http::{request, Response};
use crate::{alive, bin, wait_for};

/// The token every test agent uses.
pub const TOKEN: &str = "test-token-5f1c";

static NEXT_BLOCK: AtomicU16 = AtomicU16::new(0);

/// Find `n + 1` consecutive free loopback ports (API port, then the slots).
pub fn free_port_block(n: u16) -> u16 {
    free_ports(n + 1)
}

/// Find `width` consecutive free loopback ports; blocks handed out in one
/// test process never overlap, whatever their widths, and the start differs
/// between processes.
pub fn free_ports(width: u16) -> u16 {
    // 20000..32768: below the kernel's (and Docker's) ephemeral port range,
    // where outgoing connections and randomly published ports land. Handed
    // out in units of 32 ports: a block takes as many whole units as it
    // needs from one counter, so no two blocks of this process share a port
    // (blocks of different sizes once did, and a test's agent found a slot
    // port it should hold bound by another test's probe).
    const UNIT: u16 = 32;
    const UNITS: u16 = 12_768 / UNIT;
    let need = width.div_ceil(UNIT);
    let seed = (std::process::id() % u32::from(UNITS)) as u16;
    loop {
        let k = NEXT_BLOCK.fetch_add(need, Ordering::SeqCst);
        let first = (seed * 7 + k) % UNITS;
        if first + need > UNITS {
            continue; // would run past the range: take the next units
        }
        let base = 20_000 + first * UNIT;
        let free =
            (base..base + width).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
}

/// A running agent; stopped (and every program group it noted ended) on drop.
pub struct Agent {
    /// The agent process.
    pub child: Option<Child>,
    /// API address `127.0.0.1:port`.
    pub addr: String,
    /// Port of slot 0.
    pub base_port: u16,
    /// Number of slots.
    pub slots: u16,
    /// State dir.
    pub dir: PathBuf,
    extra: Vec<String>,
    wrapper: Vec<String>,
    stderr: PathBuf,
}

impl Agent {
    /// Start an agent with `slots` slots and extra flags, waiting until it answers.
    pub fn start(slots: u16, extra: &[&str]) -> Agent {
        Agent::start_wrapped(slots, extra, &[])
    }

    /// Like [`Agent::start`], with the agent run by a wrapper command such as
    /// `unshare --fork --pid --mount-proc`.
    pub fn start_wrapped(slots: u16, extra: &[&str], wrapper: &[&str]) -> Agent {
        let api = free_port_block(slots);
        let dir = std::env::temp_dir().join(format!("slotpack-test-{}-{api}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut a = Agent {
            child: None,
            addr: format!("127.0.0.1:{api}"),
            base_port: api + 1,
            slots,
            stderr: dir.with_extension("stderr"),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
        };
        a.spawn();
        a
    }

    /// The command line of this agent (for wrapping, e.g. in `unshare`).
    pub fn command_args(&self) -> Vec<String> {
        let mut v = vec![
            "--listen".to_string(),
            self.addr.clone(),
            "--state-dir".into(),
            self.dir.display().to_string(),
            "--base-port".into(),
            self.base_port.to_string(),
            "--slots".into(),
            self.slots.to_string(),
            // Agents of concurrent tests never share slot users.
            "--slot-uid-base".into(),
            self.uid(0).to_string(),
        ];
        v.extend(self.extra.iter().cloned());
        v
    }

    /// The uid of `slot`'s programs (when the agent runs as root): derived
    /// from the slot's port, so no two test agents share one.
    pub fn uid(&self, slot: u16) -> u32 {
        crate::uid_of_port(self.base_port + slot)
    }

    /// (Re)start the agent process on the same state dir and ports.
    pub fn spawn(&mut self) {
        let err = std::fs::File::create(&self.stderr).unwrap();
        let agent = bin("slot-agent").display().to_string();
        let mut argv = self.wrapper.clone();
        argv.push(agent);
        argv.extend(self.command_args());
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("SLOT_AGENT_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn slot-agent");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Wait until `/v1/health` answers.
    pub fn wait_ready(&self) {
        wait_for(Duration::from_secs(10), "agent health", || {
            request(&self.addr, "GET", "/v1/health", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    /// The agent's pid (as seen from here, also when wrapped).
    pub fn pid(&self) -> i32 {
        let outer = self.child.as_ref().expect("agent running").id() as i32;
        if self.wrapper.is_empty() {
            return outer;
        }
        wait_for(Duration::from_secs(10), "wrapped agent process", || {
            crate::children_of(outer).first().map(|(p, _)| *p)
        })
    }

    /// What the agent printed on stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// An authenticated request.
    pub fn call(&self, method: &str, path: &str, body: &str) -> Response {
        let auth = format!("Bearer {TOKEN}");
        request(
            &self.addr,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// The sandbox the agent reports in `/v1/health` ("off" without one).
    pub fn sandbox(&self) -> String {
        let h = self.call("GET", "/v1/health", "").json();
        h["sandbox"].as_str().unwrap_or("off").to_string()
    }

    /// Whether the agent puts its slots in kernel cgroups.
    pub fn sandboxed(&self) -> bool {
        self.sandbox().starts_with("cgroup")
    }

    /// PUT a program spec, asserting success; returns its status.
    pub fn put(&self, id: &str, spec: Value) -> Value {
        let r = self.call("PUT", &format!("/v1/programs/{id}"), &spec.to_string());
        assert!(
            r.status == 200 || r.status == 201,
            "PUT {id}: {} {}",
            r.status,
            r.text()
        );
        r.json()
    }

    /// GET a program's status.
    pub fn status(&self, id: &str) -> Value {
        let r = self.call("GET", &format!("/v1/programs/{id}"), "");
        assert_eq!(r.status, 200, "GET {id}: {}", r.text());
        r.json()
    }

    /// Wait until the status of `id` satisfies `pred`; returns it.
    pub fn wait_status(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(limit, &format!("{id}: {what}"), || {
            Some(self.status(id)).filter(|s| pred(s))
        })
    }

    /// Wait until `id` is running with a pid; returns the pid.
    pub fn wait_running(&self, id: &str) -> i32 {
        let s = self.wait_status(id, "running", Duration::from_secs(10), |s| {
            s["state"] == "running" && s["pid"].is_number()
        });
        s["pid"].as_i64().unwrap() as i32
    }

    /// Port of `slot`.
    pub fn port(&self, slot: u16) -> u16 {
        self.base_port + slot
    }

    /// Wait until `GET path` on `slot`'s port answers 200; returns the answer.
    pub fn wait_slot(&self, slot: u16, path: &str) -> Response {
        let addr = format!("127.0.0.1:{}", self.port(slot));
        wait_for(
            Duration::from_secs(15),
            &format!("{addr}{path} answers"),
            || {
                request(&addr, "GET", path, &[], b"")
                    .ok()
                    .filter(|r| r.status == 200)
            },
        )
    }

    /// The last `n` log lines of `id`.
    pub fn logs(&self, id: &str, n: usize) -> String {
        let r = self.call("GET", &format!("/v1/programs/{id}/logs?tail={n}"), "");
        assert_eq!(r.status, 200, "logs: {}", r.text());
        r.text()
    }

    /// Send `sig` to the agent and wait for it to exit; returns its exit status.
    pub fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let pid = self.pid();
        let mut child = self.child.take().expect("agent running");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        wait_for(Duration::from_secs(30), "agent exit", || {
            child.try_wait().ok().flatten()
        })
    }

    /// Process groups the agent noted for its running programs.
    pub fn noted_groups(dir: &Path) -> Vec<i32> {
        let Ok(rd) = std::fs::read_dir(dir.join("run")) else {
            return Vec::new();
        };
        rd.filter_map(|e| {
            let t = std::fs::read_to_string(e.ok()?.path()).ok()?;
            t.split_whitespace().next()?.parse().ok()
        })
        .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
        }
        // An agent killed with -9 leaves its programs: end the ones it noted.
        for g in Agent::noted_groups(&self.dir) {
            if alive(g) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(g),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // And its slots' cgroups: what they hold, and the groups themselves.
        end_leftovers(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// `slot-agent --end-leftovers` on a (dead) agent's state dir, as the
/// local backend runs it when it removes a pool.
pub fn end_leftovers(state_dir: &Path) {
    if state_dir.is_dir() {
        let _ = Command::new(bin("slot-agent"))
            .arg("--end-leftovers")
            .arg("--state-dir")
            .arg(state_dir)
            .env("SLOT_AGENT_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Spec JSON for the test tenant in `slot`, with extra args and fields merged in.
pub fn tenant_spec(slot: u16, args: &[&str], extra: Value) -> Value {
    let mut spec = serde_json::json!({
        "command": bin("test-tenant").display().to_string(),
        "args": args,
        "slot": slot,
    });
    if let (Some(m), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    spec
}
