//! `slotpack`: the orchestrator binary (`serve`, `status`, `migrate`,
//! `apply`, and the operator's commands of [`orchestrator::cli`]).

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use orchestrator::cli;
use orchestrator::config::{read_config_file, with_file_defaults, ServeConfig};
use orchestrator::status::StatusArgs;

/// mimalloc: fewer cycles per request on the proxy path than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "slotpack",
    version,
    about = "Pack tenant processes into shared pool containers"
)]
struct Cli {
    /// TOML file of settings (keys are the environment names); flags and env win.
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the orchestrator: API, proxy, metrics, health loop.
    Serve(Box<ServeConfig>),
    /// Show pools and tenants of a running orchestrator.
    Status(StatusArgs),
    /// Move legacy one-container-per-tenant deployments into pools.
    Migrate(Box<orchestrator::migrate::MigrateArgs>),
    /// Create a tenant from a JSON file, or give an existing one its spec.
    Apply(orchestrator::apply::ApplyArgs),
    /// List tenants: state, health, pool/slot, port, uptime, restarts, use.
    Tenants(cli::TenantsArgs),
    /// Print a tenant's log; `-f` follows it.
    Logs(cli::LogsArgs),
    /// Restart tenants.
    Restart(cli::ActionArgs),
    /// Stop tenants (they stay placed; `start` starts them again).
    Stop(cli::ActionArgs),
    /// Start stopped tenants.
    Start(cli::ActionArgs),
    /// Delete tenants and their data.
    Delete(cli::ActionArgs),
    /// Print lifecycle events; `-f` follows them.
    Events(cli::EventsArgs),
    /// A local deployment's agents (`agents stop`).
    Agents(cli::AgentsArgs),
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Settings of a config file become clap defaults: flag > env > file.
    let file = match read_config_file(&args)
        .and_then(|f| Ok((with_file_defaults(Cli::command(), &f.settings)?, f.classes)))
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("slotpack: error: config file: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let (cmd, classes) = file;
    let matches = cmd.get_matches_from(&args);
    // A command line is readable by every process on the host (a tenant's
    // too, in `/proc/<pid>/cmdline`): no secret may come from it.
    if let Some(("serve", m)) = matches.subcommand() {
        if m.value_source("admin_token") == Some(clap::parser::ValueSource::CommandLine) {
            eprintln!(
                "slotpack: error: --admin-token is refused: every process on this host can \
                 read a command line; set SLOTPACK_ADMIN_TOKEN or pass --admin-token-file FILE"
            );
            return std::process::ExitCode::from(2);
        }
    }
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Serve(cfg) = &mut cli.command {
        cfg.classes = classes;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slotpack: error: starting runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match cli.command {
            Command::Serve(cfg) => orchestrator::serve(*cfg).await,
            Command::Status(a) => orchestrator::status::run(a).await,
            Command::Migrate(a) => orchestrator::migrate::run(*a).await,
            Command::Apply(a) => orchestrator::apply::run(a).await,
            Command::Tenants(a) => cli::tenants(a).await,
            Command::Logs(a) => cli::logs(a).await,
            Command::Restart(a) => cli::act(cli::Action::Restart, a).await,
            Command::Stop(a) => cli::act(cli::Action::Stop, a).await,
            Command::Start(a) => cli::act(cli::Action::Start, a).await,
            Command::Delete(a) => cli::act(cli::Action::Delete, a).await,
            Command::Events(a) => cli::events(a).await,
            Command::Agents(a) => cli::agents(a).await,
        }
    });
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slotpack: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
