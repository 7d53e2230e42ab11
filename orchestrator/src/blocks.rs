//! Where a new pool's ports and slot users go: a pure choice over the
//! ranges that stored pools already hold.
//!
//! Block `b` has slot ports `pool_base_port + b·width ..`, agent port
//! `pool_base_port − 1 − b` and slot uids `uid_base + b·width ..`. A stored
//! pool keeps the ranges it was given, so when `MAX_BOTS_PER_CONTAINER` (the
//! width) changes between runs, the first block is taken whose ranges touch
//! no stored pool's, instead of one that overlaps an older, wider pool.

use std::ops::Range;

/// The ranges one stored pool holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Block index.
    pub block: u32,
    /// Slot ports.
    pub ports: Range<u32>,
    /// Agent port.
    pub agent_port: u32,
    /// Slot uids.
    pub uids: Range<u64>,
}

/// What a new pool needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Slots of the new pool.
    pub slots: u32,
    /// Ports per block (`MAX_BOTS_PER_CONTAINER` now; at least `slots`).
    pub width: u32,
    /// Port of slot 0 of block 0.
    pub pool_base_port: u16,
    /// Uid of slot 0 of block 0.
    pub uid_base: u32,
}

/// The ranges chosen for a new pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Block index.
    pub block: u32,
    /// Port of slot 0.
    pub base_port: u16,
    /// Agent port.
    pub agent_port: u16,
    /// Uid of slot 0.
    pub uid_base: u32,
}

fn overlaps<T: Ord>(a: &Range<T>, b: &Range<T>) -> bool {
    a.start < b.end && b.start < a.end
}

/// The lowest block whose ports, agent port and uids are all free of every
/// held range and whose `usable` check (ports bindable right now) passes;
/// `None` when the port space is used up.
pub fn choose(held: &[Held], want: Want, usable: impl Fn(&Block) -> bool) -> Option<Block> {
    let width = want.width.max(want.slots).max(1);
    let base = u32::from(want.pool_base_port);
    for b in 0u32.. {
        let first = base.checked_add(b.checked_mul(width)?)?;
        let ports = first..first.checked_add(want.slots)?;
        let agent = base.checked_sub(1)?.checked_sub(b)?;
        if ports.end > u32::from(u16::MAX) + 1 || agent == 0 {
            return None;
        }
        let uid0 = u64::from(want.uid_base) + u64::from(b) * u64::from(width);
        let uids = uid0..uid0 + u64::from(want.slots);
        if uids.end > u64::from(u32::MAX) {
            return None;
        }
        let clash = held.iter().any(|h| {
            h.block == b
                || overlaps(&h.ports, &ports)
                || h.ports.contains(&agent)
                || ports.contains(&h.agent_port)
                || h.agent_port == agent
                || overlaps(&h.uids, &uids)
        });
        if clash {
            continue;
        }
        let chosen = Block {
            block: b,
            base_port: first as u16,
            agent_port: agent as u16,
            uid_base: uid0 as u32,
        };
        if usable(&chosen) {
            return Some(chosen);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(slots: u32, width: u32) -> Want {
        Want {
            slots,
            width,
            pool_base_port: 9000,
            uid_base: 10_000,
        }
    }

    fn hold(b: Block, slots: u32) -> Held {
        Held {
            block: b.block,
            ports: u32::from(b.base_port)..u32::from(b.base_port) + slots,
            agent_port: u32::from(b.agent_port),
            uids: u64::from(b.uid_base)..u64::from(b.uid_base) + u64::from(slots),
        }
    }

    #[test]
    fn blocks_follow_each_other() {
        let a = choose(&[], want(10, 10), |_| true).unwrap();
        assert_eq!(
            (a.block, a.base_port, a.agent_port, a.uid_base),
            (0, 9000, 8999, 10_000)
        );
        let b = choose(&[hold(a, 10)], want(10, 10), |_| true).unwrap();
        assert_eq!(
            (b.block, b.base_port, b.agent_port, b.uid_base),
            (1, 9010, 8998, 10_010)
        );
    }

    #[test]
    fn a_wider_width_never_overlaps_older_pools() {
        // Two pools of 3 slots stored, then the width grows to 5.
        let a = choose(&[], want(3, 3), |_| true).unwrap();
        let b = choose(&[hold(a, 3)], want(3, 3), |_| true).unwrap();
        let held = [hold(a, 3), hold(b, 3)];
        let c = choose(&held, want(5, 5), |_| true).unwrap();
        let hc = hold(c, 5);
        for h in &held {
            assert!(!overlaps(&h.ports, &hc.ports) && !overlaps(&h.uids, &hc.uids));
            assert_ne!(h.agent_port, hc.agent_port);
        }
        assert_eq!((c.block, c.base_port, c.uid_base), (2, 9010, 10_010));
        // Narrower again: block 1 (9002-9003) would touch pool a, block 2
        // is taken, so block 3 (9006-9007) is the first that fits.
        let d = choose(&[hold(a, 3), hold(c, 5)], want(2, 2), |_| true).unwrap();
        assert_eq!((d.block, d.base_port, d.uid_base), (3, 9006, 10_006));
    }

    #[test]
    fn unusable_blocks_are_skipped_and_the_space_ends() {
        let b = choose(&[], want(10, 10), |b| b.block != 0).unwrap();
        assert_eq!(b.block, 1);
        let mut w = want(10, 10);
        w.pool_base_port = 65_530;
        assert_eq!(choose(&[], w, |_| true), None);
    }
}
