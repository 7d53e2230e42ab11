//! `slotpack status`: a client of `GET /api/pool/status`.

use clap::Args;

use crate::cli::ClientArgs;

/// Flags of `slotpack status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// Fetch and print the pool status, saying where and with which token.
pub async fn run(a: StatusArgs) -> anyhow::Result<()> {
    let (api, source) = a.client.client()?;
    if a.client.json {
        println!("{}", api.pool_status_json().await?);
        return Ok(());
    }
    let s = match api.pool_status().await {
        Ok(s) => s,
        Err(e) => anyhow::bail!("{e:#}\n(asked {} with {source})", a.client.address()),
    };
    println!("orchestrator {} ({source})", a.client.address());
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
