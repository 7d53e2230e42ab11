//! The I/O side of consolidation (`SLOTPACK_CONSOLIDATE`): one round per
//! health tick empties at most one pool, planned by the pure
//! [`crate::consolidate::plan_drain`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::health::Tick;
use super::{by_pool, tenants_of, Orchestrator, Result, ServiceError};
use crate::agents::Data;
use crate::consolidate::{plan_drain, Drain, Limits, Resident};
use crate::db::{PoolId, PoolRow, TenantRow};
use crate::events::Recovery;
use crate::ledger::{Held, Moved};
use crate::placement::{PoolIndex, Request};
use crate::states::Desired;

/// A tenant on its way: its row before the move, and where it goes.
struct Moving {
    tenant: TenantRow,
    to: PoolRow,
    slot: u32,
    port: u16,
}

impl Orchestrator {
    /// One consolidation round: if the tenants of some healthy pool, all
    /// desired running, fit into the free room of the other healthy pools,
    /// move them there and remove the emptied pool. Moves are committed to
    /// the database first; then the tenants are stopped in the old pool, the
    /// pool is removed, and only then are they started in their new slots,
    /// so a tenant never runs twice. Tick lock held.
    pub(super) async fn consolidate(&self, r: &mut Tick) -> Result<()> {
        let healthy = &r.healthy;
        let committed = {
            // Read under the placement lock: no pool or tenant appears meanwhile.
            let mut held = self.ledger.lock().await;
            let pools = self.db.pools()?;
            let tenants = self.db.tenants()?;
            let (view, residents) = drain_view(held.index(), &pools, &tenants, healthy);
            let limits = Limits {
                keep_free_slots: u64::from(self.cfg.warm_slots),
                ..Limits::default()
            };
            let Some(drain) = plan_drain(&view, &residents, limits) else {
                return Ok(());
            };
            let source = find_pool(&pools, drain.pool)?.clone();
            let result = self.commit_moves(&mut held, &drain, &source, &pools, &tenants);
            if result.is_err() {
                // Some moves may be committed (the ledger keeps each one
                // whole); the source opens again and the reconciler
                // converges the agents on the next tick.
                held.open_pool(source.number)?;
            }
            result.map(|moving| (source, moving))
        };
        let (source, moving) = match committed {
            Ok(c) => c,
            Err(e) => return Err(e),
        };
        // Committed: after a crash from here on the reconciler finishes the job.
        let why = format!("consolidation: {} emptied", source.id());
        let from = self.endpoint(&source);
        let stops = moving.iter().map(|m| {
            let grace =
                Duration::from_millis(m.tenant.spec.stop.timeout_ms) + Duration::from_secs(2);
            self.agents.delete(&from, &m.tenant.id, grace, Data::Keep)
        });
        let mut down = Vec::with_capacity(moving.len());
        for (m, res) in moving
            .iter()
            .zip(futures_util::future::join_all(stops).await)
        {
            if let Err(e) = &res {
                r.issues.push(format!(
                    "{}: stopping it in {}: {e}",
                    m.tenant.id,
                    source.id()
                ));
            }
            down.push(res.is_ok());
        }
        let pool_gone = match self.remove_pool(&source, &why).await {
            Ok(()) => true,
            Err(e) => {
                r.issues.push(format!("removing {}: {e}", source.id()));
                false
            }
        };
        let mut moved = Vec::with_capacity(moving.len());
        for (m, down) in moving.iter().zip(down) {
            if !down && !pool_gone {
                // Its old copy may still run: the next tick removes the old
                // pool (now unknown to the database) before it starts this one.
                r.issues.push(format!(
                    "{}: left for the next tick, its old copy may still run",
                    m.tenant.id
                ));
                continue;
            }
            match self.put_program(&m.to, &m.tenant, m.slot).await {
                Ok(()) => moved.push((m.tenant.id.to_string(), m.to.id(), m.port)),
                Err(e) => r.issues.push(format!(
                    "{}: starting it in {} (the next tick retries): {e}",
                    m.tenant.id,
                    m.to.id()
                )),
            }
        }
        self.metrics.consolidation_moves.inc_by(moving.len() as u64);
        self.metrics.pools_drained.inc();
        r.actions.push(Recovery::Consolidated {
            moved,
            removed: source.id(),
        });
        Ok(())
    }

    /// Write every move of `drain` to the database and mirror it in the
    /// index and the proxy routes; the drained pool leaves the index at once
    /// so no new tenant lands there. Placement lock held.
    fn commit_moves(
        &self,
        held: &mut Held<'_>,
        drain: &Drain,
        source: &PoolRow,
        pools: &[PoolRow],
        tenants: &[TenantRow],
    ) -> Result<Vec<Moving>> {
        let why = format!("consolidation: emptying {}", source.id());
        held.close_pool(source.number)?;
        let mut moving = Vec::with_capacity(drain.moves.len());
        for m in &drain.moves {
            let tenant = tenants
                .iter()
                .find(|t| t.pool == source.number && t.slot == m.from_slot)
                .ok_or_else(|| {
                    ServiceError::Internal(format!("no tenant in slot {}", m.from_slot))
                })?;
            let to = find_pool(pools, m.to_pool)?.clone();
            match held.move_tenant(&tenant.id, source.number, &to, m.to_slot, &why)? {
                Moved::Done(now) => moving.push(Moving {
                    port: to.slot_port(now.slot).unwrap_or_default(),
                    tenant: tenant.clone(),
                    to,
                    slot: m.to_slot,
                }),
                // Read under the same lock the plan was made under: cannot
                // happen, but a deletion is never moved along.
                Moved::Deleting(_) | Moved::Elsewhere => {
                    return Err(ServiceError::Internal(format!(
                        "{} changed while it was being moved",
                        tenant.id
                    )))
                }
            }
        }
        Ok(moving)
    }
}

/// What consolidation may touch: the index with unhealthy pools closed (not
/// targets), and the residents of each healthy pool whose tenants are all
/// desired running (stopped or deleting tenants pin their pool).
fn drain_view(
    idx: &PoolIndex,
    pools: &[PoolRow],
    tenants: &[TenantRow],
    healthy: &HashSet<PoolId>,
) -> (PoolIndex, HashMap<u64, Vec<Resident>>) {
    let mut view = idx.clone();
    let mut residents = HashMap::new();
    let grouped = by_pool(tenants);
    for p in pools {
        if !healthy.contains(&p.id()) {
            if let Some(mut c) = view.get(p.number).cloned() {
                c.accepting = false;
                view.upsert(c);
            }
            continue;
        }
        let mine = tenants_of(&grouped, p.number);
        if mine.iter().all(|t| t.desired == Desired::Running) {
            let list = mine
                .iter()
                .map(|t| Resident {
                    slot: t.slot,
                    request: request_of(t),
                })
                .collect();
            residents.insert(p.number, list);
        }
    }
    (view, residents)
}

/// What `t` asks of a pool (its class is its spec's, which its pool has).
fn request_of(t: &TenantRow) -> Request {
    Request {
        memory_mb: t.memory_mb(),
        cpu_millis: t.cpu_millis(),
        class: t.spec.pool_class.clone(),
    }
}

fn find_pool(pools: &[PoolRow], number: u64) -> Result<&PoolRow> {
    pools
        .iter()
        .find(|p| p.number == number)
        .ok_or_else(|| ServiceError::Internal(format!("pool {number} vanished")))
}
