//! Prometheus metrics of the orchestrator: counters and a histogram updated
//! in place, gauges computed from a state snapshot at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A fixed-bucket histogram of durations.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Buckets with these upper bounds in seconds (+Inf is added).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, o: &mut String, name: &str, help: &str) {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Relaxed);
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            o,
            "{name}_sum {}",
            self.sum_nanos.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(o, "{name}_count {n}");
    }
}

/// Counters and histograms owned by the running orchestrator.
pub struct Metrics {
    /// Time of one placement decision.
    pub placement: Histogram,
    /// Proxied requests by status class (index 1..=5; 0 = no answer).
    pub proxy_requests: [AtomicU64; 6],
    /// Health ticks run.
    pub health_ticks: AtomicU64,
    /// Recovery actions taken.
    pub recovery_actions: AtomicU64,
    /// Tenants created.
    pub tenants_created: AtomicU64,
    /// Pools created.
    pub pools_created: AtomicU64,
    /// Tenants moved by consolidation.
    pub consolidation_moves: AtomicU64,
    /// Pools emptied and removed by consolidation.
    pub pools_drained: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            placement: Histogram::new(&[1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2]),
            proxy_requests: Default::default(),
            health_ticks: AtomicU64::new(0),
            recovery_actions: AtomicU64::new(0),
            tenants_created: AtomicU64::new(0),
            pools_created: AtomicU64::new(0),
            consolidation_moves: AtomicU64::new(0),
            pools_drained: AtomicU64::new(0),
        }
    }
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
}

impl Metrics {
    /// Count a proxied request by its status (None: no answer from the tenant).
    pub fn proxied(&self, status: Option<u16>) {
        let i = status.map_or(0, |s| (s / 100).clamp(1, 5) as usize);
        self.proxy_requests[i].fetch_add(1, Relaxed);
    }

    /// Render everything in Prometheus text format 0.0.4.
    pub fn render(&self, s: &Snapshot) -> String {
        let mut o = String::with_capacity(4096);
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(&mut o, "slotpack_pools", "gauge", "Pools by status.");
        for (st, n) in &s.pools {
            let _ = writeln!(o, "slotpack_pools{{status=\"{st}\"}} {n}");
        }
        head(&mut o, "slotpack_slots", "gauge", "Slots in use and free.");
        let _ = writeln!(o, "slotpack_slots{{state=\"used\"}} {}", s.slots_used);
        let _ = writeln!(o, "slotpack_slots{{state=\"free\"}} {}", s.slots_free);
        head(
            &mut o,
            "slotpack_tenants",
            "gauge",
            "Tenants by agent-reported state at the latest health tick.",
        );
        for (st, n) in &s.tenants {
            let _ = writeln!(o, "slotpack_tenants{{state=\"{st}\"}} {n}");
        }
        head(
            &mut o,
            "slotpack_tenant_restarts",
            "gauge",
            "Restarts of current tenants counted by their agents.",
        );
        let _ = writeln!(o, "slotpack_tenant_restarts {}", s.restarts);
        self.placement.render(
            &mut o,
            "slotpack_placement_seconds",
            "Time of one placement decision.",
        );
        head(
            &mut o,
            "slotpack_proxy_requests_total",
            "counter",
            "Requests proxied to tenants by status class.",
        );
        for (i, class) in ["error", "1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                o,
                "slotpack_proxy_requests_total{{code=\"{class}\"}} {}",
                self.proxy_requests[i].load(Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "slotpack_health_ticks_total",
                "Health ticks run.",
                &self.health_ticks,
            ),
            (
                "slotpack_recovery_actions_total",
                "Recovery actions taken.",
                &self.recovery_actions,
            ),
            (
                "slotpack_tenants_created_total",
                "Tenants created.",
                &self.tenants_created,
            ),
            (
                "slotpack_pools_created_total",
                "Pools created.",
                &self.pools_created,
            ),
            (
                "slotpack_consolidation_moves_total",
                "Tenants moved by consolidation.",
                &self.consolidation_moves,
            ),
            (
                "slotpack_pools_drained_total",
                "Pools emptied and removed by consolidation.",
                &self.pools_drained,
            ),
        ] {
            head(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", v.load(Relaxed));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.placement.observe(Duration::from_nanos(500));
        m.placement.observe(Duration::from_micros(7));
        m.placement.observe(Duration::from_secs(1));
        m.proxied(Some(204));
        m.proxied(None);
        let t = m.render(&Snapshot::default());
        assert!(
            t.contains("slotpack_placement_seconds_bucket{le=\"0.000001\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("slotpack_placement_seconds_bucket{le=\"0.00001\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("slotpack_placement_seconds_bucket{le=\"+Inf\"} 3"),
            "{t}"
        );
        assert!(t.contains("slotpack_proxy_requests_total{code=\"2xx\"} 1"));
        assert!(t.contains("slotpack_proxy_requests_total{code=\"error\"} 1"));
    }
}
