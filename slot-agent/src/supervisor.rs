//! The supervisor: sole owner of program state. Spawns programs, reacts to
//! their exits, pings and memory, and applies the restart policy.
//!
//! A program's `Phase` is an enum carrying its data: down with the state it
//! rests in, or up with its run (pid, start, stage, ping counts). Everything
//! the machine does (spawn, signal, reap, timers, ping loops, ports) goes
//! through [`host::Host`], so this file is a state machine the unit tests
//! drive with a fake host.
//!
//! Everything runs on one current-thread runtime. State sits behind one
//! `Mutex` that is never held across an `.await`; timers and ping loops carry
//! the run's generation and do nothing once it has moved on.

pub mod host;
mod requests;
mod runs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::broadcast;

use crate::config::AgentConfig;
use crate::logs::LogFile;
use crate::policy::{self, Decision, Pacing, RunEnd};
use crate::store::{Record, RunGoal, Store};
use host::{lock_log, Exit, Host, Launch, OsHost, PingPlan};
use slotpack_proto::clock::{now_rfc3339, rfc3339};
use slotpack_proto::ping::PingResult;
use slotpack_proto::procfs;
use slotpack_proto::protocol::{
    LastExit, LastPing, ProgramSpec, ProgramState, ProgramStatus, StateEvent, StopSignal,
};

/// Handle to the supervisor shared by the API, the reaper and the timers.
pub type Shared = Arc<Mutex<Supervisor>>;

/// Lock the supervisor, recovering from a poisoned lock (state stays usable).
pub fn lock(sh: &Shared) -> MutexGuard<'_, Supervisor> {
    sh.lock().unwrap_or_else(|e| e.into_inner())
}

/// Errors of supervisor operations; the API maps them to status codes.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No program with that id.
    #[error("program {0} not found")]
    NotFound(String),
    /// The request conflicts with another program.
    #[error("{0}")]
    Conflict(String),
    /// The agent is shutting down.
    #[error("agent is shutting down")]
    ShuttingDown,
    /// Disk I/O failed.
    #[error("state dir: {0}")]
    Io(#[from] io::Error),
}

/// Why the agent is ending a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// Stopped through the API (or deleted).
    Stop,
    /// Restart through the API or a new spec: start again at once.
    Restart,
    /// Too many failed pings.
    Unhealthy,
    /// Past `maxMemoryMb`.
    Memory,
    /// The agent is exiting.
    Shutdown,
}

/// What a timer of one run is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The run has lasted `startSecs`: it counts as started.
    StartSecs,
    /// Backoff is over: start again.
    Backoff,
    /// Cooldown is over: start again with a fresh count.
    Cooldown,
    /// The stop signal had its time: SIGKILL.
    StopTimeout,
}

/// Where a program is: down, resting in a state, or up with its run.
#[derive(Debug)]
enum Phase {
    /// No process. The state is `stopped`, `backoff`, `cooldown`, `exited`
    /// or `fatal`.
    Down(ProgramState),
    /// A process runs.
    Up(Run),
}

/// One run of a program: exists exactly while its process does.
#[derive(Debug)]
struct Run {
    pid: i32,
    /// The slot's OOM kill count when the run started.
    ooms: u64,
    since: Instant,
    since_wall: SystemTime,
    stage: Stage,
    /// Failed pings in a row.
    ping_failures: u32,
    /// A ping of this run has succeeded.
    ping_ok_seen: bool,
    /// The latest CPU reading: when, and the run's CPU time then (µs).
    cpu_seen: Option<(Instant, u64)>,
}

/// How far a run has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Younger than `startSecs`.
    Starting,
    /// Started.
    Running,
    /// Being ended, and why.
    Stopping(Kill),
}

struct Program {
    spec: ProgramSpec,
    slot: u32,
    port: u16,
    pacing: Pacing,
    desired: RunGoal,
    phase: Phase,
    /// Bumped on every spawn, exit and cancel; stale timers compare it.
    gen: u64,
    restarts: u64,
    failed_starts: u32,
    last_exit: Option<LastExit>,
    last_ping: Option<LastPing>,
    /// Deleted through the API: forgotten as soon as its run has ended.
    deleting: bool,
    /// Its tenant's data goes with it (the tenant's own DELETE).
    purge: bool,
    /// The latest problem worth telling (see `ProgramStatus::message`).
    message: Option<String>,
    /// What `message` is about.
    problem: Option<slotpack_proto::protocol::Problem>,
    rss: u64,
    /// CPU used over the latest sample period, in millicores.
    cpu_millis: u64,
    /// Size of the tenant's data (HOME and volumes) at the latest walk.
    disk_bytes: u64,
    log: Arc<Mutex<LogFile>>,
}

impl Program {
    /// The state the API reports.
    fn state(&self) -> ProgramState {
        match &self.phase {
            Phase::Down(s) => *s,
            Phase::Up(r) => match r.stage {
                Stage::Starting => ProgramState::Starting,
                Stage::Running => ProgramState::Running,
                Stage::Stopping(_) => ProgramState::Stopping,
            },
        }
    }

    fn run(&self) -> Option<&Run> {
        match &self.phase {
            Phase::Up(r) => Some(r),
            Phase::Down(_) => None,
        }
    }

    fn pid(&self) -> Option<i32> {
        self.run().map(|r| r.pid)
    }

    /// Whether a run is being ended.
    fn stopping(&self) -> bool {
        self.run()
            .is_some_and(|r| matches!(r.stage, Stage::Stopping(_)))
    }

    fn healthy(&self) -> bool {
        self.state() == ProgramState::Running
            && (self.spec.ping.is_none() || self.last_ping.as_ref().is_some_and(|p| p.ok))
    }
}

/// Defaults that fill omitted spec fields, and where things live.
struct Settings {
    base_port: u16,
    slots: u32,
    ping_interval: Duration,
    ping_timeout: Duration,
    max_attempts: u32,
    cooldown: Duration,
    start_secs: Duration,
    backoff: Duration,
    uid_base: Option<u32>,
    max_procs: u64,
    program_host: String,
    /// What every program's environment starts from (see `program_env`).
    base_env: Vec<(String, String)>,
    logs_dir: PathBuf,
    data: crate::tenant_data::TenantData,
    log_max_bytes: u64,
    log_backups: u32,
}

/// Owner of every program's state.
pub struct Supervisor {
    settings: Settings,
    store: Store,
    programs: BTreeMap<String, Program>,
    by_pid: HashMap<i32, String>,
    events: broadcast::Sender<StateEvent>,
    host: Box<dyn Host + Send>,
    started: Instant,
    shutting_down: bool,
    handle: Weak<Mutex<Supervisor>>,
}

impl Supervisor {
    /// Create the supervisor over `state_dir`; `isolate` runs each slot under its own uid.
    pub fn new(
        cfg: &AgentConfig,
        store: Store,
        isolate: bool,
        sandbox: Option<crate::sandbox::Sandbox>,
    ) -> Shared {
        Supervisor::with_host(cfg, store, isolate, Box::new(OsHost::sandboxed(sandbox)))
    }

    /// [`Supervisor::new`] on another host (the tests' fake).
    pub fn with_host(
        cfg: &AgentConfig,
        store: Store,
        isolate: bool,
        mut host: Box<dyn Host + Send>,
    ) -> Shared {
        let settings = Settings {
            base_port: cfg.base_port,
            slots: cfg.slots,
            ping_interval: Duration::from_millis(cfg.health_check_interval.max(10)),
            ping_timeout: Duration::from_millis(cfg.ping_timeout.max(1)),
            max_attempts: cfg.max_restart_attempts.max(1),
            cooldown: Duration::from_millis(cfg.restart_cooldown),
            start_secs: Duration::from_secs(cfg.start_secs),
            backoff: Duration::from_millis(cfg.backoff_ms),
            uid_base: isolate.then_some(cfg.slot_uid_base),
            max_procs: cfg.slot_max_procs,
            program_host: cfg.program_host.clone(),
            base_env: crate::program_env::base(if cfg.inherit_env {
                crate::program_env::of_this_process()
            } else {
                Vec::new()
            }),
            logs_dir: cfg.state_dir.join("logs"),
            data: crate::tenant_data::TenantData::new(cfg.tenants()),
            log_max_bytes: cfg.log_max_bytes,
            log_backups: cfg.log_backups,
        };
        let (events, _) = broadcast::channel(1024);
        for slot in 0..settings.slots {
            if let Some(port) = slot_port(settings.base_port, slot) {
                if !host.hold_port(port) {
                    eprintln!("slot-agent: port {port} of slot {slot} is taken by someone else");
                }
            }
        }
        Arc::new_cyclic(|handle| {
            Mutex::new(Supervisor {
                settings,
                store,
                programs: BTreeMap::new(),
                by_pid: HashMap::new(),
                events,
                host,
                started: Instant::now(),
                shutting_down: false,
                handle: handle.clone(),
            })
        })
    }

    /// Folder of program logs.
    pub fn logs_dir(&self) -> &PathBuf {
        &self.settings.logs_dir
    }

    /// Seconds since the agent started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Number of programs known.
    pub fn len(&self) -> usize {
        self.programs.len()
    }

    /// Whether no program is known.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// A receiver of every state change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }

    /// Status of every program, ordered by id.
    pub fn list(&self) -> Vec<ProgramStatus> {
        self.programs.iter().map(|(id, p)| status(id, p)).collect()
    }

    /// Status of one program.
    pub fn get(&self, id: &str) -> Result<ProgramStatus, SupervisorError> {
        self.programs
            .get(id)
            .map(|p| status(id, p))
            .ok_or_else(|| SupervisorError::NotFound(id.to_string()))
    }

    /// Whether `id` has no process (or no longer exists).
    pub fn is_down(&self, id: &str) -> bool {
        self.programs.get(id).is_none_or(|p| p.pid().is_none())
    }

    /// Whether every program is down.
    pub fn all_down(&self) -> bool {
        self.programs.values().all(|p| p.pid().is_none())
    }

    /// The longest stop timeout of any program.
    pub fn max_stop_timeout(&self, id: Option<&str>) -> Duration {
        let t = self
            .programs
            .iter()
            .filter(|(pid, _)| id.is_none_or(|i| i == pid.as_str()))
            .map(|(_, p)| p.spec.stop.timeout_ms)
            .max()
            .unwrap_or(0);
        Duration::from_millis(t)
    }

    /// Whether the kernel enforces memory limits (slot cgroups).
    pub fn kernel_limits(&self) -> bool {
        self.host.kernel_limits()
    }

    /// The slot users' uids, when slots run under their own uids.
    pub fn slot_uids(&self) -> Option<std::ops::Range<u32>> {
        let b = self.settings.uid_base?;
        Some(b..b.saturating_add(self.settings.slots))
    }
}

/// The port of `slot` given the agent's base port.
fn slot_port(base: u16, slot: u32) -> Option<u16> {
    u16::try_from(u32::from(base) + slot).ok()
}

/// How a memory message says that the limit was passed before any run of
/// the program ended well.
const FIRST_RUN: &str = "in its first run";

impl Program {
    /// Tell `problem` in `message` (until a good run or a new spec).
    fn tell(&mut self, problem: slotpack_proto::protocol::Problem, message: &str) {
        self.problem = Some(problem);
        self.message = Some(message.to_string());
    }

    /// Whatever went wrong is over.
    fn clear_problem(&mut self) {
        self.problem = None;
        self.message = None;
    }

    /// Whether a memory kill now means the limit is too small for it: its
    /// first run, or it never got past its limit since.
    fn memory_too_small(&self) -> bool {
        self.restarts == 0
            || self.problem == Some(slotpack_proto::protocol::Problem::MemoryLimitTooSmall)
    }
}

fn status(id: &str, p: &Program) -> ProgramStatus {
    ProgramStatus {
        id: id.to_string(),
        state: p.state(),
        pid: p.pid().map(|x| x as u32),
        slot: p.slot,
        port: p.port,
        restarts: p.restarts,
        healthy: p.healthy(),
        last_exit: p.last_exit.clone(),
        last_ping: p.last_ping.clone(),
        rss_bytes: p.rss,
        cpu_millis: p.cpu_millis,
        disk_bytes: p.disk_bytes,
        started_at: p.run().map(|r| rfc3339(r.since_wall)),
        spec_digest: Some(slotpack_proto::protocol::spec_digest(&p.spec)),
        message: p.message.clone(),
        problem: p.problem,
    }
}

/// The signal a stop spec names.
pub fn signal_of(s: StopSignal) -> Signal {
    match s {
        StopSignal::Term => Signal::SIGTERM,
        StopSignal::Int => Signal::SIGINT,
        StopSignal::Hup => Signal::SIGHUP,
        StopSignal::Quit => Signal::SIGQUIT,
        StopSignal::Kill => Signal::SIGKILL,
        StopSignal::Usr1 => Signal::SIGUSR1,
        StopSignal::Usr2 => Signal::SIGUSR2,
    }
}
