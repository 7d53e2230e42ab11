//! slotpack orchestrator: places tenants into slots of shared pools, talks
//! to the pools' slot-agents, watches health, recovers from failures, and
//! serves the REST API, the proxy and the metrics. The binary `slotpack` is
//! a thin wrapper over [`serve`] and [`status::run`].

pub mod access;
pub mod agents;
pub mod api;
pub mod api_client;
pub mod api_types;
pub mod apply;
pub mod auth;
pub mod backend;
pub mod blocks;
pub mod classes;
pub mod cli;
pub mod config;
pub mod consolidate;
pub mod dashboard;
pub mod db;
pub mod events;
pub mod ledger;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod nodes;
pub mod openapi;
pub mod placement;
pub mod proxy;
pub mod reconcile;
pub mod roll_plan;
pub mod server;
pub mod service;
pub mod states;
pub mod status;
pub mod streams;
pub mod tenant_spec;
pub mod tick_plan;
pub mod uid_ranges;
pub mod usage;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::backend::docker::DockerBackend;
use crate::backend::local::LocalBackend;
use crate::backend::swarm::SwarmBackend;
use crate::backend::{Backend, BackendKind};
use crate::config::ServeConfig;
use crate::service::Orchestrator;

/// Refuse to start when this deployment's stored pools or its first block
/// would share slot uids with another deployment on the host, an account
/// or a foreign process; note its ranges in the host-wide registry.
fn claim_uids(cfg: &ServeConfig, db: &db::Db) -> anyhow::Result<Option<uid_ranges::Registry>> {
    let dir = std::env::var_os("SLOTPACK_UID_REGISTRY")
        .map_or_else(|| PathBuf::from(uid_ranges::DEFAULT_DIR), PathBuf::from);
    let Some(reg) = uid_ranges::Registry::open(&dir, &cfg.deployment, &cfg.data_dir) else {
        tracing::warn!(dir = %dir.display(), "cannot note slot uids host-wide; another deployment could share them");
        return Ok(None);
    };
    let ours = db.uid_ranges()?;
    let host = reg.read_host();
    let base = u64::from(cfg.slot_uid_base);
    let first = base..base + u64::from(cfg.max_bots_per_container.max(1));
    let mut check: Vec<_> = ours.clone();
    if !ours
        .iter()
        .any(|r| r.start < first.end && first.start < r.end)
    {
        check.push(first);
    }
    for r in &check {
        if let Some(why) = uid_ranges::clash(r, &host, &ours) {
            bail!(
                "{why}: give this deployment a SLOT_UID_BASE of its own (uids no other \
                 deployment, account or process uses)"
            );
        }
    }
    reg.note(&ours)
        .with_context(|| format!("noting slot uids in {}", dir.display()))?;
    Ok(Some(reg))
}

/// The ports a local deployment may use, for its agents' socket guard:
/// the API's, and every agent and slot port of every block (agent ports
/// run down from `base - 1`, slot ports up from `base`).
pub fn local_guarded_ports(api: u16, base: u16, width: u32) -> String {
    let blocks = (65_536 - u32::from(base)) / width.max(1);
    let lo = u32::from(base).saturating_sub(1 + blocks).max(1);
    format!("{api},{lo}-65535")
}

/// Find the slot-agent binary: the flag/env, next to this executable, or PATH.
fn agent_bin(cfg: &ServeConfig) -> anyhow::Result<PathBuf> {
    find_agent_bin(cfg.agent_bin.as_deref())
}

/// The slot-agent binary: `explicit`, else next to this binary, else on
/// `PATH`.
pub fn find_agent_bin(explicit: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        let p = dir.join("slot-agent");
        if p.exists() {
            return Ok(p);
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("slot-agent");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("slot-agent binary not found: set SLOTPACK_AGENT_BIN")
}

/// Build the orchestrator for `cfg` (database, backend) without serving.
pub async fn build(mut cfg: ServeConfig) -> anyhow::Result<Arc<Orchestrator>> {
    cfg.resolve_limits().map_err(anyhow::Error::msg)?;
    if !slotpack_proto::protocol::is_valid_id(&cfg.deployment) {
        bail!(
            "SLOTPACK_DEPLOYMENT {:?} is not a valid name: want ^[a-z0-9][a-z0-9_-]{{0,62}}$",
            cfg.deployment
        );
    }
    if let Some(path) = &cfg.admin_token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("admin token file {}", path.display()))?;
        cfg.admin_token = text.lines().next().map(|l| l.trim().to_string());
    }
    if cfg
        .admin_token
        .as_deref()
        .is_none_or(|t| t.trim().is_empty())
        && !cfg.insecure_dev
    {
        bail!("refusing to start without an admin token: set SLOTPACK_ADMIN_TOKEN or pass --admin-token-file FILE (or --insecure-dev for development)");
    }
    // Its parents as the umask makes them; the data dir itself 0711: slot
    // users traverse it (to their homes) but cannot list it.
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("data dir {}", cfg.data_dir.display()))?;
    std::fs::set_permissions(
        &cfg.data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .with_context(|| format!("chmod 711 {}", cfg.data_dir.display()))?;
    if cfg.backend == BackendKind::Local && nix::unistd::geteuid().is_root() {
        check_traversable(&cfg.data_dir)?;
    }
    // Nothing we create from here on is readable by others: the database
    // holds every agent token and every tenant's env.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let db = db::Db::open(&cfg.data_dir.join("slotpack.db")).context("opening the database")?;
    db.fill_uid_bases(cfg.slot_uid_base)?;
    // As root, slot uids are real host uids: this deployment's must be its own.
    let uid_registry = if nix::unistd::geteuid().is_root() {
        claim_uids(&cfg, &db)?
    } else {
        None
    };
    db.set_event_retention(cfg.events_keep)?;
    let env = vec![
        (
            "HEALTH_CHECK_INTERVAL".to_string(),
            cfg.health_check_interval.to_string(),
        ),
        (
            "BOT_PING_TIMEOUT".to_string(),
            cfg.bot_ping_timeout.to_string(),
        ),
        (
            "MAX_RESTART_ATTEMPTS".to_string(),
            cfg.max_restart_attempts.to_string(),
        ),
        (
            "RESTART_COOLDOWN".to_string(),
            cfg.restart_cooldown.to_string(),
        ),
        ("SLOT_MAX_PROCS".to_string(), cfg.slot_max_procs.to_string()),
    ];
    let backend: Arc<dyn Backend> = match cfg.backend {
        BackendKind::Local => {
            // Pools, agents and the API share one network namespace here:
            // no slot may reach (or bind) any port the deployment can use.
            let mut env = env;
            env.push((
                "SLOT_GUARDED_PORTS".to_string(),
                local_guarded_ports(
                    cfg.listen.port(),
                    cfg.pool_base_port,
                    cfg.max_bots_per_container,
                ),
            ));
            Arc::new(
                LocalBackend::new(&cfg.deployment, &cfg.data_dir, agent_bin(&cfg)?, env)
                    .context("local backend")?,
            )
        }
        BackendKind::Docker => Arc::new(
            DockerBackend::connect(&cfg.deployment, &cfg.pool_image, cfg.pool_pids_limit, env)
                .await?,
        ),
        BackendKind::Swarm => Arc::new(
            SwarmBackend::connect(&cfg.deployment, &cfg.pool_image, cfg.pool_pids_limit, env)
                .await?,
        ),
    };
    Ok(Arc::new(
        Orchestrator::new(cfg, db, backend)?.with_uid_registry(uid_registry),
    ))
}

/// Slot users reach their homes below `data_dir`: every folder above it
/// must let others traverse it (`o+x`), or no tenant could start.
fn check_traversable(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let abs = std::fs::canonicalize(data_dir)?;
    for dir in abs.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o001 == 0 {
            bail!(
                "slot users cannot reach their homes below {}: {} is mode {:o}; \
                 let others traverse it (chmod o+x) or choose another SLOTPACK_DATA_DIR",
                abs.display(),
                dir.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

/// `slotpack serve`: recover, then serve until SIGTERM/SIGINT. Pools keep
/// running when the orchestrator stops; the next start adopts them.
///
/// The API is served by one single-threaded runtime per core, each with its
/// own `SO_REUSEPORT` listener and proxy client, so a proxied request and its
/// upstream connection stay on one thread (as nginx's workers do). The
/// health loop runs on the calling runtime.
pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let listen = cfg.listen;
    let classes = cfg.classes.clone();
    let (cfg_backend, data_dir) = (cfg.backend, cfg.data_dir.clone());
    logging::init(&cfg.log, &cfg.log_format).map_err(anyhow::Error::msg)?;
    // One serve per data dir: held until this process ends.
    let _lock = server::DataDirLock::take(&cfg.data_dir)?;
    let fds = server::raise_fd_limit();
    let mut max_conns = cfg.max_connections as usize;
    if max_conns > server::affordable_connections(fds) {
        max_conns = server::affordable_connections(fds);
        tracing::warn!(
            fds,
            max_connections = max_conns,
            "the descriptor limit affords fewer connections than SLOTPACK_MAX_CONNECTIONS"
        );
    }
    let limits = server::ConnLimits::new(max_conns, cfg.max_connections_per_client as usize);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let listeners = server::listeners(listen, workers)?;
    let svc = build(cfg).await?;
    svc.set_conn_limits(limits.clone());
    for (name, spec) in classes {
        svc.put_class(&name, spec, true)
            .await
            .with_context(|| format!("config file: class {name}"))?;
    }
    let report = svc.recover().await?;
    tracing::info!(
        %listen,
        backend = %svc.backend().kind(),
        pools = report.pools.len(),
        issues = report.issues.len(),
        workers,
        fds,
        max_connections = max_conns,
        "serving on http://{listen}"
    );
    for i in &report.issues {
        tracing::warn!(issue = %i, "start-up issue");
    }
    if !svc.isolated() {
        tracing::warn!(
            "not root, so slots share this process's uid: tenants can read \
             each other's files and this process's environment; {}",
            if svc.cfg().allow_shared_uid {
                "tenants of several owners are allowed (SLOTPACK_ALLOW_SHARED_UID)"
            } else {
                "only one owner's tenants are taken (SLOTPACK_ALLOW_SHARED_UID=true allows more)"
            }
        );
    }
    let ticker = {
        let svc = svc.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(svc.cfg().health_interval());
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t.tick().await;
            loop {
                // A tenant a tick requeued (a start waiting for its old
                // copy to stop) brings the next tick forward.
                let requeued = svc.next_requeue();
                let due = requeued.unwrap_or_else(std::time::Instant::now);
                tokio::select! {
                    _ = t.tick() => {}
                    _ = tokio::time::sleep_until(due.into()), if requeued.is_some() => {}
                }
                tick_and_log(&svc).await;
            }
        })
    };
    // Warm slots are refilled here, off the request path of creates.
    let refiller = {
        let svc = svc.clone();
        tokio::spawn(async move {
            loop {
                svc.warm.notified().await;
                svc.keep_warm().await;
            }
        })
    };
    // A pool that dies is handled at once, not at the next tick.
    let watcher = svc.backend().deaths().map(|mut deaths| {
        let svc = svc.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(pool) = deaths.next().await {
                tracing::info!(%pool, "pool died; running a health tick");
                tick_and_log(&svc).await;
            }
        })
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut threads = Vec::new();
    for (n, listener) in listeners.into_iter().enumerate() {
        let svc = svc.clone();
        let stop = stop_rx.clone();
        let limits = limits.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("slotpack-api-{n}"))
                .spawn(move || -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let header_timeout = svc.cfg().header_timeout();
                    let api = api::ApiService::new(api::App::new(svc));
                    let app = move |req| api.clone().call(req);
                    rt.block_on(server::serve_http1(
                        listener,
                        app,
                        limits,
                        header_timeout,
                        stop,
                    ))
                })?,
        );
    }
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    }
    let _ = stop_tx.send(true);
    ticker.abort();
    refiller.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    for t in threads {
        match t.join() {
            Ok(r) => r?,
            Err(_) => bail!("an API worker panicked"),
        }
    }
    // The pools outlive serve by design (a restart or upgrade stops no
    // tenant): say so, and how to end them on purpose.
    let how = match cfg_backend {
        BackendKind::Local => format!(
            "`slotpack agents stop --data-dir {}` ends them",
            data_dir.display()
        ),
        _ => "delete their tenants (or the pool containers) to end them".to_string(),
    };
    tracing::info!(
        "stopped; the pools and their tenants keep running, and the next serve adopts them; {how}"
    );
    Ok(())
}

/// One health tick, with its issues and recovery actions in the log.
async fn tick_and_log(svc: &Orchestrator) {
    let report = svc.health_tick().await;
    for i in &report.issues {
        tracing::warn!(issue = %i, "health issue");
    }
    for a in &report.recovery_actions {
        tracing::info!(action = %a, "recovery");
    }
}
