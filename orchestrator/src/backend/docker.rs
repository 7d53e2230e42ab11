//! The `docker` backend: each pool is a container of its class's image
//! (`SLOTPACK_POOL_IMAGE` for the default class) on the local engine, driven
//! through bollard. Any image can be a pool: the static slot-agent comes
//! from the volume `<deployment>-agent-<pool image id>`, filled from
//! `SLOTPACK_POOL_IMAGE`'s `/usr/local/bin` and mounted read-only at
//! `/opt/slotpack`, and is the container's entrypoint, run as root; the
//! image's environment reaches the programs (`--inherit-env`). Containers are named
//! `<deployment>-pool-N` and labelled `managed-by=slotpack`,
//! `slotpack.deployment=<deployment>` and `slotpack.pool=<id>`; they publish
//! the agent port and the slot ports on 127.0.0.1, have memory/CPU/PID
//! limits, the restart policy `unless-stopped`, and keep the agent's state
//! in the named volume `<deployment>-pool-N-state`. Everything it lists,
//! watches or cleans up is of its own deployment only, so several
//! deployments share one engine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};

mod agent_volume;

use super::engine::{
    agent_args, agent_env, ensure_tenants_volume, is_status, other, pool_labels, remove_volume,
    tenants_volume, wait_for_agent, AGENT_PORT, DEPLOYMENT_LABEL, MANAGED_BY, POOL_LABEL,
    TENANTS_DIR,
};
use super::PoolSpec;
use super::{Backend, BackendError, FoundPool};
use crate::db::{pool_id, pool_number};

/// Where pool containers see the agent volume.
pub const AGENT_DIR: &str = "/opt/slotpack";

/// Pools as containers.
pub struct DockerBackend {
    docker: Docker,
    deployment: String,
    image: String,
    /// Volume holding the static agent (see the module doc).
    agent_volume: String,
    /// The engine's CPUs in millicores: the most a container may get.
    engine_millis: u64,
    pids_limit: i64,
    env: Vec<(String, String)>,
}

/// Whether a container with `labels` belongs to `deployment`. Containers
/// made before deployments were named carry no such label and belong to
/// the default one.
fn of_deployment(labels: Option<&HashMap<String, String>>, deployment: &str) -> bool {
    match labels.and_then(|l| l.get(DEPLOYMENT_LABEL)) {
        Some(d) => d == deployment,
        None => deployment == crate::config::DEFAULT_DEPLOYMENT,
    }
}

impl DockerBackend {
    /// Connect to the local engine and check that `image` exists; pools
    /// belong to `deployment`.
    pub async fn connect(
        deployment: &str,
        image: &str,
        pids_limit: i64,
        env: Vec<(String, String)>,
    ) -> Result<Self, BackendError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| other(format!("docker engine: {e}")))?
            .negotiate_version()
            .await
            .map_err(|e| other(format!("docker engine: {e}")))?;
        let pool_image = docker.inspect_image(image).await.map_err(|e| {
            other(format!(
                "pool image {image}: {e} (build it with scripts/build-images.sh)"
            ))
        })?;
        // Docker refuses a CPU limit above the engine's CPUs; placement may
        // still count a larger capacity (oversubscription).
        let engine_cpus = docker
            .info()
            .await
            .ok()
            .and_then(|i| i.ncpu)
            .unwrap_or(1)
            .max(1) as u64;
        let image_id = pool_image.id.unwrap_or_default();
        let short: String = image_id
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        let backend = Self {
            docker,
            deployment: deployment.to_string(),
            image: image.to_string(),
            agent_volume: format!("{deployment}-agent-{short}"),
            engine_millis: engine_cpus * 1000,
            pids_limit,
            env,
        };
        backend.drop_stale_agent_volumes().await;
        Ok(backend)
    }

    /// Remove a container by name with its anonymous volumes (the pool
    /// image's `/pool`), if it is there.
    pub(super) async fn force_remove(&self, name: &str) -> Result<(), bollard::errors::Error> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(name, Some(opts)).await {
            Err(e) if !is_status(&e, 404) => Err(e),
            _ => Ok(()),
        }
    }

    fn name(&self, id: &str) -> String {
        super::container_name(&self.deployment, id)
    }

    fn volume(&self, id: &str) -> String {
        format!("{}-state", self.name(id))
    }

    fn labels(&self, id: &str) -> HashMap<String, String> {
        pool_labels(&self.deployment, id)
    }

    /// Whether labels are of this deployment.
    fn ours(&self, labels: Option<&HashMap<String, String>>) -> bool {
        of_deployment(labels, &self.deployment)
    }

    async fn create(&self, pool: &PoolSpec) -> Result<(), BackendError> {
        let id = pool.id.to_string();
        self.ensure_agent_volume(&id).await?;
        ensure_tenants_volume(&self.docker, &self.deployment).await?;
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(self.volume(&id)),
                labels: Some(self.labels(&id)),
                ..Default::default()
            })
            .await
            .map_err(other)?;
        let local = |port: u16| {
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(port.to_string()),
            }])
        };
        let mut exposed = Vec::new();
        let mut bindings = HashMap::new();
        exposed.push(format!("{AGENT_PORT}/tcp"));
        bindings.insert(format!("{AGENT_PORT}/tcp"), local(pool.agent_port));
        for slot in 0..pool.slots {
            let port = pool.base_port + slot as u16;
            exposed.push(format!("{port}/tcp"));
            bindings.insert(format!("{port}/tcp"), local(port));
        }
        let env = agent_env(&self.env, pool);
        let cmd = agent_args(pool);
        let cpu_millis = pool.cpu_millis.min(self.engine_millis);
        let config = ContainerCreateBody {
            image: Some(pool.image.clone().unwrap_or_else(|| self.image.clone())),
            entrypoint: Some(vec![format!("{AGENT_DIR}/slot-agent")]),
            // Root, whatever the image's USER: the agent gives each slot its
            // own user.
            user: Some("0:0".into()),
            working_dir: Some("/".into()),
            cmd: Some(cmd),
            env: Some(env),
            labels: Some(self.labels(&id)),
            exposed_ports: Some(exposed),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                binds: Some(vec![
                    format!("{}:/pool", self.volume(&id)),
                    format!("{}:{AGENT_DIR}:ro,nocopy", self.agent_volume),
                    format!("{}:{TENANTS_DIR}", tenants_volume(&self.deployment)),
                ]),
                memory: Some((pool.memory_mb << 20) as i64),
                nano_cpus: Some((cpu_millis * 1_000_000) as i64),
                pids_limit: Some(self.pids_limit),
                // The slot sandbox (see ARCHITECTURE.md, threat model): the
                // agent makes per-slot cgroups in a cgroup namespace of the
                // pool's own, and per-slot mounts, IPC namespaces and
                // Landlock rulesets; it needs CAP_SYS_ADMIN for that, and
                // Docker's default seccomp profile predates Landlock. No
                // slot keeps any of it: slots drop every capability, run
                // as their own uid with no_new_privs.
                cap_add: Some(vec!["SYS_ADMIN".into()]),
                cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
                security_opt: Some(vec![
                    "seccomp=unconfined".into(),
                    "apparmor=unconfined".into(),
                ]),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(self.name(&pool.id.to_string())),
                    ..Default::default()
                }),
                config,
            )
            .await
            .map_err(other)?;
        Ok(())
    }

    async fn start(&self, pool: &PoolSpec) -> Result<String, BackendError> {
        let name = self.name(&pool.id.to_string());
        let err = |reason: String| BackendError::Start {
            pool: pool.id.to_string(),
            reason,
        };
        let running = match self.docker.inspect_container(&name, None).await {
            Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
            Err(e) if is_status(&e, 404) => {
                self.create(pool).await.map_err(|e| err(e.to_string()))?;
                false
            }
            Err(e) => return Err(err(e.to_string())),
        };
        if !running {
            self.docker
                .start_container(&name, None)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        wait_for_agent(self.agent_addr(pool), Duration::from_secs(30), || async {
            None
        })
        .await
        .map_err(err)?;
        let c = self
            .docker
            .inspect_container(&name, None)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(c.id.unwrap_or(name))
    }

    /// Remove the pool's container and volume; idempotent, also while a
    /// concurrent removal (409 "already in progress") is under way.
    async fn remove_by_pool_id(&self, id: &str) -> Result<(), BackendError> {
        let name = self.name(id);
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(&name, Some(opts)).await {
            Err(e) if is_status(&e, 409) => {
                let deadline = Instant::now() + Duration::from_secs(30);
                while self.docker.inspect_container(&name, None).await.is_ok() {
                    if Instant::now() > deadline {
                        return Err(other(format!("{name} is still being removed")));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err(e) if !is_status(&e, 404) => return Err(other(e)),
            _ => {}
        }
        // The volume may still be in use for a moment by a container being removed.
        remove_volume(&self.docker, &self.volume(id)).await
    }

    /// Pool ids of our containers that die or are removed, as they happen.
    fn death_events(&self) -> BoxStream<'static, super::PoolId> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)],
            ),
            (
                "event".to_string(),
                vec!["die".to_string(), "destroy".to_string()],
            ),
        ]);
        let opts = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let deployment = self.deployment.clone();
        self.docker
            .events(Some(opts))
            .filter_map(move |ev| {
                let deployment = deployment.clone();
                async move {
                    let attrs = ev.ok()?.actor?.attributes?;
                    of_deployment(Some(&attrs), &deployment)
                        .then(|| attrs.get(POOL_LABEL)?.parse().ok())
                        .flatten()
                }
            })
            .boxed()
    }
}

impl Backend for DockerBackend {
    fn kind(&self) -> super::BackendKind {
        super::BackendKind::Docker
    }

    fn container_name(&self, pool: &PoolSpec) -> String {
        self.name(&pool.id.to_string())
    }

    fn deaths(&self) -> Option<BoxStream<'static, super::PoolId>> {
        Some(self.death_events())
    }

    fn agent_addr(&self, pool: &PoolSpec) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], pool.agent_port))
    }

    fn start_pool<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, Result<String, BackendError>> {
        self.start(pool).boxed()
    }

    fn pool_running<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, bool> {
        async move {
            self.docker
                .inspect_container(&self.name(&pool.id.to_string()), None)
                .await
                .ok()
                .and_then(|c| c.state?.running)
                .unwrap_or(false)
        }
        .boxed()
    }

    fn remove_pool<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            // Give the agent its SIGTERM and the programs their stop time first.
            let _ = self
                .docker
                .stop_container(
                    &self.name(&pool.id.to_string()),
                    Some(StopContainerOptions {
                        t: Some(30),
                        ..Default::default()
                    }),
                )
                .await;
            if pool.state_holds_homes {
                // Nothing implicit: its state volume may hold tenant homes.
                tracing::warn!(pool = %pool.id, volume = %self.volume(&pool.id.to_string()),
                    "kept the state volume of a pool of an older slotpack (it may hold tenant homes)");
                let opts = RemoveContainerOptions {
                    force: true,
                    v: false,
                    ..Default::default()
                };
                return match self
                    .docker
                    .remove_container(&self.name(&pool.id.to_string()), Some(opts))
                    .await
                {
                    Err(e) if !is_status(&e, 404) && !is_status(&e, 409) => Err(other(e)),
                    _ => Ok(()),
                };
            }
            self.remove_by_pool_id(&pool.id.to_string()).await
        }
        .boxed()
    }

    fn recreate_pool<'a>(
        &'a self,
        pool: &'a PoolSpec,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        async move {
            let name = self.name(&pool.id.to_string());
            let _ = self
                .docker
                .stop_container(
                    &name,
                    Some(StopContainerOptions {
                        t: Some(30),
                        ..Default::default()
                    }),
                )
                .await;
            // The container only: its state volume and the tenants' data stay.
            let opts = RemoveContainerOptions {
                force: true,
                v: false,
                ..Default::default()
            };
            match self.docker.remove_container(&name, Some(opts)).await {
                Err(e) if !is_status(&e, 404) && !is_status(&e, 409) => return Err(other(e)),
                _ => {}
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.docker.inspect_container(&name, None).await.is_ok() {
                if Instant::now() > deadline {
                    return Err(other(format!("{name} is still being removed")));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.start(pool).await
        }
        .boxed()
    }

    fn check_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            self.docker
                .inspect_image(image)
                .await
                .map(|_| ())
                .map_err(|e| {
                    other(format!(
                    "image {image} is not on the engine ({e}); build, load or pull it there first"
                ))
                })
        }
        .boxed()
    }

    fn found_pools(&self) -> BoxFuture<'_, Result<Vec<FoundPool>, BackendError>> {
        async move {
            let filters = HashMap::from([(
                "label".to_string(),
                vec![
                    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1),
                    POOL_LABEL.to_string(),
                ],
            )]);
            let list = self
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters),
                    ..Default::default()
                }))
                .await
                .map_err(other)?;
            Ok(list
                .into_iter()
                .filter(|c| self.ours(c.labels.as_ref()))
                .map(|c| FoundPool {
                    number: c
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(POOL_LABEL))
                        .and_then(|p| pool_number(p)),
                    backend_ref: c.id.unwrap_or_default(),
                })
                .collect())
        }
        .boxed()
    }

    fn remove_found<'a>(&'a self, found: &'a FoundPool) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            match found.number {
                Some(n) => self.remove_by_pool_id(&pool_id(n)).await,
                None => {
                    let opts = RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    };
                    self.docker
                        .remove_container(&found.backend_ref, Some(opts))
                        .await
                        .map_err(other)
                }
            }
        }
        .boxed()
    }
}
