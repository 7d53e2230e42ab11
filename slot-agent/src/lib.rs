//! slot-agent: the PID 1 process supervisor of a slotpack pool container.
//!
//! It starts, pings and restarts the programs of its slots, reaps every
//! zombie, forwards SIGTERM/SIGINT, and serves a small HTTP API. The binary
//! is a thin wrapper over [`run`].

pub mod access;
pub mod api;
pub mod config;
pub mod leftovers;
pub mod logs;
pub mod metrics;
pub mod policy;
pub mod ports;
pub mod program_env;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod tenant_data;

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

pub use config::AgentConfig;
use slotpack_proto::procfs;
use supervisor::{lock, Shared, Supervisor};

/// Errors that keep the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No API token was given.
    #[error("no API token: set SLOT_AGENT_TOKEN or --token-file")]
    NoToken,
    /// The token file could not be read.
    #[error("reading token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The state dir could not be prepared.
    #[error("state dir {path}: {source}")]
    StateDir {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The API address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Installing a signal handler failed.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// The API token from the flag/env or the token file.
pub fn resolve_token(cfg: &AgentConfig) -> Result<String, AgentError> {
    if let Some(path) = &cfg.token_file {
        let text = fs::read_to_string(path).map_err(|source| AgentError::TokenFile {
            path: path.display().to_string(),
            source,
        })?;
        let t = text.lines().next().unwrap_or("").trim().to_string();
        return if t.is_empty() {
            Err(AgentError::NoToken)
        } else {
            Ok(t)
        };
    }
    match &cfg.token {
        Some(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(AgentError::NoToken),
    }
}

/// Run the agent until SIGTERM or SIGINT; returns once every program ended.
/// Must be called inside a current-thread tokio runtime.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let token = resolve_token(&cfg)?;
    let is_pid1 = std::process::id() == 1;
    if !is_pid1 {
        // Orphans of our programs are re-parented to us, so we reap them.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            eprintln!("slot-agent: cannot become child subreaper: {e}");
        }
    }
    raise_fd_limit();
    // Whatever the agent or a program creates is private unless made otherwise.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let isolate = nix::unistd::geteuid().is_root();
    let store = prepare_state_dir(&cfg)?;
    let sandbox = isolate.then(|| {
        sandbox::Sandbox::detect(
            &sandbox::group_name(&cfg.state_dir),
            cfg.all_guarded(),
            cfg.fast_cgroup_moves,
        )
    });
    end_leftovers(&store, isolate.then_some(&cfg), sandbox.as_ref());

    // Handlers first, so no exit or signal is missed once programs run.
    let mut sigchld = signal(SignalKind::child()).map_err(AgentError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: cfg.listen.to_string(),
            source,
        })?;

    let police = sandbox.as_ref().is_none_or(|s| !s.binds_enforced());
    let described = sandbox.as_ref().map_or("off".to_string(), |s| s.describe());
    let sup = Supervisor::new(&cfg, store.clone(), isolate, sandbox.clone());
    {
        let mut s = lock(&sup);
        let records = store.load().map_err(|source| AgentError::StateDir {
            path: cfg.state_dir.display().to_string(),
            source,
        })?;
        let data = tenant_data::TenantData::new(cfg.tenants());
        for (id, mut rec) in records {
            // A home of the layout before per-tenant data moves in once.
            if let Some(slot) = rec.spec.slot {
                match data.adopt_slot_home(&id, &cfg.homes().join(slot.to_string())) {
                    Ok(true) => eprintln!("slot-agent: {id}: slot {slot}'s home is now its own"),
                    Ok(false) => {}
                    Err(e) => eprintln!("slot-agent: {id}: moving slot {slot}'s home: {e}"),
                }
            }
            let valid = s.validate(&id, &mut rec.spec);
            match valid.and_then(|_| s.insert(&id, rec.spec, rec.desired)) {
                Ok(()) => {}
                Err(e) => eprintln!("slot-agent: not restoring {id}: {e}"),
            }
        }
        s.start_desired();
        s.reap();
    }

    let reaper = {
        let sup = sup.clone();
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                lock(&sup).reap();
            }
        })
    };
    let sampler = tokio::spawn(sample_loop(sup.clone(), cfg.sample_interval(), police));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = api::router(api::Api {
        sup: sup.clone(),
        token: Arc::from(token.as_str()),
        sandbox: Arc::from(described.as_str()),
    });
    let limits = server::Limits {
        max_connections: cfg.max_connections as usize,
        header_timeout: Duration::from_millis(cfg.header_timeout_ms.max(1)),
    };
    let server = tokio::spawn(server::serve(listener, app, limits, async {
        let _ = stop_rx.await;
    }));
    eprintln!(
        "slot-agent: listening on {} (pid {}, {} slots from port {}, isolation {}, sandbox: {})",
        cfg.listen,
        std::process::id(),
        cfg.slots,
        cfg.base_port,
        if isolate { "on" } else { "off" },
        described
    );

    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    shutdown(&sup).await;
    // What the slots left (setsid escapes): by cgroup, or by uid without.
    match sandbox.as_ref().and_then(|s| s.cgroups.as_ref()) {
        Some(c) => {
            for slot in 0..cfg.slots {
                c.kill(slot);
            }
        }
        None => {
            if let Some(uids) = lock(&sup).slot_uids() {
                leftovers::end_processes(uids);
            }
        }
    }
    if let Some(s) = sandbox.as_ref() {
        if let Some(c) = &s.cgroups {
            c.remove(cfg.slots);
        }
        if let Some(g) = &s.guard {
            g.remove();
        }
    }
    let _ = stop_tx.send(());
    sampler.abort();
    reaper.abort();
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    Ok(())
}

/// Stop every program at once, each within its stop timeout, reaping as they go.
async fn shutdown(sup: &Shared) {
    let limit = {
        let mut s = lock(sup);
        s.begin_shutdown();
        s.max_stop_timeout(None)
    };
    let deadline = Instant::now() + limit + Duration::from_secs(2);
    let mut sigchld = signal(SignalKind::child()).ok();
    loop {
        {
            let mut s = lock(sup);
            s.reap();
            if s.all_down() || Instant::now() >= deadline {
                return;
            }
        }
        // Wake on the next exit, or poll in case the signal was consumed.
        let wait = Duration::from_millis(20);
        match sigchld.as_mut() {
            Some(c) => {
                let _ = tokio::time::timeout(wait, c.recv()).await;
            }
            None => tokio::time::sleep(wait).await,
        }
    }
}

/// Data folders are measured every this many samples.
const DISK_EVERY: u64 = 10;

/// Every `every`: memory per program (from the slot cgroups, or from
/// `/proc` without them) and, where the kernel does not limit binds
/// (`police`), listeners on slot ports.
async fn sample_loop(sup: Shared, every: Duration, police: bool) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ports are policed only with slot users (each slot its own uid).
    let police = police && lock(&sup).slot_uids().is_some();
    let kernel = lock(&sup).kernel_limits();
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let (rss, cpu) = if kernel {
            Default::default()
        } else {
            let all = procfs::all();
            (procfs::rss_by_group(&all), procfs::cpu_usec_by_group(&all))
        };
        // The tenants' data folders are walked every tenth sample, off the
        // supervisor's lock and off the runtime's thread.
        if n.is_multiple_of(DISK_EVERY) {
            let dirs = lock(&sup).data_dirs();
            let sup2 = sup.clone();
            tokio::task::spawn_blocking(move || {
                let sizes = dirs
                    .into_iter()
                    .map(|(id, dir)| (id, tenant_data::size_of(&dir)))
                    .collect();
                lock(&sup2).set_disk(sizes);
            });
        }
        n += 1;
        let listeners = if police {
            procfs::listeners()
        } else {
            Vec::new()
        };
        let mut s = lock(&sup);
        s.sample_memory(&rss);
        s.sample_cpu(&cpu, std::time::Instant::now());
        s.police_ports(&listeners);
    }
}

fn prepare_state_dir(cfg: &AgentConfig) -> Result<store::Store, AgentError> {
    let err = |source| AgentError::StateDir {
        path: cfg.state_dir.display().to_string(),
        source,
    };
    let dir = &cfg.state_dir;
    let data = tenant_data::TenantData::new(cfg.tenants());
    fs::create_dir_all(dir.join("logs")).map_err(err)?;
    data.create_root().map_err(err)?;
    // Slot users must traverse into their homes but list nothing; the
    // state dir is theirs to traverse only when the homes are inside it.
    let inside = data.root().starts_with(dir);
    store::set_mode(dir, if inside { 0o711 } else { 0o700 }).map_err(err)?;
    store::set_mode(&dir.join("logs"), 0o700).map_err(err)?;
    store::Store::open(dir).map_err(err)
}

/// End process groups that a previous agent (killed before it could stop
/// them) left running, so the slot ports are free again; with isolation,
/// also every process of a slot user (whatever group it moved to).
/// With slot cgroups only what is in them is ended: never a process of
/// another agent or deployment that happens to run under the same uids.
fn end_leftovers(
    store: &store::Store,
    isolated: Option<&AgentConfig>,
    sandbox: Option<&sandbox::Sandbox>,
) {
    let mut n = store.end_noted_groups();
    match (isolated, sandbox.and_then(|s| s.cgroups.as_ref())) {
        (Some(cfg), Some(c)) => {
            for slot in 0..cfg.slots {
                n += c.kill(slot);
            }
        }
        (Some(cfg), None) => {
            let base = cfg.slot_uid_base;
            n += leftovers::end_processes(base..base.saturating_add(cfg.slots));
        }
        (None, _) => {}
    }
    if n > 0 {
        eprintln!("slot-agent: ended {n} process(es) left by a previous agent");
    }
}

/// For whoever removes a pool whose agent is gone: kill what is left in
/// its slots' cgroups (as root) and remove those groups and its socket
/// guard's folders; returns how many processes were killed.
pub fn end_slot_groups(cfg: &AgentConfig) -> usize {
    if !nix::unistd::geteuid().is_root() {
        return 0;
    }
    let name = sandbox::group_name(&cfg.state_dir);
    let Ok(c) = sandbox::Cgroups::setup(&name) else {
        return 0;
    };
    // The groups there are, whatever slot count this call was given.
    let present = c.present();
    let n = present.iter().map(|s| c.kill(*s)).sum();
    c.remove(present.last().map_or(0, |s| s + 1).max(cfg.slots));
    if matches!(c.layout(), sandbox::Layout::V1 { .. }) {
        sandbox::socket_guard::remove_left(&name);
    }
    n
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
