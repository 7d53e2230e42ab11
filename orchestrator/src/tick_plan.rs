//! The health tick's decisions, with no I/O (the tick in `service/health`
//! observes, asks these, then applies): what a pool needs given what was
//! seen of it, what a restart's outcome leads to, and one pool's plan of
//! reconciliation steps and reports from its programs against its rows.

use std::collections::{BTreeMap, BTreeSet};

use slotpack_proto::protocol::{spec_digest, Problem, ProgramStatus};

use crate::api_types::BotHealth;
use crate::db::{PoolId, PoolRow, TenantRow};
use crate::reconcile::{plan, Action};
use crate::states::Desired;

/// What one look at a pool found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Its cluster node is gone, down or drained.
    MustLeave {
        /// The node.
        node: String,
        /// `lost or down`, `drained`.
        why: &'static str,
    },
    /// Its agent answered.
    Answered,
    /// Its agent did not answer; whether its process (container) runs.
    Silent {
        /// The backend still runs it (busy or starting: leave it be).
        running: bool,
    },
}

/// What the tick does with a pool before reading its programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolStep {
    /// Move its tenants to other pools and remove it (why).
    Evacuate(String),
    /// Start it again (its state brings its programs back).
    Restart,
    /// Nothing this tick: it runs but does not answer.
    Wait,
    /// Read its programs and reconcile them.
    Reconcile,
}

/// The step for a pool seen as `seen`.
pub fn pool_step(seen: &Seen) -> PoolStep {
    match seen {
        Seen::MustLeave { node, why } => PoolStep::Evacuate(format!("its node {node} is {why}")),
        Seen::Answered => PoolStep::Reconcile,
        Seen::Silent { running: true } => PoolStep::Wait,
        Seen::Silent { running: false } => PoolStep::Restart,
    }
}

/// What follows a restart attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRestart {
    /// It runs: look at its programs now.
    Reconcile,
    /// It failed; try again at a later tick.
    Retry,
    /// It failed `max` times in a row: its tenants move elsewhere.
    Evacuate,
}

/// The step after a restart that succeeded (`ok`) or was the `failures`-th
/// failure in a row, with `max` allowed (at least one).
pub fn after_restart(ok: bool, failures: u32, max: u32) -> AfterRestart {
    if ok {
        AfterRestart::Reconcile
    } else if failures >= max.max(1) {
        AfterRestart::Evacuate
    } else {
        AfterRestart::Retry
    }
}

/// What an agent said about one tenant that is worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The tenant.
    pub tenant: String,
    /// Whether it is about memory (the agent's typed problem).
    pub memory: bool,
    /// The agent's words.
    pub message: String,
}

/// One pool's part of a tick, planned from its programs and rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolPlan {
    /// Health of its tenants desired running.
    pub bots: Vec<BotHealth>,
    /// Problems seen, for people.
    pub issues: Vec<String>,
    /// Reconciliation steps (stops before starts are ordered by the tick).
    pub actions: Vec<Action>,
    /// Agent messages to record as events (each is recorded once).
    pub reports: Vec<Report>,
}

/// The plan of `pool` whose agent runs `observed`, for its rows `tenants`.
pub fn plan_pool(pool: &PoolRow, observed: &[ProgramStatus], tenants: &[&TenantRow]) -> PoolPlan {
    let id: PoolId = pool.id();
    let mut out = PoolPlan::default();
    let desired: BTreeMap<String, Desired> = tenants
        .iter()
        .map(|t| (t.id.to_string(), t.desired))
        .collect();
    let seen: BTreeMap<String, _> = observed.iter().map(|s| (s.id.clone(), s.state)).collect();
    let drifted: BTreeSet<String> = observed
        .iter()
        .filter(|s| {
            let stored = tenants.iter().find(|t| t.id == s.id);
            match (stored.and_then(|t| program_of(t, pool)), &s.spec_digest) {
                (Some(spec), Some(d)) => spec_digest(&spec) != *d,
                _ => false,
            }
        })
        .map(|s| s.id.clone())
        .collect();
    for s in observed {
        if let Some(m) = &s.message {
            out.issues.push(format!("{}: {m}", s.id));
            out.reports.push(Report {
                tenant: s.id.clone(),
                memory: s.problem.is_some_and(Problem::is_memory),
                message: m.clone(),
            });
        }
        if desired.get(&s.id) == Some(&Desired::Running) {
            if !s.healthy {
                out.issues.push(format!(
                    "{}: {} in {id}, not healthy",
                    s.id,
                    s.state.as_str()
                ));
            }
            out.bots.push(BotHealth {
                id: s.id.clone(),
                pool_id: id.to_string(),
                state: s.state.as_str().to_string(),
                healthy: s.healthy,
                restarts: s.restarts,
                usage: tenants
                    .iter()
                    .find(|t| t.id == s.id)
                    .map(|t| crate::usage::of(s, t.usage_limits())),
            });
        }
    }
    for t in &drifted {
        out.issues
            .push(format!("{t}: its spec in {id} was changed behind our back"));
    }
    out.actions = plan(&desired, &seen, &drifted);
    out
}

/// The program spec tenant `t` runs with in `pool` (`None`: a slot the
/// pool lacks).
pub fn program_of(t: &TenantRow, pool: &PoolRow) -> Option<slotpack_proto::protocol::ProgramSpec> {
    Some(t.spec.program(t.slot, pool.slot_port(t.slot)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotpack_proto::protocol::{ProgramState, TenantId};

    fn pool() -> PoolRow {
        PoolRow {
            block: 0,
            ..PoolRow::for_tests(3)
        }
    }

    fn row(id: &str, slot: u32, desired: Desired) -> TenantRow {
        let req: crate::api_types::CreateTenant = serde_json::from_value(serde_json::json!({
            "id": id, "command": "/bin/true", "resources": {"memoryMb": 64}
        }))
        .unwrap();
        TenantRow {
            id: TenantId::parse(id).unwrap(),
            owner: "o".into(),
            spec: crate::tenant_spec::TenantSpec::of(&req),
            pool: 3,
            slot,
            desired,
            created_at: String::new(),
            expires_at: None,
        }
    }

    fn status(t: &TenantRow, p: &PoolRow, state: ProgramState) -> ProgramStatus {
        ProgramStatus {
            id: t.id.to_string(),
            state,
            pid: None,
            slot: t.slot,
            port: 0,
            restarts: 2,
            healthy: state == ProgramState::Running,
            last_exit: None,
            last_ping: None,
            rss_bytes: 0,
            cpu_millis: 0,
            disk_bytes: 0,
            started_at: None,
            spec_digest: program_of(t, p).map(|s| spec_digest(&s)),
            message: None,
            problem: None,
        }
    }

    #[test]
    fn a_pools_plan_reconciles_reports_typed_problems_and_spots_drift() {
        let p = pool();
        let (a, b, c) = (
            row("a", 0, Desired::Running),
            row("b", 1, Desired::Stopped),
            row("c", 2, Desired::Running),
        );
        let mut sa = status(&a, &p, ProgramState::Backoff);
        sa.message = Some("memory limit exceeded: restarting".into());
        sa.problem = Some(Problem::MemoryLimit);
        let mut sb = status(&b, &p, ProgramState::Running);
        sb.message = Some("it said memory but is no memory problem".into());
        let mut orphan = status(&a, &p, ProgramState::Running);
        orphan.id = "gone".into();
        let mut sc = status(&c, &p, ProgramState::Running);
        sc.spec_digest = Some("0000000000000000".into());
        let plan = plan_pool(&p, &[sa, sb, orphan, sc], &[&a, &b, &c]);
        assert_eq!(
            plan.actions,
            [
                Action::Put("c".into()),
                Action::Stop("b".into()),
                Action::Delete("gone".into())
            ]
        );
        // Memory is what the agent typed, not a word in its message.
        let memory: Vec<(&str, bool)> = plan
            .reports
            .iter()
            .map(|r| (r.tenant.as_str(), r.memory))
            .collect();
        assert_eq!(memory, [("a", true), ("b", false)]);
        // Tenants desired running are reported, in their pool.
        let bots: Vec<(&str, &str, bool)> = plan
            .bots
            .iter()
            .map(|b| (b.id.as_str(), b.pool_id.as_str(), b.healthy))
            .collect();
        assert_eq!(bots, [("a", "pool-3", false), ("c", "pool-3", true)]);
        assert!(
            plan.issues
                .iter()
                .any(|i| i == "c: its spec in pool-3 was changed behind our back"),
            "{:?}",
            plan.issues
        );
    }

    #[test]
    fn a_pool_is_evacuated_restarted_waited_for_or_reconciled() {
        let leave = Seen::MustLeave {
            node: "n1".into(),
            why: "drained",
        };
        assert_eq!(
            pool_step(&leave),
            PoolStep::Evacuate("its node n1 is drained".into())
        );
        assert_eq!(pool_step(&Seen::Answered), PoolStep::Reconcile);
        assert_eq!(pool_step(&Seen::Silent { running: true }), PoolStep::Wait);
        assert_eq!(
            pool_step(&Seen::Silent { running: false }),
            PoolStep::Restart
        );
    }

    #[test]
    fn restarts_fail_up_to_the_limit_then_the_tenants_move() {
        assert_eq!(after_restart(true, 0, 3), AfterRestart::Reconcile);
        assert_eq!(after_restart(false, 1, 3), AfterRestart::Retry);
        assert_eq!(after_restart(false, 2, 3), AfterRestart::Retry);
        assert_eq!(after_restart(false, 3, 3), AfterRestart::Evacuate);
        // A limit of 0 means 1: never an endless retry.
        assert_eq!(after_restart(false, 1, 0), AfterRestart::Evacuate);
    }
}
