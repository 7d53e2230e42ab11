//! `cargo bench -p orchestrator --bench placement`: placement decisions per
//! second at 100 / 1,000 / 10,000 pools, and pools used ÷ lower bound under a
//! seeded churn workload, best-fit beside first-fit and spread.

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::time::Instant;

use orchestrator::placement::{
    lower_bound_pools, place, Decision, PoolCapacity, PoolIndex, Request, Strategy,
};

const SLOTS: u32 = 10;
const POOL_MEMORY_MB: u64 = 4096;
const POOL_CPU: u64 = 4000;

/// xorshift64*: a small seeded generator, so runs are repeatable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn tenant(rng: &mut Rng) -> Request {
    const MEM: [u64; 4] = [128, 256, 512, 1024];
    Request {
        memory_mb: MEM[rng.below(4) as usize],
        cpu_millis: 50 + rng.below(8) * 50,
        class: None,
    }
}

fn empty_pool(number: u64) -> PoolCapacity {
    PoolCapacity {
        number,
        class: None,
        slots: SLOTS,
        memory_mb: POOL_MEMORY_MB,
        cpu_millis: POOL_CPU,
        used_slots: BTreeSet::new(),
        used_memory_mb: 0,
        used_cpu_millis: 0,
        accepting: true,
    }
}

/// Pools about 90 % full, in random order of fullness.
fn fleet(pools: u64, rng: &mut Rng) -> PoolIndex {
    let mut idx = PoolIndex::new();
    for n in 0..pools {
        let mut p = empty_pool(n);
        let used = 5 + rng.below(6) as u32; // 5..=10 slots used
        for s in 0..used.min(SLOTS) {
            let r = tenant(rng);
            if p.used_memory_mb + r.memory_mb > POOL_MEMORY_MB {
                break;
            }
            p.used_slots.insert(s);
            p.used_memory_mb += r.memory_mb;
            p.used_cpu_millis += r.cpu_millis;
        }
        idx.upsert(p);
    }
    idx
}

fn decisions_per_second(pools: u64, strategy: Strategy) -> f64 {
    let mut rng = Rng(0x5107_9ACC ^ pools);
    let idx = fleet(pools, &mut rng);
    let reqs: Vec<Request> = (0..1024).map(|_| tenant(&mut rng)).collect();
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed().as_millis() < 400 {
        for r in &reqs {
            black_box(place(&idx, black_box(r), strategy));
        }
        n += reqs.len() as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Seeded churn: grow to `target` tenants, then `steps` random arrivals and
/// departures around that size; empty pools are removed at once. Returns the
/// mean and max of pools used ÷ lower bound over the churn phase.
fn churn(strategy: Strategy, target: u64, steps: u64, seed: u64) -> (f64, f64) {
    let mut rng = Rng(seed);
    let mut idx = PoolIndex::new();
    let mut next_pool = 0u64;
    let mut live: Vec<(u64, u32, Request)> = Vec::new();
    let mut mem_total = 0u64;
    let mut used_per_pool: HashMap<u64, u32> = HashMap::new();
    let (mut sum, mut max, mut samples) = (0.0, 0.0f64, 0u64);
    let arrive = |idx: &mut PoolIndex, next_pool: &mut u64, r: Request| -> (u64, u32, Request) {
        let (pool, slot) = match place(idx, &r, strategy) {
            Decision::Place { pool, slot } => (pool, slot),
            Decision::NewPool => {
                idx.upsert(empty_pool(*next_pool));
                *next_pool += 1;
                (*next_pool - 1, 0)
            }
        };
        idx.take(pool, slot, &r);
        (pool, slot, r)
    };
    for step in 0..target + steps {
        let grow = step < target || live.is_empty() || {
            // Random walk held near the target size.
            let bias = (target as f64 - live.len() as f64) / target as f64;
            (rng.below(1000) as f64) < 500.0 + 2000.0 * bias
        };
        if grow {
            let t = arrive(&mut idx, &mut next_pool, tenant(&mut rng));
            mem_total += t.2.memory_mb;
            *used_per_pool.entry(t.0).or_default() += 1;
            live.push(t);
        } else {
            let (pool, slot, r) = live.swap_remove(rng.below(live.len() as u64) as usize);
            idx.release(pool, slot, r.memory_mb, r.cpu_millis);
            mem_total -= r.memory_mb;
            let left = used_per_pool.get_mut(&pool).expect("pool");
            *left -= 1;
            if *left == 0 {
                used_per_pool.remove(&pool);
                idx.remove(pool);
            }
        }
        if step >= target {
            let lb = lower_bound_pools(live.len() as u64, mem_total, SLOTS, POOL_MEMORY_MB);
            let ratio = used_per_pool.len() as f64 / lb.max(1) as f64;
            sum += ratio;
            max = max.max(ratio);
            samples += 1;
        }
    }
    (sum / samples as f64, max)
}

fn main() {
    println!("placement decisions per second (pools ~90% full, {SLOTS} slots, {POOL_MEMORY_MB} MiB each)");
    println!(
        "{:>8} {:>14} {:>14} {:>14}",
        "pools", "best-fit", "first-fit", "spread"
    );
    for pools in [100, 1_000, 10_000] {
        println!(
            "{pools:>8} {:>12.2}M/s {:>12.2}M/s {:>12.2}M/s",
            decisions_per_second(pools, Strategy::BestFit) / 1e6,
            decisions_per_second(pools, Strategy::FirstFit) / 1e6,
            decisions_per_second(pools, Strategy::Spread) / 1e6,
        );
    }
    println!();
    println!("churn: 2,000 tenants, 50,000 arrivals/departures, seed 42; pools used / lower bound");
    for (name, s) in [
        ("best-fit", Strategy::BestFit),
        ("first-fit", Strategy::FirstFit),
        ("spread", Strategy::Spread),
    ] {
        let (mean, max) = churn(s, 2_000, 50_000, 42);
        println!("{name:>10}: mean {mean:.4}  max {max:.4}");
    }
}
