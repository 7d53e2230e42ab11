//! slotpack orchestrator library.

pub mod placement;
