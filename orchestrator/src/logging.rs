//! The log of `slotpack serve`: `tracing` events with structured fields on
//! stderr, as text or as JSON lines (`SLOTPACK_LOG_FORMAT=json`), filtered
//! by `SLOTPACK_LOG` (`info`, `warn`, `info,orchestrator::proxy=debug`, ...;
//! tracing-subscriber's target syntax). Each API request runs in a `request`
//! span at debug level (method, path), so `orchestrator=debug` shows which
//! request an event belongs to, and costs nothing at the default level.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Install the global subscriber; `filter` in target syntax, `format`
/// `text` or `json`. Errors name the bad setting.
pub fn init(filter: &str, format: &str) -> Result<(), String> {
    let targets: Targets = filter
        .parse()
        .map_err(|e| format!("SLOTPACK_LOG {filter:?}: {e}"))?;
    let registry = tracing_subscriber::registry().with(targets);
    let done = match format {
        "text" => registry
            .with(
                tracing_subscriber::fmt::layer()
                    // Colours for a terminal only, not for a log file.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        "json" => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        other => return Err(format!("SLOTPACK_LOG_FORMAT {other:?}: want text or json")),
    };
    // A second init (tests in one process) keeps the first subscriber.
    let _ = done;
    Ok(())
}
