//! Prometheus metrics of the orchestrator, on the `prometheus` crate:
//! counters and a histogram updated in place, gauges computed from a state
//! snapshot at scrape time. Rendered in Prometheus text format 0.0.4.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Status classes of proxied requests; `error` is no answer from the tenant.
const PROXY_CODES: [&str; 6] = ["error", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Counters and histograms owned by the running orchestrator.
pub struct Metrics {
    registry: Registry,
    placement: Histogram,
    /// `slotpack_proxy_requests_total` by [`PROXY_CODES`], resolved once
    /// (no label lookup per proxied request).
    proxy_requests: [IntCounter; 6],
    /// Health ticks run.
    pub health_ticks: IntCounter,
    /// Recovery actions taken.
    pub recovery_actions: IntCounter,
    /// Tenants created.
    pub tenants_created: IntCounter,
    /// Tenants given a new spec (`PUT /api/tenants/{id}`).
    pub tenants_updated: IntCounter,
    /// Pools created.
    pub pools_created: IntCounter,
    /// Tenants moved by consolidation.
    pub consolidation_moves: IntCounter,
    /// Pools emptied and removed by consolidation.
    pub pools_drained: IntCounter,
    /// Creates refused by an owner's quota.
    pub quota_refused: IntCounter,
    /// Proxy streams (websockets, long answers) ended because what
    /// authorised them ended: a revoked token, a deleted, stopped or moved
    /// tenant.
    pub streams_ended: IntCounter,
    /// `slotpack_events_total` by event kind (see `events`).
    pub events: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let health_ticks = counter("slotpack_health_ticks_total", "Health ticks run.");
        let recovery_actions =
            counter("slotpack_recovery_actions_total", "Recovery actions taken.");
        let tenants_created = counter("slotpack_tenants_created_total", "Tenants created.");
        let tenants_updated = counter(
            "slotpack_tenants_updated_total",
            "Tenants given a new spec (PUT /api/tenants/{id}).",
        );
        let pools_created = counter("slotpack_pools_created_total", "Pools created.");
        let consolidation_moves = counter(
            "slotpack_consolidation_moves_total",
            "Tenants moved by consolidation.",
        );
        let pools_drained = counter(
            "slotpack_pools_drained_total",
            "Pools emptied and removed by consolidation.",
        );
        let quota_refused = counter(
            "slotpack_quota_refusals_total",
            "Creates refused by an owner's quota.",
        );
        let streams_ended = counter(
            "slotpack_proxy_streams_ended_total",
            "Proxy streams ended by a revocation, or a delete, stop or move of their tenant.",
        );
        let placement = Histogram::with_opts(
            HistogramOpts::new(
                "slotpack_placement_seconds",
                "Time of one placement decision.",
            )
            .buckets(vec![1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2]),
        )
        .expect("valid histogram");
        registry
            .register(Box::new(placement.clone()))
            .expect("unique name");
        let proxy_requests = IntCounterVec::new(
            Opts::new(
                "slotpack_proxy_requests_total",
                "Requests proxied to tenants by status class.",
            ),
            &["code"],
        )
        .expect("valid counter");
        registry
            .register(Box::new(proxy_requests.clone()))
            .expect("unique name");
        let events = IntCounterVec::new(
            Opts::new(
                "slotpack_events_total",
                "Events the orchestrator recorded, by kind (recovery, tenant.memory, ...).",
            ),
            &["kind"],
        )
        .expect("valid counter");
        registry
            .register(Box::new(events.clone()))
            .expect("unique name");
        // Every class is shown from the start, at 0.
        let proxy_requests = PROXY_CODES.map(|code| proxy_requests.with_label_values(&[code]));
        Self {
            registry,
            placement,
            proxy_requests,
            health_ticks,
            recovery_actions,
            tenants_created,
            tenants_updated,
            pools_created,
            consolidation_moves,
            pools_drained,
            quota_refused,
            streams_ended,
            events,
        }
    }
}

/// One owner's use and quota, in the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct OwnerQuota {
    /// Tenants now.
    pub tenants: u64,
    /// Their `memoryMb` together.
    pub memory_mb: u64,
    /// Most tenants allowed.
    pub max_tenants: u64,
    /// Most `memoryMb` allowed.
    pub max_memory_mb: u64,
}

/// State gauges at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Pools by status.
    pub pools: BTreeMap<String, u64>,
    /// Slots in use.
    pub slots_used: u64,
    /// Free slots.
    pub slots_free: u64,
    /// Tenants by agent-reported state at the latest tick.
    pub tenants: BTreeMap<String, u64>,
    /// Sum of agent-reported restarts at the latest tick.
    pub restarts: u64,
    /// Cluster nodes by state (`active`, `paused`, `drained`, `down`);
    /// empty on one-host backends.
    pub nodes: BTreeMap<String, u64>,
    /// Pools per cluster node.
    pub node_pools: BTreeMap<String, u64>,
    /// Use and quota of each owner that has a token.
    pub owners: BTreeMap<String, OwnerQuota>,
    /// API and proxy connections open.
    pub connections: u64,
    /// Connections refused by a cap since the start.
    pub connections_refused: u64,
    /// Pools the backend runs that the database has no row for (kept).
    pub orphans: u64,
    /// Each tenant's use against its limits at the latest tick.
    pub usage: BTreeMap<String, crate::usage::Usage>,
}

impl Snapshot {
    /// The gauges of this snapshot, in a registry of their own: made per
    /// scrape, so two scrapes at once never see each other's values.
    fn registry(&self) -> prometheus::Result<Registry> {
        let r = Registry::new();
        let by =
            |name: &str, help: &str, label: &str, values: &mut dyn Iterator<Item = (&str, u64)>| {
                let g = IntGaugeVec::new(Opts::new(name, help), &[label])?;
                for (k, v) in values {
                    g.with_label_values(&[k]).set(v as i64);
                }
                r.register(Box::new(g))
            };
        by(
            "slotpack_pools",
            "Pools by status.",
            "status",
            &mut self.pools.iter().map(|(k, v)| (k.as_str(), *v)),
        )?;
        by(
            "slotpack_slots",
            "Slots in use and free.",
            "state",
            &mut [("used", self.slots_used), ("free", self.slots_free)].into_iter(),
        )?;
        by(
            "slotpack_tenants",
            "Tenants by agent-reported state at the latest health tick.",
            "state",
            &mut self.tenants.iter().map(|(k, v)| (k.as_str(), *v)),
        )?;
        if !self.nodes.is_empty() || !self.node_pools.is_empty() {
            by(
                "slotpack_nodes",
                "Cluster nodes by state (swarm backend).",
                "state",
                &mut self.nodes.iter().map(|(k, v)| (k.as_str(), *v)),
            )?;
            by(
                "slotpack_node_pools",
                "Pools per cluster node (swarm backend).",
                "node",
                &mut self.node_pools.iter().map(|(k, v)| (k.as_str(), *v)),
            )?;
        }
        if !self.owners.is_empty() {
            let o = |f: fn(&OwnerQuota) -> u64| {
                self.owners.iter().map(move |(k, v)| (k.as_str(), f(v)))
            };
            by(
                "slotpack_owner_tenants",
                "Tenants of each owner.",
                "owner",
                &mut o(|q| q.tenants),
            )?;
            by(
                "slotpack_owner_memory_bytes",
                "Memory (memoryMb) of each owner's tenants together, in bytes.",
                "owner",
                &mut o(|q| q.memory_mb << 20),
            )?;
            by(
                "slotpack_owner_quota_tenants",
                "Most tenants each owner may have.",
                "owner",
                &mut o(|q| q.max_tenants),
            )?;
            by(
                "slotpack_owner_quota_memory_bytes",
                "Most memory (memoryMb) each owner may use, in bytes.",
                "owner",
                &mut o(|q| q.max_memory_mb << 20),
            )?;
        }
        let gauge = |name: &str, help: &str, v: u64| -> prometheus::Result<()> {
            let g = IntGauge::new(name, help)?;
            g.set(v as i64);
            r.register(Box::new(g))
        };
        gauge(
            "slotpack_orphan_pools",
            "Pools the backend runs that the database has no row for, at the latest tick (kept until an admin names them in a cleanup).",
            self.orphans,
        )?;
        gauge(
            "slotpack_api_connections",
            "API and proxy connections open.",
            self.connections,
        )?;
        gauge(
            "slotpack_api_connections_refused",
            "Connections refused by SLOTPACK_MAX_CONNECTIONS(_PER_CLIENT) since the start.",
            self.connections_refused,
        )?;
        if !self.usage.is_empty() {
            self.register_usage(&r)?;
        }
        let restarts = IntGauge::new(
            "slotpack_tenant_restarts",
            "Restarts of current tenants counted by their agents.",
        )?;
        restarts.set(self.restarts as i64);
        r.register(Box::new(restarts))?;
        Ok(r)
    }
}

impl Snapshot {
    /// Per-tenant use gauges: values, percentages of the limits, level.
    fn register_usage(&self, r: &Registry) -> prometheus::Result<()> {
        let each = |name: &str, help: &str, f: &dyn Fn(&crate::usage::Usage) -> u64| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["tenant"])?;
            for (t, u) in &self.usage {
                g.with_label_values(&[t.as_str()]).set(f(u) as i64);
            }
            r.register(Box::new(g))
        };
        each(
            "slotpack_tenant_cpu_millis",
            "CPU each tenant used over its agent's latest sample second, in millicores.",
            &|u| u.cpu.millis,
        )?;
        each(
            "slotpack_tenant_memory_bytes",
            "Memory each tenant's slot uses (its cgroup), in bytes.",
            &|u| u.memory.bytes,
        )?;
        each(
            "slotpack_tenant_disk_bytes",
            "Size of each tenant's data (HOME and volumes), in bytes.",
            &|u| u.disk.bytes,
        )?;
        each(
            "slotpack_tenant_level",
            "Each tenant's use level: 0 healthy (< 80 % of every limit), 1 warning (>= 80 %), 2 critical (>= 95 %).",
            &|u| u.level as u64,
        )?;
        let pct = prometheus::GaugeVec::new(
            Opts::new(
                "slotpack_tenant_usage_percent",
                "Each tenant's use as a percentage of its limit (cpuMillis, memoryMb, diskMb).",
            ),
            &["tenant", "resource"],
        )?;
        for (t, u) in &self.usage {
            for (res, p) in [
                ("cpu", u.cpu.percent),
                ("memory", u.memory.percent),
                ("disk", u.disk.percent),
            ] {
                if let Some(p) = p {
                    pct.with_label_values(&[t.as_str(), res]).set(p);
                }
            }
        }
        r.register(Box::new(pct))
    }
}

impl Metrics {
    /// Count a proxied request by its status (None: no answer from the tenant).
    pub fn proxied(&self, status: Option<u16>) {
        let i = status.map_or(0, |s| (s / 100).clamp(1, 5) as usize);
        self.proxy_requests[i].inc();
    }

    /// Record the time of one placement decision.
    pub fn placed(&self, took: Duration) {
        self.placement.observe(took.as_secs_f64());
    }

    /// Render the snapshot's gauges and every counter in Prometheus text
    /// format 0.0.4 ([`CONTENT_TYPE`]).
    pub fn render(&self, s: &Snapshot) -> String {
        let mut families = match s.registry() {
            Ok(r) => r.gather(),
            Err(e) => {
                tracing::error!(error = %e, "metrics snapshot");
                Vec::new()
            }
        };
        families.extend(self.registry.gather());
        let mut out = Vec::with_capacity(4096);
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_those_dashboards_query() {
        let m = Metrics::default();
        m.placed(Duration::from_nanos(500));
        m.placed(Duration::from_micros(7));
        m.placed(Duration::from_secs(1));
        m.proxied(Some(204));
        m.proxied(None);
        m.health_ticks.inc();
        let snap = Snapshot {
            pools: [("running".to_string(), 2)].into(),
            slots_used: 3,
            slots_free: 17,
            tenants: [("running".to_string(), 3)].into(),
            restarts: 4,
            nodes: [("active".to_string(), 2)].into(),
            node_pools: [("n1".to_string(), 2), ("n2".to_string(), 0)].into(),
            owners: [(
                "alice".to_string(),
                OwnerQuota {
                    tenants: 2,
                    memory_mb: 512,
                    max_tenants: 5,
                    max_memory_mb: 4096,
                },
            )]
            .into(),
            connections: 7,
            connections_refused: 1,
            orphans: 1,
            usage: [(
                "bot-1".to_string(),
                crate::usage::Usage {
                    cpu: crate::usage::CpuUse {
                        millis: 50,
                        percent: Some(50.0),
                    },
                    memory: crate::usage::MemoryUse {
                        bytes: 1 << 20,
                        percent: Some(85.0),
                    },
                    disk: crate::usage::DiskUse {
                        bytes: 4096,
                        percent: None,
                    },
                    level: crate::usage::Level::Warning,
                },
            )]
            .into(),
        };
        let t = m.render(&snap);
        for line in [
            "slotpack_placement_seconds_bucket{le=\"0.000001\"} 1",
            "slotpack_placement_seconds_bucket{le=\"0.00001\"} 2",
            "slotpack_placement_seconds_bucket{le=\"+Inf\"} 3",
            "slotpack_placement_seconds_count 3",
            "slotpack_proxy_requests_total{code=\"2xx\"} 1",
            "slotpack_proxy_requests_total{code=\"error\"} 1",
            "slotpack_proxy_requests_total{code=\"5xx\"} 0",
            "# TYPE slotpack_health_ticks_total counter",
            "slotpack_health_ticks_total 1",
            "slotpack_pools_drained_total 0",
            "slotpack_pools{status=\"running\"} 2",
            "slotpack_slots{state=\"used\"} 3",
            "slotpack_slots{state=\"free\"} 17",
            "slotpack_orphan_pools 1",
            "slotpack_tenants{state=\"running\"} 3",
            "slotpack_tenant_restarts 4",
            "slotpack_nodes{state=\"active\"} 2",
            "slotpack_node_pools{node=\"n1\"} 2",
            "slotpack_node_pools{node=\"n2\"} 0",
            "slotpack_owner_tenants{owner=\"alice\"} 2",
            "slotpack_owner_quota_memory_bytes{owner=\"alice\"} 4294967296",
            "slotpack_api_connections 7",
            "slotpack_quota_refusals_total 0",
            "slotpack_tenant_memory_bytes{tenant=\"bot-1\"} 1048576",
            "slotpack_tenant_cpu_millis{tenant=\"bot-1\"} 50",
            "slotpack_tenant_disk_bytes{tenant=\"bot-1\"} 4096",
            "slotpack_tenant_level{tenant=\"bot-1\"} 1",
            "slotpack_tenant_usage_percent{resource=\"memory\",tenant=\"bot-1\"} 85",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing in\n{t}");
        }
        // One host: no node series at all.
        let t = m.render(&Snapshot::default());
        assert!(!t.contains("slotpack_node"), "{t}");
    }
}
