//! The supervisor: sole owner of program state. Spawns programs, reacts to
//! their exits, pings and memory, and applies the restart policy.
//!
//! Everything runs on one current-thread runtime. State sits behind one
//! `Mutex` that is never held across an `.await`; timers and ping loops carry
//! the run's generation and do nothing once it has moved on.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::broadcast;

use crate::config::AgentConfig;
use crate::logs::LogFile;
use crate::policy::{self, Decision, Pacing, RunEnd};
use crate::store::{Desired, Record, Store};
use slotpack_proto::clock::{now_rfc3339, rfc3339};
use slotpack_proto::protocol::{
    LastExit, LastPing, ProgramSpec, ProgramState, ProgramStatus, StateEvent,
};
use slotpack_proto::{ping, procfs};

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
enum Kill {
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

#[derive(Debug, Clone, Copy)]
enum Timer {
    StartSecs,
    Backoff,
    Cooldown,
    StopTimeout,
}

struct Program {
    spec: ProgramSpec,
    slot: u32,
    port: u16,
    pacing: Pacing,
    desired: Desired,
    state: ProgramState,
    pid: Option<i32>,
    /// Bumped on every spawn, exit and cancel; stale timers compare it.
    gen: u64,
    restarts: u64,
    failed_starts: u32,
    started: Option<(Instant, SystemTime)>,
    kill: Option<Kill>,
    last_exit: Option<LastExit>,
    last_ping: Option<LastPing>,
    ping_failures: u32,
    /// A ping of the current run has succeeded.
    ping_ok_seen: bool,
    /// Deleted through the API: forgotten as soon as its run has ended.
    deleting: bool,
    /// The latest problem worth telling (see `ProgramStatus::message`).
    message: Option<String>,
    rss: u64,
    log: Arc<Mutex<LogFile>>,
}

impl Program {
    fn healthy(&self) -> bool {
        self.state == ProgramState::Running
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
    slots_dir: PathBuf,
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
    /// Ports of slots whose program is not running, held by the agent.
    ports: crate::ports::PortHolds,
    started: Instant,
    shutting_down: bool,
    handle: Weak<Mutex<Supervisor>>,
}

impl Supervisor {
    /// Create the supervisor over `state_dir`; `isolate` runs each slot under its own uid.
    pub fn new(cfg: &AgentConfig, store: Store, isolate: bool) -> Shared {
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
            slots_dir: cfg.homes(),
            log_max_bytes: cfg.log_max_bytes,
            log_backups: cfg.log_backups,
        };
        let (events, _) = broadcast::channel(1024);
        let mut ports = crate::ports::PortHolds::default();
        for slot in 0..settings.slots {
            if let Some(port) = slot_port(settings.base_port, slot) {
                if !ports.hold(port) {
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
                ports,
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

    /// Check `spec` against the agent's slots and rules; fills in `port`.
    pub fn validate(&self, id: &str, spec: &mut ProgramSpec) -> Result<(), SupervisorError> {
        let bad = |m: String| Err(SupervisorError::Invalid(m));
        if !slotpack_proto::protocol::is_valid_id(id) {
            return bad(format!(
                "invalid program id {id:?}: want ^[a-z0-9][a-z0-9_-]{{0,62}}$"
            ));
        }
        slotpack_proto::protocol::check_spec(spec).map_err(SupervisorError::Invalid)?;
        let Some(slot) = spec.slot else {
            return bad("slot is required".into());
        };
        let s = &self.settings;
        let Some(port) = slot_port(s.base_port, slot).filter(|_| slot < s.slots) else {
            return bad(format!("slot {slot} outside 0..{}", s.slots));
        };
        match spec.port {
            Some(p) if p != port => {
                return bad(format!(
                    "port {p} outside the agent's range: slot {slot} has port {port}"
                ))
            }
            _ => spec.port = Some(port),
        }
        if let Some((other, _)) = self
            .programs
            .iter()
            .find(|(o, p)| o.as_str() != id && p.slot == slot)
        {
            return Err(SupervisorError::Conflict(format!(
                "slot {slot} is taken by program {other}"
            )));
        }
        Ok(())
    }

    /// Create or replace `id`; returns whether it was created.
    pub fn put(&mut self, id: &str, mut spec: ProgramSpec) -> Result<bool, SupervisorError> {
        self.refuse_if_shutting_down()?;
        self.validate(id, &mut spec)?;
        if let Some(uid) = spec.slot.and_then(|s| self.slot_uid(s)) {
            // A command the slot's user cannot reach or run is refused now,
            // not found out by a restart loop.
            let path = spec
                .env
                .get("PATH")
                .map_or_else(|| self.base_path(), String::as_str);
            // Nor one that other tenants could change under it.
            if let Some(file) = crate::access::resolve(&spec.command, path) {
                crate::access::can_run(&file, uid, uid).map_err(SupervisorError::Invalid)?;
                crate::access::not_shared_writable(&file).map_err(SupervisorError::Invalid)?;
            }
            if let Some(dir) = &spec.working_dir {
                let dir = Path::new(dir);
                crate::access::can_enter(dir, uid, uid).map_err(SupervisorError::Invalid)?;
                crate::access::not_shared_writable(dir).map_err(SupervisorError::Invalid)?;
            }
        }
        if let Some(p) = self.programs.get(id) {
            if p.deleting {
                return Err(SupervisorError::Conflict(format!(
                    "program {id} is being deleted"
                )));
            }
            if p.spec == spec {
                return Ok(false);
            }
        }
        self.store.save(
            id,
            &Record {
                spec: spec.clone(),
                desired: Desired::Running,
            },
        )?;
        let slot = spec.slot.unwrap_or_default();
        let port = spec.port.unwrap_or_default();
        let pacing = self.pacing(&spec);
        if let Some(p) = self.programs.get_mut(id) {
            p.message = None;
            p.spec = spec;
            p.slot = slot;
            p.port = port;
            p.pacing = pacing;
            p.desired = Desired::Running;
            self.restart_now(id);
            return Ok(false);
        }
        self.insert(id, spec, Desired::Running)?;
        self.start(id);
        Ok(true)
    }

    /// Add a loaded or new program without starting it.
    pub fn insert(
        &mut self,
        id: &str,
        spec: ProgramSpec,
        desired: Desired,
    ) -> Result<(), SupervisorError> {
        let slot = spec.slot.unwrap_or_default();
        let port = spec.port.unwrap_or_default();
        let s = &self.settings;
        let log = LogFile::new(
            s.logs_dir.join(format!("{id}.log")),
            s.log_max_bytes,
            s.log_backups,
        );
        let pacing = self.pacing(&spec);
        self.programs.insert(
            id.to_string(),
            Program {
                spec,
                slot,
                port,
                pacing,
                desired,
                state: ProgramState::Stopped,
                pid: None,
                gen: 0,
                restarts: 0,
                failed_starts: 0,
                started: None,
                kill: None,
                last_exit: None,
                last_ping: None,
                ping_failures: 0,
                ping_ok_seen: false,
                deleting: false,
                message: None,
                rss: 0,
                log: Arc::new(Mutex::new(log)),
            },
        );
        Ok(())
    }

    /// Start every program whose desired state is running (after loading).
    pub fn start_desired(&mut self) {
        let ids: Vec<String> = self
            .programs
            .iter()
            .filter(|(_, p)| p.desired == Desired::Running)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.start(&id);
        }
    }

    /// API start: mark desired running and start unless a run is under way.
    pub fn api_start(&mut self, id: &str) -> Result<(), SupervisorError> {
        self.refuse_if_shutting_down()?;
        self.set_desired(id, Desired::Running)?;
        let p = self.program_mut(id)?;
        if p.pid.is_none() {
            p.gen += 1; // cancel backoff/cooldown timers
            p.failed_starts = 0;
            self.start(id);
        }
        Ok(())
    }

    /// API stop: mark desired stopped (kept across agent restarts) and stop.
    pub fn api_stop(&mut self, id: &str) -> Result<(), SupervisorError> {
        self.set_desired(id, Desired::Stopped)?;
        self.stop(id, Kill::Stop);
        Ok(())
    }

    /// API restart: desired running, end the current run, start again at once.
    pub fn api_restart(&mut self, id: &str) -> Result<(), SupervisorError> {
        self.refuse_if_shutting_down()?;
        self.set_desired(id, Desired::Running)?;
        self.program_mut(id)?.failed_starts = 0;
        self.restart_now(id);
        Ok(())
    }

    /// API delete, first half: forget the spec on disk and begin the stop;
    /// the program is dropped once its run has ended (at once if none runs).
    pub fn api_delete_begin(&mut self, id: &str) -> Result<(), SupervisorError> {
        self.program_mut(id)?;
        self.store.remove(id)?;
        let p = self.program_mut(id)?;
        p.desired = Desired::Stopped;
        p.deleting = true;
        self.stop(id, Kill::Stop);
        if self.is_down(id) {
            self.api_delete_finish(id);
        }
        Ok(())
    }

    /// API delete, second half (after the run ended, or its stop timed out):
    /// drop state, home and logs. Nothing happens if it is gone already.
    pub fn api_delete_finish(&mut self, id: &str) {
        let Some(p) = self.programs.remove(id) else {
            return;
        };
        if let Some(pid) = p.pid {
            // It did not stop in time: end it hard and forget it.
            self.by_pid.remove(&pid);
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            if let Err(e) = self.store.clear_pid(id) {
                eprintln!("slot-agent: {id}: clearing pid: {e}");
            }
        }
        if let Some(uid) = self.slot_uid(p.slot) {
            // The next tenant of this slot gets the same uid: nothing of
            // this one may be left for it to find.
            crate::leftovers::end_processes(uid..uid + 1);
            crate::leftovers::remove_files(uid);
        }
        let _ = fs::remove_dir_all(self.settings.slots_dir.join(p.slot.to_string()));
        if !self.slot_busy(p.slot) {
            self.ports.hold(p.port);
        }
        for n in 0..=self.settings.log_backups {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!(".{n}")
            };
            let _ = fs::remove_file(self.settings.logs_dir.join(format!("{id}.log{suffix}")));
        }
    }

    /// Whether `id` has no process (or no longer exists).
    pub fn is_down(&self, id: &str) -> bool {
        self.programs.get(id).is_none_or(|p| p.pid.is_none())
    }

    /// Whether every program is down.
    pub fn all_down(&self) -> bool {
        self.programs.values().all(|p| p.pid.is_none())
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

    /// The uids of every slot user, when slots run under their own uids.
    pub fn slot_uids(&self) -> Option<std::ops::Range<u32>> {
        let b = self.settings.uid_base?;
        Some(b..b.saturating_add(self.settings.slots))
    }

    /// Begin the agent's exit: stop every program, start nothing any more.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        let ids: Vec<String> = self.programs.keys().cloned().collect();
        for id in ids {
            self.stop(&id, Kill::Shutdown);
        }
    }

    /// Reap every exited child (programs and orphans alike).
    pub fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid.as_raw(), Some(code), None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.on_exit(pid.as_raw(), None, Some(sig))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("slot-agent: waitpid: {e}");
                    return;
                }
            }
        }
    }

    /// Sample resident memory per program and enforce `maxMemoryMb`.
    pub fn sample_memory(&mut self, rss_by_group: &HashMap<i32, u64>) {
        let mut over = Vec::new();
        for (id, p) in self.programs.iter_mut() {
            p.rss = p
                .pid
                .and_then(|pid| rss_by_group.get(&pid).copied())
                .unwrap_or(0);
            if let Some(mb) = p.spec.max_memory_mb {
                if p.pid.is_some() && p.kill.is_none() && p.rss > mb * 1024 * 1024 {
                    over.push(id.clone());
                }
            }
        }
        for id in over {
            let p = self.programs.get_mut(&id).expect("present");
            let (rss, limit) = (p.rss >> 20, p.spec.max_memory_mb.unwrap_or_default());
            let first =
                p.restarts == 0 || p.message.as_deref().is_some_and(|m| m.contains(FIRST_RUN));
            let msg = if first {
                format!(
                    "memory limit exceeded: resident memory {rss} MiB passed the limit of \
                     {limit} MiB {FIRST_RUN}: the limit is too small for this program \
                     (raise resources.memoryMb)"
                )
            } else {
                format!(
                    "memory limit exceeded: resident memory {rss} MiB passed the limit of \
                     {limit} MiB: restarting"
                )
            };
            p.message = Some(msg.clone());
            self.note(&id, &msg);
            self.stop(&id, Kill::Memory);
        }
    }

    /// `PATH` of programs whose spec sets none.
    fn base_path(&self) -> &str {
        let env = &self.settings.base_env;
        env.iter()
            .find(|(k, _)| k == "PATH")
            .map_or(crate::program_env::DEFAULT_PATH, |(_, v)| v.as_str())
    }

    fn refuse_if_shutting_down(&self) -> Result<(), SupervisorError> {
        if self.shutting_down {
            Err(SupervisorError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    fn program_mut(&mut self, id: &str) -> Result<&mut Program, SupervisorError> {
        self.programs
            .get_mut(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_string()))
    }

    fn set_desired(&mut self, id: &str, desired: Desired) -> Result<(), SupervisorError> {
        let p = self.program_mut(id)?;
        if p.desired != desired {
            let rec = Record {
                spec: p.spec.clone(),
                desired,
            };
            self.store.save(id, &rec)?;
            self.program_mut(id)?.desired = desired;
        }
        Ok(())
    }

    fn pacing(&self, spec: &ProgramSpec) -> Pacing {
        let s = &self.settings;
        let r = &spec.restart;
        Pacing {
            policy: r.policy,
            max_attempts: r.max_attempts.unwrap_or(s.max_attempts).max(1),
            cooldown: r.cooldown_ms.map_or(s.cooldown, Duration::from_millis),
            start_secs: r.start_secs.map_or(s.start_secs, Duration::from_secs),
            backoff: r.backoff_ms.map_or(s.backoff, Duration::from_millis),
        }
    }

    fn restart_now(&mut self, id: &str) {
        let Some(p) = self.programs.get_mut(id) else {
            return;
        };
        if p.pid.is_some() {
            self.stop(id, Kill::Restart);
        } else {
            p.gen += 1;
            if p.started.is_some() || p.last_exit.is_some() {
                p.restarts += 1;
            }
            self.start(id);
        }
    }

    /// Spawn a run of `id` now. A spawn error counts as a failed start.
    fn start(&mut self, id: &str) {
        if self.shutting_down {
            return;
        }
        let Some(p) = self.programs.get(id) else {
            return;
        };
        if p.pid.is_some() {
            return;
        }
        let spawned = self.spawn(id);
        let Some(p) = self.programs.get_mut(id) else {
            return;
        };
        p.gen += 1;
        p.kill = None;
        p.ping_failures = 0;
        p.ping_ok_seen = false;
        match spawned {
            Ok(pid) => {
                p.pid = Some(pid);
                p.started = Some((Instant::now(), SystemTime::now()));
                self.by_pid.insert(pid, id.to_string());
                let start_ticks = procfs::stat(pid).map_or(0, |s| s.start_ticks);
                if let Err(e) = self.store.save_pid(id, pid, start_ticks) {
                    eprintln!("slot-agent: {id}: noting pid: {e}");
                }
                let p = &self.programs[id];
                let (gen, start_secs) = (p.gen, p.pacing.start_secs);
                if start_secs.is_zero() {
                    self.set_state(id, ProgramState::Running);
                } else {
                    self.set_state(id, ProgramState::Starting);
                    self.schedule(id, gen, start_secs, Timer::StartSecs);
                }
                self.spawn_ping_loop(id);
            }
            Err(e) => {
                self.note(id, &format!("cannot start: {e}"));
                let p = self.programs.get_mut(id).expect("present");
                p.started = None;
                p.last_exit = Some(LastExit {
                    code: None,
                    signal: None,
                    at: now_rfc3339(),
                });
                let end = RunEnd {
                    uptime: Duration::ZERO,
                    success: false,
                    killed: false,
                };
                self.apply_policy(id, end);
            }
        }
    }

    /// Whether a program of `slot` has a process.
    fn slot_busy(&self, slot: u32) -> bool {
        self.programs
            .values()
            .any(|p| p.slot == slot && p.pid.is_some())
    }

    /// End what listens on a slot's port without being that slot's running
    /// program: a slot user of this pool is ended (its program restarts by
    /// its own policy); any other holder is reported. `listeners` is every
    /// socket listening now. Only with slot users.
    pub fn police_ports(&mut self, listeners: &[procfs::Listener]) {
        let Some(base) = self.settings.uid_base else {
            return;
        };
        let ours = base..base + self.settings.slots;
        for slot in 0..self.settings.slots {
            let Some(port) = slot_port(self.settings.base_port, slot) else {
                continue;
            };
            let rightful = self.slot_busy(slot).then_some(base + slot);
            let holders: Vec<u32> = listeners
                .iter()
                .filter(|l| l.port == port && Some(l.uid) != rightful)
                .map(|l| l.uid)
                .collect();
            for uid in holders {
                let victim = self.program_in(slot);
                if ours.contains(&uid) {
                    let thief = uid - base;
                    let msg = format!(
                        "slot {thief}'s user listened on port {port} of slot {slot}: ended"
                    );
                    eprintln!("slot-agent: {msg}");
                    if let Some(t) = self.program_in(thief) {
                        self.note(&t, &msg);
                    }
                    crate::leftovers::end_processes(uid..uid + 1);
                } else if let Some(v) = victim {
                    self.note(
                        &v,
                        &format!("port {port} is held by uid {uid}, not this slot's user"),
                    );
                }
            }
        }
    }

    /// The program (if any) that owns `slot`.
    fn program_in(&self, slot: u32) -> Option<String> {
        self.programs
            .iter()
            .find(|(_, p)| p.slot == slot)
            .map(|(id, _)| id.clone())
    }

    /// The uid of `slot`'s programs, when slots run under their own uids.
    fn slot_uid(&self, slot: u32) -> Option<u32> {
        self.settings.uid_base.map(|b| b + slot)
    }

    fn spawn(&mut self, id: &str) -> io::Result<i32> {
        let p = &self.programs[id];
        let s = &self.settings;
        let home = s.slots_dir.join(p.slot.to_string());
        fs::create_dir_all(&home)?;
        let uid = self.slot_uid(p.slot);
        if let Some(uid) = uid {
            let id = nix::unistd::Uid::from_raw(uid);
            let gid = nix::unistd::Gid::from_raw(uid);
            nix::unistd::chown(&home, Some(id), Some(gid)).map_err(io::Error::from)?;
        }
        crate::store::set_mode(&home, 0o700)?;

        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (port, slot) = (p.port.to_string(), p.slot.to_string());
        let home_s = home.to_string_lossy().into_owned();
        let value = |name: &str| {
            Some(match name {
                "PORT" => port.clone(),
                "SLOT" => slot.clone(),
                "HOME" => home_s.clone(),
                "TENANT_ID" => id.to_string(),
                "HOST" => s.program_host.clone(),
                _ => return None,
            })
        };
        // Checked when the spec was accepted: an error here is not possible.
        let fill =
            |t: &String| slotpack_proto::expand::expand(t, value).unwrap_or_else(|_| t.clone());
        let mut cmd = Command::new(&p.spec.command);
        cmd.args(p.spec.args.iter().map(fill))
            .env_clear()
            .envs(s.base_env.iter().map(|(k, v)| (k, v)))
            .envs(p.spec.env.iter().map(|(k, v)| (k, fill(v))))
            .env("HOME", &home)
            .env("PORT", &port)
            .env("SLOT", &slot)
            .env("TENANT_ID", id)
            .env("HOST", &s.program_host)
            .current_dir(
                p.spec
                    .working_dir
                    .as_ref()
                    .map_or(home.as_path(), Path::new),
            )
            .stdin(Stdio::null())
            .stderr(Stdio::from(write_end.try_clone()?))
            .stdout(Stdio::from(write_end))
            .process_group(0);
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        confine(&mut cmd, uid.map(|_| s.max_procs));
        let port = p.port;
        self.ports.release(port);
        let child = cmd.spawn();
        drop(cmd); // closes our copies of the pipe's write end
        let pid = match child {
            Ok(c) => c.id() as i32,
            Err(e) => {
                self.ports.hold(port);
                return Err(e);
            }
        };
        let p = &self.programs[id];
        // The Child is dropped without waiting: the reaper collects every exit.
        pump_log(read_end, p.log.clone());
        Ok(pid)
    }

    fn on_exit(&mut self, pid: i32, code: Option<i32>, signal: Option<Signal>) {
        let Some(id) = self.by_pid.remove(&pid) else {
            return; // an orphan that was re-parented to us: reaped, nothing else
        };
        // Whatever the program left in its process group goes with it, and
        // with isolation every process of its slot user (setsid escapes too).
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        // (While the agent shuts down, one sweep of all slot users at the
        // end does it.)
        if let Some(uid) = self.programs.get(&id).and_then(|p| self.slot_uid(p.slot)) {
            if !self.shutting_down {
                crate::leftovers::end_processes(uid..uid + 1);
            }
        }
        if let Some(port) = self.programs.get(&id).map(|p| p.port) {
            self.ports.hold(port);
        }
        if let Err(e) = self.store.clear_pid(&id) {
            eprintln!("slot-agent: {id}: clearing pid: {e}");
        }
        let Some(p) = self.programs.get_mut(&id) else {
            return;
        };
        p.pid = None;
        p.gen += 1;
        p.rss = 0;
        p.last_exit = Some(LastExit {
            code,
            signal: signal.map(|s| s.as_str().trim_start_matches("SIG").to_string()),
            at: now_rfc3339(),
        });
        let uptime = p.started.map_or(Duration::ZERO, |(i, _)| i.elapsed());
        let kill = p.kill.take();
        if p.deleting {
            self.set_state(&id, ProgramState::Stopped);
            self.api_delete_finish(&id);
            return;
        }
        if self.shutting_down || p.desired == Desired::Stopped {
            self.set_state(&id, ProgramState::Stopped);
            return;
        }
        match kill {
            Some(Kill::Stop) | Some(Kill::Shutdown) => self.set_state(&id, ProgramState::Stopped),
            Some(Kill::Restart) => {
                let p = self.programs.get_mut(&id).expect("present");
                p.restarts += 1;
                self.start(&id);
            }
            Some(Kill::Unhealthy) | Some(Kill::Memory) => self.apply_policy(
                &id,
                RunEnd {
                    uptime,
                    success: false,
                    killed: true,
                },
            ),
            None => self.apply_policy(
                &id,
                RunEnd {
                    uptime,
                    success: code == Some(0),
                    killed: false,
                },
            ),
        }
    }

    fn apply_policy(&mut self, id: &str, end: RunEnd) {
        let p = self.programs.get_mut(id).expect("present");
        if end.started_ok(&p.pacing) {
            p.message = None; // a good run: whatever went wrong is over
        }
        let decision = policy::after_exit(&p.pacing, end, p.failed_starts);
        let gen = p.gen;
        match decision {
            Decision::Restart {
                delay,
                failed_starts,
            } => {
                p.failed_starts = failed_starts;
                if delay.is_zero() {
                    p.restarts += 1;
                    self.start(id);
                } else {
                    self.set_state(id, ProgramState::Backoff);
                    self.schedule(id, gen, delay, Timer::Backoff);
                }
            }
            Decision::Cooldown(d) => {
                p.failed_starts = p.pacing.max_attempts;
                self.set_state(id, ProgramState::Cooldown);
                self.schedule(id, gen, d, Timer::Cooldown);
            }
            Decision::Exited => self.set_state(id, ProgramState::Exited),
            Decision::Fatal => self.set_state(id, ProgramState::Fatal),
        }
    }

    /// Send the stop signal to the group of `id` and arm the SIGKILL timer.
    fn stop(&mut self, id: &str, why: Kill) {
        let Some(p) = self.programs.get_mut(id) else {
            return;
        };
        let Some(pid) = p.pid else {
            // Nothing runs: cancel any pending backoff/cooldown start.
            p.gen += 1;
            if why == Kill::Restart {
                p.restarts += 1;
                self.start(id);
            } else if p.state != ProgramState::Exited && p.state != ProgramState::Fatal
                || why == Kill::Stop
            {
                self.set_state(id, ProgramState::Stopped);
            }
            return;
        };
        if p.kill.is_some() && why != Kill::Shutdown && why != Kill::Stop {
            return; // already being stopped
        }
        p.kill = Some(why);
        let sig = signal_of(&p.spec.stop.signal).unwrap_or(Signal::SIGTERM);
        let (gen, timeout) = (p.gen, Duration::from_millis(p.spec.stop.timeout_ms));
        let _ = killpg(Pid::from_raw(pid), sig);
        self.set_state(id, ProgramState::Stopping);
        self.schedule(id, gen, timeout, Timer::StopTimeout);
    }

    fn on_timer(&mut self, id: &str, gen: u64, timer: Timer) {
        let Some(p) = self.programs.get_mut(id) else {
            return;
        };
        if p.gen != gen {
            return;
        }
        match timer {
            Timer::StartSecs => {
                // The failure count is settled when the run ends (policy).
                if p.state == ProgramState::Starting {
                    self.set_state(id, ProgramState::Running);
                }
            }
            Timer::Backoff => {
                p.restarts += 1;
                self.start(id);
            }
            Timer::Cooldown => {
                p.failed_starts = 0;
                p.restarts += 1;
                self.start(id);
            }
            Timer::StopTimeout => {
                if let Some(pid) = p.pid {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }

    /// Record a ping of run `gen`; returns when to ping next (None: the run
    /// is over). Until a run's first good ping, and only within its grace
    /// (initial delay + one interval), failures do not count and pings come
    /// every 250 ms at most, so a program that binds its port a moment after
    /// it starts is neither reported unhealthy for a whole interval nor killed.
    fn on_ping(
        &mut self,
        id: &str,
        gen: u64,
        r: ping::PingResult,
        interval: Duration,
    ) -> Option<Duration> {
        let p = self.programs.get_mut(id)?;
        if p.gen != gen || p.pid.is_none() {
            return None;
        }
        let cfg = p.spec.ping.as_ref()?;
        p.last_ping = Some(LastPing {
            ok: r.ok,
            latency_ms: r.latency.as_secs_f64() * 1000.0,
            at: now_rfc3339(),
        });
        if r.ok {
            p.ping_failures = 0;
            p.ping_ok_seen = true;
            return Some(interval);
        }
        let grace = Duration::from_millis(cfg.initial_delay_ms) + interval;
        let uptime = p.started.map_or(Duration::ZERO, |(i, _)| i.elapsed());
        if !p.ping_ok_seen && uptime < grace {
            return Some(interval.min(Duration::from_millis(250)));
        }
        p.ping_failures += 1;
        if p.ping_failures >= cfg.failure_threshold && p.kill.is_none() {
            let n = p.ping_failures;
            self.note(id, &format!("{n} failed pings in a row: restarting"));
            self.stop(id, Kill::Unhealthy);
        }
        Some(interval)
    }

    fn set_state(&mut self, id: &str, state: ProgramState) {
        let Some(p) = self.programs.get_mut(id) else {
            return;
        };
        p.state = state;
        let _ = self.events.send(StateEvent {
            id: id.to_string(),
            state,
            pid: p.pid.map(|x| x as u32),
            restarts: p.restarts,
            at: now_rfc3339(),
        });
    }

    /// Write an agent line into the program's log.
    fn note(&self, id: &str, msg: &str) {
        if let Some(p) = self.programs.get(id) {
            let line = format!("[slot-agent {}] {msg}\n", now_rfc3339());
            let _ = lock_log(&p.log).write(line.as_bytes());
        }
    }

    fn schedule(&self, id: &str, gen: u64, after: Duration, timer: Timer) {
        let handle = self.handle.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(sh) = handle.upgrade() {
                lock(&sh).on_timer(&id, gen, timer);
            }
        });
    }

    fn spawn_ping_loop(&self, id: &str) {
        let p = &self.programs[id];
        let Some(cfg) = p.spec.ping.clone() else {
            return;
        };
        let s = &self.settings;
        let interval = cfg
            .interval_ms
            .map_or(s.ping_interval, Duration::from_millis);
        let timeout = cfg.timeout_ms.map_or(s.ping_timeout, Duration::from_millis);
        let addr = SocketAddr::from(([127, 0, 0, 1], p.port));
        let uid = self.slot_uid(p.slot);
        let (gen, handle, id) = (p.gen, self.handle.clone(), id.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(cfg.initial_delay_ms)).await;
            loop {
                // An answer from another user's listener on the slot's port
                // is no answer of this program.
                let taken = uid.and_then(|u| procfs::foreign_listener(addr.port(), u));
                let r = match taken {
                    Some(_) => ping::PingResult {
                        ok: false,
                        latency: Duration::ZERO,
                    },
                    None => ping::ping(cfg.kind, addr, &cfg.path, timeout).await,
                };
                let Some(sh) = handle.upgrade() else { return };
                let next = lock(&sh).on_ping(&id, gen, r, interval);
                drop(sh);
                match next {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return,
                }
            }
        });
    }
}

/// Limits every program gets in its child process, after the uid switch and
/// before exec: `no_new_privs` (no setuid escalation), and with a slot user
/// at most `max_procs` processes for that user (a fork bomb stays in its slot).
#[allow(unsafe_code)]
fn confine(cmd: &mut Command, max_procs: Option<u64>) {
    let limit = move || -> io::Result<()> {
        nix::sys::prctl::set_no_new_privs()?;
        if let Some(n) = max_procs {
            use nix::sys::resource::{setrlimit, Resource};
            setrlimit(Resource::RLIMIT_NPROC, n, n)?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec; it makes
    // two system calls and neither allocates nor takes a lock.
    unsafe {
        cmd.pre_exec(limit);
    }
}

/// The port of `slot` given the agent's base port.
fn slot_port(base: u16, slot: u32) -> Option<u16> {
    u16::try_from(u32::from(base) + slot).ok()
}

/// How a memory message says that the limit was passed before any run of
/// the program ended well.
const FIRST_RUN: &str = "in its first run";

fn status(id: &str, p: &Program) -> ProgramStatus {
    ProgramStatus {
        id: id.to_string(),
        state: p.state,
        pid: p.pid.map(|x| x as u32),
        slot: p.slot,
        port: p.port,
        restarts: p.restarts,
        healthy: p.healthy(),
        last_exit: p.last_exit.clone(),
        last_ping: p.last_ping.clone(),
        rss_bytes: p.rss,
        started_at: p
            .started
            .filter(|_| p.pid.is_some())
            .map(|(_, t)| rfc3339(t)),
        spec_digest: Some(slotpack_proto::protocol::spec_digest(&p.spec)),
        message: p.message.clone(),
    }
}

/// The signal named by a stop spec (`TERM`, `KILL`, ...).
pub fn signal_of(name: &str) -> Option<Signal> {
    Some(match name {
        "TERM" => Signal::SIGTERM,
        "INT" => Signal::SIGINT,
        "HUP" => Signal::SIGHUP,
        "QUIT" => Signal::SIGQUIT,
        "KILL" => Signal::SIGKILL,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        _ => return None,
    })
}

fn lock_log(l: &Mutex<LogFile>) -> MutexGuard<'_, LogFile> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// One read buffer for every log pump (the runtime has one thread).
    static PUMP_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 16 * 1024]);
}

/// Copy the program's output pipe into its log until every writer closed it.
fn pump_log(read_end: OwnedFd, log: Arc<Mutex<LogFile>>) {
    let Ok(rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            if rx.readable().await.is_err() {
                return;
            }
            let r = PUMP_BUF.with(|b| {
                let mut buf = b.borrow_mut();
                let n = rx.try_read(&mut buf)?;
                if n > 0 {
                    let _ = lock_log(&log).write(&buf[..n]);
                }
                Ok::<_, io::Error>(n)
            });
            match r {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(_) => return,
            }
        }
    });
}
