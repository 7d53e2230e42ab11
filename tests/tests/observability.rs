//! Observability a user can open: a real Prometheus server (Debian's
//! `prometheus`) runs `deploy/prometheus.yml` against a real orchestrator,
//! finds the agents through its HTTP service discovery, and has the
//! `slotpack_*` and `slot_agent_*` series, with every metric the Grafana
//! dashboard (`deploy/grafana-dashboard.json`) uses; `promtool check
//! metrics` accepts both outputs. Required when CI=true.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use slotpack_tests::agent::free_ports;
use slotpack_tests::http::request;
use slotpack_tests::in_ci;
use slotpack_tests::orchestrator::{Slotpack, ADMIN};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `prometheus` and `promtool` are installed (in CI they must be).
fn require_prometheus(test: &str) -> bool {
    let there = ["prometheus", "promtool"].iter().all(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !there {
        assert!(!in_ci(), "{test}: prometheus missing; CI must run it");
        eprintln!("skipping {test}: install Debian's prometheus package");
    }
    there
}

/// A Prometheus server we started; killed (by its pid) on drop.
struct Prometheus {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// `deploy/prometheus.yml`, pointed at `slotpack` and scraping every second.
    fn start(slotpack: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("slotpack-prom-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, ADMIN).unwrap();
        let config = std::fs::read_to_string(repo().join("deploy/prometheus.yml"))
            .unwrap()
            .replace("127.0.0.1:8088", slotpack)
            .replace(
                "/etc/prometheus/slotpack-admin-token",
                token.to_str().unwrap(),
            )
            .replace("15s", "1s")
            .replace("30s", "1s");
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_ports(1));
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap();
        Prometheus { child, addr, dir }
    }

    /// Prometheus' answer to an instant query (`data.result`), if it succeeded.
    fn query(&self, q: &str) -> Option<Vec<Value>> {
        let path = format!("/api/v1/query?query={}", encode(q));
        let r = request(&self.addr, "GET", &path, &[], b"").ok()?;
        // 503 while it starts.
        let v: Value = serde_json::from_str(&r.text()).ok()?;
        (v["status"] == "success").then(|| v["data"]["result"].as_array().cloned())?
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

/// Percent-encode a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Metric names (`slotpack_*`, `slot_agent_*`) in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &expr[i..];
        let starts = rest.starts_with("slotpack_") || rest.starts_with("slot_agent_");
        let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if starts && boundary {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names("sum by (le) (rate(slotpack_placement_seconds_bucket[5m])) / x_slot_agent_y"),
        ["slotpack_placement_seconds_bucket"]
    );
}

#[test]
fn a_real_prometheus_finds_the_agents_and_has_every_dashboard_series() {
    if !require_prometheus("prometheus scrape") {
        return;
    }
    let s = Slotpack::start(&[]);
    s.create_ok("obs-1", json!({}));
    s.create_ok("obs-2", json!({}));
    s.create_ok("obs-3", json!({}));
    s.create_ok("obs-4", json!({})); // a second pool (3 slots each)
    for id in ["obs-1", "obs-2", "obs-3", "obs-4"] {
        s.wait_pong(id);
    }
    // Traffic and a health tick, so that counters and the histogram move.
    assert_eq!(
        s.call("GET", "/api/tenants/obs-1/proxy/api/v1/ping", "")
            .status,
        200
    );
    s.health_check();

    // The discovery endpoint: one target group per pool, admin only.
    let sd = s.call("GET", "/api/pool/metrics-targets", "").json();
    assert_eq!(sd.as_array().unwrap().len(), 2, "{sd}");
    assert_eq!(sd[0]["labels"]["pool"], "pool-1");
    assert_eq!(sd[0]["labels"]["class"], "default");
    let owner = s.call("POST", "/api/tokens", r#"{"owner":"bob"}"#).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.call_as(Some(&owner), "GET", "/api/pool/metrics-targets", "")
            .status,
        403
    );

    // promtool accepts both expositions.
    let agent = sd[0]["targets"][0].as_str().unwrap().to_string();
    for (what, addr) in [("orchestrator", s.addr.as_str()), ("agent", agent.as_str())] {
        let text = request(addr, "GET", "/metrics", &[], b"").unwrap().text();
        let mut lint = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut lint.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = lint.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool on the {what}'s metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A real Prometheus with the shipped config finds both agents and the
    // orchestrator.
    let prom = Prometheus::start(&s.addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let up = prom.query("up").unwrap_or_default();
        if up.iter().filter(|r| r["value"][1] == "1").count() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all scraped: {up:?}\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let agents = prom
        .query("slot_agent_program_healthy == 1")
        .unwrap_or_default();
    let mut seen: Vec<(String, String)> = agents
        .iter()
        .map(|r| {
            (
                r["metric"]["pool"].as_str().unwrap_or("?").to_string(),
                r["metric"]["id"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("pool-1".to_string(), "obs-1".to_string()),
            ("pool-1".into(), "obs-2".into()),
            ("pool-1".into(), "obs-3".into()),
            ("pool-2".into(), "obs-4".into()),
        ],
        "{}",
        prom.log()
    );

    // Every metric the dashboard uses arrives, and every panel's query runs.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10);
    for e in &exprs {
        assert!(prom.query(e).is_some(), "dashboard query {e:?} fails");
        for name in metric_names(e) {
            let q = format!("count({{__name__=\"{name}\"}})");
            let r = prom.query(&q).unwrap_or_default();
            assert!(
                !r.is_empty(),
                "{name} (dashboard: {e}) has no series in Prometheus"
            );
        }
    }
    drop(prom);
    drop(s);
}
