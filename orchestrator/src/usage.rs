//! A tenant's use of its resources as numbers and a level: CPU, memory and
//! disk, each as a value and as a percentage of the tenant's own limit.
//! Pure: the agent measures, this module judges.

use serde::{Deserialize, Serialize};
use slotpack_proto::protocol::ProgramStatus;
use utoipa::ToSchema;

/// At or above this percentage of any limit a tenant is at `warning`.
pub const WARNING_PERCENT: f64 = 80.0;
/// At or above this percentage of any limit a tenant is `critical`.
pub const CRITICAL_PERCENT: f64 = 95.0;

/// How close a tenant is to its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Every use below [`WARNING_PERCENT`] of its limit.
    Healthy,
    /// Some use at [`WARNING_PERCENT`] or more.
    Warning,
    /// Some use at [`CRITICAL_PERCENT`] or more.
    Critical,
}

impl Level {
    /// The level's name (`healthy`, `warning`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Healthy => "healthy",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    /// The level of one use at `percent` of its limit.
    pub fn of_percent(percent: f64) -> Level {
        if percent >= CRITICAL_PERCENT {
            Level::Critical
        } else if percent >= WARNING_PERCENT {
            Level::Warning
        } else {
            Level::Healthy
        }
    }
}

/// CPU use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuUse {
    /// Millicores used over the agent's latest sample second.
    pub millis: u64,
    /// Of `resources.cpuMillis` (a guaranteed share: idle CPU may take
    /// it past 100); `None` when the share is 0.
    pub percent: Option<f64>,
}

/// Memory use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryUse {
    /// Bytes the slot uses (its cgroup: resident, page cache, shmem, tmpfs).
    pub bytes: u64,
    /// Of `resources.memoryMb`.
    pub percent: Option<f64>,
}

/// Disk use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskUse {
    /// Bytes of the tenant's data (HOME and volumes), walked every ten
    /// seconds by the agent.
    pub bytes: u64,
    /// Of `resources.diskMb`.
    pub percent: Option<f64>,
}

/// A tenant's use against its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// CPU.
    pub cpu: CpuUse,
    /// Memory.
    pub memory: MemoryUse,
    /// Disk.
    pub disk: DiskUse,
    /// The worst level of the three.
    pub level: Level,
}

/// The limits a tenant's use is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `resources.cpuMillis`.
    pub cpu_millis: u64,
    /// `resources.memoryMb`.
    pub memory_mb: u64,
    /// `resources.diskMb`.
    pub disk_mb: u64,
}

fn percent(used: f64, limit: f64) -> Option<f64> {
    (limit > 0.0).then(|| (used / limit * 1000.0).round() / 10.0)
}

/// The use the agent reported in `st`, judged against `limits`.
pub fn of(st: &ProgramStatus, limits: Limits) -> Usage {
    const MIB: f64 = 1024.0 * 1024.0;
    let cpu = CpuUse {
        millis: st.cpu_millis,
        percent: percent(st.cpu_millis as f64, limits.cpu_millis as f64),
    };
    let memory = MemoryUse {
        bytes: st.rss_bytes,
        percent: percent(st.rss_bytes as f64, limits.memory_mb as f64 * MIB),
    };
    let disk = DiskUse {
        bytes: st.disk_bytes,
        percent: percent(st.disk_bytes as f64, limits.disk_mb as f64 * MIB),
    };
    let level = [cpu.percent, memory.percent, disk.percent]
        .into_iter()
        .flatten()
        .map(Level::of_percent)
        .max()
        .unwrap_or(Level::Healthy);
    Usage {
        cpu,
        memory,
        disk,
        level,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotpack_proto::protocol::ProgramState;

    fn status(cpu: u64, mem: u64, disk: u64) -> ProgramStatus {
        let mut s: ProgramStatus = serde_json::from_value(serde_json::json!({
            "id": "t", "state": "running", "pid": 1, "slot": 0, "port": 9000,
            "restarts": 0, "healthy": true, "lastExit": null, "lastPing": null,
            "rssBytes": 0, "startedAt": null
        }))
        .unwrap();
        assert_eq!(s.state, ProgramState::Running);
        (s.cpu_millis, s.rss_bytes, s.disk_bytes) = (cpu, mem, disk);
        s
    }

    const LIMITS: Limits = Limits {
        cpu_millis: 500,
        memory_mb: 100,
        disk_mb: 1000,
    };

    #[test]
    fn each_use_is_a_value_and_a_percentage_of_its_limit() {
        let u = of(&status(250, 10 << 20, 100 << 20), LIMITS);
        assert_eq!(u.cpu.percent, Some(50.0));
        assert_eq!(u.memory.percent, Some(10.0));
        assert_eq!(u.disk.percent, Some(10.0));
        assert_eq!(u.level, Level::Healthy);
        // No share: no percentage, and it does not count in the level.
        let u = of(
            &status(900, 0, 0),
            Limits {
                cpu_millis: 0,
                ..LIMITS
            },
        );
        assert_eq!((u.cpu.millis, u.cpu.percent), (900, None));
        assert_eq!(u.level, Level::Healthy);
    }

    #[test]
    fn the_level_is_the_worst_of_the_three_at_the_stated_thresholds() {
        assert_eq!(of(&status(399, 0, 0), LIMITS).level, Level::Healthy);
        assert_eq!(of(&status(400, 0, 0), LIMITS).level, Level::Warning);
        assert_eq!(of(&status(0, 95 << 20, 0), LIMITS).level, Level::Critical);
        assert_eq!(of(&status(0, 0, 800 << 20), LIMITS).level, Level::Warning);
        assert_eq!(
            of(&status(0, 81 << 20, 990 << 20), LIMITS).level,
            Level::Critical
        );
        assert_eq!(Level::Warning.as_str(), "warning");
    }
}
