//! `slot-agent` binary: parses flags and runs the agent on one thread.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cfg = slot_agent::AgentConfig::parse();
    if cfg.end_leftovers {
        return match slot_agent::store::Store::open(&cfg.state_dir) {
            Ok(store) => {
                let mut n = store.end_noted_groups();
                n += slot_agent::end_slot_groups(&cfg);
                println!("ended {n} program groups");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("slot-agent: error: {}: {e}", cfg.state_dir.display());
                std::process::ExitCode::FAILURE
            }
        };
    }
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
