//! Tenants on a runtime image that is not slotpack's: a Debian + Python
//! image with a small web app (scripts/build-python-image.sh), run as a
//! pool class and reached by migration from legacy containers of that
//! image. Real engine, real binaries (required when CI=true).

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use slotpack_tests::docker::{
    docker, pool_image, require_python_image, wait_ping, Deployment, PYTHON_IMAGE,
};
use slotpack_tests::orchestrator::{Slotpack, ADMIN};
use slotpack_tests::wait_for;

const LONG: Duration = Duration::from_secs(60);

/// A Python tenant of the app in the image: no wrapper, no shell.
fn python_tenant(extra: Value) -> Value {
    let mut t = json!({
        "command": "python3",
        "args": ["server.py"],
        "workingDir": "/app",
        "env": {"APP_MODE": "slot-${SLOT}", "PRICE": "$$5"},
        "resources": {"memoryMb": 96, "cpuMillis": 10},
        "ping": {"kind": "http", "path": "/api/v1/ping", "intervalMs": 200},
        "poolClass": "python",
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

/// Unused volumes without our label (anonymous ones).
fn anonymous_volumes() -> Vec<String> {
    docker(&["volume", "ls", "-q", "--filter", "dangling=true"])
        .lines()
        .filter(|v| inspect_volume(v).is_empty())
        .map(str::to_string)
        .collect()
}

fn inspect_volume(v: &str) -> String {
    Command::new("docker")
        .args([
            "volume",
            "inspect",
            "-f",
            "{{index .Labels \"managed-by\"}}",
            v,
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("gone".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
}

/// What the tenant says about itself, through the slotpack proxy.
fn whoami(s: &Slotpack, id: &str) -> Value {
    let r = s.call("GET", &format!("/api/tenants/{id}/proxy/whoami"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn any_image_is_a_pool_class_and_its_environment_reaches_the_programs() {
    if !require_python_image("runtime image class") {
        return;
    }
    let dep = Deployment("rt-class".into());
    let anonymous_before = anonymous_volumes();
    let dir = std::env::temp_dir().join(format!("slotpack-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("slotpack.toml");
    std::fs::write(
        &config,
        format!(
            "[classes.python]\nimage = \"{PYTHON_IMAGE}\"\nslots = 2\nmemory = \"256m\"\ncpus = \"0.5\"\n"
        ),
    )
    .unwrap();
    let s = Slotpack::start_full(
        3,
        10,
        &[
            ("SLOTPACK_BACKEND", "docker"),
            ("SLOTPACK_POOL_IMAGE", &pool_image()),
            ("SLOTPACK_DEPLOYMENT", "rt-class"),
        ],
        &["--config", config.to_str().unwrap()],
    );

    // The config file's class is listed, with its sizes.
    let classes = s.call("GET", "/api/pool/classes", "").json();
    assert_eq!(classes["defaultImage"], pool_image(), "{classes}");
    assert_eq!(
        classes["classes"][0],
        json!({"name": "python", "image": PYTHON_IMAGE, "slots": 2, "memoryMb": 256,
               "cpuMillis": 500, "pools": 0, "fromConfig": true, "roll": null})
    );

    // Two Python tenants and one of the default class.
    s.create_ok("py-1", python_tenant(json!({})));
    s.create_ok(
        "py-2",
        python_tenant(json!({"args": ["/app/server.py"], "workingDir": null})),
    );
    s.create_ok(
        "plain",
        json!({"command": "/usr/local/bin/test-tenant", "args": ["--host", "${HOST}"]}),
    );
    let p1 = s.wait_pong("py-1");
    s.wait_pong("py-2");
    s.wait_pong("plain");

    // Each class has its own pool: the Python one runs the Python image,
    // with the agent from the agent volume as a root entrypoint.
    let st = s.call("GET", "/api/pool/status", "").json();
    let pools = st["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 2, "{st}");
    let py = pools
        .iter()
        .find(|p| p["class"] == "python")
        .expect("python pool");
    assert_eq!(py["image"], PYTHON_IMAGE);
    assert_eq!(py["capacity"], 2);
    assert_eq!(py["bots"], json!(["py-1", "py-2"]));
    let plain = pools
        .iter()
        .find(|p| p["class"].is_null())
        .expect("default pool");
    assert_eq!(plain["bots"], json!(["plain"]));
    let name = py["containerName"].as_str().unwrap();
    assert_eq!(inspect(name, "{{.Config.Image}}"), PYTHON_IMAGE);
    assert_eq!(
        inspect(name, "{{.Config.User}} {{json .Config.Entrypoint}}"),
        "0:0 [\"/opt/slotpack/slot-agent\"]"
    );
    assert_eq!(
        inspect(name, "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}"),
        format!("{} 500000000", 256 << 20)
    );
    assert_eq!(
        inspect(name, "{{index .Config.Labels \"managed-by\"}}"),
        "slotpack"
    );

    // The program sees the image's environment and its own, never the
    // agent's token or settings, and runs as its slot's user.
    let me = whoami(&s, "py-1");
    let env = me["env"].as_object().unwrap();
    assert_eq!(env["RUNTIME_MARK"], "debian-python", "{me}");
    assert_eq!(env["LANG"], "C.UTF-8");
    assert_eq!(
        env["PATH"],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    assert_eq!(env["PORT"], p1.to_string());
    assert_eq!(env["HOST"], "0.0.0.0");
    assert_eq!(env["APP_MODE"], "slot-0");
    assert_eq!(env["PRICE"], "$5");
    let token = inspect(name, "{{json .Config.Env}}");
    let agent_token = token
        .split('"')
        .find_map(|e| e.strip_prefix("SLOT_AGENT_TOKEN="))
        .expect("the agent's token is in its container's env")
        .to_string();
    for (k, v) in env {
        assert!(
            !k.starts_with("SLOT_") && !k.starts_with("SLOTPACK_") && k != "HEALTH_CHECK_INTERVAL",
            "{k} reached a program"
        );
        assert_ne!(
            v.as_str(),
            Some(agent_token.as_str()),
            "{k} holds the token"
        );
    }
    assert_eq!(me["cwd"], "/app");
    let uid = me["uid"].as_u64().unwrap();
    assert!(uid != 0 && uid != 1000, "runs as uid {uid}");
    let other = whoami(&s, "py-2");
    assert_eq!(other["uid"].as_u64().unwrap(), uid + 1);
    // Its home is its tenant's own, in the deployment's tenant data.
    assert_eq!(other["cwd"], "/tenants/py-2/home", "{other}");

    // A pool of the class killed by Docker comes back, programs with it.
    docker(&["kill", name]);
    wait_for(LONG, "python pool back after docker kill", || {
        (inspect(name, "{{.State.Running}}") == "true").then_some(())
    });
    assert_eq!(s.wait_pong("py-1"), p1);

    // Bad input changes nothing.
    let r = s.create("py-x", python_tenant(json!({"poolClass": "pyhton"})));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("unknown poolClass") && r.text().contains("python"));
    let r = s.create("py-x", python_tenant(json!({"workingDir": "app"})));
    assert_eq!(r.status, 400, "{}", r.text());
    // A folder the agent cannot find is refused by it: the tenant is not
    // kept (checked with a free slot, so that no pool is made for it).
    assert_eq!(s.call("DELETE", "/api/tenants/py-2", "").status, 200);
    let r = s.create("py-x", python_tenant(json!({"workingDir": "/nonexistent"})));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("workingDir"), "{}", r.text());
    assert_eq!(s.call("GET", "/api/tenants/py-x", "").status, 404);
    let after = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(after["totalPools"], 2, "{after}");
    let put = |name: &str, body: Value| {
        s.call(
            "PUT",
            &format!("/api/pool/classes/{name}"),
            &body.to_string(),
        )
    };
    let r = put("nope", json!({"image": "slotpack-test/no-such-image:1"}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not on the engine"), "{}", r.text());
    for bad in [
        json!({"image": ""}),
        json!({"image": "a b"}),
        json!({"image": PYTHON_IMAGE, "slots": 4}),
        json!({"image": PYTHON_IMAGE, "memoryMb": 1}),
        json!({"image": PYTHON_IMAGE, "cpuMillis": 0}),
        json!({"image": PYTHON_IMAGE, "color": "red"}),
    ] {
        let r = put("bad", bad.clone());
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    assert_eq!(put("Bad_Name", json!({"image": PYTHON_IMAGE})).status, 400);
    let owner = s.call("POST", "/api/tokens", r#"{"owner":"alice"}"#).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.call_as(
        Some(&owner),
        "PUT",
        "/api/pool/classes/mine",
        &json!({"image": PYTHON_IMAGE}).to_string(),
    );
    assert_eq!(r.status, 403);
    // Owners may list the classes (to choose one).
    assert_eq!(
        s.call_as(Some(&owner), "GET", "/api/pool/classes", "")
            .status,
        200
    );
    let listed = s.call("GET", "/api/pool/classes", "").json();
    assert_eq!(listed["classes"].as_array().unwrap().len(), 1, "{listed}");

    // Classes defined over the API: 201, then 200; deleted when unused,
    // 409 while pools of them exist.
    assert_eq!(
        put("py2", json!({"image": PYTHON_IMAGE, "slots": 1})).status,
        201
    );
    assert_eq!(
        put("py2", json!({"image": PYTHON_IMAGE, "slots": 1})).status,
        200
    );
    assert_eq!(s.call("DELETE", "/api/pool/classes/py2", "").status, 200);
    assert_eq!(s.call("DELETE", "/api/pool/classes/py2", "").status, 404);
    let r = s.call("DELETE", "/api/pool/classes/python", "");
    assert_eq!(r.status, 409, "{}", r.text());

    for id in ["py-1", "plain"] {
        assert_eq!(
            s.call("DELETE", &format!("/api/tenants/{id}"), "").status,
            200
        );
    }
    let r = s.call("POST", "/api/pool/cleanup", "").json();
    assert_eq!(r["removedPools"], 2, "{r}");
    assert!(dep.ids("containers").is_empty());
    assert_eq!(s.call("DELETE", "/api/pool/classes/python", "").status, 200);
    // Filling the agent volume from the pool image (whose /pool is a
    // VOLUME) leaves no anonymous volume behind.
    let leaked: Vec<String> = anonymous_volumes()
        .into_iter()
        .filter(|v| !anonymous_before.contains(v))
        .collect();
    assert!(leaked.is_empty(), "anonymous volumes left: {leaked:?}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A legacy container of the Python image, listening on 8080.
fn legacy(name: &str) -> String {
    docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "managed-by=slotpack",
        "--label",
        "slotpack.deployment=rt-migrate",
        "-e",
        "PORT=8080",
        "-e",
        "GREETING=a$b",
        "-p",
        "127.0.0.1::8080",
        "--memory",
        "128m",
        PYTHON_IMAGE,
    ])
}

#[test]
fn legacy_python_containers_migrate_into_a_class_of_their_own_image() {
    if !require_python_image("migrate python") {
        return;
    }
    let dep = Deployment("rt-migrate".into());
    let s = Slotpack::start(&[
        ("SLOTPACK_BACKEND", "docker"),
        ("SLOTPACK_POOL_IMAGE", &pool_image()),
        ("SLOTPACK_DEPLOYMENT", "rt-migrate"),
    ]);
    let names = ["rt-legacy-1", "rt-legacy-2"];
    for n in names {
        legacy(n);
    }
    for n in names {
        wait_ping(n, "8080/tcp");
    }
    let out = Command::new(slotpack_tests::bin("slotpack"))
        .args(["migrate", "--execute", "--legacy-pattern", "rt-legacy-*"])
        .args(["--verify-timeout", "30"])
        .env("SLOTPACK_LISTEN", &s.addr)
        .env("SLOTPACK_ADMIN_TOKEN", ADMIN)
        .env("SLOTPACK_DATA_DIR", &s.data)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("migrated 2 of 2"), "{text}");

    // One class was made for the image; both tenants run in its pool.
    let classes = s.call("GET", "/api/pool/classes", "").json();
    assert_eq!(classes["classes"].as_array().unwrap().len(), 1, "{classes}");
    assert_eq!(
        classes["classes"][0]["name"],
        "slotpack-test-python-bookworm"
    );
    assert_eq!(classes["classes"][0]["image"], PYTHON_IMAGE);
    for n in names {
        let t = s.call("GET", &format!("/api/tenants/{n}"), "").json();
        assert_eq!(
            t["tenant"]["poolClass"], "slotpack-test-python-bookworm",
            "{t}"
        );
        assert_eq!(t["tenant"]["resources"]["memoryMb"], 128);
        s.wait_pong(n);
        // The image's WORKDIR and environment, the legacy env (its `$`
        // kept), the slot's port instead of 8080.
        let me = whoami(&s, n);
        assert_eq!(me["cwd"], "/app", "{me}");
        assert_eq!(me["env"]["GREETING"], "a$b");
        assert_eq!(me["env"]["RUNTIME_MARK"], "debian-python");
        assert_eq!(
            me["env"]["PORT"].as_str().unwrap(),
            t["tenant"]["placement"]["port"].to_string()
        );
        // The legacy container is gone.
        assert!(!Command::new("docker")
            .args(["inspect", n])
            .output()
            .unwrap()
            .status
            .success());
    }
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["totalPools"], 1, "{st}");
    let pool = st["pools"][0]["containerName"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(inspect(&pool, "{{.Config.Image}}"), PYTHON_IMAGE);
    drop(s);
    drop(dep);
}
