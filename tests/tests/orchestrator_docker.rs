//! The docker backend against the real engine (required when CI=true).

use std::time::Duration;

use serde_json::{json, Value};
use slotpack_tests::docker::{docker, pool_image, require_docker, Deployment};
use slotpack_tests::orchestrator::Slotpack;
use slotpack_tests::wait_for;

const LONG: Duration = Duration::from_secs(60);

fn in_container(extra: Value) -> Value {
    let mut t = json!({
        "command": "/usr/local/bin/test-tenant",
        // HOST is 0.0.0.0 in a pool container (its ports are published).
        "args": ["--host", "${HOST}"],
        "ping": {"kind": "http", "intervalMs": 200},
    });
    if let (Some(m), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    t
}

fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, name])
}

#[test]
fn docker_pools_are_labelled_limited_and_recover_from_kill_and_rm() {
    if !require_docker("docker backend") {
        return;
    }
    let guard = Deployment("slotpack".into());
    assert!(
        guard.ids("containers").is_empty(),
        "pool containers left from an earlier run"
    );
    let s = Slotpack::start(&[
        ("SLOTPACK_BACKEND", "docker"),
        ("SLOTPACK_POOL_IMAGE", &pool_image()),
        ("SLOTPACK_POOL_MEMORY", "256m"),
        ("SLOTPACK_POOL_CPUS", "0.5"),
    ]);
    s.create_ok("d-1", in_container(json!({})));
    s.create_ok("d-2", in_container(json!({})));
    let p1 = s.wait_pong("d-1");
    let p2 = s.wait_pong("d-2");
    let name = "slotpack-pool-1";
    // Labels, limits, restart policy, PID limit, volume, loopback ports.
    assert_eq!(
        inspect(
            name,
            "{{index .Config.Labels \"managed-by\"}} {{index .Config.Labels \"slotpack.pool\"}}"
        ),
        "slotpack pool-1"
    );
    assert_eq!(
        inspect(
            name,
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}"
        ),
        format!("{} 500000000 4096", 256 << 20)
    );
    assert_eq!(
        inspect(name, "{{.HostConfig.RestartPolicy.Name}}"),
        "unless-stopped"
    );
    assert!(
        inspect(name, "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}")
            .contains("slotpack-pool-1-state:/pool")
    );
    let bind = inspect(
        name,
        &format!("{{{{(index (index .HostConfig.PortBindings \"{p1}/tcp\") 0).HostIp}}}}"),
    );
    assert_eq!(bind, "127.0.0.1");
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["pools"][0]["containerName"], name);
    assert_eq!(st["pools"][0]["memoryMb"], 256);

    // docker kill: the die event triggers a tick; the pool comes back.
    let started = inspect(name, "{{.State.StartedAt}}");
    docker(&["kill", name]);
    wait_for(
        LONG,
        "pool container running again after docker kill",
        || {
            (inspect(name, "{{.State.Running}}") == "true"
                && inspect(name, "{{.State.StartedAt}}") != started)
                .then_some(())
        },
    );
    assert_eq!(s.wait_pong("d-1"), p1);
    assert_eq!(s.wait_pong("d-2"), p2);

    // docker rm -f: recreated from the same state volume, same ports.
    let old_id = inspect(name, "{{.Id}}");
    docker(&["rm", "-f", name]);
    wait_for(LONG, "pool container recreated after docker rm -f", || {
        std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.Id}} {{.State.Running}}", name])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|t| t.ends_with("true") && !t.starts_with(&old_id))
            .map(|_| ())
    });
    assert_eq!(s.wait_pong("d-1"), p1);
    assert_eq!(s.wait_pong("d-2"), p2);
    let events = s.call("GET", "/api/events", "").json().to_string();
    assert!(events.contains("restarted pool-1"), "{events}");

    // A labelled container the database does not know is kept by a plain
    // cleanup (issue K) and removed by one that names it.
    let stray = docker(&[
        "create",
        "--label",
        "managed-by=slotpack",
        "--label",
        "slotpack.pool=pool-999",
        "--label",
        "slotpack.deployment=slotpack",
        "--name",
        "slotpack-pool-999",
        "--mount",
        "type=tmpfs,destination=/pool",
        &pool_image(),
    ]);
    let r = s.call("POST", "/api/pool/cleanup", "").json();
    assert_eq!(r["removedPools"], 0, "{r}");
    assert_eq!(inspect(&stray, "{{.Name}}"), "/slotpack-pool-999");
    let r = s
        .call(
            "POST",
            "/api/pool/cleanup",
            &json!({"orphans": [stray]}).to_string(),
        )
        .json();
    assert_eq!(r["removedPools"], 1, "{r}");
    assert!(
        std::process::Command::new("docker")
            .args(["inspect", &stray])
            .output()
            .unwrap()
            .status
            .code()
            != Some(0)
    );

    // Empty pools are removed with their volume.
    assert_eq!(s.call("DELETE", "/api/tenants/d-1", "").status, 200);
    assert_eq!(s.call("DELETE", "/api/tenants/d-2", "").status, 200);
    let before = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(
        before["health"]["bots"],
        json!({"total": 0, "healthy": 0}),
        "{before}"
    );
    let r = s.call("POST", "/api/pool/cleanup", "").json();
    assert_eq!(r["removedPools"], 1, "{r}");
    assert!(guard.ids("containers").is_empty());
    assert!(!docker(&["volume", "ls", "-q"])
        .lines()
        .any(|v| v == "slotpack-pool-1-state"));

    drop(s);

    // Legacy mode: one container per tenant, each removed with its tenant.
    let s = Slotpack::start(&[
        ("SLOTPACK_BACKEND", "docker"),
        ("SLOTPACK_POOL_IMAGE", &pool_image()),
        ("POOL_MODE_ENABLED", "false"),
        ("SLOTPACK_POOL_MEMORY", "128m"),
    ]);
    s.create_ok("l-1", in_container(json!({})));
    s.create_ok("l-2", in_container(json!({})));
    s.wait_pong("l-1");
    s.wait_pong("l-2");
    assert_eq!(guard.ids("containers").len(), 2);
    assert_eq!(
        s.call("GET", "/api/pool/bot/l-2", "").json()["isPooled"],
        false
    );
    assert_eq!(s.call("DELETE", "/api/tenants/l-1", "").status, 200);
    assert_eq!(guard.ids("containers").len(), 1);
    assert_eq!(s.call("DELETE", "/api/tenants/l-2", "").status, 200);
    drop(s);

    // Consolidation: pool-2's only tenant moves into pool-1's free slot and
    // the pool-2 container goes, with its volume.
    let s = Slotpack::start(&[
        ("SLOTPACK_BACKEND", "docker"),
        ("SLOTPACK_POOL_IMAGE", &pool_image()),
        ("SLOTPACK_POOL_MEMORY", "512m"),
        ("SLOTPACK_CONSOLIDATE", "true"),
    ]);
    let small = json!({"resources": {"memoryMb": 64, "cpuMillis": 10}});
    for id in ["c-1", "c-2", "c-3", "c-4"] {
        s.create_ok(id, in_container(small.clone()));
    }
    let old_port = s.wait_pong("c-4");
    assert_eq!(guard.ids("containers").len(), 2);
    assert_eq!(s.call("DELETE", "/api/tenants/c-2", "").status, 200);
    let h = s.health_check();
    assert!(
        h["recoveryActions"]
            .to_string()
            .contains("consolidation: moved c-4 to pool-1"),
        "{h}"
    );
    assert_ne!(s.wait_pong("c-4"), old_port);
    s.wait_pong("c-1");
    s.wait_pong("c-3");
    assert_eq!(guard.ids("containers").len(), 1);
    assert!(!docker(&["volume", "ls", "-q"])
        .lines()
        .any(|v| v == "slotpack-pool-2-state"));
}

#[test]
fn two_deployments_share_one_engine_and_never_touch_each_other() {
    if !require_docker("deployments") {
        return;
    }
    let names = [
        format!("dep-a-{}", std::process::id()),
        format!("dep-b-{}", std::process::id()),
    ];
    let _guards: Vec<Deployment> = names.iter().map(|n| Deployment(n.clone())).collect();
    let start = |name: &str| {
        Slotpack::start(&[
            ("SLOTPACK_BACKEND", "docker"),
            ("SLOTPACK_POOL_IMAGE", &pool_image()),
            ("SLOTPACK_POOL_MEMORY", "256m"),
            ("SLOTPACK_DEPLOYMENT", name),
        ])
    };
    let (a, b) = (start(&names[0]), start(&names[1]));
    a.create_ok("mine", in_container(json!({})));
    b.create_ok("mine", in_container(json!({})));
    a.wait_pong("mine");
    b.wait_pong("mine");
    for (s, name) in [(&a, &names[0]), (&b, &names[1])] {
        let container = format!("{name}-pool-1");
        let st = s.call("GET", "/api/pool/status", "").json();
        assert_eq!(st["pools"][0]["containerName"], container.as_str());
        assert_eq!(
            inspect(
                &container,
                "{{index .Config.Labels \"slotpack.deployment\"}}"
            ),
            name.as_str()
        );
        assert!(docker(&["volume", "ls", "-q"])
            .lines()
            .any(|v| v == format!("{container}-state")));
    }
    // Each one's cleanup and health tick leave the other's pool alone.
    for (s, other, other_name) in [(&a, &b, &names[1]), (&b, &a, &names[0])] {
        let r = s.call("POST", "/api/pool/cleanup", "").json();
        assert_eq!(r["removedPools"], 0, "{r}");
        let h = s.health_check();
        assert!(!h["issues"].to_string().contains("orphaned"), "{h}");
        assert_eq!(
            inspect(&format!("{other_name}-pool-1"), "{{.State.Running}}"),
            "true"
        );
        other.wait_pong("mine");
    }
}

/// Issue K: a `serve` on an empty data dir with the same deployment name
/// finds the pools of the lost database and keeps them (their tenants run
/// on); it reports them, and only a cleanup that names one removes it.
#[test]
fn pools_the_database_does_not_know_are_kept_until_an_admin_names_them() {
    if !require_docker("orphans") {
        return;
    }
    let name = format!("dep-orphan-{}", std::process::id());
    let _guard = Deployment(name.clone());
    let image = pool_image();
    let env = [
        ("SLOTPACK_BACKEND", "docker"),
        ("SLOTPACK_POOL_IMAGE", image.as_str()),
        ("SLOTPACK_POOL_MEMORY", "256m"),
        ("SLOTPACK_DEPLOYMENT", name.as_str()),
    ];
    let mut first = Slotpack::start(&env);
    first.create_ok("kept", in_container(json!({})));
    let port = first.wait_pong("kept");
    assert!(first.stop().success(), "{}", first.stderr());
    let container = format!("{name}-pool-1");
    let id = inspect(&container, "{{.Id}}");

    // Same deployment, empty data dir: the old pool is an orphan, kept.
    let s = Slotpack::start(&env);
    let h = s.health_check();
    let issues = h["issues"].to_string();
    assert!(
        issues.contains("orphaned pool") && issues.contains("kept"),
        "{h}"
    );
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["orphans"], json!([id]), "{st}");
    let metrics = s.call("GET", "/metrics", "").text();
    assert!(metrics.contains("slotpack_orphan_pools 1"), "{metrics}");
    let ping = || {
        slotpack_tests::http::request(
            &format!("127.0.0.1:{port}"),
            "GET",
            "/api/v1/ping",
            &[],
            b"",
        )
        .map(|r| r.status)
    };
    assert_eq!(ping().unwrap(), 200, "the lost database's tenant was ended");
    // A new pool never takes the orphan's number, hence its name.
    s.create_ok("new", in_container(json!({})));
    s.wait_pong("new");
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["pools"][0]["id"], "pool-2", "{st}");
    assert_eq!(inspect(&container, "{{.Id}}"), id);
    // A plain cleanup keeps it; a wrong name is a 400 that removes nothing.
    let r = s.call("POST", "/api/pool/cleanup", "");
    assert_eq!(
        (r.status, r.json()["removedPools"].clone()),
        (200, json!(0)),
        "{}",
        r.text()
    );
    let r = s.call("POST", "/api/pool/cleanup", r#"{"orphans": ["nope"]}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(&id), "names the orphans: {}", r.text());
    let r = s.call("POST", "/api/pool/cleanup", r#"{"orphans": 7}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(inspect(&container, "{{.State.Running}}"), "true");
    assert_eq!(ping().unwrap(), 200);
    // Named, it goes.
    let r = s.call(
        "POST",
        "/api/pool/cleanup",
        &json!({"orphans": [id]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["removedPools"], 1, "{}", r.text());
    wait_for(LONG, "orphan removed", || {
        (!docker(&["ps", "-aq"]).lines().any(|c| id.starts_with(c))).then_some(())
    });
    let h = s.health_check();
    assert!(!h["issues"].to_string().contains("orphaned"), "{h}");
}
