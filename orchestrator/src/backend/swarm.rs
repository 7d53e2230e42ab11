//! The `swarm` backend: each pool is a Docker Swarm service of one replica
//! (`<deployment>-pool-N`) pinned to the node slotpack chose
//! (`node.id==…`; see `nodes::choose`), so bin-packing stays slotpack's and
//! running, restarting and reporting stay Swarm's. The agent port and the
//! slot ports are published in `host` mode on that node, the agent's state
//! is in the node-local volume `<deployment>-pool-N-state`, and services
//! and their containers carry the same labels as the docker backend's
//! (`managed-by=slotpack`, `slotpack.deployment`, `slotpack.pool`).
//!
//! slotpack talks to one manager's engine. Pools run `SLOTPACK_POOL_IMAGE`
//! (class images are refused for now), which every node must have (no
//! registry is assumed).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, Limit, LocalNodeState, Mount, MountType, MountVolumeOptions,
    NodeSpecAvailabilityEnum, NodeState, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecPrivileges,
    TaskSpecContainerSpecPrivilegesAppArmor, TaskSpecContainerSpecPrivilegesAppArmorModeEnum,
    TaskSpecContainerSpecPrivilegesSeccomp, TaskSpecContainerSpecPrivilegesSeccompModeEnum,
    TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListContainersOptions, ListNodesOptions, ListServicesOptions, ListTasksOptions,
};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::engine::{
    agent_args, agent_env, is_status, other, pool_labels, remove_volume, tenants_volume,
    wait_for_agent, AGENT_PORT, DEPLOYMENT_LABEL, MANAGED_BY, POOL_LABEL, TENANTS_DIR,
};
use super::PoolSpec;
use super::{Backend, BackendError, FoundPool};
use crate::db::pool_number;
use crate::nodes::{Availability, Node};

/// How long a pool's agent may take to answer after its service is made
/// (Swarm schedules, then the node's engine starts the task).
const START_WAIT: Duration = Duration::from_secs(60);

/// Pools as Swarm services.
pub struct SwarmBackend {
    docker: Docker,
    deployment: String,
    image: String,
    pids_limit: i64,
    env: Vec<(String, String)>,
    /// The node of the manager slotpack talks to.
    self_node: String,
    /// The cluster's nodes as last read.
    nodes: RwLock<Vec<Node>>,
}

/// A node as placement sees it, from the engine's description.
fn node_of(n: bollard::models::Node) -> Option<Node> {
    let id = n.id?;
    let spec = n.spec.unwrap_or_default();
    let resources = n.description.and_then(|d| d.resources).unwrap_or_default();
    let status = n.status.unwrap_or_default();
    // A manager may report 0.0.0.0; its manager address names it then.
    let addr = status
        .addr
        .filter(|a| a != "0.0.0.0" && !a.is_empty())
        .or_else(|| {
            let m = n.manager_status?.addr?;
            Some(m.rsplit_once(':').map_or(m.clone(), |(h, _)| h.to_string()))
        })
        .unwrap_or_else(|| "127.0.0.1".into());
    Some(Node {
        id,
        addr,
        cpu_millis: resources.nano_cpus.unwrap_or(0).max(0) as u64 / 1_000_000,
        memory_mb: resources.memory_bytes.unwrap_or(0).max(0) as u64 >> 20,
        labels: spec.labels.unwrap_or_default().into_iter().collect(),
        ready: status.state == Some(NodeState::READY),
        availability: match spec.availability {
            Some(NodeSpecAvailabilityEnum::PAUSE) => Availability::Pause,
            Some(NodeSpecAvailabilityEnum::DRAIN) => Availability::Drain,
            _ => Availability::Active,
        },
    })
}

impl SwarmBackend {
    /// Connect to the local engine, which must be a Swarm manager, and
    /// check that `image` exists; pools belong to `deployment`.
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
        docker.inspect_image(image).await.map_err(|e| {
            other(format!(
                "pool image {image}: {e} (build it with scripts/build-images.sh on every node)"
            ))
        })?;
        let swarm = docker
            .info()
            .await
            .map_err(other)?
            .swarm
            .unwrap_or_default();
        if swarm.local_node_state != Some(LocalNodeState::ACTIVE) {
            return Err(other(
                "the engine is not part of a swarm: run `docker swarm init` (or join one as a manager)",
            ));
        }
        if swarm.control_available != Some(true) {
            return Err(other(
                "this engine is a swarm worker: slotpack needs a manager's engine",
            ));
        }
        let backend = Self {
            docker,
            deployment: deployment.to_string(),
            image: image.to_string(),
            pids_limit,
            env,
            self_node: swarm.node_id.unwrap_or_default(),
            nodes: RwLock::new(Vec::new()),
        };
        backend.refresh().await?;
        Ok(backend)
    }

    async fn refresh(&self) -> Result<(), BackendError> {
        let list = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|e| other(format!("listing nodes: {e}")))?;
        let nodes: Vec<Node> = list.into_iter().filter_map(node_of).collect();
        *self.nodes.write().unwrap_or_else(|e| e.into_inner()) = nodes;
        Ok(())
    }

    /// The address of `node` (this manager's, if unknown).
    fn addr_of(&self, node: Option<&str>) -> IpAddr {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let find = |id: &str| nodes.iter().find(|n| n.id == id);
        node.and_then(find)
            .or_else(|| find(&self.self_node))
            .and_then(|n| n.addr.parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
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

    /// The service of `pool`: one replica of the pool image on its node.
    fn spec(&self, pool: &PoolSpec) -> Result<ServiceSpec, BackendError> {
        let id = pool.id.to_string();
        let node = pool
            .node
            .clone()
            .ok_or_else(|| other(format!("{id} has no node")))?;
        let node_millis = {
            let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
            nodes
                .iter()
                .find(|n| n.id == node)
                .map_or(pool.cpu_millis, |n| n.cpu_millis.max(1))
        };
        let host = |target: u16, published: u16| EndpointPortConfig {
            protocol: Some(EndpointPortConfigProtocolEnum::TCP),
            target_port: Some(i64::from(target)),
            published_port: Some(i64::from(published)),
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            ..Default::default()
        };
        let mut ports = vec![host(AGENT_PORT, pool.agent_port)];
        for slot in 0..pool.slots {
            let port = pool.base_port + slot as u16;
            ports.push(host(port, port));
        }
        let env = agent_env(&self.env, pool);
        let args = agent_args(pool);
        let seconds = |s: i64| s * 1_000_000_000;
        Ok(ServiceSpec {
            name: Some(self.name(&id)),
            labels: Some(self.labels(&id)),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.image.clone()),
                    labels: Some(self.labels(&id)),
                    args: Some(args),
                    env: Some(env),
                    // Root, whatever the image's USER: the agent gives each
                    // slot its own user.
                    user: Some("0:0".into()),
                    dir: Some("/".into()),
                    mounts: Some(vec![
                        Mount {
                            target: Some("/pool".into()),
                            source: Some(self.volume(&id)),
                            typ: Some(MountType::VOLUME),
                            volume_options: Some(MountVolumeOptions {
                                labels: Some(self.labels(&id)),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Mount {
                            // The deployment's tenant data on that node (see
                            // `engine::tenants_volume`): made on first use.
                            target: Some(TENANTS_DIR.into()),
                            source: Some(tenants_volume(&self.deployment)),
                            typ: Some(MountType::VOLUME),
                            volume_options: Some(MountVolumeOptions {
                                labels: Some(HashMap::from([
                                    (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                                    (DEPLOYMENT_LABEL.to_string(), self.deployment.clone()),
                                    ("slotpack.role".to_string(), "tenants".to_string()),
                                ])),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    // The agent stops its programs, each within its stop timeout.
                    stop_grace_period: Some(seconds(30)),
                    // What the agent needs for its slot sandboxes (see
                    // ARCHITECTURE.md): engines before API 1.44 ignore the
                    // seccomp and AppArmor modes, and the sandbox then
                    // reports what it could not set up.
                    capability_add: Some(vec!["CAP_SYS_ADMIN".into()]),
                    privileges: Some(TaskSpecContainerSpecPrivileges {
                        seccomp: Some(TaskSpecContainerSpecPrivilegesSeccomp {
                            mode: Some(TaskSpecContainerSpecPrivilegesSeccompModeEnum::UNCONFINED),
                            ..Default::default()
                        }),
                        app_armor: Some(TaskSpecContainerSpecPrivilegesAppArmor {
                            mode: Some(TaskSpecContainerSpecPrivilegesAppArmorModeEnum::DISABLED),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: Some((pool.cpu_millis.min(node_millis) * 1_000_000) as i64),
                        memory_bytes: Some((pool.memory_mb << 20) as i64),
                        pids: Some(self.pids_limit),
                    }),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(seconds(1)),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(vec![format!("node.id=={node}")]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Whether the service named `name` has a task running.
    async fn task_running(&self, name: &str) -> bool {
        let filters = HashMap::from([
            ("service".to_string(), vec![name.to_string()]),
            ("desired-state".to_string(), vec!["running".to_string()]),
        ]);
        let tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .unwrap_or_default();
        tasks
            .iter()
            .any(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
    }

    async fn start(&self, pool: &PoolSpec) -> Result<String, BackendError> {
        let name = self.name(&pool.id.to_string());
        let err = |reason: String| BackendError::Start {
            pool: pool.id.to_string(),
            reason,
        };
        let service_id = match self.docker.inspect_service(&name, None).await {
            Ok(s) => {
                // Swarm restarts the task itself; if its node is gone, no
                // wait helps: the pool must move (see `nodes::must_leave`).
                if let Some(why) = self.node_unfit(pool).await {
                    return Err(err(why));
                }
                s.id.unwrap_or_else(|| name.clone())
            }
            Err(e) if is_status(&e, 404) => {
                let spec = self.spec(pool).map_err(|e| err(e.to_string()))?;
                let made = self
                    .docker
                    .create_service(spec, None)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                made.id.unwrap_or_else(|| name.clone())
            }
            Err(e) => return Err(err(e.to_string())),
        };
        // A node lost while we wait ends the wait.
        wait_for_agent(self.agent_addr(pool), START_WAIT, || self.node_unfit(pool))
            .await
            .map_err(err)?;
        Ok(service_id)
    }

    /// Why `pool`'s node can run nothing now (down, gone or drained), as
    /// the engine says at this moment; `None` if it can.
    async fn node_unfit(&self, pool: &PoolSpec) -> Option<String> {
        let node = pool.node.as_deref()?;
        match self.docker.inspect_node(node).await {
            Err(e) if is_status(&e, 404) => Some(format!("node {node} left the swarm")),
            Err(_) => None,
            Ok(n) => {
                let n = node_of(n)?;
                if !n.ready {
                    Some(format!("node {node} is down"))
                } else if n.availability == Availability::Drain {
                    Some(format!("node {node} is drained"))
                } else {
                    None
                }
            }
        }
    }

    /// Remove the pool's service, wait for its container to go from this
    /// engine, and remove its volume when it is on this node (a volume on
    /// another node stays; it carries the labels).
    async fn remove_by_pool_id(&self, id: &str, node: Option<&str>) -> Result<(), BackendError> {
        if self.remove_service(id, node).await? {
            remove_volume(&self.docker, &self.volume(id)).await?;
        }
        Ok(())
    }

    /// Remove pool `id`'s service and, on this node, wait for its tasks
    /// to go; whether it is on this node.
    async fn remove_service(&self, id: &str, node: Option<&str>) -> Result<bool, BackendError> {
        let name = self.name(id);
        match self.docker.delete_service(&name).await {
            Err(e) if !is_status(&e, 404) => return Err(other(e)),
            _ => {}
        }
        if node.is_some_and(|n| n != self.self_node) {
            return Ok(false);
        }
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("com.docker.swarm.service.name={name}")],
        )]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = self
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters.clone()),
                    ..Default::default()
                }))
                .await
                .map_err(other)?;
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(other(format!(
                    "the tasks of {name} are still being removed"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(true)
    }
}

impl Backend for SwarmBackend {
    fn kind(&self) -> super::BackendKind {
        super::BackendKind::Swarm
    }

    fn container_name(&self, pool: &PoolSpec) -> String {
        self.name(&pool.id.to_string())
    }

    fn agent_addr(&self, pool: &PoolSpec) -> SocketAddr {
        SocketAddr::new(self.addr_of(pool.node.as_deref()), pool.agent_port)
    }

    fn start_pool<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, Result<String, BackendError>> {
        self.start(pool).boxed()
    }

    fn pool_running<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, bool> {
        async move { self.task_running(&self.name(&pool.id.to_string())).await }.boxed()
    }

    fn remove_pool<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            if pool.state_holds_homes {
                // Nothing implicit: its state volume may hold tenant homes.
                tracing::warn!(pool = %pool.id, "kept the state volume of a pool of an older slotpack (it may hold tenant homes)");
                return self
                    .remove_service(&pool.id.to_string(), pool.node.as_deref())
                    .await
                    .map(|_| ());
            }
            self.remove_by_pool_id(&pool.id.to_string(), pool.node.as_deref())
                .await
        }
        .boxed()
    }

    fn recreate_pool<'a>(
        &'a self,
        pool: &'a PoolSpec,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        async move {
            // The service goes (the task's SIGTERM stops the programs); its
            // node-local state volume stays for the new service.
            self.remove_service(&pool.id.to_string(), pool.node.as_deref())
                .await?;
            self.start_pool(pool).await
        }
        .boxed()
    }

    fn found_pools(&self) -> BoxFuture<'_, Result<Vec<FoundPool>, BackendError>> {
        async move {
            let filters = HashMap::from([(
                "label".to_string(),
                vec![format!("{DEPLOYMENT_LABEL}={}", self.deployment)],
            )]);
            let list = self
                .docker
                .list_services(Some(ListServicesOptions {
                    filters: Some(filters),
                    ..Default::default()
                }))
                .await
                .map_err(other)?;
            Ok(list
                .into_iter()
                .filter_map(|s| {
                    let labels = s.spec.as_ref()?.labels.as_ref()?;
                    let number = labels.get(POOL_LABEL).and_then(|p| pool_number(p));
                    Some(FoundPool {
                        number,
                        backend_ref: s.id?,
                    })
                })
                .collect())
        }
        .boxed()
    }

    fn remove_found<'a>(&'a self, found: &'a FoundPool) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            match found.number {
                Some(n) => self.remove_by_pool_id(&crate::db::pool_id(n), None).await,
                None => match self.docker.delete_service(&found.backend_ref).await {
                    Err(e) if !is_status(&e, 404) => Err(other(e)),
                    _ => Ok(()),
                },
            }
        }
        .boxed()
    }

    fn check_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            if image == self.image {
                Ok(())
            } else {
                Err(other(format!(
                    "the swarm backend runs {} only for now (class images are docker-backend only)",
                    self.image
                )))
            }
        }
        .boxed()
    }

    fn nodes(&self) -> Option<Vec<Node>> {
        Some(self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn refresh_nodes(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        self.refresh().boxed()
    }

    fn public_host(&self, pool: &PoolSpec) -> Option<String> {
        Some(self.addr_of(pool.node.as_deref()).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ManagerStatus, NodeDescription, NodeSpec, NodeStatus, ResourceObject};

    #[test]
    fn a_swarm_node_reads_as_placement_sees_it() {
        let n = bollard::models::Node {
            id: Some("n1".into()),
            spec: Some(NodeSpec {
                labels: Some(HashMap::from([("zone".to_string(), "a".to_string())])),
                availability: Some(NodeSpecAvailabilityEnum::DRAIN),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                resources: Some(ResourceObject {
                    nano_cpus: Some(2_000_000_000),
                    memory_bytes: Some(8 << 30),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(NodeState::READY),
                addr: Some("0.0.0.0".into()),
                ..Default::default()
            }),
            manager_status: Some(ManagerStatus {
                addr: Some("10.0.0.5:2377".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let n = node_of(n).unwrap();
        assert_eq!(
            n.addr, "10.0.0.5",
            "a manager's 0.0.0.0 is its manager address"
        );
        assert_eq!((n.cpu_millis, n.memory_mb), (2000, 8192));
        assert_eq!(n.labels["zone"], "a");
        assert!(n.ready);
        assert_eq!(n.availability, Availability::Drain);
        let down = bollard::models::Node {
            id: Some("n2".into()),
            status: Some(NodeStatus {
                state: Some(NodeState::DOWN),
                addr: Some("10.0.0.6".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let down = node_of(down).unwrap();
        assert!(!down.ready);
        assert_eq!(down.addr, "10.0.0.6");
        assert_eq!(down.availability, Availability::Active);
        assert!(node_of(bollard::models::Node::default()).is_none(), "no id");
    }
}
