//! slotpack orchestrator: places tenants into slots of shared pools, talks
//! to the pools' slot-agents, watches health, recovers from failures, and
//! serves the REST API, the proxy and the metrics. The binary `slotpack` is
//! a thin wrapper over [`serve`] and [`status::run`].

pub mod agent_client;
pub mod api;
pub mod backend;
pub mod config;
pub mod db;
pub mod metrics;
pub mod model;
pub mod placement;
pub mod proxy;
pub mod reconcile;
pub mod service;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::backend::local::LocalBackend;
use crate::backend::Backend;
use crate::config::ServeConfig;
use crate::service::Orchestrator;

/// Find the slot-agent binary: the flag/env, next to this executable, or PATH.
fn agent_bin(cfg: &ServeConfig) -> anyhow::Result<PathBuf> {
    if let Some(p) = &cfg.agent_bin {
        return Ok(p.clone());
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
pub fn build(cfg: ServeConfig) -> anyhow::Result<Arc<Orchestrator>> {
    if cfg
        .admin_token
        .as_deref()
        .is_none_or(|t| t.trim().is_empty())
        && !cfg.insecure_dev
    {
        bail!("refusing to start without an admin token: set SLOTPACK_ADMIN_TOKEN (or pass --insecure-dev for development)");
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("data dir {}", cfg.data_dir.display()))?;
    let db = db::Db::open(&cfg.data_dir.join("slotpack.db")).context("opening the database")?;
    let backend: Arc<dyn Backend> = match cfg.backend.as_str() {
        "local" => {
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
            ];
            Arc::new(
                LocalBackend::new(&cfg.data_dir, agent_bin(&cfg)?, env, cfg.slot_uid_base)
                    .context("local backend")?,
            )
        }
        "docker" => bail!("the docker backend is not built yet (see ARCHITECTURE.md)"),
        other => bail!("unknown backend {other:?}: want local or docker"),
    };
    Ok(Arc::new(Orchestrator::new(cfg, db, backend)))
}

/// `slotpack serve`: recover, then serve until SIGTERM/SIGINT. Pools keep
/// running when the orchestrator stops; the next start adopts them.
pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let listen = cfg.listen;
    let svc = build(cfg)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let report = svc.recover().await?;
    eprintln!(
        "slotpack: serving on http://{listen} ({} backend, {} pools, {} issues at start-up)",
        svc.backend.name(),
        report.pools.len(),
        report.issues.len()
    );
    for i in &report.issues {
        eprintln!("slotpack: start-up issue: {i}");
    }
    let ticker = {
        let svc = svc.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(svc.cfg.health_interval());
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t.tick().await;
            loop {
                t.tick().await;
                let r = svc.health_tick().await;
                for a in &r.recovery_actions {
                    eprintln!("slotpack: recovery: {a}");
                }
            }
        })
    };
    let app = api::router(api::App {
        svc: svc.clone(),
        proxy: proxy::client(),
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        })
        .await?;
    ticker.abort();
    eprintln!("slotpack: stopped; pools keep running and are adopted at the next start");
    Ok(())
}
