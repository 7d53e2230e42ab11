//! Wire types of the slot-agent HTTP API, shared with the orchestrator.
//!
//! All JSON is camelCase. Specs reject unknown fields so that a typo in an
//! operator's request is an error rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the agent should run in one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProgramSpec {
    /// Executable path (absolute, or looked up in `PATH`).
    pub command: String,
    /// Arguments after the command.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment; `PORT`, `SLOT`, `TENANT_ID`, `HOME` and `HOST` are
    /// set by the agent. Values (and `args`) may refer to them as `${PORT}`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Slot index inside the pool; required.
    pub slot: Option<u32>,
    /// Port of the slot; must equal `base_port + slot` when given.
    #[serde(default)]
    pub port: Option<u16>,
    /// Health ping; absent means no ping.
    #[serde(default)]
    pub ping: Option<PingSpec>,
    /// Restart policy and pacing.
    #[serde(default)]
    pub restart: RestartSpec,
    /// How the program is stopped.
    #[serde(default)]
    pub stop: StopSpec,
    /// Memory limit of the program's slot, in MiB: with slot cgroups a
    /// kernel limit that counts shmem and tmpfs; else the resident memory
    /// of its process group, sampled.
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// CPU share of the slot in millicores (a cgroup weight: idle CPU stays usable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Size of the slot's private temporary folders in MiB (`/tmp`,
    /// `/var/tmp`, `/dev/shm`, `/run/lock` together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// Absolute folder the program starts in (a runtime image's `WORKDIR`);
    /// default its slot's home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The tenant's own durable folders, each shown to the program at its
    /// `path` (at most [`MAX_VOLUMES`]); kept with its home until the
    /// tenant's data is purged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
}

/// One durable folder of a tenant (see [`ProgramSpec::volumes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSpec {
    /// Absolute path at which the program sees the folder.
    pub path: String,
}

/// Most volumes one program may have.
pub const MAX_VOLUMES: usize = 8;

/// Longest volume path, in bytes (its folder name must fit a file name).
pub const MAX_VOLUME_PATH: usize = 200;

/// Check a volume list: at most [`MAX_VOLUMES`], each path absolute, in
/// normal form (no `.`, `..`, empty or trailing parts), not `/` and not
/// under `/proc`, `/sys` or `/dev`, and no path twice or inside another.
pub fn check_volumes(volumes: &[VolumeSpec]) -> Result<(), String> {
    if volumes.len() > MAX_VOLUMES {
        return Err(format!(
            "volumes: at most {MAX_VOLUMES}, got {}",
            volumes.len()
        ));
    }
    for (i, v) in volumes.iter().enumerate() {
        let p = v.path.as_str();
        let bad = |why: &str| Err(format!("volumes[{i}].path {p:?}: {why}"));
        if !p.starts_with('/') {
            return bad("must be an absolute path");
        }
        if p.len() > MAX_VOLUME_PATH {
            return bad(&format!("longer than {MAX_VOLUME_PATH} bytes"));
        }
        if p == "/" {
            return bad("must not be /");
        }
        if p.bytes().any(|b| b < b' ' || b == 0x7f) {
            return bad("must not hold control characters");
        }
        if p[1..]
            .split('/')
            .any(|part| matches!(part, "" | "." | ".."))
        {
            return bad("must be in normal form (no empty, . or .. parts, no trailing /)");
        }
        if ["/proc", "/sys", "/dev"]
            .iter()
            .any(|k| p == *k || p.starts_with(&format!("{k}/")))
        {
            return bad("must not be under /proc, /sys or /dev");
        }
        for w in &volumes[..i] {
            let q = w.path.as_str();
            if q == p {
                return bad("given twice");
            }
            if p.starts_with(&format!("{q}/")) || q.starts_with(&format!("{p}/")) {
                return bad(&format!("nested with {q:?}"));
            }
        }
    }
    Ok(())
}

/// An archive owner `UID:GID` (the volume routes' `owner`).
pub fn parse_owner(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("owner {text:?}: want UID:GID");
    let (u, g) = text.split_once(':').ok_or_else(bad)?;
    Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?))
}

/// The folder name of a volume's data: its path without the leading `/`,
/// with `%` and `/` escaped (`/freqtrade/user_data` is
/// `freqtrade%2Fuser_data`), so that an operator can tell which is which.
pub fn volume_dir_name(path: &str) -> String {
    path.trim_start_matches('/')
        .replace('%', "%25")
        .replace('/', "%2F")
}

/// Kind of health ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PingKind {
    /// `GET path` on the slot port; any 2xx is healthy.
    Http,
    /// A TCP connect to the slot port.
    Tcp,
}

/// Health ping settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingSpec {
    /// `http` or `tcp`.
    pub kind: PingKind,
    /// Path of the http ping.
    #[serde(default = "default_ping_path")]
    pub path: String,
    /// Time between pings (agent default: `HEALTH_CHECK_INTERVAL`).
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// One ping's timeout (agent default: `BOT_PING_TIMEOUT`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Failed pings in a row that restart the program.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Wait after a start before the first ping.
    #[serde(default)]
    pub initial_delay_ms: u64,
}

fn default_ping_path() -> String {
    "/api/v1/ping".to_string()
}
fn default_failure_threshold() -> u32 {
    3
}

/// When a program that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart whatever the exit.
    #[default]
    Always,
    /// Restart after a non-zero exit, a signal, or a kill for health or memory.
    OnFailure,
    /// Never restart.
    Never,
}

/// Restart policy and pacing. `None` fields take the agent's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartSpec {
    /// The policy.
    #[serde(default)]
    pub policy: RestartPolicy,
    /// Failed starts in a row before cooldown (agent default: `MAX_RESTART_ATTEMPTS`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Pause after the attempts are spent (agent default: `RESTART_COOLDOWN`).
    #[serde(default)]
    pub cooldown_ms: Option<u64>,
    /// Uptime after which a start counts as good.
    #[serde(default)]
    pub start_secs: Option<u64>,
    /// First backoff delay; doubles with each failed start.
    #[serde(default)]
    pub backoff_ms: Option<u64>,
}

/// How a program is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopSpec {
    /// The signal sent first (name without `SIG`).
    #[serde(default)]
    pub signal: StopSignal,
    /// Time to wait before SIGKILL of the whole process group.
    #[serde(default = "default_stop_timeout")]
    pub timeout_ms: u64,
}

impl Default for StopSpec {
    fn default() -> Self {
        Self {
            signal: StopSignal::default(),
            timeout_ms: default_stop_timeout(),
        }
    }
}

/// What may be asked of a program (`POST …/{id}/{action}` on the agent and
/// on the orchestrator's tenants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgramAction {
    /// Start it (desired running).
    Start,
    /// Stop it (desired stopped).
    Stop,
    /// End its run and start it again at once.
    Restart,
}

impl ProgramAction {
    /// Every action, in the order error messages list them.
    pub const ALL: [ProgramAction; 3] = [
        ProgramAction::Start,
        ProgramAction::Stop,
        ProgramAction::Restart,
    ];

    /// Its name in a path.
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramAction::Start => "start",
            ProgramAction::Stop => "stop",
            ProgramAction::Restart => "restart",
        }
    }

    /// The action named `s`, if any.
    pub fn parse(s: &str) -> Option<ProgramAction> {
        ProgramAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The signals a program may be stopped with: the one list, parsed once
/// (an unknown name is a 400 naming these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StopSignal {
    /// SIGTERM (the default).
    #[default]
    Term,
    /// SIGINT.
    Int,
    /// SIGHUP.
    Hup,
    /// SIGQUIT.
    Quit,
    /// SIGKILL.
    Kill,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
}

impl StopSignal {
    /// Its name without `SIG`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            StopSignal::Term => "TERM",
            StopSignal::Int => "INT",
            StopSignal::Hup => "HUP",
            StopSignal::Quit => "QUIT",
            StopSignal::Kill => "KILL",
            StopSignal::Usr1 => "USR1",
            StopSignal::Usr2 => "USR2",
        }
    }
}
fn default_stop_timeout() -> u64 {
    10_000
}

/// Lifecycle state of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgramState {
    /// Not running, and not meant to run until started.
    Stopped,
    /// Spawned, not yet up for `startSecs`.
    Starting,
    /// Up for at least `startSecs`.
    Running,
    /// Waiting before the next start after a failed one.
    Backoff,
    /// Attempts spent; waiting `cooldownMs` before trying again.
    Cooldown,
    /// Stop signal sent, waiting for the exit.
    Stopping,
    /// Ended and not restarted by its policy.
    Exited,
    /// A start failed and the policy forbids another try.
    Fatal,
}

impl ProgramState {
    /// Every state, in a stable order (for metrics).
    pub const ALL: [ProgramState; 8] = [
        ProgramState::Stopped,
        ProgramState::Starting,
        ProgramState::Running,
        ProgramState::Backoff,
        ProgramState::Cooldown,
        ProgramState::Stopping,
        ProgramState::Exited,
        ProgramState::Fatal,
    ];

    /// The lower-case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramState::Stopped => "stopped",
            ProgramState::Starting => "starting",
            ProgramState::Running => "running",
            ProgramState::Backoff => "backoff",
            ProgramState::Cooldown => "cooldown",
            ProgramState::Stopping => "stopping",
            ProgramState::Exited => "exited",
            ProgramState::Fatal => "fatal",
        }
    }
}

/// How the last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastExit {
    /// Exit code, when the program exited.
    pub code: Option<i32>,
    /// Signal name, when a signal ended it.
    pub signal: Option<String>,
    /// RFC 3339 time of the exit.
    pub at: String,
}

/// Result of the latest health ping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastPing {
    /// Whether it succeeded.
    pub ok: bool,
    /// Round trip in milliseconds.
    pub latency_ms: f64,
    /// RFC 3339 time of the ping.
    pub at: String,
}

/// What the agent reports of one program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramStatus {
    /// Program (tenant) id.
    pub id: String,
    /// Lifecycle state.
    pub state: ProgramState,
    /// Process id of the running program.
    pub pid: Option<u32>,
    /// Slot index.
    pub slot: u32,
    /// Slot port.
    pub port: u16,
    /// Restarts since the program was created.
    pub restarts: u64,
    /// Running, and the latest ping (if any) succeeded.
    pub healthy: bool,
    /// How the last run ended.
    pub last_exit: Option<LastExit>,
    /// Latest ping.
    pub last_ping: Option<LastPing>,
    /// Resident memory of the process group at the latest sample.
    pub rss_bytes: u64,
    /// CPU used over the latest sample period, in millicores (1000 = one
    /// core busy).
    #[serde(default)]
    pub cpu_millis: u64,
    /// Size of the tenant's data (HOME and volumes) at the latest walk.
    #[serde(default)]
    pub disk_bytes: u64,
    /// RFC 3339 start time of the current run.
    pub started_at: Option<String>,
    /// [`spec_digest`] of the spec the agent holds, so that a spec changed
    /// behind the orchestrator's back is seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_digest: Option<String>,
    /// What went wrong lately, for people (e.g. a memory limit too small for
    /// the program's first run); cleared by a good run or a new spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What `message` is about, for programs (no reader parses its words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// What a program's `message` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Problem {
    /// It passed its memory limit and was restarted.
    MemoryLimit,
    /// It passed its memory limit in its first run: the limit is too small
    /// for it.
    MemoryLimitTooSmall,
}

impl Problem {
    /// Whether it is about memory.
    pub fn is_memory(self) -> bool {
        matches!(self, Problem::MemoryLimit | Problem::MemoryLimitTooSmall)
    }
}

/// A short digest of a spec (FNV-1a 64 of its JSON, hex): equal specs, equal
/// digests. Not a security measure: it spots drift, it proves nothing.
pub fn spec_digest(spec: &ProgramSpec) -> String {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    format!("{:016x}", fnv1a(&bytes))
}

/// FNV-1a 64: a short stable hash for digests and names.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always `ok` while the agent answers.
    pub status: String,
    /// Number of programs known.
    pub programs: usize,
    /// Seconds since the agent started.
    pub uptime_seconds: u64,
    /// What the kernel enforces per slot: `cgroup v1|v2|none, namespaces
    /// on|off, landlock abi N`, or `off` (an agent not running as root).
    #[serde(default)]
    pub sandbox: String,
}

/// One `/v1/events` entry: a program changed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateEvent {
    /// Program id.
    pub id: String,
    /// New state.
    pub state: ProgramState,
    /// Process id, when running.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u64,
    /// RFC 3339 time of the change.
    pub at: String,
}

/// Error body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Always false.
    pub success: bool,
    /// Code and message.
    pub error: ErrorDetail,
}

/// Machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code, e.g. `bad_request`, `not_found`, `unauthorized`.
    pub code: String,
    /// What was wrong.
    pub message: String,
}

/// Whether `id` is a valid program/tenant id: `^[a-z0-9][a-z0-9_-]{0,62}$`.
pub fn is_valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// A tenant's id, which is also its program's id on the agent: valid by
/// construction (`^[a-z0-9][a-z0-9_-]{0,62}$`), so code holding one never
/// checks it again. Reads as a `&str` wherever one is wanted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// `s` if it is a valid id, else why not.
    pub fn parse(s: &str) -> Result<TenantId, String> {
        if is_valid_id(s) {
            Ok(TenantId(s.to_string()))
        } else {
            Err(format!(
                "invalid id {s:?}: want ^[a-z0-9][a-z0-9_-]{{0,62}}$"
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TenantId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for TenantId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for TenantId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl PartialEq<&str> for TenantId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Environment names the agent sets for every program.
pub const RESERVED_ENV: [&str; 5] = ["PORT", "SLOT", "TENANT_ID", "HOME", "HOST"];

/// The allowed range of every number in a [`ProgramSpec`] (inclusive).
#[derive(Debug, Clone)]
pub struct Ranges {
    /// `ping.intervalMs`.
    pub ping_interval_ms: std::ops::RangeInclusive<u64>,
    /// `ping.timeoutMs`.
    pub ping_timeout_ms: std::ops::RangeInclusive<u64>,
    /// `ping.failureThreshold`.
    pub failure_threshold: std::ops::RangeInclusive<u64>,
    /// `ping.initialDelayMs`, `restart.cooldownMs`, `restart.backoffMs`.
    pub delay_ms: std::ops::RangeInclusive<u64>,
    /// `restart.maxAttempts`.
    pub max_attempts: std::ops::RangeInclusive<u64>,
    /// `restart.startSecs`.
    pub start_secs: std::ops::RangeInclusive<u64>,
    /// `stop.timeoutMs`: a stop never holds anything longer than this.
    pub stop_timeout_ms: std::ops::RangeInclusive<u64>,
    /// `maxMemoryMb`.
    pub memory_mb: std::ops::RangeInclusive<u64>,
    /// `cpuMillis` (the orchestrator's `resources.cpuMillis`).
    pub cpu_millis: std::ops::RangeInclusive<u64>,
    /// `diskMb` (the orchestrator's `resources.diskMb`).
    pub disk_mb: std::ops::RangeInclusive<u64>,
    /// `?tail=` of the logs routes (lines), the agent's and the orchestrator's.
    pub tail_lines: std::ops::RangeInclusive<u64>,
}

/// The ranges the agent (and the orchestrator) accept; outside → 400.
pub const RANGES: Ranges = Ranges {
    ping_interval_ms: 10..=86_400_000,
    ping_timeout_ms: 1..=600_000,
    failure_threshold: 1..=1_000,
    delay_ms: 0..=86_400_000,
    max_attempts: 1..=1_000,
    start_secs: 0..=3_600,
    stop_timeout_ms: 0..=120_000,
    memory_mb: 1..=1_048_576,
    cpu_millis: 0..=1_024_000,
    disk_mb: 1..=1_048_576,
    tail_lines: 0..=100_000,
};

/// `Ok` if `v` lies in `r`, else a message naming the field and the range.
pub fn in_range(field: &str, v: u64, r: &std::ops::RangeInclusive<u64>) -> Result<(), String> {
    if r.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{field} must be in {}..={}, not {v}",
            r.start(),
            r.end()
        ))
    }
}

/// Check the parts of a spec that do not depend on the agent's slots:
/// command, args, env, ping, restart, stop and memory. Pure.
pub fn check_spec(spec: &ProgramSpec) -> Result<(), String> {
    if spec.command.is_empty() || spec.command.contains('\0') {
        return Err("command must be a non-empty string without NUL".into());
    }
    if spec.args.iter().any(|a| a.contains('\0')) {
        return Err("args must not contain NUL".into());
    }
    for a in &spec.args {
        crate::expand::check(a).map_err(|e| format!("args: {e}"))?;
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(format!("invalid env name or value {k:?}"));
        }
        if RESERVED_ENV.contains(&k.as_str()) {
            return Err(format!("env {k} is set by the agent"));
        }
        crate::expand::check(v).map_err(|e| format!("env {k}: {e}"))?;
    }
    if let Some(dir) = &spec.working_dir {
        if !dir.starts_with('/') || dir.contains('\0') || dir.len() > 4096 {
            return Err("workingDir must be an absolute path (at most 4096 bytes)".into());
        }
    }
    if let Some(ping) = &spec.ping {
        if !ping.path.starts_with('/') || ping.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("ping.path must start with / and hold no spaces".into());
        }
        if let Some(v) = ping.interval_ms {
            in_range("ping.intervalMs", v, &RANGES.ping_interval_ms)?;
        }
        if let Some(v) = ping.timeout_ms {
            in_range("ping.timeoutMs", v, &RANGES.ping_timeout_ms)?;
        }
        let t = u64::from(ping.failure_threshold);
        in_range("ping.failureThreshold", t, &RANGES.failure_threshold)?;
        in_range(
            "ping.initialDelayMs",
            ping.initial_delay_ms,
            &RANGES.delay_ms,
        )?;
    }
    let r = &spec.restart;
    if let Some(v) = r.max_attempts {
        in_range("restart.maxAttempts", u64::from(v), &RANGES.max_attempts)?;
    }
    if let Some(v) = r.cooldown_ms {
        in_range("restart.cooldownMs", v, &RANGES.delay_ms)?;
    }
    if let Some(v) = r.start_secs {
        in_range("restart.startSecs", v, &RANGES.start_secs)?;
    }
    if let Some(v) = r.backoff_ms {
        in_range("restart.backoffMs", v, &RANGES.delay_ms)?;
    }
    in_range(
        "stop.timeoutMs",
        spec.stop.timeout_ms,
        &RANGES.stop_timeout_ms,
    )?;
    if let Some(v) = spec.max_memory_mb {
        in_range("maxMemoryMb", v, &RANGES.memory_mb)?;
    }
    if let Some(v) = spec.cpu_millis {
        in_range("cpuMillis", v, &RANGES.cpu_millis)?;
    }
    if let Some(v) = spec.disk_mb {
        in_range("diskMb", v, &RANGES.disk_mb)?;
    }
    check_volumes(&spec.volumes)
}

#[cfg(test)]
mod tests;
