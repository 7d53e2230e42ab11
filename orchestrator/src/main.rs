//! `slotpack`: the orchestrator binary (`serve`, `status`).

use clap::{Parser, Subcommand};
use orchestrator::config::{load_config_file, ServeConfig};
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
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let classes = match load_config_file(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("slotpack: error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut cli = Cli::parse();
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
