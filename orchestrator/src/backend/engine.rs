//! What the two backends on a Docker engine (`docker`, `swarm`) share: the
//! error mapping, a pool's labels, the agent's command line and
//! environment in a pool container, waiting for that agent, and removing a
//! pool's state volume.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::query_parameters::RemoveVolumeOptions;
use bollard::Docker;

use super::BackendError;

/// The label every container and volume of ours carries.
pub const MANAGED_BY: (&str, &str) = ("managed-by", "slotpack");
/// The label naming the pool of a container.
pub const POOL_LABEL: &str = "slotpack.pool";
/// The label naming the deployment (`SLOTPACK_DEPLOYMENT`) of a container.
pub const DEPLOYMENT_LABEL: &str = "slotpack.deployment";
/// The agent's port inside a pool container.
pub const AGENT_PORT: u16 = 8999;
use super::PoolSpec;

/// Any engine failure as a backend error.
pub fn other(e: impl std::fmt::Display) -> BackendError {
    BackendError::Other(e.to_string())
}

/// Whether the engine answered `code`.
pub fn is_status(e: &bollard::errors::Error, code: u16) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// The labels of pool `id` of `deployment` (its container, service and
/// volume).
pub fn pool_labels(deployment: &str, id: &str) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (DEPLOYMENT_LABEL.to_string(), deployment.to_string()),
        (POOL_LABEL.to_string(), id.to_string()),
    ])
}

/// The agent's flags in a pool container: its API on [`AGENT_PORT`], state
/// in `/pool`, the pool's slots and slot users, the image's environment
/// passed on to programs.
pub fn agent_args(pool: &PoolSpec) -> Vec<String> {
    vec![
        "--listen".to_string(),
        format!("0.0.0.0:{AGENT_PORT}"),
        "--state-dir".into(),
        "/pool".into(),
        "--base-port".into(),
        pool.base_port.to_string(),
        "--slots".into(),
        pool.slots.to_string(),
        "--slot-uid-base".into(),
        pool.uid_base.to_string(),
        "--tenants-dir".into(),
        TENANTS_DIR.into(),
        "--inherit-env".into(),
    ]
}

/// Where pool containers see the deployment's tenants volume.
pub const TENANTS_DIR: &str = "/tenants";

/// The deployment's volume of tenant data on an engine (one per host):
/// every pool container of the deployment mounts it at [`TENANTS_DIR`], so
/// a tenant's home and volumes follow it to any pool on that host without
/// a copy, and outlive every pool. Removed by nothing but an admin.
pub fn tenants_volume(deployment: &str) -> String {
    format!("{deployment}-tenants")
}

/// Create the deployment's tenants volume (labelled as ours, no pool
/// label: never taken for a pool's); an existing one is kept as it is.
pub async fn ensure_tenants_volume(docker: &Docker, deployment: &str) -> Result<(), BackendError> {
    let labels = HashMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (DEPLOYMENT_LABEL.to_string(), deployment.to_string()),
        ("slotpack.role".to_string(), "tenants".to_string()),
    ]);
    docker
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(tenants_volume(deployment)),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(other)?;
    Ok(())
}

/// The agent's environment in a pool container: the settings in `env` and
/// the pool's token.
pub fn agent_env(env: &[(String, String)], pool: &PoolSpec) -> Vec<String> {
    let mut out: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push(format!("SLOT_AGENT_TOKEN={}", pool.token));
    out
}

/// Wait until the agent at `addr` answers its health route (a published
/// port accepts before the agent listens), for at most `limit`. Once a
/// second `hopeless` may end the wait early with its reason.
pub async fn wait_for_agent<F, Fut>(
    addr: SocketAddr,
    limit: Duration,
    mut hopeless: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let deadline = Instant::now() + limit;
    let mut next_check = Instant::now() + Duration::from_secs(1);
    loop {
        let r = slotpack_proto::ping::ping(
            slotpack_proto::protocol::PingKind::Http,
            addr,
            "/v1/health",
            Duration::from_secs(1),
        )
        .await;
        if r.ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "agent at {addr} did not answer within {} s",
                limit.as_secs()
            ));
        }
        if Instant::now() >= next_check {
            if let Some(why) = hopeless().await {
                return Err(why);
            }
            next_check = Instant::now() + Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Remove the volume `name` if it is there; while a container being
/// removed still uses it (409), try again for up to 30 s.
pub async fn remove_volume(docker: &Docker, name: &str) -> Result<(), BackendError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Err(e) if is_status(&e, 409) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) if !is_status(&e, 404) => return Err(other(e)),
            _ => return Ok(()),
        }
    }
}
