//! The life of runs: start (spawn through the host), exit (reaped), the
//! restart policy, stop with its SIGKILL timer, timers, pings, memory and
//! port policing. Every transition sets the program's `Phase` and tells
//! subscribers.

use super::*;

impl Supervisor {
    /// Reap every exited child (programs and orphans alike).
    pub fn reap(&mut self) {
        while let Some((pid, exit)) = self.host.reap_one() {
            self.on_exit(pid, exit);
        }
    }

    /// Sample memory per program: with slot cgroups the slot's use (the
    /// kernel enforces the limit; a process it ended for memory is told),
    /// else the resident memory of the program's group, ending a run past
    /// `maxMemoryMb`.
    pub fn sample_memory(&mut self, rss_by_group: &HashMap<i32, u64>) {
        if self.host.kernel_limits() {
            let mut ooms = Vec::new();
            for (id, p) in self.programs.iter_mut() {
                let Phase::Up(run) = &mut p.phase else {
                    p.rss = 0;
                    continue;
                };
                p.rss = self.host.slot_memory(p.slot).unwrap_or(0);
                let now = self.host.oom_kills(p.slot);
                if now > run.ooms {
                    run.ooms = now;
                    ooms.push(id.clone());
                }
            }
            for id in ooms {
                let msg = self.oom_message(&id, false);
                self.note(&id, &msg);
            }
            return;
        }
        let mut over = Vec::new();
        for (id, p) in self.programs.iter_mut() {
            p.rss = p
                .pid()
                .and_then(|pid| rss_by_group.get(&pid).copied())
                .unwrap_or(0);
            if let Some(mb) = p.spec.max_memory_mb {
                if p.pid().is_some() && !p.stopping() && p.rss > mb * 1024 * 1024 {
                    over.push(id.clone());
                }
            }
        }
        for id in over {
            let p = self.programs.get_mut(&id).expect("present");
            let (rss, limit) = (p.rss >> 20, p.spec.max_memory_mb.unwrap_or_default());
            let first = p.memory_too_small();
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
            p.tell(memory_problem(first), &msg);
            self.note(&id, &msg);
            self.stop(&id, Kill::Memory);
        }
    }

    /// Sample CPU use per program: the slot cgroup's CPU time with the
    /// sandbox, else the program's process group's (`usec_by_group`), as
    /// millicores over the time since the run's previous sample.
    pub fn sample_cpu(&mut self, usec_by_group: &HashMap<i32, u64>, now: Instant) {
        let kernel = self.host.kernel_limits();
        for p in self.programs.values_mut() {
            let slot = p.slot;
            let Phase::Up(run) = &mut p.phase else {
                p.cpu_millis = 0;
                continue;
            };
            let used = if kernel {
                self.host.slot_cpu_usec(slot)
            } else {
                usec_by_group.get(&run.pid).copied()
            };
            let Some(used) = used else { continue };
            if let Some((then, before)) = run.cpu_seen {
                p.cpu_millis = cpu_millis(before, used, now.saturating_duration_since(then));
            }
            run.cpu_seen = Some((now, used));
        }
    }

    /// Each program's data folder (HOME and volumes), for [`Self::set_disk`].
    pub fn data_dirs(&self) -> Vec<(String, std::path::PathBuf)> {
        self.programs
            .keys()
            .map(|id| (id.clone(), self.settings.data.dir(id)))
            .collect()
    }

    /// Record the sizes of programs' data folders (walked off the lock).
    pub fn set_disk(&mut self, sizes: Vec<(String, u64)>) {
        for (id, bytes) in sizes {
            if let Some(p) = self.programs.get_mut(&id) {
                p.disk_bytes = bytes;
            }
        }
    }

    /// The message of a kernel OOM kill in `id`'s slot (`ended`: it ended
    /// the run), kept as the program's message.
    fn oom_message(&mut self, id: &str, ended: bool) -> String {
        let p = self.programs.get_mut(id).expect("present");
        let limit = p.spec.max_memory_mb.unwrap_or_default();
        let first = p.memory_too_small();
        let what = if ended {
            "ended the program"
        } else {
            "ended a process of the program"
        };
        let msg = if first {
            format!(
                "memory limit exceeded: the kernel {what} at the slot's limit of {limit} MiB \
                 (shared memory and temp files count) {FIRST_RUN}: the limit is too small \
                 for this program (raise resources.memoryMb)"
            )
        } else {
            format!(
                "memory limit exceeded: the kernel {what} at the slot's limit of {limit} MiB \
                 (shared memory and temp files count)"
            )
        };
        p.tell(memory_problem(first), &msg);
        msg
    }

    pub(super) fn restart_now(&mut self, id: &str) {
        let Some(p) = self.programs.get_mut(id) else {
            return;
        };
        if p.pid().is_some() {
            self.stop(id, Kill::Restart);
        } else {
            p.gen += 1;
            // Any run before (it ended, or failed to spawn) sets last_exit.
            if p.last_exit.is_some() {
                p.restarts += 1;
            }
            self.start(id);
        }
    }

    /// Spawn a run of `id` now. A spawn error counts as a failed start.
    pub(super) fn start(&mut self, id: &str) {
        if self.shutting_down {
            return;
        }
        if self.programs.get(id).is_none_or(|p| p.pid().is_some()) {
            return;
        }
        let spawned = self.spawn(id);
        let Some(p) = self.programs.get_mut(id) else {
            return;
        };
        p.gen += 1;
        let gen = p.gen;
        match spawned {
            Ok(pid) => {
                let start_secs = p.pacing.start_secs;
                let ooms = self.host.oom_kills(p.slot);
                p.phase = Phase::Up(Run {
                    pid,
                    ooms,
                    since: Instant::now(),
                    since_wall: SystemTime::now(),
                    stage: if start_secs.is_zero() {
                        Stage::Running
                    } else {
                        Stage::Starting
                    },
                    ping_failures: 0,
                    ping_ok_seen: false,
                    cpu_seen: None,
                });
                self.by_pid.insert(pid, id.to_string());
                let start_ticks = self.host.start_ticks(pid);
                if let Err(e) = self.store.save_pid(id, pid, start_ticks) {
                    eprintln!("slot-agent: {id}: noting pid: {e}");
                }
                self.emit(id);
                if !start_secs.is_zero() {
                    self.schedule(id, gen, start_secs, Timer::StartSecs);
                }
                self.spawn_ping_loop(id);
            }
            Err(e) => {
                p.last_exit = Some(LastExit {
                    code: None,
                    signal: None,
                    at: now_rfc3339(),
                });
                self.note(id, &format!("cannot start: {e}"));
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
    pub(super) fn slot_busy(&self, slot: u32) -> bool {
        self.programs
            .values()
            .any(|p| p.slot == slot && p.pid().is_some())
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
                    self.host.end_slot(thief, uid);
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
    pub(super) fn program_in(&self, slot: u32) -> Option<String> {
        self.programs
            .iter()
            .find(|(_, p)| p.slot == slot)
            .map(|(id, _)| id.clone())
    }

    /// The uid of `slot`'s programs, when slots run under their own uids.
    pub(super) fn slot_uid(&self, slot: u32) -> Option<u32> {
        self.settings.uid_base.map(|b| b + slot)
    }

    pub(super) fn spawn(&mut self, id: &str) -> io::Result<i32> {
        let uid = self.programs.get(id).and_then(|p| self.slot_uid(p.slot));
        let p = &self.programs[id];
        let s = &self.settings;
        let home = s.data.home(id);
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
        // Later entries win: the spec over the base, the slot's own last.
        let mut env = s.base_env.clone();
        env.extend(p.spec.env.iter().map(|(k, v)| (k.clone(), fill(v))));
        env.extend([
            ("HOME".to_string(), home_s.clone()),
            ("PORT".to_string(), port.clone()),
            ("SLOT".to_string(), slot.clone()),
            ("TENANT_ID".to_string(), id.to_string()),
            ("HOST".to_string(), s.program_host.clone()),
        ]);
        let launch = Launch {
            id,
            command: &p.spec.command,
            args: p.spec.args.iter().map(fill).collect(),
            env,
            working_dir: p
                .spec
                .working_dir
                .as_ref()
                .map_or_else(|| home.clone(), PathBuf::from),
            home,
            data: s.data.clone(),
            volumes: s.data.volumes(id, &p.spec.volumes),
            uid,
            slot: p.slot,
            port: p.port,
            memory_mb: p.spec.max_memory_mb,
            cpu_millis: p.spec.cpu_millis,
            tmp_mb: p.spec.disk_mb.unwrap_or(crate::sandbox::DEFAULT_TMP_MB),
            max_procs: s.max_procs,
            log: p.log.clone(),
        };
        let port = p.port;
        self.host.release_port(port);
        let spawned = self.host.spawn(launch);
        if spawned.is_err() {
            self.host.hold_port(port);
        }
        spawned
    }

    pub(super) fn on_exit(&mut self, pid: i32, exit: Exit) {
        let Some(id) = self.by_pid.remove(&pid) else {
            return; // an orphan that was re-parented to us: reaped, nothing else
        };
        // Whatever the program left in its process group goes with it, and
        // with isolation every process of its slot user (setsid escapes too).
        self.host.signal_group(pid, Signal::SIGKILL);
        // (While the agent shuts down, one sweep of all slot users at the
        // end does it.)
        let slot = self.programs.get(&id).map(|p| p.slot);
        if let Some((slot, uid)) = slot.and_then(|s| Some((s, self.slot_uid(s)?))) {
            if !self.shutting_down {
                self.host.end_slot(slot, uid);
            }
        }
        if let Some(port) = self.programs.get(&id).map(|p| p.port) {
            self.host.hold_port(port);
        }
        if let Err(e) = self.store.clear_pid(&id) {
            eprintln!("slot-agent: {id}: clearing pid: {e}");
        }
        let Some(p) = self.programs.get_mut(&id) else {
            return;
        };
        // Every branch below settles the state (and tells it).
        let run = match std::mem::replace(&mut p.phase, Phase::Down(ProgramState::Stopped)) {
            Phase::Up(r) => Some(r),
            Phase::Down(_) => None,
        };
        p.gen += 1;
        p.rss = 0;
        let (code, signal) = match exit {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(s.as_str().trim_start_matches("SIG").to_string())),
        };
        p.last_exit = Some(LastExit {
            code,
            signal,
            at: now_rfc3339(),
        });
        let uptime = run.as_ref().map_or(Duration::ZERO, |r| r.since.elapsed());
        let ooms_before = run.as_ref().map_or(0, |r| r.ooms);
        let mut kill = run.and_then(|r| match r.stage {
            Stage::Stopping(k) => Some(k),
            _ => None,
        });
        if p.deleting {
            self.go_down(&id, ProgramState::Stopped);
            self.api_delete_finish(&id);
            return;
        }
        if self.shutting_down || p.desired == RunGoal::Stopped {
            self.go_down(&id, ProgramState::Stopped);
            return;
        }
        // The kernel ended it for memory: say so, and pace it as a kill.
        if kill.is_none() && slot.is_some_and(|s| self.host.oom_kills(s) > ooms_before) {
            let msg = self.oom_message(&id, true);
            self.note(&id, &msg);
            kill = Some(Kill::Memory);
        }
        match kill {
            Some(Kill::Stop) | Some(Kill::Shutdown) => self.go_down(&id, ProgramState::Stopped),
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

    pub(super) fn apply_policy(&mut self, id: &str, end: RunEnd) {
        let p = self.programs.get_mut(id).expect("present");
        if end.started_ok(&p.pacing) {
            p.clear_problem(); // a good run: whatever went wrong is over
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
                    self.go_down(id, ProgramState::Backoff);
                    self.schedule(id, gen, delay, Timer::Backoff);
                }
            }
            Decision::Cooldown(d) => {
                p.failed_starts = p.pacing.max_attempts;
                self.go_down(id, ProgramState::Cooldown);
                self.schedule(id, gen, d, Timer::Cooldown);
            }
            Decision::Exited => self.go_down(id, ProgramState::Exited),
            Decision::Fatal => self.go_down(id, ProgramState::Fatal),
        }
    }

    /// Send the stop signal to the group of `id` and arm the SIGKILL timer.
    pub(super) fn stop(&mut self, id: &str, why: Kill) {
        let Some(p) = self.programs.get_mut(id) else {
            return;
        };
        let Phase::Up(run) = &mut p.phase else {
            // Nothing runs: cancel any pending backoff/cooldown start.
            p.gen += 1;
            let state = p.state();
            if why == Kill::Restart {
                p.restarts += 1;
                self.start(id);
            } else if !matches!(state, ProgramState::Exited | ProgramState::Fatal)
                || why == Kill::Stop
            {
                self.go_down(id, ProgramState::Stopped);
            }
            return;
        };
        if matches!(run.stage, Stage::Stopping(_)) && why != Kill::Shutdown && why != Kill::Stop {
            return; // already being stopped
        }
        run.stage = Stage::Stopping(why);
        let pid = run.pid;
        let sig = signal_of(p.spec.stop.signal);
        let (gen, timeout) = (p.gen, Duration::from_millis(p.spec.stop.timeout_ms));
        self.host.signal_group(pid, sig);
        self.emit(id);
        self.schedule(id, gen, timeout, Timer::StopTimeout);
    }

    /// A timer of run `gen` is due (nothing happens if the run moved on).
    pub fn on_timer(&mut self, id: &str, gen: u64, timer: Timer) {
        let Some(p) = self.programs.get_mut(id) else {
            return;
        };
        if p.gen != gen {
            return;
        }
        match timer {
            Timer::StartSecs => {
                // The failure count is settled when the run ends (policy).
                if let Phase::Up(r) = &mut p.phase {
                    if r.stage == Stage::Starting {
                        r.stage = Stage::Running;
                        self.emit(id);
                    }
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
                if let Some(pid) = p.pid() {
                    self.host.signal_group(pid, Signal::SIGKILL);
                }
            }
        }
    }

    /// Record a ping of run `gen`; returns when to ping next (None: the run
    /// is over). Until a run's first good ping, and only within its grace
    /// (initial delay + one interval), failures do not count and pings come
    /// every 250 ms at most, so a program that binds its port a moment after
    /// it starts is neither reported unhealthy for a whole interval nor killed.
    pub fn on_ping(
        &mut self,
        id: &str,
        gen: u64,
        r: PingResult,
        interval: Duration,
    ) -> Option<Duration> {
        let p = self.programs.get_mut(id)?;
        if p.gen != gen {
            return None;
        }
        let Phase::Up(run) = &mut p.phase else {
            return None;
        };
        let cfg = p.spec.ping.as_ref()?;
        p.last_ping = Some(LastPing {
            ok: r.ok,
            latency_ms: r.latency.as_secs_f64() * 1000.0,
            at: now_rfc3339(),
        });
        if r.ok {
            run.ping_failures = 0;
            run.ping_ok_seen = true;
            return Some(interval);
        }
        let grace = Duration::from_millis(cfg.initial_delay_ms) + interval;
        if !run.ping_ok_seen && run.since.elapsed() < grace {
            return Some(interval.min(Duration::from_millis(250)));
        }
        run.ping_failures += 1;
        let n = run.ping_failures;
        if n >= cfg.failure_threshold && !matches!(run.stage, Stage::Stopping(_)) {
            self.note(id, &format!("{n} failed pings in a row: restarting"));
            self.stop(id, Kill::Unhealthy);
        }
        Some(interval)
    }

    /// Put a program with no process into `state`, and tell it.
    pub(super) fn go_down(&mut self, id: &str, state: ProgramState) {
        if let Some(p) = self.programs.get_mut(id) {
            debug_assert!(p.pid().is_none(), "{id} goes down while its process runs");
            p.phase = Phase::Down(state);
            self.emit(id);
        }
    }

    /// Tell subscribers the state of `id`.
    pub(super) fn emit(&self, id: &str) {
        let Some(p) = self.programs.get(id) else {
            return;
        };
        let _ = self.events.send(StateEvent {
            id: id.to_string(),
            state: p.state(),
            pid: p.pid().map(|x| x as u32),
            restarts: p.restarts,
            at: now_rfc3339(),
        });
    }

    /// Write an agent line into the program's log.
    pub(super) fn note(&self, id: &str, msg: &str) {
        if let Some(p) = self.programs.get(id) {
            let line = format!("[slot-agent {}] {msg}\n", now_rfc3339());
            let _ = lock_log(&p.log).write(line.as_bytes());
        }
    }

    pub(super) fn schedule(&mut self, id: &str, gen: u64, after: Duration, timer: Timer) {
        self.host
            .schedule(self.handle.clone(), id, gen, after, timer);
    }

    pub(super) fn spawn_ping_loop(&mut self, id: &str) {
        let p = &self.programs[id];
        let Some(spec) = p.spec.ping.clone() else {
            return;
        };
        let s = &self.settings;
        let plan = PingPlan {
            interval: spec
                .interval_ms
                .map_or(s.ping_interval, Duration::from_millis),
            timeout: spec
                .timeout_ms
                .map_or(s.ping_timeout, Duration::from_millis),
            addr: SocketAddr::from(([127, 0, 0, 1], p.port)),
            uid: self.slot_uid(p.slot),
            spec,
        };
        let gen = p.gen;
        self.host.ping_loop(self.handle.clone(), id, gen, plan);
    }
}

/// The problem of a memory kill (`too_small`: in the first run).
fn memory_problem(too_small: bool) -> slotpack_proto::protocol::Problem {
    if too_small {
        slotpack_proto::protocol::Problem::MemoryLimitTooSmall
    } else {
        slotpack_proto::protocol::Problem::MemoryLimit
    }
}

/// CPU use in millicores: `before` → `after` µs of CPU time over `elapsed`
/// of wall time (1000 = one core busy). Pure.
pub fn cpu_millis(before: u64, after: u64, elapsed: Duration) -> u64 {
    let wall = elapsed.as_micros().max(1) as u64;
    after.saturating_sub(before).saturating_mul(1000) / wall
}
