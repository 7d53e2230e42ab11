//! `slotpack apply -f tenant.json`: create the tenant the file describes,
//! or give an existing one that spec (`PUT /api/tenants/{id}`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use crate::api_types::CreateTenant;

/// Flags of `slotpack apply`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The tenant's create body (JSON), `-` for stdin.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    #[command(flatten)]
    client: crate::cli::ClientArgs,
}

/// Read the file, PUT it; a tenant that does not exist yet is created.
pub async fn run(a: ApplyArgs) -> anyhow::Result<()> {
    let text = if a.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?
    };
    let body: CreateTenant =
        serde_json::from_str(&text).with_context(|| format!("{}", a.file.display()))?;
    let (api, _) = a.client.client()?;
    let id = body.id.as_str().to_string();
    let value = serde_json::to_value(&body)?;
    let mut answer = api
        .call("PUT", &format!("/api/tenants/{id}"), Some(&value))
        .await?;
    let mut verb = "updated";
    if answer.status == 404 {
        answer = api.call("POST", "/api/tenants", Some(&value)).await?;
        verb = "created";
    }
    if !(200..300).contains(&answer.status) {
        bail!("applying {id} ({}): {}", answer.status, answer.message());
    }
    if a.client.json {
        println!("{}", answer.body);
        return Ok(());
    }
    let t = &answer.body["tenant"];
    println!(
        "tenant {id} {verb}: {} in {} slot {} port {}",
        t["state"].as_str().unwrap_or("?"),
        t["placement"]["poolId"].as_str().unwrap_or("?"),
        t["placement"]["slot"],
        t["placement"]["port"],
    );
    Ok(())
}
