//! The health tick: observe every pool (agent health, restart, evacuation
//! as `tick_plan` decides), plan each pool's reconciliation in the pure
//! `tick_plan::plan_pool`, then apply it in two phases (stops before
//! starts). What a tick leaves unfinished is requeued per tenant.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::*;
use crate::agents::Data;
use crate::db::{PoolId, PoolRow, TenantRow};
use crate::events::{EvacuationCause, Event, Recovery};
use crate::ledger::Moved;
use crate::placement::Request;
use crate::reconcile::Action;
use crate::states::{Desired, PoolState};
use crate::tick_plan::{after_restart, plan_pool, pool_step, AfterRestart, PoolStep, Seen};
use slotpack_proto::protocol::{ProgramAction, ProgramStatus, TenantId};

/// How soon a tenant whose stop or delete a tick began is looked at again.
pub const REQUEUE_AFTER: Duration = Duration::from_millis(300);

/// What the health ticks keep between them; nothing else touches it.
#[derive(Default)]
pub(super) struct TickState {
    /// One health tick at a time (loop, API and backend events).
    pub(super) one_at_a_time: tokio::sync::Mutex<()>,
    /// The latest tick's report.
    pub(super) last_report: std::sync::Mutex<Option<HealthReport>>,
    /// Failed restarts in a row per pool number (reset by a success).
    pub(super) restart_failures: std::sync::Mutex<std::collections::HashMap<u64, u32>>,
    /// Tenants a tick asks to see again soon (a stop or delete it began
    /// but did not wait for), each with when: the per-object requeue.
    pub(super) requeue: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// The orphaned pools the last tick found.
    pub(super) orphans: std::sync::Mutex<Vec<crate::backend::FoundPool>>,
    /// The agent message last recorded as an event, per tenant.
    pub(super) reported: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// What a tick gathers; it becomes the API's [`HealthReport`].
#[derive(Default)]
pub(super) struct Tick {
    pub(super) pools: Vec<PoolHealth>,
    pub(super) bots: Vec<BotHealth>,
    pub(super) issues: Vec<String>,
    pub(super) actions: Vec<Recovery>,
    /// Pools whose agents answered.
    pub(super) healthy: HashSet<PoolId>,
}

/// What one pool showed, before the database is read.
struct Observed {
    pool: PoolRow,
    health: PoolHealth,
    /// What its agent runs; `None` when it could not be asked.
    programs: Option<Vec<ProgramStatus>>,
    issues: Vec<String>,
    actions: Vec<Recovery>,
}

/// One pool's reconciliation steps still to apply, with the rows they
/// were planned from.
struct PoolCheck {
    row: PoolRow,
    pool: PoolId,
    tenants: Vec<TenantRow>,
    pending: Vec<Action>,
}

impl Orchestrator {
    /// One health tick: check every agent, restart dead pools, reconcile
    /// every pool, expire tenants past their lifetime, remove pools the
    /// database does not know, consolidate (if enabled), keep warm slots.
    pub async fn health_tick(&self) -> HealthReport {
        let _one_at_a_time = self.tick.one_at_a_time.lock().await;
        let started = Instant::now();
        let timestamp = slotpack_proto::clock::now_rfc3339();
        let mut t = Tick::default();
        if let Err(e) = self.tick_into(&mut t).await {
            t.issues.push(format!("health tick failed: {e}"));
        }
        if self.cfg.consolidate && self.cfg.pool_mode_enabled {
            if let Err(e) = self.consolidate(&mut t).await {
                t.issues.push(format!("consolidation: {e}"));
            }
        }
        if let Err(e) = self.roll_step(&mut t).await {
            t.issues.push(format!("rolling image update: {e}"));
        }
        self.keep_warm().await;
        self.metrics.health_ticks.inc();
        for a in &t.actions {
            self.emit(&Event::Recovery(a.clone()));
        }
        let r = HealthReport {
            success: true,
            timestamp,
            pools: t.pools,
            bots: t.bots,
            issues: t.issues,
            recovery_actions: t.actions.iter().map(ToString::to_string).collect(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        *self
            .tick
            .last_report
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
        r
    }

    /// The tick but for consolidation and warm slots.
    pub(super) async fn tick_into(&self, t: &mut Tick) -> Result<()> {
        // Pools the backend runs that the database does not know: kept.
        let orphans = self.find_orphans().await?;
        for f in &orphans {
            t.issues.push(format!(
                "orphaned pool {} (not in the database): kept; remove it with \
                 POST /api/pool/cleanup {{\"orphans\": [\"{}\"]}}",
                f.backend_ref, f.backend_ref
            ));
        }
        *self.tick.orphans.lock().unwrap_or_else(|e| e.into_inner()) = orphans;
        // Removals a crash interrupted.
        for p in self
            .db
            .pools()?
            .iter()
            .filter(|p| p.status == PoolState::Removing)
        {
            match self.remove_pool(p, "its removal is finished").await {
                Ok(()) => t.actions.push(Recovery::RemovalFinished(p.id())),
                Err(e) => t
                    .issues
                    .push(format!("{}: finishing its removal: {e}", p.id())),
            }
        }
        // Nodes first: a pool whose node is lost or drained moves below.
        if let Err(e) = self.backend.refresh_nodes().await {
            t.issues.push(format!("listing the cluster's nodes: {e}"));
        }
        // A `starting` pool belongs to whoever starts it (a create or the
        // warm refill; after a crash, start-up recovery): left alone here.
        let pools: Vec<PoolRow> = self
            .db
            .pools()?
            .into_iter()
            .filter(|p| !matches!(p.status, PoolState::Starting | PoolState::Removing))
            .collect();
        let observed =
            futures_util::future::join_all(pools.iter().map(|p| self.observe_pool(p))).await;
        // Observe first, then read desired, once for every pool: a program
        // on an agent always has its row committed before it was PUT, so no
        // tenant created meanwhile is mistaken for an orphan.
        let tenants = self.db.tenants()?;
        let grouped = by_pool(&tenants);
        let mut checks = Vec::new();
        for o in observed {
            t.issues.extend(o.issues);
            t.actions.extend(o.actions);
            if o.health.healthy {
                t.healthy.insert(o.pool.id());
            }
            t.pools.push(o.health);
            let Some(programs) = o.programs else {
                continue;
            };
            let rows = tenants_of(&grouped, o.pool.number);
            let plan = plan_pool(&o.pool, &programs, rows);
            for r in &plan.reports {
                self.report_once(o.pool.id(), r);
            }
            t.issues.extend(plan.issues);
            t.bots.extend(plan.bots);
            checks.push(PoolCheck {
                row: o.pool.clone(),
                pool: o.pool.id(),
                tenants: rows.iter().map(|r| (*r).clone()).collect(),
                pending: plan.actions,
            });
        }
        // Everything that stops or removes, in every pool, before anything
        // that starts: a tenant moved between pools never runs in both. A
        // stop only begins (the tick never waits for one), so a tenant whose
        // old copy is not yet down is requeued and started by a later tick.
        let mut not_down = HashSet::new();
        for starts in [false, true] {
            let applied = checks.iter().map(|c| self.apply_all(c, starts, &not_down));
            let mut next = Vec::new();
            for (issues, actions, up) in futures_util::future::join_all(applied).await {
                t.issues.extend(issues);
                t.actions.extend(actions);
                next.extend(up);
            }
            not_down.extend(next);
        }
        self.requeue_tenants(&not_down);
        // Lifetimes: the deletion begins here; a tenant still stopping is
        // forgotten by a later tick's reconciliation (the tick never waits).
        // The rows read above: one whose deletion began meanwhile (by the
        // API or a step above) is not marked again.
        let now = unix_now();
        for row in &tenants {
            if row.expires_at.is_some_and(|e| e <= now) && row.desired != Desired::Deleting {
                if !self.mark_deleting(&row.id).await? {
                    continue;
                }
                let why = "maxLifetimeSeconds reached";
                let pool = self.pool_of(row)?;
                match self
                    .agents
                    .begin_delete(&self.endpoint(&pool), &row.id, Data::Purge)
                    .await
                {
                    Ok(gone) => {
                        if gone {
                            self.forget_tenant(&row.id, why).await?;
                        }
                        t.actions.push(Recovery::Expiring(row.id.to_string()));
                    }
                    Err(e) => t.issues.push(format!("expiring {}: {e}", row.id)),
                }
            }
        }
        Ok(())
    }

    /// The orphaned pools the latest tick found.
    pub(super) fn last_orphans(&self) -> Vec<crate::backend::FoundPool> {
        self.tick
            .orphans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Requeue exactly the tenants in `waiting` (each due
    /// [`REQUEUE_AFTER`] from now, unless already due sooner).
    fn requeue_tenants(&self, waiting: &HashSet<String>) {
        let due = Instant::now() + REQUEUE_AFTER;
        let mut q = self.tick.requeue.lock().unwrap_or_else(|e| e.into_inner());
        q.retain(|id, _| waiting.contains(id));
        for id in waiting {
            q.entry(id.clone()).or_insert(due);
        }
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
            .tick
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
                memory_mb: t.memory_mb(),
                cpu_millis: t.cpu_millis(),
                class: t.spec.pool_class.clone(),
            };
            let (again, prow, slot) = self.choose_slot(held, &want).await?;
            held = again;
            // The ledger checks the row once more, now that the lock may
            // have been let go: a deletion begun meanwhile is finished here
            // (its pool is going), never moved along.
            match held.move_tenant(&id, dead.number, &prow, slot, &why)? {
                Moved::Done(t) => moved.push((t, prow)),
                Moved::Deleting(t) => {
                    held.forget_tenant(&t.id, &why)?;
                }
                Moved::Elsewhere => {}
            }
        }
        drop(held);
        // Committed: a failed PUT below is retried by the next reconciliation.
        for (t, prow) in &moved {
            if let Err(e) = self.put_program(prow, t, t.slot).await {
                tracing::warn!(tenant = %t.id, pool = %prow.id(), error = %e, "put to its agent failed");
            } else if t.desired == Desired::Stopped {
                let _ = self
                    .agents
                    .action(
                        &self.endpoint(prow),
                        &t.id,
                        ProgramAction::Stop,
                        Duration::from_secs(12),
                    )
                    .await;
            }
        }
        self.remove_pool(dead, &why).await?;
        self.note_restart(dead.number, true);
        Ok(moved.into_iter().map(|(t, _)| t.id.into()).collect())
    }

    /// One pool's look: agent health, then what `tick_plan::pool_step`
    /// says (evacuate, restart, wait or reconcile), then its programs.
    async fn observe_pool(&self, pool: &PoolRow) -> Observed {
        let (mut issues, mut actions) = (vec![], vec![]);
        let ep = self.endpoint(pool);
        let id = pool.id();
        let t0 = Instant::now();
        let seen = match self.must_leave(pool) {
            Some((node, why)) => Seen::MustLeave { node, why },
            None => match self.agents.health(&ep).await {
                Ok(_) => Seen::Answered,
                Err(e) => {
                    issues.push(format!("{id}: agent unreachable: {e}"));
                    Seen::Silent {
                        running: self.backend.pool_running(&pool.spec()).await,
                    }
                }
            },
        };
        let mut answered = seen == Seen::Answered;
        match pool_step(&seen) {
            PoolStep::Reconcile | PoolStep::Wait => {}
            PoolStep::Evacuate(why) => {
                issues.push(format!("{id}: {why}"));
                self.evacuate_into(
                    pool,
                    EvacuationCause::NodeLeft(why),
                    &mut issues,
                    &mut actions,
                )
                .await;
            }
            PoolStep::Restart => {
                let started = self.backend.start_pool(&pool.spec()).await;
                let failures = self.note_restart(pool.number, started.is_ok());
                // The ledger's index follows the status: a failed pool takes
                // no tenant, a restarted one takes them again.
                let (status, r) = match &started {
                    Ok(r) => (PoolState::Running, Some(r.as_str())),
                    Err(_) => (PoolState::Failed, None),
                };
                if let Err(e) = self
                    .ledger
                    .lock()
                    .await
                    .set_pool_status(pool.number, status, r)
                {
                    issues.push(format!("{id}: storing its status: {e}"));
                }
                if let Err(e) = &started {
                    issues.push(format!("{id}: restart {failures} failed: {e}"));
                }
                match after_restart(started.is_ok(), failures, self.cfg.max_restart_attempts) {
                    AfterRestart::Reconcile => {
                        actions.push(Recovery::Restarted(id));
                        answered = self.agents.health(&ep).await.is_ok();
                    }
                    AfterRestart::Retry => {}
                    AfterRestart::Evacuate => {
                        self.evacuate_into(
                            pool,
                            EvacuationCause::RestartsFailed,
                            &mut issues,
                            &mut actions,
                        )
                        .await;
                    }
                }
            }
        }
        let latency = t0.elapsed().as_secs_f64() * 1000.0;
        let programs = if answered {
            match self.agents.list(&ep).await {
                Ok(o) => Some(o),
                Err(e) => {
                    issues.push(format!("{id}: listing programs: {e}"));
                    None
                }
            }
        } else {
            None
        };
        Observed {
            health: PoolHealth {
                id: id.to_string(),
                healthy: answered,
                latency_ms: answered.then_some(latency),
            },
            pool: pool.clone(),
            programs,
            issues,
            actions,
        }
    }

    /// [`Self::evacuate`], its outcome noted as an action or an issue.
    async fn evacuate_into(
        &self,
        pool: &PoolRow,
        cause: EvacuationCause,
        issues: &mut Vec<String>,
        actions: &mut Vec<Recovery>,
    ) {
        let why = match &cause {
            EvacuationCause::NodeLeft(why) => why.clone(),
            EvacuationCause::RestartsFailed => format!("{} could not be restarted", pool.id()),
        };
        match self.evacuate(pool, &why).await {
            Ok(moved) => actions.push(Recovery::Evacuated {
                pool: pool.id(),
                cause,
                moved,
            }),
            Err(e) => issues.push(format!("{}: moving its tenants: {e}", pool.id())),
        }
    }

    /// Record an agent's report about a tenant as an event (memory or
    /// another problem, as the agent typed it), once per message.
    fn report_once(&self, pool: PoolId, r: &crate::tick_plan::Report) {
        {
            let seen = self.tick.reported.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get(&r.tenant) == Some(&r.message) {
                return;
            }
        }
        let (tenant, message) = (r.tenant.clone(), r.message.clone());
        self.emit(&if r.memory {
            Event::TenantMemory {
                tenant,
                pool,
                message,
            }
        } else {
            Event::TenantProblem {
                tenant,
                pool,
                message,
            }
        });
        self.tick
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r.tenant.clone(), r.message.clone());
    }

    /// Apply the pending reconciliation steps of one pool that start
    /// programs (`starts`) or the others. Returns (issues, actions, ids
    /// whose stop or delete is not finished).
    async fn apply_all(
        &self,
        c: &PoolCheck,
        starts: bool,
        not_down: &HashSet<String>,
    ) -> (Vec<String>, Vec<Recovery>, Vec<String>) {
        let (mut issues, mut actions, mut pending) = (vec![], vec![], vec![]);
        let id = c.pool;
        for a in c.pending.iter().filter(|a| a.starts() == starts) {
            if not_down.contains(a.tenant()) {
                issues.push(format!("{id}: {a:?} waits until its old copy is down"));
                continue;
            }
            let done = |finished| Recovery::Reconciled {
                pool: id,
                action: a.clone(),
                finished,
            };
            match self.apply(&c.row, &c.tenants, a).await {
                Ok(true) => actions.push(done(true)),
                Ok(false) => {
                    actions.push(done(false));
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

    /// PUT tenant `t`'s stored spec, for `slot` of `pool`, to its agent.
    pub(super) async fn put_program(&self, pool: &PoolRow, t: &TenantRow, slot: u32) -> Result<()> {
        let port = pool
            .slot_port(slot)
            .ok_or_else(|| ServiceError::Internal(format!("{} has no slot {slot}", pool.id())))?;
        self.agents
            .put(&self.endpoint(pool), &t.id, &t.spec.program(slot, port))
            .await?;
        Ok(())
    }

    /// Apply one step; returns whether it is finished (false: a delete
    /// whose program is still stopping).
    async fn apply(&self, pool: &PoolRow, tenants: &[TenantRow], a: &Action) -> Result<bool> {
        let ep = &self.endpoint(pool);
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
                self.put_program(pool, t, t.slot).await?;
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
                // Its tenant's data goes only with the tenant's deletion; a
                // program left behind by a move keeps it for its new slot.
                let data = match row(id) {
                    Some(t) if t.desired == Desired::Deleting => Data::Purge,
                    _ => Data::Keep,
                };
                let gone = self.agents.begin_delete(ep, id, data).await?;
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
