//! The service with fakes of its effects (the agents and the backend, one
//! recording world behind both) over a real SQLite file: create, delete,
//! the health tick, evacuation, consolidation, and the crash windows
//! between their steps (a second `Orchestrator` over the same file is the
//! restarted process).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::json;
use slotpack_proto::protocol::{Health, ProgramAction, ProgramSpec, ProgramState, ProgramStatus};

use super::*;
use crate::agents::{AgentError, Agents, Data, Endpoint};
use crate::backend::{Backend, BackendError, BackendKind, FoundPool, PoolSpec};
use crate::db::PoolId;

/// How a recorded delete names what it did with the tenant's data.
fn purged(data: Data) -> &'static str {
    match data {
        Data::Keep => "",
        Data::Purge => " purge",
    }
}

/// The service's results, and the fakes' own.
type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// What the fakes share: which agents run, what each holds, every effect.
#[derive(Default)]
struct World {
    /// Agent port → its programs, while its pool runs.
    up: BTreeMap<u16, BTreeMap<String, ProgramStatus>>,
    /// What a pool's state brings back when it starts again, by agent port.
    kept: BTreeMap<u16, BTreeMap<String, ProgramStatus>>,
    /// Pools whose start fails.
    failing: BTreeSet<u64>,
    /// Pools whose start waits for the gate.
    gated: BTreeSet<u64>,
    /// Every effect in order: `start pool-1`, `put pool-1 t1`, ...
    calls: Vec<String>,
    /// Agent port → pool, for the call log.
    names: BTreeMap<u16, PoolId>,
    /// Images on which every program of a remade pool fails.
    bad_images: BTreeSet<String>,
    /// Agent port → the image its pool was last remade on.
    images: BTreeMap<u16, String>,
}

#[derive(Clone, Default)]
struct Fakes {
    world: Arc<Mutex<World>>,
    gate: Arc<tokio::sync::Notify>,
}

impl Fakes {
    fn w(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
    /// The calls so far, and forget them.
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.w().calls)
    }
    /// The agent of pool `n` dies (its state, `kept`, survives).
    fn kill(&self, n: u64) {
        let mut w = self.w();
        let port = *w.names.iter().find(|(_, p)| p.0 == n).unwrap().0;
        w.up.remove(&port);
    }
    /// What the agent of pool `n` runs (`None`: it is down).
    fn programs(&self, n: u64) -> Option<Vec<String>> {
        let w = self.w();
        let port = w.names.iter().find(|(_, p)| p.0 == n)?.0;
        w.up.get(port).map(|m| m.keys().cloned().collect())
    }
}

struct FakeBackend(Fakes);

impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }
    fn container_name(&self, pool: &PoolSpec) -> String {
        format!("fake-{}", pool.id)
    }
    fn agent_addr(&self, pool: &PoolSpec) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], pool.agent_port))
    }
    fn start_pool<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, Result<String, BackendError>> {
        async move {
            let gated = self.0.w().gated.contains(&pool.id.0);
            if gated {
                self.0.gate.notified().await;
            }
            let mut w = self.0.w();
            w.calls.push(format!("start {}", pool.id));
            w.names.insert(pool.agent_port, pool.id);
            if w.failing.contains(&pool.id.0) {
                return Err(BackendError::Start {
                    pool: pool.id.to_string(),
                    reason: "the fake says no".into(),
                });
            }
            let kept = w.kept.get(&pool.agent_port).cloned().unwrap_or_default();
            w.up.entry(pool.agent_port).or_insert(kept);
            Ok(format!("fake-{}", pool.id.0))
        }
        .boxed()
    }
    fn pool_running<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, bool> {
        let r = self.0.w().up.contains_key(&pool.agent_port);
        async move { r }.boxed()
    }
    fn recreate_pool<'a>(
        &'a self,
        pool: &'a PoolSpec,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        let mut w = self.0.w();
        let image = pool.image.clone().unwrap_or_default();
        w.calls.push(format!("recreate {} {image}", pool.id));
        // Its programs come back from its state; on a bad image they fail.
        let bad = w.bad_images.contains(&image);
        w.images.insert(pool.agent_port, image);
        let kept = w.kept.get(&pool.agent_port).cloned().unwrap_or_default();
        let programs = w.up.entry(pool.agent_port).or_insert(kept);
        for st in programs.values_mut() {
            st.state = if bad {
                ProgramState::Backoff
            } else {
                ProgramState::Running
            };
            st.healthy = !bad;
        }
        async move { Ok(format!("fake-{}", pool.id.0)) }.boxed()
    }
    fn remove_pool<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, Result<(), BackendError>> {
        let mut w = self.0.w();
        w.calls.push(format!("remove {}", pool.id));
        w.up.remove(&pool.agent_port);
        w.kept.remove(&pool.agent_port);
        async { Ok(()) }.boxed()
    }
    fn found_pools(&self) -> BoxFuture<'_, Result<Vec<FoundPool>, BackendError>> {
        let w = self.0.w();
        let found =
            w.up.keys()
                .map(|port| FoundPool {
                    number: w.names.get(port).map(|p| p.0),
                    backend_ref: format!("port {port}"),
                })
                .collect();
        async { Ok(found) }.boxed()
    }
    fn remove_found<'a>(&'a self, found: &'a FoundPool) -> BoxFuture<'a, Result<(), BackendError>> {
        let mut w = self.0.w();
        w.calls.push(format!("remove found {}", found.backend_ref));
        let port = w
            .names
            .iter()
            .find(|(_, p)| Some(p.0) == found.number)
            .map(|(port, _)| *port);
        if let Some(port) = port {
            w.up.remove(&port);
            w.kept.remove(&port);
        }
        async { Ok(()) }.boxed()
    }
    fn ports_free(&self, _: &crate::blocks::Block, _: u32) -> bool {
        true
    }
}

struct FakeAgents(Fakes);

impl FakeAgents {
    /// Run `f` on the programs of the agent at `ep`, logging `what`.
    fn on<T>(
        &self,
        ep: &Endpoint,
        what: Option<String>,
        f: impl FnOnce(&mut BTreeMap<String, ProgramStatus>) -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        let mut w = self.0.w();
        let port = ep.addr.port();
        if let Some(what) = what {
            let name = w.names.get(&port).map_or("?".into(), |p| p.to_string());
            w.calls.push(what.replace("{pool}", &name));
        }
        let Some(programs) = w.up.get_mut(&port) else {
            return Err(AgentError::Unreachable(ep.addr, "the fake is down".into()));
        };
        let r = f(programs);
        let now = w.up.get(&port).cloned().unwrap_or_default();
        w.kept.insert(port, now);
        r
    }
}

fn not_found(ep: &Endpoint, id: &str) -> AgentError {
    AgentError::NotFound {
        addr: ep.addr,
        message: format!("no program {id}"),
    }
}

fn set_state(
    p: &mut BTreeMap<String, ProgramStatus>,
    ep: &Endpoint,
    id: &str,
    s: ProgramState,
) -> Result<ProgramStatus, AgentError> {
    let st = p.get_mut(id).ok_or_else(|| not_found(ep, id))?;
    st.state = s;
    st.healthy = s == ProgramState::Running;
    Ok(st.clone())
}

/// What a fake agent reports of `id` running `spec`.
fn status_of(id: &str, spec: &ProgramSpec) -> ProgramStatus {
    ProgramStatus {
        id: id.to_string(),
        state: ProgramState::Running,
        pid: Some(1),
        slot: spec.slot.unwrap_or_default(),
        port: spec.port.unwrap_or_default(),
        restarts: 0,
        healthy: true,
        last_exit: None,
        last_ping: None,
        rss_bytes: 0,
        cpu_millis: 0,
        disk_bytes: 0,
        started_at: None,
        spec_digest: Some(slotpack_proto::protocol::spec_digest(spec)),
        message: None,
        problem: None,
    }
}

impl Agents for FakeAgents {
    fn health<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Health, AgentError>> {
        let r = self.on(ep, None, |p| {
            Ok(Health {
                status: "ok".into(),
                programs: p.len(),
                uptime_seconds: 0,
                sandbox: "off".into(),
            })
        });
        async { r }.boxed()
    }
    fn list<'a>(
        &'a self,
        ep: &'a Endpoint,
    ) -> BoxFuture<'a, Result<Vec<ProgramStatus>, AgentError>> {
        let r = self.on(ep, None, |p| Ok(p.values().cloned().collect()));
        async { r }.boxed()
    }
    fn get<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>> {
        let r = self.on(ep, None, |p| {
            p.get(id).cloned().ok_or_else(|| not_found(ep, id))
        });
        async { r }.boxed()
    }
    fn put<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        spec: &'a ProgramSpec,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>> {
        let bad = {
            let w = self.0.w();
            w.images
                .get(&ep.addr.port())
                .is_some_and(|i| w.bad_images.contains(i))
        };
        let r = self.on(ep, Some(format!("put {{pool}} {id}")), |p| {
            if spec.command == "/refused" {
                return Err(AgentError::Refused {
                    addr: ep.addr,
                    message: "cannot run /refused".into(),
                });
            }
            let mut st = status_of(id, spec);
            if bad {
                st.state = ProgramState::Backoff;
                st.healthy = false;
            }
            p.insert(id.to_string(), st.clone());
            Ok(st)
        });
        async { r }.boxed()
    }
    fn put_stopped<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        spec: &'a ProgramSpec,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>> {
        let r = self.on(ep, Some(format!("put-stopped {{pool}} {id}")), |p| {
            let mut st = status_of(id, spec);
            st.state = ProgramState::Stopped;
            st.healthy = false;
            p.insert(id.to_string(), st.clone());
            Ok(st)
        });
        async { r }.boxed()
    }
    fn volume_in<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        path: &'a str,
        archive: Bytes,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        let r = self.on(
            ep,
            Some(format!("volume-in {{pool}} {id} {path} {}", archive.len())),
            |_| Ok(()),
        );
        async { r }.boxed()
    }
    fn volume_out<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        path: &'a str,
        _: Option<(u32, u32)>,
    ) -> BoxFuture<'a, Result<Bytes, AgentError>> {
        let r = self.on(ep, Some(format!("volume-out {{pool}} {id} {path}")), |_| {
            Ok(Bytes::from_static(b"tar"))
        });
        async { r }.boxed()
    }
    fn delete<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        _: Duration,
        data: Data,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        let r = self.on(
            ep,
            Some(format!("delete {{pool}} {id}{}", purged(data))),
            |p| {
                p.remove(id);
                Ok(())
            },
        );
        async { r }.boxed()
    }
    fn begin_delete<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        data: Data,
    ) -> BoxFuture<'a, Result<bool, AgentError>> {
        let r = self.on(
            ep,
            Some(format!("delete {{pool}} {id}{}", purged(data))),
            |p| {
                p.remove(id);
                Ok(true)
            },
        );
        async { r }.boxed()
    }
    fn begin_stop<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        let r = self.on(ep, Some(format!("stop {{pool}} {id}")), |p| {
            set_state(p, ep, id, ProgramState::Stopped).map(|_| ())
        });
        async { r }.boxed()
    }
    fn action<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        action: ProgramAction,
        _: Duration,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>> {
        let r = self.on(
            ep,
            Some(format!("{} {{pool}} {id}", action.as_str())),
            |p| {
                let s = match action {
                    ProgramAction::Stop => ProgramState::Stopped,
                    ProgramAction::Start | ProgramAction::Restart => ProgramState::Running,
                };
                set_state(p, ep, id, s)
            },
        );
        async { r }.boxed()
    }
    fn logs<'a>(
        &'a self,
        ep: &'a Endpoint,
        _: &'a str,
        _: crate::agents::LogRead,
    ) -> BoxFuture<'a, Result<crate::agents::LogChunk, AgentError>> {
        let r = self.on(ep, None, |_| Ok(Default::default()));
        async { r }.boxed()
    }
}

/// A service over a fresh SQLite file, and its fakes.
struct Harness {
    svc: Orchestrator,
    fakes: Fakes,
    db: std::path::PathBuf,
    args: Vec<String>,
}

impl Harness {
    fn new(name: &str, args: &[&str]) -> Harness {
        let dir = std::env::temp_dir().join(format!("slotpack-svc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("slotpack.db");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let fakes = Fakes::default();
        let svc = Self::open(&db, &args, &fakes);
        Harness {
            svc,
            fakes,
            db,
            args,
        }
    }

    fn open(db: &std::path::Path, args: &[String], fakes: &Fakes) -> Orchestrator {
        let mut all = vec!["--data-dir", "/nonexistent", "--pool-base-port", "20000"];
        all.extend(args.iter().map(String::as_str));
        let cfg = crate::config::serve_args(&all);
        Orchestrator::with_agents(
            cfg,
            Db::open(db).unwrap(),
            Arc::new(FakeBackend(fakes.clone())),
            Arc::new(FakeAgents(fakes.clone())),
        )
        .unwrap()
    }

    /// The process dies here (nothing of it runs on) and starts again over
    /// the same database and the same agents: `recover` as `serve` runs it.
    async fn restart(&mut self) -> HealthReport {
        self.svc = Self::open(&self.db, &self.args, &self.fakes);
        self.svc.recover().await.unwrap()
    }

    async fn create(&self, id: &str) -> Result<(Tenant, bool)> {
        self.create_with(id, json!({})).await
    }

    async fn create_with(&self, id: &str, extra: serde_json::Value) -> Result<(Tenant, bool)> {
        let mut body = json!({
            "id": id,
            "command": "/bin/true",
            "resources": {"memoryMb": 64, "cpuMillis": 10},
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let req: CreateTenant = serde_json::from_value(body).unwrap();
        self.svc.create_tenant(&Caller::Admin, None, req).await
    }

    fn pool_of(&self, id: &str) -> Option<u64> {
        self.svc.db.tenant(id).unwrap().map(|t| t.pool)
    }

    fn route_port(&self, id: &str) -> Option<u16> {
        let routes = self.svc.ledger.routes().read().unwrap();
        routes.get(id).map(|r| r.port)
    }

    async fn used_slots(&self) -> BTreeMap<u64, usize> {
        let held = self.svc.ledger.lock().await;
        held.index()
            .pools()
            .map(|p| (p.number, p.used_slots.len()))
            .collect()
    }

    async fn accepting(&self, n: u64) -> bool {
        let held = self.svc.ledger.lock().await;
        held.index().get(n).is_some_and(|p| p.accepting)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(d) = self.db.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[tokio::test]
async fn a_create_starts_a_pool_stores_routes_and_puts_its_program() {
    let h = Harness::new("create", &["--max-bots-per-container", "2"]);
    let (t, created) = h.create("t1").await.unwrap();
    assert!(created);
    assert_eq!(t.placement.pool_id, "pool-1");
    assert_eq!(h.fakes.take_calls(), ["start pool-1", "put pool-1 t1"]);
    assert_eq!(h.route_port("t1"), Some(t.placement.port));
    assert_eq!(h.used_slots().await, BTreeMap::from([(1, 1)]));
    // The same request again: the same tenant, no new effect.
    let (_, created) = h.create("t1").await.unwrap();
    assert!(!created);
    assert!(h.fakes.take_calls().is_empty());
    // A second tenant fills the pool; a third needs a new one.
    h.create("t2").await.unwrap();
    h.create("t3").await.unwrap();
    assert_eq!(h.pool_of("t3"), Some(2));
    assert_eq!(h.used_slots().await, BTreeMap::from([(1, 2), (2, 1)]));
}

#[tokio::test]
async fn a_program_the_agent_refuses_is_a_400_and_leaves_nothing() {
    let h = Harness::new("refused", &[]);
    let e = h
        .create_with("bad", json!({"command": "/refused"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ServiceError::BadRequest(m) if m == "cannot run /refused"),
        "{e:?}"
    );
    assert_eq!(h.pool_of("bad"), None);
    assert_eq!(h.route_port("bad"), None);
    assert_eq!(h.used_slots().await, BTreeMap::from([(1, 0)]));
}

#[tokio::test]
async fn a_delete_removes_the_program_then_the_row_the_route_and_the_slot() {
    let h = Harness::new("delete", &[]);
    h.create("t1").await.unwrap();
    h.fakes.take_calls();
    h.svc.delete_tenant(&Caller::Admin, "t1").await.unwrap();
    assert_eq!(h.fakes.take_calls(), ["delete pool-1 t1 purge"]);
    assert_eq!((h.pool_of("t1"), h.route_port("t1")), (None, None));
    assert_eq!(h.used_slots().await, BTreeMap::from([(1, 0)]));
    // Another owner cannot see, hence not delete, a tenant.
    h.create("t2").await.unwrap();
    let e = h
        .svc
        .delete_tenant(&Caller::Owner("someone".into()), "t2")
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::NotFound(_)), "{e:?}");
    assert_eq!(h.pool_of("t2"), Some(1));
}

#[tokio::test]
async fn a_pool_that_fails_takes_no_tenant_and_takes_them_again_once_restarted() {
    // Issue J's bug: the tick's restart wrote its status to SQLite only.
    let h = Harness::new("restart", &["--max-restart-attempts", "100"]);
    h.create("t1").await.unwrap();
    h.fakes.kill(1);
    h.fakes.w().failing.insert(1);
    let r = h.svc.health_tick().await;
    assert!(
        r.issues
            .iter()
            .any(|i| i.contains("pool-1: restart 1 failed")),
        "{r:?}"
    );
    assert!(!h.accepting(1).await, "a failed pool accepts");
    h.create("t2").await.unwrap();
    assert_eq!(
        h.pool_of("t2"),
        Some(2),
        "a create landed on the dead agent"
    );
    h.fakes.w().failing.clear();
    let r = h.svc.health_tick().await;
    assert!(
        r.recovery_actions
            .iter()
            .any(|a| a.contains("restarted pool-1")),
        "{r:?}"
    );
    assert!(h.accepting(1).await, "a restarted pool does not accept");
    // Its state brought t1 back; the next create fills pool-1, no pool-3.
    assert_eq!(h.fakes.programs(1), Some(vec!["t1".to_string()]));
    h.create("t3").await.unwrap();
    assert!(matches!(h.pool_of("t3"), Some(1 | 2)));
    assert_eq!(h.used_slots().await.len(), 2);
    let status = h.svc.pool_status().await.unwrap();
    assert!(
        status.pools.iter().all(|p| p.status == "running"),
        "{status:?}"
    );
}

#[tokio::test]
async fn evacuation_moves_the_tenants_and_finishes_a_deletion_it_finds() {
    let h = Harness::new("evacuate", &["--max-restart-attempts", "1"]);
    h.create("t1").await.unwrap();
    h.create("t2").await.unwrap();
    h.svc
        .act(&Caller::Admin, "t2", ProgramAction::Stop)
        .await
        .unwrap();
    h.create("t3").await.unwrap();
    // A crash window: t3's deletion was marked, its agent never told.
    assert!(h.svc.mark_deleting("t3").await.unwrap());
    h.fakes.kill(1);
    h.fakes.w().failing.insert(1);
    h.fakes.take_calls();
    let r = h.svc.health_tick().await;
    assert!(
        r.recovery_actions
            .iter()
            .any(|a| a.contains("pool-1 could not be restarted: moved t1, t2")),
        "{r:?}"
    );
    let calls = h.fakes.take_calls();
    assert!(calls.contains(&"put pool-2 t1".to_string()), "{calls:?}");
    assert!(calls.contains(&"stop pool-2 t2".to_string()), "{calls:?}");
    assert!(!calls.iter().any(|c| c.ends_with(" t3")), "{calls:?}");
    assert_eq!(
        (h.pool_of("t1"), h.pool_of("t2"), h.pool_of("t3")),
        (Some(2), Some(2), None)
    );
    assert_eq!(h.route_port("t3"), None);
    assert_eq!(h.route_port("t1"), Some(20010));
    assert_eq!(h.used_slots().await, BTreeMap::from([(2, 2)]));
}

#[tokio::test]
async fn a_delete_during_an_evacuation_is_finished_never_moved_along() {
    // Read by code in issue J: the evacuation lets the lock go while a new
    // pool starts; a delete in that window got its route back and was
    // started on the new pool.
    let h = Arc::new(Harness::new(
        "delete-evacuate",
        &[
            "--max-restart-attempts",
            "1",
            "--max-bots-per-container",
            "1",
        ],
    ));
    h.create("t1").await.unwrap();
    h.fakes.kill(1);
    {
        let mut w = h.fakes.w();
        w.failing.insert(1);
        w.gated.insert(2);
    }
    h.fakes.take_calls();
    let tick = tokio::spawn({
        let h = h.clone();
        async move { h.svc.health_tick().await }
    });
    // Wait until the evacuation has reserved pool-2 and let the lock go.
    for _ in 0..200 {
        if h.svc.db.pool(2).unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h.svc.db.pool(2).unwrap().is_some(), "no pool-2 reserved");
    // The owner deletes t1: its agent is down, so the delete answers 503,
    // but the deletion is marked.
    let e = h.svc.delete_tenant(&Caller::Admin, "t1").await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    h.fakes.gate.notify_one();
    let r = tick.await.unwrap();
    let calls = h.fakes.take_calls();
    assert!(
        !calls.iter().any(|c| c.contains("put pool-2 t1")),
        "{calls:?} {r:?}"
    );
    assert_eq!(h.pool_of("t1"), None);
    assert_eq!(h.route_port("t1"), None);
    assert_eq!(h.fakes.programs(2), Some(vec![]));
}

#[tokio::test]
async fn consolidation_moves_tenants_stops_them_first_and_removes_the_pool() {
    let h = Harness::new(
        "consolidate",
        &["--max-bots-per-container", "2", "--consolidate", "true"],
    );
    for id in ["t1", "t2", "t3"] {
        h.create(id).await.unwrap();
    }
    h.svc.delete_tenant(&Caller::Admin, "t1").await.unwrap();
    h.fakes.take_calls();
    let r = h.svc.health_tick().await;
    assert!(
        r.recovery_actions
            .iter()
            .any(|a| a == "consolidation: moved t2 to pool-2 port 20003 and removed pool-1"),
        "{r:?}"
    );
    let calls = h.fakes.take_calls();
    let at = |c: &str| {
        calls
            .iter()
            .position(|x| x == c)
            .unwrap_or_else(|| panic!("no {c} in {calls:?}"))
    };
    assert!(at("delete pool-1 t2") < at("remove pool-1"), "{calls:?}");
    assert!(at("remove pool-1") < at("put pool-2 t2"), "{calls:?}");
    assert_eq!(h.pool_of("t2"), Some(2));
    assert_eq!(h.route_port("t2"), Some(20003));
    assert_eq!(h.used_slots().await, BTreeMap::from([(2, 2)]));
}

#[tokio::test]
async fn a_crash_after_a_create_is_committed_is_finished_at_start_up() {
    let mut h = Harness::new("crash-create", &[]);
    h.create("t1").await.unwrap();
    // A crash between the row and the agent's PUT: the row is there, the
    // program is not.
    let row = {
        let mut r = h.svc.db.tenant("t1").unwrap().unwrap();
        r.id = slotpack_proto::protocol::TenantId::parse("t2").unwrap();
        r.slot = 1;
        r
    };
    h.svc.ledger.lock().await.insert_tenant(&row).unwrap();
    assert_eq!(h.fakes.programs(1), Some(vec!["t1".to_string()]));
    let r = h.restart().await;
    assert!(
        r.issues.is_empty() || r.issues.iter().all(|i| !i.contains("failed")),
        "{r:?}"
    );
    assert_eq!(
        h.fakes.programs(1),
        Some(vec!["t1".to_string(), "t2".to_string()])
    );
    assert_eq!(h.route_port("t2"), Some(20001));
    assert_eq!(h.used_slots().await, BTreeMap::from([(1, 2)]));
}

#[tokio::test]
async fn a_crash_after_a_move_is_committed_never_runs_the_tenant_twice() {
    let mut h = Harness::new("crash-move", &["--max-bots-per-container", "2"]);
    for id in ["t1", "t2", "t3"] {
        h.create(id).await.unwrap();
    }
    h.svc.delete_tenant(&Caller::Admin, "t1").await.unwrap();
    // A crash right after consolidation committed t3's move to pool-1:
    // its program still runs in pool-2.
    {
        let to = h.svc.db.pool(1).unwrap().unwrap();
        let mut held = h.svc.ledger.lock().await;
        let m = held.move_tenant("t3", 2, &to, 0, "test").unwrap();
        assert!(matches!(m, crate::ledger::Moved::Done(_)), "{m:?}");
    }
    h.fakes.take_calls();
    h.restart().await;
    let calls = h.fakes.take_calls();
    assert!(calls.contains(&"delete pool-2 t3".to_string()), "{calls:?}");
    // Its start waits until the old copy is gone; a second tick starts it.
    h.svc.health_tick().await;
    let calls = [calls, h.fakes.take_calls()].concat();
    let at = |c: &str| {
        calls
            .iter()
            .position(|x| x == c)
            .unwrap_or_else(|| panic!("no {c} in {calls:?}"))
    };
    assert!(at("delete pool-2 t3") < at("put pool-1 t3"), "{calls:?}");
    assert_eq!(h.fakes.programs(2), Some(vec![]));
    assert_eq!(
        h.fakes.programs(1),
        Some(vec!["t2".to_string(), "t3".to_string()])
    );
}

#[test]
fn create_validation_is_pure_and_names_what_is_wrong() {
    use super::tenants::validate_create;
    let size = crate::classes::Size {
        slots: 4,
        memory_mb: 256,
        cpu_millis: 1000,
    };
    let req = |extra: serde_json::Value| -> CreateTenant {
        let mut body = json!({"id": "v1", "command": "/bin/true", "resources": {"memoryMb": 64}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        serde_json::from_value(body).unwrap()
    };
    let me = Caller::Owner("alice".into());
    let ok = validate_create(&me, req(json!({})), &size).unwrap();
    assert_eq!(ok.owner.as_deref(), Some("alice"));
    let admin = validate_create(&Caller::Admin, req(json!({})), &size).unwrap();
    assert_eq!(admin.owner.as_deref(), Some(ADMIN_OWNER));
    let e = validate_create(&me, req(json!({"owner": "bob"})), &size).unwrap_err();
    assert!(matches!(e, ServiceError::Forbidden(_)), "{e:?}");
    let e = validate_create(&me, req(json!({"resources": {"memoryMb": 512}})), &size).unwrap_err();
    assert!(
        matches!(&e, ServiceError::BadRequest(m) if m.contains("1..=256")),
        "{e:?}"
    );
    let e = validate_create(&me, req(json!({"maxLifetimeSeconds": 0})), &size).unwrap_err();
    assert!(
        matches!(&e, ServiceError::BadRequest(m) if m.contains("maxLifetimeSeconds")),
        "{e:?}"
    );
}

#[tokio::test]
async fn an_orphaned_pool_is_kept_reported_and_removed_only_when_named() {
    let h = Harness::new("orphan", &[]);
    // The backend runs pool-1 of a database that is gone.
    {
        let mut w = h.fakes.w();
        w.up.insert(5555, BTreeMap::new());
        w.names.insert(5555, PoolId(1));
    }
    let r = h.svc.health_tick().await;
    assert!(
        r.issues
            .iter()
            .any(|i| i.contains("orphaned pool port 5555") && i.contains("kept")),
        "{r:?}"
    );
    // A new pool does not take its number (hence its name).
    h.create("t1").await.unwrap();
    assert_eq!(h.pool_of("t1"), Some(2));
    assert_eq!(h.svc.cleanup().await.unwrap(), 0);
    let status = h.svc.pool_status().await.unwrap();
    assert_eq!(status.orphans, ["port 5555"]);
    assert!(!h.fakes.take_calls().iter().any(|c| c.starts_with("remove")));
    let e = h.svc.remove_orphans(&["port 1".into()]).await.unwrap_err();
    assert!(
        matches!(&e, ServiceError::BadRequest(m) if m.contains("port 5555")),
        "{e:?}"
    );
    assert_eq!(
        h.svc.remove_orphans(&["port 5555".into()]).await.unwrap(),
        1
    );
    assert_eq!(h.fakes.take_calls(), ["remove found port 5555"]);
}

#[tokio::test]
async fn a_removal_a_crash_interrupted_is_finished_by_the_tick() {
    let h = Harness::new("removing", &[]);
    h.create("t1").await.unwrap();
    h.svc.delete_tenant(&Caller::Admin, "t1").await.unwrap();
    // A crash after the pool was marked, before the backend removed it.
    h.svc
        .ledger
        .lock()
        .await
        .set_pool_status(1, crate::states::PoolState::Removing, None)
        .unwrap();
    assert!(!h.accepting(1).await);
    h.fakes.take_calls();
    let r = h.svc.health_tick().await;
    assert!(
        r.recovery_actions
            .contains(&"finished removing pool-1".to_string()),
        "{r:?}"
    );
    assert_eq!(h.fakes.take_calls(), ["remove pool-1"]);
    assert!(h.svc.db.pool(1).unwrap().is_none());
}

/// The create body of [`Harness::create_with`], as a PUT takes it.
fn body(id: &str, extra: serde_json::Value) -> CreateTenant {
    let mut b = json!({
        "id": id,
        "command": "/bin/true",
        "resources": {"memoryMb": 64, "cpuMillis": 10},
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    serde_json::from_value(b).unwrap()
}

#[tokio::test]
async fn an_update_restarts_the_tenant_in_its_slot_when_it_still_fits() {
    let h = Harness::new("update-here", &["--pool-memory-mb", "256"]);
    let (before, _) = h.create("t1").await.unwrap();
    h.create("t2").await.unwrap();
    h.fakes.take_calls();
    let new = body(
        "t1",
        json!({"args": ["v2"], "resources": {"memoryMb": 128, "cpuMillis": 10}}),
    );
    let t = h
        .svc
        .update_tenant(&Caller::Admin, None, "t1", new)
        .await
        .unwrap();
    // One PUT to the same agent (which restarts a program whose spec
    // changed), nothing deleted: the data stays where it is.
    assert_eq!(h.fakes.take_calls(), ["put pool-1 t1"]);
    assert_eq!(t.placement.port, before.placement.port);
    let row = h.svc.db.tenant("t1").unwrap().unwrap();
    assert_eq!(row.spec.args, ["v2"]);
    assert_eq!(row.memory_mb(), 128);
    // The index holds the new reservation: 128 + 64 of 256.
    let used = h
        .svc
        .ledger
        .lock()
        .await
        .index()
        .get(1)
        .unwrap()
        .used_memory_mb;
    assert_eq!(used, 192);
    // The same spec again changes nothing.
    let same = body(
        "t1",
        json!({"args": ["v2"], "resources": {"memoryMb": 128, "cpuMillis": 10}}),
    );
    h.svc
        .update_tenant(&Caller::Admin, None, "t1", same)
        .await
        .unwrap();
    assert!(h.fakes.take_calls().is_empty());
}

#[tokio::test]
async fn an_update_that_no_longer_fits_moves_the_tenant_stopping_it_first_and_keeping_its_data() {
    let h = Harness::new("update-move", &["--pool-memory-mb", "256"]);
    h.create("t1").await.unwrap();
    h.create("t2").await.unwrap();
    h.fakes.take_calls();
    let big = body(
        "t1",
        json!({"resources": {"memoryMb": 240, "cpuMillis": 10}}),
    );
    let t = h
        .svc
        .update_tenant(&Caller::Admin, None, "t1", big)
        .await
        .unwrap();
    assert_eq!(t.placement.pool_id, "pool-2");
    let calls = h.fakes.take_calls();
    // Stopped in the old pool (data kept: no purge) before it starts anew.
    assert_eq!(
        calls,
        ["start pool-2", "delete pool-1 t1", "put pool-2 t1"],
        "{calls:?}"
    );
    assert_eq!(h.pool_of("t1"), Some(2));
    assert_eq!(h.route_port("t1"), Some(t.placement.port));
    assert_eq!(h.used_slots().await, BTreeMap::from([(1, 1), (2, 1)]));
}

#[tokio::test]
async fn a_bad_update_is_refused_and_changes_nothing() {
    let h = Harness::new("update-bad", &[]);
    h.create("t1").await.unwrap();
    let owner = Caller::Owner("alice".into());
    h.svc
        .create_tenant(&owner, None, body("a1", json!({})))
        .await
        .unwrap();
    h.fakes.take_calls();
    let before = h.svc.db.tenant("t1").unwrap().unwrap();
    let cases: Vec<(Caller, &str, CreateTenant, u16)> = vec![
        // Unknown id.
        (Caller::Admin, "nope", body("nope", json!({})), 404),
        // The body's id is not the path's.
        (Caller::Admin, "t1", body("t2", json!({})), 400),
        // Invalid: a volume under /proc, memory beyond a pool.
        (
            Caller::Admin,
            "t1",
            body("t1", json!({"volumes": [{"path": "/proc/x"}]})),
            400,
        ),
        (
            Caller::Admin,
            "t1",
            body("t1", json!({"resources": {"memoryMb": 999999}})),
            400,
        ),
        // Another owner's tenant is not there for it.
        (owner.clone(), "t1", body("t1", json!({})), 404),
        // An owner cannot hand its tenant to someone else.
        (
            Caller::Admin,
            "a1",
            body("a1", json!({"owner": "bob"})),
            400,
        ),
    ];
    for (caller, id, req, want) in cases {
        let e = h
            .svc
            .update_tenant(&caller, None, id, req)
            .await
            .unwrap_err();
        let code = match e {
            ServiceError::NotFound(_) => 404,
            ServiceError::BadRequest(_) => 400,
            other => panic!("{id}: {other:?}"),
        };
        assert_eq!(code, want, "{id}");
    }
    assert!(h.fakes.take_calls().is_empty(), "an agent was called");
    assert_eq!(h.svc.db.tenant("t1").unwrap().unwrap(), before);
}

/// Define class `name` on `image`, as `PUT /api/pool/classes/{name}` does.
async fn class(h: &Harness, name: &str, image: &str) {
    let spec: crate::classes::ClassSpec =
        serde_json::from_value(json!({"image": image, "slots": 2})).unwrap();
    h.svc.put_class(name, spec, false).await.unwrap();
}

#[tokio::test]
async fn a_new_class_image_rolls_its_pools_one_per_tick_and_a_bad_one_goes_back_and_stops() {
    let h = Harness::new("roll", &["--roll-timeout-ms", "1000"]);
    class(&h, "py", "py:1").await;
    for id in ["r1", "r2", "r3"] {
        h.create_with(id, json!({"poolClass": "py"})).await.unwrap();
    }
    // r1, r2 in pool-1; r3 in pool-2; all on py:1.
    assert_eq!((h.pool_of("r1"), h.pool_of("r3")), (Some(1), Some(2)));
    h.svc.health_tick().await;
    h.fakes.take_calls();
    assert!(h.svc.classes().unwrap().classes[0].roll.is_none());

    class(&h, "py", "py:2").await;
    let roll = h.svc.classes().unwrap().classes[0].roll.clone().unwrap();
    assert_eq!(
        (roll.state.as_str(), roll.pools_updated, roll.pools_total),
        ("rolling", 0, 2)
    );
    let status = h.svc.pool_status().await.unwrap();
    assert_eq!(status.pools[0].rolling_to.as_deref(), Some("py:2"));
    // One pool per tick: remade on the new image, its tenants put back.
    h.svc.health_tick().await;
    let calls = h.fakes.take_calls();
    assert!(
        calls.contains(&"recreate pool-1 py:2".to_string()),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("recreate pool-2")),
        "{calls:?}"
    );
    assert_eq!(
        h.svc.db.pool(1).unwrap().unwrap().image.as_deref(),
        Some("py:2")
    );
    h.svc.health_tick().await;
    assert_eq!(
        h.svc.db.pool(2).unwrap().unwrap().image.as_deref(),
        Some("py:2")
    );
    assert!(h.svc.classes().unwrap().classes[0].roll.is_none(), "rolled");
    let kinds: Vec<String> = h
        .svc
        .db
        .events(None, 200)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "roll.done").count(),
        2,
        "{kinds:?}"
    );

    // A bad image: the first pool's tenants fail on it, it goes back, the
    // roll stops and says why; the other pool is not touched.
    h.fakes.w().bad_images.insert("py:3".into());
    class(&h, "py", "py:3").await;
    h.fakes.take_calls();
    let r = h.svc.health_tick().await;
    let calls = h.fakes.take_calls();
    assert!(
        calls.contains(&"recreate pool-1 py:3".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"recreate pool-1 py:2".to_string()),
        "went back: {calls:?}"
    );
    assert!(
        r.issues
            .iter()
            .any(|i| i.contains("the roll to py:3 stopped")),
        "{:?}",
        r.issues
    );
    assert_eq!(
        h.svc.db.pool(1).unwrap().unwrap().image.as_deref(),
        Some("py:2")
    );
    let roll = h.svc.classes().unwrap().classes[0].roll.clone().unwrap();
    assert_eq!(roll.state, "failed");
    let failure = roll.failure.unwrap();
    assert_eq!(failure.pool, "pool-1");
    assert!(
        failure.message.contains("did not run healthy"),
        "{}",
        failure.message
    );
    h.svc.health_tick().await;
    assert!(
        !h.fakes
            .take_calls()
            .iter()
            .any(|c| c.starts_with("recreate")),
        "a stopped roll went on"
    );
    // A new image is a new roll.
    class(&h, "py", "py:4").await;
    h.svc.health_tick().await;
    assert_eq!(
        h.svc.db.pool(1).unwrap().unwrap().image.as_deref(),
        Some("py:4")
    );
}
