//! `slotpack migrate`: move legacy one-container-per-tenant deployments into
//! pools. For each legacy container (label `slotpack.legacy=true`, or a name
//! matching `--legacy-pattern`): back up its configuration, stop it, create
//! the tenant through the orchestrator's API (stopped when it has mounts),
//! copy each bind mount and named volume into the tenant volume at the same
//! path, start it, verify its ping in the pool, remove the legacy container
//! (its mounts stay, for a rollback, until the operator removes them). A
//! tenant that fails verification is rolled back at once: what it wrote in
//! its volumes is copied back into the legacy mounts, it leaves the pool,
//! and its legacy container starts again.
//!
//! Every step is written to the database (table `migrations` and the events
//! log) before the next begins, and every step is idempotent, so `--execute`
//! after a crash resumes where it stopped.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use bollard::Docker;
use clap::Args;
use serde_json::Value;

use crate::api_client::ApiClient;
use crate::backend::engine::is_status;
use crate::classes::{ClassList, ClassSpec};
use crate::db::Db;

mod legacy;
pub use legacy::{
    candidate_from_inspect, candidate_with_mounts, glob_match, mounts_from_inspect, spec_value,
    tenant_id_from, Candidate, LegacyMount,
};

/// Flags of `slotpack migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Show what would be migrated; change nothing.
    #[arg(long, group = "mode")]
    pub dry_run: bool,
    /// Migrate (resumes an interrupted run).
    #[arg(long, group = "mode")]
    pub execute: bool,
    /// Print the migration log.
    #[arg(long, group = "mode")]
    pub status: bool,
    /// Put tenant ID back into its legacy container.
    #[arg(long, group = "mode", value_name = "ID")]
    pub rollback: Option<String>,
    /// Also treat containers whose name matches this pattern (`*` wildcards) as legacy.
    #[arg(long)]
    pub legacy_pattern: Option<String>,
    /// Print every step.
    #[arg(long)]
    pub verbose: bool,
    /// Orchestrator address.
    #[arg(long, env = "SLOTPACK_LISTEN", default_value = "127.0.0.1:8088")]
    pub listen: String,
    /// Admin token.
    #[arg(long, env = "SLOTPACK_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The orchestrator's data dir (its database holds the migration log).
    #[arg(long, env = "SLOTPACK_DATA_DIR", default_value_os_t = crate::config::default_data_dir())]
    pub data_dir: std::path::PathBuf,
    /// Seconds to wait for a migrated tenant's ping.
    #[arg(long, default_value_t = 30)]
    pub verify_timeout: u64,
}

struct Ctx {
    docker: Docker,
    db: Db,
    api: ApiClient,
    verbose: bool,
    verify_timeout: Duration,
}

impl Ctx {
    fn step(&self, tenant: &str, step: &str, detail: &str) -> anyhow::Result<()> {
        self.db.migration_step(tenant, step, detail)?;
        if self.verbose {
            eprintln!("\r\x1b[2K  {tenant}: {step} {detail}");
        }
        Ok(())
    }

    async fn legacy_containers(&self, pattern: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await?;
        let mut out = Vec::new();
        for c in list {
            let labels = c.labels.clone().unwrap_or_default();
            if labels.contains_key("slotpack.pool") {
                continue; // our own pools
            }
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let by_label = labels.get("slotpack.legacy").is_some_and(|v| v == "true");
            let by_name = pattern.is_some_and(|p| glob_match(p, &name));
            if by_label || by_name {
                let id = c.id.unwrap_or_default();
                out.push(serde_json::to_value(
                    self.docker.inspect_container(&id, None).await?,
                )?);
            }
        }
        out.sort_by_key(|v| v["Name"].as_str().unwrap_or("").to_string());
        Ok(out)
    }

    /// The pool class for a legacy container of `image`: none for the
    /// default pool image, else the class that runs `image`, defined now
    /// (named after the image) when there is none. `dry_run`: define nothing.
    async fn class_for(
        &self,
        image: &str,
        classes: &mut ClassList,
        dry_run: bool,
    ) -> anyhow::Result<Option<String>> {
        if image == classes.default_image {
            return Ok(None);
        }
        if let Some(c) = classes.classes.iter().find(|c| c.image == image) {
            return Ok(Some(c.name.clone()));
        }
        let base = crate::classes::name_for_image(image);
        let name = (1..100)
            .map(|i| {
                if i == 1 {
                    base.clone()
                } else {
                    format!("{}-{i}", &base[..base.len().min(59)])
                }
            })
            .find(|n| !classes.classes.iter().any(|c| &c.name == n))
            .ok_or_else(|| anyhow!("no free class name for image {image}"))?;
        if !dry_run {
            let spec = ClassSpec {
                image: image.to_string(),
                slots: None,
                memory_mb: None,
                cpu_millis: None,
                node_labels: Default::default(),
            };
            self.api.put_class(&name, &spec).await?;
        }
        classes.classes.push(crate::classes::ClassInfo {
            name: name.clone(),
            image: image.to_string(),
            slots: 0,
            memory_mb: 0,
            cpu_millis: 0,
            pools: 0,
            from_config: false,
            node_labels: Default::default(),
            roll: None,
        });
        Ok(Some(name))
    }

    /// The classes the orchestrator knows.
    async fn classes(&self) -> anyhow::Result<ClassList> {
        self.api.classes().await
    }

    /// Migrate one tenant from wherever its log says it got to.
    async fn migrate_one(&self, inspect: &Value, c: &Candidate) -> anyhow::Result<()> {
        let id = &c.tenant.id;
        let state = self.db.migration(id)?;
        if state.as_ref().is_some_and(|m| m.status == "done") {
            return Ok(());
        }
        if state.is_none() {
            self.db.migration_begin(
                id,
                &c.container,
                &inspect.to_string(),
                &serde_json::to_string(&c.tenant)?,
            )?;
            self.step(id, "backed-up", &c.container)?;
        }
        match self.docker.stop_container(&c.container, None).await {
            Err(e) if !is_status(&e, 304) && !is_status(&e, 404) => {
                bail!("stopping {}: {e}", c.container)
            }
            _ => self.step(id, "legacy-stopped", &c.container)?,
        }
        // With mounts it is placed stopped: its data goes in before it runs.
        let answer = if c.mounts.is_empty() {
            self.api.create_tenant(&c.tenant).await?
        } else {
            self.api.create_tenant_stopped(&c.tenant).await?
        };
        let (status, body) = (answer.status, &answer.body);
        if status != 201 && status != 200 {
            let why = format!("placement refused ({status}): {}", answer.message());
            self.roll_back(id, &c.container, &why).await?;
            bail!("{id}: {why}; rolled back");
        }
        let port = body["placement"]["port"].as_u64().unwrap_or(0) as u16;
        self.step(
            id,
            "placed",
            &format!(
                "{} slot {} port {port}",
                body["placement"]["poolId"].as_str().unwrap_or("?"),
                body["placement"]["slot"]
            ),
        )?;
        let copied = state
            .as_ref()
            .is_some_and(|m| ["copied", "verified"].contains(&m.status.as_str()));
        if !c.mounts.is_empty() && !copied {
            if let Err(e) = self.copy_in(c).await {
                let why = format!("copying its data: {e:#}");
                self.roll_back(id, &c.container, &why).await?;
                bail!("{id}: {why}; rolled back");
            }
        }
        if !c.mounts.is_empty() {
            let a = self
                .api
                .call("POST", &format!("/api/tenants/{id}/start"), None)
                .await?;
            if a.status != 200 {
                let why = format!("starting it ({}): {}", a.status, a.message());
                self.roll_back(id, &c.container, &why).await?;
                bail!("{id}: {why}; rolled back");
            }
        }
        let path = c
            .tenant
            .ping
            .as_ref()
            .map_or("/api/v1/ping".to_string(), |p| p.path.clone());
        if !self.verify(id, port, &path).await {
            let why = format!(
                "no answer on 127.0.0.1:{port}{path} within {:?}",
                self.verify_timeout
            );
            self.roll_back(id, &c.container, &why).await?;
            bail!("{id}: {why}; rolled back to its legacy container");
        }
        self.step(id, "verified", &format!("127.0.0.1:{port}{path}"))?;
        let opts = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(&c.container, Some(opts)).await {
            Err(e) if !is_status(&e, 404) => bail!("removing {}: {e}", c.container),
            _ => {}
        }
        let kept = if c.mounts.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = c.mounts.iter().map(mount_name).collect();
            format!(
                "; its mounts are kept for a rollback until you remove them: {}",
                list.join(", ")
            )
        };
        self.step(
            id,
            "done",
            &format!("legacy container removed; backup kept in the log{kept}"),
        )?;
        Ok(())
    }

    /// Copy each legacy mount (the container is stopped) into the tenant
    /// volume at its path.
    async fn copy_in(&self, c: &Candidate) -> anyhow::Result<()> {
        let id = c.tenant.id.as_str();
        let mut total = 0usize;
        for m in &c.mounts {
            let tar = self.download(&c.container, &m.destination).await?;
            total += tar.len();
            self.api.put_volume(id, &m.destination, tar).await?;
        }
        self.step(
            id,
            "copied",
            &format!(
                "{} mounts, {:.1} MiB archived",
                c.mounts.len(),
                total as f64 / f64::from(1 << 20)
            ),
        )
    }

    /// The tar `docker cp` makes of `path` in container `name`.
    async fn download(&self, name: &str, path: &str) -> anyhow::Result<axum::body::Bytes> {
        use futures_util::TryStreamExt;
        let chunks: Vec<axum::body::Bytes> = self
            .docker
            .download_from_container(
                name,
                Some(bollard::query_parameters::DownloadFromContainerOptions {
                    path: path.to_string(),
                }),
            )
            .try_collect()
            .await
            .with_context(|| format!("reading {path} of {name}"))?;
        Ok(chunks.concat().into())
    }

    /// Copy what tenant `id` wrote in its volumes back into the legacy
    /// container's mounts (each entry owned as the legacy folder is).
    async fn copy_back(&self, id: &str, container: &str, volumes: &[String]) -> anyhow::Result<()> {
        for path in volumes {
            let legacy = self.download(container, path).await?;
            let owner = tar::Header::from_byte_slice(legacy.get(..512).unwrap_or(&[0; 512]));
            let owner = owner.uid().ok().zip(owner.gid().ok());
            let tar = self.api.get_volume(id, path, owner).await?;
            let parent = std::path::Path::new(path)
                .parent()
                .map_or("/".to_string(), |p| p.display().to_string());
            self.docker
                .upload_to_container(
                    container,
                    Some(bollard::query_parameters::UploadToContainerOptions {
                        path: parent,
                        ..Default::default()
                    }),
                    bollard::body_full(tar),
                )
                .await
                .with_context(|| format!("writing {path} of {container}"))?;
        }
        Ok(())
    }

    /// Wait for the tenant's ping. Its port is asked again before every try,
    /// since a health tick may move it meanwhile (consolidation).
    async fn verify(&self, id: &str, mut port: u16, path: &str) -> bool {
        let deadline = Instant::now() + self.verify_timeout;
        while Instant::now() < deadline {
            let where_now = self.api.bot(id);
            if let Ok(Ok(b)) = tokio::time::timeout(Duration::from_secs(2), where_now).await {
                port = b.connection.port;
            }
            let r = slotpack_proto::ping::ping(
                slotpack_proto::protocol::PingKind::Http,
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                path,
                Duration::from_secs(2),
            )
            .await;
            if r.ok {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Take the tenant out of its pool and bring its legacy container back
    /// (from the backup when it was removed).
    async fn roll_back(&self, id: &str, container: &str, why: &str) -> anyhow::Result<()> {
        if self
            .docker
            .inspect_container(container, None)
            .await
            .is_err()
        {
            let m = self
                .db
                .migration(id)?
                .ok_or_else(|| anyhow!("no backup of {id}"))?;
            let backup: Value = serde_json::from_str(&m.backup)?;
            self.recreate(container, &backup).await?;
        }
        // What it wrote while pooled goes back into the legacy mounts first.
        let pooled = self
            .api
            .call("GET", &format!("/api/tenants/{id}"), None)
            .await?;
        let volumes: Vec<String> = match self.db.migration(id)? {
            Some(m) => {
                let backup: Value = serde_json::from_str(&m.backup)?;
                mounts_from_inspect(&backup, |s| std::path::Path::new(s).is_dir())
                    .0
                    .into_iter()
                    .map(|m| m.destination)
                    .collect()
            }
            None => Vec::new(),
        };
        let mut note = String::new();
        if pooled.status == 200 && !volumes.is_empty() {
            let a = self
                .api
                .call("POST", &format!("/api/tenants/{id}/stop"), None)
                .await?;
            if a.status != 200 {
                bail!("stopping {id} ({}): {}", a.status, a.message());
            }
            self.copy_back(id, container, &volumes).await?;
            note = format!(
                "; its volumes' content copied back into {}",
                volumes.join(", ")
            );
        }
        let answer = self.api.delete_tenant(id).await?;
        if answer.status != 200 && answer.status != 404 {
            bail!(
                "removing {id} from its pool ({}): {}",
                answer.status,
                answer.message()
            );
        }
        match self.docker.start_container(container, None).await {
            Err(e) if !is_status(&e, 304) => bail!("starting {container}: {e}"),
            _ => {}
        }
        self.step(id, "rolled-back", &format!("{why}{note}"))
    }

    async fn recreate(&self, name: &str, backup: &Value) -> anyhow::Result<()> {
        let mut config: ContainerCreateBody = serde_json::from_value(backup["Config"].clone())?;
        config.host_config = serde_json::from_value(backup["HostConfig"].clone()).ok();
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                config,
            )
            .await?;
        Ok(())
    }
}

/// How a legacy mount is named to the operator.
fn mount_name(m: &LegacyMount) -> String {
    match &m.name {
        Some(n) => format!("volume {n}"),
        None => format!("bind {}", m.source),
    }
}

/// The size of the tree at `path` on this host (what a copy moves), or why
/// it is unknown.
fn size_of(path: &str) -> String {
    let mut total = 0u64;
    let mut stack = vec![std::path::PathBuf::from(path)];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            return format!("size unknown: {path} is not readable here");
        };
        if meta.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => stack.extend(rd.flatten().map(|e| e.path())),
                Err(e) => return format!("size unknown: {}: {e}", p.display()),
            }
        } else {
            total += meta.len();
        }
    }
    format!("{:.1} MiB", total as f64 / f64::from(1 << 20))
}

fn progress(done: usize, total: usize, what: &str) {
    let width = 24;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    eprint!(
        "\r\x1b[2K[{}{}] {done}/{total} {what}",
        "#".repeat(filled),
        "-".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}

/// Run `slotpack migrate`.
pub async fn run(a: MigrateArgs) -> anyhow::Result<()> {
    if !(a.dry_run || a.execute || a.status || a.rollback.is_some()) {
        bail!("say what to do: --dry-run, --execute, --status or --rollback=<id>");
    }
    std::fs::create_dir_all(&a.data_dir)?;
    let db = Db::open(&a.data_dir.join("slotpack.db")).context("opening the database")?;
    if a.status {
        let rows = db.migrations()?;
        if rows.is_empty() {
            println!("no migrations recorded");
        }
        for m in rows {
            println!(
                "{:<24} {:<14} {:<24} {}",
                m.tenant, m.status, m.container, m.detail
            );
            if a.verbose {
                for e in db
                    .events(Some(&m.tenant), 1000)?
                    .iter()
                    .filter(|e| e.kind.starts_with("migration."))
                {
                    println!("    {} {} {}", e.at, e.kind, e.detail);
                }
            }
        }
        return Ok(());
    }
    let docker = Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await?;
    let ctx = Ctx {
        docker,
        db,
        api: ApiClient::new(&a.listen, a.token.clone()),
        verbose: a.verbose,
        verify_timeout: Duration::from_secs(a.verify_timeout),
    };
    if let Some(id) = &a.rollback {
        let m = ctx
            .db
            .migration(id)?
            .ok_or_else(|| anyhow!("no migration of tenant {id} in the log"))?;
        ctx.roll_back(id, &m.container, "rolled back by hand")
            .await?;
        println!("{id}: back in its legacy container {}", m.container);
        return Ok(());
    }
    let found = ctx.legacy_containers(a.legacy_pattern.as_deref()).await?;
    let mut cands = Vec::new();
    let mut classes = None;
    for inspect in &found {
        match candidate_with_mounts(inspect, |s| std::path::Path::new(s).is_dir()) {
            Ok(mut c) => {
                // A tenant keeps its runtime: a pool class of its image.
                if let (None, Some(image)) = (&c.tenant.pool_class, &c.image) {
                    if classes.is_none() {
                        classes = Some(ctx.classes().await?);
                    }
                    let list = classes.as_mut().expect("listed above");
                    c.tenant.pool_class = ctx.class_for(image, list, a.dry_run).await?;
                }
                cands.push((inspect, c))
            }
            Err(e) => eprintln!("skipping: {e}"),
        }
    }
    if a.dry_run {
        println!(
            "{} legacy containers would be migrated (nothing was changed):",
            cands.len()
        );
        for (_, c) in &cands {
            let t = &c.tenant;
            println!(
                "  {:<24} -> tenant {:<24} {} {} ({} MiB, {}m cpu, class {})",
                c.container,
                t.id,
                t.command,
                t.args.join(" "),
                t.resources.memory_mb,
                t.resources.cpu_millis,
                t.pool_class.as_deref().unwrap_or("default")
            );
            for m in &c.mounts {
                println!(
                    "      {} -> volume {} ({})",
                    mount_name(m),
                    m.destination,
                    size_of(&m.source)
                );
            }
            for l in &c.left_out {
                println!("      not kept: {l}");
            }
        }
        return Ok(());
    }
    // --execute: also resume tenants whose legacy container is gone but whose
    // migration did not finish (a crash after removal cannot happen: removal
    // is the last step; a crash before it leaves the container).
    let total = cands.len();
    let (mut ok, mut failed) = (0, Vec::new());
    let mut seen: HashMap<String, ()> = HashMap::new();
    for (i, (inspect, c)) in cands.iter().enumerate() {
        progress(i, total, &format!("migrating {}", c.tenant.id));
        seen.insert(c.tenant.id.to_string(), ());
        match ctx.migrate_one(inspect, c).await {
            Ok(()) => ok += 1,
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    progress(total, total, "done");
    eprintln!();
    println!(
        "migrated {ok} of {total}; {} rolled back or failed",
        failed.len()
    );
    for f in &failed {
        println!("  {f}");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} tenants were not migrated (see above and --status)",
            failed.len()
        )
    }
}
