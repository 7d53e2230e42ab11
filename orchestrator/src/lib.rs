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
///
/// The API is served by one single-threaded runtime per core, each with its
/// own `SO_REUSEPORT` listener and proxy client, so a proxied request and its
/// upstream connection stay on one thread (as nginx's workers do). The
/// health loop runs on the calling runtime.
pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let listen = cfg.listen;
    let svc = build(cfg)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut listeners = Vec::with_capacity(workers);
    for _ in 0..workers {
        listeners
            .push(reuseport_listener(listen).with_context(|| format!("listening on {listen}"))?);
    }
    let report = svc.recover().await?;
    eprintln!(
        "slotpack: serving on http://{listen} ({} backend, {} pools, {} issues at start-up, {workers} workers)",
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut threads = Vec::new();
    for (n, listener) in listeners.into_iter().enumerate() {
        let svc = svc.clone();
        let mut stop = stop_rx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("slotpack-api-{n}"))
                .spawn(move || -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        use axum::serve::ListenerExt;
                        let listener = tokio::net::TcpListener::from_std(listener)?.tap_io(|tcp| {
                            let _ = tcp.set_nodelay(true);
                        });
                        let app = api::router(api::App {
                            svc,
                            proxy: proxy::client(),
                        });
                        axum::serve(listener, app)
                            .with_graceful_shutdown(async move {
                                let _ = stop.wait_for(|s| *s).await;
                            })
                            .await?;
                        Ok(())
                    })
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
    for t in threads {
        match t.join() {
            Ok(r) => r?,
            Err(_) => bail!("an API worker panicked"),
        }
    }
    eprintln!("slotpack: stopped; pools keep running and are adopted at the next start");
    Ok(())
}

/// A non-blocking listener on `addr` with `SO_REUSEPORT`, so that every
/// worker accepts on its own socket and the kernel spreads connections.
fn reuseport_listener(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)?;
    let l = sock.listen(1024)?;
    l.into_std()
}
