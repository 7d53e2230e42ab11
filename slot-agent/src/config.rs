//! Command-line flags and environment of the agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// `slot-agent` settings; every flag also reads its environment variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "slot-agent",
    version,
    about = "PID 1 supervisor of a slotpack pool"
)]
pub struct AgentConfig {
    /// Address of the HTTP API.
    #[arg(long, env = "SLOT_AGENT_LISTEN", default_value = "0.0.0.0:8999")]
    pub listen: SocketAddr,
    /// Directory for program specs, slot homes and logs.
    #[arg(long, env = "SLOT_AGENT_STATE_DIR", default_value = "/pool")]
    pub state_dir: PathBuf,
    /// Root of the tenants' durable data (`<tenants-dir>/<id>/home` and
    /// `.../volumes/`), shared by every pool of a deployment on a host and
    /// kept until a tenant's data is purged. Default `<state-dir>/tenants`.
    #[arg(long, env = "SLOT_TENANTS_DIR")]
    pub tenants_dir: Option<PathBuf>,
    /// Where slot homes lay before per-tenant data (`<homes-dir>/<slot>`;
    /// default `<state-dir>/slots`): a program found with such a home and
    /// no tenant home yet gets it moved into its tenant home at start.
    #[arg(long, env = "SLOT_HOMES_DIR")]
    pub homes_dir: Option<PathBuf>,
    /// Address programs should bind (their `HOST`): `0.0.0.0` in a pool
    /// container (ports are published from outside it), `127.0.0.1` for
    /// agents on a host.
    #[arg(long, env = "SLOT_PROGRAM_HOST", default_value = "0.0.0.0")]
    pub program_host: String,
    /// Pass the agent's own environment (a runtime image's `PATH`, `LANG`,
    /// ...) on to programs, without the agent's settings and token. For a
    /// pool container; an agent on a host starts programs with a default
    /// `PATH` only.
    #[arg(long, env = "SLOT_INHERIT_ENV", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub inherit_env: bool,
    /// Port of slot 0.
    #[arg(long, env = "POOL_BASE_PORT", default_value_t = 9000)]
    pub base_port: u16,
    /// Number of slots.
    #[arg(long, env = "MAX_BOTS_PER_CONTAINER", default_value_t = 10)]
    pub slots: u32,
    /// Bearer token of the API.
    #[arg(long, env = "SLOT_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token (first line).
    #[arg(long, env = "SLOT_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Default ping interval in ms.
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", default_value_t = 30_000)]
    pub health_check_interval: u64,
    /// Default timeout of one ping in ms.
    #[arg(long, env = "BOT_PING_TIMEOUT", default_value_t = 5_000)]
    pub ping_timeout: u64,
    /// Default failed starts in a row before cooldown.
    #[arg(long, env = "MAX_RESTART_ATTEMPTS", default_value_t = 3)]
    pub max_restart_attempts: u32,
    /// Default cooldown in ms.
    #[arg(long, env = "RESTART_COOLDOWN", default_value_t = 60_000)]
    pub restart_cooldown: u64,
    /// Default uptime in seconds after which a start counts as good.
    #[arg(long, env = "SLOT_START_SECS", default_value_t = 1)]
    pub start_secs: u64,
    /// Default first backoff delay in ms.
    #[arg(long, env = "SLOT_BACKOFF_MS", default_value_t = 1_000)]
    pub backoff_ms: u64,
    /// Uid/gid of slot 0 when running as root (slot N gets base + N).
    /// Never 0: a slot user is never root (its processes are swept by uid).
    #[arg(long, env = "SLOT_UID_BASE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=4_000_000_000))]
    pub slot_uid_base: u32,
    /// Most processes (and threads) one slot user may have at once
    /// (RLIMIT_NPROC of the slot's programs when running as root).
    #[arg(long, env = "SLOT_MAX_PROCS", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub slot_max_procs: u64,
    /// Size at which a program log is rotated.
    #[arg(long, env = "SLOT_LOG_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub log_max_bytes: u64,
    /// Rotated log files kept per program.
    #[arg(long, env = "SLOT_LOG_BACKUPS", default_value_t = 3)]
    pub log_backups: u32,
    /// Most API connections open at once (more are closed at accept).
    #[arg(long, env = "SLOT_AGENT_MAX_CONNECTIONS", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_connections: u64,
    /// Time in ms an API connection has for its first byte and for each
    /// whole request head.
    #[arg(long, env = "SLOT_AGENT_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub header_timeout_ms: u64,
    /// Extra ports (`9000-9099,8080`) no slot may connect to at a local
    /// address, besides the agent's own port and its slots' ports (which
    /// are always guarded).
    #[arg(long, env = "SLOT_GUARDED_PORTS", default_value = "",
          value_parser = parse_guarded)]
    pub guarded_ports: GuardedPorts,
    /// Hold the kernel's writer-favouring cgroup mode (`favordynmods`)
    /// while the agent runs, so a start's cgroup move takes ~0.4 ms, not a
    /// grace period (forks elsewhere on the machine get slightly slower).
    #[arg(long, env = "SLOT_AGENT_FAST_CGROUP_MOVES", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub fast_cgroup_moves: bool,
    /// Interval of the memory sampler in ms.
    #[arg(long, env = "SLOT_SAMPLE_MS", default_value_t = 1_000)]
    pub sample_ms: u64,
    /// End the program groups an agent killed hard left running (noted in
    /// the state dir), then exit without serving. For whoever removes a
    /// pool whose agent is gone; the note format stays the agent's own.
    #[arg(long)]
    pub end_leftovers: bool,
}

/// Port ranges a slot may not reach at a local address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardedPorts(pub Vec<(u16, u16)>);

fn parse_guarded(s: &str) -> Result<GuardedPorts, String> {
    crate::sandbox::socket_guard::parse_ranges(s).map(GuardedPorts)
}

impl AgentConfig {
    /// Every guarded range: the agent's port, its slots, and the extra ones.
    pub fn all_guarded(&self) -> Vec<(u16, u16)> {
        let mut v = vec![(self.listen.port(), self.listen.port())];
        if self.slots > 0 {
            let last = u32::from(self.base_port) + self.slots - 1;
            v.push((self.base_port, u16::try_from(last).unwrap_or(u16::MAX)));
        }
        v.extend(self.guarded_ports.0.iter().copied());
        v
    }

    /// Port of `slot`, if the slot exists.
    pub fn slot_port(&self, slot: u32) -> Option<u16> {
        if slot >= self.slots {
            return None;
        }
        u16::try_from(u32::from(self.base_port) + slot).ok()
    }

    /// Root of the tenants' durable data.
    pub fn tenants(&self) -> PathBuf {
        self.tenants_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("tenants"))
    }

    /// Root of the slot homes of the layout before per-tenant data.
    pub fn homes(&self) -> PathBuf {
        self.homes_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("slots"))
    }

    /// Memory sampler interval.
    pub fn sample_interval(&self) -> Duration {
        Duration::from_millis(self.sample_ms.max(50))
    }
}
