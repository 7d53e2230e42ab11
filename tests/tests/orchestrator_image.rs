//! slotpack as a service (issue L, item 5): the orchestrator image
//! (`images/orchestrator.Dockerfile`, built by `scripts/build-images.sh`)
//! against the engine here, on the host's network with the engine's socket,
//! a data volume and its admin token from a file; `deploy/compose.yaml`
//! (`docker-compose config`, and its orchestrator service brought up); and
//! `deploy/slotpack.service` (`systemd-analyze verify`). Docker parts are
//! required when CI=true, as docker-compose is; each test uses a deployment
//! name of its own and removes only what it made.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slotpack_tests::agent::free_ports;
use slotpack_tests::docker::{docker, pool_image, require_docker, Container, Deployment};
use slotpack_tests::http::{request, Response};
use slotpack_tests::{in_ci, uid_of_port, wait_for};

const LONG: Duration = Duration::from_secs(60);
/// Where the image's `serve` reads its token (a bind mount here, a secret
/// in the compose file).
const TOKEN_IN_CONTAINER: &str = "/run/secrets/slotpack-admin-token";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn orchestrator_image() -> String {
    std::env::var("SLOTPACK_ORCHESTRATOR_IMAGE")
        .unwrap_or_else(|_| "slotpack/orchestrator:latest".into())
}

/// Whether the engine, the pool image and the orchestrator image are there
/// (in CI they must be).
fn require_images(test: &str) -> bool {
    if !require_docker(test) {
        return false;
    }
    let there = Command::new("docker")
        .args(["image", "inspect", &orchestrator_image()])
        .output()
        .is_ok_and(|o| o.status.success());
    if !there {
        let why = format!(
            "image {} missing: run scripts/build-images.sh",
            orchestrator_image()
        );
        assert!(!in_ci(), "{test}: {why}; CI must run Docker tests");
        eprintln!("skipping {test}: {why}");
    }
    there
}

/// The engine's socket on this host (`DOCKER_HOST=unix://…` or the default).
fn docker_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into())
}

/// A folder of the test's own (the token file), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One deployment's settings: API and pool ports free on this host's
/// loopback (the container shares it), its own slot uids and names.
struct Site {
    deployment: String,
    api: String,
    base_port: u16,
    token: String,
}

impl Site {
    fn new(prefix: &str) -> Site {
        // The API port, one agent port below the slot ports, two slots.
        let first = free_ports(4);
        Site {
            deployment: format!("{prefix}-{}-{first}", std::process::id()),
            api: format!("127.0.0.1:{first}"),
            base_port: first + 2,
            token: format!("image-admin-{first}-{}", std::process::id()),
        }
    }

    fn call_as(&self, token: Option<&str>, method: &str, path: &str, body: &str) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        request(&self.api, method, path, &h, body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn call(&self, method: &str, path: &str, body: &str) -> Response {
        self.call_as(Some(&self.token), method, path, body)
    }

    /// `serve`'s settings, as `-e` pairs (the token comes from a file).
    fn env(&self) -> Vec<String> {
        [
            ("SLOTPACK_ADMIN_TOKEN_FILE", TOKEN_IN_CONTAINER.to_string()),
            ("SLOTPACK_DEPLOYMENT", self.deployment.clone()),
            ("SLOTPACK_LISTEN", self.api.clone()),
            ("POOL_BASE_PORT", self.base_port.to_string()),
            ("MAX_BOTS_PER_CONTAINER", "2".into()),
            ("SLOT_UID_BASE", uid_of_port(self.base_port).to_string()),
            ("HEALTH_CHECK_INTERVAL", "3600000".into()),
            ("SLOTPACK_POOL_IMAGE", pool_image()),
            ("SLOTPACK_POOL_MEMORY", "256m".into()),
            ("SLOTPACK_POOL_CPUS", "0.5".into()),
        ]
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
    }

    /// Wait for `/healthz`; panics with the container's log if `container`
    /// stops or a minute passes.
    fn wait_up(&self, container: &str) {
        let deadline = Instant::now() + LONG;
        let mut next_look = Instant::now();
        loop {
            let up = request(&self.api, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200);
            if up {
                return;
            }
            if Instant::now() >= next_look {
                let running = docker(&["inspect", "-f", "{{.State.Running}}", container]);
                let logs = || {
                    let o = Command::new("docker")
                        .args(["logs", container])
                        .output()
                        .expect("docker logs");
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                };
                assert_eq!(running, "true", "the orchestrator ended:\n{}", logs());
                assert!(
                    Instant::now() < deadline,
                    "the orchestrator did not answer on {} within a minute:\n{}",
                    self.api,
                    logs()
                );
                next_look = Instant::now() + Duration::from_secs(1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn tenant(id: &str) -> Value {
    json!({
        "id": id,
        "command": "/usr/local/bin/test-tenant",
        // HOST is 0.0.0.0 in a pool container (its ports are published).
        "args": ["--host", "${HOST}"],
        "resources": {"memoryMb": 64},
        "ping": {"kind": "http", "intervalMs": 200},
    })
}

/// `docker run` of the orchestrator image as its Dockerfile says: host
/// network, the engine's socket, the data volume, the token file.
fn run_orchestrator(site: &Site, data_volume: &str, token_file: &Path) -> Container {
    let socket = format!("{}:/var/run/docker.sock", docker_socket());
    let data = format!("{data_volume}:/var/lib/slotpack");
    let token = format!("{}:{TOKEN_IN_CONTAINER}:ro", token_file.display());
    let label = format!("slotpack.deployment={}", site.deployment);
    let name = format!("{}-orchestrator", site.deployment);
    let env = site.env();
    let mut args: Vec<&str> = vec![
        "--name",
        &name,
        "--label",
        &label,
        "--network",
        "host",
        "-v",
        &socket,
        "-v",
        &data,
        "-v",
        &token,
    ];
    for e in &env {
        args.extend(["-e", e.as_str()]);
    }
    let image = orchestrator_image();
    args.push(&image);
    Container::run(&args)
}

#[test]
fn the_orchestrator_image_serves_the_docker_backend_and_keeps_its_data() {
    if !require_images("orchestrator image") {
        return;
    }
    let site = Site::new("img");
    // Everything of this deployment goes on drop, whatever fails: the
    // orchestrator's container, its pools, their volumes and the data volume.
    let guard = Deployment(site.deployment.clone());
    let dir = TempDir::new("slotpack-image-test");
    let token_file = dir.0.join("admin-token");
    std::fs::write(&token_file, format!("{}\n", site.token)).unwrap();
    let data_volume = format!("{}-data", site.deployment);
    docker(&[
        "volume",
        "create",
        "--label",
        "managed-by=slotpack",
        "--label",
        &format!("slotpack.deployment={}", site.deployment),
        &data_volume,
    ]);

    let orch = run_orchestrator(&site, &data_volume, &token_file);
    site.wait_up(&orch.id);
    // The image: static slotpack FROM scratch, `serve` on the docker backend.
    assert_eq!(
        orch.inspect("{{json .Config.Entrypoint}} {{json .Config.Cmd}}"),
        r#"["/usr/local/bin/slotpack"] ["serve"]"#
    );
    assert!(orch
        .inspect("{{range .Config.Env}}{{.}} {{end}}")
        .contains("SLOTPACK_BACKEND=docker"));
    // The token is the file's, and required.
    assert_eq!(site.call_as(None, "GET", "/api/tenants", "").status, 401);
    assert_eq!(
        site.call_as(Some("not-the-token"), "GET", "/api/tenants", "")
            .status,
        401
    );

    // A tenant through the API: placed in a new pool container of this
    // deployment, labelled, and reached both directly and through the
    // orchestrator's proxy (from inside its container, on the host's
    // loopback).
    let r = site.call("POST", "/api/tenants", &tenant("img-1").to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let port = created["tenant"]["placement"]["port"].as_u64().unwrap() as u16;
    assert_eq!(port, site.base_port, "{created}");
    let pool = format!("{}-pool-1", site.deployment);
    assert_eq!(
        created["tenant"]["placement"]["containerName"], pool,
        "{created}"
    );
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{index .Config.Labels \"managed-by\"}} \
             {{index .Config.Labels \"slotpack.deployment\"}} {{index .Config.Labels \"slotpack.pool\"}}",
            &pool,
        ]),
        format!("true slotpack {} pool-1", site.deployment)
    );
    let pool_id = docker(&["inspect", "-f", "{{.Id}}", &pool]);
    let pong = || {
        wait_for(LONG, "img-1 answers on its port", || {
            request(
                &format!("127.0.0.1:{port}"),
                "GET",
                "/api/v1/ping",
                &[],
                b"",
            )
            .ok()
            .filter(|r| r.status == 200 && r.text().contains("pong"))
        });
        let r = site.call("GET", "/api/tenants/img-1/proxy/api/v1/ping", "");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("pong"), "{}", r.text());
        wait_for(LONG, "img-1 running and healthy", || {
            let t = site.call("GET", "/api/tenants/img-1", "").json();
            (t["tenant"]["state"] == "running" && t["tenant"]["healthy"] == true).then_some(())
        });
    };
    pong();
    let targets = site.call("GET", "/api/pool/metrics-targets", "").json();
    assert_eq!(
        targets[0]["targets"],
        json!([format!("127.0.0.1:{}", site.base_port - 1)]),
        "{targets}"
    );

    // A new orchestrator container on the same volume finds the tenant and
    // adopts the running pool (no new container, same port).
    drop(orch);
    let orch = run_orchestrator(&site, &data_volume, &token_file);
    site.wait_up(&orch.id);
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &pool]), pool_id);
    pong();

    // Clean-up through the API: the tenant, then its empty pool.
    assert_eq!(site.call("DELETE", "/api/tenants/img-1", "").status, 200);
    let r = site.call("POST", "/api/pool/cleanup", "").json();
    assert_eq!(r["removedPools"], 1, "{r}");
    wait_for(LONG, "the pool container removed", || {
        (!guard
            .ids("containers")
            .iter()
            .any(|id| pool_id.starts_with(id)))
        .then_some(())
    });
    // `docker stop` is a clean SIGTERM for `serve`.
    docker(&["stop", "-t", "30", &orch.id]);
    assert_eq!(orch.inspect("{{.State.ExitCode}}"), "0");
    drop(orch);
    let deployment = guard.0.clone();
    drop(guard);
    let left = Deployment(deployment);
    assert!(
        left.ids("containers").is_empty() && left.ids("volumes").is_empty(),
        "left: {:?} {:?}",
        left.ids("containers"),
        left.ids("volumes")
    );
}

/// `docker-compose` if it is installed (in CI it must be).
fn require_compose(test: &str) -> bool {
    let there = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !there {
        assert!(!in_ci(), "{test}: docker-compose missing; CI must run it");
        eprintln!("skipping {test}: docker-compose is not installed");
    }
    there
}

/// `docker-compose -p project -f deploy/compose.yaml args`, with `env`.
fn compose(project: &str, env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    Command::new("docker-compose")
        .arg("-p")
        .arg(project)
        .arg("-f")
        .arg(repo().join("deploy/compose.yaml"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run docker-compose")
}

/// Removes, by id, the containers and volumes of a compose project on drop.
struct Project(String);

impl Drop for Project {
    fn drop(&mut self) {
        let label = format!("label=com.docker.compose.project={}", self.0);
        let ids = |what: &[&str]| {
            Command::new("docker")
                .args(what)
                .args(["-q", "--filter", &label])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for id in ids(&["ps", "-a"]).lines() {
            let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
        }
        for v in ids(&["volume", "ls"]).lines() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

#[test]
fn the_compose_file_is_valid_and_its_orchestrator_serves() {
    if !require_compose("compose file") {
        return;
    }
    // `config` needs the orchestrator's build context, which
    // scripts/build-images.sh makes.
    let context = repo().join("target/images/orchestrator/slotpack");
    if !context.exists() {
        assert!(
            !in_ci(),
            "compose file: {} missing (scripts/build-images.sh); CI must run it",
            context.display()
        );
        eprintln!("skipping compose file: run scripts/build-images.sh");
        return;
    }
    let project = format!("slotpack-compose-test-{}", std::process::id());
    let out = compose(&project, &[], &["config", "-q"]);
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = compose(&project, &[], &["config", "--services"]);
    let mut services: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    services.sort();
    assert_eq!(services, ["grafana", "prometheus", "slotpack"]);
    let config = String::from_utf8_lossy(&compose(&project, &[], &["config"]).stdout).into_owned();
    assert_eq!(config.matches("network_mode: host").count(), 3, "{config}");
    assert!(
        config.contains("target: /etc/prometheus/slotpack-admin-token"),
        "{config}"
    );

    // Its orchestrator service, brought up as written (Prometheus and
    // Grafana cannot be pulled here), with a token file and a deployment of
    // the test's own.
    if !require_images("compose orchestrator") {
        return;
    }
    let site = Site::new("compose");
    let _guard = Deployment(site.deployment.clone());
    let _project = Project(project.clone());
    let dir = TempDir::new("slotpack-compose-test");
    let token_file = dir.0.join("admin-token");
    std::fs::write(&token_file, format!("{}\n", site.token)).unwrap();
    let env = [
        (
            "SLOTPACK_ADMIN_TOKEN_HOST_FILE",
            token_file.display().to_string(),
        ),
        ("SLOTPACK_LISTEN", site.api.clone()),
        ("SLOTPACK_DEPLOYMENT", site.deployment.clone()),
        ("POOL_BASE_PORT", site.base_port.to_string()),
        ("SLOT_UID_BASE", uid_of_port(site.base_port).to_string()),
        ("SLOTPACK_POOL_IMAGE", pool_image()),
        ("SLOTPACK_ORCHESTRATOR_IMAGE", orchestrator_image()),
    ];
    let out = compose(
        &project,
        &env,
        &["up", "-d", "--no-build", "--no-deps", "slotpack"],
    );
    assert!(
        out.status.success(),
        "docker-compose up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&compose(&project, &env, &["ps", "-q", "slotpack"]).stdout)
        .trim()
        .to_string();
    assert!(!id.is_empty(), "no slotpack container");
    site.wait_up(&id);
    assert_eq!(
        site.call_as(None, "GET", "/api/pool/status", "").status,
        401
    );
    let st = site.call("GET", "/api/pool/status", "");
    assert_eq!(st.status, 200, "{}", st.text());
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"managed-by\"}}",
            &id
        ]),
        "slotpack"
    );
    let out = compose(&project, &env, &["down", "-v"]);
    assert!(
        out.status.success(),
        "docker-compose down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let there = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !there {
        eprintln!("skipping the systemd unit check: no systemd-analyze");
        return;
    }
    let unit = std::fs::read_to_string(repo().join("deploy/slotpack.service")).unwrap();
    for want in [
        "KillMode=process",
        "Restart=on-failure",
        "Environment=SLOTPACK_DATA_DIR=/var/lib/slotpack",
        "LoadCredential=admin-token:",
        "--admin-token-file %d/admin-token",
    ] {
        assert!(unit.contains(want), "deploy/slotpack.service lacks {want}");
    }
    // `verify` wants the ExecStart binary to exist: the one built here
    // stands in for /usr/local/bin/slotpack.
    let dir = TempDir::new("slotpack-unit-test");
    let copy = dir.0.join("slotpack.service");
    let bin = slotpack_tests::bin("slotpack");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/slotpack", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("slotpack.service"),
        "systemd-analyze verify: {said}"
    );
}
