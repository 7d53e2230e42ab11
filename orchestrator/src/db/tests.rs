//! The store on real SQLite files in a temporary folder.

use super::*;
use crate::classes::ClassSpec;
use crate::states::PoolMode;
use crate::tenant_spec::TenantSpec;
use slotpack_proto::protocol::TenantId;

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
        node: None,
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
        c.execute_batch(include_str!("../../testdata/schema-8d7e022.sql"))
            .unwrap();
        c.execute_batch(
            r#"INSERT INTO pools (block, base_port, agent_port, slots, memory_mb, cpu_millis, mode, status, token, created_at)
             VALUES (0, 9000, 8999, 10, 4096, 4000, 'pooled', 'running', 't', 'then');
             INSERT INTO tenants (id, owner, spec, pool, slot, port, memory_mb, cpu_millis, desired, created_at)
             VALUES ('old-1', 'alice', '{"id":"old-1","owner":"alice","command":"/bin/bot","args":["${PORT}"],"env":{"K":"v"},"resources":{"memoryMb":256,"cpuMillis":100},"ping":null,"restart":{"policy":"always"},"stop":{"signal":"INT","timeoutMs":3000},"poolClass":null,"maxLifetimeSeconds":null}', 1, 0, 9000, 256, 100, 'running', 'then');
             INSERT INTO events (at, kind, detail) VALUES ('then', 'tenant.placed', 'old');"#,
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
    let t = db.tenant("old-1").unwrap().unwrap();
    assert_eq!(t.owner, "alice");
    // The spec, once the API body, is now the versioned stored spec.
    assert_eq!(t.spec.command, "/bin/bot");
    assert_eq!(t.spec.args, ["${PORT}"]);
    assert_eq!(t.spec.env["K"], "v");
    assert_eq!(t.spec.stop.signal.as_str(), "INT");
    assert_eq!(t.spec.stop.timeout_ms, 3000);
    assert_eq!(t.spec.resources.memory_mb, 256);
    let raw: String = db
        .conn()
        .query_row("SELECT spec FROM tenants WHERE id = 'old-1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["version"], 1);
    assert!(raw["spec"].get("id").is_none(), "{raw}");
    db.fill_uid_bases(10_000).unwrap();
    let old = db.pool(1).unwrap().unwrap();
    assert_eq!((old.uid_base, old.image.clone()), (10_000, None));
    let spec = ClassSpec {
        image: "python:3.11".into(),
        slots: Some(2),
        memory_mb: None,
        cpu_millis: None,
        node_labels: [("zone".to_string(), "a".to_string())].into(),
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

fn tenant(id: &str, pool: u64, slot: u32, port: u16) -> (TenantRow, u16) {
    let row = TenantRow {
        id: TenantId::parse(id).unwrap(),
        owner: "o".into(),
        spec: TenantSpec::decode(r#"{"version": 1, "spec": {"command": "/bin/true"}}"#).unwrap(),
        pool,
        slot,
        desired: Desired::Running,
        created_at: now(),
        expires_at: None,
    };
    (row, port)
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
    let (a, port) = tenant("a", p.number, 0, 9000);
    db.insert_tenant(&a, port).unwrap();
    for (t, port) in [
        tenant("a", p.number, 1, 9001),
        tenant("b", p.number, 0, 9005),
        tenant("c", p.number, 2, 9000),
    ] {
        assert!(
            matches!(db.insert_tenant(&t, port), Err(DbError::Conflict(_))),
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
