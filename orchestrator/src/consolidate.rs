//! Consolidation: which pool to empty by moving its tenants into the free
//! room of other pools, so that it can be removed. No I/O.
//!
//! Departures leave holes that arrivals only partly refill, so over a long
//! churn pools slowly fill with gaps. [`plan_drain`] looks for the pool that
//! is cheapest to empty (fewest tenants) whose tenants all fit, best-fit and
//! largest first, into the other accepting pools of its class without a new
//! pool. Every drain it plans removes one pool, so repeated drains can never
//! move tenants back and forth.

use std::collections::HashMap;

use crate::placement::{place, Decision, PoolIndex, Request, Strategy};

/// A tenant as consolidation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    /// Its slot in its pool.
    pub slot: u32,
    /// What it needs (class: its pool's class).
    pub request: Request,
}

/// One tenant's move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The slot it leaves in the drained pool.
    pub from_slot: u32,
    /// The pool it goes to.
    pub to_pool: u64,
    /// The slot it gets there.
    pub to_slot: u32,
}

/// A pool to empty and where each of its tenants goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// The pool to empty (and remove afterwards).
    pub pool: u64,
    /// One move per tenant of the pool.
    pub moves: Vec<Move>,
}

/// Limits of one planning round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Drain only pools with at most this many tenants (each move restarts a tenant).
    pub max_moves: usize,
    /// Free slots of the default class that must remain after the drain
    /// (`SLOTPACK_WARM_SLOTS`).
    pub keep_free_slots: u64,
    /// Candidate pools tried per round (bounds the cost on large fleets).
    pub max_candidates: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_moves: usize::MAX,
            keep_free_slots: 0,
            max_candidates: 16,
        }
    }
}

/// Plan one drain, or `None` when no pool can be emptied into the others.
/// `residents` holds the tenants of each pool; pools missing from it are
/// never drained (their tenants are unknown).
pub fn plan_drain(
    index: &PoolIndex,
    residents: &HashMap<u64, Vec<Resident>>,
    limits: Limits,
) -> Option<Drain> {
    let mut candidates: Vec<(usize, u64, u64)> = index
        .pools()
        .filter(|p| p.accepting && !p.used_slots.is_empty())
        .filter_map(|p| {
            let ts = residents.get(&p.number)?;
            (ts.len() == p.used_slots.len() && ts.len() <= limits.max_moves).then_some((
                ts.len(),
                p.used_memory_mb,
                p.number,
            ))
        })
        .collect();
    candidates.sort_unstable();
    let mut work = index.clone();
    for &(_, _, number) in candidates.iter().take(limits.max_candidates) {
        if let Some(d) = try_drain(&mut work, number, &residents[&number], limits) {
            return Some(d);
        }
    }
    None
}

/// Place every tenant of `number` elsewhere in `work`; on failure undo the
/// trial so `work` is as before.
fn try_drain(
    work: &mut PoolIndex,
    number: u64,
    tenants: &[Resident],
    limits: Limits,
) -> Option<Drain> {
    let source = work.get(number)?.clone();
    if source.class.is_none() {
        let after = work
            .free_slots(&None)
            .saturating_sub(u64::from(source.free_slots()));
        if after < limits.keep_free_slots + tenants.len() as u64 {
            return None;
        }
    }
    let mut closed = source.clone();
    closed.accepting = false;
    work.upsert(closed);
    let mut order: Vec<&Resident> = tenants.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse((t.request.memory_mb, t.request.cpu_millis)));
    let mut moves = Vec::with_capacity(order.len());
    for t in &order {
        let r = Request {
            class: source.class.clone(),
            ..t.request.clone()
        };
        match place(work, &r, Strategy::BestFit) {
            Decision::Place { pool, slot } => {
                work.take(pool, slot, &r);
                moves.push(Move {
                    from_slot: t.slot,
                    to_pool: pool,
                    to_slot: slot,
                });
            }
            Decision::NewPool => {
                // moves[i] is the move of order[i].
                for (m, t) in moves.iter().zip(&order) {
                    work.release(
                        m.to_pool,
                        m.to_slot,
                        t.request.memory_mb,
                        t.request.cpu_millis,
                    );
                }
                work.upsert(source);
                return None;
            }
        }
    }
    Some(Drain {
        pool: number,
        moves,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::placement::PoolCapacity;

    fn req(mem: u64) -> Request {
        Request {
            memory_mb: mem,
            cpu_millis: 100,
            class: None,
        }
    }

    /// A pool of 4 slots and 1000 MiB holding tenants of the given sizes in slots 0, 1, ….
    fn pool(number: u64, sizes: &[u64]) -> (PoolCapacity, Vec<Resident>) {
        let residents: Vec<Resident> = sizes
            .iter()
            .enumerate()
            .map(|(i, &m)| Resident {
                slot: i as u32,
                request: req(m),
            })
            .collect();
        let cap = PoolCapacity {
            number,
            class: None,
            slots: 4,
            memory_mb: 1000,
            cpu_millis: 4000,
            used_slots: (0..sizes.len() as u32).collect::<BTreeSet<_>>(),
            used_memory_mb: sizes.iter().sum(),
            used_cpu_millis: 100 * sizes.len() as u64,
            accepting: true,
        };
        (cap, residents)
    }

    fn fleet(pools: &[(u64, &[u64])]) -> (PoolIndex, HashMap<u64, Vec<Resident>>) {
        let mut idx = PoolIndex::new();
        let mut res = HashMap::new();
        for (n, sizes) in pools {
            let (cap, r) = pool(*n, sizes);
            idx.upsert(cap);
            res.insert(*n, r);
        }
        (idx, res)
    }

    #[test]
    fn drains_the_pool_with_fewest_tenants_into_the_others() {
        let (idx, res) = fleet(&[(0, &[500, 200]), (1, &[100]), (2, &[600, 150])]);
        let d = plan_drain(&idx, &res, Limits::default()).expect("a drain");
        assert_eq!(d.pool, 1);
        // Best-fit: the fullest pool with room for 100 MiB is pool 2 (750 used).
        assert_eq!(
            d.moves,
            vec![Move {
                from_slot: 0,
                to_pool: 2,
                to_slot: 2
            }]
        );
        // The caller's index is untouched.
        assert_eq!(idx.get(2).unwrap().used_memory_mb, 750);
    }

    #[test]
    fn largest_first_fits_where_smallest_first_would_not() {
        // Pool 1's 100, 200, 200 into 300 free (pool 0) and 200 free (pool 2):
        // smallest first would put 100 into pool 2 and strand a 200.
        let (idx, res) = fleet(&[(0, &[400, 300]), (1, &[100, 200, 200]), (2, &[400, 400])]);
        let d = plan_drain(&idx, &res, Limits::default()).expect("a drain");
        assert_eq!(d.pool, 1);
        let m = |from_slot, to_pool, to_slot| Move {
            from_slot,
            to_pool,
            to_slot,
        };
        assert_eq!(d.moves, vec![m(1, 2, 2), m(2, 0, 2), m(0, 0, 3)]);
    }

    #[test]
    fn nothing_when_the_tenants_do_not_fit_elsewhere() {
        let (idx, res) = fleet(&[(0, &[900]), (1, &[200]), (2, &[850])]);
        assert_eq!(plan_drain(&idx, &res, Limits::default()), None);
        // A single pool can never be drained.
        let (idx, res) = fleet(&[(0, &[10])]);
        assert_eq!(plan_drain(&idx, &res, Limits::default()), None);
    }

    #[test]
    fn a_failed_trial_leaves_no_trace() {
        // Pool 1's first 300 fits in pool 0 (300 free), its second fits nowhere.
        let (idx, res) = fleet(&[(0, &[400, 300]), (1, &[300, 300]), (2, &[450, 450])]);
        let mut work = idx.clone();
        assert_eq!(try_drain(&mut work, 1, &res[&1], Limits::default()), None);
        for p in idx.pools() {
            assert_eq!(work.get(p.number), Some(p));
        }
        assert_eq!(plan_drain(&idx, &res, Limits::default()), None);
    }

    #[test]
    fn tries_the_next_candidate_after_one_that_does_not_fit() {
        // Pool 1 (one tenant of 600) fits nowhere; pool 3 then goes:
        // 300 into pool 2 (the fullest with room), 250 into pool 0.
        let (idx, res) = fleet(&[
            (0, &[400, 200]),
            (1, &[600]),
            (2, &[500, 200]),
            (3, &[300, 250]),
        ]);
        let d = plan_drain(&idx, &res, Limits::default()).expect("a drain");
        assert_eq!(d.pool, 3);
        let targets: Vec<u64> = d.moves.iter().map(|m| m.to_pool).collect();
        assert_eq!(targets, vec![2, 0]);
    }

    #[test]
    fn respects_max_moves_warm_slots_draining_pools_and_classes() {
        let (idx, res) = fleet(&[(0, &[100, 100]), (1, &[100, 100])]);
        let one = Limits {
            max_moves: 1,
            ..Limits::default()
        };
        assert_eq!(plan_drain(&idx, &res, one), None);
        // 4 free slots now; after a drain the other pool is full (0 free).
        let warm = Limits {
            keep_free_slots: 1,
            ..Limits::default()
        };
        assert_eq!(plan_drain(&idx, &res, warm), None);
        assert!(plan_drain(&idx, &res, Limits::default()).is_some());

        // A pool that is not accepting is neither drained nor a target.
        let (mut idx, res) = fleet(&[(0, &[100]), (1, &[100])]);
        let mut closed = idx.get(1).unwrap().clone();
        closed.accepting = false;
        idx.upsert(closed);
        assert_eq!(plan_drain(&idx, &res, Limits::default()), None);

        // Tenants move within their class only.
        let (mut idx, res) = fleet(&[(0, &[100]), (1, &[100])]);
        let mut gpu = idx.get(1).unwrap().clone();
        gpu.class = Some("gpu".into());
        idx.upsert(gpu);
        assert_eq!(plan_drain(&idx, &res, Limits::default()), None);
    }

    #[test]
    fn pools_with_unknown_residents_are_left_alone() {
        let (idx, mut res) = fleet(&[(0, &[100]), (1, &[100])]);
        res.remove(&0);
        res.get_mut(&1).unwrap().clear();
        assert_eq!(plan_drain(&idx, &res, Limits::default()), None);
    }
}
