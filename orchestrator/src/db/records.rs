//! The smaller tables: pool classes, owner tokens, the event log and
//! migration records.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::{now, Db, DbError, EventRow, MigrationRow, RollFailure, TokenRow};
use crate::access::QuotaOverride;
use crate::classes::ClassSpec;

impl Db {
    /// Create or replace class `name`; `from_config`: set by the config file.
    pub fn put_class(
        &self,
        name: &str,
        spec: &ClassSpec,
        from_config: bool,
    ) -> Result<(), DbError> {
        // A new image is a new roll: an earlier one's failure is forgotten.
        self.conn().execute(
            "INSERT INTO classes (name, spec, from_config, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET spec = ?2, from_config = ?3, updated_at = ?4,
               roll_failed = CASE WHEN json_extract(spec, '$.image') = ?5 THEN roll_failed END",
            params![
                name,
                serde_json::to_string(spec)?,
                from_config,
                now(),
                spec.image
            ],
        )?;
        Ok(())
    }

    /// Record that the roll of class `name` to its image gave up
    /// (`failure`: what happened), or clear that (`None`).
    pub fn set_roll_failed(
        &self,
        name: &str,
        failure: Option<&RollFailure>,
    ) -> Result<(), DbError> {
        let text = failure.map(serde_json::to_string).transpose()?;
        self.conn().execute(
            "UPDATE classes SET roll_failed = ?2 WHERE name = ?1",
            params![name, text],
        )?;
        Ok(())
    }

    /// Why the roll of each class whose roll gave up did so.
    pub fn roll_failures(
        &self,
    ) -> Result<std::collections::BTreeMap<String, RollFailure>, DbError> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT name, roll_failed FROM classes WHERE roll_failed IS NOT NULL")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(n, t)| Ok((n, serde_json::from_str(&t)?)))
            .collect()
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
        self.latest_events(None, tenant, limit)
    }

    /// The latest events, newest last; only those of `owner`'s tenants and
    /// of `tenant` if given.
    pub fn latest_events(
        &self,
        owner: Option<&str>,
        tenant: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRow>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT seq, at, kind, tenant, pool, detail FROM events
             WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR tenant = ?2)
             ORDER BY seq DESC LIMIT ?3",
        )?;
        let mut rows: Vec<EventRow> = st
            .query_map(params![owner, tenant, limit], event_row)?
            .collect::<Result<_, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Up to `limit` events after `after`, oldest first: only those of
    /// `owner`'s tenants if given, and of `tenant` if given.
    pub fn events_after(
        &self,
        after: i64,
        owner: Option<&str>,
        tenant: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRow>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT seq, at, kind, tenant, pool, detail FROM events
             WHERE seq > ?1 AND (?2 IS NULL OR owner = ?2) AND (?3 IS NULL OR tenant = ?3)
             ORDER BY seq LIMIT ?4",
        )?;
        let rows = st
            .query_map(params![after, owner, tenant, limit], event_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Store an owner token by its hash, with its own quota settings.
    pub fn insert_token(
        &self,
        hash: &str,
        owner: &str,
        quota: QuotaOverride,
    ) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO tokens (hash, owner, created_at, max_tenants, max_memory_mb) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hash, owner, now(), quota.max_tenants.map(|v| v as i64), quota.max_memory_mb.map(|v| v as i64)],
        )?;
        tx.execute(
            "INSERT INTO events (at, kind, detail) VALUES (?1, 'token.created', ?2)",
            params![now(), owner],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every owner token (never the token itself: its id is the first 16
    /// hex digits of its hash), oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT substr(hash, 1, 16), owner, created_at, max_tenants, max_memory_mb FROM tokens ORDER BY created_at, hash",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(TokenRow {
                    id: r.get(0)?,
                    owner: r.get(1)?,
                    created_at: r.get(2)?,
                    max_tenants: 0,
                    max_memory_mb: 0,
                    tenants: 0,
                    memory_mb: 0,
                    quota: QuotaOverride {
                        max_tenants: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                        max_memory_mb: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                    },
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

    /// Revoke every token of `owner`; returns how many there were.
    pub fn delete_owner_tokens(&self, owner: &str) -> Result<usize, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM tokens WHERE owner = ?1", [owner])?;
        if n > 0 {
            tx.execute(
                "INSERT INTO events (at, kind, detail) VALUES (?1, 'token.revoked', ?2)",
                params![now(), format!("{n} tokens of {owner}")],
            )?;
        }
        tx.commit()?;
        Ok(n)
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

    /// Every owner token as (hash, owner, quota), for the in-memory mirror.
    pub fn token_hashes(&self) -> Result<Vec<(String, String, QuotaOverride)>, DbError> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT hash, owner, max_tenants, max_memory_mb FROM tokens")?;
        let rows = st
            .query_map([], |r| {
                let quota = QuotaOverride {
                    max_tenants: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    max_memory_mb: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                };
                Ok((r.get(0)?, r.get(1)?, quota))
            })?
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

/// An event row of `SELECT seq, at, kind, tenant, pool, detail`.
fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        seq: r.get(0)?,
        at: r.get(1)?,
        kind: r.get(2)?,
        tenant: r.get(3)?,
        pool: r.get(4)?,
        detail: r.get(5)?,
    })
}
