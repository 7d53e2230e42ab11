//! The swarm backend against a real Docker Swarm (a single-node one the test
//! makes, offline, if the engine is in none; required when CI=true): pools
//! are services pinned to the node slotpack chose, with host-mode ports and
//! a node-local state volume; create, proxy, health, recovery after the
//! task's container is killed, node in status and metrics, clean removal.

use std::time::Duration;

use serde_json::{json, Value};
use slotpack_tests::docker::{docker, pool_image, require_docker, Deployment, Swarm};
use slotpack_tests::orchestrator::Slotpack;
use slotpack_tests::wait_for;

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
    assert_eq!(bot["connection"]["host"], "127.0.0.1", "{bot}");
    assert_eq!(bot["connection"]["port"], p1);
    // Through the proxy.
    let r = s.call("GET", "/api/tenants/s-2/proxy/api/v1/ping", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let h = s.health_check();
    assert_eq!(h["issues"], json!([]), "{h}");

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
    // container and its volume.
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
    assert!(guard.ids("volumes").is_empty());
}
