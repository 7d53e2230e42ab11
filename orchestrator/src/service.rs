//! The orchestrator's core: creates, changes and removes tenants, creates and
//! removes pools, runs the health tick and reconciliation.
//!
//! State ownership: the database owns desired state; the agents own what
//! runs; the [`Ledger`] is the one writer of placement state (pool rows,
//! tenant placement, the placement index and the proxy routes), under its
//! lock; no pool starts while a request holds that lock.
//!
//! The operations live in submodules by what they touch: `tenants` (the
//! tenant API), `pools` (placement, pool start, classes, warm slots,
//! cleanup), `health` (the tick and reconciliation), `consolidation`, and
//! `status` (reports, metrics, discovery). This file holds the state, its
//! construction and recovery, tokens, and the shared helpers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use slotpack_proto::protocol::is_valid_id;
use tokio::sync::Mutex;

use crate::ledger::Ledger;

use crate::agents::{AgentClient, AgentError, Agents, Endpoint};
use crate::api_types::*;
use crate::backend::{Backend, BackendError};
use crate::config::ServeConfig;
use crate::db::{by_pool, tenants_of, Db, DbError, PoolRow};
use crate::metrics::Metrics;
use crate::proxy::route_table::RouteTable;
use crate::states::PoolState;

mod consolidation;
mod health;
mod pools;
mod rolls;
mod status;
mod streams;
pub use streams::LogPlace;
mod tenants;
#[cfg(test)]
mod tests;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token.
    Admin,
    /// An owner token.
    Owner(String),
}

impl Caller {
    fn may_see(&self, owner: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Owner(o) => o == owner,
        }
    }

    /// The owner whose things alone it sees; `None` for the admin.
    pub fn owner(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Owner(o) => Some(o),
        }
    }
}

/// Errors of service operations; the API maps them to status codes.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Not allowed for this caller.
    #[error("{0}")]
    Forbidden(String),
    /// No such tenant (or not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// Over the owner's quota (403, code `quota_exceeded`).
    #[error("{0}")]
    Quota(String),
    /// An agent did not answer as it should (503).
    #[error("{0}")]
    Agent(#[source] AgentError),
    /// The backend could not start or remove a pool (503).
    #[error("{0}")]
    Backend(#[source] BackendError),
    /// The database failed (500).
    #[error("database failed")]
    Store(#[source] DbError),
    /// A state this process should never reach (500).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// Whether retrying later may succeed: a pool or agent is not available
    /// right now (503), as opposed to our own fault (500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ServiceError::Agent(_) | ServiceError::Backend(_))
    }
}

impl From<DbError> for ServiceError {
    /// A uniqueness rule the schema enforced is the caller's conflict;
    /// anything else is kept, with its source, as a database failure.
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(m) => ServiceError::Conflict(m),
            e => ServiceError::Store(e),
        }
    }
}

impl From<BackendError> for ServiceError {
    fn from(e: BackendError) -> Self {
        ServiceError::Backend(e)
    }
}

impl From<AgentError> for ServiceError {
    /// An agent's refusal is the caller's spec (e.g. a command the slot's
    /// user cannot run): a 400 with the agent's message. Anything else: 503.
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Refused { message, .. } => ServiceError::BadRequest(message),
            e => ServiceError::Agent(e),
        }
    }
}

type Result<T> = std::result::Result<T, ServiceError>;

/// `maxLifetimeSeconds`: one second to ten years.
pub const MAX_LIFETIME_SECONDS: std::ops::RangeInclusive<u64> = 1..=315_360_000;

/// The orchestrator.
pub struct Orchestrator {
    /// Settings.
    cfg: ServeConfig,
    /// Desired state (the database is reached through the operations only;
    /// placement rows are written by the ledger alone).
    db: Arc<Db>,
    /// The one owner of placement state: pool rows, tenant placement, the
    /// index and the proxy routes.
    ledger: Ledger,
    /// Where pools run.
    backend: Arc<dyn Backend>,
    /// The agents (HTTP; a fake in the service's tests).
    agents: Arc<dyn Agents>,
    /// Counters.
    metrics: Metrics,
    /// This deployment's note of its slot uids on the host (as root).
    uid_registry: Option<crate::uid_ranges::Registry>,
    /// What the health ticks keep between them (owned by `health`).
    tick: health::TickState,
    /// Asks the warm-slot refiller (a task of `serve`) to run, so that a
    /// create never waits for a warm pool to start.
    pub warm: tokio::sync::Notify,
    /// Owner tokens (the database's `tokens` table, mirrored so that
    /// authenticating a proxied request reads no SQLite; only this process
    /// writes tokens, and it changes both together), tenant-host sessions
    /// and the wake-up of open proxy streams.
    access: Arc<crate::access::Access>,
    /// The API's connection caps (set by `serve`), for the metrics.
    conn_limits: std::sync::OnceLock<Arc<crate::server::ConnLimits>>,
    /// One warm-slot refill at a time.
    warming: Mutex<()>,
    /// Open streams per credential (`SLOTPACK_MAX_STREAMS_PER_CLIENT`).
    streams: Arc<crate::streams::StreamSlots>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A fresh random token (32 hex digits).
pub fn random_token() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("system random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Orchestrator {
    /// Build the orchestrator (no I/O beyond what `db` and `backend` did).
    pub fn new(cfg: ServeConfig, db: Db, backend: Arc<dyn Backend>) -> Result<Self> {
        let agents = Arc::new(AgentClient::new(cfg.ping_timeout()));
        Self::with_agents(cfg, db, backend, agents)
    }

    /// [`Orchestrator::new`] with the given agents (the tests' fake).
    pub fn with_agents(
        cfg: ServeConfig,
        db: Db,
        backend: Arc<dyn Backend>,
        agents: Arc<dyn Agents>,
    ) -> Result<Self> {
        let access = Arc::new(crate::access::Access::new(db.token_hashes()?));
        let db = Arc::new(db);
        let ledger = Ledger::new(db.clone(), access.clone(), backend.clone());
        let streams = crate::streams::StreamSlots::new(cfg.max_streams_per_client);
        Ok(Self {
            streams,
            cfg,
            db,
            ledger,
            backend,
            agents,
            metrics: Metrics::default(),
            uid_registry: None,
            tick: health::TickState::default(),
            warm: tokio::sync::Notify::new(),
            access,
            conn_limits: std::sync::OnceLock::new(),
            warming: Mutex::new(()),
        })
    }

    /// Keep new pools' slot uids clear of other deployments, accounts and
    /// foreign processes, noting them in `registry`.
    pub fn with_uid_registry(mut self, registry: Option<crate::uid_ranges::Registry>) -> Self {
        self.uid_registry = registry;
        self
    }

    /// What the backend runs for pools the database has no row for. Never
    /// removed implicitly (it may be another deployment's, or hold data of
    /// a lost database): reported, and removed only by
    /// [`Orchestrator::remove_orphans`] naming it. The backend is listed
    /// before the database is read, so a pool made in between (its row is
    /// written before its container or process exists) is never taken for
    /// one.
    pub async fn find_orphans(&self) -> Result<Vec<crate::backend::FoundPool>> {
        let Ok(found) = self.backend.found_pools().await else {
            return Ok(Vec::new());
        };
        let known: Vec<u64> = self.db.pools()?.iter().map(|p| p.number).collect();
        Ok(found
            .into_iter()
            .filter(|f| f.number.is_none_or(|n| !known.contains(&n)))
            .collect())
    }

    /// Remove the orphans (backend references, as reported) the admin
    /// names; every name must be a current orphan, or nothing is removed.
    pub async fn remove_orphans(&self, names: &[String]) -> Result<u32> {
        let orphans = self.find_orphans().await?;
        if let Some(n) = names
            .iter()
            .find(|n| !orphans.iter().any(|o| &o.backend_ref == *n))
        {
            let known: Vec<&str> = orphans.iter().map(|o| o.backend_ref.as_str()).collect();
            return Err(ServiceError::BadRequest(format!(
                "{n:?} is not an orphaned pool; orphans now: [{}]",
                known.join(", ")
            )));
        }
        let mut removed = 0;
        for o in orphans.iter().filter(|o| names.contains(&o.backend_ref)) {
            self.backend.remove_found(o).await?;
            tracing::warn!(orphan = %o.backend_ref, "orphaned pool removed on request");
            removed += 1;
        }
        Ok(removed)
    }

    /// Its settings (read-only).
    pub fn cfg(&self) -> &ServeConfig {
        &self.cfg
    }

    /// Its counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Where its pools run.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    fn endpoint(&self, pool: &PoolRow) -> Endpoint {
        Endpoint {
            addr: self.backend.agent_addr(&pool.spec()),
            token: pool.token.clone(),
        }
    }

    /// Start-up: adopt or restart every pool, rebuild the placement index,
    /// remove pools the database does not know, reconcile everything.
    pub async fn recover(&self) -> Result<HealthReport> {
        for pool in self.db.pools()? {
            if pool.status == PoolState::Removing {
                // Its removal is finished by the tick.
                continue;
            }
            let (status, r) = match self.backend.start_pool(&pool.spec()).await {
                Ok(r) => (PoolState::Running, Some(r)),
                Err(e) => {
                    tracing::error!(pool = %pool.id(), error = %e, "pool did not start");
                    (PoolState::Failed, None)
                }
            };
            self.ledger
                .lock()
                .await
                .set_pool_status(pool.number, status, r.as_deref())?;
        }
        self.ledger.rebuild().await?;
        let mut issues = Vec::new();
        self.upgrade_layouts(&mut issues).await?;
        for i in &issues {
            tracing::warn!(issue = %i, "pool upgrade");
        }
        let mut report = self.health_tick().await;
        report.issues.extend(issues);
        Ok(report)
    }

    /// The proxy routes, for a port check at connect time (local backend
    /// as root: there, every tenant's listener must be its slot user's).
    pub fn port_guard(&self) -> Option<Arc<std::sync::RwLock<RouteTable>>> {
        (self.backend.kind().shares_the_api_network() && self.isolated())
            .then(|| self.ledger.routes().clone())
    }

    /// Create an owner token, with its own quota settings if given.
    pub fn create_token(&self, req: &CreateToken) -> Result<TokenCreated> {
        check_owner(&req.owner)?;
        let in_range = |name: &str, v: Option<u64>, r: std::ops::RangeInclusive<u64>| match v {
            Some(v) => {
                slotpack_proto::protocol::in_range(name, v, &r).map_err(ServiceError::BadRequest)
            }
            None => Ok(()),
        };
        in_range("maxTenants", req.max_tenants, 1..=1_000_000)?;
        in_range("maxMemoryMb", req.max_memory_mb, 1..=1_000_000_000)?;
        let quota = crate::access::QuotaOverride {
            max_tenants: req.max_tenants,
            max_memory_mb: req.max_memory_mb,
        };
        let token = format!("sp_{}", random_token());
        let hash = token_hash(&token);
        self.db.insert_token(&hash, &req.owner, quota)?;
        let id = hash[..16].to_string();
        self.access.add_token(hash, req.owner.clone(), quota);
        Ok(TokenCreated {
            success: true,
            owner: req.owner.clone(),
            token,
            id,
        })
    }

    /// When the next tick is due for a requeued tenant (a start waiting
    /// for its old copy to stop), if any is.
    pub fn next_requeue(&self) -> Option<std::time::Instant> {
        let q = self.tick.requeue.lock().unwrap_or_else(|e| e.into_inner());
        q.values().min().copied()
    }

    /// Record `e` in the event log, log it with its pool and tenant, and
    /// count it: every event of the service goes through here.
    pub fn emit(&self, e: &crate::events::Event) {
        let (kind, tenant, pool) = (e.kind(), e.tenant(), e.pool().map(|p| p.to_string()));
        let detail = e.detail();
        if let Err(err) = self.db.event(kind, tenant, pool.as_deref(), &detail) {
            tracing::warn!(kind, error = %err, "event not recorded");
        }
        tracing::info!(
            kind,
            tenant = tenant.unwrap_or_default(),
            pool = pool.as_deref().unwrap_or_default(),
            "{detail}"
        );
        self.metrics.events.with_label_values(&[kind]).inc();
        if matches!(e, crate::events::Event::Recovery(_)) {
            self.metrics.recovery_actions.inc();
        }
    }

    /// Every owner token (ids, owners, quotas and what the owner uses;
    /// never the secrets).
    pub fn tokens(&self) -> Result<Vec<crate::db::TokenRow>> {
        let usage = self.owner_usage()?;
        let mut rows = self.db.tokens()?;
        for r in &mut rows {
            let q = r.quota.over(self.default_quota());
            (r.max_tenants, r.max_memory_mb) = (q.max_tenants, q.max_memory_mb);
            (r.tenants, r.memory_mb) = usage.get(&r.owner).copied().unwrap_or_default();
        }
        Ok(rows)
    }

    /// Tenants and their `memoryMb` per owner (those being deleted count
    /// until they are gone).
    pub fn owner_usage(&self) -> Result<HashMap<String, (u64, u64)>> {
        let mut m: HashMap<String, (u64, u64)> = HashMap::new();
        for t in self.db.tenants()? {
            let e = m.entry(t.owner.clone()).or_default();
            e.0 += 1;
            e.1 += t.memory_mb();
        }
        Ok(m)
    }

    /// The server's quota settings.
    pub fn default_quota(&self) -> crate::access::Quota {
        crate::access::Quota {
            max_tenants: self.cfg.max_tenants_per_owner,
            max_memory_mb: self.cfg.max_memory_mb_per_owner,
        }
    }

    /// Revoke an owner token by its id: its next request answers 401, and
    /// what it holds open through the proxy ends.
    pub fn revoke_token(&self, id: &str) -> Result<String> {
        let owner = self
            .db
            .delete_token(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("token {id} not found")))?;
        self.access.remove_tokens(|hash, _| hash.starts_with(id));
        Ok(owner)
    }

    /// Revoke every token of `owner`; returns how many there were.
    pub fn revoke_owner_tokens(&self, owner: &str) -> Result<usize> {
        check_owner(owner)?;
        let n = self.db.delete_owner_tokens(owner)?;
        self.access.remove_tokens(|_, o| o == owner);
        if n == 0 {
            return Err(ServiceError::NotFound(format!(
                "owner {owner} has no tokens"
            )));
        }
        Ok(n)
    }

    /// Tokens, sessions and the proxy streams' wake-up.
    pub fn access(&self) -> &Arc<crate::access::Access> {
        &self.access
    }

    /// Remember the API's connection caps (for the metrics).
    pub fn set_conn_limits(&self, l: Arc<crate::server::ConnLimits>) {
        let _ = self.conn_limits.set(l);
    }

    /// The API's connection caps, once `serve` has set them.
    pub fn conn_limits(&self) -> Option<&Arc<crate::server::ConnLimits>> {
        self.conn_limits.get()
    }
}

/// The owner of tenants the admin creates without naming one; no owner
/// token can be made for it.
pub const ADMIN_OWNER: &str = "admin";

/// An owner name a token or tenant may carry: the id pattern, not `admin`.
fn check_owner(owner: &str) -> Result<()> {
    if !is_valid_id(owner) {
        return Err(ServiceError::BadRequest(format!(
            "invalid owner {owner:?}: want ^[a-z0-9][a-z0-9_-]{{0,62}}$"
        )));
    }
    if owner == ADMIN_OWNER {
        return Err(ServiceError::BadRequest(format!(
            "owner {ADMIN_OWNER:?} is reserved"
        )));
    }
    Ok(())
}

/// SHA-256 of a token, hex; what the database stores.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
