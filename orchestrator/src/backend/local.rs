//! The `local` backend: each pool is a slot-agent process on this host,
//! detached in its own process group so that it outlives the orchestrator
//! and is adopted again at start-up.
//!
//! Files under `$DATA_DIR/pools/` (0700): `pool-N/` (the agent's state
//! dir), `pool-N.token`, `pool-N.pid` (pid and start time), `pool-N.log`.
//! The tenants' durable data is the deployment's, not a pool's:
//! `$DATA_DIR/tenants/<id>/{home,volumes/}` (0711: slot users traverse to
//! their own 0700 folders and list nothing), given to every agent as its
//! `--tenants-dir`, so a tenant that moves to another pool finds it there
//! without a copy. `$DATA_DIR/homes/pool-N/` holds slot homes of the layout
//! before it; each agent moves those into the tenants' folders at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use slotpack_proto::procfs;

use super::PoolSpec;
use super::{Backend, BackendError, FoundPool};
use crate::agents::{AgentClient, Endpoint};
use crate::db::pool_number;

/// Pools as local slot-agent processes.
pub struct LocalBackend {
    deployment: String,
    /// Asks an unnoted agent for the pool's token-protected answer.
    probe: AgentClient,
    dir: PathBuf,
    homes: PathBuf,
    tenants: PathBuf,
    agent_bin: PathBuf,
    env: Vec<(String, String)>,
}

impl LocalBackend {
    /// Pools under `data_dir/pools`, run with `agent_bin`; `env` holds the
    /// health and restart settings passed to every agent.
    pub fn new(
        deployment: &str,
        data_dir: &Path,
        agent_bin: PathBuf,
        env: Vec<(String, String)>,
    ) -> std::io::Result<Self> {
        let dir = data_dir.join("pools");
        let homes = data_dir.join("homes");
        let tenants = data_dir.join("tenants");
        for (d, mode) in [(&dir, 0o700), (&homes, 0o711), (&tenants, 0o711)] {
            std::fs::create_dir_all(d)?;
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
        Ok(Self {
            deployment: deployment.to_string(),
            probe: AgentClient::new(Duration::from_secs(2)),
            dir,
            homes,
            tenants,
            agent_bin,
            env,
        })
    }

    fn file(&self, pool: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{pool}.{ext}"))
    }

    /// The running agent's pid, checked against the noted start time.
    fn running_pid(&self, pool: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.file(pool, "pid")).ok()?;
        let mut it = text.split_whitespace();
        let pid: i32 = it.next()?.parse().ok()?;
        let ticks: u64 = it.next()?.parse().ok()?;
        procfs::stat(pid)
            .filter(|s| s.start_ticks == ticks && s.state != 'Z')
            .map(|_| pid)
    }

    /// Adopt an agent that runs for `pool` without a pid note (started just
    /// before a crash of the orchestrator, or by hand): one that answers
    /// the pool's own token on the pool's agent port (and, as root, whose
    /// listener is ours). Notes its pid; returns it.
    async fn adopt(&self, pool: &PoolSpec) -> Option<i32> {
        let ep = Endpoint {
            addr: self.agent_addr(pool),
            token: pool.token.clone(),
        };
        self.probe.list(&ep).await.ok()?;
        let pid = procfs::listener_pid(ep.addr.port())?;
        let ticks = procfs::stat(pid)?.start_ticks;
        std::fs::write(
            self.file(&pool.id.to_string(), "pid"),
            format!("{pid} {ticks}\n"),
        )
        .ok()?;
        Some(pid)
    }

    async fn start(&self, pool: &PoolSpec) -> Result<String, BackendError> {
        let id = pool.id.to_string();
        if let Some(pid) = self.running_pid(&id) {
            return Ok(pid.to_string());
        }
        if let Some(pid) = self.adopt(pool).await {
            return Ok(pid.to_string());
        }
        let err = |reason: String| BackendError::Start {
            pool: id.clone(),
            reason,
        };
        let state = self.dir.join(&id);
        std::fs::create_dir_all(&state).map_err(|e| err(e.to_string()))?;
        let token = self.file(&id, "token");
        write_private(&token, &pool.token).map_err(|e| err(e.to_string()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file(&id, "log"))
            .map_err(|e| err(e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| err(e.to_string()))?;
        let addr = self.agent_addr(pool);
        let mut cmd = tokio::process::Command::new(&self.agent_bin);
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(&state)
            .arg("--tenants-dir")
            .arg(&self.tenants)
            .arg("--homes-dir")
            .arg(self.homes.join(&id))
            .arg("--program-host")
            .arg("127.0.0.1")
            .arg("--base-port")
            .arg(pool.base_port.to_string())
            .arg("--slots")
            .arg(pool.slots.to_string())
            .arg("--token-file")
            .arg(&token)
            .arg("--slot-uid-base")
            .arg(pool.uid_base.to_string())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(|e| err(format!("{}: {e}", self.agent_bin.display())))?;
        let pid = child.id().unwrap_or_default() as i32;
        // Dropped without waiting: tokio reaps it should it exit while we run.
        drop(child);
        let ticks = procfs::stat(pid).map_or(0, |s| s.start_ticks);
        std::fs::write(self.file(&id, "pid"), format!("{pid} {ticks}\n"))
            .map_err(|e| err(e.to_string()))?;
        // Ready means our agent answers its health route while its process
        // lives: a bare connect could reach some other listener.
        let deadline = Instant::now() + Duration::from_secs(10);
        let me = nix::unistd::geteuid();
        loop {
            // As root, a listener of another user on the agent port is a
            // squatter (a tenant): its health answer means nothing.
            if let Some(uid) = me
                .is_root()
                .then(|| procfs::foreign_listener(addr.port(), me.as_raw()))
                .flatten()
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(err(format!(
                    "agent port {} is held by uid {uid}",
                    addr.port()
                )));
            }
            let alive = self.running_pid(&id).is_some();
            if alive {
                let r = slotpack_proto::ping::ping(
                    slotpack_proto::protocol::PingKind::Http,
                    addr,
                    "/v1/health",
                    Duration::from_millis(500),
                )
                .await;
                if r.ok && self.running_pid(&id).is_some() {
                    return Ok(pid.to_string());
                }
            }
            if !alive || Instant::now() > deadline {
                let tail = std::fs::read_to_string(self.file(&id, "log")).unwrap_or_default();
                let last = tail.lines().last().unwrap_or("no output").to_string();
                return Err(err(format!("agent did not come up: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop pool `id`'s agent (SIGTERM, SIGKILL after 60 s) and end what
    /// an agent killed hard left of its programs.
    async fn stop_agent(&self, id: &str) {
        if let Some(pid) = self.running_pid(id) {
            // The agent stops its programs (each within its stop timeout), then exits.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while self.running_pid(id).is_some() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if self.running_pid(id).is_some() {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Program groups an agent killed hard could have left behind.
        let state = self.dir.join(id);
        if state.join("run").is_dir() {
            // The agent binary reads its own notes.
            let _ = tokio::process::Command::new(&self.agent_bin)
                .arg("--end-leftovers")
                .arg("--state-dir")
                .arg(&state)
                .env_clear()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .await;
        }
    }

    async fn remove(&self, id: &str) -> Result<(), BackendError> {
        self.stop_agent(id).await;
        let _ = std::fs::remove_dir_all(self.dir.join(id));
        // Slot homes of the old layout hold tenant data until an agent has
        // moved them: only an emptied folder goes.
        let _ = std::fs::remove_dir(self.homes.join(id));
        for ext in ["token", "pid", "log"] {
            let _ = std::fs::remove_file(self.file(id, ext));
        }
        Ok(())
    }
}

impl Backend for LocalBackend {
    fn kind(&self) -> super::BackendKind {
        super::BackendKind::Local
    }

    fn container_name(&self, pool: &PoolSpec) -> String {
        super::container_name(&self.deployment, &pool.id.to_string())
    }

    fn agent_addr(&self, pool: &PoolSpec) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], pool.agent_port))
    }

    fn start_pool<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, Result<String, BackendError>> {
        self.start(pool).boxed()
    }

    fn pool_running<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, bool> {
        let r = self.running_pid(&pool.id.to_string()).is_some();
        async move { r }.boxed()
    }

    fn remove_pool<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, Result<(), BackendError>> {
        async move { self.remove(&pool.id.to_string()).await }.boxed()
    }

    fn recreate_pool<'a>(
        &'a self,
        pool: &'a PoolSpec,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        async move {
            self.stop_agent(&pool.id.to_string()).await;
            self.start(pool).await
        }
        .boxed()
    }

    fn found_pools(&self) -> BoxFuture<'_, Result<Vec<FoundPool>, BackendError>> {
        async move {
            let rd =
                std::fs::read_dir(&self.dir).map_err(|e| BackendError::Other(e.to_string()))?;
            let mut out = Vec::new();
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".pid") else {
                    continue;
                };
                if let Some(pid) = self.running_pid(id) {
                    out.push(FoundPool {
                        number: pool_number(id),
                        backend_ref: pid.to_string(),
                    });
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn remove_found<'a>(&'a self, found: &'a FoundPool) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            match found.number {
                Some(n) => self.remove(&crate::db::pool_id(n)).await,
                None => Ok(()),
            }
        }
        .boxed()
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Stop every agent of the local deployment in `data_dir` (each stops its
/// programs within their stop timeouts), and end what one killed hard left
/// behind with `agent_bin --end-leftovers`. The pools' state stays, so a
/// later `serve` starts them again. The pools stopped, by name.
pub async fn stop_agents(
    data_dir: &Path,
    agent_bin: Option<&Path>,
) -> std::io::Result<Vec<String>> {
    let dir = data_dir.join("pools");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            n.strip_suffix(".pid").map(str::to_string)
        })
        .collect();
    names.sort();
    let bin = agent_bin.map_or_else(|| PathBuf::from("slot-agent"), Path::to_path_buf);
    // The folders are serve's; `new` gives them the modes serve does.
    let backend = LocalBackend::new("", data_dir, bin, Vec::new())?;
    let mut stopped = Vec::new();
    for n in names {
        if backend.running_pid(&n).is_some() {
            backend.stop_agent(&n).await;
            stopped.push(n);
        }
    }
    Ok(stopped)
}
