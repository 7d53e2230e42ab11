//! `slotpack status`, the TOML config file, and the lifecycle event log.

use std::process::Command;

use serde_json::{json, Value};
use slotpack_tests::bin;
use slotpack_tests::orchestrator::{Slotpack, ADMIN};

#[test]
fn status_prints_pools_and_tenants() {
    let s = Slotpack::start(&[]);
    s.create_ok("st-1", json!({}));
    s.create_ok("st-2", json!({}));
    let out = Command::new(bin("slotpack"))
        .args(["status", "--listen", &s.addr, "--token", ADMIN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pools 1   tenants 2"), "{text}");
    assert!(
        text.contains("pool-1") && text.contains("st-1 st-2") && text.contains("2/3"),
        "{text}"
    );
    let out = Command::new(bin("slotpack"))
        .args(["status", "--listen", &s.addr, "--json"])
        .env("SLOTPACK_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["totalBots"], 2);
    // A wrong token is a clear failure.
    let out = Command::new(bin("slotpack"))
        .args(["status", "--listen", &s.addr, "--token", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn a_toml_file_sets_defaults_env_beats_it_and_flags_beat_env() {
    let dir = std::env::temp_dir().join(format!("slotpack-toml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("slotpack.toml");
    std::fs::write(
        &file,
        "max_bots_per_container = 5\nSLOTPACK_POOL_MEMORY_MB = 2048\nslotpack_pool_cpu_millis = 3000\n",
    )
    .unwrap();
    let f = file.display().to_string();
    // File: memory 2048 and cpu 3000; env (the fixture's MAX_BOTS_PER_CONTAINER=3)
    // beats the file's 5; the flag beats the env's SLOTPACK_POOL_CPU_MILLIS.
    let s = Slotpack::start_full(
        3,
        15,
        &[
            ("SLOTPACK_CONFIG", &f),
            ("SLOTPACK_POOL_CPU_MILLIS", "1000"),
        ],
        &["--pool-cpu-millis", "1500"],
    );
    s.create_ok("t-1", json!({}));
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["pools"][0]["memoryMb"], 2048, "{st}");
    assert_eq!(st["pools"][0]["capacity"], 3, "{st}");
    // cpu: 1500 from the flag, so 1600 millicores do not fit.
    let r = s.create(
        "t-2",
        json!({"resources": {"memoryMb": 64, "cpuMillis": 1600}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("at most 1500"), "{}", r.text());
    // A broken file is a clear start-up error.
    std::fs::write(&file, "max_bots_per_container = [1,\n").unwrap();
    let out = Command::new(bin("slotpack"))
        .args(["serve", "--config", &f])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn toml_pool_classes_size_their_pools_and_a_typo_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("slotpack-classes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("slotpack.toml");
    std::fs::write(
        &file,
        "[classes.small]\nimage = \"python:3.11-slim\"\nslots = 2\nmemory = \"128m\"\ncpu_millis = 300\n",
    )
    .unwrap();
    let f = file.display().to_string();
    let s = Slotpack::start_full(3, 15, &[], &["--config", &f]);
    let small = json!({"poolClass": "small", "resources": {"memoryMb": 64, "cpuMillis": 10}});
    s.create_ok("c-1", small.clone());
    s.create_ok("c-2", small.clone());
    s.create_ok("c-3", small);
    s.create_ok("d-1", json!({}));
    for id in ["c-1", "c-2", "c-3", "d-1"] {
        s.wait_pong(id);
    }
    // Two pools of 2 slots and 128 MiB for the class, one default pool.
    let st = s.call("GET", "/api/pool/status", "").json();
    let sizes: Vec<(Value, Value, Value)> = st["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["class"].clone(),
                p["capacity"].clone(),
                p["memoryMb"].clone(),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [
            (json!("small"), json!(2), json!(128)),
            (json!("small"), json!(2), json!(128)),
            (Value::Null, json!(3), json!(4096)),
        ],
        "{st}"
    );
    // The class's memory and CPU bound its tenants.
    let r = s.create(
        "c-4",
        json!({"poolClass": "small", "resources": {"memoryMb": 129}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("1..=128"), "{}", r.text());
    let r = s.create(
        "c-4",
        json!({"poolClass": "small", "resources": {"memoryMb": 64, "cpuMillis": 301}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let out = Command::new(bin("slotpack"))
        .args(["status", "--listen", &s.addr, "--token", ADMIN])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("small") && text.contains("default"), "{text}");
    drop(s);
    // A misspelled key or a class too big for a pool's port block stops
    // `serve` with the reason.
    for (bad, why) in [
        (
            "[classes.x]\nimage = \"a\"\nslot = 2\n",
            "unknown key \"slot\"",
        ),
        ("[classes.x]\nimage = \"a\"\nslots = 99\n", "slots"),
        ("[classes.x]\nslots = 2\n", "image is required"),
        (
            "max_bots_per_containr = 5\n",
            "unknown setting max_bots_per_containr",
        ),
    ] {
        std::fs::write(&file, bad).unwrap();
        let out = Command::new(bin("slotpack"))
            .args(["serve", "--config", &f, "--insecure-dev"])
            .env("SLOTPACK_DATA_DIR", dir.join("data"))
            .env("SLOTPACK_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {err}");
        assert!(err.contains(why), "{bad}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_log_is_structured_and_can_be_json_lines() {
    let mut s = Slotpack::start(&[
        ("SLOTPACK_LOG_FORMAT", "json"),
        ("HEALTH_CHECK_INTERVAL", "200"),
    ]);
    // A tenant that keeps failing: every tick logs its issue as an event
    // with the tenant in a field.
    s.create_ok(
        "crashy",
        json!({"args": ["--exit-after-ms", "10", "--exit-code", "3"]}),
    );
    slotpack_tests::wait_for(
        std::time::Duration::from_secs(30),
        "a health issue in the log",
        || s.stderr().contains("health issue").then_some(()),
    );
    assert!(s.stop().success());
    let lines: Vec<Value> = s
        .stderr()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("serving on"))
        })
        .expect("start-up line");
    assert_eq!(serving["fields"]["backend"], "local");
    assert_eq!(serving["level"], "INFO");
    let issue = lines
        .iter()
        .find(|l| l["fields"]["message"] == "health issue")
        .unwrap();
    assert_eq!(issue["level"], "WARN");
    assert!(
        issue["fields"]["issue"]
            .as_str()
            .unwrap()
            .contains("crashy"),
        "{issue}"
    );
    assert!(lines.iter().any(|l| l["fields"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("stopped"))));
}

#[test]
fn every_lifecycle_step_is_in_the_event_log() {
    let s = Slotpack::start(&[]);
    s.create_ok("ev-1", json!({}));
    s.wait_pong("ev-1");
    s.call("POST", "/api/tenants/ev-1/stop", "");
    s.call("POST", "/api/tenants/ev-1/start", "");
    s.call("DELETE", "/api/tenants/ev-1", "");
    let e = s.call("GET", "/api/events?tenant=ev-1", "").json();
    let kinds: Vec<String> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                e["detail"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    assert!(kinds[0].starts_with("tenant.placed slot 0"), "{kinds:?}");
    assert_eq!(
        &kinds[1..4],
        [
            "tenant.desired stopped",
            "tenant.desired running",
            "tenant.desired deleting"
        ]
    );
    assert!(kinds[4].starts_with("tenant.removed"), "{kinds:?}");
    let all = s.call("GET", "/api/events", "").json();
    assert_eq!(all["events"][0]["kind"], "pool.created");
    assert_eq!(all["events"][0]["pool"], "pool-1");
}
