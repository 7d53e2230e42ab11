//! The orchestrator's desired state in SQLite (`$DATA_DIR/slotpack.db`, WAL).
//!
//! The schema enforces what must never be violated: one tenant per
//! (pool, slot), one tenant per port, one pool per port block and agent port.
//! Every write commits before the API answers.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

mod records;
mod rows;
mod schema;
#[cfg(test)]
mod tests;

pub use rows::*;
use schema::migrate;
pub use schema::SCHEMA_VERSION;

use crate::blocks;
use crate::states::{Desired, PoolState};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use slotpack_proto::protocol::TenantId;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A uniqueness rule was hit.
    #[error("{0}")]
    Conflict(String),
    /// The database files could not be made private.
    #[error("database file: {0}")]
    Io(#[from] std::io::Error),
    /// JSON in a row could not be read.
    #[error("database row: {0}")]
    Json(#[from] serde_json::Error),
}

/// The database handle; one connection, serialised by a mutex.
pub struct Db {
    conn: Mutex<Connection>,
    /// The latest event's `seq`, told to stream readers on every insert.
    latest_event: Arc<tokio::sync::watch::Sender<i64>>,
}

fn now() -> String {
    slotpack_proto::clock::now_rfc3339()
}

impl Db {
    /// Open (and create) the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        // Earlier versions left the files world-readable.
        for suffix in ["", "-wal", "-shm"] {
            let mut f = path.as_os_str().to_owned();
            f.push(suffix);
            let f = std::path::PathBuf::from(f);
            if f.exists() {
                std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            }
        }
        let latest: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
        let latest_event = Arc::new(tokio::sync::watch::channel(latest).0);
        let tell = latest_event.clone();
        // Called inside the writer's transaction: a reader woken by it
        // waits for the connection, so it reads the row once committed
        // (or finds nothing, if the transaction rolled back).
        conn.update_hook(Some(
            move |action: rusqlite::hooks::Action, _db: &str, table: &str, seq: i64| {
                if action == rusqlite::hooks::Action::SQLITE_INSERT && table == "events" {
                    tell.send_replace(seq);
                }
            },
        ));
        Ok(Db {
            conn: Mutex::new(conn),
            latest_event,
        })
    }

    /// Wakes at every new event; holds the latest event's `seq`.
    pub fn event_signal(&self) -> tokio::sync::watch::Receiver<i64> {
        self.latest_event.subscribe()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give pools stored before uid bases were kept the uid base they ran
    /// with (`uid_base + block · slots`).
    pub fn fill_uid_bases(&self, uid_base: u32) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE pools SET uid_base = ?1 + block * slots WHERE uid_base IS NULL",
            [uid_base],
        )?;
        Ok(())
    }

    /// The slot uid ranges of every stored pool.
    pub fn uid_ranges(&self) -> Result<Vec<std::ops::Range<u64>>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT COALESCE(uid_base, 0), slots FROM pools")?;
        let v = st
            .query_map([], |r| {
                let (u, n): (u64, u64) = (r.get(0)?, r.get(1)?);
                Ok(u..u + n)
            })?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }

    /// Insert a pool in the lowest block whose ports and uids touch no
    /// stored pool's and pass `usable`; returns the stored row. `usable`
    /// (socket probes) runs outside any transaction and with the connection
    /// free; the transaction checks the chosen block again.
    pub fn insert_pool(
        &self,
        p: &NewPool,
        usable: impl Fn(&blocks::Block) -> bool,
    ) -> Result<PoolRow, DbError> {
        let want = blocks::Want {
            slots: p.slots,
            width: p.block_width,
            pool_base_port: p.pool_base_port,
            uid_base: p.uid_base,
        };
        let held = Self::held_blocks(&self.conn())?;
        let Some(b) = blocks::choose(&held, want, usable) else {
            return Err(DbError::Conflict(
                "no port block left for a new pool".into(),
            ));
        };
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Nobody took it meanwhile (the service holds its ledger's lock
        // around this anyway): the same choice over the rows now.
        let again = blocks::choose(&Self::held_blocks(&tx)?, want, |c| c.block == b.block);
        if again.as_ref() != Some(&b) {
            return Err(DbError::Conflict(format!(
                "port block {} was taken meanwhile",
                b.block
            )));
        }
        let (block, base, last) = (b.block, b.base_port, u32::from(b.base_port) + p.slots - 1);
        let created = now();
        tx.execute(
            "INSERT INTO pools (block, base_port, agent_port, uid_base, slots, memory_mb, cpu_millis, class, image, mode, status, token, created_at, node, layout)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'starting', ?11, ?12, ?13, ?14)",
            params![block, base, b.agent_port, b.uid_base, p.slots, p.memory_mb, p.cpu_millis, p.class, p.image, p.mode, p.token, created, p.node, LAYOUT],
        )?;
        let number = tx.last_insert_rowid() as u64;
        tx.execute(
            "INSERT INTO events (at, kind, pool, detail) VALUES (?1, 'pool.created', ?2, ?3)",
            params![
                created,
                pool_id(number),
                format!(
                    "block {block}, ports {base}-{last}, uids from {}",
                    b.uid_base
                )
            ],
        )?;
        tx.commit()?;
        drop(conn);
        self.pool(number)?
            .ok_or_else(|| DbError::Conflict("pool vanished".into()))
    }

    /// Make the next pool number greater than `n` (a number an orphaned
    /// pool of the backend carries: a new pool must never share its name).
    pub fn skip_pool_numbers_to(&self, n: u64) -> Result<(), DbError> {
        let conn = self.conn();
        let have: i64 = conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'pools'",
            [],
            |r| r.get(0),
        )?;
        if (have as u64) < n {
            let changed = conn.execute(
                "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'pools'",
                [n as i64],
            )?;
            if changed == 0 {
                conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('pools', ?1)",
                    [n as i64],
                )?;
            }
        }
        Ok(())
    }

    /// The blocks, ports and uids the stored pools hold.
    fn held_blocks(conn: &Connection) -> Result<Vec<blocks::Held>, DbError> {
        let held = conn
            .prepare(
                "SELECT block, base_port, slots, agent_port, COALESCE(uid_base, 0) FROM pools",
            )?
            .query_map([], |r| {
                let (port, slots, uid): (u32, u32, u64) = (r.get(1)?, r.get(2)?, r.get(4)?);
                Ok(blocks::Held {
                    block: r.get(0)?,
                    ports: port..port + slots,
                    agent_port: r.get(3)?,
                    uids: uid..uid + u64::from(slots),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(held)
    }

    /// Set a pool's status and backend reference.
    pub fn set_pool_status(
        &self,
        number: u64,
        status: PoolState,
        backend_ref: Option<&str>,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE pools SET status = ?2, backend_ref = COALESCE(?3, backend_ref) WHERE number = ?1",
            params![number, status, backend_ref],
        )?;
        Ok(())
    }

    /// One pool.
    pub fn pool(&self, number: u64) -> Result<Option<PoolRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                &format!("{POOL_SELECT} WHERE number = ?1"),
                [number],
                pool_row,
            )
            .optional()?)
    }

    /// Every pool, by number.
    pub fn pools(&self) -> Result<Vec<PoolRow>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("{POOL_SELECT} ORDER BY number"))?;
        let rows = st.query_map([], pool_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Remove a pool that holds no tenant.
    pub fn delete_pool(&self, number: u64, why: &str) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n: i64 = tx.query_row(
            "SELECT COUNT(*) FROM tenants WHERE pool = ?1",
            [number],
            |r| r.get(0),
        )?;
        if n > 0 {
            return Err(DbError::Conflict(format!(
                "{} still holds {n} tenants",
                pool_id(number)
            )));
        }
        tx.execute("DELETE FROM pools WHERE number = ?1", [number])?;
        tx.execute(
            "INSERT INTO events (at, kind, pool, detail) VALUES (?1, 'pool.removed', ?2, ?3)",
            params![now(), pool_id(number), why],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Insert a placed tenant reached on `port`; a taken id, slot or port
    /// is a conflict.
    pub fn insert_tenant(&self, t: &TenantRow, port: u16) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = tx.execute(
            "INSERT INTO tenants (id, owner, spec, pool, slot, port, memory_mb, cpu_millis, desired, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![t.id.as_str(), t.owner, t.spec, t.pool, t.slot, port, t.memory_mb(), t.cpu_millis(), t.desired, t.created_at, t.expires_at],
        );
        match r {
            Err(rusqlite::Error::SqliteFailure(e, msg))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(DbError::Conflict(format!(
                    "tenant {} conflicts with an existing one: {}",
                    t.id,
                    msg.unwrap_or_default()
                )))
            }
            r => r?,
        };
        tx.execute(
            "INSERT INTO events (at, kind, tenant, pool, detail) VALUES (?1, 'tenant.placed', ?2, ?3, ?4)",
            params![now(), t.id.as_str(), pool_id(t.pool), format!("slot {}, port {port}", t.slot)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Record that pool `number` now runs `image` in storage `layout`
    /// (after it was made again: an image roll, a layout upgrade).
    pub fn set_pool_made(
        &self,
        number: u64,
        image: Option<&str>,
        layout: u32,
        why: &str,
    ) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE pools SET image = ?2, layout = ?3 WHERE number = ?1",
            params![number, image, layout],
        )?;
        tx.execute(
            "INSERT INTO events (at, kind, pool, detail) VALUES (?1, 'pool.remade', ?2, ?3)",
            params![now(), pool_id(number), why],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Give tenant `id` a new spec (an update), and with `to` a new pool,
    /// slot and port too, in one transaction; an event says why.
    pub fn update_tenant(
        &self,
        id: &str,
        spec: &crate::tenant_spec::TenantSpec,
        to: Option<(u64, u32, u16)>,
        why: &str,
    ) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (mem, cpu) = (spec.resources.memory_mb, spec.resources.cpu_millis);
        let r = match to {
            Some((pool, slot, port)) => tx.execute(
                "UPDATE tenants SET spec = ?2, memory_mb = ?3, cpu_millis = ?4, pool = ?5, slot = ?6, port = ?7 WHERE id = ?1",
                params![id, spec, mem, cpu, pool, slot, port],
            ),
            None => tx.execute(
                "UPDATE tenants SET spec = ?2, memory_mb = ?3, cpu_millis = ?4 WHERE id = ?1",
                params![id, spec, mem, cpu],
            ),
        };
        match r {
            Err(rusqlite::Error::SqliteFailure(e, msg))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(DbError::Conflict(format!(
                    "updating {id}: {}",
                    msg.unwrap_or_default()
                )))
            }
            r => r?,
        };
        let (pool, detail) = match to {
            Some((pool, slot, port)) => (
                Some(pool_id(pool)),
                format!("{why}; now in slot {slot}, port {port}"),
            ),
            None => (None, why.to_string()),
        };
        tx.execute(
            "INSERT INTO events (at, kind, tenant, pool, detail) VALUES (?1, 'tenant.updated', ?2, ?3, ?4)",
            params![now(), id, pool, detail],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Move a tenant to another pool's slot (its port changes with it).
    pub fn move_tenant(
        &self,
        id: &str,
        pool: u64,
        slot: u32,
        port: u16,
        why: &str,
    ) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = tx.execute(
            "UPDATE tenants SET pool = ?2, slot = ?3, port = ?4 WHERE id = ?1",
            params![id, pool, slot, port],
        );
        match r {
            Err(rusqlite::Error::SqliteFailure(e, msg))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(DbError::Conflict(format!(
                    "moving {id}: {}",
                    msg.unwrap_or_default()
                )))
            }
            r => r?,
        };
        tx.execute(
            "INSERT INTO events (at, kind, tenant, pool, detail) VALUES (?1, 'tenant.moved', ?2, ?3, ?4)",
            params![now(), id, pool_id(pool), format!("slot {slot}, port {port}: {why}")],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// One tenant.
    pub fn tenant(&self, id: &str) -> Result<Option<TenantRow>, DbError> {
        Ok(self
            .conn()
            .query_row(&format!("{TENANT_SELECT} WHERE id = ?1"), [id], tenant_row)
            .optional()?)
    }

    /// Every tenant, by id.
    pub fn tenants(&self) -> Result<Vec<TenantRow>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("{TENANT_SELECT} ORDER BY id"))?;
        let rows = st.query_map([], tenant_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The tenants placed in pool `number`.
    pub fn pool_tenants(&self, number: u64) -> Result<Vec<TenantRow>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("{TENANT_SELECT} WHERE pool = ?1 ORDER BY id"))?;
        let rows = st
            .query_map([number], tenant_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Set a tenant's desired state, recording the event.
    pub fn set_desired(&self, id: &str, desired: Desired) -> Result<bool, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // No change, no row written: repeated actions cannot grow the log.
        let n = tx.execute(
            "UPDATE tenants SET desired = ?2 WHERE id = ?1 AND desired != ?2",
            params![id, desired],
        )?;
        if n > 0 {
            tx.execute(
                "INSERT INTO events (at, kind, tenant, detail) VALUES (?1, 'tenant.desired', ?2, ?3)",
                params![now(), id, desired],
            )?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Remove a tenant, recording why.
    pub fn delete_tenant(&self, id: &str, why: &str) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // The event first, so that it is stamped with its owner.
        tx.execute(
            "INSERT INTO events (at, kind, tenant, detail) VALUES (?1, 'tenant.removed', ?2, ?3)",
            params![now(), id, why],
        )?;
        tx.execute("DELETE FROM tenants WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }
}

const POOL_SELECT: &str = "SELECT number, block, base_port, agent_port, COALESCE(uid_base, 0), slots, memory_mb, cpu_millis, class, mode, status, token, backend_ref, created_at, image, node, layout FROM pools";
const TENANT_SELECT: &str = "SELECT id, owner, spec, pool, slot, port, memory_mb, cpu_millis, desired, created_at, expires_at FROM tenants";

fn pool_row(r: &Row<'_>) -> rusqlite::Result<PoolRow> {
    Ok(PoolRow {
        number: r.get(0)?,
        block: r.get(1)?,
        base_port: r.get(2)?,
        agent_port: r.get(3)?,
        uid_base: r.get(4)?,
        slots: r.get(5)?,
        memory_mb: r.get(6)?,
        cpu_millis: r.get(7)?,
        class: r.get(8)?,
        mode: r.get(9)?,
        status: r.get(10)?,
        token: r.get(11)?,
        backend_ref: r.get(12)?,
        created_at: r.get(13)?,
        image: r.get(14)?,
        node: r.get(15)?,
        layout: r.get(16)?,
    })
}

fn tenant_row(r: &Row<'_>) -> rusqlite::Result<TenantRow> {
    let id: String = r.get(0)?;
    Ok(TenantRow {
        id: TenantId::parse(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        owner: r.get(1)?,
        spec: r.get(2)?,
        pool: r.get(3)?,
        slot: r.get(4)?,
        // Columns 5-7 (port, memory_mb, cpu_millis) are derived at write
        // (the port from the pool, the rest from the spec) for SQL's own
        // checks and readers; the row carries one copy of each.
        desired: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
    })
}
