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
