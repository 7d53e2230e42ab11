//! What the API and start-up ask of the supervisor: accept or refuse a
//! spec, create, start, stop, restart and delete programs, and shut down.
//! Each request changes the stored spec first, then the runs (see `runs`).

use super::*;

impl Supervisor {
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
        if !spec.volumes.is_empty() {
            if !self.host.private_mounts() {
                return bad(
                    "volumes need private mounts per slot (an agent as root with \
                     CAP_SYS_ADMIN); this agent has none"
                        .into(),
                );
            }
            let own = [self.settings.data.root(), self.settings.logs_dir.as_path()];
            if let Some(v) = spec.volumes.iter().find(|v| {
                own.iter()
                    .any(|d| Path::new(&v.path).starts_with(d) || d.starts_with(&v.path))
            }) {
                return bad(format!(
                    "volume path {:?} lies on the agent's own folders",
                    v.path
                ));
            }
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

    /// Create or replace `id`, to run; returns whether it was created.
    pub fn put(&mut self, id: &str, spec: ProgramSpec) -> Result<bool, SupervisorError> {
        self.put_as(id, spec, RunGoal::Running)
    }

    /// A program to run now must name a command that exists: a missing one
    /// is refused, not found out by a restart loop. One inside the tenant's
    /// own volumes is looked for by its program only (a stopped create
    /// fills them first).
    fn command_exists(&self, spec: &ProgramSpec) -> Result<(), SupervisorError> {
        let in_volume = spec
            .volumes
            .iter()
            .any(|v| Path::new(&spec.command).starts_with(&v.path));
        let relative = !spec.command.starts_with('/') && spec.command.contains('/');
        if in_volume || relative {
            return Ok(());
        }
        let path = self.program_path(spec);
        match crate::access::resolve(&spec.command, path) {
            Some(f) if f.is_file() => Ok(()),
            Some(f) => Err(SupervisorError::Invalid(format!(
                "command {} does not exist{}",
                f.display(),
                self.where_commands_are()
            ))),
            None => Err(SupervisorError::Invalid(format!(
                "command {} is not on the program's PATH ({path}){}",
                spec.command,
                self.where_commands_are()
            ))),
        }
    }

    /// Where this agent's programs run, for a refusal's words.
    fn where_commands_are(&self) -> &'static str {
        if std::path::Path::new("/.dockerenv").exists() {
            " in the pool's image"
        } else {
            " on this host (the local backend runs programs on the orchestrator's host)"
        }
    }

    /// Create or replace `id` with `goal`: a new program wanted stopped is
    /// only stored (its data can be filled first), one wanted running
    /// starts, a changed one restarts (or stays down when stopped).
    pub fn put_as(
        &mut self,
        id: &str,
        mut spec: ProgramSpec,
        goal: RunGoal,
    ) -> Result<bool, SupervisorError> {
        self.refuse_if_shutting_down()?;
        self.validate(id, &mut spec)?;
        if goal == RunGoal::Running {
            self.command_exists(&spec)?;
        }
        if let Some(uid) = spec.slot.and_then(|s| self.slot_uid(s)) {
            // A command the slot's user cannot reach or run is refused now,
            // not found out by a restart loop.
            let path = self.program_path(&spec);
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
                desired: goal,
            },
        )?;
        let slot = spec.slot.unwrap_or_default();
        let port = spec.port.unwrap_or_default();
        let pacing = self.pacing(&spec);
        if let Some(p) = self.programs.get_mut(id) {
            p.clear_problem();
            p.spec = spec;
            p.slot = slot;
            p.port = port;
            p.pacing = pacing;
            p.desired = goal;
            if goal == RunGoal::Running {
                self.restart_now(id);
            } else {
                self.stop(id, Kill::Stop);
            }
            return Ok(false);
        }
        self.insert(id, spec, goal)?;
        if goal == RunGoal::Running {
            self.start(id);
        }
        Ok(true)
    }

    /// Add a loaded or new program without starting it.
    pub fn insert(
        &mut self,
        id: &str,
        spec: ProgramSpec,
        desired: RunGoal,
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
                phase: Phase::Down(ProgramState::Stopped),
                gen: 0,
                restarts: 0,
                failed_starts: 0,
                last_exit: None,
                last_ping: None,
                deleting: false,
                purge: false,
                message: None,
                problem: None,
                rss: 0,
                cpu_millis: 0,
                disk_bytes: 0,
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
            .filter(|(_, p)| p.desired == RunGoal::Running)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.start(&id);
        }
    }

    /// API start: mark desired running and start unless a run is under way.
    pub fn api_start(&mut self, id: &str) -> Result<(), SupervisorError> {
        self.refuse_if_shutting_down()?;
        self.set_desired(id, RunGoal::Running)?;
        let p = self.program_mut(id)?;
        if p.pid().is_none() {
            p.gen += 1; // cancel backoff/cooldown timers
            p.failed_starts = 0;
            self.start(id);
        }
        Ok(())
    }

    /// API stop: mark desired stopped (kept across agent restarts) and stop.
    pub fn api_stop(&mut self, id: &str) -> Result<(), SupervisorError> {
        self.set_desired(id, RunGoal::Stopped)?;
        self.stop(id, Kill::Stop);
        Ok(())
    }

    /// API restart: desired running, end the current run, start again at once.
    pub fn api_restart(&mut self, id: &str) -> Result<(), SupervisorError> {
        self.refuse_if_shutting_down()?;
        self.set_desired(id, RunGoal::Running)?;
        self.program_mut(id)?.failed_starts = 0;
        self.restart_now(id);
        Ok(())
    }

    /// What an import into (`for_import`: the program must be down) or an
    /// export of tenant `id`'s volume at `path` needs: where its data is,
    /// and its slot user.
    pub fn volume_access(
        &self,
        id: &str,
        path: &str,
        for_import: bool,
    ) -> Result<(crate::tenant_data::TenantData, Option<u32>), SupervisorError> {
        let p = self
            .programs
            .get(id)
            .ok_or_else(|| SupervisorError::NotFound(format!("no program {id}")))?;
        if !p.spec.volumes.iter().any(|v| v.path == path) {
            return Err(SupervisorError::NotFound(format!(
                "program {id} has no volume {path:?}"
            )));
        }
        if for_import && (p.pid().is_some() || p.desired == RunGoal::Running) {
            return Err(SupervisorError::Conflict(format!(
                "stop {id} before filling its volume {path}"
            )));
        }
        Ok((self.settings.data.clone(), self.slot_uid(p.slot)))
    }

    /// API delete, first half: forget the spec on disk and begin the stop;
    /// the program is dropped once its run has ended (at once if none runs).
    /// With `purge` its tenant's data (home, volumes) goes too; without, it
    /// is kept for the tenant's next slot. An unknown id with `purge` still
    /// purges what data it left, and answers not found.
    pub fn api_delete_begin(&mut self, id: &str, purge: bool) -> Result<(), SupervisorError> {
        if purge && !self.programs.contains_key(id) {
            self.host.purge_data(&self.settings.data.dir(id));
        }
        self.program_mut(id)?;
        self.store.remove(id)?;
        let p = self.program_mut(id)?;
        p.desired = RunGoal::Stopped;
        p.deleting = true;
        p.purge |= purge;
        self.stop(id, Kill::Stop);
        if self.is_down(id) {
            self.api_delete_finish(id);
        }
        Ok(())
    }

    /// API delete, second half (after the run ended, or its stop timed out):
    /// drop state and logs, and with a purge its tenant's data. Nothing
    /// happens if it is gone already.
    pub fn api_delete_finish(&mut self, id: &str) {
        let Some(p) = self.programs.remove(id) else {
            return;
        };
        if let Some(pid) = p.pid() {
            // It did not stop in time: end it hard and forget it.
            self.by_pid.remove(&pid);
            self.host.signal_group(pid, Signal::SIGKILL);
            if let Err(e) = self.store.clear_pid(id) {
                eprintln!("slot-agent: {id}: clearing pid: {e}");
            }
        }
        // The next tenant of this slot gets the same uid: nothing of this
        // one may be left for it to find.
        let uid = self.slot_uid(p.slot);
        if let Some(uid) = uid {
            self.host.end_slot(p.slot, uid);
        }
        self.host.clear_slot(uid);
        if p.purge {
            self.host.purge_data(&self.settings.data.dir(id));
        }
        if !self.slot_busy(p.slot) {
            self.host.hold_port(p.port);
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

    /// Begin the agent's exit: stop every program, start nothing any more.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        let ids: Vec<String> = self.programs.keys().cloned().collect();
        for id in ids {
            self.stop(&id, Kill::Shutdown);
        }
    }

    /// The `PATH` `spec`'s program runs with: its own, else the base one.
    fn program_path<'a>(&'a self, spec: &'a ProgramSpec) -> &'a str {
        spec.env
            .get("PATH")
            .map_or_else(|| self.base_path(), String::as_str)
    }

    /// `PATH` of programs whose spec sets none.
    pub(super) fn base_path(&self) -> &str {
        let env = &self.settings.base_env;
        env.iter()
            .find(|(k, _)| k == "PATH")
            .map_or(crate::program_env::DEFAULT_PATH, |(_, v)| v.as_str())
    }

    pub(super) fn refuse_if_shutting_down(&self) -> Result<(), SupervisorError> {
        if self.shutting_down {
            Err(SupervisorError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    pub(super) fn program_mut(&mut self, id: &str) -> Result<&mut Program, SupervisorError> {
        self.programs
            .get_mut(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_string()))
    }

    pub(super) fn set_desired(
        &mut self,
        id: &str,
        desired: RunGoal,
    ) -> Result<(), SupervisorError> {
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

    pub(super) fn pacing(&self, spec: &ProgramSpec) -> Pacing {
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
}
