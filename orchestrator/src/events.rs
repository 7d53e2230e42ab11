//! Typed events of the service. Each is recorded in the event log, logged
//! with its pool and tenant as fields, and counted (`slotpack_events_total`
//! by kind; recovery actions also in `slotpack_recovery_actions_total`), in
//! one place: [`crate::service::Orchestrator::emit`]. The words a person
//! reads (`recoveryActions`, the event's detail) come from [`Recovery`]'s
//! `Display`, never the other way round.

use std::fmt;

use crate::db::PoolId;
use crate::reconcile::Action;

/// Why a pool's tenants were moved away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvacuationCause {
    /// Its node is gone, down or drained (the words say which).
    NodeLeft(String),
    /// It failed to restart too many times in a row.
    RestartsFailed,
}

/// One recovery action of a health tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// A pool's removal that a crash interrupted was finished.
    RemovalFinished(PoolId),
    /// A pool whose process was gone was started again.
    Restarted(PoolId),
    /// A pool's tenants were moved to other pools and the pool removed.
    Evacuated {
        /// The pool.
        pool: PoolId,
        /// Why.
        cause: EvacuationCause,
        /// The tenants moved.
        moved: Vec<String>,
    },
    /// A reconciliation step was applied (or begun: a stop or delete the
    /// tick does not wait for).
    Reconciled {
        /// The pool.
        pool: PoolId,
        /// The step.
        action: Action,
        /// Whether it is finished.
        finished: bool,
    },
    /// A tenant past its `maxLifetimeSeconds` is being removed.
    Expiring(String),
    /// Consolidation moved tenants (id, to pool, port) and removed a pool.
    Consolidated {
        /// Tenants moved, where to, and their new ports.
        moved: Vec<(String, PoolId, u16)>,
        /// The emptied pool.
        removed: PoolId,
    },
}

impl Recovery {
    /// The pool it is about, if one.
    pub fn pool(&self) -> Option<PoolId> {
        match self {
            Recovery::Restarted(p)
            | Recovery::Evacuated { pool: p, .. }
            | Recovery::Reconciled { pool: p, .. }
            | Recovery::Consolidated { removed: p, .. }
            | Recovery::RemovalFinished(p) => Some(*p),
            Recovery::Expiring(_) => None,
        }
    }

    /// The tenant it is about, if one.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Recovery::Reconciled { action, .. } => Some(action.tenant()),
            Recovery::Expiring(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |moved: &[String]| {
            if moved.is_empty() {
                "no tenants".to_string()
            } else {
                moved.join(", ")
            }
        };
        match self {
            Recovery::RemovalFinished(p) => write!(f, "finished removing {p}"),
            Recovery::Restarted(p) => {
                write!(f, "restarted {p}; its tenants come back from its state")
            }
            Recovery::Evacuated {
                pool,
                cause: EvacuationCause::NodeLeft(why),
                moved,
            } => write!(
                f,
                "{pool}: {why}: moved {} to other pools and removed {pool}",
                list(moved)
            ),
            Recovery::Evacuated {
                pool,
                cause: EvacuationCause::RestartsFailed,
                moved,
            } => write!(
                f,
                "{pool} could not be restarted: moved {} to other pools and removed {pool}",
                list(moved)
            ),
            Recovery::Reconciled {
                pool,
                action,
                finished,
            } => {
                write!(f, "{pool}: {action:?}")?;
                if !finished {
                    f.write_str(" begun")?;
                }
                Ok(())
            }
            Recovery::Expiring(t) => write!(f, "removing {t} at the end of its lifetime"),
            Recovery::Consolidated { moved, removed } => {
                let moved: Vec<String> = moved
                    .iter()
                    .map(|(t, p, port)| format!("{t} to {p} port {port}"))
                    .collect();
                write!(
                    f,
                    "consolidation: moved {} and removed {removed}",
                    moved.join(", ")
                )
            }
        }
    }
}

/// One event the service records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A health tick's recovery action.
    Recovery(Recovery),
    /// An agent reports a tenant over its memory limit.
    TenantMemory {
        /// The tenant.
        tenant: String,
        /// Its pool.
        pool: PoolId,
        /// The agent's words.
        message: String,
    },
    /// An agent reports another problem of a tenant.
    TenantProblem {
        /// The tenant.
        tenant: String,
        /// Its pool.
        pool: PoolId,
        /// The agent's words.
        message: String,
    },
    /// A pool class was defined or changed (its spec as JSON).
    ClassDefined {
        /// Class name.
        name: String,
        /// The spec, as JSON.
        spec: String,
    },
    /// A pool class was removed.
    ClassDeleted(String),
    /// A step of a rolling image update (or a layout upgrade) of a pool.
    Roll {
        /// The pool.
        pool: PoolId,
        /// What happened.
        step: RollStage,
    },
}

/// The steps of remaking one pool (a class image roll, a layout upgrade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollStage {
    /// Its tenants stop; it is made anew on `image`.
    Started {
        /// Its class.
        class: String,
        /// The image it ran.
        from: String,
        /// The image it gets.
        image: String,
    },
    /// Made anew, its tenants came back healthy on `image`.
    Done {
        /// The image.
        image: String,
    },
    /// Its tenants failed on `image`: it went back to `from`, the roll stopped.
    Failed {
        /// The image given up on.
        image: String,
        /// The image it went back to.
        from: String,
        /// What failed.
        message: String,
    },
    /// Made anew with the deployment's tenant data mounted (a pool of an
    /// older slotpack), its slot homes moved into it by its agent.
    Upgraded,
}

impl Event {
    /// The event log's `kind` (and the metric's label).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Recovery(_) => "recovery",
            Event::TenantMemory { .. } => "tenant.memory",
            Event::TenantProblem { .. } => "tenant.problem",
            Event::ClassDefined { .. } => "class.defined",
            Event::ClassDeleted(_) => "class.deleted",
            Event::Roll {
                step: RollStage::Started { .. },
                ..
            } => "roll.started",
            Event::Roll {
                step: RollStage::Done { .. },
                ..
            } => "roll.done",
            Event::Roll {
                step: RollStage::Failed { .. },
                ..
            } => "roll.failed",
            Event::Roll {
                step: RollStage::Upgraded,
                ..
            } => "pool.upgraded",
        }
    }

    /// The tenant it is about, if one.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Event::Recovery(r) => r.tenant(),
            Event::TenantMemory { tenant, .. } | Event::TenantProblem { tenant, .. } => {
                Some(tenant)
            }
            _ => None,
        }
    }

    /// The pool it is about, if one.
    pub fn pool(&self) -> Option<PoolId> {
        match self {
            Event::Recovery(r) => r.pool(),
            Event::TenantMemory { pool, .. }
            | Event::TenantProblem { pool, .. }
            | Event::Roll { pool, .. } => Some(*pool),
            _ => None,
        }
    }

    /// The words of the event log's `detail`.
    pub fn detail(&self) -> String {
        match self {
            Event::Recovery(r) => r.to_string(),
            Event::TenantMemory { message, .. } | Event::TenantProblem { message, .. } => {
                message.clone()
            }
            Event::ClassDefined { name, spec } => format!("{name}: {spec}"),
            Event::ClassDeleted(name) => name.clone(),
            Event::Roll { pool, step } => match step {
                RollStage::Started { class, from, image } => {
                    format!("{pool} (class {class}): stopping its tenants to remake it on {image} (was {from})")
                }
                RollStage::Done { image } => {
                    format!("{pool}: its tenants are back and healthy on {image}")
                }
                RollStage::Failed {
                    image,
                    from,
                    message,
                } => format!(
                    "{pool}: {message}; back on {from}, the roll to {image} stopped"
                ),
                RollStage::Upgraded => format!(
                    "{pool}: made anew with the deployment's tenant data mounted; its slot homes moved in"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recoveries_read_as_before_and_name_their_pool_and_tenant() {
        let r = Recovery::Reconciled {
            pool: PoolId(2),
            action: Action::Delete("t1".into()),
            finished: false,
        };
        assert_eq!(r.to_string(), "pool-2: Delete(\"t1\") begun");
        let e = Event::Recovery(r);
        assert_eq!(
            (e.kind(), e.tenant(), e.pool()),
            ("recovery", Some("t1"), Some(PoolId(2)))
        );
        let c = Recovery::Consolidated {
            moved: vec![("t3".into(), PoolId(1), 9001)],
            removed: PoolId(2),
        };
        assert_eq!(
            c.to_string(),
            "consolidation: moved t3 to pool-1 port 9001 and removed pool-2"
        );
        let ev = Recovery::Evacuated {
            pool: PoolId(4),
            cause: EvacuationCause::RestartsFailed,
            moved: vec![],
        };
        assert_eq!(
            ev.to_string(),
            "pool-4 could not be restarted: moved no tenants to other pools and removed pool-4"
        );
    }
}
