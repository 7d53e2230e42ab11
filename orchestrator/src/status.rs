//! `slotpack status`: a client of `GET /api/pool/status`.

use anyhow::{bail, Context};
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::model::PoolStatus;

/// Flags of `slotpack status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Orchestrator address.
    #[arg(long, env = "SLOTPACK_LISTEN", default_value = "127.0.0.1:8088")]
    pub listen: String,
    /// Admin token.
    #[arg(long, env = "SLOTPACK_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// Fetch and print the pool status.
pub async fn run(a: StatusArgs) -> anyhow::Result<()> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<axum::body::Bytes>>();
    let mut req = hyper::Request::get(format!("http://{}/api/pool/status", a.listen));
    if let Some(t) = &a.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client
        .request(req.body(Empty::new())?)
        .await
        .with_context(|| format!("no answer from {}", a.listen))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    if a.json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let s: PoolStatus = serde_json::from_slice(&body).context("reading the status")?;
    println!(
        "pool mode {}   pools {}   tenants {}   health {} (pools {}/{}, tenants {}/{} healthy)",
        if s.pool_mode { "on" } else { "off" },
        s.total_pools,
        s.total_bots,
        s.health.status,
        s.health.pools.healthy,
        s.health.pools.total,
        s.health.bots.healthy,
        s.health.bots.total
    );
    println!(
        "{:<10} {:<20} {:<14} {:<12} {:>6} {:>6}  tenants",
        "pool", "name", "class", "status", "used", "util"
    );
    for p in &s.pools {
        println!(
            "{:<10} {:<20} {:<14} {:<12} {:>3}/{:<2} {:>5}%  {}",
            p.id,
            p.container_name,
            p.class.as_deref().unwrap_or("default"),
            p.status,
            p.bots_count,
            p.capacity,
            p.utilization_percent,
            p.bots.join(" ")
        );
    }
    Ok(())
}
