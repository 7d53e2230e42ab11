//! Crash safety: kill -9 of the orchestrator while 100 tenants are being
//! created concurrently loses no acknowledged tenant, gives no port twice and
//! leaves no orphan process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use slotpack_tests::http::request;
use slotpack_tests::orchestrator::{tenant, Slotpack, ADMIN};
use slotpack_tests::{children_of, wait_for};

#[test]
fn kill_9_during_100_concurrent_creates_loses_no_acknowledged_tenant() {
    let mut s = Slotpack::start_sized(10, 14, &[]);
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let ok_count = Arc::new(AtomicUsize::new(0));
    let addr = s.addr.clone();
    let workers: Vec<_> = (0..20)
        .map(|w| {
            let (acked, ok_count, addr) = (acked.clone(), ok_count.clone(), addr.clone());
            std::thread::spawn(move || {
                for k in 0..5 {
                    let id = format!("crash-{w}-{k}");
                    let body = tenant(&id, json!({})).to_string();
                    let auth = format!("Bearer {ADMIN}");
                    if let Ok(r) = request(
                        &addr,
                        "POST",
                        "/api/tenants",
                        &[("Authorization", &auth)],
                        body.as_bytes(),
                    ) {
                        if r.status == 201 {
                            acked.lock().unwrap().insert(id);
                            ok_count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    // Kill it in the middle of the burst.
    wait_for(Duration::from_secs(60), "some creates acknowledged", || {
        (ok_count.load(Ordering::SeqCst) >= 10).then_some(())
    });
    s.kill9();
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 10 && acked.len() < 100,
        "the kill did not land mid-burst: {} acked",
        acked.len()
    );

    s.spawn();
    // Every acknowledged tenant exists and answers its ping.
    for id in &acked {
        let r = s.call("GET", &format!("/api/tenants/{id}"), "");
        assert_eq!(r.status, 200, "acknowledged tenant {id} lost: {}", r.text());
        s.wait_pong(id);
    }
    // No port (nor pool slot) is given twice.
    let list = s.call("GET", "/api/tenants", "").json();
    let tenants = list["tenants"].as_array().unwrap();
    let ports: BTreeSet<u64> = tenants
        .iter()
        .map(|t| t["placement"]["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports.len(), tenants.len(), "a port was given twice");
    let slots: BTreeSet<(String, u64)> = tenants
        .iter()
        .map(|t| {
            (
                t["placement"]["poolId"].as_str().unwrap().to_string(),
                t["placement"]["slot"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(slots.len(), tenants.len());
    // No orphan process: each agent runs exactly the programs of its pool's
    // tenants, and every agent belongs to a known pool.
    let h = s.health_check();
    let status = s.call("GET", "/api/pool/status", "").json();
    let per_pool: BTreeMap<String, u64> = status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["botsCount"].as_u64().unwrap(),
            )
        })
        .collect();
    for (pool, agent) in s.agent_pids() {
        let want = *per_pool
            .get(&pool)
            .unwrap_or_else(|| panic!("agent of unknown {pool}: {h}"));
        wait_for(
            Duration::from_secs(20),
            "agent runs exactly its tenants",
            || {
                let kids = children_of(agent)
                    .iter()
                    .filter(|(_, st)| *st != 'Z')
                    .count() as u64;
                (kids == want).then_some(())
            },
        );
    }
    assert_eq!(per_pool.values().sum::<u64>(), tenants.len() as u64);
}
