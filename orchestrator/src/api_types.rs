//! JSON shapes of the orchestrator's REST API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use slotpack_proto::protocol::{PingSpec, RestartSpec, StopSpec};
use utoipa::ToSchema;

/// Resources a tenant reserves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Memory in MiB, 1 to a pool's memory (`SLOTPACK_POOL_MEMORY_MB`);
    /// also the program's memory limit.
    #[serde(default = "default_memory")]
    #[schema(minimum = 1)]
    pub memory_mb: u64,
    /// CPU in millicores, 0 to a pool's CPU (`SLOTPACK_POOL_CPU_MILLIS`).
    #[serde(default = "default_cpu")]
    pub cpu_millis: u64,
    /// Disk in MiB, 1 to 1048576 (default 1024): the size of the slot's
    /// private temporary folders (`/tmp`, `/var/tmp`, `/dev/shm`,
    /// `/run/lock` together; tmpfs, so they count in `memoryMb` as well).
    #[serde(default = "default_disk")]
    #[schema(minimum = 1, maximum = 1048576)]
    pub disk_mb: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            memory_mb: default_memory(),
            cpu_millis: default_cpu(),
            disk_mb: default_disk(),
        }
    }
}

fn default_memory() -> u64 {
    256
}
fn default_cpu() -> u64 {
    100
}
fn default_disk() -> u64 {
    1024
}

/// `POST /api/tenants` body; also what is stored of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTenant {
    /// Tenant id, `^[a-z0-9][a-z0-9_-]{0,62}$`.
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub id: slotpack_proto::protocol::TenantId,
    /// Owner (admin only; an owner token always creates for its owner).
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub owner: Option<String>,
    /// Program to run.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment (`PORT`, `SLOT`, `TENANT_ID`, `HOME` are set for it).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Reserved resources.
    #[serde(default)]
    pub resources: Resources,
    /// Health ping, as the agent's ProgramSpec.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub ping: Option<PingSpec>,
    /// Restart policy, as the agent's ProgramSpec.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub restart: RestartSpec,
    /// Stop signal and timeout, as the agent's ProgramSpec.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub stop: StopSpec,
    /// Pool class to place it in.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub pool_class: Option<String>,
    /// Seconds after creation at which the tenant is removed (1 to 10 years).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub max_lifetime_seconds: Option<u64>,
    /// Absolute folder in the pool the program starts in (default: its
    /// slot's home); the slot's user must be able to enter it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4096, pattern = "^/")]
    pub working_dir: Option<String>,
    /// The tenant's own durable folders, each at its absolute `path` in the
    /// slot's view (at most 8; not under `/proc`, `/sys` or `/dev`). Kept,
    /// like its home, through every move, update and restart; only the
    /// tenant's DELETE removes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>, max_items = 8)]
    pub volumes: Vec<slotpack_proto::protocol::VolumeSpec>,
}

/// Where a tenant runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Pool id.
    pub pool_id: String,
    /// Container (or local agent) name of the pool.
    pub container_name: String,
    /// Slot index.
    pub slot: u32,
    /// Port.
    pub port: u16,
    /// Host to reach the port on.
    pub host: String,
    /// `http://host:port`.
    pub url: String,
}

/// A tenant as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// Id.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// `running`, `stopped` or `deleting`: what the orchestrator wants.
    pub desired: String,
    /// What the agent reports (`running`, `backoff`, ...; `unknown` when unreachable).
    pub state: String,
    /// Running and answering its ping.
    pub healthy: bool,
    /// Restarts counted by the agent.
    pub restarts: u64,
    /// Where it runs.
    pub placement: Placement,
    /// Reserved resources.
    pub resources: Resources,
    /// Pool class.
    pub pool_class: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Unix time at which it is removed, if it has a lifetime.
    pub expires_at: Option<i64>,
    /// What went wrong lately, as the agent says it (e.g. a memory limit
    /// too small for the program's first run).
    pub message: Option<String>,
    /// RFC 3339 start of the current run, while one runs.
    #[serde(default)]
    pub started_at: Option<String>,
    /// CPU, memory and disk use against the tenant's limits, and its level
    /// (`healthy` below 80 % of every limit, `warning` from 80 %,
    /// `critical` from 95 %); absent while its agent does not answer.
    #[serde(default)]
    pub usage: Option<crate::usage::Usage>,
}

/// `POST /api/tenants` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantCreated {
    /// Always true.
    pub success: bool,
    /// The tenant.
    pub tenant: Tenant,
    /// Its placement.
    pub placement: Placement,
}

/// `GET /api/tenants/{id}` and action answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantEnvelope {
    /// Always true.
    pub success: bool,
    /// The tenant.
    pub tenant: Tenant,
}

/// `GET /api/tenants` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantList {
    /// Always true.
    pub success: bool,
    /// The tenants the caller may see.
    pub tenants: Vec<Tenant>,
}

/// `POST /api/tokens` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Owner the token acts for.
    pub owner: String,
    /// Most tenants of the owner when it uses this token (default:
    /// `SLOTPACK_MAX_TENANTS_PER_OWNER`).
    #[serde(default, rename = "maxTenants")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_tenants: Option<u64>,
    /// Most `memoryMb` of the owner's tenants together when it uses this
    /// token (default: `SLOTPACK_MAX_MEMORY_MB_PER_OWNER`).
    #[serde(default, rename = "maxMemoryMb")]
    #[schema(minimum = 1, maximum = 1000000000)]
    pub max_memory_mb: Option<u64>,
}

/// `POST /api/tokens` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// Always true.
    pub success: bool,
    /// Owner.
    pub owner: String,
    /// The token; shown once, stored only as a hash.
    pub token: String,
    /// Its id, which `GET /api/tokens` lists and `DELETE /api/tokens/{id}` revokes.
    pub id: String,
}

/// One pool in `GET /api/pool/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolInfo {
    /// Pool id.
    pub id: String,
    /// Container (or local agent) name.
    pub container_name: String,
    /// `running`, `starting`, `unreachable`, `failed`.
    pub status: String,
    /// Tenants in it.
    pub bots_count: u32,
    /// Slots.
    pub capacity: u32,
    /// botsCount / capacity in percent, rounded.
    pub utilization_percent: u32,
    /// Tenant ids.
    pub bots: Vec<String>,
    /// `pooled` or `legacy`.
    pub mode: String,
    /// First slot port.
    pub base_port: u16,
    /// Memory reserved / capacity in MiB.
    pub memory_used_mb: u64,
    /// Memory capacity in MiB.
    pub memory_mb: u64,
    /// Pool class (`null`: the default class).
    pub class: Option<String>,
    /// Image of the pool's container (`null`: `SLOTPACK_POOL_IMAGE`).
    pub image: Option<String>,
    /// Cluster node the pool runs on (swarm backend; `null` on one host).
    #[serde(default)]
    pub node: Option<String>,
    /// The image its class rolls to, while the pool still runs another
    /// (`null`: none; see the class's `roll`).
    #[serde(default)]
    pub rolling_to: Option<String>,
}

/// Totals and healthy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Count {
    /// All.
    pub total: u32,
    /// Healthy ones.
    pub healthy: u32,
}

/// Health summary in `GET /api/pool/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthSummary {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    /// Pools.
    pub pools: Count,
    /// Tenants.
    pub bots: Count,
}

/// `GET /api/pool/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Always true.
    pub success: bool,
    /// Whether pool mode is on.
    pub pool_mode: bool,
    /// Pools.
    pub total_pools: u32,
    /// Tenants.
    pub total_bots: u32,
    /// Per pool.
    pub pools: Vec<PoolInfo>,
    /// Health summary.
    pub health: HealthSummary,
    /// Pools the backend runs that the database has no row for, as the
    /// latest health tick found them: kept until named in a cleanup.
    pub orphans: Vec<String>,
}

/// Health of one pool in a health-check report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolHealth {
    /// Pool id.
    pub id: String,
    /// Agent answered.
    pub healthy: bool,
    /// Agent answer time in ms.
    pub latency_ms: Option<f64>,
}

/// Health of one tenant in a health-check report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotHealth {
    /// Tenant id.
    pub id: String,
    /// Pool id.
    pub pool_id: String,
    /// Agent-reported state.
    pub state: String,
    /// Running and answering its ping.
    pub healthy: bool,
    /// Restarts counted by the agent.
    pub restarts: u64,
    /// Use against its limits (see [`Tenant::usage`]).
    #[serde(default)]
    pub usage: Option<crate::usage::Usage>,
}

/// `POST /api/pool/health-check`: one health tick's findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Always true.
    pub success: bool,
    /// RFC 3339 time of the tick.
    pub timestamp: String,
    /// Per pool.
    pub pools: Vec<PoolHealth>,
    /// Per tenant.
    pub bots: Vec<BotHealth>,
    /// Problems seen.
    pub issues: Vec<String>,
    /// What was done about them.
    pub recovery_actions: Vec<String>,
    /// Length of the tick.
    pub duration_ms: u64,
}

/// `POST /api/pool/cleanup` body (optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleanupRequest {
    /// Orphaned pools to remove, by the name the health report and status
    /// give them (at most 100); nothing else removes them.
    #[serde(default)]
    pub orphans: Vec<String>,
}

/// `POST /api/pool/cleanup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupResult {
    /// Always true.
    pub success: bool,
    /// Pools removed.
    pub removed_pools: u32,
    /// For people.
    pub message: String,
}

/// Address of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Connection {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `http://host:port`.
    pub url: String,
}

/// `GET /api/pool/bot/{instanceId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotInfo {
    /// Always true.
    pub success: bool,
    /// Tenant id.
    pub instance_id: String,
    /// In a shared pool.
    pub is_pooled: bool,
    /// `pooled` or `legacy`.
    pub mode: String,
    /// Where to reach it.
    pub connection: Connection,
}

/// `GET /api/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenList {
    /// Always true.
    pub success: bool,
    /// Every owner token.
    pub tokens: Vec<TokenRow>,
}

/// One Prometheus target group (`GET /api/pool/metrics-targets`, the
/// format of Prometheus' HTTP service discovery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TargetGroup {
    /// `host:port` of one agent's `/metrics`.
    pub targets: Vec<String>,
    /// `pool`, `class`, `deployment`, `backend`, `container` of that agent.
    pub labels: BTreeMap<String, String>,
}

/// An owner token as listed (its secret is never stored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRow {
    /// First 16 hex digits of the token's SHA-256: what revocation names.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Most tenants of the owner with this token (its own or the server's).
    pub max_tenants: u64,
    /// Most `memoryMb` of the owner's tenants together with this token.
    pub max_memory_mb: u64,
    /// The owner's tenants now.
    pub tenants: u64,
    /// The owner's tenants' `memoryMb` now.
    pub memory_mb: u64,
    /// The token's own settings (`None`: the server's).
    #[serde(skip)]
    pub quota: crate::access::QuotaOverride,
}
