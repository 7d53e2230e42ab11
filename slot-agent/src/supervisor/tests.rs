//! The supervisor's state machine on a fake host: no process is spawned, no
//! signal sent, no socket bound and no clock waited for. Spawns, signals and
//! armed timers are recorded; exits, timer firings and ping results are
//! injected by the test. Specs and logs go to a temporary folder.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::Signal;
use serde_json::json;
use slotpack_proto::ping::PingResult;
use slotpack_proto::protocol::{ProgramSpec, ProgramState, ProgramStatus};

use super::host::{Exit, Host, Launch, PingPlan};
use super::{lock, Shared, Supervisor, SupervisorError, Timer};
use crate::config::AgentConfig;
use crate::store::Store;

/// One spawn the supervisor asked for.
struct Spawned {
    id: String,
    pid: i32,
    args: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: PathBuf,
    uid: Option<u32>,
}

/// Everything the fake host saw, and what it will answer.
#[derive(Default)]
struct World {
    next_pid: i32,
    spawns: Vec<Spawned>,
    signals: Vec<(i32, Signal)>,
    exits: VecDeque<(i32, Exit)>,
    timers: Vec<(String, u64, Duration, Timer)>,
    pings: Vec<(String, u64, PingPlan)>,
    ended_users: Vec<u32>,
    cleared: Vec<Option<u32>>,
    purged: Vec<PathBuf>,
    held: BTreeSet<u16>,
    fail_spawn: bool,
    /// Slot cgroups: the kernel enforces memory.
    kernel: bool,
    /// OOM kills per slot, as the kernel would count them.
    ooms: std::collections::HashMap<u32, u64>,
    cpu: std::collections::HashMap<u32, u64>,
}

struct FakeHost(Arc<Mutex<World>>);

impl Host for FakeHost {
    fn spawn(&mut self, l: Launch<'_>) -> std::io::Result<i32> {
        let mut w = self.0.lock().unwrap();
        if w.fail_spawn {
            return Err(std::io::Error::other("exec format error"));
        }
        w.next_pid += 1;
        let pid = 1000 + w.next_pid;
        w.spawns.push(Spawned {
            id: l.id.to_string(),
            pid,
            args: l.args,
            env: l.env,
            working_dir: l.working_dir,
            uid: l.uid,
        });
        Ok(pid)
    }
    fn signal_group(&mut self, pid: i32, sig: Signal) {
        self.0.lock().unwrap().signals.push((pid, sig));
    }
    fn reap_one(&mut self) -> Option<(i32, Exit)> {
        self.0.lock().unwrap().exits.pop_front()
    }
    fn start_ticks(&self, pid: i32) -> u64 {
        pid as u64 * 10
    }
    fn end_slot(&mut self, _slot: u32, uid: u32) {
        self.0.lock().unwrap().ended_users.push(uid);
    }
    fn kernel_limits(&self) -> bool {
        self.0.lock().unwrap().kernel
    }
    fn slot_memory(&self, slot: u32) -> Option<u64> {
        let w = self.0.lock().unwrap();
        w.kernel.then_some(u64::from(slot + 1) << 20)
    }
    fn oom_kills(&self, slot: u32) -> u64 {
        self.0.lock().unwrap().ooms.get(&slot).copied().unwrap_or(0)
    }
    fn slot_cpu_usec(&self, slot: u32) -> Option<u64> {
        let w = self.0.lock().unwrap();
        w.kernel.then(|| w.cpu.get(&slot).copied().unwrap_or(0))
    }
    fn clear_slot(&mut self, uid: Option<u32>) {
        self.0.lock().unwrap().cleared.push(uid);
    }
    fn purge_data(&mut self, dir: &Path) {
        self.0.lock().unwrap().purged.push(dir.to_path_buf());
    }
    fn private_mounts(&self) -> bool {
        true
    }
    fn hold_port(&mut self, port: u16) -> bool {
        self.0.lock().unwrap().held.insert(port);
        true
    }
    fn release_port(&mut self, port: u16) {
        self.0.lock().unwrap().held.remove(&port);
    }
    fn schedule(
        &mut self,
        _sup: Weak<Mutex<Supervisor>>,
        id: &str,
        gen: u64,
        after: Duration,
        timer: Timer,
    ) {
        let t = (id.to_string(), gen, after, timer);
        self.0.lock().unwrap().timers.push(t);
    }
    fn ping_loop(&mut self, _sup: Weak<Mutex<Supervisor>>, id: &str, gen: u64, plan: PingPlan) {
        self.0
            .lock()
            .unwrap()
            .pings
            .push((id.to_string(), gen, plan));
    }
}

/// A supervisor on a fake host, with its temporary state dir.
struct Rig {
    sup: Shared,
    world: Arc<Mutex<World>>,
    dir: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    /// Three slots from port 9000; `isolate` gives each slot a user.
    fn new(name: &str, isolate: bool) -> Rig {
        let dir =
            std::env::temp_dir().join(format!("slot-agent-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let cfg = AgentConfig::parse_from([
            "slot-agent",
            "--state-dir",
            dir.to_str().unwrap(),
            "--slots",
            "3",
            "--base-port",
            "9000",
            "--max-restart-attempts",
            "3",
            "--backoff-ms",
            "100",
            "--restart-cooldown",
            "5000",
        ]);
        let store = Store::open(&dir).unwrap();
        let world = Arc::new(Mutex::new(World::default()));
        let sup = Supervisor::with_host(&cfg, store, isolate, Box::new(FakeHost(world.clone())));
        Rig { sup, world, dir }
    }

    fn w(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    fn put(&self, id: &str, spec: serde_json::Value) -> Result<bool, SupervisorError> {
        let spec: ProgramSpec = serde_json::from_value(spec).unwrap();
        lock(&self.sup).put(id, spec)
    }

    fn status(&self, id: &str) -> ProgramStatus {
        lock(&self.sup).get(id).unwrap()
    }

    fn state(&self, id: &str) -> ProgramState {
        self.status(id).state
    }

    /// The pid of the latest spawn of `id`.
    fn pid(&self, id: &str) -> i32 {
        let w = self.w();
        w.spawns.iter().rev().find(|s| s.id == id).unwrap().pid
    }

    fn spawns(&self, id: &str) -> usize {
        self.w().spawns.iter().filter(|s| s.id == id).count()
    }

    /// The process exits; the reaper runs.
    fn exit(&self, pid: i32, how: Exit) {
        self.w().exits.push_back((pid, how));
        lock(&self.sup).reap();
    }

    /// The latest armed timer of `kind` for `id`: (gen, delay).
    fn timer(&self, id: &str, kind: Timer) -> (u64, Duration) {
        let w = self.w();
        let t = w
            .timers
            .iter()
            .rev()
            .find(|t| t.0 == id && t.3 == kind)
            .unwrap_or_else(|| panic!("no {kind:?} timer for {id}"));
        (t.1, t.2)
    }

    /// Fire the latest timer of `kind` for `id`.
    fn fire(&self, id: &str, kind: Timer) {
        let (gen, _) = self.timer(id, kind);
        lock(&self.sup).on_timer(id, gen, kind);
    }

    fn ping(&self, id: &str, ok: bool) -> Option<Duration> {
        let gen = self.w().pings.iter().rev().find(|p| p.0 == id).unwrap().1;
        let r = PingResult {
            ok,
            latency: Duration::from_millis(1),
        };
        lock(&self.sup).on_ping(id, gen, r, Duration::from_secs(1))
    }
}

fn spec(slot: u32, extra: serde_json::Value) -> serde_json::Value {
    let mut s = json!({"command": "/bin/sh", "args": ["-c", "serve ${PORT}"], "slot": slot});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

#[test]
fn a_run_starts_then_counts_as_started_after_start_secs() {
    let r = Rig::new("start", false);
    assert!(r
        .put("a", spec(1, json!({"restart": {"startSecs": 2}})))
        .unwrap());
    assert_eq!(r.state("a"), ProgramState::Starting);
    assert!(
        !r.w().held.contains(&9001),
        "the slot's port was not let go"
    );
    assert!(r.w().held.contains(&9000), "an empty slot's port is held");
    let (_, after) = r.timer("a", Timer::StartSecs);
    assert_eq!(after, Duration::from_secs(2));
    r.fire("a", Timer::StartSecs);
    let s = r.status("a");
    assert_eq!(s.state, ProgramState::Running);
    assert_eq!(s.pid, Some(r.pid("a") as u32));
    assert!(s.started_at.is_some());
    // The spawn got the slot's values, the spec's `${PORT}` filled in, and
    // a spec cannot override what the agent sets.
    let w = r.w();
    let sp = &w.spawns[0];
    assert_eq!(sp.args, ["-c", "serve 9001"]);
    let env = |k: &str| {
        sp.env
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(env("PORT").as_deref(), Some("9001"));
    assert_eq!(env("SLOT").as_deref(), Some("1"));
    assert_eq!(env("TENANT_ID").as_deref(), Some("a"));
    assert_eq!(sp.working_dir, r.dir.join("tenants").join("a").join("home"));
    assert_eq!(sp.uid, None);
}

#[test]
fn failed_starts_back_off_doubling_then_cool_down_then_try_afresh() {
    let r = Rig::new("backoff", false);
    r.put("c", spec(0, json!({"restart": {"startSecs": 1}})))
        .unwrap();
    // Dies at once: a failed start. Backoff 100 ms, then 200 ms.
    r.exit(r.pid("c"), Exit::Code(1));
    assert_eq!(r.state("c"), ProgramState::Backoff);
    assert_eq!(r.timer("c", Timer::Backoff).1, Duration::from_millis(100));
    r.fire("c", Timer::Backoff);
    assert_eq!(r.spawns("c"), 2);
    r.exit(r.pid("c"), Exit::Code(1));
    assert_eq!(r.timer("c", Timer::Backoff).1, Duration::from_millis(200));
    r.fire("c", Timer::Backoff);
    // The third failed start: cooldown.
    r.exit(r.pid("c"), Exit::Signal(Signal::SIGSEGV));
    let s = r.status("c");
    assert_eq!(s.state, ProgramState::Cooldown);
    assert_eq!(s.restarts, 2);
    assert_eq!(s.pid, None);
    assert_eq!(s.last_exit.unwrap().signal.as_deref(), Some("SEGV"));
    assert_eq!(r.timer("c", Timer::Cooldown).1, Duration::from_secs(5));
    assert_eq!(r.spawns("c"), 3);
    r.fire("c", Timer::Cooldown);
    assert_eq!(r.spawns("c"), 4);
    assert_eq!(r.status("c").restarts, 3);
    // A fresh count: the next failure backs off 100 ms again.
    r.exit(r.pid("c"), Exit::Code(1));
    assert_eq!(r.timer("c", Timer::Backoff).1, Duration::from_millis(100));
}

#[test]
fn a_timer_of_a_run_that_moved_on_does_nothing() {
    let r = Rig::new("stale", false);
    r.put("s", spec(0, json!({"restart": {"startSecs": 5}})))
        .unwrap();
    let (old_gen, _) = r.timer("s", Timer::StartSecs);
    r.exit(r.pid("s"), Exit::Code(1));
    assert_eq!(r.state("s"), ProgramState::Backoff);
    lock(&r.sup).on_timer("s", old_gen, Timer::StartSecs);
    lock(&r.sup).on_timer("s", old_gen, Timer::Backoff);
    assert_eq!(r.state("s"), ProgramState::Backoff);
    assert_eq!(r.spawns("s"), 1);
    // Stopped through the API meanwhile: the pending backoff is cancelled.
    lock(&r.sup).api_stop("s").unwrap();
    r.fire("s", Timer::Backoff);
    assert_eq!(r.state("s"), ProgramState::Stopped);
    assert_eq!(r.spawns("s"), 1);
}

#[test]
fn stop_sends_the_spec_signal_then_sigkill_when_its_time_is_up() {
    let r = Rig::new("stop", false);
    let stop = json!({"restart": {"startSecs": 0}, "stop": {"signal": "INT", "timeoutMs": 700}});
    r.put("p", spec(2, stop)).unwrap();
    let pid = r.pid("p");
    assert_eq!(r.state("p"), ProgramState::Running);
    let events = lock(&r.sup).subscribe();
    lock(&r.sup).api_stop("p").unwrap();
    assert_eq!(r.state("p"), ProgramState::Stopping);
    assert_eq!(r.w().signals.last(), Some(&(pid, Signal::SIGINT)));
    assert_eq!(
        r.timer("p", Timer::StopTimeout).1,
        Duration::from_millis(700)
    );
    r.fire("p", Timer::StopTimeout);
    assert_eq!(r.w().signals.last(), Some(&(pid, Signal::SIGKILL)));
    r.exit(pid, Exit::Signal(Signal::SIGKILL));
    assert_eq!(r.state("p"), ProgramState::Stopped);
    assert_eq!(r.spawns("p"), 1, "a stopped program was started again");
    assert!(r.w().held.contains(&9002), "the port is held again");
    // Subscribers saw stopping, then stopped.
    let mut events = events;
    let seen: Vec<ProgramState> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.state)
        .collect();
    assert_eq!(seen, [ProgramState::Stopping, ProgramState::Stopped]);
    // A timer of that run, late: nothing is signalled any more.
    let before = r.w().signals.len();
    r.fire("p", Timer::StopTimeout);
    assert_eq!(r.w().signals.len(), before);
}

#[test]
fn an_api_restart_starts_again_at_once_when_the_run_ends() {
    let r = Rig::new("restart", false);
    r.put("r", spec(0, json!({"restart": {"startSecs": 0}})))
        .unwrap();
    let pid = r.pid("r");
    lock(&r.sup).api_restart("r").unwrap();
    assert_eq!(r.w().signals.last(), Some(&(pid, Signal::SIGTERM)));
    r.exit(pid, Exit::Signal(Signal::SIGTERM));
    let s = r.status("r");
    assert_eq!(s.state, ProgramState::Running);
    assert_eq!(s.restarts, 1);
    assert_ne!(r.pid("r"), pid);
}

#[test]
fn failed_pings_after_a_good_one_restart_the_run_by_policy() {
    let r = Rig::new("ping", false);
    let p = json!({"restart": {"startSecs": 0},
                   "ping": {"kind": "tcp", "failureThreshold": 2, "intervalMs": 1000}});
    r.put("h", spec(0, p)).unwrap();
    let pid = r.pid("h");
    {
        let w = r.w();
        let plan = &w.pings[0].2;
        assert_eq!(plan.addr.port(), 9000);
        assert_eq!(plan.interval, Duration::from_secs(1));
    }
    assert!(!r.status("h").healthy, "healthy before any ping");
    assert_eq!(r.ping("h", true), Some(Duration::from_secs(1)));
    assert!(r.status("h").healthy);
    r.ping("h", false);
    assert_eq!(
        r.state("h"),
        ProgramState::Running,
        "one failure is not enough"
    );
    r.ping("h", false);
    assert_eq!(r.state("h"), ProgramState::Stopping);
    assert_eq!(r.w().signals.last(), Some(&(pid, Signal::SIGTERM)));
    // A third failure while stopping does not stop it twice.
    r.ping("h", false);
    assert_eq!(r.w().signals.len(), 1);
    r.exit(pid, Exit::Signal(Signal::SIGTERM));
    // Killed by the agent: a failed start by the policy, so backoff.
    assert_eq!(r.state("h"), ProgramState::Backoff);
    // The old run's ping loop is told to end.
    let old_gen = r.w().pings[0].1;
    let ok = PingResult {
        ok: true,
        latency: Duration::ZERO,
    };
    assert_eq!(
        lock(&r.sup).on_ping("h", old_gen, ok, Duration::from_secs(1)),
        None
    );
}

#[test]
fn pings_that_fail_before_the_first_good_one_are_forgiven_within_the_grace() {
    let r = Rig::new("grace", false);
    let p = json!({"restart": {"startSecs": 0},
                   "ping": {"kind": "tcp", "failureThreshold": 1, "initialDelayMs": 60000}});
    r.put("g", spec(0, p)).unwrap();
    for _ in 0..5 {
        // Asked again soon, never counted.
        assert_eq!(r.ping("g", false), Some(Duration::from_millis(250)));
    }
    assert_eq!(r.state("g"), ProgramState::Running);
    assert!(r.w().signals.is_empty());
}

#[test]
fn cpu_use_is_the_rate_between_two_samples_of_the_slot_cgroup() {
    let r = Rig::new("cpu", true);
    r.w().kernel = true;
    r.put("c", spec(1, json!({"restart": {"startSecs": 0}})))
        .unwrap();
    let t0 = Instant::now();
    r.w().cpu.insert(1, 1_000_000);
    lock(&r.sup).sample_cpu(&Default::default(), t0);
    // The first sample only sets the mark.
    assert_eq!(r.status("c").cpu_millis, 0);
    // Half a second of CPU time in one second of wall time: 500 millicores.
    r.w().cpu.insert(1, 1_500_000);
    lock(&r.sup).sample_cpu(&Default::default(), t0 + Duration::from_secs(1));
    assert_eq!(r.status("c").cpu_millis, 500);
    assert_eq!(
        super::runs::cpu_millis(0, 2_000_000, Duration::from_secs(1)),
        2000
    );
    assert_eq!(super::runs::cpu_millis(5, 1, Duration::ZERO), 0);
}

#[test]
fn with_slot_cgroups_memory_is_reported_and_an_oom_kill_is_told_and_paced() {
    let r = Rig::new("oom", true);
    r.w().kernel = true;
    r.put(
        "m",
        spec(1, json!({"restart": {"startSecs": 0}, "maxMemoryMb": 10})),
    )
    .unwrap();
    let pid = r.pid("m");
    // The kernel enforces: a sample never ends the run, it reports the slot's use.
    lock(&r.sup).sample_memory(&[(pid, 99 << 20)].into());
    assert_eq!(r.state("m"), ProgramState::Running);
    assert_eq!(r.status("m").rss_bytes, 2 << 20);
    // A child ended by the OOM killer: told, the run goes on.
    r.w().ooms.insert(1, 1);
    lock(&r.sup).sample_memory(&HashMap::new());
    let s = r.status("m");
    assert_eq!(s.state, ProgramState::Running);
    assert!(s.message.unwrap().contains("ended a process"));
    // The program itself ended by it: a memory kill, restarted with backoff.
    r.w().ooms.insert(1, 2);
    r.exit(pid, Exit::Signal(Signal::SIGKILL));
    let s = r.status("m");
    assert_eq!(s.state, ProgramState::Backoff);
    let msg = s.message.unwrap();
    assert!(
        msg.contains("memory limit exceeded") && msg.contains("ended the program"),
        "{msg}"
    );
    assert!(msg.contains("10 MiB"), "{msg}");
    // A plain crash after it is not taken for another OOM.
    r.fire("m", Timer::Backoff);
    let pid = r.pid("m");
    r.exit(pid, Exit::Code(1));
    assert!(r.w().ended_users.contains(&10_001));
}

#[test]
fn memory_past_the_limit_stops_the_run_and_says_why() {
    let r = Rig::new("memory", false);
    r.put(
        "m",
        spec(0, json!({"restart": {"startSecs": 0}, "maxMemoryMb": 10})),
    )
    .unwrap();
    let pid = r.pid("m");
    let rss = [(pid, 9 << 20)].into();
    lock(&r.sup).sample_memory(&rss);
    assert_eq!(r.state("m"), ProgramState::Running);
    assert_eq!(r.status("m").rss_bytes, 9 << 20);
    let rss = [(pid, 11 << 20)].into();
    lock(&r.sup).sample_memory(&rss);
    let s = r.status("m");
    assert_eq!(s.state, ProgramState::Stopping);
    let msg = s.message.unwrap();
    assert!(msg.contains("memory limit exceeded"), "{msg}");
    assert!(msg.contains("first run"), "{msg}");
    let log = std::fs::read_to_string(r.dir.join("logs/m.log")).unwrap();
    assert!(log.contains("[slot-agent "), "{log}");
}

#[test]
fn a_spawn_error_is_a_failed_start() {
    let r = Rig::new("spawnerr", false);
    r.w().fail_spawn = true;
    r.put("e", spec(0, json!({}))).unwrap();
    let s = r.status("e");
    assert_eq!(s.state, ProgramState::Backoff);
    assert!(s.last_exit.is_some());
    assert!(r.w().held.contains(&9000), "the port went unheld");
    let log = std::fs::read_to_string(r.dir.join("logs/e.log")).unwrap();
    assert!(log.contains("cannot start: exec format error"), "{log}");
}

#[test]
fn delete_of_a_running_program_ends_its_user_and_clears_its_slot_once_it_exits() {
    let r = Rig::new("delete", true);
    r.put("d", spec(1, json!({"restart": {"startSecs": 0}})))
        .unwrap();
    let pid = r.pid("d");
    assert_eq!(r.w().spawns[0].uid, Some(10_001));
    lock(&r.sup).api_delete_begin("d", true).unwrap();
    assert!(lock(&r.sup).get("d").is_ok(), "gone before its run ended");
    assert!(!r.dir.join("programs/d.json").exists(), "spec kept on disk");
    // A PUT of the same id while it is being deleted is refused.
    assert!(matches!(
        r.put("d", spec(1, json!({}))),
        Err(SupervisorError::Conflict(_))
    ));
    r.exit(pid, Exit::Code(0));
    assert!(lock(&r.sup).get("d").is_err());
    let w = r.w();
    assert!(w.ended_users.contains(&10_001));
    assert_eq!(w.cleared, [Some(10_001)]);
    assert_eq!(w.purged, [r.dir.join("tenants").join("d")], "purged");
    assert!(w.held.contains(&9001));
    assert_eq!(w.spawns.len(), 1, "restarted on its way out");
}

#[test]
fn a_delete_without_purge_keeps_the_tenants_data_and_one_of_an_unknown_id_purges_it() {
    let r = Rig::new("keep", true);
    r.put("k", spec(2, json!({}))).unwrap();
    let pid = r.pid("k");
    lock(&r.sup).api_delete_begin("k", false).unwrap();
    r.exit(pid, Exit::Code(0));
    assert!(lock(&r.sup).get("k").is_err());
    assert!(r.w().purged.is_empty(), "a move's delete purged the data");
    // The tenant's DELETE after its program has gone (its pool died).
    assert!(lock(&r.sup).api_delete_begin("k", true).is_err());
    assert_eq!(r.w().purged, [r.dir.join("tenants").join("k")]);
}

#[test]
fn shutdown_stops_every_run_and_starts_nothing_more() {
    let r = Rig::new("shutdown", false);
    r.put("x", spec(0, json!({"restart": {"startSecs": 0}})))
        .unwrap();
    r.put("y", spec(1, json!({"restart": {"startSecs": 0}})))
        .unwrap();
    let (px, py) = (r.pid("x"), r.pid("y"));
    lock(&r.sup).begin_shutdown();
    assert_eq!(r.w().signals.len(), 2);
    assert!(matches!(
        lock(&r.sup).api_start("x"),
        Err(SupervisorError::ShuttingDown)
    ));
    r.exit(px, Exit::Code(0));
    r.exit(py, Exit::Signal(Signal::SIGTERM));
    assert!(lock(&r.sup).all_down());
    assert_eq!(r.state("x"), ProgramState::Stopped);
    assert_eq!(r.w().spawns.len(), 2);
}

#[test]
fn an_exit_of_a_process_that_is_not_a_program_changes_nothing() {
    let r = Rig::new("orphan", false);
    r.put("o", spec(0, json!({"restart": {"startSecs": 0}})))
        .unwrap();
    r.exit(4242, Exit::Code(0));
    assert_eq!(r.state("o"), ProgramState::Running);
    assert!(r.w().signals.is_empty());
}

#[test]
fn a_command_that_does_not_exist_is_refused_unless_the_program_waits_stopped() {
    let r = Rig::new("nocmd", false);
    let err = r
        .put("x", spec(0, json!({"command": "/no/such/program"})))
        .unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Invalid(m) if m.contains("/no/such/program does not exist")),
        "{err}"
    );
    let err = r
        .put("y", spec(0, json!({"command": "no-such-program-anywhere"})))
        .unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Invalid(m) if m.contains("not on the program's PATH")),
        "{err}"
    );
    assert!(lock(&r.sup).get("x").is_err(), "nothing was stored");
    // Placed stopped, its volumes may bring it; in a volume it is not looked for.
    let stopped: ProgramSpec =
        serde_json::from_value(spec(1, json!({"command": "/no/such/program"}))).unwrap();
    lock(&r.sup)
        .put_as("z", stopped, crate::store::RunGoal::Stopped)
        .unwrap();
    r.put(
        "v",
        spec(
            2,
            json!({"command": "/data/bin/app", "volumes": [{"path": "/data"}]}),
        ),
    )
    .unwrap();
}
