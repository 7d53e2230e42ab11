//! What the supervisor asks of the machine, behind one small trait: spawn a
//! run, signal its process group, collect exits, end a slot user's leftovers,
//! hold slot ports, and call back later (timers, ping loops). [`OsHost`] does
//! it for real; the unit tests use a fake, so the state machine in
//! `supervisor.rs` is tested without processes, sockets or clocks.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use slotpack_proto::protocol::PingSpec;
use slotpack_proto::{ping, procfs};

use super::{lock, Supervisor, Timer};
use crate::logs::LogFile;
use crate::ports::PortHolds;
use crate::sandbox::{Limits, Sandbox};

/// Everything a run is started with.
pub struct Launch<'a> {
    /// Program id (`TENANT_ID`).
    pub id: &'a str,
    /// The command.
    pub command: &'a str,
    /// Arguments, `${...}` filled in.
    pub args: Vec<String>,
    /// The whole environment, `${...}` filled in.
    pub env: Vec<(String, String)>,
    /// The tenant's home (its own, kept across slots and pools).
    pub home: PathBuf,
    /// Where the tenant's data lives (home and volume folders are made
    /// and given to the slot user before the start).
    pub data: crate::tenant_data::TenantData,
    /// The tenant's volumes.
    pub volumes: Vec<crate::tenant_data::Volume>,
    /// Where the program starts (the home unless the spec says otherwise).
    pub working_dir: PathBuf,
    /// The slot user, when slots run under their own uids.
    pub uid: Option<u32>,
    /// The slot.
    pub slot: u32,
    /// The slot's port.
    pub port: u16,
    /// Memory limit in MiB (the slot's cgroup).
    pub memory_mb: Option<u64>,
    /// CPU share in millicores (the slot's cgroup).
    pub cpu_millis: Option<u64>,
    /// Size of the slot's private temporary folders in MiB.
    pub tmp_mb: u64,
    /// Most processes the slot user may have.
    pub max_procs: u64,
    /// Where stdout and stderr go.
    pub log: Arc<Mutex<LogFile>>,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(Signal),
}

/// How a ping loop pings one run.
#[derive(Debug, Clone)]
pub struct PingPlan {
    /// The spec's ping.
    pub spec: PingSpec,
    /// `127.0.0.1:<slot port>`.
    pub addr: SocketAddr,
    /// Time between pings.
    pub interval: Duration,
    /// Time one ping may take.
    pub timeout: Duration,
    /// The slot user: an answer from another user's listener is no answer.
    pub uid: Option<u32>,
}

/// The machine, as the supervisor sees it.
pub trait Host {
    /// Start a run in a new process group; its pid.
    fn spawn(&mut self, launch: Launch<'_>) -> io::Result<i32>;
    /// Send `sig` to the process group `pid`.
    fn signal_group(&mut self, pid: i32, sig: Signal);
    /// One exited child, if any (never blocks).
    fn reap_one(&mut self) -> Option<(i32, Exit)>;
    /// The start time of `pid` (clock ticks after boot; 0 if unknown).
    fn start_ticks(&self, pid: i32) -> u64;
    /// End every process of `slot` (its cgroup; without one, every
    /// process of its user `uid`).
    fn end_slot(&mut self, slot: u32, uid: u32);
    /// Whether the kernel enforces memory limits (slot cgroups), so the
    /// supervisor only reports memory and never ends a run for it.
    fn kernel_limits(&self) -> bool;
    /// Memory `slot` uses (its cgroup), if known.
    fn slot_memory(&self, slot: u32) -> Option<u64>;
    /// Processes of `slot` the kernel's OOM killer has ended so far.
    fn oom_kills(&self, slot: u32) -> u64;
    /// CPU time `slot` has used (its cgroup), in microseconds, if known.
    fn slot_cpu_usec(&self, slot: u32) -> Option<u64>;
    /// Remove what a slot leaves outside its tenant's data: with a slot
    /// user and no private temp folders, its files in the shared ones.
    fn clear_slot(&mut self, uid: Option<u32>);
    /// Remove a tenant's data folder (home and volumes).
    fn purge_data(&mut self, dir: &Path);
    /// Whether each slot gets mount namespaces of its own (volumes).
    fn private_mounts(&self) -> bool;
    /// Hold `port` (bound, never listening) while no program uses it;
    /// false if someone else has it.
    fn hold_port(&mut self, port: u16) -> bool;
    /// Let `port` go for the program about to start.
    fn release_port(&mut self, port: u16);
    /// Call [`Supervisor::on_timer`] after `after`.
    fn schedule(
        &mut self,
        sup: Weak<Mutex<Supervisor>>,
        id: &str,
        gen: u64,
        after: Duration,
        timer: Timer,
    );
    /// Ping run `gen` of `id` as `plan` says, reporting each result to
    /// [`Supervisor::on_ping`] until it answers `None`.
    fn ping_loop(&mut self, sup: Weak<Mutex<Supervisor>>, id: &str, gen: u64, plan: PingPlan);
}

/// The real machine: processes, `/proc`, sockets and the tokio runtime.
#[derive(Default)]
pub struct OsHost {
    ports: PortHolds,
    sandbox: Option<Sandbox>,
}

impl OsHost {
    /// A host whose slots run in `sandbox` (agents as root).
    pub fn sandboxed(sandbox: Option<Sandbox>) -> OsHost {
        OsHost {
            ports: PortHolds::default(),
            sandbox,
        }
    }

    fn cgroups(&self) -> Option<&crate::sandbox::Cgroups> {
        self.sandbox.as_ref().and_then(|s| s.cgroups.as_ref())
    }
}

impl Host for OsHost {
    fn spawn(&mut self, l: Launch<'_>) -> io::Result<i32> {
        l.data.prepare(l.id, &l.volumes, l.uid)?;
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut cmd = Command::new(l.command);
        cmd.args(&l.args)
            .env_clear()
            .envs(l.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&l.working_dir)
            .stdin(Stdio::null())
            .stderr(Stdio::from(write_end.try_clone()?))
            .stdout(Stdio::from(write_end))
            .process_group(0);
        match (l.uid, &self.sandbox) {
            (Some(uid), Some(sb)) => {
                let limits = Limits {
                    memory_bytes: l.memory_mb.map(|m| m << 20),
                    cpu_millis: l.cpu_millis,
                    pids: l.max_procs,
                };
                // The command stays runnable where private temp folders cover it.
                let command_dir: Vec<PathBuf> = Path::new(l.command)
                    .parent()
                    .filter(|p| p.is_absolute())
                    .map(Path::to_path_buf)
                    .into_iter()
                    .collect();
                let ro: Vec<&Path> = command_dir.iter().map(PathBuf::as_path).collect();
                let prepared = sb.prepare(&crate::sandbox::SlotStart {
                    slot: l.slot,
                    uid,
                    port: l.port,
                    limits,
                    tmp_mb: l.tmp_mb,
                    keep: &[&l.working_dir],
                    keep_read_only: &ro,
                    tenant: Some(crate::sandbox::TenantView {
                        root: l.data.root(),
                        dir: &l.data.dir(l.id),
                        volumes: &l.volumes,
                    }),
                })?;
                // SAFETY: `enter` makes system calls only, on data made
                // before the fork (see `sandbox`).
                #[allow(unsafe_code)]
                unsafe {
                    cmd.pre_exec(move || prepared.enter());
                }
            }
            (uid, _) => {
                if let Some(uid) = uid {
                    cmd.uid(uid).gid(uid);
                }
                confine(&mut cmd, uid.map(|_| l.max_procs));
            }
        }
        let child = cmd.spawn();
        drop(cmd); // closes our copies of the pipe's write end
        let pid = child?.id() as i32;
        // The Child is dropped without waiting: the reaper collects every exit.
        pump_log(read_end, l.log);
        Ok(pid)
    }

    fn signal_group(&mut self, pid: i32, sig: Signal) {
        let _ = killpg(Pid::from_raw(pid), sig);
    }

    fn reap_one(&mut self) -> Option<(i32, Exit)> {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => return Some((pid.as_raw(), Exit::Code(code))),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    return Some((pid.as_raw(), Exit::Signal(sig)))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("slot-agent: waitpid: {e}");
                    return None;
                }
            }
        }
    }

    fn start_ticks(&self, pid: i32) -> u64 {
        procfs::stat(pid).map_or(0, |s| s.start_ticks)
    }

    fn end_slot(&mut self, slot: u32, uid: u32) {
        match self.cgroups() {
            Some(c) => {
                c.kill(slot);
            }
            None => {
                crate::leftovers::end_processes(uid..uid + 1);
            }
        }
    }

    fn kernel_limits(&self) -> bool {
        self.cgroups().is_some()
    }

    fn slot_memory(&self, slot: u32) -> Option<u64> {
        self.cgroups().map(|c| c.memory(slot))
    }

    fn oom_kills(&self, slot: u32) -> u64 {
        self.cgroups().map_or(0, |c| c.oom_kills(slot))
    }

    fn slot_cpu_usec(&self, slot: u32) -> Option<u64> {
        self.cgroups().and_then(|c| c.cpu_usec(slot))
    }

    fn clear_slot(&mut self, uid: Option<u32>) {
        // With private temp folders nothing is outside the tenant's data.
        if let (Some(uid), false) = (uid, self.private_mounts()) {
            crate::leftovers::remove_files(uid);
        }
    }

    fn purge_data(&mut self, dir: &Path) {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                eprintln!("slot-agent: purging {}: {e}", dir.display());
            }
            _ => {}
        }
    }

    fn private_mounts(&self) -> bool {
        self.sandbox.as_ref().is_some_and(|s| s.namespaces)
    }

    fn hold_port(&mut self, port: u16) -> bool {
        self.ports.hold(port)
    }

    fn release_port(&mut self, port: u16) {
        self.ports.release(port);
    }

    fn schedule(
        &mut self,
        sup: Weak<Mutex<Supervisor>>,
        id: &str,
        gen: u64,
        after: Duration,
        timer: Timer,
    ) {
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(sh) = sup.upgrade() {
                lock(&sh).on_timer(&id, gen, timer);
            }
        });
    }

    fn ping_loop(&mut self, sup: Weak<Mutex<Supervisor>>, id: &str, gen: u64, mut plan: PingPlan) {
        let id = id.to_string();
        // Where the kernel limits binds to a slot's own port, no other
        // user can listen there: no need to read the socket tables.
        if self.sandbox.as_ref().is_some_and(Sandbox::binds_enforced) {
            plan.uid = None;
        }
        tokio::spawn(async move {
            // Pings start at once: a program that answers early is healthy
            // early; the initial delay only keeps failures from counting
            // (see `Supervisor::on_ping`).
            let mut pinger = ping::Pinger::new(plan.spec.kind, plan.addr, &plan.spec.path);
            loop {
                // An answer from another user's listener on the slot's port
                // is no answer of this program.
                let taken = plan
                    .uid
                    .and_then(|u| procfs::foreign_listener(plan.addr.port(), u));
                let r = match taken {
                    Some(_) => ping::PingResult {
                        ok: false,
                        latency: Duration::ZERO,
                    },
                    None => pinger.ping(plan.timeout).await,
                };
                let Some(sh) = sup.upgrade() else { return };
                let next = lock(&sh).on_ping(&id, gen, r, plan.interval);
                drop(sh);
                match next {
                    Some(d) => tokio::time::sleep_until(batched(d)).await,
                    None => return,
                }
            }
        });
    }
}

/// Pings fall due on a shared 100 ms grid: the agent wakes once for the
/// pings due together instead of once per program (a ping is at most
/// 100 ms late).
fn batched(after: Duration) -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    const GRID: u128 = 100;
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    let due = tokio::time::Instant::now() + after;
    let ms = due.duration_since(epoch).as_millis();
    let up = ms.div_ceil(GRID) * GRID;
    epoch + Duration::from_millis(u64::try_from(up).unwrap_or(u64::MAX))
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

/// Lock a program's log, recovering from a poisoned lock.
pub fn lock_log(l: &Mutex<LogFile>) -> MutexGuard<'_, LogFile> {
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
