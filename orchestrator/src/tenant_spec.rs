//! What is stored of a tenant: its spec, in a versioned format of its own,
//! separate from the API body. The API body ([`CreateTenant`]) may change
//! shape (and refuses unknown fields); rows keep `{"version": N, "spec": …}`
//! and are read through [`TenantSpec::decode`], so a database written by a
//! newer slotpack is refused instead of misread. Read and written as SQL text
//! at the database's edge, so rows carry the typed spec, parsed once.

use std::collections::BTreeMap;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};
use slotpack_proto::protocol::{PingSpec, ProgramSpec, RestartSpec, StopSpec, VolumeSpec};

use crate::api_types::{CreateTenant, Resources};

/// The format this build writes. Version 1: the fields below but
/// `volumes`; version 2 adds `volumes` (an older slotpack, which would
/// drop them, refuses the row).
pub const SPEC_VERSION: u32 = 2;

/// A tenant's program and what it reserves, as stored. Its id and owner are
/// columns of the row, not part of the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Program to run.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Reserved resources.
    #[serde(default)]
    pub resources: Resources,
    /// Health ping.
    #[serde(default)]
    pub ping: Option<PingSpec>,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartSpec,
    /// Stop signal and timeout.
    #[serde(default)]
    pub stop: StopSpec,
    /// Pool class.
    #[serde(default)]
    pub pool_class: Option<String>,
    /// Lifetime in seconds after creation.
    #[serde(default)]
    pub max_lifetime_seconds: Option<u64>,
    /// Folder the program starts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Durable folders (version 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
}

/// The stored envelope.
#[derive(Serialize, Deserialize)]
struct Stored<S> {
    version: u32,
    spec: S,
}

/// Why a stored spec cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not JSON of the stored shape.
    #[error("stored tenant spec: {0}")]
    Json(#[from] serde_json::Error),
    /// Written by a newer slotpack.
    #[error("stored tenant spec has version {0}; this slotpack reads up to {SPEC_VERSION}")]
    Newer(u32),
}

impl TenantSpec {
    /// The spec an accepted create request stands for.
    pub fn of(req: &CreateTenant) -> TenantSpec {
        TenantSpec {
            command: req.command.clone(),
            args: req.args.clone(),
            env: req.env.clone(),
            resources: req.resources.clone(),
            ping: req.ping.clone(),
            restart: req.restart.clone(),
            stop: req.stop.clone(),
            pool_class: req.pool_class.clone(),
            max_lifetime_seconds: req.max_lifetime_seconds,
            working_dir: req.working_dir.clone(),
            volumes: req.volumes.clone(),
        }
    }

    /// The agent's program spec for this tenant in `slot` at `port`.
    pub fn program(&self, slot: u32, port: u16) -> ProgramSpec {
        ProgramSpec {
            command: self.command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            slot: Some(slot),
            port: Some(port),
            ping: self.ping.clone(),
            restart: self.restart.clone(),
            stop: self.stop.clone(),
            max_memory_mb: Some(self.resources.memory_mb),
            cpu_millis: Some(self.resources.cpu_millis),
            disk_mb: Some(self.resources.disk_mb),
            working_dir: self.working_dir.clone(),
            volumes: self.volumes.clone(),
        }
    }

    /// The stored text: `{"version": SPEC_VERSION, "spec": …}`.
    pub fn encode(&self) -> String {
        let stored = Stored {
            version: SPEC_VERSION,
            spec: self,
        };
        serde_json::to_string(&stored).expect("a spec always serialises")
    }

    /// Read a stored text of this version or an older one.
    pub fn decode(text: &str) -> Result<TenantSpec, SpecError> {
        let head: Stored<serde::de::IgnoredAny> = serde_json::from_str(text)?;
        if head.version > SPEC_VERSION {
            return Err(SpecError::Newer(head.version));
        }
        // Version 1 is version 2 without volumes: read as it is.
        Ok(serde_json::from_str::<Stored<TenantSpec>>(text)?.spec)
    }
}

impl ToSql for TenantSpec {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.encode()))
    }
}

impl FromSql for TenantSpec {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        TenantSpec::decode(value.as_str()?).map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreateTenant {
        serde_json::from_value(serde_json::json!({
            "id": "t1", "owner": "alice", "command": "/bin/bot", "args": ["${PORT}"],
            "env": {"A": "1"}, "resources": {"memoryMb": 64, "cpuMillis": 100},
            "stop": {"signal": "INT", "timeoutMs": 3000}, "poolClass": "py",
            "workingDir": "/app"
        }))
        .unwrap()
    }

    #[test]
    fn a_spec_round_trips_through_its_stored_text_without_id_or_owner() {
        let spec = TenantSpec::of(&request());
        let text = spec.encode();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], SPEC_VERSION);
        assert_eq!(v["spec"]["command"], "/bin/bot");
        assert!(v["spec"].get("id").is_none() && v["spec"].get("owner").is_none());
        assert_eq!(TenantSpec::decode(&text).unwrap(), spec);
        let p = spec.program(2, 9002);
        assert_eq!(
            (p.slot, p.port, p.max_memory_mb),
            (Some(2), Some(9002), Some(64))
        );
        assert_eq!(p.stop.signal.as_str(), "INT");
        assert_eq!(p.working_dir.as_deref(), Some("/app"));
    }

    #[test]
    fn a_newer_or_foreign_text_is_refused_not_misread() {
        let newer = r#"{"version": 3, "spec": {"command": "/x"}}"#;
        assert!(matches!(
            TenantSpec::decode(newer),
            Err(SpecError::Newer(3))
        ));
        // A version-1 row (before volumes) reads as it is.
        let v1 = r#"{"version": 1, "spec": {"command": "/x"}}"#;
        assert!(TenantSpec::decode(v1).unwrap().volumes.is_empty());
        // The API body itself is not a stored spec.
        let body = serde_json::to_string(&request()).unwrap();
        assert!(TenantSpec::decode(&body).is_err());
    }
}
