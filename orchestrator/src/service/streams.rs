//! What the API's streams read: events after a point, scoped to the
//! caller, with the signal of new ones; a tenant's log piece by piece,
//! wherever the tenant runs.

use super::*;
use crate::agents::{LogChunk, LogRead};
use crate::db::EventRow;

/// Where a log follower is: the pool whose agent it reads, and the
/// agent's cursor in that log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPlace {
    /// The pool number.
    pool: u64,
    /// The agent's cursor.
    cursor: Option<String>,
}

impl Orchestrator {
    /// The bound on open streams per credential.
    pub fn stream_slots(&self) -> &Arc<crate::streams::StreamSlots> {
        &self.streams
    }

    /// Wakes at every new event (see [`Db::event_signal`]).
    pub fn event_signal(&self) -> tokio::sync::watch::Receiver<i64> {
        self.db.event_signal()
    }

    /// Up to `limit` events after `after`, oldest first, of what `caller`
    /// may see: every event for the admin, its tenants' for an owner.
    pub fn events_after(
        &self,
        caller: &Caller,
        after: i64,
        tenant: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        Ok(self.db.events_after(after, caller.owner(), tenant, limit)?)
    }

    /// The latest `limit` events `caller` may see, oldest first.
    pub fn latest_events(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        Ok(self.db.latest_events(caller.owner(), tenant, limit)?)
    }

    /// The next piece of tenant `id`'s log for a follower at `at` (`None`:
    /// its last `tail` lines), and where the follower is then. A tenant
    /// that moved is read from the start of its new pool's log.
    pub async fn log_piece(
        &self,
        caller: &Caller,
        id: &str,
        at: Option<&LogPlace>,
        tail: usize,
    ) -> Result<(axum::body::Bytes, LogPlace)> {
        let t = self.visible(caller, id)?;
        let pool = self.pool_of(&t)?;
        let read = match at {
            Some(LogPlace {
                pool: p,
                cursor: Some(c),
            }) if *p == pool.number => LogRead::After(c.clone()),
            Some(_) => LogRead::After("0-0".into()),
            None => LogRead::Tail(tail),
        };
        let LogChunk { bytes, cursor } = self.agents.logs(&self.endpoint(&pool), id, read).await?;
        Ok((
            bytes,
            LogPlace {
                pool: pool.number,
                cursor,
            },
        ))
    }
}
