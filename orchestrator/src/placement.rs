//! Placement: which pool and slot a new tenant gets. No I/O.
//!
//! [`PoolIndex`] keeps the free capacity of every pool ordered so that a
//! decision costs a few ordered-set lookups instead of a scan of all pools;
//! [`place`] reads it and decides. The caller (the service) owns the index
//! and updates it after it commits a decision to the database.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How to choose among pools that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The fullest pool that fits (least free memory, then fewest free slots).
    #[default]
    BestFit,
    /// The lowest-numbered pool that fits.
    FirstFit,
    /// The emptiest pool that fits.
    Spread,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "best-fit" => Ok(Strategy::BestFit),
            "first-fit" => Ok(Strategy::FirstFit),
            "spread" => Ok(Strategy::Spread),
            _ => Err(format!(
                "unknown strategy {s:?}: want best-fit, first-fit or spread"
            )),
        }
    }
}

/// What a tenant needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Memory in MiB.
    pub memory_mb: u64,
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Pool class it must land in (`None`: the default class).
    pub class: Option<String>,
}

/// One pool's capacity and use, as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolCapacity {
    /// Pool number (also orders first-fit).
    pub number: u64,
    /// Class of the pool.
    pub class: Option<String>,
    /// Slots in the pool.
    pub slots: u32,
    /// Memory capacity in MiB.
    pub memory_mb: u64,
    /// CPU capacity in millicores.
    pub cpu_millis: u64,
    /// Slots in use.
    pub used_slots: BTreeSet<u32>,
    /// Memory in use in MiB.
    pub used_memory_mb: u64,
    /// CPU in use in millicores.
    pub used_cpu_millis: u64,
    /// Whether new tenants may be placed here (false while draining or failed).
    pub accepting: bool,
}

impl PoolCapacity {
    /// Free slots.
    pub fn free_slots(&self) -> u32 {
        self.slots.saturating_sub(self.used_slots.len() as u32)
    }
    fn free_memory(&self) -> u64 {
        self.memory_mb.saturating_sub(self.used_memory_mb)
    }
    fn free_cpu(&self) -> u64 {
        self.cpu_millis.saturating_sub(self.used_cpu_millis)
    }
    /// Lowest free slot.
    pub fn first_free_slot(&self) -> Option<u32> {
        (0..self.slots).find(|s| !self.used_slots.contains(s))
    }
    fn fits(&self, r: &Request) -> bool {
        self.accepting
            && self.free_slots() > 0
            && self.free_memory() >= r.memory_mb
            && self.free_cpu() >= r.cpu_millis
            && self.class == r.class
    }
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Put it in this pool's slot.
    Place {
        /// Pool number.
        pool: u64,
        /// Slot index.
        slot: u32,
    },
    /// Nothing fits: a new pool is needed.
    NewPool,
}

/// Key of the ordered set: (free memory, free slots, pool number).
type FreeKey = (u64, u32, u64);

/// Free capacity of all pools, per class, ordered for fast decisions.
#[derive(Debug, Default, Clone)]
pub struct PoolIndex {
    pools: HashMap<u64, PoolCapacity>,
    /// Pools with a free slot, by class, ordered by (free memory, free slots).
    by_free: HashMap<Option<String>, BTreeSet<FreeKey>>,
    /// Pools with a free slot, by class, ordered by number.
    by_number: HashMap<Option<String>, BTreeMap<u64, ()>>,
}

impl PoolIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace a pool.
    pub fn upsert(&mut self, pool: PoolCapacity) {
        self.remove(pool.number);
        if pool.accepting && pool.free_slots() > 0 {
            self.by_free
                .entry(pool.class.clone())
                .or_default()
                .insert(free_key(&pool));
            self.by_number
                .entry(pool.class.clone())
                .or_default()
                .insert(pool.number, ());
        }
        self.pools.insert(pool.number, pool);
    }

    /// Forget a pool.
    pub fn remove(&mut self, number: u64) -> Option<PoolCapacity> {
        let old = self.pools.remove(&number)?;
        if let Some(set) = self.by_free.get_mut(&old.class) {
            set.remove(&free_key(&old));
        }
        if let Some(m) = self.by_number.get_mut(&old.class) {
            m.remove(&number);
        }
        Some(old)
    }

    /// A pool's capacity.
    pub fn get(&self, number: u64) -> Option<&PoolCapacity> {
        self.pools.get(&number)
    }

    /// Every pool.
    pub fn pools(&self) -> impl Iterator<Item = &PoolCapacity> {
        self.pools.values()
    }

    /// Record a placed tenant.
    pub fn take(&mut self, pool: u64, slot: u32, r: &Request) {
        if let Some(mut p) = self.pools.get(&pool).cloned() {
            p.used_slots.insert(slot);
            p.used_memory_mb += r.memory_mb;
            p.used_cpu_millis += r.cpu_millis;
            self.upsert(p);
        }
    }

    /// Record a removed tenant.
    pub fn release(&mut self, pool: u64, slot: u32, memory_mb: u64, cpu_millis: u64) {
        if let Some(mut p) = self.pools.get(&pool).cloned() {
            if p.used_slots.remove(&slot) {
                p.used_memory_mb = p.used_memory_mb.saturating_sub(memory_mb);
                p.used_cpu_millis = p.used_cpu_millis.saturating_sub(cpu_millis);
            }
            self.upsert(p);
        }
    }

    /// Free slots over all accepting pools of `class`.
    pub fn free_slots(&self, class: &Option<String>) -> u64 {
        self.pools
            .values()
            .filter(|p| p.accepting && &p.class == class)
            .map(|p| u64::from(p.free_slots()))
            .sum()
    }
}

fn free_key(p: &PoolCapacity) -> FreeKey {
    (p.free_memory(), p.free_slots(), p.number)
}

/// Decide where `r` goes.
pub fn place(index: &PoolIndex, r: &Request, strategy: Strategy) -> Decision {
    let chosen = match strategy {
        Strategy::BestFit => best_fit(index, r),
        Strategy::FirstFit => index.by_number.get(&r.class).and_then(|m| {
            m.keys()
                .map(|n| &index.pools[n])
                .find(|p| p.fits(r))
                .map(|p| p.number)
        }),
        Strategy::Spread => index.by_free.get(&r.class).and_then(|set| {
            set.iter()
                .rev()
                .map(|(_, _, n)| &index.pools[n])
                .find(|p| p.fits(r))
                .map(|p| p.number)
        }),
    };
    match chosen.and_then(|n| Some((n, index.pools[&n].first_free_slot()?))) {
        Some((pool, slot)) => Decision::Place { pool, slot },
        None => Decision::NewPool,
    }
}

/// The pool with the least free memory that still fits (ties: fewest free
/// slots): a range lookup from the requested memory upwards.
fn best_fit(index: &PoolIndex, r: &Request) -> Option<u64> {
    let set = index.by_free.get(&r.class)?;
    set.range((r.memory_mb, 0, 0)..)
        .map(|(_, _, n)| &index.pools[n])
        .find(|p| p.fits(r))
        .map(|p| p.number)
}

/// Fewest pools that could hold the given load: the larger of the slot bound
/// and the memory bound (a lower bound for any placement).
pub fn lower_bound_pools(tenants: u64, memory_mb: u64, slots: u32, pool_memory_mb: u64) -> u64 {
    let by_slots = tenants.div_ceil(u64::from(slots.max(1)));
    let by_memory = memory_mb.div_ceil(pool_memory_mb.max(1));
    by_slots.max(by_memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(number: u64, used: &[u32], used_mem: u64) -> PoolCapacity {
        PoolCapacity {
            number,
            class: None,
            slots: 4,
            memory_mb: 1000,
            cpu_millis: 4000,
            used_slots: used.iter().copied().collect(),
            used_memory_mb: used_mem,
            used_cpu_millis: 0,
            accepting: true,
        }
    }

    fn req(mem: u64) -> Request {
        Request {
            memory_mb: mem,
            cpu_millis: 100,
            class: None,
        }
    }

    fn index(pools: Vec<PoolCapacity>) -> PoolIndex {
        let mut i = PoolIndex::new();
        for p in pools {
            i.upsert(p);
        }
        i
    }

    #[test]
    fn empty_index_needs_a_new_pool() {
        assert_eq!(
            place(&PoolIndex::new(), &req(1), Strategy::BestFit),
            Decision::NewPool
        );
    }

    #[test]
    fn best_fit_picks_the_fullest_pool_that_fits() {
        let i = index(vec![
            pool(0, &[0], 100),
            pool(1, &[0, 1, 2], 300),
            pool(2, &[0, 2], 200),
        ]);
        assert_eq!(
            place(&i, &req(100), Strategy::BestFit),
            Decision::Place { pool: 1, slot: 3 }
        );
        // Pool 1 lacks memory for 800: the next fullest with room is pool 2, slot 1.
        assert_eq!(
            place(&i, &req(750), Strategy::BestFit),
            Decision::Place { pool: 2, slot: 1 }
        );
        assert_eq!(place(&i, &req(950), Strategy::BestFit), Decision::NewPool);
    }

    #[test]
    fn best_fit_prefers_less_free_memory_among_equal_slots() {
        let i = index(vec![pool(0, &[0, 1], 100), pool(1, &[0, 1], 600)]);
        assert_eq!(
            place(&i, &req(300), Strategy::BestFit),
            Decision::Place { pool: 1, slot: 2 }
        );
        assert_eq!(
            place(&i, &req(500), Strategy::BestFit),
            Decision::Place { pool: 0, slot: 2 }
        );
    }

    #[test]
    fn first_fit_and_spread() {
        let i = index(vec![
            pool(3, &[0], 0),
            pool(1, &[0, 1, 2], 0),
            pool(2, &[], 0),
        ]);
        assert_eq!(
            place(&i, &req(10), Strategy::FirstFit),
            Decision::Place { pool: 1, slot: 3 }
        );
        assert_eq!(
            place(&i, &req(10), Strategy::Spread),
            Decision::Place { pool: 2, slot: 0 }
        );
    }

    #[test]
    fn full_draining_and_other_class_pools_are_skipped() {
        let mut draining = pool(2, &[], 0);
        draining.accepting = false;
        let mut gpu = pool(3, &[], 0);
        gpu.class = Some("gpu".into());
        let i = index(vec![pool(1, &[0, 1, 2, 3], 0), draining, gpu]);
        for s in [Strategy::BestFit, Strategy::FirstFit, Strategy::Spread] {
            assert_eq!(place(&i, &req(1), s), Decision::NewPool);
        }
        let r = Request {
            class: Some("gpu".into()),
            ..req(1)
        };
        assert_eq!(
            place(&i, &r, Strategy::BestFit),
            Decision::Place { pool: 3, slot: 0 }
        );
    }

    #[test]
    fn take_and_release_keep_the_index_true() {
        let mut i = index(vec![pool(0, &[], 0)]);
        for slot in 0..4 {
            assert_eq!(
                place(&i, &req(100), Strategy::BestFit),
                Decision::Place { pool: 0, slot }
            );
            i.take(0, slot, &req(100));
        }
        assert_eq!(place(&i, &req(100), Strategy::BestFit), Decision::NewPool);
        assert_eq!(i.free_slots(&None), 0);
        i.release(0, 2, 100, 100);
        assert_eq!(
            place(&i, &req(100), Strategy::BestFit),
            Decision::Place { pool: 0, slot: 2 }
        );
        assert_eq!(i.get(0).unwrap().used_memory_mb, 300);
        // Releasing a slot twice changes nothing.
        i.release(0, 2, 100, 100);
        assert_eq!(i.get(0).unwrap().used_memory_mb, 300);
    }

    #[test]
    fn lower_bound_takes_the_tighter_resource() {
        assert_eq!(lower_bound_pools(25, 100, 10, 4096), 3);
        assert_eq!(lower_bound_pools(5, 9000, 10, 4096), 3);
        assert_eq!(lower_bound_pools(0, 0, 10, 4096), 0);
    }
}
