//! The schema and its versions (`PRAGMA user_version`): version 1 is the
//! schema before versions were kept; every later step is appended to
//! [`MIGRATIONS`] and runs once, in its own transaction.

use rusqlite::{Connection, TransactionBehavior};

use super::DbError;

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
    // 3: tenant specs in their own versioned format (`tenant_spec`), no
    // longer the API body: wrapped as version 1, without id and owner
    // (columns of the row).
    "UPDATE tenants SET spec = json_object(
        'version', 1,
        'spec', json(json_remove(json(spec), '$.id', '$.owner'))
    );",
    // 4: the cluster node a pool is pinned to (swarm backend).
    "ALTER TABLE pools ADD COLUMN node TEXT;",
    // 5: per-token quotas (NULL: the server's setting).
    "ALTER TABLE tokens ADD COLUMN max_tenants INTEGER;
    ALTER TABLE tokens ADD COLUMN max_memory_mb INTEGER;",
    // 6: where tenant data lives. Pools made before kept slot homes in
    // their own state (layout 1); later ones mount the deployment's tenant
    // data (layout 2), and start-up remakes the older ones so. And the
    // class image a rolling update gave up on.
    "ALTER TABLE pools ADD COLUMN layout INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE classes ADD COLUMN roll_failed TEXT;",
    // 7: each event of a tenant carries the tenant's owner, so an owner's
    // event stream reads its own (also once the tenant is gone).
    "ALTER TABLE events ADD COLUMN owner TEXT;
    UPDATE events SET owner = (SELECT owner FROM tenants WHERE tenants.id = events.tenant)
        WHERE tenant IS NOT NULL;
    CREATE INDEX events_owner ON events (owner, seq);
    CREATE TRIGGER events_owner AFTER INSERT ON events
        WHEN NEW.tenant IS NOT NULL AND NEW.owner IS NULL BEGIN
        UPDATE events SET owner = (SELECT owner FROM tenants WHERE id = NEW.tenant)
            WHERE seq = NEW.seq;
    END;",
];

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: u32 = 1 + MIGRATIONS.len() as u32;

/// Bring the file to [`SCHEMA_VERSION`]: version 0 (new, or made before
/// versions were kept) gets the version-1 tables, then every later step
/// runs once, each in its own transaction. A file of a newer slotpack is
/// refused, not guessed at.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), DbError> {
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
