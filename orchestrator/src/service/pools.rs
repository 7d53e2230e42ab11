//! Pools: placement decisions, reserving and starting pools (never under
//! the placement lock on the request path), pool classes, warm slots and
//! cleanup.

use std::time::Instant;

use super::*;
use crate::classes::{ClassInfo, ClassList, ClassSpec, Size};
use crate::db::{pool_id, NewPool, PoolRow};
use crate::ledger::Held;
use crate::nodes::{self, Need, Placed};
use crate::placement::{place, Decision, PoolIndex, Request};
use crate::states::{PoolMode, PoolState};

impl Orchestrator {
    /// Where `want` goes: a placement decision, or a new pool when nothing
    /// fits (always in legacy mode). Pure but for the timing metric.
    pub(super) fn decide(&self, idx: &PoolIndex, want: &Request) -> Decision {
        let started = Instant::now();
        let decision = if self.cfg.pool_mode_enabled {
            place(idx, want, self.cfg.placement)
        } else {
            Decision::NewPool
        };
        self.metrics.placed(started.elapsed());
        decision
    }

    /// [`Self::decide`] for `want` under the ledger's lock `held`. When a
    /// new pool is needed it is reserved under the lock (closed to others),
    /// the lock is let go while the pool starts (up to 30 s in Docker), and
    /// taken again to open it: nobody else places into it meanwhile, so its
    /// slot 0 is `want`'s. Returns the lock (held again), the pool and the
    /// slot.
    pub(super) async fn choose_slot<'a>(
        &'a self,
        held: Held<'a>,
        want: &Request,
    ) -> Result<(Held<'a>, PoolRow, u32)> {
        let mut held = held;
        let mut decision = self.decide(held.index(), want);
        if matches!(decision, Decision::NewPool) && self.backend.nodes().is_some() {
            // On a cluster the node is chosen from a fresh node list: read
            // without the lock, then decide again (another create may have
            // made room meanwhile).
            drop(held);
            self.backend.refresh_nodes().await?;
            held = self.ledger.lock().await;
            decision = self.decide(held.index(), want);
        }
        match decision {
            Decision::Place { pool, slot } => {
                let row = self
                    .db
                    .pool(pool)?
                    .ok_or_else(|| ServiceError::Internal(format!("{} vanished", pool_id(pool))))?;
                Ok((held, row, slot))
            }
            Decision::NewPool => {
                let reserved = self.reserve_pool(&mut held, want.class.clone())?;
                drop(held);
                let started = self.start_reserved(reserved).await?;
                let mut held = self.ledger.lock().await;
                held.open_pool(started.number)?;
                Ok((held, started, 0))
            }
        }
    }

    /// Store a new pool of `class` (`starting`): its port block and slot
    /// users are taken. Quick; called with the placement lock held.
    pub(super) fn reserve_pool(
        &self,
        held: &mut Held<'_>,
        class: Option<String>,
    ) -> Result<PoolRow> {
        let legacy = !self.cfg.pool_mode_enabled;
        let (size, spec) = self.class_of(&class)?;
        let slots = if legacy { 1 } else { size.slots };
        let labels = spec
            .as_ref()
            .map(|c| c.node_labels.clone())
            .unwrap_or_default();
        let node = self.node_for(&size, labels)?;
        let image = spec.map(|c| c.image);
        // As root: the host's uids and our own pools', read once per pool.
        let seen = match &self.uid_registry {
            Some(r) => Some((r.read_host(), self.db.uid_ranges()?)),
            None => None,
        };
        let uids_free = |b: &crate::blocks::Block| {
            let range = u64::from(b.uid_base)..u64::from(b.uid_base) + u64::from(slots);
            seen.as_ref()
                .is_none_or(|(h, ours)| crate::uid_ranges::clash(&range, h, ours).is_none())
        };
        // A new pool never takes the number (so the container name) of an
        // orphaned one the last tick saw.
        let orphaned = self.last_orphans().iter().filter_map(|f| f.number).max();
        if let Some(n) = orphaned {
            held.db().skip_pool_numbers_to(n)?;
        }
        let row = held.reserve_pool(
            &NewPool {
                slots,
                block_width: self.cfg.max_bots_per_container,
                pool_base_port: self.cfg.pool_base_port,
                uid_base: self.cfg.slot_uid_base,
                memory_mb: size.memory_mb,
                cpu_millis: size.cpu_millis,
                class,
                image,
                node,
                mode: if legacy {
                    PoolMode::Legacy
                } else {
                    PoolMode::Pooled
                },
                token: random_token(),
            },
            |b| uids_free(b) && self.backend.ports_free(b, slots),
        )?;
        if let Some(r) = &self.uid_registry {
            if let Err(e) = r.note(&self.db.uid_ranges()?) {
                tracing::warn!(error = %e, "cannot note the new pool's slot uids");
            }
        }
        Ok(row)
    }

    /// The node a new pool of `size` goes to, on a cluster backend: the
    /// placement strategy over the nodes' capacity minus what the stored
    /// pools reserve (`nodes::choose`). `None` on one-host backends.
    pub(super) fn node_for(
        &self,
        size: &Size,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        let Some(nodes) = self.backend.nodes() else {
            return Ok(None);
        };
        let placed: Vec<Placed> = self
            .db
            .pools()?
            .into_iter()
            .filter_map(|p| {
                Some(Placed {
                    pool: p.number,
                    node: p.node?,
                    memory_mb: p.memory_mb,
                    cpu_millis: p.cpu_millis,
                })
            })
            .collect();
        let need = Need {
            memory_mb: size.memory_mb,
            cpu_millis: size.cpu_millis,
            labels,
        };
        match nodes::choose(&nodes, &placed, &need, self.cfg.placement) {
            Some(n) => Ok(Some(n.id.clone())),
            None => Err(ServiceError::Backend(crate::backend::BackendError::Other(
                format!(
                    "no ready, active node{} has room for a pool of {} MiB and {} millicores",
                    if need.labels.is_empty() {
                        String::new()
                    } else {
                        format!(" with the labels {:?}", need.labels)
                    },
                    size.memory_mb,
                    size.cpu_millis
                ),
            ))),
        }
    }

    /// Start a reserved pool (without the lock: health ticks leave
    /// `starting` pools alone). It stays closed until its creator opens it.
    /// On failure the pool is removed again.
    pub(super) async fn start_reserved(&self, row: PoolRow) -> Result<PoolRow> {
        match self.backend.start_pool(&row.spec()).await {
            Ok(r) => {
                let now = self.ledger.lock().await.set_pool_status(
                    row.number,
                    PoolState::Running,
                    Some(&r),
                )?;
                self.metrics.pools_created.inc();
                Ok(now.unwrap_or(row))
            }
            Err(e) => {
                let _ = self.backend.remove_pool(&row.spec()).await;
                self.ledger
                    .lock()
                    .await
                    .remove_pool(row.number, &format!("start failed: {e}"))?;
                Err(ServiceError::Backend(e))
            }
        }
    }

    /// The size of `class`'s pools and the class itself (`None`: the
    /// default class).
    pub(super) fn class_of(&self, class: &Option<String>) -> Result<(Size, Option<ClassSpec>)> {
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
        Ok((spec.size(default), Some(spec)))
    }

    /// Size of the default class's pools.
    pub(super) fn default_size(&self) -> Size {
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
        self.emit(&crate::events::Event::ClassDefined {
            name: name.to_string(),
            spec: serde_json::to_string(&spec).unwrap_or_default(),
        });
        Ok(existed.is_none())
    }

    /// Every class, with its sizes filled in.
    pub fn classes(&self) -> Result<ClassList> {
        let default = self.default_size();
        let pools = self.db.pools()?;
        let failed = self.db.roll_failures()?;
        let classes = self
            .db
            .classes()?
            .into_iter()
            .map(|(name, spec, from_config, count)| {
                let size = spec.size(default);
                let roll =
                    crate::roll_plan::roll_info(&name, &spec.image, &pools, failed.get(&name));
                ClassInfo {
                    roll,
                    name,
                    image: spec.image,
                    slots: size.slots,
                    memory_mb: size.memory_mb,
                    cpu_millis: size.cpu_millis,
                    pools: count,
                    from_config,
                    node_labels: spec.node_labels,
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
        self.emit(&crate::events::Event::ClassDeleted(name.to_string()));
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
            if self.backend.nodes().is_some() {
                if let Err(e) = self.backend.refresh_nodes().await {
                    tracing::warn!(error = %e, "no warm pool");
                    return;
                }
            }
            let reserved = {
                let mut held = self.ledger.lock().await;
                if held.index().free_slots(&None) >= u64::from(self.cfg.warm_slots) {
                    return;
                }
                self.reserve_pool(&mut held, None)
            };
            let started = match reserved {
                Ok(r) => self.start_reserved(r).await,
                Err(e) => Err(e),
            };
            let opened = match started {
                Ok(row) => self
                    .ledger
                    .lock()
                    .await
                    .open_pool(row.number)
                    .map_err(ServiceError::from),
                Err(e) => Err(e),
            };
            match opened {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "no warm pool");
                    return;
                }
            }
        }
    }

    /// Mark the pool `removing`, remove it from the backend, then forget
    /// it. A `removing` pool is never started again, and a crash in between
    /// leaves its row, whose removal the next tick finishes: the database
    /// always knows a pool until the backend removed it, so nothing it does
    /// not know is ever ours to remove.
    pub(super) async fn remove_pool(&self, pool: &PoolRow, why: &str) -> Result<()> {
        self.ledger
            .lock()
            .await
            .set_pool_status(pool.number, PoolState::Removing, None)?;
        self.backend
            .remove_pool(&pool.spec())
            .await
            .map_err(ServiceError::Backend)?;
        self.ledger.lock().await.remove_pool(pool.number, why)?;
        Ok(())
    }

    /// Remove empty pools (keeping enough for the warm slots); orphaned
    /// pools are left alone (see [`Orchestrator::remove_orphans`]).
    /// Returns how many were removed.
    pub async fn cleanup(&self) -> Result<u32> {
        let mut removed = 0;
        let tenants = self.db.tenants()?;
        let mut free: u64 = self.ledger.lock().await.index().free_slots(&None);
        for p in self.db.pools()? {
            // A starting pool is empty only until its creator places into it.
            if matches!(p.status, PoolState::Starting | PoolState::Removing)
                || tenants.iter().any(|t| t.pool == p.number)
            {
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
                let mut held = self.ledger.lock().await;
                if held
                    .index()
                    .get(p.number)
                    .is_some_and(|c| !c.used_slots.is_empty())
                {
                    continue;
                }
                held.close_pool(p.number)?;
            }
            free = free.saturating_sub(u64::from(p.slots));
            match self.remove_pool(&p, "empty (cleanup)").await {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(pool = %p.id(), error = %e, "cleanup failed");
                    // Still stored (the row could not go): open it again.
                    self.ledger.lock().await.open_pool(p.number)?;
                }
            }
        }
        Ok(removed)
    }
}
