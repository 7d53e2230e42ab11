//! The orchestrator's core: creates, changes and removes tenants, creates and
//! removes pools, runs the health tick and reconciliation.
//!
//! State ownership: the database owns desired state; the agents own what
//! runs; the [`PoolIndex`] (behind the placement lock) is derived from the
//! database and changed only while that lock is held, right after the
//! database change it mirrors. The lock also serialises pool creation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use slot_agent::protocol::{is_valid_id, ProgramSpec, ProgramStatus};
use tokio::sync::Mutex;

use crate::agent_client::{AgentClient, AgentError, Endpoint};
use crate::backend::Backend;
use crate::classes::{ClassInfo, ClassList, ClassSpec, Size};
use crate::config::ServeConfig;
use crate::db::{pool_id, Db, DbError, NewPool, PoolRow, TenantRow};
use crate::metrics::{Metrics, Snapshot};
use crate::model::*;
use crate::placement::{place, Decision, PoolCapacity, PoolIndex, Request};
use crate::reconcile::{plan, Action};
use crate::routes::{Route, Routes};
use crate::states::{Desired, PoolMode, PoolState};

mod consolidation;

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
    /// A pool or agent is not available right now.
    #[error("{0}")]
    Unavailable(String),
    /// Our own fault.
    #[error("{0}")]
    Internal(String),
}

impl From<DbError> for ServiceError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(m) => ServiceError::Conflict(m),
            e => ServiceError::Internal(e.to_string()),
        }
    }
}

impl From<AgentError> for ServiceError {
    /// An agent's 400 is the caller's spec (e.g. a command the slot's user
    /// cannot run): a 400 with the agent's message. Anything else: 503.
    fn from(e: AgentError) -> Self {
        match &e {
            AgentError::Status { status, body, .. } if status.as_u16() == 400 => {
                let message = serde_json::from_str::<slot_agent::protocol::ErrorBody>(body)
                    .map_or_else(|_| body.clone(), |b| b.error.message);
                ServiceError::BadRequest(message)
            }
            _ => ServiceError::Unavailable(e.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, ServiceError>;

/// `maxLifetimeSeconds`: one second to ten years.
pub const MAX_LIFETIME_SECONDS: std::ops::RangeInclusive<u64> = 1..=315_360_000;

/// The orchestrator.
pub struct Orchestrator {
    /// Settings.
    pub cfg: ServeConfig,
    /// Desired state.
    pub db: Db,
    /// Where pools run.
    pub backend: Arc<dyn Backend>,
    /// Client of the agents.
    pub agents: AgentClient,
    /// Counters.
    pub metrics: Metrics,
    placer: Mutex<PoolIndex>,
    /// Tenant id → owner, port, uid for the proxy's hot path; derived from
    /// the database, changed with the index (and on the way to deletion).
    routes: Arc<std::sync::RwLock<Routes>>,
    last_health: std::sync::Mutex<Option<HealthReport>>,
    /// One health tick at a time (loop, API and backend events).
    tick_lock: Mutex<()>,
    /// Failed restarts in a row per pool number (reset by a success).
    restart_failures: std::sync::Mutex<HashMap<u64, u32>>,
    /// The last tick left a start waiting for an old copy to stop.
    followup: std::sync::atomic::AtomicBool,
    /// The agent message last recorded as an event, per tenant.
    reported: std::sync::Mutex<HashMap<String, String>>,
    /// Asks the warm-slot refiller (a task of `serve`) to run, so that a
    /// create never waits for a warm pool to start.
    pub warm: tokio::sync::Notify,
    /// Owner tokens by hash: the database's `tokens` table, mirrored so that
    /// authenticating a (proxied) request reads no SQLite. Only this
    /// process writes tokens, and it changes both together.
    owner_tokens: std::sync::RwLock<HashMap<String, String>>,
    /// One warm-slot refill at a time.
    warming: Mutex<()>,
}

/// One pool's part of a health tick: what was found, what was done, and the
/// reconciliation steps still to apply.
struct PoolCheck {
    ep: Endpoint,
    pool_id: String,
    health: PoolHealth,
    bots: Vec<BotHealth>,
    issues: Vec<String>,
    actions: Vec<String>,
    tenants: Vec<TenantRow>,
    pending: Vec<Action>,
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
        let agents = AgentClient::new(cfg.ping_timeout());
        let owner_tokens = db.token_hashes()?.into_iter().collect();
        Ok(Self {
            cfg,
            db,
            backend,
            agents,
            metrics: Metrics::default(),
            placer: Mutex::new(PoolIndex::new()),
            routes: Arc::default(),
            last_health: std::sync::Mutex::new(None),
            tick_lock: Mutex::new(()),
            restart_failures: std::sync::Mutex::new(HashMap::new()),
            followup: std::sync::atomic::AtomicBool::new(false),
            reported: std::sync::Mutex::new(HashMap::new()),
            warm: tokio::sync::Notify::new(),
            owner_tokens: std::sync::RwLock::new(owner_tokens),
            warming: Mutex::new(()),
        })
    }

    fn endpoint(&self, pool: &PoolRow) -> Endpoint {
        Endpoint {
            addr: self.backend.agent_addr(pool),
            token: pool.token.clone(),
        }
    }

    fn capacity(pool: &PoolRow, tenants: &[&TenantRow]) -> PoolCapacity {
        PoolCapacity {
            number: pool.number,
            class: pool.class.clone(),
            slots: pool.slots,
            memory_mb: pool.memory_mb,
            cpu_millis: pool.cpu_millis,
            used_slots: tenants.iter().map(|t| t.slot).collect(),
            used_memory_mb: tenants.iter().map(|t| t.memory_mb).sum(),
            used_cpu_millis: tenants.iter().map(|t| t.cpu_millis).sum(),
            accepting: pool.mode == PoolMode::Pooled && pool.status == PoolState::Running,
        }
    }

    /// Start-up: adopt or restart every pool, rebuild the placement index,
    /// remove pools the database does not know, reconcile everything.
    pub async fn recover(&self) -> Result<HealthReport> {
        for pool in self.db.pools()? {
            match self.backend.start_pool(&pool).await {
                Ok(r) => self
                    .db
                    .set_pool_status(pool.number, PoolState::Running, Some(&r))?,
                Err(e) => {
                    tracing::error!(pool = %pool.id(), error = %e, "pool did not start");
                    self.db
                        .set_pool_status(pool.number, PoolState::Failed, None)?;
                }
            }
        }
        self.rebuild_index().await?;
        Ok(self.health_tick().await)
    }

    async fn rebuild_index(&self) -> Result<()> {
        let pools = self.db.pools()?;
        let tenants = self.db.tenants()?;
        let mut idx = PoolIndex::new();
        let grouped = by_pool(&tenants);
        for p in &pools {
            idx.upsert(Self::capacity(p, tenants_of(&grouped, p.number)));
        }
        let mut idx_guard = self.placer.lock().await;
        *idx_guard = idx;
        let by_number: HashMap<u64, &PoolRow> = pools.iter().map(|p| (p.number, p)).collect();
        *self.routes_mut() = tenants
            .iter()
            .filter(|t| t.desired != Desired::Deleting)
            .filter_map(|t| {
                Some((
                    t.id.clone(),
                    route(&t.owner, by_number.get(&t.pool)?, t.slot),
                ))
            })
            .collect();
        Ok(())
    }

    /// The proxy routes, for a port check at connect time (local backend
    /// as root: there, every tenant's listener must be its slot user's).
    pub fn port_guard(&self) -> Option<Arc<std::sync::RwLock<Routes>>> {
        (self.backend.name() == "local" && self.isolated()).then(|| self.routes.clone())
    }

    fn routes_mut(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        self.routes.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Mark a tenant as being deleted: the proxy stops at once.
    fn mark_deleting(&self, id: &str) -> Result<()> {
        self.db.set_desired(id, Desired::Deleting)?;
        self.routes_mut().remove(id);
        Ok(())
    }

    /// Check a create request; returns the owner and the stored request.
    fn check_create(&self, caller: &Caller, mut req: CreateTenant) -> Result<CreateTenant> {
        let bad = |m: String| Err(ServiceError::BadRequest(m));
        if !is_valid_id(&req.id) {
            return bad(format!(
                "invalid tenant id {:?}: want ^[a-z0-9][a-z0-9_-]{{0,62}}$",
                req.id
            ));
        }
        let owner = match (caller, req.owner.take()) {
            (Caller::Admin, Some(o)) => o,
            (Caller::Admin, None) => ADMIN_OWNER.to_string(),
            (Caller::Owner(me), Some(o)) if &o != me => {
                return Err(ServiceError::Forbidden(format!(
                    "an owner token creates tenants for its own owner only, not {o:?}"
                )))
            }
            (Caller::Owner(me), _) => me.clone(),
        };
        if !(owner == ADMIN_OWNER && *caller == Caller::Admin) {
            check_owner(&owner)?;
        }
        req.owner = Some(owner);
        if let Some(c) = &req.pool_class {
            if !is_valid_id(c) {
                return bad(format!("invalid poolClass {c:?}"));
            }
        }
        let (size, _) = self.class_of(&req.pool_class)?;
        let r = &req.resources;
        if r.memory_mb == 0 || r.memory_mb > size.memory_mb {
            return bad(format!(
                "resources.memoryMb must be 1..={} (a pool's memory)",
                size.memory_mb
            ));
        }
        if r.cpu_millis > size.cpu_millis {
            return bad(format!(
                "resources.cpuMillis must be at most {} (a pool's cpu)",
                size.cpu_millis
            ));
        }
        if let Some(v) = req.max_lifetime_seconds {
            slot_agent::protocol::in_range("maxLifetimeSeconds", v, &MAX_LIFETIME_SECONDS)
                .map_err(ServiceError::BadRequest)?;
        }
        slot_agent::protocol::check_spec(&program_spec(&req, 0, 0))
            .map_err(ServiceError::BadRequest)?;
        Ok(req)
    }

    /// Whether slots get their own uids: always in containers (the agent is
    /// root there), on the local backend only when this process is root.
    pub fn isolated(&self) -> bool {
        self.backend.name() != "local" || nix::unistd::geteuid().is_root()
    }

    /// Without isolation, tenants of a second owner are refused (unless
    /// `SLOTPACK_ALLOW_SHARED_UID`): they would share one uid with the first.
    fn check_isolation(&self, owner: &str) -> Result<()> {
        if self.isolated() || self.cfg.allow_shared_uid {
            return Ok(());
        }
        let others = self.db.tenants()?.into_iter().any(|t| t.owner != owner);
        if others {
            return Err(ServiceError::Forbidden(format!(
                "slot isolation is off (slotpack serve is not root), so tenants of \
                 different owners would share one uid and could read each other's \
                 files and this server's environment (its admin token); run it as \
                 root, or set SLOTPACK_ALLOW_SHARED_UID=true to accept that \
                 (owner {owner:?} refused)"
            )));
        }
        Ok(())
    }

    /// Create and place a tenant. Returns the tenant and whether it was
    /// created (false: the same request had already been accepted).
    pub async fn create_tenant(
        &self,
        caller: &Caller,
        req: CreateTenant,
    ) -> Result<(Tenant, bool)> {
        let req = self.check_create(caller, req)?;
        self.check_isolation(req.owner.as_deref().unwrap_or_default())?;
        let stored =
            serde_json::to_string(&req).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let want = Request {
            memory_mb: req.resources.memory_mb,
            cpu_millis: req.resources.cpu_millis,
            class: req.pool_class.clone(),
        };
        let mut idx = self.placer.lock().await;
        if let Some(old) = self.already(caller, &req.id, &stored)? {
            drop(idx);
            return Ok((self.view(&old).await?, false));
        }
        let (prow, slot) = match self.decide(&idx, &want) {
            Decision::Place { pool, slot } => {
                let row = self
                    .db
                    .pool(pool)?
                    .ok_or_else(|| ServiceError::Internal(format!("{} vanished", pool_id(pool))))?;
                (row, slot)
            }
            Decision::NewPool => {
                // The pool's rows are taken under the lock; it starts without
                // it (up to 30 s), so other creates are not held. Nobody else
                // places into it: it joins the index only below.
                let reserved = self.reserve_pool(want.class.clone())?;
                drop(idx);
                let started = self.start_reserved(reserved).await?;
                idx = self.placer.lock().await;
                idx.upsert(Self::capacity(&started, &[]));
                if let Some(old) = self.already(caller, &req.id, &stored)? {
                    // The same request won meanwhile; the new pool stays free.
                    drop(idx);
                    return Ok((self.view(&old).await?, false));
                }
                (started, 0)
            }
        };
        let row = TenantRow {
            id: req.id.clone(),
            owner: req.owner.clone().unwrap_or_default(),
            spec: stored,
            pool: prow.number,
            slot,
            port: prow.base_port + slot as u16,
            memory_mb: want.memory_mb,
            cpu_millis: want.cpu_millis,
            desired: Desired::Running,
            created_at: slot_agent::clock::now_rfc3339(),
            expires_at: req.max_lifetime_seconds.map(|s| unix_now() + s as i64),
        };
        self.db.insert_tenant(&row)?;
        idx.take(prow.number, slot, &want);
        self.routes_mut()
            .insert(row.id.clone(), route(&row.owner, &prow, slot));
        drop(idx);
        // Committed: from here on the reconciler would finish the job after a crash.
        let pool = self
            .db
            .pool(row.pool)?
            .ok_or_else(|| ServiceError::Internal("pool vanished".into()))?;
        let spec = program_spec(&req, row.slot, row.port);
        let status = match self.agents.put(&self.endpoint(&pool), &row.id, &spec).await {
            Ok(st) => st,
            Err(e) => {
                self.forget_tenant(&row.id, &format!("agent refused it: {e}"))
                    .await?;
                return Err(e.into());
            }
        };
        self.metrics.tenants_created.fetch_add(1, Relaxed);
        // Refilled off the request path.
        self.warm.notify_one();
        // The agent's answer to the PUT is the tenant's state: no second call.
        Ok((self.compose(&row, &pool, Some(&status)), true))
    }

    /// The stored tenant `id` if this very request was accepted before
    /// (answered 200); an error if the id is taken otherwise (another
    /// owner's is answered as GET answers it); `None` if it is free.
    fn already(&self, caller: &Caller, id: &str, stored: &str) -> Result<Option<TenantRow>> {
        let Some(old) = self.db.tenant(id)? else {
            return Ok(None);
        };
        if old.spec == stored && old.desired != Desired::Deleting {
            return Ok(Some(old));
        }
        if !caller.may_see(&old.owner) {
            return Err(ServiceError::NotFound(format!("tenant {id} not found")));
        }
        Err(ServiceError::Conflict(format!("tenant {id} exists")))
    }

    /// Where `want` goes: a placement decision, or a new pool when nothing
    /// fits (always in legacy mode). Pure but for the timing metric.
    fn decide(&self, idx: &PoolIndex, want: &Request) -> Decision {
        let started = Instant::now();
        let decision = if self.cfg.pool_mode_enabled {
            place(idx, want, self.cfg.placement)
        } else {
            Decision::NewPool
        };
        self.metrics.placement.observe(started.elapsed());
        decision
    }

    /// [`Self::decide`], starting a new pool when needed with the placement
    /// lock held (for moves inside a health tick, which are rare).
    async fn choose_slot(&self, idx: &mut PoolIndex, want: &Request) -> Result<(PoolRow, u32)> {
        match self.decide(idx, want) {
            Decision::Place { pool, slot } => {
                let row = self
                    .db
                    .pool(pool)?
                    .ok_or_else(|| ServiceError::Internal(format!("{} vanished", pool_id(pool))))?;
                Ok((row, slot))
            }
            Decision::NewPool => Ok((self.new_pool(idx, want.class.clone()).await?, 0)),
        }
    }

    /// Insert and start a pool, and add it to the index (placement lock held).
    async fn new_pool(&self, idx: &mut PoolIndex, class: Option<String>) -> Result<PoolRow> {
        let row = self.start_reserved(self.reserve_pool(class)?).await?;
        // A legacy pool is not accepting: it belongs to the one tenant it is made for.
        idx.upsert(Self::capacity(&row, &[]));
        Ok(row)
    }

    /// Store a new pool of `class` (`starting`): its port block and slot
    /// users are taken. Quick; called with the placement lock held.
    fn reserve_pool(&self, class: Option<String>) -> Result<PoolRow> {
        let legacy = !self.cfg.pool_mode_enabled;
        let (size, image) = self.class_of(&class)?;
        let slots = if legacy { 1 } else { size.slots };
        Ok(self.db.insert_pool(
            &NewPool {
                slots,
                block_width: self.cfg.max_bots_per_container,
                pool_base_port: self.cfg.pool_base_port,
                uid_base: self.cfg.slot_uid_base,
                memory_mb: size.memory_mb,
                cpu_millis: size.cpu_millis,
                class,
                image,
                mode: if legacy {
                    PoolMode::Legacy
                } else {
                    PoolMode::Pooled
                },
                token: random_token(),
            },
            |b| self.backend.ports_free(b, slots),
        )?)
    }

    /// Start a reserved pool (no lock needed: health ticks leave `starting`
    /// pools alone). On failure the pool is removed again.
    async fn start_reserved(&self, row: PoolRow) -> Result<PoolRow> {
        match self.backend.start_pool(&row).await {
            Ok(r) => self
                .db
                .set_pool_status(row.number, PoolState::Running, Some(&r))?,
            Err(e) => {
                let _ = self.backend.remove_pool(&row).await;
                self.db
                    .delete_pool(row.number, &format!("start failed: {e}"))?;
                return Err(ServiceError::Unavailable(e.to_string()));
            }
        }
        self.metrics.pools_created.fetch_add(1, Relaxed);
        Ok(self.db.pool(row.number)?.unwrap_or(row))
    }

    /// The size of `class`'s pools and their image (`None`: the default
    /// class, or a class without an image of its own).
    fn class_of(&self, class: &Option<String>) -> Result<(Size, Option<String>)> {
        let default = self.default_size();
        let Some(name) = class else {
            return Ok((default, None));
        };
        let spec = self.db.class(name)?.ok_or_else(|| {
            let known: Vec<String> = self
                .db
                .classes()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.0)
                .collect();
            ServiceError::BadRequest(format!(
                "unknown poolClass {name:?}; defined: [{}] (PUT /api/pool/classes/{{name}} or [classes.<name>] in the config file)",
                known.join(", ")
            ))
        })?;
        Ok((spec.size(default), Some(spec.image)))
    }

    /// Size of the default class's pools.
    fn default_size(&self) -> Size {
        Size {
            slots: self.cfg.max_bots_per_container,
            memory_mb: self.cfg.pool_memory_mb,
            cpu_millis: self.cfg.pool_cpu_millis,
        }
    }

    /// Define (or change) class `name` (admin). A changed image or size
    /// applies to the class's new pools; running ones keep theirs.
    pub async fn put_class(&self, name: &str, spec: ClassSpec, from_config: bool) -> Result<bool> {
        crate::classes::check(name, &spec, self.cfg.max_bots_per_container)
            .map_err(ServiceError::BadRequest)?;
        self.backend
            .check_image(&spec.image)
            .await
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        let existed = self.db.class(name)?;
        self.db.put_class(name, &spec, from_config)?;
        if existed.as_ref() == Some(&spec) {
            return Ok(false);
        }
        self.db.event(
            "class.defined",
            None,
            None,
            &format!(
                "{name}: {}",
                serde_json::to_string(&spec).unwrap_or_default()
            ),
        )?;
        Ok(existed.is_none())
    }

    /// Every class, with its sizes filled in.
    pub fn classes(&self) -> Result<ClassList> {
        let default = self.default_size();
        let classes = self
            .db
            .classes()?
            .into_iter()
            .map(|(name, spec, from_config, pools)| {
                let size = spec.size(default);
                ClassInfo {
                    name,
                    image: spec.image,
                    slots: size.slots,
                    memory_mb: size.memory_mb,
                    cpu_millis: size.cpu_millis,
                    pools,
                    from_config,
                }
            })
            .collect();
        Ok(ClassList {
            success: true,
            default_image: self.cfg.pool_image.clone(),
            classes,
        })
    }

    /// Remove class `name` (admin); 409 while it has pools.
    pub fn delete_class(&self, name: &str) -> Result<()> {
        if !self.db.delete_class(name)? {
            return Err(ServiceError::NotFound(format!("no class {name}")));
        }
        self.db.event("class.deleted", None, None, name)?;
        Ok(())
    }

    /// Keep `SLOTPACK_WARM_SLOTS` free slots in the default class.
    pub async fn keep_warm(&self) {
        if self.cfg.warm_slots == 0 || !self.cfg.pool_mode_enabled {
            return;
        }
        // One refill at a time (the refill task and health ticks both ask);
        // the placement lock is held only to count and to reserve, never
        // while a pool starts, so creates go on meanwhile.
        let _one = self.warming.lock().await;
        loop {
            let reserved = {
                let idx = self.placer.lock().await;
                if idx.free_slots(&None) >= u64::from(self.cfg.warm_slots) {
                    return;
                }
                self.reserve_pool(None)
            };
            let started = match reserved {
                Ok(r) => self.start_reserved(r).await,
                Err(e) => Err(e),
            };
            match started {
                Ok(row) => self.placer.lock().await.upsert(Self::capacity(&row, &[])),
                Err(e) => {
                    tracing::warn!(error = %e, "no warm pool");
                    return;
                }
            }
        }
    }

    /// Drop a tenant row and free its slot, if the row still exists.
    async fn forget_tenant(&self, id: &str, why: &str) -> Result<()> {
        let mut idx = self.placer.lock().await;
        if let Some(t) = self.db.tenant(id)? {
            self.db.delete_tenant(id, why)?;
            self.routes_mut().remove(id);
            idx.release(t.pool, t.slot, t.memory_mb, t.cpu_millis);
            if let Some(p) = self.db.pool(t.pool)? {
                if p.mode == PoolMode::Legacy {
                    // A legacy pool ends with its tenant.
                    drop(idx);
                    self.remove_pool(&p, "its legacy tenant is gone").await?;
                }
            }
        }
        Ok(())
    }

    /// Forget the pool, then remove it from the backend. In this order a
    /// health tick can never start again a pool that is on its way out; a
    /// crash in between leaves an orphan that the next tick removes.
    async fn remove_pool(&self, pool: &PoolRow, why: &str) -> Result<()> {
        self.db.delete_pool(pool.number, why)?;
        self.placer.lock().await.remove(pool.number);
        self.backend
            .remove_pool(pool)
            .await
            .map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    /// The tenant `id` if the caller may see it.
    fn visible(&self, caller: &Caller, id: &str) -> Result<TenantRow> {
        match self.db.tenant(id)? {
            Some(t) if caller.may_see(&t.owner) && t.desired != Desired::Deleting => Ok(t),
            _ => Err(ServiceError::NotFound(format!("tenant {id} not found"))),
        }
    }

    fn pool_of(&self, t: &TenantRow) -> Result<PoolRow> {
        self.db.pool(t.pool)?.ok_or_else(|| {
            ServiceError::Internal(format!("{} of {} missing", pool_id(t.pool), t.id))
        })
    }

    /// One tenant with its live state.
    pub async fn get_tenant(&self, caller: &Caller, id: &str) -> Result<Tenant> {
        let t = self.visible(caller, id)?;
        self.view(&t).await
    }

    async fn view(&self, t: &TenantRow) -> Result<Tenant> {
        let pool = self.pool_of(t)?;
        let observed = self.agents.get(&self.endpoint(&pool), &t.id).await.ok();
        Ok(self.compose(t, &pool, observed.as_ref()))
    }

    fn compose(&self, t: &TenantRow, pool: &PoolRow, st: Option<&ProgramStatus>) -> Tenant {
        let req: Option<CreateTenant> = serde_json::from_str(&t.spec).ok();
        Tenant {
            id: t.id.clone(),
            owner: t.owner.clone(),
            desired: t.desired.to_string(),
            state: st.map_or("unknown".into(), |s| s.state.as_str().to_string()),
            healthy: st.is_some_and(|s| s.healthy),
            restarts: st.map_or(0, |s| s.restarts),
            placement: self.placement(t, pool),
            resources: Resources {
                memory_mb: t.memory_mb,
                cpu_millis: t.cpu_millis,
            },
            pool_class: req.and_then(|r| r.pool_class),
            created_at: t.created_at.clone(),
            expires_at: t.expires_at,
            message: st.and_then(|s| s.message.clone()),
        }
    }

    fn placement(&self, t: &TenantRow, pool: &PoolRow) -> Placement {
        let host = self.cfg.public_host.clone();
        Placement {
            pool_id: pool.id(),
            container_name: self.backend.container_name(pool),
            slot: t.slot,
            port: t.port,
            url: format!("http://{host}:{}", t.port),
            host,
        }
    }

    /// Every tenant the caller may see, with live states (one agent call per pool).
    pub async fn list_tenants(&self, caller: &Caller) -> Result<Vec<Tenant>> {
        let tenants: Vec<TenantRow> = self
            .db
            .tenants()?
            .into_iter()
            .filter(|t| caller.may_see(&t.owner) && t.desired != Desired::Deleting)
            .collect();
        let pools: HashMap<u64, PoolRow> = self
            .db
            .pools()?
            .into_iter()
            .map(|p| (p.number, p))
            .collect();
        let mut observed: HashMap<String, ProgramStatus> = HashMap::new();
        let wanted: Vec<&PoolRow> = pools
            .values()
            .filter(|p| tenants.iter().any(|t| t.pool == p.number))
            .collect();
        let eps: Vec<Endpoint> = wanted.iter().map(|p| self.endpoint(p)).collect();
        let lists = futures_util::future::join_all(eps.iter().map(|ep| self.agents.list(ep))).await;
        for l in lists.into_iter().flatten() {
            observed.extend(l.into_iter().map(|s| (s.id.clone(), s)));
        }
        Ok(tenants
            .iter()
            .filter_map(|t| Some(self.compose(t, pools.get(&t.pool)?, observed.get(&t.id))))
            .collect())
    }

    /// Stop the tenant and free its slot.
    pub async fn delete_tenant(&self, caller: &Caller, id: &str) -> Result<()> {
        let t = self.visible(caller, id)?;
        self.mark_deleting(id)?;
        self.finish_delete(&t, "deleted through the API").await
    }

    async fn finish_delete(&self, t: &TenantRow, why: &str) -> Result<()> {
        let pool = self.pool_of(t)?;
        let stop = Duration::from_millis(stop_timeout_ms(t)) + Duration::from_secs(2);
        self.agents
            .delete(&self.endpoint(&pool), &t.id, stop)
            .await?;
        self.forget_tenant(&t.id, why).await
    }

    /// `start`, `stop` or `restart` a tenant.
    pub async fn act(&self, caller: &Caller, id: &str, action: &str) -> Result<Tenant> {
        let t = self.visible(caller, id)?;
        let pool = self.pool_of(&t)?;
        let ep = self.endpoint(&pool);
        let desired = if action == "stop" {
            Desired::Stopped
        } else {
            Desired::Running
        };
        self.db.set_desired(id, desired)?;
        let stop = Duration::from_millis(stop_timeout_ms(&t)) + Duration::from_secs(2);
        if desired == Desired::Running {
            // The stored spec first (no change if the agent holds it): a
            // program the agent lost, or whose spec was changed behind our
            // back, runs as stored.
            self.put_program(&ep, &t, t.slot, t.port).await?;
        }
        match self.agents.action(&ep, id, action, stop).await {
            Err(e) if e.is_not_found() && desired == Desired::Stopped => {}
            r => {
                r?;
            }
        }
        let t = self.visible(caller, id)?;
        self.view(&t).await
    }

    /// The tenant's last log lines.
    pub async fn logs(&self, caller: &Caller, id: &str, tail: usize) -> Result<axum::body::Bytes> {
        let t = self.visible(caller, id)?;
        let pool = self.pool_of(&t)?;
        Ok(self.agents.logs(&self.endpoint(&pool), id, tail).await?)
    }

    /// The tenant's address, for the proxy (memory only, no database).
    pub fn proxy_target(&self, caller: &Caller, id: &str) -> Result<std::net::SocketAddr> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        match routes.get(id) {
            Some(r) if caller.may_see(&r.owner) => {
                Ok(std::net::SocketAddr::from(([127, 0, 0, 1], r.port)))
            }
            _ => Err(ServiceError::NotFound(format!("tenant {id} not found"))),
        }
    }

    /// Connection info of a tenant (`GET /api/pool/bot/{id}`).
    pub fn bot_info(&self, caller: &Caller, id: &str) -> Result<BotInfo> {
        let t = self.visible(caller, id)?;
        let pool = self.pool_of(&t)?;
        let p = self.placement(&t, &pool);
        let pooled = pool.mode == PoolMode::Pooled;
        Ok(BotInfo {
            success: true,
            instance_id: t.id,
            is_pooled: pooled,
            mode: pool.mode.to_string(),
            connection: Connection {
                host: p.host,
                port: p.port,
                url: p.url,
            },
        })
    }

    /// Create an owner token.
    pub fn create_token(&self, owner: &str) -> Result<TokenCreated> {
        check_owner(owner)?;
        let token = format!("sp_{}", random_token());
        let hash = token_hash(&token);
        self.db.insert_token(&hash, owner)?;
        self.owner_tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, owner.to_string());
        self.db.event("token.created", None, None, owner)?;
        Ok(TokenCreated {
            success: true,
            owner: owner.to_string(),
            token,
        })
    }

    /// Whether the last tick left work that a tick soon should finish (a
    /// start waiting for an old copy of the tenant to stop).
    pub fn wants_followup(&self) -> bool {
        self.followup.load(Relaxed)
    }

    /// Every owner token (ids and owners, never the secrets).
    pub fn tokens(&self) -> Result<Vec<crate::db::TokenRow>> {
        Ok(self.db.tokens()?)
    }

    /// Revoke an owner token by its id: its next request answers 401.
    pub fn revoke_token(&self, id: &str) -> Result<String> {
        let owner = self
            .db
            .delete_token(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("token {id} not found")))?;
        self.owner_tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|hash, _| !hash.starts_with(id));
        Ok(owner)
    }

    /// The owner of the token with this hash (from memory).
    pub fn token_owner(&self, hash: &str) -> Option<String> {
        self.owner_tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
            .cloned()
    }

    /// The latest health report, if a tick ran.
    pub fn last_health(&self) -> Option<HealthReport> {
        self.last_health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One health tick: check every agent, restart dead pools, reconcile
    /// every pool, expire tenants past their lifetime, remove pools the
    /// database does not know, consolidate (if enabled), keep warm slots.
    pub async fn health_tick(&self) -> HealthReport {
        let _one_at_a_time = self.tick_lock.lock().await;
        let started = Instant::now();
        let mut r = HealthReport {
            success: true,
            timestamp: slot_agent::clock::now_rfc3339(),
            pools: vec![],
            bots: vec![],
            issues: vec![],
            recovery_actions: vec![],
            duration_ms: 0,
        };
        if let Err(e) = self.tick_into(&mut r).await {
            r.issues.push(format!("health tick failed: {e}"));
        }
        if self.cfg.consolidate && self.cfg.pool_mode_enabled {
            if let Err(e) = self.consolidate(&mut r).await {
                r.issues.push(format!("consolidation: {e}"));
            }
        }
        self.keep_warm().await;
        r.duration_ms = started.elapsed().as_millis() as u64;
        self.metrics.health_ticks.fetch_add(1, Relaxed);
        self.metrics
            .recovery_actions
            .fetch_add(r.recovery_actions.len() as u64, Relaxed);
        for a in &r.recovery_actions {
            let _ = self.db.event("recovery", None, None, a);
        }
        *self.last_health.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
        r
    }

    async fn tick_into(&self, r: &mut HealthReport) -> Result<()> {
        // Pools the backend runs that the database does not know.
        let known: Vec<u64> = self.db.pools()?.iter().map(|p| p.number).collect();
        if let Ok(found) = self.backend.found_pools().await {
            for f in found
                .iter()
                .filter(|f| f.number.is_none_or(|n| !known.contains(&n)))
            {
                r.issues.push(format!(
                    "orphaned pool {} (not in the database)",
                    f.backend_ref
                ));
                match self.backend.remove_found(f).await {
                    Ok(()) => r
                        .recovery_actions
                        .push(format!("removed orphaned pool {}", f.backend_ref)),
                    Err(e) => r
                        .issues
                        .push(format!("removing orphaned pool {}: {e}", f.backend_ref)),
                }
            }
        }
        // A `starting` pool belongs to whoever starts it (a create or the
        // warm refill; after a crash, start-up recovery): left alone here.
        let pools: Vec<PoolRow> = self
            .db
            .pools()?
            .into_iter()
            .filter(|p| p.status != PoolState::Starting)
            .collect();
        let mut checks =
            futures_util::future::join_all(pools.iter().map(|p| self.check_pool(p))).await;
        for c in &mut checks {
            r.pools.push(c.health.clone());
            r.bots.append(&mut c.bots);
            r.issues.append(&mut c.issues);
            r.recovery_actions.append(&mut c.actions);
        }
        // Everything that stops or removes, in every pool, before anything
        // that starts: a tenant moved between pools never runs in both. A
        // stop only begins (the tick never waits for one), so a tenant whose
        // old copy is not yet down is started by a later tick.
        let mut not_down = std::collections::HashSet::new();
        for starts in [false, true] {
            let applied = checks.iter().map(|c| self.apply_all(c, starts, &not_down));
            let mut next = Vec::new();
            for (issues, actions, up) in futures_util::future::join_all(applied).await {
                r.issues.extend(issues);
                r.recovery_actions.extend(actions);
                next.extend(up);
            }
            not_down.extend(next);
        }
        self.followup.store(!not_down.is_empty(), Relaxed);
        // Lifetimes: the deletion begins here; a tenant still stopping is
        // forgotten by a later tick's reconciliation (the tick never waits).
        let now = unix_now();
        for t in self.db.tenants()? {
            if t.expires_at.is_some_and(|e| e <= now) && t.desired != Desired::Deleting {
                self.mark_deleting(&t.id)?;
                let why = "maxLifetimeSeconds reached";
                let pool = self.pool_of(&t)?;
                match self.agents.begin_delete(&self.endpoint(&pool), &t.id).await {
                    Ok(gone) => {
                        if gone {
                            self.forget_tenant(&t.id, why).await?;
                        }
                        r.recovery_actions
                            .push(format!("removing {} at the end of its lifetime", t.id));
                    }
                    Err(e) => r.issues.push(format!("expiring {}: {e}", t.id)),
                }
            }
        }
        Ok(())
    }

    /// Count a restart of `pool`: a success resets, a failure adds one;
    /// returns the failures in a row.
    fn note_restart(&self, pool: u64, ok: bool) -> u32 {
        let mut m = self
            .restart_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if ok {
            m.remove(&pool);
            0
        } else {
            let n = m.entry(pool).or_insert(0);
            *n += 1;
            *n
        }
    }

    /// Move every tenant of a pool that cannot be brought back to other
    /// pools (or a new one), then remove the pool. Returns the moved ids.
    async fn evacuate(&self, dead: &PoolRow) -> Result<Vec<String>> {
        let why = format!("{} could not be restarted", dead.id());
        let mut moved = Vec::new();
        {
            let mut idx = self.placer.lock().await;
            idx.remove(dead.number);
            for t in self
                .db
                .tenants()?
                .into_iter()
                .filter(|t| t.pool == dead.number)
            {
                if t.desired == Desired::Deleting {
                    self.db.delete_tenant(&t.id, &why)?;
                    self.routes_mut().remove(&t.id);
                    continue;
                }
                let req: CreateTenant = serde_json::from_str(&t.spec)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                let want = Request {
                    memory_mb: t.memory_mb,
                    cpu_millis: t.cpu_millis,
                    class: req.pool_class.clone(),
                };
                let (prow, slot) = self.choose_slot(&mut idx, &want).await?;
                let pool = prow.number;
                let port = prow.base_port + slot as u16;
                self.db.move_tenant(&t.id, pool, slot, port, &why)?;
                idx.take(pool, slot, &want);
                self.routes_mut()
                    .insert(t.id.clone(), route(&t.owner, &prow, slot));
                moved.push((t.id, req, prow, slot, port, t.desired));
            }
        }
        // Committed: a failed PUT below is retried by the next reconciliation.
        for (id, req, prow, slot, port, desired) in &moved {
            let ep = self.endpoint(prow);
            if let Err(e) = self
                .agents
                .put(&ep, id, &program_spec(req, *slot, *port))
                .await
            {
                tracing::warn!(tenant = %id, pool = %prow.id(), error = %e, "put to its agent failed");
            } else if *desired == Desired::Stopped {
                let _ = self
                    .agents
                    .action(&ep, id, "stop", Duration::from_secs(12))
                    .await;
            }
        }
        self.remove_pool(dead, &why).await?;
        self.note_restart(dead.number, true);
        Ok(moved.into_iter().map(|m| m.0).collect())
    }

    /// Check one pool: agent health (restart the pool if its process is
    /// gone), then reconcile its programs with the database.
    async fn check_pool(&self, pool: &PoolRow) -> PoolCheck {
        let (mut issues, mut actions, mut bots) = (vec![], vec![], vec![]);
        let ep = self.endpoint(pool);
        let done = |health, bots, issues, actions, tenants, pending| PoolCheck {
            ep: self.endpoint(pool),
            pool_id: pool.id(),
            health,
            bots,
            issues,
            actions,
            tenants,
            pending,
        };
        let id = pool.id();
        let t0 = Instant::now();
        let mut health = self.agents.health(&ep).await;
        if let Err(e) = &health {
            issues.push(format!("{id}: agent unreachable: {e}"));
            if !self.backend.pool_running(pool).await {
                match self.backend.start_pool(pool).await {
                    Ok(r) => {
                        self.note_restart(pool.number, true);
                        let _ = self
                            .db
                            .set_pool_status(pool.number, PoolState::Running, Some(&r));
                        actions.push(format!(
                            "restarted {id}; its tenants come back from its state"
                        ));
                        health = self.agents.health(&ep).await;
                    }
                    Err(e) => {
                        let failures = self.note_restart(pool.number, false);
                        let _ = self
                            .db
                            .set_pool_status(pool.number, PoolState::Failed, None);
                        issues.push(format!("{id}: restart {failures} failed: {e}"));
                        if failures >= self.cfg.max_restart_attempts.max(1) {
                            match self.evacuate(pool).await {
                                Ok(moved) => actions.push(format!(
                                    "{id} could not be restarted: moved {} to other pools and removed {id}",
                                    if moved.is_empty() { "no tenants".to_string() } else { moved.join(", ") }
                                )),
                                Err(e) => issues.push(format!("{id}: moving its tenants: {e}")),
                            }
                            let ph = PoolHealth {
                                id,
                                healthy: false,
                                latency_ms: None,
                            };
                            return done(ph, bots, issues, actions, vec![], vec![]);
                        }
                    }
                }
            }
        }
        let latency = t0.elapsed().as_secs_f64() * 1000.0;
        let ph = PoolHealth {
            id: id.clone(),
            healthy: health.is_ok(),
            latency_ms: health.is_ok().then_some(latency),
        };
        if health.is_err() {
            return done(ph, bots, issues, actions, vec![], vec![]);
        }
        // Observe first, then read desired: a program on the agent always
        // has its row committed before it was PUT, so no new tenant is
        // mistaken for an orphan.
        let observed = match self.agents.list(&ep).await {
            Ok(o) => o,
            Err(e) => {
                issues.push(format!("{id}: listing programs: {e}"));
                return done(ph, bots, issues, actions, vec![], vec![]);
            }
        };
        let tenants: Vec<TenantRow> = match self.db.tenants() {
            Ok(t) => t.into_iter().filter(|t| t.pool == pool.number).collect(),
            Err(e) => {
                issues.push(e.to_string());
                return done(ph, bots, issues, actions, vec![], vec![]);
            }
        };
        let desired: BTreeMap<String, Desired> =
            tenants.iter().map(|t| (t.id.clone(), t.desired)).collect();
        let seen: BTreeMap<String, _> = observed.iter().map(|s| (s.id.clone(), s.state)).collect();
        let drifted: std::collections::BTreeSet<String> = observed
            .iter()
            .filter(|s| {
                let stored = tenants.iter().find(|t| t.id == s.id);
                match (
                    stored.and_then(|t| spec_at(t, t.slot, t.port).ok()),
                    &s.spec_digest,
                ) {
                    (Some(spec), Some(d)) => slot_agent::protocol::spec_digest(&spec) != *d,
                    _ => false,
                }
            })
            .map(|s| s.id.clone())
            .collect();
        for s in &observed {
            if let Some(m) = &s.message {
                issues.push(format!("{}: {m}", s.id));
                self.report_once(&s.id, &id, m);
            }
            if desired.get(&s.id) == Some(&Desired::Running) {
                if !s.healthy {
                    issues.push(format!(
                        "{}: {} in {id}, not healthy",
                        s.id,
                        s.state.as_str()
                    ));
                }
                bots.push(BotHealth {
                    id: s.id.clone(),
                    pool_id: id.clone(),
                    state: s.state.as_str().to_string(),
                    healthy: s.healthy,
                    restarts: s.restarts,
                });
            }
        }
        for id in &drifted {
            issues.push(format!(
                "{id}: its spec in {} was changed behind our back",
                pool.id()
            ));
        }
        let pending = plan(&desired, &seen, &drifted);
        done(ph, bots, issues, actions, tenants, pending)
    }

    /// Record an agent's message about a tenant as an event (`tenant.memory`
    /// when it is about memory, else `tenant.problem`), once per message.
    fn report_once(&self, tenant: &str, pool: &str, message: &str) {
        let mut seen = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(tenant).map(String::as_str) == Some(message) {
            return;
        }
        let kind = if message.contains("memory") {
            "tenant.memory"
        } else {
            "tenant.problem"
        };
        if self
            .db
            .event(kind, Some(tenant), Some(pool), message)
            .is_ok()
        {
            seen.insert(tenant.to_string(), message.to_string());
        }
    }

    /// Apply the pending reconciliation steps of one pool that start
    /// programs (`starts`) or the others; returns (issues, actions).
    /// Returns (issues, actions, ids whose stop or delete is not finished).
    async fn apply_all(
        &self,
        c: &PoolCheck,
        starts: bool,
        not_down: &std::collections::HashSet<String>,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let (mut issues, mut actions, mut pending) = (vec![], vec![], vec![]);
        let id = &c.pool_id;
        for a in c.pending.iter().filter(|a| a.starts() == starts) {
            if not_down.contains(a.tenant()) {
                issues.push(format!("{id}: {a:?} waits until its old copy is down"));
                continue;
            }
            match self.apply(&c.ep, &c.tenants, a).await {
                Ok(true) => actions.push(format!("{id}: {a:?}")),
                Ok(false) => {
                    actions.push(format!("{id}: {a:?} begun"));
                    pending.push(a.tenant().to_string());
                }
                Err(e) => {
                    issues.push(format!("{id}: {a:?} failed: {e}"));
                    pending.push(a.tenant().to_string());
                }
            }
        }
        (issues, actions, pending)
    }

    /// PUT the tenant's stored spec, for `slot` and `port`, to the agent at `ep`.
    async fn put_program(&self, ep: &Endpoint, t: &TenantRow, slot: u32, port: u16) -> Result<()> {
        self.agents.put(ep, &t.id, &spec_at(t, slot, port)?).await?;
        Ok(())
    }

    /// Apply one step; returns whether it is finished (false: a delete
    /// whose program is still stopping).
    async fn apply(&self, ep: &Endpoint, tenants: &[TenantRow], a: &Action) -> Result<bool> {
        let row = |id: &str| tenants.iter().find(|t| t.id == id);
        match a {
            Action::Put(id) => {
                let t = row(id).ok_or_else(|| ServiceError::Internal("row vanished".into()))?;
                // Planned a moment ago: skip it if the tenant has since been
                // deleted, stopped or moved.
                let now = self.db.tenant(id)?;
                if now.is_none_or(|n| n.pool != t.pool || n.desired != Desired::Running) {
                    return Ok(true);
                }
                self.put_program(ep, t, t.slot, t.port).await?;
            }
            Action::Start(id) => {
                self.agents.action(ep, id, "start", Duration::ZERO).await?;
            }
            // Stops and deletes only begin here: no tenant's stop timeout
            // holds the tick. What is still stopping is seen again next tick.
            Action::Stop(id) => {
                self.agents.begin_stop(ep, id).await?;
            }
            Action::Delete(id) => {
                let gone = self.agents.begin_delete(ep, id).await?;
                if let Some(t) = row(id).filter(|t| gone && t.desired == Desired::Deleting) {
                    self.forget_tenant(&t.id, "deleted (finished by the reconciler)")
                        .await?;
                }
                return Ok(gone);
            }
            Action::Forget(id) => {
                self.forget_tenant(id, "deleted (finished by the reconciler)")
                    .await?
            }
        }
        Ok(true)
    }

    /// Remove empty pools (keeping enough for the warm slots), and pools the
    /// database does not know. Returns how many were removed.
    pub async fn cleanup(&self) -> Result<u32> {
        let mut removed = 0;
        if let Ok(found) = self.backend.found_pools().await {
            let known: Vec<u64> = self.db.pools()?.iter().map(|p| p.number).collect();
            for f in found
                .iter()
                .filter(|f| f.number.is_none_or(|n| !known.contains(&n)))
            {
                if self.backend.remove_found(f).await.is_ok() {
                    removed += 1;
                }
            }
        }
        let tenants = self.db.tenants()?;
        let mut free: u64 = {
            let idx = self.placer.lock().await;
            idx.free_slots(&None)
        };
        for p in self.db.pools()? {
            // A starting pool is empty only until its creator places into it.
            if p.status == PoolState::Starting || tenants.iter().any(|t| t.pool == p.number) {
                continue;
            }
            let keep_warm = p.class.is_none()
                && p.mode == PoolMode::Pooled
                && free.saturating_sub(u64::from(p.slots)) < u64::from(self.cfg.warm_slots);
            if keep_warm {
                continue;
            }
            // Re-check under the lock that nothing was placed meanwhile.
            {
                let mut idx = self.placer.lock().await;
                if idx.get(p.number).is_some_and(|c| !c.used_slots.is_empty()) {
                    continue;
                }
                idx.remove(p.number);
            }
            free = free.saturating_sub(u64::from(p.slots));
            match self.remove_pool(&p, "empty (cleanup)").await {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(pool = %p.id(), error = %e, "cleanup failed");
                    self.rebuild_index().await?;
                }
            }
        }
        Ok(removed)
    }

    /// Every pool's agent as a Prometheus target (HTTP service discovery);
    /// agents serve `/metrics` without a token.
    pub fn metrics_targets(&self) -> Result<Vec<TargetGroup>> {
        Ok(self
            .db
            .pools()?
            .iter()
            .map(|p| TargetGroup {
                targets: vec![self.backend.agent_addr(p).to_string()],
                labels: BTreeMap::from([
                    ("pool".to_string(), p.id()),
                    (
                        "class".to_string(),
                        p.class.clone().unwrap_or_else(|| "default".into()),
                    ),
                    ("deployment".to_string(), self.cfg.deployment.clone()),
                    ("backend".to_string(), self.backend.name().to_string()),
                    ("container".to_string(), self.backend.container_name(p)),
                ]),
            })
            .collect())
    }

    /// `GET /api/pool/status`, with live health from every agent (one
    /// call per pool, concurrently).
    pub async fn pool_status(&self) -> Result<PoolStatus> {
        let pools = self.db.pools()?;
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
                let id = p.id();
                PoolInfo {
                    status: if p.status == PoolState::Running && unreachable(p.number) {
                        "unreachable".into()
                    } else {
                        p.status.to_string()
                    },
                    container_name: self.backend.container_name(p),
                    bots_count: bots.len() as u32,
                    capacity: p.slots,
                    utilization_percent: (bots.len() as u32 * 100 + p.slots / 2) / p.slots.max(1),
                    bots: bots.iter().map(|t| t.id.clone()).collect(),
                    mode: p.mode.to_string(),
                    base_port: p.base_port,
                    memory_used_mb: bots.iter().map(|t| t.memory_mb).sum(),
                    memory_mb: p.memory_mb,
                    class: p.class.clone(),
                    image: p.image.clone(),
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
            .filter(|t| t.desired == Desired::Running && healthy_ids.contains(&t.id))
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
        Ok(PoolStatus {
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
            }
        }
        {
            let idx = self.placer.lock().await;
            for p in idx.pools() {
                s.slots_used += p.used_slots.len() as u64;
                s.slots_free += u64::from(p.free_slots());
            }
        }
        if let Some(h) = self.last_health() {
            for b in &h.bots {
                *s.tenants.entry(b.state.clone()).or_default() += 1;
                s.restarts += b.restarts;
            }
        }
        s
    }
}

/// The agent spec of a tenant in `slot`/`port`.
pub fn program_spec(req: &CreateTenant, slot: u32, port: u16) -> ProgramSpec {
    ProgramSpec {
        command: req.command.clone(),
        args: req.args.clone(),
        env: req.env.clone(),
        slot: Some(slot),
        port: Some(port),
        ping: req.ping.clone(),
        restart: req.restart.clone(),
        stop: req.stop.clone(),
        max_memory_mb: Some(req.resources.memory_mb),
        working_dir: req.working_dir.clone(),
    }
}

/// The proxy route of `owner`'s tenant in `slot` of `pool`.
fn route(owner: &str, pool: &PoolRow, slot: u32) -> Route {
    Route {
        owner: owner.to_string(),
        port: pool.base_port + slot as u16,
        uid: pool.uid_base + slot,
    }
}

/// The agent spec a tenant row stands for, in `slot` and `port`.
fn spec_at(t: &TenantRow, slot: u32, port: u16) -> Result<ProgramSpec> {
    let req: CreateTenant =
        serde_json::from_str(&t.spec).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(program_spec(&req, slot, port))
}

/// Tenant rows grouped by pool number, in their original order.
fn by_pool(tenants: &[TenantRow]) -> HashMap<u64, Vec<&TenantRow>> {
    let mut m: HashMap<u64, Vec<&TenantRow>> = HashMap::new();
    for t in tenants {
        m.entry(t.pool).or_default().push(t);
    }
    m
}

/// The tenants of pool `number` in a [`by_pool`] grouping.
fn tenants_of<'a>(
    grouped: &'a HashMap<u64, Vec<&'a TenantRow>>,
    number: u64,
) -> &'a [&'a TenantRow] {
    grouped.get(&number).map_or(&[], Vec::as_slice)
}

fn stop_timeout_ms(t: &TenantRow) -> u64 {
    serde_json::from_str::<CreateTenant>(&t.spec).map_or(10_000, |r| r.stop.timeout_ms)
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
