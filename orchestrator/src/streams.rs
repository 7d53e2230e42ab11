//! Bounds on the streams a client holds open (`logs?follow=true`,
//! `/api/events/stream`): at most so many per credential at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open streams per credential, at most `max` each.
#[derive(Debug)]
pub struct StreamSlots {
    max: u64,
    open: Mutex<HashMap<String, u64>>,
}

/// One open stream; its slot is given back when dropped (the client left
/// or the stream ended).
#[derive(Debug)]
pub struct StreamPermit {
    slots: Arc<StreamSlots>,
    key: String,
}

impl StreamSlots {
    /// At most `max` open streams per credential.
    pub fn new(max: u64) -> Arc<StreamSlots> {
        Arc::new(StreamSlots {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The most streams one credential may hold.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// A slot for one more stream of `key`, unless it holds `max` already.
    pub fn try_open(self: &Arc<Self>, key: &str) -> Option<StreamPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.to_string()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(StreamPermit {
            slots: self.clone(),
            key: key.to_string(),
        })
    }

    /// Streams open now, all credentials together.
    pub fn open(&self) -> u64 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.values().sum()
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_holds_at_most_max_streams_and_gets_them_back() {
        let s = StreamSlots::new(2);
        let a = s.try_open("a").unwrap();
        let _b = s.try_open("a").unwrap();
        assert!(s.try_open("a").is_none());
        // Another credential is not counted against the first.
        let _c = s.try_open("b").unwrap();
        assert_eq!(s.open(), 3);
        drop(a);
        let again = s.try_open("a");
        assert!(again.is_some());
        assert_eq!(s.open(), 3);
        drop(again);
        assert_eq!(s.open(), 2);
    }
}
