//! `slotpack status`: a client of `GET /api/pool/status`.

use clap::Args;

use crate::api_client::ApiClient;

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
    let api = ApiClient::new(&a.listen, a.token.clone());
    if a.json {
        println!("{}", api.pool_status_json().await?);
        return Ok(());
    }
    let s = api.pool_status().await?;
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
    // The node column only where pools have nodes (a cluster backend).
    let nodes = s.pools.iter().any(|p| p.node.is_some());
    let node = |n: Option<&str>| {
        if nodes {
            format!("{:<26} ", n.unwrap_or("-"))
        } else {
            String::new()
        }
    };
    println!(
        "{:<10} {:<20} {}{:<14} {:<12} {:>6} {:>6}  tenants",
        "pool",
        "name",
        node(Some("node")),
        "class",
        "status",
        "used",
        "util"
    );
    for p in &s.pools {
        println!(
            "{:<10} {:<20} {}{:<14} {:<12} {:>3}/{:<2} {:>5}%  {}",
            p.id,
            p.container_name,
            node(p.node.as_deref()),
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
