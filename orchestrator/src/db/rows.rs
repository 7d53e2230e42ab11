//! Rows as the store hands them out.

use std::collections::HashMap;

use crate::states::{Desired, PoolMode, PoolState};

/// A pool as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    /// Number (never reused); the id is `pool-<number>`.
    pub number: u64,
    /// Port block index (reused once freed).
    pub block: u32,
    /// Port of slot 0.
    pub base_port: u16,
    /// Port of the agent API on 127.0.0.1.
    pub agent_port: u16,
    /// Uid of slot 0's programs (slot N: + N), kept as stored.
    pub uid_base: u32,
    /// Slots.
    pub slots: u32,
    /// Memory capacity in MiB.
    pub memory_mb: u64,
    /// CPU capacity in millicores.
    pub cpu_millis: u64,
    /// Pool class.
    pub class: Option<String>,
    /// Image of its container (docker backend), fixed when it was made;
    /// `None`: `SLOTPACK_POOL_IMAGE`.
    pub image: Option<String>,
    /// The cluster node it is pinned to (swarm backend); `None` elsewhere.
    pub node: Option<String>,
    /// Its storage layout: [`LAYOUT`] once it mounts the deployment's
    /// tenant data; 1 for pools made before, which kept homes inside.
    pub layout: u32,
    /// Shared, or one tenant's own.
    pub mode: PoolMode,
    /// Where its start stands.
    pub status: PoolState,
    /// The agent's API token.
    pub token: String,
    /// What the backend knows it by (pid, container id).
    pub backend_ref: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

#[cfg(test)]
impl PoolRow {
    /// A running shared pool of 4 slots (1 GiB, 1 CPU) for unit tests.
    pub fn for_tests(number: u64) -> PoolRow {
        PoolRow {
            number,
            block: number as u32,
            base_port: 9000,
            agent_port: 8999,
            uid_base: 10_000,
            slots: 4,
            memory_mb: 1024,
            cpu_millis: 1000,
            class: None,
            image: None,
            node: None,
            layout: LAYOUT,
            mode: PoolMode::Pooled,
            status: PoolState::Running,
            token: "t".into(),
            backend_ref: None,
            created_at: String::new(),
        }
    }
}

/// The storage layout of pools made now: tenant data is the deployment's
/// (see `backend::engine::tenants_volume`), not the pool's.
pub const LAYOUT: u32 = 2;

impl PoolRow {
    /// The pool's id (`pool-<number>` when shown).
    pub fn id(&self) -> PoolId {
        PoolId(self.number)
    }

    /// What the backend is told of it.
    pub fn spec(&self) -> crate::backend::PoolSpec {
        crate::backend::PoolSpec {
            id: self.id(),
            base_port: self.base_port,
            agent_port: self.agent_port,
            uid_base: self.uid_base,
            slots: self.slots,
            memory_mb: self.memory_mb,
            cpu_millis: self.cpu_millis,
            image: self.image.clone(),
            node: self.node.clone(),
            token: self.token.clone(),
            state_holds_homes: self.layout < LAYOUT,
        }
    }

    /// The port of `slot`: the one place a slot's port is computed. `None`
    /// for a slot the pool does not have (or a port past 65535, which
    /// `blocks` never hands out).
    pub fn slot_port(&self, slot: u32) -> Option<u16> {
        if slot >= self.slots {
            return None;
        }
        u16::try_from(u32::from(self.base_port) + slot).ok()
    }
}

/// A pool's id: its number, shown (and parsed) as `pool-<number>` only at
/// the edges (API, labels, file names, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub u64);

impl std::fmt::Display for PoolId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pool-{}", self.0)
    }
}

impl std::str::FromStr for PoolId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        pool_number(s)
            .map(PoolId)
            .ok_or_else(|| format!("{s:?} is not a pool id (pool-<number>)"))
    }
}

/// `pool-<number>`.
pub fn pool_id(number: u64) -> String {
    PoolId(number).to_string()
}

/// The number in `pool-<number>`.
pub fn pool_number(id: &str) -> Option<u64> {
    id.strip_prefix("pool-")?.parse().ok()
}

/// What a new pool needs; block and ports are allocated by [`super::Db::insert_pool`].
#[derive(Debug, Clone)]
pub struct NewPool {
    /// Slots.
    pub slots: u32,
    /// Ports per block (`MAX_BOTS_PER_CONTAINER`), the same for every pool.
    pub block_width: u32,
    /// Port of slot 0 of block 0.
    pub pool_base_port: u16,
    /// Uid of slot 0 of block 0 (`SLOT_UID_BASE`).
    pub uid_base: u32,
    /// Memory capacity in MiB.
    pub memory_mb: u64,
    /// CPU capacity in millicores.
    pub cpu_millis: u64,
    /// Class.
    pub class: Option<String>,
    /// Image (`None`: the default one).
    pub image: Option<String>,
    /// Node chosen for it (swarm backend).
    pub node: Option<String>,
    /// Shared, or one tenant's own.
    pub mode: PoolMode,
    /// Agent token.
    pub token: String,
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    /// Tenant id.
    pub id: slotpack_proto::protocol::TenantId,
    /// Owner.
    pub owner: String,
    /// The accepted spec (stored versioned, see `tenant_spec`).
    pub spec: crate::tenant_spec::TenantSpec,
    /// Pool number.
    pub pool: u64,
    /// Slot (its port is the pool's: [`PoolRow::slot_port`]).
    pub slot: u32,
    /// What is wanted of it.
    pub desired: Desired,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Unix time after which the tenant is removed.
    pub expires_at: Option<i64>,
}

impl TenantRow {
    /// Memory reserved in MiB (its spec's; the one copy).
    pub fn memory_mb(&self) -> u64 {
        self.spec.resources.memory_mb
    }

    /// CPU reserved in millicores (its spec's; the one copy).
    pub fn cpu_millis(&self) -> u64 {
        self.spec.resources.cpu_millis
    }

    /// The limits its use is judged against ([`crate::usage`]).
    pub fn usage_limits(&self) -> crate::usage::Limits {
        crate::usage::Limits {
            cpu_millis: self.cpu_millis(),
            memory_mb: self.memory_mb(),
            disk_mb: self.spec.resources.disk_mb,
        }
    }
}

/// Tenant rows grouped by pool number, in their original order.
pub fn by_pool(tenants: &[TenantRow]) -> HashMap<u64, Vec<&TenantRow>> {
    let mut m: HashMap<u64, Vec<&TenantRow>> = HashMap::new();
    for t in tenants {
        m.entry(t.pool).or_default().push(t);
    }
    m
}

/// The tenants of pool `number` in a [`by_pool`] grouping.
pub fn tenants_of<'a>(
    grouped: &'a HashMap<u64, Vec<&'a TenantRow>>,
    number: u64,
) -> &'a [&'a TenantRow] {
    grouped.get(&number).map_or(&[], Vec::as_slice)
}

/// An owner token as listed (an API shape; see `model`).
pub use crate::api_types::TokenRow;

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    /// Sequence number.
    pub seq: i64,
    /// RFC 3339 time.
    pub at: String,
    /// What happened (`tenant.placed`, `pool.created`, ...).
    pub kind: String,
    /// Tenant concerned.
    pub tenant: Option<String>,
    /// Pool concerned.
    pub pool: Option<String>,
    /// Free text.
    pub detail: String,
}

/// One tenant's migration from its legacy container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRow {
    /// Tenant id.
    pub tenant: String,
    /// Legacy container name.
    pub container: String,
    /// `docker inspect` JSON of the legacy container, taken before any change.
    pub backup: String,
    /// Last step reached (`backed-up`, `legacy-stopped`, `placed`, `verified`, `done`, `rolled-back`).
    pub status: String,
    /// Detail of the last step.
    pub detail: String,
}

/// Why a class's rolling image update gave up: the image, the pool whose
/// tenants failed on it (it went back to its old image), and what failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollFailure {
    /// The image the roll was to.
    pub image: String,
    /// The pool it failed in.
    pub pool: String,
    /// What failed.
    pub message: String,
    /// When (RFC 3339).
    pub at: String,
}
