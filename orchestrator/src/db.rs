//! The orchestrator's desired state in SQLite (`$DATA_DIR/slotpack.db`, WAL).
//!
//! The schema enforces what must never be violated: one tenant per
//! (pool, slot), one tenant per port, one pool per port block and agent port.
//! Every write commits before the API answers.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::blocks;
use crate::classes::ClassSpec;
use crate::states::{Desired, PoolMode, PoolState};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

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

impl PoolRow {
    /// The pool's id, `pool-<number>`.
    pub fn id(&self) -> String {
        pool_id(self.number)
    }
}

/// `pool-<number>`.
pub fn pool_id(number: u64) -> String {
    format!("pool-{number}")
}

/// The number in `pool-<number>`.
pub fn pool_number(id: &str) -> Option<u64> {
    id.strip_prefix("pool-")?.parse().ok()
}

/// What a new pool needs; block and ports are allocated by [`Db::insert_pool`].
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
    /// Shared, or one tenant's own.
    pub mode: PoolMode,
    /// Agent token.
    pub token: String,
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    /// Tenant id.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// The accepted spec as JSON.
    pub spec: String,
    /// Pool number.
    pub pool: u64,
    /// Slot.
    pub slot: u32,
    /// Port.
    pub port: u16,
    /// Memory reserved in MiB.
    pub memory_mb: u64,
    /// CPU reserved in millicores.
    pub cpu_millis: u64,
    /// What is wanted of it.
    pub desired: Desired,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Unix time after which the tenant is removed.
    pub expires_at: Option<i64>,
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
}

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

/// Schema version 1: the tables as they were before versions were kept
/// (created if missing; `pools.uid_base` added to files that predate it).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pools (
    number      INTEGER PRIMARY KEY AUTOINCREMENT,
    block       INTEGER NOT NULL UNIQUE CHECK (block >= 0),
    base_port   INTEGER NOT NULL UNIQUE,
    agent_port  INTEGER NOT NULL UNIQUE,
    uid_base    INTEGER,
    slots       INTEGER NOT NULL CHECK (slots > 0),
    memory_mb   INTEGER NOT NULL,
    cpu_millis  INTEGER NOT NULL,
    class       TEXT,
    mode        TEXT NOT NULL CHECK (mode IN ('pooled', 'legacy')),
    status      TEXT NOT NULL,
    token       TEXT NOT NULL,
    backend_ref TEXT,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tenants (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    spec        TEXT NOT NULL,
    pool        INTEGER NOT NULL REFERENCES pools(number),
    slot        INTEGER NOT NULL CHECK (slot >= 0),
    port        INTEGER NOT NULL UNIQUE,
    memory_mb   INTEGER NOT NULL,
    cpu_millis  INTEGER NOT NULL,
    desired     TEXT NOT NULL CHECK (desired IN ('running', 'stopped', 'deleting')),
    created_at  TEXT NOT NULL,
    expires_at  INTEGER,
    UNIQUE (pool, slot)
);
CREATE TABLE IF NOT EXISTS tokens (
    hash        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    tenant      TEXT,
    pool        TEXT,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_tenant ON events (tenant);
CREATE TABLE IF NOT EXISTS migrations (
    tenant      TEXT PRIMARY KEY,
    container   TEXT NOT NULL,
    backup      TEXT NOT NULL,
    spec        TEXT NOT NULL,
    status      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
";

/// Schema versions after 1, in order: version `i + 2` is `MIGRATIONS[i]`.
/// Append only; each runs once, in a transaction, and sets `user_version`.
const MIGRATIONS: &[&str] = &[
    // 2: pool classes (image and size) and the image a pool was made with.
    "CREATE TABLE classes (
        name        TEXT PRIMARY KEY,
        spec        TEXT NOT NULL,
        from_config INTEGER NOT NULL DEFAULT 0 CHECK (from_config IN (0, 1)),
        updated_at  TEXT NOT NULL
    );
    ALTER TABLE pools ADD COLUMN image TEXT;",
];

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: u32 = 1 + MIGRATIONS.len() as u32;

/// Bring the file to [`SCHEMA_VERSION`]: version 0 (new, or made before
/// versions were kept) gets the version-1 tables, then every later step
/// runs once, each in its own transaction. A file of a newer slotpack is
/// refused, not guessed at.
fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let mut version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(DbError::Conflict(format!(
            "the database has schema version {version}, newer than this slotpack's {SCHEMA_VERSION}: use a newer slotpack"
        )));
    }
    if version == 0 {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        add_column_if_missing(&tx, "pools", "uid_base", "INTEGER")?;
        // Files between the first classes code and versioning (never
        // released) may hold parts of version 2 already.
        let has_image: bool = tx
            .prepare("SELECT 1 FROM pragma_table_info('pools') WHERE name = 'image'")?
            .exists([])?;
        tx.pragma_update(None, "user_version", if has_image { 2 } else { 1 })?;
        tx.commit()?;
        version = if has_image { 2 } else { 1 };
    }
    for (i, step) in MIGRATIONS.iter().enumerate() {
        let to = i as u32 + 2;
        if version < to {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", to)?;
            tx.commit()?;
            version = to;
        }
    }
    Ok(())
}

/// Add `column` to `table` unless it is there (schema growth of older files).
fn add_column_if_missing(
    conn: &Connection,
    table: &str,
    column: &str,
    decl: &str,
) -> Result<(), DbError> {
    let has: bool = conn
        .prepare(&format!(
            "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
        ))?
        .exists([column])?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
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

/// The database handle; one connection, serialised by a mutex.
pub struct Db {
    conn: Mutex<Connection>,
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
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create or replace class `name`; `from_config`: set by the config file.
    pub fn put_class(
        &self,
        name: &str,
        spec: &ClassSpec,
        from_config: bool,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO classes (name, spec, from_config, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET spec = ?2, from_config = ?3, updated_at = ?4",
            params![name, serde_json::to_string(spec)?, from_config, now()],
        )?;
        Ok(())
    }

    /// Class `name`, if defined.
    pub fn class(&self, name: &str) -> Result<Option<ClassSpec>, DbError> {
        let spec: Option<String> = self
            .conn()
            .query_row("SELECT spec FROM classes WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(spec.map(|s| serde_json::from_str(&s)).transpose()?)
    }

    /// Every class: name, spec, whether the config file set it, pools of it.
    pub fn classes(&self) -> Result<Vec<(String, ClassSpec, bool, u32)>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT c.name, c.spec, c.from_config, (SELECT COUNT(*) FROM pools p WHERE p.class = c.name)
             FROM classes c ORDER BY c.name",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(n, s, c, p)| Ok((n, serde_json::from_str(&s)?, c, p)))
            .collect()
    }

    /// Remove class `name`; refused while pools of it exist. Returns
    /// whether it existed.
    pub fn delete_class(&self, name: &str) -> Result<bool, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pools: u32 =
            tx.query_row("SELECT COUNT(*) FROM pools WHERE class = ?1", [name], |r| {
                r.get(0)
            })?;
        if pools > 0 {
            return Err(DbError::Conflict(format!(
                "class {name} still has {pools} pools: delete or move their tenants first"
            )));
        }
        let n = tx.execute("DELETE FROM classes WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(n > 0)
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

    /// Insert a pool in the lowest block whose ports and uids touch no
    /// stored pool's and pass `usable`; returns the stored row.
    pub fn insert_pool(
        &self,
        p: &NewPool,
        usable: impl Fn(&blocks::Block) -> bool,
    ) -> Result<PoolRow, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held: Vec<blocks::Held> = tx
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
        let want = blocks::Want {
            slots: p.slots,
            width: p.block_width,
            pool_base_port: p.pool_base_port,
            uid_base: p.uid_base,
        };
        let Some(b) = blocks::choose(&held, want, usable) else {
            return Err(DbError::Conflict(
                "no port block left for a new pool".into(),
            ));
        };
        let (block, base, last) = (b.block, b.base_port, u32::from(b.base_port) + p.slots - 1);
        let created = now();
        tx.execute(
            "INSERT INTO pools (block, base_port, agent_port, uid_base, slots, memory_mb, cpu_millis, class, image, mode, status, token, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'starting', ?11, ?12)",
            params![block, base, b.agent_port, b.uid_base, p.slots, p.memory_mb, p.cpu_millis, p.class, p.image, p.mode, p.token, created],
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

    /// Insert a placed tenant; a taken id, slot or port is a conflict.
    pub fn insert_tenant(&self, t: &TenantRow) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = tx.execute(
            "INSERT INTO tenants (id, owner, spec, pool, slot, port, memory_mb, cpu_millis, desired, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![t.id, t.owner, t.spec, t.pool, t.slot, t.port, t.memory_mb, t.cpu_millis, t.desired, t.created_at, t.expires_at],
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
            params![now(), t.id, pool_id(t.pool), format!("slot {}, port {}", t.slot, t.port)],
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
        tx.execute("DELETE FROM tenants WHERE id = ?1", [id])?;
        tx.execute(
            "INSERT INTO events (at, kind, tenant, detail) VALUES (?1, 'tenant.removed', ?2, ?3)",
            params![now(), id, why],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Record an event.
    pub fn event(
        &self,
        kind: &str,
        tenant: Option<&str>,
        pool: Option<&str>,
        detail: &str,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO events (at, kind, tenant, pool, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now(), kind, tenant, pool, detail],
        )?;
        Ok(())
    }

    /// The latest events, newest last; only those of `tenant` if given.
    pub fn events(&self, tenant: Option<&str>, limit: u32) -> Result<Vec<EventRow>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT seq, at, kind, tenant, pool, detail FROM events
             WHERE (?1 IS NULL OR tenant = ?1) ORDER BY seq DESC LIMIT ?2",
        )?;
        let mut rows: Vec<EventRow> = st
            .query_map(params![tenant, limit], |r| {
                Ok(EventRow {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    kind: r.get(2)?,
                    tenant: r.get(3)?,
                    pool: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Store an owner token by its hash.
    pub fn insert_token(&self, hash: &str, owner: &str) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO tokens (hash, owner, created_at) VALUES (?1, ?2, ?3)",
            params![hash, owner, now()],
        )?;
        Ok(())
    }

    /// Every owner token (never the token itself: its id is the first 16
    /// hex digits of its hash), oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT substr(hash, 1, 16), owner, created_at FROM tokens ORDER BY created_at, hash",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(TokenRow {
                    id: r.get(0)?,
                    owner: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Revoke the token with this id; returns its owner if there was one.
    pub fn delete_token(&self, id: &str) -> Result<Option<String>, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let owner: Option<String> = tx
            .query_row(
                "SELECT owner FROM tokens WHERE substr(hash, 1, 16) = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(o) = &owner {
            tx.execute("DELETE FROM tokens WHERE substr(hash, 1, 16) = ?1", [id])?;
            tx.execute(
                "INSERT INTO events (at, kind, detail) VALUES (?1, 'token.revoked', ?2)",
                params![now(), format!("token {id} of {o}")],
            )?;
        }
        tx.commit()?;
        Ok(owner)
    }

    /// Keep only the latest `keep` events: older rows go as new ones come.
    pub fn set_event_retention(&self, keep: u64) -> Result<(), DbError> {
        self.conn().execute_batch(&format!(
            "DROP TRIGGER IF EXISTS events_retention;
             CREATE TRIGGER events_retention AFTER INSERT ON events BEGIN
                 DELETE FROM events WHERE seq <= NEW.seq - {keep};
             END;"
        ))?;
        Ok(())
    }

    /// Every owner token as (hash, owner), for the in-memory cache.
    pub fn token_hashes(&self) -> Result<Vec<(String, String)>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT hash, owner FROM tokens")?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

impl Db {
    /// Record the start of a tenant's migration with its backup.
    pub fn migration_begin(
        &self,
        tenant: &str,
        container: &str,
        backup: &str,
        spec: &str,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO migrations (tenant, container, backup, spec, status, detail, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'started', '', ?5)
             ON CONFLICT (tenant) DO UPDATE SET container = ?2, backup = ?3, spec = ?4",
            params![tenant, container, backup, spec, now()],
        )?;
        Ok(())
    }

    /// Record a migration step (also in the events log).
    pub fn migration_step(&self, tenant: &str, step: &str, detail: &str) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE migrations SET status = ?2, detail = ?3, updated_at = ?4 WHERE tenant = ?1",
            params![tenant, step, detail, now()],
        )?;
        tx.execute(
            "INSERT INTO events (at, kind, tenant, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now(), format!("migration.{step}"), tenant, detail],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// One tenant's migration.
    pub fn migration(&self, tenant: &str) -> Result<Option<MigrationRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT tenant, container, backup, status, detail FROM migrations WHERE tenant = ?1",
                [tenant],
                migration_row,
            )
            .optional()?)
    }

    /// Every migration, by tenant.
    pub fn migrations(&self) -> Result<Vec<MigrationRow>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT tenant, container, backup, status, detail FROM migrations ORDER BY tenant",
        )?;
        let rows = st.query_map([], migration_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

fn migration_row(r: &Row<'_>) -> rusqlite::Result<MigrationRow> {
    Ok(MigrationRow {
        tenant: r.get(0)?,
        container: r.get(1)?,
        backup: r.get(2)?,
        status: r.get(3)?,
        detail: r.get(4)?,
    })
}

const POOL_SELECT: &str = "SELECT number, block, base_port, agent_port, COALESCE(uid_base, 0), slots, memory_mb, cpu_millis, class, mode, status, token, backend_ref, created_at, image FROM pools";
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
    })
}

fn tenant_row(r: &Row<'_>) -> rusqlite::Result<TenantRow> {
    Ok(TenantRow {
        id: r.get(0)?,
        owner: r.get(1)?,
        spec: r.get(2)?,
        pool: r.get(3)?,
        slot: r.get(4)?,
        port: r.get(5)?,
        memory_mb: r.get(6)?,
        cpu_millis: r.get(7)?,
        desired: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(name: &str) -> (Db, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!("slotpack-db-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        (Db::open(&p).unwrap(), p)
    }

    /// Close the database and remove its files (the WAL ones too).
    fn close(db: Db, path: std::path::PathBuf) {
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let mut f = path.clone().into_os_string();
            f.push(suffix);
            let _ = std::fs::remove_file(f);
        }
        assert!(!path.exists());
    }

    fn new_pool() -> NewPool {
        NewPool {
            slots: 10,
            block_width: 10,
            pool_base_port: 9000,
            uid_base: 10_000,
            memory_mb: 4096,
            cpu_millis: 4000,
            class: None,
            image: None,
            mode: PoolMode::Pooled,
            token: "t".into(),
        }
    }

    #[test]
    fn a_file_of_the_schema_before_versions_is_migrated_with_its_rows() {
        let p = std::env::temp_dir().join(format!("slotpack-db-old-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        {
            // The schema as released before versions were kept (8d7e022,
            // before pools kept their uid base), with a pool, a tenant and
            // an event in it.
            let c = Connection::open(&p).unwrap();
            c.execute_batch(include_str!("../testdata/schema-8d7e022.sql"))
                .unwrap();
            c.execute_batch(
                "INSERT INTO pools (block, base_port, agent_port, slots, memory_mb, cpu_millis, mode, status, token, created_at)
                 VALUES (0, 9000, 8999, 10, 4096, 4000, 'pooled', 'running', 't', 'then');
                 INSERT INTO tenants (id, owner, spec, pool, slot, port, memory_mb, cpu_millis, desired, created_at)
                 VALUES ('old-1', 'alice', '{}', 1, 0, 9000, 256, 100, 'running', 'then');
                 INSERT INTO events (at, kind, detail) VALUES ('then', 'tenant.placed', 'old');",
            )
            .unwrap();
        }
        let db = Db::open(&p).unwrap();
        let version: u32 = db
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // The rows are there and every newer column and table works.
        assert_eq!(db.tenant("old-1").unwrap().unwrap().owner, "alice");
        db.fill_uid_bases(10_000).unwrap();
        let old = db.pool(1).unwrap().unwrap();
        assert_eq!((old.uid_base, old.image.clone()), (10_000, None));
        let spec = ClassSpec {
            image: "python:3.11".into(),
            slots: Some(2),
            memory_mb: None,
            cpu_millis: None,
        };
        db.put_class("py", &spec, false).unwrap();
        let mut np = new_pool();
        np.class = Some("py".into());
        np.image = Some("python:3.11".into());
        let made = db.insert_pool(&np, |_| true).unwrap();
        assert_eq!(made.image.as_deref(), Some("python:3.11"));
        assert_ne!(made.block, 0);
        assert_eq!(db.classes().unwrap()[0].3, 1);
        drop(db);
        // Opening again changes nothing; a newer slotpack's file is refused.
        let db = Db::open(&p).unwrap();
        assert_eq!(db.class("py").unwrap(), Some(spec));
        db.conn().pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        let err = Db::open(&p)
            .err()
            .expect("a newer schema is refused")
            .to_string();
        assert!(err.contains("newer"), "{err}");
        close_path(p);
    }

    fn close_path(path: std::path::PathBuf) {
        for suffix in ["", "-wal", "-shm"] {
            let mut f = path.clone().into_os_string();
            f.push(suffix);
            let _ = std::fs::remove_file(f);
        }
    }

    fn tenant(id: &str, pool: u64, slot: u32, port: u16) -> TenantRow {
        TenantRow {
            id: id.into(),
            owner: "o".into(),
            spec: "{}".into(),
            pool,
            slot,
            port,
            memory_mb: 1,
            cpu_millis: 1,
            desired: Desired::Running,
            created_at: now(),
            expires_at: None,
        }
    }

    #[test]
    fn pools_get_the_lowest_free_block_and_numbers_are_never_reused() {
        let (db, path) = db("blocks");
        let a = db.insert_pool(&new_pool(), |_| true).unwrap();
        let b = db.insert_pool(&new_pool(), |_| true).unwrap();
        assert_eq!((a.block, a.base_port, a.agent_port), (0, 9000, 8999));
        assert_eq!((b.block, b.base_port, b.agent_port), (1, 9010, 8998));
        db.delete_pool(a.number, "test").unwrap();
        let c = db.insert_pool(&new_pool(), |_| true).unwrap();
        assert_eq!(c.block, 0);
        assert!(c.number > b.number);
        close(db, path);
    }

    #[test]
    fn schema_rejects_a_second_tenant_on_a_slot_or_port() {
        let (db, path) = db("unique");
        let p = db.insert_pool(&new_pool(), |_| true).unwrap();
        db.insert_tenant(&tenant("a", p.number, 0, 9000)).unwrap();
        for t in [
            tenant("a", p.number, 1, 9001),
            tenant("b", p.number, 0, 9005),
            tenant("c", p.number, 2, 9000),
        ] {
            assert!(
                matches!(db.insert_tenant(&t), Err(DbError::Conflict(_))),
                "{t:?}"
            );
        }
        assert!(matches!(
            db.delete_pool(p.number, "x"),
            Err(DbError::Conflict(_))
        ));
        assert_eq!(db.tenants().unwrap().len(), 1);
        let kinds: Vec<String> = db
            .events(None, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["pool.created", "tenant.placed"]);
        close(db, path);
    }
}
