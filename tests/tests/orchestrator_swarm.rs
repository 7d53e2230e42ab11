//! The swarm backend against a real Docker Swarm the tests make offline
//! (required when CI=true): this engine as the manager and, for node loss,
//! a second Docker engine in a container of ours as a worker. Pools are
//! services pinned to the node slotpack chose, with host-mode ports and a
//! node-local state volume: create, proxy, health, recovery after a kill,
//! node in status and metrics, pools leaving a drained or lost node, clean
//! removal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slotpack_tests::docker::{
    docker, pool_image, require_docker, require_node_image, Deployment, Swarm,
};
use slotpack_tests::http::request;
use slotpack_tests::orchestrator::Slotpack;
use slotpack_tests::wait_for;

/// One swarm at a time: the tests of this file share the engine's.
static ENGINE: Mutex<()> = Mutex::new(());

const LONG: Duration = Duration::from_secs(90);

fn in_container() -> Value {
    json!({
        "command": "/usr/local/bin/test-tenant",
        // HOST is 0.0.0.0 in a pool container (its ports are published).
        "args": ["--host", "${HOST}"],
        "ping": {"kind": "http", "intervalMs": 200},
    })
}

fn service(name: &str, format: &str) -> String {
    docker(&["service", "inspect", "--format", format, name])
}

#[test]
fn swarm_pools_are_services_on_the_chosen_node_and_come_back_from_a_kill() {
    if !require_docker("swarm backend") {
        return;
    }
    let _one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let swarm = Swarm::join();
    let node = swarm.node();
    let dep = format!("sw{}", std::process::id());
    let guard = Deployment(dep.clone());
    let s = Slotpack::start(&[
        ("SLOTPACK_BACKEND", "swarm"),
        ("SLOTPACK_DEPLOYMENT", &dep),
        ("SLOTPACK_POOL_IMAGE", &pool_image()),
        ("SLOTPACK_POOL_MEMORY", "256m"),
        ("SLOTPACK_POOL_CPUS", "0.5"),
    ]);
    s.create_ok("s-1", in_container());
    s.create_ok("s-2", in_container());
    let p1 = s.wait_pong("s-1");
    let p2 = s.wait_pong("s-2");
    let name = format!("{dep}-pool-1");

    // One replica, pinned to the node, restarted by Swarm, limited, with
    // its state in the pool's volume and its ports published on the node.
    assert_eq!(service(&name, "{{.Spec.Mode.Replicated.Replicas}}"), "1");
    assert_eq!(
        service(
            &name,
            "{{index .Spec.TaskTemplate.Placement.Constraints 0}}"
        ),
        format!("node.id=={node}")
    );
    assert_eq!(
        service(&name, "{{.Spec.TaskTemplate.RestartPolicy.Condition}}"),
        "any"
    );
    assert_eq!(
        service(
            &name,
            "{{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}} {{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}}"
        ),
        format!("{} 500000000", 256 << 20)
    );
    assert_eq!(
        service(
            &name,
            "{{index .Spec.Labels \"managed-by\"}} {{index .Spec.Labels \"slotpack.pool\"}}"
        ),
        "slotpack pool-1"
    );
    assert!(service(
        &name,
        "{{range .Spec.TaskTemplate.ContainerSpec.Mounts}}{{.Source}}:{{.Target}} {{end}}"
    )
    .contains(&format!("{name}-state:/pool")));
    let ports = service(
        &name,
        "{{range .Spec.EndpointSpec.Ports}}{{.PublishMode}}:{{.PublishedPort}} {{end}}",
    );
    for p in [p1, p2] {
        assert!(ports.contains(&format!("host:{p}")), "{ports}");
    }
    // The task's container carries our labels as well.
    let task = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={name}"),
        "--filter",
        "label=managed-by=slotpack",
    ]);
    assert_eq!(task.lines().count(), 1, "{task}");

    // Status and metrics name the node; connection info its address.
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["pools"][0]["node"], node.as_str(), "{st}");
    assert_eq!(st["pools"][0]["containerName"], name.as_str());
    let metrics = s.call_as(None, "GET", "/metrics", "").text();
    assert!(
        metrics.contains(&format!("slotpack_node_pools{{node=\"{node}\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("slotpack_nodes{state=\"active\"} 1"),
        "{metrics}"
    );
    let bot = s.call("GET", "/api/pool/bot/s-1", "").json();
    // `slotpack status` shows the node column on a cluster.
    let out = std::process::Command::new(slotpack_tests::bin("slotpack"))
        .args([
            "status",
            "--listen",
            &s.addr,
            "--token",
            slotpack_tests::orchestrator::ADMIN,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("pool-1"))
        .unwrap_or_default();
    assert!(row.contains(&node) && row.contains("s-1 s-2"), "{text}");
    let addr = docker(&["node", "inspect", "-f", "{{.Status.Addr}}", &node]);
    assert_eq!(bot["connection"]["host"], addr.as_str(), "{bot}");
    assert_eq!(bot["connection"]["port"], p1);
    // Through the proxy.
    let r = s.call("GET", "/api/tenants/s-2/proxy/api/v1/ping", "");
    assert_eq!(r.status, 200, "{}", r.text());
    // The agent's own ping of s-2 may not have run yet: a tick is clean
    // once it has.
    wait_for(Duration::from_secs(20), "a clean health tick", || {
        let h = s.health_check();
        (h["issues"] == json!([])).then_some(())
    });

    // A class may ask for node labels: only nodes that carry them get its
    // pools; none does → 503 saying so, and nothing is left behind.
    docker(&["node", "update", "--label-add", "slotpack.zone=a", &node]);
    let class = |name: &str, zone: &str| {
        let body = json!({"image": pool_image(), "nodeLabels": {"slotpack.zone": zone}});
        let r = s.call(
            "PUT",
            &format!("/api/pool/classes/{name}"),
            &body.to_string(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    };
    class("zone-a", "a");
    class("zone-b", "b");
    let mut zoned = in_container();
    zoned["poolClass"] = json!("zone-b");
    let r = s.create("z-b", zoned.clone());
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("slotpack.zone"), "{}", r.text());
    assert_eq!(s.call("GET", "/api/tenants/z-b", "").status, 404);
    zoned["poolClass"] = json!("zone-a");
    s.create_ok("z-a", zoned);
    let za = s.wait_pong("z-a");
    let st = s.call("GET", "/api/pool/status", "").json();
    let zpool = st["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["class"] == "zone-a")
        .unwrap_or_else(|| panic!("{st}"));
    assert_eq!(zpool["node"], node.as_str(), "{st}");
    assert!(za > 0);
    assert_eq!(s.call("DELETE", "/api/tenants/z-a", "").status, 200);

    // A class of another image is refused: every node would need it.
    let r = s.call(
        "PUT",
        "/api/pool/classes/other",
        &json!({"image": "slotpack-test/python:bookworm"}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("swarm backend"), "{}", r.text());

    // kill -9 of the task's container: Swarm starts a new task on the
    // node with the same volume; the tenants come back on their ports.
    docker(&["kill", task.trim()]);
    let h = wait_for(LONG, "a healthy tick after the kill", || {
        let h = s.health_check();
        (h["issues"] == json!([]) && h["bots"].as_array().is_some_and(|b| b.len() == 2))
            .then_some(h)
    });
    assert_eq!(h["pools"][0]["healthy"], true, "{h}");
    assert_eq!(s.wait_pong("s-1"), p1);
    assert_eq!(s.wait_pong("s-2"), p2);
    let new_task = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={name}"),
    ]);
    assert_ne!(new_task.trim(), task.trim(), "the same container");

    // Deleting every tenant and cleaning up removes the service, its
    // container and its state volume; the deployment's tenant data volume
    // (empty now: each DELETE purged its tenant's folder) is never removed
    // implicitly.
    for id in ["s-1", "s-2"] {
        assert_eq!(
            s.call("DELETE", &format!("/api/tenants/{id}"), "").status,
            200
        );
    }
    let r = s.call("POST", "/api/pool/cleanup", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let label = format!("label=slotpack.deployment={dep}");
    assert_eq!(docker(&["service", "ls", "-q", "--filter", &label]), "");
    assert!(guard.ids("containers").is_empty());
    assert_eq!(guard.ids("volumes"), [format!("{dep}-tenants")]);
}

/// The tenant's placement: (host, port, pool).
fn placement(s: &Slotpack, id: &str) -> (String, u16, String) {
    let t = s.call("GET", &format!("/api/tenants/{id}"), "").json();
    let p = &t["tenant"]["placement"];
    (
        p["host"]
            .as_str()
            .unwrap_or_else(|| panic!("{t}"))
            .to_string(),
        p["port"].as_u64().unwrap_or_default() as u16,
        p["poolId"].as_str().unwrap_or_default().to_string(),
    )
}

/// Wait until `id` answers its ping where its placement says.
fn pong_where_placed(s: &Slotpack, id: &str) -> (String, u16, String) {
    wait_for(LONG, &format!("{id} answers where it is placed"), || {
        let (host, port, pool) = placement(s, id);
        request(&format!("{host}:{port}"), "GET", "/api/v1/ping", &[], b"")
            .ok()
            .filter(|r| r.status == 200 && r.text().contains("pong"))
            .map(|_| (host, port, pool))
    })
}

fn availability(node: &str, what: &str) {
    docker(&["node", "update", "--availability", what, node]);
}

#[test]
fn pools_leave_a_drained_or_lost_node_for_another_with_their_tenants() {
    if !require_docker("swarm nodes") || !require_node_image("swarm nodes") {
        return;
    }
    let _one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let dep = format!("swn{}", std::process::id());
    let swarm = Swarm::with_worker(&format!("{dep}-node2"));
    let manager = swarm.node();
    let worker = swarm.worker.as_ref().expect("worker");
    let (node2, addr2) = (worker.node.clone(), worker.addr.clone());
    let guard = Deployment(dep.clone());
    let s = Slotpack::start(&[
        ("SLOTPACK_BACKEND", "swarm"),
        ("SLOTPACK_DEPLOYMENT", &dep),
        ("SLOTPACK_POOL_IMAGE", &pool_image()),
        ("SLOTPACK_POOL_MEMORY", "256m"),
        ("SLOTPACK_POOL_CPUS", "0.5"),
        // The orchestrator's own loop notices lost nodes.
        ("HEALTH_CHECK_INTERVAL", "1000"),
    ]);

    // The manager takes nothing new: the first pool goes to the worker.
    availability(&manager, "pause");
    s.create_ok("n-1", in_container());
    s.create_ok("n-2", in_container());
    availability(&manager, "active");
    let (host, port1, pool) = pong_where_placed(&s, "n-1");
    assert_eq!((host.as_str(), pool.as_str()), (addr2.as_str(), "pool-1"));
    pong_where_placed(&s, "n-2");
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["pools"][0]["node"], node2.as_str(), "{st}");
    // The proxy reaches a tenant on the other node.
    let r = s.call("GET", "/api/tenants/n-1/proxy/api/v1/ping", "");
    assert_eq!(r.status, 200, "{}", r.text());

    // Drain the worker: its pool moves to the manager, tenants keep their
    // ids, new ports are reported.
    availability(&node2, "drain");
    let moved = wait_for(LONG, "n-1 moved off the drained node", || {
        let (host, port, pool) = placement(&s, "n-1");
        (pool != "pool-1").then_some((host, port, pool))
    });
    let (host, port, pool) = pong_where_placed(&s, "n-1");
    assert_eq!((host.clone(), port, pool.clone()), moved);
    assert_ne!(host, addr2);
    assert_ne!(port, port1, "the new pool has its own ports");
    pong_where_placed(&s, "n-2");
    let ev = s
        .call("GET", "/api/events?tenant=n-1", "")
        .json()
        .to_string();
    assert!(
        ev.contains("tenant.moved") && ev.contains("drained"),
        "{ev}"
    );
    // The drained pool is `removing` until its service is gone; a later
    // tick finishes a removal the drained node did not answer at once.
    wait_for(LONG, "the drained pool removed", || {
        let st = s.call("GET", "/api/pool/status", "").json();
        let pools = st["pools"].as_array().unwrap().clone();
        if pools.iter().all(|p| p["node"] == manager.as_str()) {
            return Some(());
        }
        s.health_check();
        None
    });
    // The drained pool's service is gone.
    let left = docker(&[
        "service",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("label=slotpack.deployment={dep}"),
    ]);
    assert!(!left.contains(&format!("{dep}-pool-1")), "{left}");

    // Node loss: a pool on the worker (n-3 fills the manager's pool, n-4
    // needs a new one), then the worker's engine is killed.
    availability(&node2, "active");
    availability(&manager, "pause");
    s.create_ok("n-3", in_container());
    s.create_ok("n-4", in_container());
    availability(&manager, "active");
    pong_where_placed(&s, "n-3");
    let (host, _, lost_pool) = pong_where_placed(&s, "n-4");
    assert_eq!(host, addr2);
    let killed = Instant::now();
    docker(&["kill", &worker.container]);
    let (host, _, pool) = wait_for(LONG, "n-4 healthy on another node", || {
        let (host, port, pool) = placement(&s, "n-4");
        (pool != lost_pool)
            .then(|| request(&format!("{host}:{port}"), "GET", "/api/v1/ping", &[], b"").ok())
            .flatten()
            .filter(|r| r.status == 200)
            .map(|_| (host, port, pool))
    });
    let took = killed.elapsed();
    assert_ne!(host, addr2);
    eprintln!(
        "node loss to all its tenants healthy elsewhere: {:.1} s (moved to {pool})",
        took.as_secs_f64()
    );
    let h = s.health_check();
    assert_eq!(h["bots"].as_array().map(Vec::len), Some(4), "{h}");
    drop(s);
    drop(guard);
}
