//! `cargo bench -p orchestrator --bench placement`: placement decisions per
//! second at 100 / 1,000 / 10,000 pools, and pools used ÷ lower bound under a
//! seeded churn workload, best-fit beside first-fit and spread.

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::time::Instant;

use orchestrator::consolidate::{plan_drain, Limits, Resident};
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

/// Pools about 90 % full, in random order of fullness, with their tenants.
fn fleet(pools: u64, rng: &mut Rng) -> (PoolIndex, HashMap<u64, Vec<Resident>>) {
    let mut idx = PoolIndex::new();
    let mut residents = HashMap::new();
    for n in 0..pools {
        let mut p = empty_pool(n);
        let mut mine = Vec::new();
        let used = 5 + rng.below(6) as u32; // 5..=10 slots used
        for s in 0..used.min(SLOTS) {
            let r = tenant(rng);
            if p.used_memory_mb + r.memory_mb > POOL_MEMORY_MB {
                break;
            }
            p.used_slots.insert(s);
            p.used_memory_mb += r.memory_mb;
            p.used_cpu_millis += r.cpu_millis;
            mine.push(Resident {
                slot: s,
                request: r,
            });
        }
        idx.upsert(p);
        residents.insert(n, mine);
    }
    (idx, residents)
}

fn decisions_per_second(pools: u64, strategy: Strategy) -> f64 {
    let mut rng = Rng(0x5107_9ACC ^ pools);
    let (idx, _) = fleet(pools, &mut rng);
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

/// Result of one churn run.
struct Churn {
    /// Mean of pools used ÷ lower bound over the churn phase.
    mean: f64,
    /// Its maximum.
    max: f64,
    /// Tenants moved by consolidation per 100 departures.
    moves_per_100_departures: f64,
}

/// Seeded churn: grow to `target` tenants, then `steps` random arrivals and
/// departures around that size; empty pools are removed at once. With
/// `consolidate_every = Some(k)`, one consolidation round (at most one pool
/// drained) runs every k steps, as the health tick would.
fn churn(
    strategy: Strategy,
    target: u64,
    steps: u64,
    seed: u64,
    consolidate_every: Option<u64>,
) -> Churn {
    let mut rng = Rng(seed);
    let mut idx = PoolIndex::new();
    let mut next_pool = 0u64;
    let mut live: Vec<(u64, u32, Request)> = Vec::new();
    let mut mem_total = 0u64;
    let mut residents: HashMap<u64, Vec<Resident>> = HashMap::new();
    let (mut sum, mut max, mut samples) = (0.0, 0.0f64, 0u64);
    let (mut moves, mut departures) = (0u64, 0u64);
    for step in 0..target + steps {
        let grow = step < target || live.is_empty() || {
            // Random walk held near the target size.
            let bias = (target as f64 - live.len() as f64) / target as f64;
            (rng.below(1000) as f64) < 500.0 + 2000.0 * bias
        };
        if grow {
            let r = tenant(&mut rng);
            let (pool, slot) = match place(&idx, &r, strategy) {
                Decision::Place { pool, slot } => (pool, slot),
                Decision::NewPool => {
                    idx.upsert(empty_pool(next_pool));
                    next_pool += 1;
                    (next_pool - 1, 0)
                }
            };
            idx.take(pool, slot, &r);
            mem_total += r.memory_mb;
            residents.entry(pool).or_default().push(Resident {
                slot,
                request: r.clone(),
            });
            live.push((pool, slot, r));
        } else {
            let (pool, slot, r) = live.swap_remove(rng.below(live.len() as u64) as usize);
            idx.release(pool, slot, r.memory_mb, r.cpu_millis);
            mem_total -= r.memory_mb;
            departures += u64::from(step >= target);
            let left = residents.get_mut(&pool).expect("pool");
            left.retain(|t| t.slot != slot);
            if left.is_empty() {
                residents.remove(&pool);
                idx.remove(pool);
            }
        }
        if consolidate_every.is_some_and(|k| step >= target && step % k == 0) {
            if let Some(d) = plan_drain(&idx, &residents, Limits::default()) {
                let from = residents.remove(&d.pool).expect("drained pool");
                for m in &d.moves {
                    let t = from.iter().find(|t| t.slot == m.from_slot).expect("tenant");
                    idx.take(m.to_pool, m.to_slot, &t.request);
                    residents.entry(m.to_pool).or_default().push(Resident {
                        slot: m.to_slot,
                        request: t.request.clone(),
                    });
                    let l = live
                        .iter_mut()
                        .find(|l| l.0 == d.pool && l.1 == m.from_slot)
                        .expect("live tenant");
                    (l.0, l.1) = (m.to_pool, m.to_slot);
                }
                idx.remove(d.pool);
                if step >= target {
                    moves += d.moves.len() as u64;
                }
            }
        }
        if step >= target {
            let lb = lower_bound_pools(live.len() as u64, mem_total, SLOTS, POOL_MEMORY_MB);
            let ratio = residents.len() as f64 / lb.max(1) as f64;
            sum += ratio;
            max = max.max(ratio);
            samples += 1;
        }
    }
    Churn {
        mean: sum / samples as f64,
        max,
        moves_per_100_departures: 100.0 * moves as f64 / departures.max(1) as f64,
    }
}

/// Mean time of one consolidation round (one `plan_drain`) over a fleet.
fn consolidation_round_ms(pools: u64) -> f64 {
    let mut rng = Rng(0xC0_50 ^ pools);
    let (idx, residents) = fleet(pools, &mut rng);
    let mut n = 0u32;
    let start = Instant::now();
    while start.elapsed().as_millis() < 400 || n < 3 {
        black_box(plan_drain(&idx, &residents, Limits::default()));
        n += 1;
    }
    start.elapsed().as_secs_f64() * 1000.0 / f64::from(n)
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
    println!("consolidation round (one plan_drain) on the same fleets:");
    for pools in [100, 1_000, 10_000] {
        println!("{pools:>8} {:>10.3} ms", consolidation_round_ms(pools));
    }
    println!();
    println!("churn: 2,000 tenants, 50,000 arrivals/departures, seed 42; pools used / lower bound");
    for (name, s, every) in [
        ("best-fit", Strategy::BestFit, None),
        ("first-fit", Strategy::FirstFit, None),
        ("spread", Strategy::Spread, None),
        (
            "best-fit + consolidation every 10 steps",
            Strategy::BestFit,
            Some(10),
        ),
        (
            "best-fit + consolidation every 50 steps",
            Strategy::BestFit,
            Some(50),
        ),
        (
            "best-fit + consolidation every 200 steps",
            Strategy::BestFit,
            Some(200),
        ),
        (
            "first-fit + consolidation every 50 steps",
            Strategy::FirstFit,
            Some(50),
        ),
    ] {
        let c = churn(s, 2_000, 50_000, 42, every);
        println!(
            "{name:>42}: mean {:.4}  max {:.4}  moves/100 departures {:.1}",
            c.mean, c.max, c.moves_per_100_departures
        );
    }
}
