//! Consolidation (`SLOTPACK_CONSOLIDATE`): a health tick empties a pool whose
//! tenants fit elsewhere, moves them, and removes the pool; never two copies
//! of a tenant, and a kill -9 at any moment loses nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use slotpack_tests::http::request;
use slotpack_tests::orchestrator::{Slotpack, ADMIN};
use slotpack_tests::{alive, wait_for};

const LONG: Duration = Duration::from_secs(30);

/// Live processes whose `TENANT_ID` starts with `prefix`: id → pids.
fn tenant_processes(prefix: &str) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let id = env
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"TENANT_ID="))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if let Some(id) = id.filter(|i| i.starts_with(prefix)) {
            if alive(pid) {
                out.entry(id).or_default().push(pid);
            }
        }
    }
    out
}

fn pool_of(s: &Slotpack, id: &str) -> String {
    let t = s.call("GET", &format!("/api/tenants/{id}"), "").json();
    t["tenant"]["placement"]["poolId"]
        .as_str()
        .unwrap_or_else(|| panic!("{t}"))
        .to_string()
}

fn total_pools(s: &Slotpack) -> u64 {
    s.call("GET", "/api/pool/status", "").json()["totalPools"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_sparse_pool_is_emptied_into_the_others_and_removed() {
    let s = Slotpack::start(&[("SLOTPACK_CONSOLIDATE", "true")]);
    for i in 1..=5 {
        // cc-4 ignores SIGTERM: stopping it takes its whole stop timeout,
        // which would show a second copy if it were started before that.
        let extra = if i == 4 {
            json!({"args": ["--ignore-term"], "stop": {"timeoutMs": 1000}})
        } else {
            json!({})
        };
        s.create_ok(&format!("cc-{i}"), extra);
    }
    for i in 1..=5 {
        s.wait_pong(&format!("cc-{i}"));
    }
    assert_eq!(pool_of(&s, "cc-1"), "pool-1");
    assert_eq!(pool_of(&s, "cc-4"), "pool-2");
    for id in ["cc-2", "cc-3"] {
        assert_eq!(
            s.call("DELETE", &format!("/api/tenants/{id}"), "").status,
            200
        );
    }
    // A stopped tenant is never moved: pool-1 stays; pool-2 (cc-4, cc-5)
    // fits into pool-1's two free slots.
    assert_eq!(s.call("POST", "/api/tenants/cc-1/stop", "").status, 200);
    let before = tenant_processes("cc-");
    let old_ports: Vec<u16> = ["cc-4", "cc-5"].iter().map(|id| s.wait_pong(id)).collect();
    let old_agents = s.agent_pids();
    assert_eq!(old_agents.len(), 2, "{old_agents:?}");

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let p = tenant_processes("cc-4");
                most = most.max(p.get("cc-4").map_or(0, Vec::len));
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    let h = s.health_check();
    s.wait_pong("cc-4");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(watch.join().unwrap(), 1, "cc-4 never runs twice");
    let actions = h["recoveryActions"].to_string();
    assert!(
        actions.contains("consolidation: moved cc-4 to pool-1"),
        "{h}"
    );
    assert!(actions.contains("cc-5 to pool-1"), "{h}");
    assert!(actions.contains("and removed pool-2"), "{h}");

    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(st["totalPools"], 1, "{st}");
    assert_eq!(st["pools"][0]["id"], "pool-1");
    assert_eq!(st["pools"][0]["bots"], json!(["cc-1", "cc-4", "cc-5"]));
    let t1 = s.call("GET", "/api/tenants/cc-1", "").json();
    assert_eq!(t1["tenant"]["state"], "stopped", "{t1}");
    for (id, old) in ["cc-4", "cc-5"].iter().zip(&old_ports) {
        let port = s.wait_pong(id);
        assert_ne!(port, *old, "{id} has a new port");
        // The proxy follows the move.
        let r = s.call("GET", &format!("/api/tenants/{id}/proxy/api/v1/ping"), "");
        assert_eq!(r.status, 200, "{}", r.text());
        let ev = s
            .call("GET", &format!("/api/events?tenant={id}"), "")
            .json()
            .to_string();
        assert!(ev.contains("tenant.moved"), "{ev}");
    }
    // The old processes and the emptied pool's agent are gone; every moved
    // tenant runs exactly once; the stopped one not at all.
    for pids in before.values() {
        for p in pids {
            wait_for(LONG, "old program ended", || (!alive(*p)).then_some(()));
        }
    }
    let (_, old_agent_2) = old_agents[1].clone();
    wait_for(LONG, "pool-2 agent ended", || {
        (!alive(old_agent_2)).then_some(())
    });
    let now = tenant_processes("cc-");
    assert_eq!(now.keys().collect::<Vec<_>>(), vec!["cc-4", "cc-5"]);
    assert!(now.values().all(|p| p.len() == 1), "{now:?}");

    let m = s.call("GET", "/metrics", "").text();
    assert!(m.contains("slotpack_consolidation_moves_total 2"), "{m}");
    assert!(m.contains("slotpack_pools_drained_total 1"), "{m}");
    // Nothing left to consolidate.
    let h = s.health_check();
    assert!(
        !h["recoveryActions"].to_string().contains("consolidation"),
        "{h}"
    );
    assert_eq!(total_pools(&s), 1);
}

#[test]
fn consolidation_is_off_unless_enabled() {
    let s = Slotpack::start(&[]);
    for i in 1..=4 {
        s.create_ok(&format!("co-{i}"), json!({}));
    }
    for id in ["co-2", "co-3"] {
        assert_eq!(
            s.call("DELETE", &format!("/api/tenants/{id}"), "").status,
            200
        );
    }
    s.wait_pong("co-4");
    let h = s.health_check();
    assert!(
        !h["recoveryActions"].to_string().contains("consolidation"),
        "{h}"
    );
    assert_eq!(total_pools(&s), 2);
    assert_eq!(pool_of(&s, "co-4"), "pool-2");
}

/// Watches the processes of tenants whose id starts with `prefix` every few
/// ms until `done`; returns the ids ever seen running twice at once.
fn watch_for_twins(
    prefix: &'static str,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut twins = std::collections::BTreeSet::new();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            for (id, pids) in tenant_processes(prefix) {
                if pids.len() > 1 {
                    twins.insert(id);
                }
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        twins.into_iter().collect()
    })
}

#[test]
fn a_kill_during_consolidation_loses_no_tenant_nor_its_data_and_runs_none_twice() {
    let mut s = Slotpack::start(&[("SLOTPACK_CONSOLIDATE", "true")]);
    let mut live: Vec<String> = Vec::new();
    // The tenants ignore SIGTERM, so each stop takes its whole timeout: a
    // copy started before the old one is down would be seen.
    let slow_stop = json!({"args": ["--ignore-term"], "stop": {"timeoutMs": 300}});
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = watch_for_twins("ck-", done.clone());
    for (round, delay_ms) in [0u64, 5, 20, 60].into_iter().enumerate() {
        // Two new pools' worth, then thin them out so one can be emptied.
        let ids: Vec<String> = (1..=6).map(|i| format!("ck-{round}-{i}")).collect();
        for id in &ids {
            s.create_ok(id, slow_stop.clone());
        }
        for id in ids.iter().step_by(2) {
            assert_eq!(
                s.call("DELETE", &format!("/api/tenants/{id}"), "").status,
                200
            );
        }
        live.extend(ids.iter().skip(1).step_by(2).cloned());
        for id in &live {
            s.wait_pong(id);
            // Data of its own (issue K), which no move may lose.
            let home = s.data.join(format!("tenants/{id}/home"));
            std::fs::write(home.join("planted"), id).unwrap();
        }
        // A tick (which consolidates) in flight, then kill -9.
        let addr = s.addr.clone();
        let tick = std::thread::spawn(move || {
            let auth = format!("Bearer {ADMIN}");
            let _ = request(
                &addr,
                "POST",
                "/api/pool/health-check",
                &[("Authorization", auth.as_str())],
                b"",
            );
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        s.kill9();
        tick.join().unwrap();
        // The restart recovers and reconciles (and may finish the drain).
        s.spawn();
        let listed = s.call("GET", "/api/tenants", "").json();
        let mut ids: Vec<String> = listed["tenants"]
            .as_array()
            .unwrap_or_else(|| panic!("{listed}"))
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        let mut want = live.clone();
        want.sort();
        assert_eq!(ids, want, "round {round}: every tenant is still there");
        for id in &live {
            s.wait_pong(id);
            let planted = s.data.join(format!("tenants/{id}/home/planted"));
            assert_eq!(
                std::fs::read_to_string(&planted).ok().as_deref(),
                Some(id.as_str()),
                "round {round}: {id} lost its data"
            );
        }
        let procs = wait_for(LONG, "one process per tenant", || {
            let p = tenant_processes("ck-");
            (p.len() == live.len() && p.values().all(|v| v.len() == 1)).then_some(p)
        });
        assert_eq!(procs.keys().cloned().collect::<Vec<_>>(), want);
        // Every agent that runs belongs to a pool the orchestrator knows.
        let pools = total_pools(&s) as usize;
        let agents = wait_for(LONG, "no leftover agents", || {
            let a: Vec<_> = s
                .agent_pids()
                .into_iter()
                .filter(|(_, p)| alive(*p))
                .collect();
            (a.len() == pools).then_some(a)
        });
        assert_eq!(agents.len(), pools);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(watch.join().unwrap(), Vec::<String>::new(), "ran twice");
    // The fleet ends packed: 12 tenants of 3 slots each fit in 4 pools, and
    // consolidation got it there (it would be 8 without).
    wait_for(LONG, "consolidated", || {
        s.health_check();
        (total_pools(&s) <= 5).then_some(())
    });
}
