//! `slotpack` binary. The orchestrator is issue B and is not built yet.

fn main() -> std::process::ExitCode {
    eprintln!("slotpack: the orchestrator is not implemented yet (see ARCHITECTURE.md)");
    std::process::ExitCode::from(2)
}
