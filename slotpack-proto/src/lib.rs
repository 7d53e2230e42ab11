//! What the slot-agent and the orchestrator share, and all the orchestrator
//! may use of the agent: the wire types of the agent's API and their checks
//! ([`protocol`]), the JSON error shape ([`http_error`]), spec expansion
//! ([`expand`]), the ping probe a spec names ([`ping`]), `/proc` readers
//! ([`procfs`]), the clock ([`clock`]) and token comparison ([`auth`]).
//!
//! The orchestrator depends on this crate and not on `slot-agent`, so Cargo
//! keeps it from reaching into the supervisor.

pub mod auth;
pub mod clock;
pub mod expand;
pub mod http_error;
pub mod ping;
pub mod procfs;
pub mod protocol;
