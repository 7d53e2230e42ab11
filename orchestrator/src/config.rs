//! `slotpack serve` settings: flags, environment variables and an optional
//! TOML file. Precedence: flag, then environment, then file, then default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};

use crate::classes::ClassSpec;
use crate::placement::Strategy;

/// The deployment name when none is set (and of containers made before
/// deployments were named).
pub const DEFAULT_DEPLOYMENT: &str = "slotpack";

/// Settings of the orchestrator.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// false: every new tenant gets a pool of its own (legacy mode).
    #[arg(long, env = "POOL_MODE_ENABLED", default_value_t = true, action = ArgAction::Set)]
    pub pool_mode_enabled: bool,
    /// Slots per pool.
    #[arg(long, env = "MAX_BOTS_PER_CONTAINER", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_bots_per_container: u32,
    /// Port of slot 0 of pool block 0.
    #[arg(long, env = "POOL_BASE_PORT", default_value_t = 9000)]
    pub pool_base_port: u16,
    /// Pool and tenant health tick in ms.
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", default_value_t = 30_000)]
    pub health_check_interval: u64,
    /// One ping's timeout in ms.
    #[arg(long, env = "BOT_PING_TIMEOUT", default_value_t = 5_000)]
    pub bot_ping_timeout: u64,
    /// Restarts inside the window before cooldown.
    #[arg(long, env = "MAX_RESTART_ATTEMPTS", default_value_t = 3)]
    pub max_restart_attempts: u32,
    /// Pause after the attempts are spent, in ms.
    #[arg(long, env = "RESTART_COOLDOWN", default_value_t = 60_000)]
    pub restart_cooldown: u64,
    /// API address.
    #[arg(long, env = "SLOTPACK_LISTEN", default_value = "127.0.0.1:8088")]
    pub listen: SocketAddr,
    /// `local` or `docker`.
    #[arg(long, env = "SLOTPACK_BACKEND", default_value = "local")]
    pub backend: String,
    /// Database, local pools' state and logs.
    #[arg(long, env = "SLOTPACK_DATA_DIR", default_value = "./slotpack-data")]
    pub data_dir: PathBuf,
    /// Admin bearer token.
    #[arg(long, env = "SLOTPACK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Start without an admin token (development only; every request is admin).
    #[arg(long)]
    pub insecure_dev: bool,
    /// Name of this deployment: in pool container and volume names and a
    /// label, so several deployments share one Docker engine.
    #[arg(long, env = "SLOTPACK_DEPLOYMENT", default_value = DEFAULT_DEPLOYMENT)]
    pub deployment: String,
    /// Run tenants of several owners although slots cannot get their own
    /// uids (local backend, not root): they can then read each other's files
    /// and this process's environment. Without it, such a `serve` takes the
    /// tenants of one owner only.
    #[arg(long, env = "SLOTPACK_ALLOW_SHARED_UID", default_value_t = false, action = ArgAction::Set)]
    pub allow_shared_uid: bool,
    /// Image of pool containers (docker backend).
    #[arg(
        long,
        env = "SLOTPACK_POOL_IMAGE",
        default_value = "slotpack/pool:latest"
    )]
    pub pool_image: String,
    /// Free slots kept ready.
    #[arg(long, env = "SLOTPACK_WARM_SLOTS", default_value_t = 0)]
    pub warm_slots: u32,
    /// Each health tick, empty at most one pool whose tenants fit into the
    /// other pools, by moving them (each move restarts the tenant on a new port).
    #[arg(long, env = "SLOTPACK_CONSOLIDATE", default_value_t = false, action = ArgAction::Set)]
    pub consolidate: bool,
    /// Placement strategy: best-fit, first-fit or spread.
    #[arg(long, env = "SLOTPACK_PLACEMENT", default_value = "best-fit")]
    pub placement: Strategy,
    /// Memory capacity of a pool in MiB.
    #[arg(long, env = "SLOTPACK_POOL_MEMORY_MB", default_value_t = 4096)]
    pub pool_memory_mb: u64,
    /// CPU capacity of a pool in millicores.
    #[arg(long, env = "SLOTPACK_POOL_CPU_MILLIS", default_value_t = 4000)]
    pub pool_cpu_millis: u64,
    /// A pool's memory, Docker style (`512m`, `1g`); overrides `SLOTPACK_POOL_MEMORY_MB`
    /// and is the pool container's memory limit.
    #[arg(long, env = "SLOTPACK_POOL_MEMORY")]
    pub pool_memory: Option<String>,
    /// A pool's CPUs, Docker style (`0.5`, `2`, `500m`); overrides `SLOTPACK_POOL_CPU_MILLIS`
    /// and is the pool container's CPU limit.
    #[arg(long, env = "SLOTPACK_POOL_CPUS")]
    pub pool_cpus: Option<String>,
    /// Most processes in one pool container.
    #[arg(long, env = "SLOTPACK_POOL_PIDS_LIMIT", default_value_t = 4096)]
    pub pool_pids_limit: i64,
    /// slot-agent binary for the local backend (default: next to slotpack, then PATH).
    #[arg(long, env = "SLOTPACK_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
    /// Host name given to clients in connection info.
    #[arg(long, env = "SLOTPACK_PUBLIC_HOST", default_value = "127.0.0.1")]
    pub public_host: String,
    /// Most processes (and threads) of one slot's user (the agents' RLIMIT_NPROC).
    #[arg(long, env = "SLOT_MAX_PROCS", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub slot_max_procs: u64,
    /// Lifecycle events kept in the database (older ones are dropped).
    #[arg(long, env = "SLOTPACK_EVENTS_KEEP", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(10..=100_000_000))]
    pub events_keep: u64,
    /// Time a client has to send a request's headers, in ms (slowloris; also
    /// closes kept-alive connections idle that long); 0: no limit (behind a
    /// proxy that has its own).
    #[arg(long, env = "SLOTPACK_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub header_timeout_ms: u64,
    /// Uid of slot 0 of pool block 0 when agents run as root.
    #[arg(long, env = "SLOT_UID_BASE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=4_000_000_000))]
    pub slot_uid_base: u32,
    /// Pool classes of the config file (`[classes.<name>]`), applied at start.
    #[arg(skip)]
    pub classes: Vec<(String, ClassSpec)>,
}

impl ServeConfig {
    /// Apply `SLOTPACK_POOL_MEMORY` / `SLOTPACK_POOL_CPUS` to the capacities.
    pub fn resolve_limits(&mut self) -> Result<(), String> {
        if let Some(m) = &self.pool_memory {
            self.pool_memory_mb = (crate::limits::parse_memory(m)? >> 20).max(1);
        }
        if let Some(c) = &self.pool_cpus {
            self.pool_cpu_millis = crate::limits::parse_cpus(c)?;
        }
        Ok(())
    }

    /// Health tick interval.
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_check_interval.max(100))
    }

    /// Time a client has to send a request's headers, if limited.
    pub fn header_timeout(&self) -> Option<Duration> {
        (self.header_timeout_ms > 0).then(|| Duration::from_millis(self.header_timeout_ms))
    }

    /// Timeout of one agent call or ping.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.bot_ping_timeout.max(100))
    }
}

/// Read `--config FILE` (or `SLOTPACK_CONFIG`) from the raw arguments and
/// export its keys as environment variables that are not already set, so
/// that clap's flag > env > default order yields flag > env > file > default.
/// Keys are the environment names, in any case (`max_bots_per_container = 20`);
/// the `[classes.<name>]` tables are pool classes, returned.
/// Call before any thread starts.
pub fn load_config_file(args: &[String]) -> Result<Vec<(String, ClassSpec)>, String> {
    let from_args = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
        });
    let Some(path) = from_args.or_else(|| std::env::var("SLOTPACK_CONFIG").ok()) else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("config file {path}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("config file {path}: {e}"))?;
    let mut classes = Vec::new();
    for (k, v) in table {
        if k == "classes" {
            let t = v.as_table().ok_or_else(|| {
                format!("config file {path}: classes: want [classes.<name>] tables")
            })?;
            classes =
                crate::classes::from_toml(t).map_err(|e| format!("config file {path}: {e}"))?;
            continue;
        }
        let name = k.to_ascii_uppercase();
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                return Err(format!(
                    "config file {path}: {k} has unsupported value {other}"
                ))
            }
        };
        if std::env::var_os(&name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(classes)
}
