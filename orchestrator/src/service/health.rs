//! The health tick: agent health per pool (restart, then evacuation),
//! reconciliation in two phases (stops before starts), and the steps
//! that apply it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::*;
use crate::agents::Endpoint;
use crate::db::{PoolRow, TenantRow};
use crate::ledger::Moved;
use crate::placement::Request;
use crate::reconcile::{plan, Action};
use crate::states::{Desired, PoolState};
use slotpack_proto::protocol::{ProgramAction, TenantId};

impl Orchestrator {
    /// One health tick: check every agent, restart dead pools, reconcile
    /// every pool, expire tenants past their lifetime, remove pools the
    /// database does not know, consolidate (if enabled), keep warm slots.
    pub async fn health_tick(&self) -> HealthReport {
        let _one_at_a_time = self.tick_lock.lock().await;
        let started = Instant::now();
        let mut r = HealthReport {
            success: true,
            timestamp: slotpack_proto::clock::now_rfc3339(),
            pools: vec![],
            bots: vec![],
            issues: vec![],
            recovery_actions: vec![],
            duration_ms: 0,
        };
        let healthy = match self.tick_into(&mut r).await {
            Ok(h) => h,
            Err(e) => {
                r.issues.push(format!("health tick failed: {e}"));
                Default::default()
            }
        };
        if self.cfg.consolidate && self.cfg.pool_mode_enabled {
            if let Err(e) = self.consolidate(&mut r, &healthy).await {
                r.issues.push(format!("consolidation: {e}"));
            }
        }
        self.keep_warm().await;
        r.duration_ms = started.elapsed().as_millis() as u64;
        self.metrics.health_ticks.inc();
        self.metrics
            .recovery_actions
            .inc_by(r.recovery_actions.len() as u64);
        for a in &r.recovery_actions {
            let _ = self.db.event("recovery", None, None, a);
        }
        *self.last_health.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
        r
    }

    /// The tick but for consolidation and warm slots; returns the pools
    /// whose agents answered.
    pub(super) async fn tick_into(
        &self,
        r: &mut HealthReport,
    ) -> Result<std::collections::HashSet<crate::db::PoolId>> {
        // Pools the backend runs that the database does not know.
        let (removed, failed) = self.sweep_orphans().await?;
        for f in &removed {
            r.issues
                .push(format!("orphaned pool {f} (not in the database)"));
            r.recovery_actions
                .push(format!("removed orphaned pool {f}"));
        }
        for (f, e) in &failed {
            r.issues
                .push(format!("orphaned pool {f} (not in the database)"));
            r.issues.push(format!("removing orphaned pool {f}: {e}"));
        }
        // Nodes first: a pool whose node is lost or drained moves below.
        if let Err(e) = self.backend.refresh_nodes().await {
            r.issues.push(format!("listing the cluster's nodes: {e}"));
        }
        // A `starting` pool belongs to whoever starts it (a create or the
        // warm refill; after a crash, start-up recovery): left alone here.
        let pools: Vec<PoolRow> = self
            .db
            .pools()?
            .into_iter()
            .filter(|p| p.status != PoolState::Starting)
            .collect();
        let observed =
            futures_util::future::join_all(pools.iter().map(|p| self.observe_pool(p))).await;
        // Observe first, then read desired, once for every pool: a program
        // on an agent always has its row committed before it was PUT, so no
        // tenant created meanwhile is mistaken for an orphan.
        let tenants = self.db.tenants()?;
        let grouped = by_pool(&tenants);
        let mut checks: Vec<PoolCheck> = observed
            .into_iter()
            .map(|o| {
                let rows = tenants_of(&grouped, o.pool.number);
                self.plan_pool(o, rows)
            })
            .collect();
        let healthy = checks
            .iter()
            .filter(|c| c.health.healthy)
            .map(|c| c.pool)
            .collect();
        for c in &mut checks {
            r.pools.push(c.health.clone());
            r.bots.append(&mut c.bots);
            r.issues.append(&mut c.issues);
            r.recovery_actions.append(&mut c.actions);
        }
        // Everything that stops or removes, in every pool, before anything
        // that starts: a tenant moved between pools never runs in both. A
        // stop only begins (the tick never waits for one), so a tenant whose
        // old copy is not yet down is started by a later tick.
        let mut not_down = std::collections::HashSet::new();
        for starts in [false, true] {
            let applied = checks.iter().map(|c| self.apply_all(c, starts, &not_down));
            let mut next = Vec::new();
            for (issues, actions, up) in futures_util::future::join_all(applied).await {
                r.issues.extend(issues);
                r.recovery_actions.extend(actions);
                next.extend(up);
            }
            not_down.extend(next);
        }
        self.followup.store(!not_down.is_empty(), Relaxed);
        // Lifetimes: the deletion begins here; a tenant still stopping is
        // forgotten by a later tick's reconciliation (the tick never waits).
        // The rows read above: one whose deletion began meanwhile (by the
        // API or a step above) is not marked again.
        let now = unix_now();
        for t in &tenants {
            if t.expires_at.is_some_and(|e| e <= now) && t.desired != Desired::Deleting {
                if !self.mark_deleting(&t.id).await? {
                    continue;
                }
                let why = "maxLifetimeSeconds reached";
                let pool = self.pool_of(t)?;
                match self.agents.begin_delete(&self.endpoint(&pool), &t.id).await {
                    Ok(gone) => {
                        if gone {
                            self.forget_tenant(&t.id, why).await?;
                        }
                        r.recovery_actions
                            .push(format!("removing {} at the end of its lifetime", t.id));
                    }
                    Err(e) => r.issues.push(format!("expiring {}: {e}", t.id)),
                }
            }
        }
        Ok(healthy)
    }

    /// Whether `pool` must leave its node (a cluster backend's node that is
    /// gone, down or drained): the node and why.
    pub(super) fn must_leave(&self, pool: &PoolRow) -> Option<(String, &'static str)> {
        let nodes = self.backend.nodes()?;
        let node = pool.node.clone()?;
        let placed = [crate::nodes::Placed {
            pool: pool.number,
            node: node.clone(),
            memory_mb: pool.memory_mb,
            cpu_millis: pool.cpu_millis,
        }];
        crate::nodes::must_leave(&nodes, &placed)
            .first()
            .map(|(_, why)| match why {
                crate::nodes::Leave::Lost => (node.clone(), "lost or down"),
                crate::nodes::Leave::Drained => (node.clone(), "drained"),
            })
    }

    /// Count a restart of `pool`: a success resets, a failure adds one;
    /// returns the failures in a row.
    pub(super) fn note_restart(&self, pool: u64, ok: bool) -> u32 {
        let mut m = self
            .restart_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if ok {
            m.remove(&pool);
            0
        } else {
            let n = m.entry(pool).or_insert(0);
            *n += 1;
            *n
        }
    }

    /// Move every tenant of a pool that cannot be brought back to other
    /// pools (or a new one), then remove the pool. Returns the moved ids.
    pub(super) async fn evacuate(&self, dead: &PoolRow, why: &str) -> Result<Vec<String>> {
        let why = why.to_string();
        let mut moved = Vec::new();
        let mut held = self.ledger.lock().await;
        held.close_pool(dead.number)?;
        let ids: Vec<TenantId> = self
            .db
            .pool_tenants(dead.number)?
            .into_iter()
            .map(|t| t.id)
            .collect();
        for id in ids {
            // Read under the lock: a new pool's start below lets it go, and
            // the tenant may have been deleted meanwhile.
            let Some(t) = self.db.tenant(&id)?.filter(|t| t.pool == dead.number) else {
                continue;
            };
            if t.desired == Desired::Deleting {
                held.forget_tenant(&t.id, &why)?;
                continue;
            }
            let want = Request {
                memory_mb: t.memory_mb,
                cpu_millis: t.cpu_millis,
                class: t.spec.pool_class.clone(),
            };
            let (again, prow, slot) = self.choose_slot(held, &want).await?;
            held = again;
            // The ledger checks the row once more, now that the lock may
            // have been let go: a deletion begun meanwhile is finished here
            // (its pool is going), never moved along.
            match held.move_tenant(&id, dead.number, &prow, slot, &why)? {
                Moved::Done(t) => moved.push((t.id, t.spec, prow, slot, t.port, t.desired)),
                Moved::Deleting(t) => {
                    held.forget_tenant(&t.id, &why)?;
                }
                Moved::Elsewhere => {}
            }
        }
        drop(held);
        // Committed: a failed PUT below is retried by the next reconciliation.
        for (id, spec, prow, slot, port, desired) in &moved {
            let ep = self.endpoint(prow);
            if let Err(e) = self.agents.put(&ep, id, &spec.program(*slot, *port)).await {
                tracing::warn!(tenant = %id, pool = %prow.id(), error = %e, "put to its agent failed");
            } else if *desired == Desired::Stopped {
                let _ = self
                    .agents
                    .action(&ep, id, ProgramAction::Stop, Duration::from_secs(12))
                    .await;
            }
        }
        self.remove_pool(dead, &why).await?;
        self.note_restart(dead.number, true);
        Ok(moved.into_iter().map(|m| m.0.into()).collect())
    }

    /// Phase one of a pool's check: agent health (restart the pool if its
    /// process is gone, move its tenants away once restarts keep failing),
    /// then the programs its agent runs.
    pub(super) async fn observe_pool(&self, pool: &PoolRow) -> Observed {
        let (mut issues, mut actions) = (vec![], vec![]);
        let ep = self.endpoint(pool);
        let id = pool.id().to_string();
        if let Some((node, why)) = self.must_leave(pool) {
            let why = format!("its node {node} is {why}");
            issues.push(format!("{id}: {why}"));
            match self.evacuate(pool, &why).await {
                Ok(moved) => actions.push(format!(
                    "{id}: {why}: moved {} to other pools and removed {id}",
                    if moved.is_empty() {
                        "no tenants".to_string()
                    } else {
                        moved.join(", ")
                    }
                )),
                Err(e) => issues.push(format!("{id}: moving its tenants: {e}")),
            }
            return Observed {
                health: PoolHealth {
                    id,
                    healthy: false,
                    latency_ms: None,
                },
                pool: pool.clone(),
                programs: None,
                issues,
                actions,
            };
        }
        let t0 = Instant::now();
        let mut health = self.agents.health(&ep).await;
        if let Err(e) = &health {
            issues.push(format!("{id}: agent unreachable: {e}"));
            if !self.backend.pool_running(&pool.spec()).await {
                match self.backend.start_pool(&pool.spec()).await {
                    Ok(r) => {
                        self.note_restart(pool.number, true);
                        // The ledger's index follows: it takes tenants again.
                        let _ = self.ledger.lock().await.set_pool_status(
                            pool.number,
                            PoolState::Running,
                            Some(&r),
                        );
                        actions.push(format!(
                            "restarted {id}; its tenants come back from its state"
                        ));
                        health = self.agents.health(&ep).await;
                    }
                    Err(e) => {
                        let failures = self.note_restart(pool.number, false);
                        // No create lands on it while it is down.
                        let _ = self.ledger.lock().await.set_pool_status(
                            pool.number,
                            PoolState::Failed,
                            None,
                        );
                        issues.push(format!("{id}: restart {failures} failed: {e}"));
                        if failures >= self.cfg.max_restart_attempts.max(1) {
                            let why = format!("{id} could not be restarted");
                            match self.evacuate(pool, &why).await {
                                Ok(moved) => actions.push(format!(
                                    "{id} could not be restarted: moved {} to other pools and removed {id}",
                                    if moved.is_empty() { "no tenants".to_string() } else { moved.join(", ") }
                                )),
                                Err(e) => issues.push(format!("{id}: moving its tenants: {e}")),
                            }
                        }
                    }
                }
            }
        }
        let latency = t0.elapsed().as_secs_f64() * 1000.0;
        let programs = match &health {
            Err(_) => None,
            Ok(_) => match self.agents.list(&ep).await {
                Ok(o) => Some(o),
                Err(e) => {
                    issues.push(format!("{id}: listing programs: {e}"));
                    None
                }
            },
        };
        Observed {
            health: PoolHealth {
                id,
                healthy: health.is_ok(),
                latency_ms: health.is_ok().then_some(latency),
            },
            pool: pool.clone(),
            programs,
            issues,
            actions,
        }
    }

    /// Phase two of a pool's check: what its agent runs against the pool's
    /// rows (read once per tick for all pools, after every pool was
    /// observed) → the pool's health, issues and reconciliation steps.
    pub(super) fn plan_pool(&self, o: Observed, tenants: &[&TenantRow]) -> PoolCheck {
        let Observed {
            pool,
            health,
            programs,
            mut issues,
            actions,
        } = o;
        let id = pool.id().to_string();
        let mut check = PoolCheck {
            ep: self.endpoint(&pool),
            pool: pool.id(),
            pool_id: id.clone(),
            health,
            bots: vec![],
            issues: vec![],
            actions,
            tenants: vec![],
            pending: vec![],
        };
        let Some(observed) = programs else {
            check.issues = issues;
            return check;
        };
        let desired: BTreeMap<String, Desired> = tenants
            .iter()
            .map(|t| (t.id.to_string(), t.desired))
            .collect();
        let seen: BTreeMap<String, _> = observed.iter().map(|s| (s.id.clone(), s.state)).collect();
        let drifted: std::collections::BTreeSet<String> = observed
            .iter()
            .filter(|s| {
                let stored = tenants.iter().find(|t| t.id == s.id);
                match (
                    stored.map(|t| t.spec.program(t.slot, t.port)),
                    &s.spec_digest,
                ) {
                    (Some(spec), Some(d)) => slotpack_proto::protocol::spec_digest(&spec) != *d,
                    _ => false,
                }
            })
            .map(|s| s.id.clone())
            .collect();
        for s in &observed {
            if let Some(m) = &s.message {
                issues.push(format!("{}: {m}", s.id));
                self.report_once(&s.id, &id, m);
            }
            if desired.get(&s.id) == Some(&Desired::Running) {
                if !s.healthy {
                    issues.push(format!(
                        "{}: {} in {id}, not healthy",
                        s.id,
                        s.state.as_str()
                    ));
                }
                check.bots.push(BotHealth {
                    id: s.id.clone(),
                    pool_id: id.clone(),
                    state: s.state.as_str().to_string(),
                    healthy: s.healthy,
                    restarts: s.restarts,
                });
            }
        }
        for t in &drifted {
            issues.push(format!("{t}: its spec in {id} was changed behind our back"));
        }
        check.pending = plan(&desired, &seen, &drifted);
        check.issues = issues;
        check.tenants = tenants.iter().map(|t| (*t).clone()).collect();
        check
    }

    /// Record an agent's message about a tenant as an event (`tenant.memory`
    /// when it is about memory, else `tenant.problem`), once per message.
    pub(super) fn report_once(&self, tenant: &str, pool: &str, message: &str) {
        let mut seen = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(tenant).map(String::as_str) == Some(message) {
            return;
        }
        let kind = if message.contains("memory") {
            "tenant.memory"
        } else {
            "tenant.problem"
        };
        if self
            .db
            .event(kind, Some(tenant), Some(pool), message)
            .is_ok()
        {
            seen.insert(tenant.to_string(), message.to_string());
        }
    }

    /// Apply the pending reconciliation steps of one pool that start
    /// programs (`starts`) or the others; returns (issues, actions).
    /// Returns (issues, actions, ids whose stop or delete is not finished).
    pub(super) async fn apply_all(
        &self,
        c: &PoolCheck,
        starts: bool,
        not_down: &std::collections::HashSet<String>,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let (mut issues, mut actions, mut pending) = (vec![], vec![], vec![]);
        let id = &c.pool_id;
        for a in c.pending.iter().filter(|a| a.starts() == starts) {
            if not_down.contains(a.tenant()) {
                issues.push(format!("{id}: {a:?} waits until its old copy is down"));
                continue;
            }
            match self.apply(&c.ep, &c.tenants, a).await {
                Ok(true) => actions.push(format!("{id}: {a:?}")),
                Ok(false) => {
                    actions.push(format!("{id}: {a:?} begun"));
                    pending.push(a.tenant().to_string());
                }
                Err(e) => {
                    issues.push(format!("{id}: {a:?} failed: {e}"));
                    pending.push(a.tenant().to_string());
                }
            }
        }
        (issues, actions, pending)
    }

    /// PUT the tenant's stored spec, for `slot` and `port`, to the agent at `ep`.
    pub(super) async fn put_program(
        &self,
        ep: &Endpoint,
        t: &TenantRow,
        slot: u32,
        port: u16,
    ) -> Result<()> {
        self.agents
            .put(ep, &t.id, &t.spec.program(slot, port))
            .await?;
        Ok(())
    }

    /// Apply one step; returns whether it is finished (false: a delete
    /// whose program is still stopping).
    pub(super) async fn apply(
        &self,
        ep: &Endpoint,
        tenants: &[TenantRow],
        a: &Action,
    ) -> Result<bool> {
        let row = |id: &str| tenants.iter().find(|t| t.id == id);
        match a {
            Action::Put(id) => {
                let t = row(id).ok_or_else(|| ServiceError::Internal("row vanished".into()))?;
                // Planned a moment ago: skip it if the tenant has since been
                // deleted, stopped or moved.
                let now = self.db.tenant(id)?;
                if now.is_none_or(|n| n.pool != t.pool || n.desired != Desired::Running) {
                    return Ok(true);
                }
                self.put_program(ep, t, t.slot, t.port).await?;
            }
            Action::Start(id) => {
                self.agents
                    .action(ep, id, ProgramAction::Start, Duration::ZERO)
                    .await?;
            }
            // Stops and deletes only begin here: no tenant's stop timeout
            // holds the tick. What is still stopping is seen again next tick.
            Action::Stop(id) => {
                self.agents.begin_stop(ep, id).await?;
            }
            Action::Delete(id) => {
                let gone = self.agents.begin_delete(ep, id).await?;
                if let Some(t) = row(id).filter(|t| gone && t.desired == Desired::Deleting) {
                    self.forget_tenant(&t.id, "deleted (finished by the reconciler)")
                        .await?;
                }
                return Ok(gone);
            }
            Action::Forget(id) => {
                self.forget_tenant(id, "deleted (finished by the reconciler)")
                    .await?
            }
        }
        Ok(true)
    }
}
