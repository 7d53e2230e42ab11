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
    /// `local`, `docker` or `swarm`.
    #[arg(long, env = "SLOTPACK_BACKEND", default_value = "local")]
    pub backend: crate::backend::BackendKind,
    /// Database, local pools' state and logs. Absolute by default
    /// (`/var/lib/slotpack` as root, else `~/.local/share/slotpack`), so a
    /// `cd` never points `serve` at an empty database.
    #[arg(long, env = "SLOTPACK_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Admin bearer token, from the environment or a config file only (the
    /// flag form is refused: command lines are readable by every process).
    #[arg(
        long,
        env = "SLOTPACK_ADMIN_TOKEN",
        hide_env_values = true,
        hide = true
    )]
    pub admin_token: Option<String>,
    /// File holding the admin bearer token (first line).
    #[arg(long, env = "SLOTPACK_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
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
    /// Rolling image updates: how long a remade pool's tenants have to run
    /// and answer their pings on the new image before it goes back to the
    /// old one and the roll stops (ms, 1 s to 1 h).
    #[arg(long, env = "SLOTPACK_ROLL_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1_000..=3_600_000))]
    pub roll_timeout_ms: u64,
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
    /// Most connections open at once to the API and proxy (lowered, with a
    /// warning, to what the descriptor limit affords); past it a new one
    /// gets a 503 with `Retry-After`.
    #[arg(long, env = "SLOTPACK_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub max_connections: u64,
    /// Most connections open at once from one client address.
    #[arg(long, env = "SLOTPACK_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections_per_client: u64,
    /// Most streams (`logs?follow=true`, `/api/events/stream`) one
    /// credential holds open at once; more answer 429.
    #[arg(long, env = "SLOTPACK_MAX_STREAMS_PER_CLIENT", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_streams_per_client: u64,
    /// Tenants get an origin of their own: a request for the host
    /// `<id>.<domain>` is proxied to tenant `<id>` (browsers resolve
    /// `*.localhost` to this machine); empty: no tenant hosts.
    #[arg(long, env = "SLOTPACK_TENANT_DOMAIN", default_value = "localhost")]
    pub tenant_domain: String,
    /// Most tenants of one owner (a token may set its own).
    #[arg(long, env = "SLOTPACK_MAX_TENANTS_PER_OWNER", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_tenants_per_owner: u64,
    /// Most `memoryMb` of one owner's tenants together (a token may set its own).
    #[arg(long, env = "SLOTPACK_MAX_MEMORY_MB_PER_OWNER", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub max_memory_mb_per_owner: u64,
    /// Uid of slot 0 of pool block 0 when agents run as root.
    #[arg(long, env = "SLOT_UID_BASE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=4_000_000_000))]
    pub slot_uid_base: u32,
    /// Log filter (`info`, `warn`, `info,orchestrator::proxy=debug`).
    #[arg(long, env = "SLOTPACK_LOG", default_value = "info")]
    pub log: String,
    /// Log format: `text` or `json` (one JSON object per line).
    #[arg(long, env = "SLOTPACK_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
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

/// The default data dir: `/var/lib/slotpack` as root, else
/// `$XDG_DATA_HOME/slotpack` or `$HOME/.local/share/slotpack`.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/slotpack");
    }
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share"));
    xdg.filter(|p| p.is_absolute())
        .or(home)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("slotpack")
}

/// What a config file holds: settings by environment name (upper case),
/// and pool classes.
#[derive(Debug, Default)]
pub struct ConfigFile {
    /// `(ENV_NAME, value)` pairs.
    pub settings: Vec<(String, String)>,
    /// `[classes.<name>]` tables.
    pub classes: Vec<(String, ClassSpec)>,
}

/// Read `--config FILE` (or `SLOTPACK_CONFIG`) named in the raw arguments.
/// Keys are the environment names, in any case (`max_bots_per_container =
/// 20`); `[classes.<name>]` tables are pool classes. Changes nothing.
pub fn read_config_file(args: &[String]) -> Result<ConfigFile, String> {
    let from_args = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
        });
    let Some(path) = from_args.or_else(|| std::env::var("SLOTPACK_CONFIG").ok()) else {
        return Ok(ConfigFile::default());
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("config file {path}: {e}"))?;
    parse_config(&text).map_err(|e| format!("config file {path}: {e}"))
}

/// A config file's text as settings and classes. Pure.
pub fn parse_config(text: &str) -> Result<ConfigFile, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
    let mut file = ConfigFile::default();
    for (k, v) in table {
        if k == "classes" {
            let t = v
                .as_table()
                .ok_or("classes: want [classes.<name>] tables")?;
            file.classes = crate::classes::from_toml(t)?;
            continue;
        }
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => return Err(format!("{k} has unsupported value {other}")),
        };
        file.settings.push((k.to_ascii_uppercase(), value));
    }
    Ok(file)
}

/// Make the file's `settings` the defaults of every argument (of every
/// subcommand) read from that environment name, so that clap yields flag >
/// env > file > default without touching the environment. A key that no
/// argument reads is an error (a typo must not pass silently). The values
/// are hidden from `--help` (a file may hold the admin token).
pub fn with_file_defaults(
    mut cmd: clap::Command,
    settings: &[(String, String)],
) -> Result<clap::Command, String> {
    let mut uses: Vec<(String, String, String)> = Vec::new(); // (subcommand, arg id, value)
    for (key, value) in settings {
        let mut known = false;
        for sc in cmd.get_subcommands() {
            for a in sc.get_arguments() {
                if a.get_env().is_some_and(|e| e == key.as_str()) {
                    known = true;
                    uses.push((
                        sc.get_name().to_string(),
                        a.get_id().to_string(),
                        value.clone(),
                    ));
                }
            }
        }
        if !known {
            return Err(format!(
                "unknown setting {} (keys are the environment names, e.g. max_bots_per_container)",
                key.to_ascii_lowercase()
            ));
        }
    }
    for (sc, id, value) in uses {
        cmd = cmd.mut_subcommand(sc, |c| {
            c.mut_arg(id, |a| a.default_value(value).hide_default_value(true))
        });
    }
    Ok(cmd)
}

/// `serve`'s settings from `args` (flags only), for unit tests elsewhere.
#[cfg(test)]
pub(crate) fn serve_args(args: &[&str]) -> ServeConfig {
    tests::serve(&[], args).expect("valid test settings")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    #[derive(Debug, clap::Parser)]
    struct Probe {
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Serve(Box<ServeConfig>),
    }

    pub(super) fn serve(settings: &[(&str, &str)], args: &[&str]) -> Result<ServeConfig, String> {
        use clap::CommandFactory;
        let s: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cmd = with_file_defaults(Probe::command(), &s)?;
        let mut all = vec!["slotpack", "serve"];
        all.extend_from_slice(args);
        let m = cmd.try_get_matches_from(all).map_err(|e| e.to_string())?;
        let Sub::Serve(c) = Probe::from_arg_matches(&m).map_err(|e| e.to_string())?.cmd;
        Ok(*c)
    }

    #[test]
    fn file_values_are_defaults_that_flags_beat_and_typos_are_errors() {
        let c = serve(&[("MAX_BOTS_PER_CONTAINER", "7")], &[]).unwrap();
        assert_eq!(c.max_bots_per_container, 7);
        let c = serve(
            &[("MAX_BOTS_PER_CONTAINER", "7")],
            &["--max-bots-per-container", "9"],
        )
        .unwrap();
        assert_eq!(c.max_bots_per_container, 9);
        let e = serve(&[("MAX_BOTS_PER_CONTAINR", "7")], &[]).unwrap_err();
        assert!(e.contains("unknown setting max_bots_per_containr"), "{e}");
        // Values are checked as flags are.
        assert!(serve(&[("MAX_BOTS_PER_CONTAINER", "0")], &[]).is_err());
    }

    #[test]
    fn the_default_data_dir_is_absolute() {
        let d = default_data_dir();
        assert!(d.is_absolute(), "{}", d.display());
        if nix::unistd::geteuid().is_root() {
            assert_eq!(d, PathBuf::from("/var/lib/slotpack"));
        }
    }

    #[test]
    fn a_file_parses_to_settings_and_classes() {
        let f = parse_config("pool_base_port = 9100\n[classes.a]\nimage = \"x\"\n").unwrap();
        assert_eq!(
            f.settings,
            [("POOL_BASE_PORT".to_string(), "9100".to_string())]
        );
        assert_eq!(f.classes[0].0, "a");
        assert!(parse_config("x = [1, 2]\n").is_err());
    }
}
