//! Containers on the local Docker engine, through the `docker` CLI. Every
//! container is labelled `managed-by=slotpack` and removed by id on drop.

use std::process::Command;

/// The pool image the tests use.
pub fn pool_image() -> String {
    std::env::var("SLOTPACK_POOL_IMAGE").unwrap_or_else(|_| "slotpack/pool:latest".into())
}

/// Run `docker args`, returning stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether Docker tests can run: the engine answers and the pool image
/// exists. In CI a missing engine or image fails the test instead.
pub fn require_docker(test: &str) -> bool {
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    let image = engine
        && Command::new("docker")
            .args(["image", "inspect", &pool_image()])
            .output()
            .is_ok_and(|o| o.status.success());
    if engine && image {
        return true;
    }
    let why = if engine {
        format!(
            "image {} missing: run scripts/build-images.sh",
            pool_image()
        )
    } else {
        "no Docker engine".to_string()
    };
    assert!(!crate::in_ci(), "{test}: {why}; CI must run Docker tests");
    eprintln!("skipping {test}: {why}");
    false
}

/// A container we started; force-removed (with its volumes) on drop.
pub struct Container {
    /// Container id.
    pub id: String,
}

impl Container {
    /// `docker run -d --label managed-by=slotpack <args>`.
    pub fn run(args: &[&str]) -> Container {
        let mut all = vec![
            "run",
            "-d",
            "--label",
            "managed-by=slotpack",
            "--label",
            "slotpack.test=true",
        ];
        all.extend_from_slice(args);
        Container { id: docker(&all) }
    }

    /// `docker inspect -f <format>` of this container.
    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "-f", format, &self.id])
    }

    /// The host address published for a container port, e.g. `127.0.0.1:32768`.
    pub fn published(&self, port: &str) -> String {
        let out = docker(&["port", &self.id, port]);
        out.lines().next().unwrap_or_default().trim().to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .output();
    }
}

/// The runtime image of the Python tests (scripts/build-python-image.sh):
/// Debian with Python and a small web app in /app; not slotpack's.
pub const PYTHON_IMAGE: &str = "slotpack-test/python:bookworm";

/// Whether the Python runtime image is there (see [`require_docker`]; in CI
/// a missing image fails the test).
pub fn require_python_image(test: &str) -> bool {
    if !require_docker(test) {
        return false;
    }
    let there = Command::new("docker")
        .args(["image", "inspect", PYTHON_IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !there {
        let why = format!("image {PYTHON_IMAGE} missing: run scripts/build-python-image.sh");
        assert!(!crate::in_ci(), "{test}: {why}; CI must run Docker tests");
        eprintln!("skipping {test}: {why}");
    }
    there
}

/// Wait until the container `name` answers `GET /api/v1/ping` on the host
/// port published for its `port` (e.g. `8080/tcp`); panics after a minute.
pub fn wait_ping(name: &str, port: &str) {
    let addr = docker(&["port", name, port])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    crate::wait_for(
        std::time::Duration::from_secs(60),
        &format!("{name} answers"),
        || {
            crate::http::request(&addr, "GET", "/api/v1/ping", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        },
    );
}

/// Removes, by id, the containers and volumes of a deployment on drop (the
/// test's own deployment, `SLOTPACK_DEPLOYMENT`).
pub struct Deployment(pub String);

impl Deployment {
    /// Ids of the deployment's containers (`what` = `containers`) or volumes.
    pub fn ids(&self, what: &str) -> Vec<String> {
        let label = format!("label=slotpack.deployment={}", self.0);
        let out = match what {
            "containers" => docker(&[
                "ps",
                "-aq",
                "--filter",
                "label=managed-by=slotpack",
                "--filter",
                &label,
            ]),
            _ => docker(&[
                "volume",
                "ls",
                "-q",
                "--filter",
                "label=managed-by=slotpack",
                "--filter",
                &label,
            ]),
        };
        out.lines().map(str::to_string).collect()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Swarm services first (their tasks would come back), where the
        // engine is in a swarm; then what is left.
        let label = format!("label=slotpack.deployment={}", self.0);
        let services = Command::new("docker")
            .args(["service", "ls", "-q", "--filter", &label])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in services.lines() {
            let _ = Command::new("docker").args(["service", "rm", id]).output();
        }
        if !services.trim().is_empty() {
            crate::wait_for(
                std::time::Duration::from_secs(60),
                "the services' tasks are gone",
                || self.ids("containers").is_empty().then_some(()),
            );
        }
        for id in self.ids("containers") {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", &id])
                .output();
        }
        for v in self.ids("volumes") {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", &v])
                .output();
        }
    }
}

/// The image of a second Docker node (`scripts/build-node-image.sh`).
pub const NODE_IMAGE: &str = "slotpack-test/node:bookworm";

/// A swarm for a test: the engine makes a fresh one (`docker swarm init`,
/// which works offline) advertised on the `docker0` bridge, so that a
/// worker node in a container can join it; on drop the worker goes, the
/// engine leaves the swarm, and the `docker_gwbridge` network and the
/// worker's cgroups go too. Refuses an engine that is in a swarm already
/// (someone else's).
pub struct Swarm {
    bridge_made: bool,
    /// The worker node, if one was asked for.
    pub worker: Option<Worker>,
}

/// A second Docker engine in a container of ours (Debian's docker.io,
/// vfs storage, its own cgroup parent), joined as a swarm worker with the
/// pool image loaded.
pub struct Worker {
    /// Its container's id.
    pub container: String,
    /// Its swarm node id.
    pub node: String,
    /// Its address (on the `docker0` bridge).
    pub addr: String,
    cgroup: String,
}

/// The address of the `docker0` bridge on this host.
fn bridge_addr() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .expect("ip addr");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no docker0 address: {text}"))
        .to_string()
}

impl Swarm {
    /// A fresh single-node swarm (this engine, a manager).
    pub fn join() -> Swarm {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        assert_ne!(
            state, "active",
            "the engine is in a swarm already: not ours to use"
        );
        let had_bridge = Command::new("docker")
            .args(["network", "inspect", "docker_gwbridge"])
            .output()
            .is_ok_and(|o| o.status.success());
        docker(&["swarm", "init", "--advertise-addr", &bridge_addr()]);
        Swarm {
            // Made lazily by the engine once a task publishes a port.
            bridge_made: !had_bridge,
            worker: None,
        }
    }

    /// A fresh swarm of this engine and one worker node named `name`.
    pub fn with_worker(name: &str) -> Swarm {
        let mut swarm = Swarm::join();
        let cgroup = format!("slotpack-{name}");
        let container = docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "managed-by=slotpack",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "NET_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            NODE_IMAGE,
            "dockerd",
            "--host=unix:///var/run/docker.sock",
            "--storage-driver=vfs",
            &format!("--cgroup-parent=/{cgroup}"),
        ]);
        let addr = docker(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            &container,
        ]);
        swarm.worker = Some(Worker {
            container: container.clone(),
            node: String::new(),
            addr,
            cgroup,
        });
        crate::wait_for(
            std::time::Duration::from_secs(30),
            "the worker's dockerd",
            || {
                Command::new("docker")
                    .args(["exec", &container, "docker", "info"])
                    .output()
                    .is_ok_and(|o| o.status.success())
                    .then_some(())
            },
        );
        // No registry: the worker gets the pool image from this engine.
        let loaded = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {} | docker exec -i {container} docker load",
                pool_image()
            ))
            .output()
            .expect("docker save | load");
        assert!(loaded.status.success(), "{loaded:?}");
        let token = docker(&["swarm", "join-token", "-q", "worker"]);
        let manager = format!("{}:2377", bridge_addr());
        docker(&[
            "exec", &container, "docker", "swarm", "join", "--token", &token, &manager,
        ]);
        let node = docker(&[
            "exec",
            &container,
            "docker",
            "info",
            "--format",
            "{{.Swarm.NodeID}}",
        ]);
        crate::wait_for(
            std::time::Duration::from_secs(30),
            "the worker is ready",
            || {
                (docker(&["node", "inspect", "-f", "{{.Status.State}}", &node]) == "ready")
                    .then_some(())
            },
        );
        if let Some(w) = swarm.worker.as_mut() {
            w.node = node;
        }
        swarm
    }

    /// This engine's node id.
    pub fn node(&self) -> String {
        docker(&["info", "--format", "{{.Swarm.NodeID}}"])
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if let Some(w) = &self.worker {
            // Its dockerd and everything it ran end with the container.
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", &w.container])
                .output();
            // The cgroups its engine made below its own parent.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "find /sys/fs/cgroup/*/{} -depth -type d -exec rmdir {{}} + 2>/dev/null",
                    w.cgroup
                ))
                .output();
        }
        let _ = Command::new("docker")
            .args(["swarm", "leave", "--force"])
            .output();
        if self.bridge_made {
            // In use for a moment after leaving.
            let removed = || {
                let gone = Command::new("docker")
                    .args(["network", "inspect", "docker_gwbridge"])
                    .output()
                    .is_ok_and(|o| !o.status.success());
                let _ = Command::new("docker")
                    .args(["network", "rm", "docker_gwbridge"])
                    .output();
                gone.then_some(())
            };
            let _ = std::panic::catch_unwind(|| {
                crate::wait_for(
                    std::time::Duration::from_secs(30),
                    "docker_gwbridge removed",
                    removed,
                )
            });
        }
    }
}

/// Whether the worker-node image exists (in CI it must).
pub fn require_node_image(test: &str) -> bool {
    let there = Command::new("docker")
        .args(["image", "inspect", NODE_IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !there {
        assert!(
            !crate::in_ci(),
            "{test}: image {NODE_IMAGE} missing (scripts/build-node-image.sh); CI must run it"
        );
        eprintln!("skipping {test}: run scripts/build-node-image.sh");
    }
    there
}
