//! `slot-agent` binary: parses flags and runs the agent on one thread.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cfg = slot_agent::AgentConfig::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slot-agent: error: starting runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(slot_agent::run(cfg)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slot-agent: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
