//! Tenant operations of the API: create (placement, a new pool started
//! outside the placement lock), get, list, delete, start/stop/restart,
//! logs, the proxy's target and connection info.

use std::collections::HashMap;
use std::time::Duration;

use slotpack_proto::protocol::{is_valid_id, ProgramAction, ProgramStatus};

use super::*;
use crate::agents::{Data, Endpoint};
use crate::db::{pool_id, PoolRow, TenantRow};
use crate::ledger::Moved;
use crate::placement::Request;
use crate::states::{Desired, PoolMode};
use crate::tenant_spec::TenantSpec;

impl Orchestrator {
    /// Mark a tenant as being deleted: the proxy stops at once. Returns
    /// whether this changed anything (false: gone, or already deleting).
    pub(super) async fn mark_deleting(&self, id: &str) -> Result<bool> {
        Ok(self
            .ledger
            .lock()
            .await
            .set_desired(id, Desired::Deleting)?)
    }

    /// Check a create request against its class's pool size (read here);
    /// returns the request with its owner filled in.
    pub(super) fn check_create(&self, caller: &Caller, req: CreateTenant) -> Result<CreateTenant> {
        if let Some(c) = &req.pool_class {
            if !is_valid_id(c) {
                return Err(ServiceError::BadRequest(format!("invalid poolClass {c:?}")));
            }
        }
        let (size, _) = self.class_of(&req.pool_class)?;
        validate_create(caller, req, &size)
    }

    /// Whether slots get their own uids: always in containers (the agent is
    /// root there), on the local backend only when this process is root.
    pub fn isolated(&self) -> bool {
        self.backend.kind().isolates_as_any_user() || nix::unistd::geteuid().is_root()
    }

    /// Without isolation, tenants of a second owner are refused (unless
    /// `SLOTPACK_ALLOW_SHARED_UID`): they would share one uid with the first.
    pub(super) fn check_isolation(&self, owner: &str) -> Result<()> {
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

    /// Create and place a tenant, held to `quota` (an owner token's; `None`
    /// for the admin). Returns the tenant and whether it was created
    /// (false: the same request had already been accepted).
    pub async fn create_tenant(
        &self,
        caller: &Caller,
        quota: Option<crate::access::Quota>,
        req: CreateTenant,
    ) -> Result<(Tenant, bool)> {
        self.create_tenant_as(caller, quota, req, true).await
    }

    /// [`Orchestrator::create_tenant`]; with `start` false the tenant is
    /// placed but stays stopped (its volumes can be filled first, as
    /// `slotpack migrate` does).
    pub async fn create_tenant_as(
        &self,
        caller: &Caller,
        quota: Option<crate::access::Quota>,
        req: CreateTenant,
        start: bool,
    ) -> Result<(Tenant, bool)> {
        let req = self.check_create(caller, req)?;
        self.check_isolation(req.owner.as_deref().unwrap_or_default())?;
        let stored = TenantSpec::of(&req);
        let owner = req.owner.clone().unwrap_or_default();
        let want = Request {
            memory_mb: req.resources.memory_mb,
            cpu_millis: req.resources.cpu_millis,
            class: req.pool_class.clone(),
        };
        let held = self.ledger.lock().await;
        if let Some(old) = self.already(caller, &req.id, &owner, &stored)? {
            drop(held);
            return Ok((self.view(&old).await?, false));
        }
        // Under the placement lock: two creates cannot both pass.
        self.check_quota(quota, &owner, want.memory_mb)?;
        // A new pool, if one is needed, starts without the lock (up to
        // 30 s), so other creates are not held.
        let (mut held, prow, slot) = self.choose_slot(held, &want).await?;
        if let Some(old) = self.already(caller, &req.id, &owner, &stored)? {
            // The same request won while the lock was let go; a new pool
            // stays free.
            drop(held);
            return Ok((self.view(&old).await?, false));
        }
        self.check_quota(quota, &owner, want.memory_mb)?;
        let port = prow
            .slot_port(slot)
            .ok_or_else(|| ServiceError::Internal(format!("{} has no slot {slot}", prow.id())))?;
        let row = TenantRow {
            id: req.id.clone(),
            owner,
            spec: stored,
            pool: prow.number,
            slot,
            desired: if start {
                Desired::Running
            } else {
                Desired::Stopped
            },
            created_at: slotpack_proto::clock::now_rfc3339(),
            expires_at: req.max_lifetime_seconds.map(|s| unix_now() + s as i64),
        };
        held.insert_tenant(&row)?;
        drop(held);
        // Committed: from here on the reconciler would finish the job after a crash.
        let pool = self
            .db
            .pool(row.pool)?
            .ok_or_else(|| ServiceError::Internal("pool vanished".into()))?;
        let spec = row.spec.program(row.slot, port);
        let ep = self.endpoint(&pool);
        let put = if start {
            self.agents.put(&ep, &row.id, &spec).await
        } else {
            self.agents.put_stopped(&ep, &row.id, &spec).await
        };
        let status = match put {
            Ok(st) => st,
            Err(e) => {
                self.forget_tenant(&row.id, &format!("agent refused it: {e}"))
                    .await?;
                return Err(e.into());
            }
        };
        self.metrics.tenants_created.inc();
        // Refilled off the request path.
        self.warm.notify_one();
        // The agent's answer to the PUT is the tenant's state: no second call.
        Ok((self.compose(&row, &pool, Some(&status)), true))
    }

    /// `PUT /api/tenants/{id}`: give tenant `id` the full spec `req`
    /// (same id; its owner cannot change), held to `quota`. It restarts
    /// with it in the same slot if it still fits its pool, else it moves
    /// (stopped in the old slot before it starts in the new one). Its data
    /// stays: it is the tenant's, wherever it runs. A stopped tenant stays
    /// stopped.
    pub async fn update_tenant(
        &self,
        caller: &Caller,
        quota: Option<crate::access::Quota>,
        id: &str,
        req: CreateTenant,
    ) -> Result<Tenant> {
        if req.id.as_str() != id {
            return Err(ServiceError::BadRequest(format!(
                "the body's id {:?} is not the path's {id:?}",
                req.id.as_str()
            )));
        }
        let t = self.visible(caller, id)?;
        let req = self.check_create(caller, req)?;
        let owner = req.owner.clone().unwrap_or_default();
        if owner != t.owner {
            return Err(ServiceError::BadRequest(format!(
                "owner {owner:?}: a tenant's owner cannot change (it is {:?})",
                t.owner
            )));
        }
        let spec = TenantSpec::of(&req);
        let want = Request {
            memory_mb: spec.resources.memory_mb,
            cpu_millis: spec.resources.cpu_millis,
            class: spec.pool_class.clone(),
        };
        let mut held = self.ledger.lock().await;
        // Read again under the lock: no move or deletion is under way (a
        // tenant being deleted is not found).
        let t = self.visible(caller, id)?;
        if t.spec == spec {
            drop(held);
            return self.view(&t).await;
        }
        if let Some(q) = quota {
            let (n, mem) = self.owner_usage()?.get(&owner).copied().unwrap_or_default();
            let have = (n.saturating_sub(1), mem.saturating_sub(t.memory_mb()));
            if let Some(m) = crate::access::over_quota(q, &owner, have, want.memory_mb) {
                self.metrics.quota_refused.inc();
                return Err(ServiceError::Quota(m));
            }
        }
        let from = self.pool_of(&t)?;
        let stays = from.class == want.class
            && held.index().get(from.number).is_some_and(|c| {
                c.used_memory_mb - t.memory_mb() + want.memory_mb <= c.memory_mb
                    && c.used_cpu_millis - t.cpu_millis() + want.cpu_millis <= c.cpu_millis
            });
        let why = "updated through the API";
        let (row, to) = if stays {
            match held.update_tenant(id, from.number, &spec, None, why)? {
                Moved::Done(row) => (row, from.clone()),
                _ => {
                    return Err(ServiceError::Conflict(format!(
                        "tenant {id} changed meanwhile"
                    )))
                }
            }
        } else {
            let (again, to, slot) = self.choose_slot(held, &want).await?;
            held = again;
            match held.update_tenant(id, from.number, &spec, Some((&to, slot)), why)? {
                Moved::Done(row) => (row, to),
                _ => {
                    return Err(ServiceError::Conflict(format!(
                        "tenant {id} changed meanwhile"
                    )))
                }
            }
        };
        drop(held);
        // Committed: after a crash from here on the reconciler converges
        // the agents on the stored spec and place.
        if to.number != from.number {
            let stop = Duration::from_millis(t.spec.stop.timeout_ms) + Duration::from_secs(2);
            self.agents
                .delete(&self.endpoint(&from), id, stop, Data::Keep)
                .await?;
        }
        self.put_program(&to, &row, row.slot).await?;
        if row.desired == Desired::Stopped {
            let stop = Duration::from_millis(row.spec.stop.timeout_ms) + Duration::from_secs(2);
            self.agents
                .action(&self.endpoint(&to), id, ProgramAction::Stop, stop)
                .await?;
        }
        self.metrics.tenants_updated.inc();
        self.view(&row).await
    }

    /// The stored tenant `id` if this very request was accepted before
    /// (answered 200); an error if the id is taken otherwise (another
    /// owner's is answered as GET answers it); `None` if it is free.
    pub(super) fn already(
        &self,
        caller: &Caller,
        id: &str,
        owner: &str,
        stored: &TenantSpec,
    ) -> Result<Option<TenantRow>> {
        let Some(old) = self.db.tenant(id)? else {
            return Ok(None);
        };
        if old.owner == owner && old.spec == *stored && old.desired != Desired::Deleting {
            return Ok(Some(old));
        }
        if !caller.may_see(&old.owner) {
            return Err(ServiceError::NotFound(format!("tenant {id} not found")));
        }
        Err(ServiceError::Conflict(format!("tenant {id} exists")))
    }

    /// Drop a tenant row and free its slot, if the row still exists.
    pub(super) async fn forget_tenant(&self, id: &str, why: &str) -> Result<()> {
        let mut held = self.ledger.lock().await;
        if let Some(t) = held.forget_tenant(id, why)? {
            if let Some(p) = self.db.pool(t.pool)? {
                if p.mode == PoolMode::Legacy {
                    // A legacy pool ends with its tenant.
                    drop(held);
                    self.remove_pool(&p, "its legacy tenant is gone").await?;
                }
            }
        }
        Ok(())
    }

    /// The tenant `id` if the caller may see it.
    pub(super) fn visible(&self, caller: &Caller, id: &str) -> Result<TenantRow> {
        match self.db.tenant(id)? {
            Some(t) if caller.may_see(&t.owner) && t.desired != Desired::Deleting => Ok(t),
            _ => Err(ServiceError::NotFound(format!("tenant {id} not found"))),
        }
    }

    pub(super) fn pool_of(&self, t: &TenantRow) -> Result<PoolRow> {
        self.db.pool(t.pool)?.ok_or_else(|| {
            ServiceError::Internal(format!("{} of {} missing", pool_id(t.pool), t.id))
        })
    }

    /// One tenant with its live state.
    pub async fn get_tenant(&self, caller: &Caller, id: &str) -> Result<Tenant> {
        let t = self.visible(caller, id)?;
        self.view(&t).await
    }

    pub(super) async fn view(&self, t: &TenantRow) -> Result<Tenant> {
        let pool = self.pool_of(t)?;
        let observed = self.agents.get(&self.endpoint(&pool), &t.id).await.ok();
        Ok(self.compose(t, &pool, observed.as_ref()))
    }

    pub(super) fn compose(
        &self,
        t: &TenantRow,
        pool: &PoolRow,
        st: Option<&ProgramStatus>,
    ) -> Tenant {
        Tenant {
            id: t.id.to_string(),
            owner: t.owner.clone(),
            desired: t.desired.to_string(),
            state: st.map_or("unknown".into(), |s| s.state.as_str().to_string()),
            healthy: st.is_some_and(|s| s.healthy),
            restarts: st.map_or(0, |s| s.restarts),
            placement: self.placement(t, pool),
            resources: Resources {
                memory_mb: t.memory_mb(),
                cpu_millis: t.cpu_millis(),
                disk_mb: t.spec.resources.disk_mb,
            },
            pool_class: t.spec.pool_class.clone(),
            created_at: t.created_at.clone(),
            expires_at: t.expires_at,
            message: st.and_then(|s| s.message.clone()),
            started_at: st.and_then(|s| s.started_at.clone()),
            usage: st.map(|s| crate::usage::of(s, t.usage_limits())),
        }
    }

    pub(super) fn placement(&self, t: &TenantRow, pool: &PoolRow) -> Placement {
        let host = self
            .backend
            .public_host(&pool.spec())
            .unwrap_or_else(|| self.cfg.public_host.clone());
        let port = pool.slot_port(t.slot).unwrap_or_default();
        Placement {
            pool_id: pool.id().to_string(),
            container_name: self.backend.container_name(&pool.spec()),
            slot: t.slot,
            port,
            url: format!("http://{host}:{port}"),
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
            .filter_map(|t| Some(self.compose(t, pools.get(&t.pool)?, observed.get(t.id.as_str()))))
            .collect())
    }

    /// Stop the tenant and free its slot.
    pub async fn delete_tenant(&self, caller: &Caller, id: &str) -> Result<()> {
        let t = self.visible(caller, id)?;
        self.mark_deleting(id).await?;
        // Read again: a move (evacuation, consolidation) may have committed
        // between the read above and the mark, and no move follows it.
        let t = self.db.tenant(id)?.unwrap_or(t);
        self.finish_delete(&t, "deleted through the API").await
    }

    pub(super) async fn finish_delete(&self, t: &TenantRow, why: &str) -> Result<()> {
        let pool = self.pool_of(t)?;
        let stop = Duration::from_millis(t.spec.stop.timeout_ms) + Duration::from_secs(2);
        self.agents
            .delete(&self.endpoint(&pool), &t.id, stop, Data::Purge)
            .await?;
        self.forget_tenant(&t.id, why).await
    }

    /// `start`, `stop` or `restart` a tenant.
    pub async fn act(&self, caller: &Caller, id: &str, action: ProgramAction) -> Result<Tenant> {
        let t = self.visible(caller, id)?;
        let pool = self.pool_of(&t)?;
        let ep = self.endpoint(&pool);
        let desired = if action == ProgramAction::Stop {
            Desired::Stopped
        } else {
            Desired::Running
        };
        // Stopped: what the proxy holds open to it ends now.
        self.ledger.lock().await.set_desired(id, desired)?;
        let stop = Duration::from_millis(t.spec.stop.timeout_ms) + Duration::from_secs(2);
        if desired == Desired::Running {
            // The stored spec first (no change if the agent holds it): a
            // program the agent lost, or whose spec was changed behind our
            // back, runs as stored.
            self.put_program(&pool, &t, t.slot).await?;
        }
        match self.agents.action(&ep, id, action, stop).await {
            Err(e) if e.is_not_found() && desired == Desired::Stopped => {}
            r => {
                r?;
            }
        }
        if action == ProgramAction::Restart {
            // Stop and start change the desired state (its own event); a
            // restart changes none, and is worth a line in the feed too.
            let who = match caller {
                Caller::Admin => "the admin".to_string(),
                Caller::Owner(o) => format!("owner {o}"),
            };
            let at = pool_id(pool.number).to_string();
            if let Err(e) = self.db.event(
                "tenant.restarted",
                Some(id),
                Some(&at),
                &format!("restarted through the API by {who}"),
            ) {
                tracing::warn!(tenant = id, error = %e, "event not recorded");
            }
        }
        let t = self.visible(caller, id)?;
        self.view(&t).await
    }

    /// Put `archive` (a tar of one top folder, as `docker cp` makes it)
    /// into tenant `id`'s volume at `path`; the tenant must be stopped.
    pub async fn volume_in(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        archive: axum::body::Bytes,
    ) -> Result<()> {
        let (t, pool) = self.volume_of(caller, id, path)?;
        if t.desired != Desired::Stopped {
            return Err(ServiceError::Conflict(format!(
                "stop tenant {id} before filling its volume {path}"
            )));
        }
        Ok(self
            .agents
            .volume_in(&self.endpoint(&pool), id, path, archive)
            .await?)
    }

    /// Tenant `id`'s volume at `path` as such a tar, every entry owned by
    /// `owner` when given.
    pub async fn volume_out(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<axum::body::Bytes> {
        let (_, pool) = self.volume_of(caller, id, path)?;
        Ok(self
            .agents
            .volume_out(&self.endpoint(&pool), id, path, owner)
            .await?)
    }

    /// Tenant `id` (visible to `caller`) with a volume at `path`, and its pool.
    fn volume_of(&self, caller: &Caller, id: &str, path: &str) -> Result<(TenantRow, PoolRow)> {
        let t = self.visible(caller, id)?;
        if !t.spec.volumes.iter().any(|v| v.path == path) {
            return Err(ServiceError::NotFound(format!(
                "tenant {id} has no volume {path:?}"
            )));
        }
        let pool = self.pool_of(&t)?;
        Ok((t, pool))
    }

    /// The tenant's last log lines.
    pub async fn logs(&self, caller: &Caller, id: &str, tail: usize) -> Result<axum::body::Bytes> {
        let t = self.visible(caller, id)?;
        let pool = self.pool_of(&t)?;
        let read = crate::agents::LogRead::Tail(tail);
        Ok(self
            .agents
            .logs(&self.endpoint(&pool), id, read)
            .await?
            .bytes)
    }

    /// The tenant's address and its route's generation, for the proxy
    /// (memory only, no database).
    pub fn proxy_target(&self, caller: &Caller, id: &str) -> Result<(std::net::SocketAddr, u64)> {
        let routes = self
            .ledger
            .routes()
            .read()
            .unwrap_or_else(|e| e.into_inner());
        match routes.get_with_generation(id) {
            Some((r, g)) if caller.may_see(&r.owner) => {
                Ok((std::net::SocketAddr::new(r.ip, r.port), g))
            }
            _ => Err(ServiceError::NotFound(format!("tenant {id} not found"))),
        }
    }

    /// Whether a proxy stream opened by `grant` to `id` under route
    /// generation `generation` still holds: the grant is good, and the
    /// tenant was neither deleted, stopped nor moved since.
    pub fn still_authorised(
        &self,
        grant: &crate::access::Grant,
        id: &str,
        generation: u64,
    ) -> bool {
        if !self.access.valid(grant) {
            return false;
        }
        let routes = self
            .ledger
            .routes()
            .read()
            .unwrap_or_else(|e| e.into_inner());
        routes
            .get_with_generation(id)
            .is_some_and(|(_, g)| g == generation)
    }

    /// Refuse a create over the owner's `quota`, naming the quota.
    pub(super) fn check_quota(
        &self,
        quota: Option<crate::access::Quota>,
        owner: &str,
        memory_mb: u64,
    ) -> Result<()> {
        let Some(q) = quota else { return Ok(()) };
        let have = self.owner_usage()?.get(owner).copied().unwrap_or_default();
        match crate::access::over_quota(q, owner, have, memory_mb) {
            Some(m) => {
                self.metrics.quota_refused.inc();
                Err(ServiceError::Quota(m))
            }
            None => Ok(()),
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
            instance_id: t.id.into(),
            is_pooled: pooled,
            mode: pool.mode.to_string(),
            connection: Connection {
                host: p.host,
                port: p.port,
                url: p.url,
            },
        })
    }
}

/// Check a create request of `caller` for a pool of `size` (pure): owner,
/// resources within the pool, lifetime, and the program spec the agent
/// would get. Returns the request with its owner filled in.
pub(super) fn validate_create(
    caller: &Caller,
    mut req: CreateTenant,
    size: &crate::classes::Size,
) -> Result<CreateTenant> {
    let bad = |m: String| Err(ServiceError::BadRequest(m));
    // The id is valid by its type (checked when the body was read).
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
    slotpack_proto::protocol::in_range(
        "resources.diskMb",
        r.disk_mb,
        &slotpack_proto::protocol::RANGES.disk_mb,
    )
    .map_err(ServiceError::BadRequest)?;
    if let Some(v) = req.max_lifetime_seconds {
        slotpack_proto::protocol::in_range("maxLifetimeSeconds", v, &MAX_LIFETIME_SECONDS)
            .map_err(ServiceError::BadRequest)?;
    }
    slotpack_proto::protocol::check_spec(&TenantSpec::of(&req).program(0, 0))
        .map_err(ServiceError::BadRequest)?;
    Ok(req)
}
