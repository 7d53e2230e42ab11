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
use crate::db::PoolRow;

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

/// A place where pools (slot-agents) run.
pub trait Backend: Send + Sync {
    /// `local`, `docker` or `swarm`.
    fn name(&self) -> &'static str;
    /// Name shown as `containerName` (and the docker container's name).
    fn container_name(&self, pool: &PoolRow) -> String;
    /// Address of the pool's agent API.
    fn agent_addr(&self, pool: &PoolRow) -> SocketAddr;
    /// Start the pool unless it runs already; returns its backend reference.
    /// A restarted pool brings its programs back from its own state.
    fn start_pool<'a>(&'a self, pool: &'a PoolRow) -> BoxFuture<'a, Result<String, BackendError>>;
    /// Whether the pool's agent process or container is running.
    fn pool_running<'a>(&'a self, pool: &'a PoolRow) -> BoxFuture<'a, bool>;
    /// Stop and remove the pool with its state.
    fn remove_pool<'a>(&'a self, pool: &'a PoolRow) -> BoxFuture<'a, Result<(), BackendError>>;
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
    fn deaths(&self) -> Option<BoxStream<'static, String>> {
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
    fn public_host(&self, pool: &PoolRow) -> Option<String> {
        let _ = pool;
        None
    }
}
