//! What the orchestrator reports: pool status, the latest health report,
//! Prometheus discovery targets and the metrics snapshot.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::agents::Endpoint;
use crate::metrics::Snapshot;
use crate::states::{Desired, PoolState};

impl Orchestrator {
    /// The latest `limit` lifecycle events (of `tenant`, if given), oldest first.
    pub fn events(&self, tenant: Option<&str>, limit: u32) -> Result<Vec<crate::db::EventRow>> {
        Ok(self.db.events(tenant, limit)?)
    }

    /// The latest health report, if a tick ran.
    pub fn last_health(&self) -> Option<HealthReport> {
        self.tick
            .last_report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every pool's agent as a Prometheus target (HTTP service discovery);
    /// agents serve `/metrics` without a token.
    pub fn metrics_targets(&self) -> Result<Vec<TargetGroup>> {
        Ok(self
            .db
            .pools()?
            .iter()
            .map(|p| TargetGroup {
                targets: vec![self.backend.agent_addr(&p.spec()).to_string()],
                labels: BTreeMap::from([
                    ("pool".to_string(), p.id().to_string()),
                    (
                        "class".to_string(),
                        p.class.clone().unwrap_or_else(|| "default".into()),
                    ),
                    ("deployment".to_string(), self.cfg.deployment.clone()),
                    ("backend".to_string(), self.backend.kind().to_string()),
                    (
                        "container".to_string(),
                        self.backend.container_name(&p.spec()),
                    ),
                ]),
            })
            .collect())
    }

    /// `GET /api/pool/status`, with live health from every agent (one
    /// call per pool, concurrently).
    pub async fn pool_status(&self) -> Result<PoolStatus> {
        let pools = self.db.pools()?;
        let images: HashMap<String, String> = self
            .db
            .classes()?
            .into_iter()
            .map(|(name, spec, _, _)| (name, spec.image))
            .collect();
        let tenants = self.db.tenants()?;
        let eps: Vec<Endpoint> = pools.iter().map(|p| self.endpoint(p)).collect();
        let lists = futures_util::future::join_all(eps.iter().map(|ep| self.agents.list(ep))).await;
        let reachable: HashMap<u64, bool> = pools
            .iter()
            .zip(&lists)
            .map(|(p, l)| (p.number, l.is_ok()))
            .collect();
        let healthy_ids: std::collections::HashSet<String> = lists
            .iter()
            .flatten()
            .flatten()
            .filter(|st| st.healthy)
            .map(|st| st.id.clone())
            .collect();
        let unreachable = |n: u64| !reachable.get(&n).copied().unwrap_or(false);
        let grouped = by_pool(&tenants);
        let infos: Vec<PoolInfo> = pools
            .iter()
            .map(|p| {
                let bots = tenants_of(&grouped, p.number);
                let id = p.id().to_string();
                PoolInfo {
                    status: if p.status == PoolState::Running && unreachable(p.number) {
                        "unreachable".into()
                    } else {
                        p.status.to_string()
                    },
                    container_name: self.backend.container_name(&p.spec()),
                    bots_count: bots.len() as u32,
                    capacity: p.slots,
                    utilization_percent: (bots.len() as u32 * 100 + p.slots / 2) / p.slots.max(1),
                    bots: bots.iter().map(|t| t.id.to_string()).collect(),
                    mode: p.mode.to_string(),
                    base_port: p.base_port,
                    memory_used_mb: bots.iter().map(|t| t.memory_mb()).sum(),
                    memory_mb: p.memory_mb,
                    class: p.class.clone(),
                    image: p.image.clone(),
                    node: p.node.clone(),
                    rolling_to: p
                        .class
                        .as_ref()
                        .and_then(|c| images.get(c))
                        .filter(|i| p.image.as_ref() != Some(*i))
                        .cloned(),
                    id,
                }
            })
            .collect();
        let healthy_pools = infos
            .iter()
            .filter(|p| p.status == PoolState::Running.as_str())
            .count() as u32;
        let healthy_bots = tenants
            .iter()
            .filter(|t| t.desired == Desired::Running && healthy_ids.contains(t.id.as_str()))
            .count() as u32;
        let total_bots = tenants
            .iter()
            .filter(|t| t.desired != Desired::Deleting)
            .count() as u32;
        let running_bots = tenants
            .iter()
            .filter(|t| t.desired == Desired::Running)
            .count() as u32;
        let status = if healthy_pools == infos.len() as u32 && healthy_bots >= running_bots {
            "healthy"
        } else if healthy_pools == 0 && !infos.is_empty() {
            "unhealthy"
        } else {
            "degraded"
        };
        let orphans = self
            .last_orphans()
            .into_iter()
            .map(|f| f.backend_ref)
            .collect();
        Ok(PoolStatus {
            orphans,
            success: true,
            pool_mode: self.cfg.pool_mode_enabled,
            total_pools: infos.len() as u32,
            total_bots,
            health: HealthSummary {
                status: status.into(),
                pools: Count {
                    total: infos.len() as u32,
                    healthy: healthy_pools,
                },
                bots: Count {
                    total: total_bots,
                    healthy: healthy_bots,
                },
            },
            pools: infos,
        })
    }

    /// Gauges for `/metrics`.
    pub async fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        if let Ok(pools) = self.db.pools() {
            for p in pools {
                *s.pools.entry(p.status.to_string()).or_default() += 1;
                if let Some(n) = &p.node {
                    *s.node_pools.entry(n.clone()).or_default() += 1;
                }
            }
        }
        if let Some(nodes) = self.backend.nodes() {
            for n in nodes {
                let state = match (n.ready, n.availability) {
                    (false, _) => "down",
                    (true, crate::nodes::Availability::Active) => "active",
                    (true, crate::nodes::Availability::Pause) => "paused",
                    (true, crate::nodes::Availability::Drain) => "drained",
                };
                *s.nodes.entry(state.to_string()).or_default() += 1;
                s.node_pools.entry(n.id).or_default();
            }
        }
        s.orphans = self.last_orphans().len() as u64;
        {
            let held = self.ledger.lock().await;
            for p in held.index().pools() {
                s.slots_used += p.used_slots.len() as u64;
                s.slots_free += u64::from(p.free_slots());
            }
        }
        if let Some(h) = self.last_health() {
            for b in &h.bots {
                *s.tenants.entry(b.state.clone()).or_default() += 1;
                s.restarts += b.restarts;
                if let Some(u) = &b.usage {
                    s.usage.insert(b.id.clone(), u.clone());
                }
            }
        }
        if let Ok(tokens) = self.tokens() {
            for t in tokens {
                let o = s.owners.entry(t.owner.clone()).or_default();
                (o.tenants, o.memory_mb) = (t.tenants, t.memory_mb);
                // An owner with several tokens: the most any of them allows.
                o.max_tenants = o.max_tenants.max(t.max_tenants);
                o.max_memory_mb = o.max_memory_mb.max(t.max_memory_mb);
            }
        }
        if let Some(l) = self.conn_limits() {
            s.connections = l.open() as u64;
            s.connections_refused = l.refused() as u64;
        }
        s
    }
}
