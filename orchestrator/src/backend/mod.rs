//! Where pools run. The service talks to pools only through [`Backend`].

pub mod docker;
pub mod engine;
pub mod local;
/// Pools as Docker Swarm services on chosen nodes.
pub mod swarm;

use std::net::SocketAddr;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::blocks::Block;
pub use crate::db::PoolId;

/// What a backend is told of a pool: how to run it, not how it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Its id.
    pub id: PoolId,
    /// Port of slot 0.
    pub base_port: u16,
    /// Port of the agent API (on the host).
    pub agent_port: u16,
    /// Uid of slot 0's programs (slot N: + N).
    pub uid_base: u32,
    /// Slots.
    pub slots: u32,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// CPU limit in millicores.
    pub cpu_millis: u64,
    /// Image of its container (`None`: the backend's default).
    pub image: Option<String>,
    /// The cluster node it is pinned to (swarm).
    pub node: Option<String>,
    /// The agent's API token.
    pub token: String,
    /// Made by an older slotpack (storage layout 1): its state may still
    /// hold its tenants' homes, so removing it keeps its state.
    pub state_holds_homes: bool,
}

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Starting a pool failed.
    #[error("starting {pool}: {reason}")]
    Start {
        /// Pool id.
        pool: String,
        /// Why.
        reason: String,
    },
    /// Any other failure.
    #[error("{0}")]
    Other(String),
}

/// A pool the backend found running (to spot ones the database lacks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPool {
    /// Pool number, when the backend can tell it.
    pub number: Option<u64>,
    /// The backend's reference (pid, container id).
    pub backend_ref: String,
}

/// `<deployment>-<pool id>`: the name of a pool's container (or local agent).
pub fn container_name(deployment: &str, pool_id: &str) -> String {
    format!("{deployment}-{pool_id}")
}

/// Which backend: what it can and cannot do is asked of its kind, never
/// by comparing names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Agents as processes of this host.
    Local,
    /// One Docker engine's containers.
    Docker,
    /// Docker Swarm services on chosen nodes.
    Swarm,
}

impl BackendKind {
    /// The word of `SLOTPACK_BACKEND` (also the metrics' `backend` label).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Docker => "docker",
            BackendKind::Swarm => "swarm",
        }
    }

    /// Whether pools, agents, tenants and the API share one network
    /// namespace (so the proxy checks who listens on a tenant's port, and
    /// slots are kept off every port the deployment uses).
    pub fn shares_the_api_network(self) -> bool {
        self == BackendKind::Local
    }

    /// Whether slots get their own uids even when `serve` is not root (a
    /// container's agent is root inside it).
    pub fn isolates_as_any_user(self) -> bool {
        self != BackendKind::Local
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(BackendKind::Local),
            "docker" => Ok(BackendKind::Docker),
            "swarm" => Ok(BackendKind::Swarm),
            other => Err(format!(
                "unknown backend {other:?}: want local, docker or swarm"
            )),
        }
    }
}

/// A place where pools (slot-agents) run.
pub trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Name shown as `containerName` (and the docker container's name).
    fn container_name(&self, pool: &PoolSpec) -> String;
    /// Address of the pool's agent API.
    fn agent_addr(&self, pool: &PoolSpec) -> SocketAddr;
    /// Start the pool unless it runs already; returns its backend reference.
    /// A restarted pool brings its programs back from its own state.
    fn start_pool<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, Result<String, BackendError>>;
    /// Whether the pool's agent process or container is running.
    fn pool_running<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, bool>;
    /// Stop and remove the pool with its state.
    fn remove_pool<'a>(&'a self, pool: &'a PoolSpec) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Stop the pool (its agent stops the programs, each within its stop
    /// timeout) and make it anew as `pool` says (another image, the
    /// current agent and mounts), keeping its state, so the agent brings
    /// the same programs back; their data is the tenants' and stays too.
    /// Returns its new backend reference.
    fn recreate_pool<'a>(
        &'a self,
        pool: &'a PoolSpec,
    ) -> BoxFuture<'a, Result<String, BackendError>>;
    /// Every pool of ours the backend can see running.
    fn found_pools(&self) -> BoxFuture<'_, Result<Vec<FoundPool>, BackendError>>;
    /// Stop and remove a pool known only by its backend reference.
    fn remove_found<'a>(&'a self, found: &'a FoundPool) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Whether the ports of `block` (its `slots` slot ports and its agent
    /// port) can be bound on 127.0.0.1 right now. A block some other process
    /// (a tenant of another pool, say) holds is skipped for a new pool, so
    /// nobody can squat a future pool's ports.
    fn ports_free(&self, block: &Block, slots: u32) -> bool {
        let bindable = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        bindable(block.agent_port)
            && (0..slots).all(|s| u16::try_from(u32::from(block.base_port) + s).is_ok_and(bindable))
    }
    /// `Ok` if pools can run `image` (docker: the engine has it). Backends
    /// that run no images accept any.
    fn check_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        let _ = image;
        Box::pin(async { Ok(()) })
    }
    /// Pool ids as their pools die, if the backend can tell at once
    /// (otherwise the health tick notices).
    fn deaths(&self) -> Option<BoxStream<'static, PoolId>> {
        None
    }
    /// The cluster's nodes as last read (`None`: a one-host backend, whose
    /// pools have no node).
    fn nodes(&self) -> Option<Vec<crate::nodes::Node>> {
        None
    }
    /// Read the cluster's nodes again (each health tick does, before it
    /// looks at the pools).
    fn refresh_nodes(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }
    /// The host clients reach `pool`'s slot ports on, when it is not
    /// `SLOTPACK_PUBLIC_HOST` (a cluster node's address).
    fn public_host(&self, pool: &PoolSpec) -> Option<String> {
        let _ = pool;
        None
    }
}
