//! slotpack orchestrator library (issue B: not built yet).
