//! The ledger: the one owner of placement state. Pool rows, tenant
//! placement (pool, slot, desired state), the placement [`PoolIndex`] and
//! the proxy [`RouteTable`] change only here, under one lock, and every change
//! writes the database row first and then derives the in-memory views
//! from the rows it wrote, in the same method. Nothing else writes those
//! rows or views, so they cannot drift apart.
//!
//! The index entry of a pool is always [`capacity`] of its row and its
//! tenants' rows; a route is always [`route_of`] a tenant row that is not
//! being deleted. The only state the database lacks is the set of pools
//! *closed* to placement while this process empties or starts them (held
//! in memory on purpose: after a crash, start-up recovery decides anew).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use crate::access::Access;
use crate::backend::Backend;
use crate::db::{Db, DbError, NewPool, PoolRow, TenantRow};
use crate::placement::{PoolCapacity, PoolIndex};
use crate::proxy::route_table::{Route, RouteTable};
use crate::states::{Desired, PoolMode, PoolState};

/// Placement state and its lock; see the module doc.
pub struct Ledger {
    db: Arc<Db>,
    book: tokio::sync::Mutex<Book>,
    routes: Arc<RwLock<RouteTable>>,
    access: Arc<Access>,
    backend: Arc<dyn Backend>,
}

/// What the lock guards.
#[derive(Default)]
struct Book {
    index: PoolIndex,
    /// Pools no new tenant may enter for now: being emptied (evacuation,
    /// consolidation, cleanup) or started for one creator (its slot 0).
    closed: BTreeSet<u64>,
}

/// The ledger's lock, held: every placement change is a method of this.
pub struct Held<'a> {
    ledger: &'a Ledger,
    book: tokio::sync::MutexGuard<'a, Book>,
}

/// What [`Held::move_tenant`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// Moved; the row as it is now.
    Done(TenantRow),
    /// Its deletion began meanwhile: not moved (the caller finishes it).
    Deleting(TenantRow),
    /// Gone, or no longer in the pool it was to leave.
    Elsewhere,
}

/// The index entry of `pool` holding `tenants`; `closed`: no new tenant.
pub fn capacity(pool: &PoolRow, tenants: &[&TenantRow], closed: bool) -> PoolCapacity {
    PoolCapacity {
        number: pool.number,
        class: pool.class.clone(),
        slots: pool.slots,
        memory_mb: pool.memory_mb,
        cpu_millis: pool.cpu_millis,
        used_slots: tenants.iter().map(|t| t.slot).collect(),
        used_memory_mb: tenants.iter().map(|t| t.memory_mb()).sum(),
        used_cpu_millis: tenants.iter().map(|t| t.cpu_millis()).sum(),
        accepting: !closed && pool.mode == PoolMode::Pooled && pool.status == PoolState::Running,
    }
}

/// The proxy route of tenant `t` placed in `pool`, whose agent is at
/// `agent` (its slot ports are on the same host); `None` for a tenant being
/// deleted, or a slot the pool lacks.
pub fn route_of(t: &TenantRow, pool: &PoolRow, agent: std::net::SocketAddr) -> Option<Route> {
    if t.desired == Desired::Deleting || t.pool != pool.number {
        return None;
    }
    Some(Route {
        owner: t.owner.clone(),
        ip: agent.ip(),
        port: pool.slot_port(t.slot)?,
        uid: pool.uid_base + t.slot,
    })
}

/// The routes, write-locked; wakes the proxy streams when dropped, so each
/// checks whether its route still stands.
struct RoutesMut<'a> {
    routes: RwLockWriteGuard<'a, RouteTable>,
    access: &'a Access,
}

impl std::ops::Deref for RoutesMut<'_> {
    type Target = RouteTable;
    fn deref(&self) -> &RouteTable {
        &self.routes
    }
}

impl std::ops::DerefMut for RoutesMut<'_> {
    fn deref_mut(&mut self) -> &mut RouteTable {
        &mut self.routes
    }
}

impl Drop for RoutesMut<'_> {
    fn drop(&mut self) {
        self.access.wake();
    }
}

impl Ledger {
    /// An empty ledger over `db` (call [`Ledger::rebuild`] to load it).
    pub fn new(db: Arc<Db>, access: Arc<Access>, backend: Arc<dyn Backend>) -> Self {
        Ledger {
            db,
            book: tokio::sync::Mutex::new(Book::default()),
            routes: Arc::default(),
            access,
            backend,
        }
    }

    /// Take the lock.
    pub async fn lock(&self) -> Held<'_> {
        Held {
            ledger: self,
            book: self.book.lock().await,
        }
    }

    /// The proxy routes, to read (the proxy's hot path; never written
    /// outside the ledger).
    pub fn routes(&self) -> &Arc<RwLock<RouteTable>> {
        &self.routes
    }

    /// Derive the index and the routes afresh from the database (start-up,
    /// or after a multi-step change failed half-way); pools stay closed.
    pub async fn rebuild(&self) -> Result<(), DbError> {
        let mut held = self.lock().await;
        let pools = self.db.pools()?;
        let tenants = self.db.tenants()?;
        let mut index = PoolIndex::new();
        let mut routes = RouteTable::default();
        let grouped = crate::db::by_pool(&tenants);
        for p in &pools {
            let mine = crate::db::tenants_of(&grouped, p.number);
            index.upsert(capacity(p, mine, held.book.closed.contains(&p.number)));
            let agent = self.backend.agent_addr(&p.spec());
            for t in mine {
                if let Some(r) = route_of(t, p, agent) {
                    routes.insert(t.id.to_string(), r);
                }
            }
        }
        held.book.index = index;
        *held.routes_mut() = routes;
        Ok(())
    }
}

impl Held<'_> {
    /// The placement index (read-only: it follows the rows).
    pub fn index(&self) -> &PoolIndex {
        &self.book.index
    }

    /// The database (for reads while the lock is held).
    pub fn db(&self) -> &Db {
        &self.ledger.db
    }

    fn routes_mut(&self) -> RoutesMut<'_> {
        RoutesMut {
            routes: self
                .ledger
                .routes
                .write()
                .unwrap_or_else(|e| e.into_inner()),
            access: &self.ledger.access,
        }
    }

    /// Derive pool `number`'s index entry from its rows again.
    fn refresh_pool(&mut self, number: u64) -> Result<(), DbError> {
        match self.ledger.db.pool(number)? {
            Some(p) => {
                let tenants = self.ledger.db.pool_tenants(number)?;
                let refs: Vec<&TenantRow> = tenants.iter().collect();
                let closed = self.book.closed.contains(&number);
                self.book.index.upsert(capacity(&p, &refs, closed));
            }
            None => {
                self.book.index.remove(number);
            }
        }
        Ok(())
    }

    /// Derive tenant `id`'s route from its row again: a new generation
    /// only when where it is reached changed.
    fn refresh_route(&mut self, id: &str) -> Result<(), DbError> {
        let route = match self.ledger.db.tenant(id)? {
            Some(t) => match self.ledger.db.pool(t.pool)? {
                Some(p) => route_of(&t, &p, self.ledger.backend.agent_addr(&p.spec())),
                None => None,
            },
            None => None,
        };
        let now = self
            .ledger
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        match route {
            Some(r) if now.as_ref() != Some(&r) => self.routes_mut().insert(id.to_string(), r),
            Some(_) => {}
            None if now.is_some() => self.routes_mut().remove(id),
            None => {}
        }
        Ok(())
    }

    /// Store a new pool (`starting`), closed to placement until
    /// [`Held::open_pool`]: its first slot is its creator's.
    pub fn reserve_pool(
        &mut self,
        new: &NewPool,
        usable: impl Fn(&crate::blocks::Block) -> bool,
    ) -> Result<PoolRow, DbError> {
        let row = self.ledger.db.insert_pool(new, usable)?;
        self.book.closed.insert(row.number);
        self.refresh_pool(row.number)?;
        Ok(row)
    }

    /// Set a pool's status (and backend reference); the index follows, so
    /// a failed pool takes no tenant and a restarted one takes them again.
    pub fn set_pool_status(
        &mut self,
        number: u64,
        status: PoolState,
        backend_ref: Option<&str>,
    ) -> Result<Option<PoolRow>, DbError> {
        self.ledger
            .db
            .set_pool_status(number, status, backend_ref)?;
        self.refresh_pool(number)?;
        self.ledger.db.pool(number)
    }

    /// Close pool `number` to new tenants (it is being emptied).
    pub fn close_pool(&mut self, number: u64) -> Result<(), DbError> {
        self.book.closed.insert(number);
        self.refresh_pool(number)
    }

    /// Open pool `number` to new tenants again (its status permitting).
    pub fn open_pool(&mut self, number: u64) -> Result<(), DbError> {
        self.book.closed.remove(&number);
        self.refresh_pool(number)
    }

    /// Remove a pool's row (it must hold no tenant) and its index entry.
    pub fn remove_pool(&mut self, number: u64, why: &str) -> Result<(), DbError> {
        self.ledger.db.delete_pool(number, why)?;
        self.book.closed.remove(&number);
        self.refresh_pool(number)
    }

    /// Store a placed tenant: its slot is taken, its route opens.
    pub fn insert_tenant(&mut self, row: &TenantRow) -> Result<(), DbError> {
        let port = self
            .ledger
            .db
            .pool(row.pool)?
            .and_then(|p| p.slot_port(row.slot))
            .ok_or_else(|| DbError::Conflict(format!("{} has no slot {}", row.pool, row.slot)))?;
        self.ledger.db.insert_tenant(row, port)?;
        self.refresh_pool(row.pool)?;
        self.refresh_route(&row.id)
    }

    /// Why tenant `id` may not leave pool `from` now (gone, elsewhere, or
    /// being deleted), if so.
    fn not_movable(&self, id: &str, from: u64) -> Result<Option<Moved>, DbError> {
        Ok(
            match self.ledger.db.tenant(id)?.filter(|t| t.pool == from) {
                None => Some(Moved::Elsewhere),
                Some(t) if t.desired == Desired::Deleting => Some(Moved::Deleting(t)),
                Some(_) => None,
            },
        )
    }

    /// Move tenant `id` out of pool `from` into `slot` of `to`, unless its
    /// deletion began or it left `from` meanwhile.
    pub fn move_tenant(
        &mut self,
        id: &str,
        from: u64,
        to: &PoolRow,
        slot: u32,
        why: &str,
    ) -> Result<Moved, DbError> {
        if let Some(not) = self.not_movable(id, from)? {
            return Ok(not);
        }
        let port = to
            .slot_port(slot)
            .ok_or_else(|| DbError::Conflict(format!("{} has no slot {slot}", to.id())))?;
        self.ledger.db.move_tenant(id, to.number, slot, port, why)?;
        self.refresh_pool(from)?;
        self.refresh_pool(to.number)?;
        self.refresh_route(id)?;
        let now = self.ledger.db.tenant(id)?;
        Ok(now.map_or(Moved::Elsewhere, Moved::Done))
    }

    /// Give tenant `id` (in pool `from`) a new spec, and with `to` a new
    /// slot in another pool, unless its deletion began or it left `from`
    /// meanwhile.
    pub fn update_tenant(
        &mut self,
        id: &str,
        from: u64,
        spec: &crate::tenant_spec::TenantSpec,
        to: Option<(&PoolRow, u32)>,
        why: &str,
    ) -> Result<Moved, DbError> {
        if let Some(not) = self.not_movable(id, from)? {
            return Ok(not);
        }
        let target = match to {
            Some((p, slot)) => Some((
                p.number,
                slot,
                p.slot_port(slot)
                    .ok_or_else(|| DbError::Conflict(format!("{} has no slot {slot}", p.id())))?,
            )),
            None => None,
        };
        self.ledger.db.update_tenant(id, spec, target, why)?;
        self.refresh_pool(from)?;
        if let Some((to, _, _)) = target {
            self.refresh_pool(to)?;
        }
        self.refresh_route(id)?;
        let now = self.ledger.db.tenant(id)?;
        Ok(now.map_or(Moved::Elsewhere, Moved::Done))
    }

    /// Set what is wanted of tenant `id`; returns whether it changed. Its
    /// route follows: closed once it is being deleted, and a new
    /// generation when it stops (what the proxy holds open to it ends).
    pub fn set_desired(&mut self, id: &str, desired: Desired) -> Result<bool, DbError> {
        let changed = self.ledger.db.set_desired(id, desired)?;
        self.refresh_route(id)?;
        if desired == Desired::Stopped {
            self.routes_mut().bump(id);
        }
        Ok(changed)
    }

    /// Drop tenant `id`'s row: its slot is free, its route and sessions
    /// gone. Returns the row it had.
    pub fn forget_tenant(&mut self, id: &str, why: &str) -> Result<Option<TenantRow>, DbError> {
        let Some(t) = self.ledger.db.tenant(id)? else {
            return Ok(None);
        };
        self.ledger.db.delete_tenant(id, why)?;
        self.refresh_pool(t.pool)?;
        self.refresh_route(id)?;
        self.ledger.access.forget_tenant(id);
        Ok(Some(t))
    }
}
