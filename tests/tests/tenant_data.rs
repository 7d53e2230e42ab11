//! A tenant's data is its own (issue K): its home and volumes follow it
//! through restarts, spec updates (in its slot and to another pool), an
//! orchestrator restart, a killed pool and consolidation, stay out of its
//! neighbours' reach, and go only with its DELETE. Run on the local
//! backend as root and on the docker backend (CI runs both), with real
//! Python tenants that count their own starts in their files.

use std::time::Duration;

use serde_json::{json, Value};
use slotpack_tests::docker::{docker, pool_image, require_python_image, Deployment, PYTHON_IMAGE};
use slotpack_tests::orchestrator::Slotpack;
use slotpack_tests::{require_root, wait_for};

const LONG: Duration = Duration::from_secs(60);

/// Counts its starts in `$HOME/runs` and `VOLUME/runs`, tries to read the
/// tenant `OTHER`'s home, and prints one line: `python3 -c KEEPER VOLUME OTHER`.
const KEEPER: &str = r#"
import errno, os, sys, time
home = os.environ["HOME"]
vol, other = sys.argv[1], sys.argv[2]
def bump(d):
    f = os.path.join(d, "runs")
    n = int(open(f).read()) if os.path.exists(f) else 0
    with open(f, "w") as w:
        w.write(str(n + 1))
    return n + 1
h, v = bump(home), bump(vol)
root = os.path.dirname(os.path.dirname(home))
try:
    open(os.path.join(root, other, "home", "runs")).read()
    seen = "read"
except OSError as e:
    seen = errno.errorcode[e.errno]
me = os.getuid()
owned = os.stat(home).st_uid == me and os.stat(vol).st_uid == me
print("runs home=%d vol=%d env=%s other=%s owned=%s" % (h, v, os.environ.get("V", "-"), seen, owned), flush=True)
time.sleep(100000)
"#;

/// Where the test runs: Python's command, the volume root, spec extras.
struct Site {
    python: &'static str,
    volume_root: &'static str,
    extra: Value,
}

impl Site {
    fn body(&self, id: &str, other: &str, more: Value) -> Value {
        let vol = format!("{}/{id}-data", self.volume_root);
        let mut t = json!({
            "id": id,
            "command": self.python,
            "args": ["-c", KEEPER, vol, other],
            "ping": null,
            "restart": {"startSecs": 0},
            "resources": {"memoryMb": 64, "cpuMillis": 10},
            "volumes": [{"path": vol}],
        });
        for src in [&self.extra, &more] {
            for (k, v) in src.as_object().unwrap() {
                t[k] = v.clone();
            }
        }
        t
    }
}

fn tenant(sp: &Slotpack, id: &str) -> Value {
    sp.call("GET", &format!("/api/tenants/{id}"), "").json()["tenant"].clone()
}

/// Wait until `id`'s log has a start line with `home=runs vol=runs` and
/// `rest`; the whole line.
fn started(sp: &Slotpack, id: &str, runs: u32, rest: &str) -> String {
    let want = format!("runs home={runs} vol={runs} ");
    let line = wait_for(LONG, &format!("{id}: {want}{rest}"), || {
        let log = sp
            .call("GET", &format!("/api/tenants/{id}/logs?tail=200"), "")
            .text();
        log.lines()
            .find(|l| l.contains(&want) && l.contains(rest))
            .map(str::to_string)
    });
    eprintln!("{id}: {line}");
    line
}

fn put(sp: &Slotpack, id: &str, body: &Value) -> Value {
    let r = sp.call("PUT", &format!("/api/tenants/{id}"), &body.to_string());
    assert_eq!(r.status, 200, "PUT {id}: {}", r.text());
    r.json()["tenant"].clone()
}

/// The scenario on either backend; `kill_pool` ends the pool holding a
/// tenant the hard way (agent `kill -9`, `docker kill`).
fn data_follows_the_tenant(sp: &mut Slotpack, site: &Site, kill_pool: &dyn Fn(&Slotpack, &str)) {
    let (a, b) = (
        site.body("a", "b", json!({})),
        site.body("b", "a", json!({})),
    );
    for body in [&a, &b] {
        let r = sp.call("POST", "/api/tenants", &body.to_string());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // Each sees its own files, owned by its slot user, and not the
    // other's: the neighbour's folder is not even there in its view.
    let line = started(sp, "a", 1, "other=ENOENT owned=True");
    assert!(line.contains("env=-"), "{line}");
    started(sp, "b", 1, "other=ENOENT owned=True");
    assert_eq!(tenant(sp, "a")["placement"]["poolId"], "pool-1");

    // A restart keeps them.
    let r = sp.call("POST", "/api/tenants/a/restart", "");
    assert_eq!(r.status, 200, "{}", r.text());
    started(sp, "a", 2, "");

    // A PUT that fits restarts it in its slot with the new spec.
    let slot = tenant(sp, "a")["placement"]["slot"].clone();
    let t = put(sp, "a", &site.body("a", "b", json!({"env": {"V": "2"}})));
    assert_eq!(t["placement"]["slot"], slot);
    assert_eq!(t["placement"]["poolId"], "pool-1");
    started(sp, "a", 3, "env=2");

    // One that no longer fits moves it to another pool: same data, handed
    // to its new slot user.
    let big = site.body(
        "a",
        "b",
        json!({"env": {"V": "3"}, "resources": {"memoryMb": 460, "cpuMillis": 10}}),
    );
    let t = put(sp, "a", &big);
    assert_eq!(t["placement"]["poolId"], "pool-2", "{t}");
    started(sp, "a", 4, "env=3 other=ENOENT owned=True");

    // An orchestrator restart: the data is not the orchestrator's.
    sp.stop();
    sp.spawn();
    let r = sp.call("POST", "/api/tenants/a/restart", "");
    assert_eq!(r.status, 200, "{}", r.text());
    started(sp, "a", 5, "");

    // Its pool killed the hard way, and brought back by a tick.
    kill_pool(sp, "pool-2");
    wait_for(LONG, "a starts again", || {
        sp.health_check();
        let log = sp.call("GET", "/api/tenants/a/logs?tail=200", "").text();
        log.contains("runs home=6 vol=6").then_some(())
    });

    // Back to a small size (it stays where it is), then consolidation
    // empties one of the two pools: whoever moves keeps its data.
    let t = put(sp, "a", &site.body("a", "b", json!({"env": {"V": "4"}})));
    assert_eq!(t["placement"]["poolId"], "pool-2");
    started(sp, "a", 7, "env=4");
    let h = sp.health_check();
    assert!(
        h["recoveryActions"].to_string().contains("consolidation"),
        "{h}"
    );
    let (pa, pb) = (
        tenant(sp, "a")["placement"]["poolId"].clone(),
        tenant(sp, "b")["placement"]["poolId"].clone(),
    );
    assert_eq!(pa, pb, "consolidated into one pool");
    for (id, runs) in [("a", 8), ("b", 2)] {
        let r = sp.call("POST", &format!("/api/tenants/{id}/restart"), "");
        assert_eq!(r.status, 200, "{}", r.text());
        started(sp, id, runs, "other=ENOENT owned=True");
    }

    // Only the tenant's DELETE removes its data: the same id made anew
    // starts from nothing.
    let r = sp.call("DELETE", "/api/tenants/a", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = sp.call("POST", "/api/tenants", &a.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    started(sp, "a", 1, "owned=True");
    started(sp, "b", 2, "");
}

/// The volume checks of a create: each bad one is a 400 naming it, and
/// changes nothing.
fn bad_volumes_are_refused(sp: &Slotpack, site: &Site) {
    let before = sp.call("GET", "/api/tenants", "").text();
    for (vols, want) in [
        (json!([{"path": "data"}]), "absolute"),
        (json!([{"path": "/proc/self"}]), "/proc, /sys or /dev"),
        (json!([{"path": "/sys/x"}]), "/proc, /sys or /dev"),
        (json!([{"path": "/dev/shm/x"}]), "/proc, /sys or /dev"),
        (json!([{"path": "/a"}, {"path": "/a"}]), "twice"),
        (json!([{"path": "/a/../b"}]), "normal form"),
        (
            json!((0..9)
                .map(|i| json!({"path": format!("/v{i}")}))
                .collect::<Vec<_>>()),
            "at most 8",
        ),
        (json!([{"path": "/a", "size": 1}]), "unknown field"),
    ] {
        let body = site.body("bad", "x", json!({"volumes": vols}));
        let r = sp.call("POST", "/api/tenants", &body.to_string());
        assert_eq!(r.status, 400, "{vols}: {}", r.text());
        assert!(r.text().contains(want), "{vols}: {}", r.text());
    }
    assert_eq!(sp.call("GET", "/api/tenants", "").text(), before);
}

#[test]
fn on_the_local_backend_a_tenants_data_follows_it_and_goes_only_with_its_delete() {
    if !require_root("local tenant data") {
        return;
    }
    let mut sp = Slotpack::start_full(
        3,
        6,
        &[
            ("SLOTPACK_POOL_MEMORY_MB", "512"),
            ("SLOTPACK_CONSOLIDATE", "true"),
        ],
        &[],
    );
    let site = Site {
        python: "/usr/bin/python3",
        volume_root: "/tmp",
        extra: json!({}),
    };
    bad_volumes_are_refused(&sp, &site);
    let kill = |sp: &Slotpack, pool: &str| {
        let pid = sp
            .agent_pids()
            .into_iter()
            .find(|(p, _)| p == pool)
            .map(|(_, pid)| pid)
            .expect("the pool's agent");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    data_follows_the_tenant(&mut sp, &site, &kill);
    // On the host: the data is the deployment's, one folder per tenant.
    let tenants = sp.data.join("tenants");
    assert!(tenants.join("b/home/runs").is_file());
    assert!(tenants.join("b/volumes/tmp%2Fb-data/runs").is_file());
}

#[test]
fn on_the_docker_backend_a_tenants_data_follows_it_and_goes_only_with_its_delete() {
    if !require_python_image("docker tenant data") {
        return;
    }
    let dep = Deployment("data-dk".into());
    let dir = std::env::temp_dir().join(format!("slotpack-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("slotpack.toml");
    std::fs::write(
        &config,
        format!("[classes.python]\nimage = \"{PYTHON_IMAGE}\"\nslots = 3\nmemory = \"512m\"\n"),
    )
    .unwrap();
    let mut sp = Slotpack::start_full(
        3,
        6,
        &[
            ("SLOTPACK_BACKEND", "docker"),
            ("SLOTPACK_POOL_IMAGE", &pool_image()),
            ("SLOTPACK_DEPLOYMENT", "data-dk"),
            ("SLOTPACK_CONSOLIDATE", "true"),
        ],
        &["--config", config.to_str().unwrap()],
    );
    let site = Site {
        python: "python3",
        volume_root: "/srv",
        extra: json!({"poolClass": "python"}),
    };
    bad_volumes_are_refused(&sp, &site);
    let kill = |_: &Slotpack, pool: &str| {
        docker(&["kill", &format!("data-dk-{pool}")]);
    };
    data_follows_the_tenant(&mut sp, &site, &kill);
    // The data lives in the deployment's tenants volume, which outlived the
    // pool consolidation removed.
    let volumes = dep.ids("volumes");
    assert!(
        volumes.iter().any(|v| v == "data-dk-tenants"),
        "{volumes:?}"
    );
    drop(sp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Counts its starts in `$HOME/starts`, prints the image's `APP_VERSION`,
/// then serves the image's web app (ping at `/api/v1/ping`).
const ROLLER: &str = r#"
import os, runpy
f = os.path.join(os.environ["HOME"], "starts")
n = int(open(f).read()) + 1 if os.path.exists(f) else 1
with open(f, "w") as w:
    w.write(str(n))
print("start version=%s starts=%d" % (os.environ.get("APP_VERSION", "-"), n), flush=True)
runpy.run_path("/app/server.py", run_name="__main__")
"#;

/// An image made here from the Python test image with `env` lines added;
/// removed at drop.
struct Image(String);

impl Image {
    fn build(tag: &str, env: &[&str]) -> Image {
        use std::io::Write;
        let mut file = format!("FROM {PYTHON_IMAGE}\n");
        for e in env {
            file.push_str(&format!("ENV {e}\n"));
        }
        let mut child = std::process::Command::new("docker")
            .args(["build", "-q", "-t", tag, "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(file.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "docker build {tag}");
        Image(tag.to_string())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

fn put_class(sp: &Slotpack, image: &str) {
    let body = json!({"image": image, "slots": 2, "memoryMb": 512});
    let r = sp.call("PUT", "/api/pool/classes/py", &body.to_string());
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
}

fn class_roll(sp: &Slotpack) -> Value {
    let c = sp.call("GET", "/api/pool/classes", "").json();
    c["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "py")
        .expect("class py")["roll"]
        .clone()
}

#[test]
fn on_the_docker_backend_a_class_image_rolls_pool_by_pool_keeping_data_and_a_bad_one_goes_back() {
    if !require_python_image("docker image roll") {
        return;
    }
    // Images go after the deployment (whose containers use them).
    let v1 = Image::build("slotpack-test/roll:v1", &["APP_VERSION=v1"]);
    let v2 = Image::build("slotpack-test/roll:v2", &["APP_VERSION=v2"]);
    // Python cannot start on it: every tenant fails.
    let bad = Image::build(
        "slotpack-test/roll:bad",
        &["APP_VERSION=bad", "PYTHONHOME=/nonexistent"],
    );
    let dep = Deployment("roll-dk".into());
    let mut sp = Slotpack::start_full(
        2,
        4,
        &[
            ("SLOTPACK_BACKEND", "docker"),
            ("SLOTPACK_POOL_IMAGE", &pool_image()),
            ("SLOTPACK_DEPLOYMENT", "roll-dk"),
            ("SLOTPACK_ROLL_TIMEOUT_MS", "15000"),
        ],
        &[],
    );
    put_class(&sp, &v1.0);
    let ids = ["r1", "r2", "r3"];
    for id in ids {
        let body = json!({
            "id": id, "command": "python3", "args": ["-c", ROLLER],
            "workingDir": "/app", "poolClass": "py",
            "ping": {"kind": "http", "path": "/api/v1/ping", "intervalMs": 200},
            "restart": {"startSecs": 0},
            "resources": {"memoryMb": 64, "cpuMillis": 10},
        });
        let r = sp.call("POST", "/api/tenants", &body.to_string());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let log_has = |sp: &Slotpack, id: &str, want: &str| {
        wait_for(LONG, &format!("{id}: {want}"), || {
            let log = sp
                .call("GET", &format!("/api/tenants/{id}/logs?tail=200"), "")
                .text();
            log.contains(want).then_some(())
        })
    };
    for id in ids {
        log_has(&sp, id, "start version=v1 starts=1");
    }
    assert!(class_roll(&sp).is_null());

    // The new image rolls over the two pools, one per tick; each tenant
    // comes back on it with its data.
    put_class(&sp, &v2.0);
    let roll = class_roll(&sp);
    assert_eq!(roll["state"], "rolling", "{roll}");
    assert_eq!(
        (roll["poolsUpdated"].as_u64(), roll["poolsTotal"].as_u64()),
        (Some(0), Some(2))
    );
    let st = sp.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["pools"][0]["rollingTo"], v2.0.as_str(), "{st}");
    wait_for(Duration::from_secs(120), "the roll to v2 is done", || {
        sp.health_check();
        class_roll(&sp).is_null().then_some(())
    });
    for id in ids {
        log_has(&sp, id, "start version=v2 starts=2");
    }
    let st = sp.call("GET", "/api/pool/status", "").json();
    for p in st["pools"].as_array().unwrap() {
        assert_eq!(p["image"], v2.0.as_str(), "{st}");
        assert!(p["rollingTo"].is_null(), "{st}");
    }
    let events = sp.call("GET", "/api/events?limit=500", "").text();
    assert_eq!(events.matches("\"roll.done\"").count(), 2, "{events}");
    assert_eq!(events.matches("\"roll.started\"").count(), 2, "{events}");

    // A bad image: the first pool's tenants fail on it, it goes back to v2
    // with their data, the roll stops and says why; the other pool is not
    // touched.
    // (Any tick may take the step: the API's, or one a pool's container
    // events set off.)
    put_class(&sp, &bad.0);
    wait_for(Duration::from_secs(120), "the roll to bad gives up", || {
        sp.health_check();
        (class_roll(&sp)["state"] == "failed").then_some(())
    });
    let roll = class_roll(&sp);
    assert_eq!(roll["state"], "failed", "{roll}");
    assert_eq!(roll["failure"]["pool"], "pool-1", "{roll}");
    assert!(
        roll["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("did not run healthy"),
        "{roll}"
    );
    for id in ["r1", "r2"] {
        log_has(&sp, id, "start version=v2 starts=3");
        assert_eq!(tenant(&sp, id)["healthy"], true);
    }
    let st = sp.call("GET", "/api/pool/status", "").json();
    for p in st["pools"].as_array().unwrap() {
        assert_eq!(p["image"], v2.0.as_str(), "{st}");
    }
    sp.health_check();
    let r3 = sp.call("GET", "/api/tenants/r3/logs?tail=200", "").text();
    assert!(!r3.contains("starts=3"), "the stopped roll went on: {r3}");
    let events = sp.call("GET", "/api/events?limit=500", "").text();
    assert_eq!(events.matches("\"roll.failed\"").count(), 1, "{events}");
    sp.stop();
    drop(sp);
    drop(dep);
}

/// Counts its starts in `$HOME/starts` and prints the count.
const COUNTER: &str = r#"
import os, time
f = os.path.join(os.environ["HOME"], "starts")
n = int(open(f).read()) + 1 if os.path.exists(f) else 1
with open(f, "w") as w:
    w.write(str(n))
print("start starts=%d" % n, flush=True)
time.sleep(100000)
"#;

#[test]
fn a_deployment_of_the_previous_release_keeps_its_tenants_homes_when_upgraded() {
    if !require_root("upgrade from the previous layout") {
        return;
    }
    let mut sp = Slotpack::start(&[]);
    let body = json!({"id": "old", "command": "/usr/bin/python3", "args": ["-c", COUNTER],
                      "ping": null, "restart": {"startSecs": 0},
                      "resources": {"memoryMb": 64, "cpuMillis": 10}});
    let r = sp.call("POST", "/api/tenants", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let log_has = |sp: &Slotpack, want: &str| {
        wait_for(LONG, want, || {
            let log = sp.call("GET", "/api/tenants/old/logs?tail=200", "").text();
            log.contains(want).then_some(())
        })
    };
    log_has(&sp, "start starts=1");
    let slot = tenant(&sp, "old")["placement"]["slot"].as_u64().unwrap();

    // Make it what the previous release left: the agent gone (it would be
    // replaced), the home in the pool's slot homes, the database at schema
    // 5 with version-1 specs, no layout column and no event owners.
    sp.stop();
    for (_, pid) in sp.agent_pids() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        wait_for(LONG, "the agent exits", || {
            (!slotpack_tests::alive(pid)).then_some(())
        });
    }
    let old_home = sp.data.join(format!("homes/pool-1/{slot}"));
    std::fs::create_dir_all(old_home.parent().unwrap()).unwrap();
    std::fs::rename(sp.data.join("tenants/old/home"), &old_home).unwrap();
    std::fs::remove_dir_all(sp.data.join("tenants/old")).unwrap();
    let db = rusqlite::Connection::open(sp.data.join("slotpack.db")).unwrap();
    db.execute_batch(
        "DROP TRIGGER events_owner;
         DROP INDEX events_owner;
         ALTER TABLE events DROP COLUMN owner;
         ALTER TABLE pools DROP COLUMN layout;
         ALTER TABLE classes DROP COLUMN roll_failed;
         UPDATE tenants SET spec = json_set(spec, '$.version', 1);
         PRAGMA user_version = 5;",
    )
    .unwrap();
    drop(db);

    // The new release starts: the schema steps forward, the pool is made
    // anew with per-tenant data, its agent moves the slot home in.
    sp.spawn();
    log_has(&sp, "start starts=2");
    assert!(sp.data.join("tenants/old/home/starts").is_file());
    assert!(!old_home.exists(), "the slot home is left behind");
    let events = sp.call("GET", "/api/events?limit=100", "").text();
    assert!(events.contains("\"pool.upgraded\""), "{events}");
    let db = rusqlite::Connection::open(sp.data.join("slotpack.db")).unwrap();
    let (version, layout): (u32, u32) = (
        db.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap(),
        db.query_row("SELECT layout FROM pools", [], |r| r.get(0))
            .unwrap(),
    );
    assert_eq!((version, layout), (7, 2));
    // The events of before were given their tenant's owner (step 7).
    let unowned: u32 = db
        .query_row(
            "SELECT COUNT(*) FROM events WHERE tenant = 'old' AND owner IS NOT 'admin'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unowned, 0);
    // And the upgraded tenant's data follows it on as any other's.
    let log = sp.call("GET", "/api/tenants/old/logs?tail=200", "").text();
    let last: u32 = log
        .lines()
        .filter_map(|l| l.strip_prefix("start starts="))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap();
    let r = sp.call("POST", "/api/tenants/old/restart", "");
    assert_eq!(r.status, 200, "{}", r.text());
    log_has(&sp, &format!("start starts={}", last + 1));
}
