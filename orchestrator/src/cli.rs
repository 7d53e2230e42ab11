//! The operator's commands in the supervisorctl manner, over the API
//! client: `tenants`, `logs [-f]`, `restart|stop|start`, `delete`,
//! `events [-f]`, and `agents stop` (a local deployment's agents, on
//! purpose). Output is one line per thing, or JSON with `--json`; the exit
//! code is 0 only when every named tenant did what was asked.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::api_client::ApiClient;

/// How a command reaches the orchestrator: where, and with which token.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Orchestrator address, `host:port` or `http://host:port` (else
    /// `SLOTPACK_URL`, else `SLOTPACK_LISTEN`, else 127.0.0.1:8088).
    #[arg(long, alias = "listen")]
    pub url: Option<String>,
    /// Bearer token (admin or owner); `SLOTPACK_TOKEN` in the environment.
    #[arg(long, env = "SLOTPACK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token (first line); `SLOTPACK_TOKEN_FILE`.
    #[arg(long, env = "SLOTPACK_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print JSON (one document; `-f` streams one JSON object per line).
    #[arg(long)]
    pub json: bool,
}

/// Where a command's token came from, said by `slotpack status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token` or `SLOTPACK_TOKEN`.
    Given,
    /// `--token-file` or `SLOTPACK_TOKEN_FILE`, from this file.
    File(PathBuf),
    /// `SLOTPACK_ADMIN_TOKEN`, the variable `serve` reads (same shell).
    AdminEnv,
    /// No token: only an `--insecure-dev` orchestrator answers.
    None,
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Given => write!(f, "token from --token / SLOTPACK_TOKEN"),
            TokenSource::File(p) => write!(f, "token from the file {}", p.display()),
            TokenSource::AdminEnv => write!(f, "token from SLOTPACK_ADMIN_TOKEN"),
            TokenSource::None => write!(
                f,
                "no token (give one with --token-file FILE or SLOTPACK_TOKEN)"
            ),
        }
    }
}

impl ClientArgs {
    /// The address to call.
    pub fn address(&self) -> String {
        self.url
            .clone()
            .or_else(|| std::env::var("SLOTPACK_URL").ok())
            .or_else(|| std::env::var("SLOTPACK_LISTEN").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "127.0.0.1:8088".into())
    }

    /// The token and where it came from: `--token`, `--token-file`, then
    /// `SLOTPACK_ADMIN_TOKEN`.
    pub fn token(&self) -> anyhow::Result<(Option<String>, TokenSource)> {
        if let Some(t) = self.token.as_deref().filter(|t| !t.is_empty()) {
            return Ok((Some(t.trim().to_string()), TokenSource::Given));
        }
        if let Some(f) = &self.token_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("token file {}", f.display()))?;
            let t = text.lines().next().unwrap_or_default().trim().to_string();
            if t.is_empty() {
                bail!("token file {} is empty", f.display());
            }
            return Ok((Some(t), TokenSource::File(f.clone())));
        }
        if let Ok(t) = std::env::var("SLOTPACK_ADMIN_TOKEN") {
            if !t.trim().is_empty() {
                return Ok((Some(t.trim().to_string()), TokenSource::AdminEnv));
            }
        }
        Ok((None, TokenSource::None))
    }

    /// The API client these flags describe.
    pub fn client(&self) -> anyhow::Result<(ApiClient, TokenSource)> {
        let (token, source) = self.token()?;
        Ok((ApiClient::new(&self.address(), token), source))
    }
}

/// `slotpack tenants`.
#[derive(Debug, Clone, Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// `slotpack logs`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// The tenant.
    id: String,
    /// Follow the log as it grows (across restarts) until Ctrl-C or the
    /// tenant's deletion.
    #[arg(short, long)]
    follow: bool,
    /// Lines of the log's end to print first (1 to 10000).
    #[arg(short = 'n', long, default_value_t = 100)]
    tail: u32,
    #[command(flatten)]
    client: ClientArgs,
}

/// `slotpack restart|stop|start|delete`.
#[derive(Debug, Clone, Args)]
pub struct ActionArgs {
    /// The tenants, each in turn.
    #[arg(required = true)]
    ids: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// `slotpack events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Follow: print events as they happen, until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// Only this tenant's.
    #[arg(long)]
    tenant: Option<String>,
    /// How many of the latest to print first (1 to 1000).
    #[arg(short = 'n', long, default_value_t = 20)]
    limit: u32,
    #[command(flatten)]
    client: ClientArgs,
}

/// `slotpack agents`.
#[derive(Debug, Clone, Args)]
pub struct AgentsArgs {
    #[command(subcommand)]
    command: AgentsCommand,
}

/// What `slotpack agents` does.
#[derive(Debug, Clone, Subcommand)]
pub enum AgentsCommand {
    /// End a local deployment's agents and their tenants (on purpose: they
    /// outlive `serve` by design). Refused while `serve` holds the data
    /// dir; the tenants stay in the database and start again with `serve`.
    Stop {
        /// The deployment's data dir (`SLOTPACK_DATA_DIR` of its `serve`).
        #[arg(long, env = "SLOTPACK_DATA_DIR", default_value_os_t = crate::config::default_data_dir())]
        data_dir: PathBuf,
        /// The slot-agent binary, for ending what an agent killed hard
        /// left behind (default: next to slotpack, then PATH).
        #[arg(long, env = "SLOTPACK_AGENT_BIN")]
        agent_bin: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `POST /api/tenants/{id}/{action}` or `DELETE`, for each tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Restart.
    Restart,
    /// Stop.
    Stop,
    /// Start.
    Start,
    /// Delete (data too).
    Delete,
}

impl Action {
    fn past(self) -> &'static str {
        match self {
            Action::Restart => "restarted",
            Action::Stop => "stopped",
            Action::Start => "started",
            Action::Delete => "deleted",
        }
    }
}

/// The error of an answer that is not 2xx, in the server's words.
fn refused(what: &str, a: &crate::api_client::Answer) -> anyhow::Error {
    let hint = if a.status == 401 {
        " (give a token with --token-file FILE or SLOTPACK_TOKEN)"
    } else {
        ""
    };
    anyhow::anyhow!("{what} ({}): {}{hint}", a.status, a.message())
}

/// `slotpack tenants`: one line per tenant.
pub async fn tenants(a: TenantsArgs) -> anyhow::Result<()> {
    let (api, _) = a.client.client()?;
    let ans = api.call("GET", "/api/tenants", None).await?;
    if ans.status != 200 {
        return Err(refused("listing tenants", &ans));
    }
    if a.client.json {
        println!("{}", ans.body);
        return Ok(());
    }
    let now = SystemTime::now();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<20} {:<9} {:<9} {:<11} {:>5} {:>8} {:>8} {:>15} {:>9} {:<8}",
        "ID",
        "STATE",
        "HEALTH",
        "POOL/SLOT",
        "PORT",
        "UPTIME",
        "RESTARTS",
        "MEMORY",
        "CPU",
        "LEVEL"
    )?;
    for t in ans.body["tenants"].as_array().into_iter().flatten() {
        writeln!(out, "{}", tenant_line(t, now))?;
    }
    Ok(())
}

/// One tenant's line of `slotpack tenants`. Pure.
pub fn tenant_line(t: &Value, now: SystemTime) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let health = match (t["state"].as_str(), t["healthy"].as_bool()) {
        (Some("running"), Some(true)) => "healthy",
        (Some("running"), _) => "unhealthy",
        _ => "-",
    };
    let place = format!(
        "{}/{}",
        s(&t["placement"]["poolId"]),
        t["placement"]["slot"]
            .as_u64()
            .map_or("-".into(), |n| n.to_string())
    );
    let uptime = t["startedAt"]
        .as_str()
        .and_then(slotpack_proto::clock::parse_rfc3339)
        .and_then(|st| now.duration_since(st).ok())
        .map_or("-".into(), |d| duration(d.as_secs()));
    let limit = t["resources"]["memoryMb"].as_u64().unwrap_or(0);
    let memory = t["usage"]["memory"]["bytes"]
        .as_u64()
        .map_or("-".into(), |b| {
            format!("{}/{}", bytes(b), bytes(limit << 20))
        });
    let cpu = t["usage"]["cpu"]["millis"]
        .as_u64()
        .map_or("-".into(), |m| format!("{m}m"));
    format!(
        "{:<20} {:<9} {:<9} {:<11} {:>5} {:>8} {:>8} {:>15} {:>9} {:<8}",
        s(&t["id"]),
        s(&t["state"]),
        health,
        place,
        t["placement"]["port"].as_u64().unwrap_or(0),
        uptime,
        t["restarts"].as_u64().unwrap_or(0),
        memory,
        cpu,
        t["usage"]["level"].as_str().unwrap_or("-"),
    )
}

/// `3d4h`, `2h5m`, `4m7s`, `9s`. Pure.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// `512B`, `12.3M`, `1.5G` (powers of 1024). Pure.
pub fn bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if f < K {
        format!("{b}B")
    } else if f < K * K {
        format!("{:.1}K", f / K)
    } else if f < K * K * K {
        format!("{:.1}M", f / K / K)
    } else {
        format!("{:.1}G", f / K / K / K)
    }
}

/// `slotpack logs [-f] ID`.
pub async fn logs(a: LogsArgs) -> anyhow::Result<()> {
    let (api, _) = a.client.client()?;
    let path = format!(
        "/api/tenants/{}/logs?tail={}{}",
        a.id,
        a.tail,
        if a.follow { "&follow=true" } else { "" }
    );
    let mut out = std::io::stdout();
    api.stream(&path, &[], |chunk| {
        out.write_all(chunk)?;
        out.flush()?;
        Ok(())
    })
    .await
}

/// `slotpack restart|stop|start|delete ID...`: each in turn, a line each
/// (`ID: restarted`, or `ID: ERROR (404): ...`); fails if any failed.
pub async fn act(action: Action, a: ActionArgs) -> anyhow::Result<()> {
    let (api, _) = a.client.client()?;
    let mut failed = 0;
    let mut answers = Vec::new();
    for id in &a.ids {
        let ans = match action {
            Action::Delete => {
                api.call("DELETE", &format!("/api/tenants/{id}"), None)
                    .await?
            }
            _ => {
                let verb = format!("{action:?}").to_lowercase();
                api.call("POST", &format!("/api/tenants/{id}/{verb}"), None)
                    .await?
            }
        };
        let ok = (200..300).contains(&ans.status);
        failed += usize::from(!ok);
        if a.client.json {
            answers.push(
                serde_json::json!({"id": id, "status": ans.status, "ok": ok, "answer": ans.body}),
            );
        } else if ok {
            println!("{id}: {}", action.past());
        } else {
            println!("{id}: ERROR ({}): {}", ans.status, ans.message());
        }
    }
    if a.client.json {
        println!("{}", Value::Array(answers));
    }
    if failed > 0 {
        bail!("{failed} of {} tenants failed", a.ids.len());
    }
    Ok(())
}

/// One event's line. Pure.
pub fn event_line(e: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    format!(
        "{:>6} {} {:<18} {:<16} {:<8} {}",
        e["seq"].as_i64().unwrap_or(0),
        s(&e["at"]),
        s(&e["kind"]),
        s(&e["tenant"]),
        s(&e["pool"]),
        s(&e["detail"])
    )
}

/// The `data:` payloads of the complete server-sent events in `buf`,
/// removed from it (a partial event stays for the next chunk). Pure.
pub fn take_sse_data(buf: &mut String) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let event: String = buf.drain(..end + 2).collect();
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}

/// `slotpack events [-f]`: the latest `limit` events, then (`-f`) the
/// stream, resumed after the last one printed.
pub async fn events(a: EventsArgs) -> anyhow::Result<()> {
    let (api, _) = a.client.client()?;
    let tenant = a.tenant.as_deref().map_or(String::new(), |t| {
        let q: String = form_urlencoded::byte_serialize(t.as_bytes()).collect();
        format!("&tenant={q}")
    });
    let ans = api
        .call(
            "GET",
            &format!("/api/events?limit={}{tenant}", a.limit),
            None,
        )
        .await?;
    if ans.status != 200 {
        return Err(refused("reading events", &ans));
    }
    let list = ans.body["events"].as_array().cloned().unwrap_or_default();
    let json = a.client.json;
    if json && !a.follow {
        println!("{}", Value::Array(list));
        return Ok(());
    }
    let print = |e: &Value| {
        if json {
            println!("{e}");
        } else {
            println!("{}", event_line(e));
        }
    };
    list.iter().for_each(print);
    if !a.follow {
        return Ok(());
    }
    // On from the last one printed; with none printed, every one the
    // caller may see comes (there were none of them a moment ago).
    let last = list.last().and_then(|e| e["seq"].as_i64()).unwrap_or(0);
    let headers = [("last-event-id", last.to_string())];
    let path = format!("/api/events/stream?{}", tenant.trim_start_matches('&'));
    let mut buf = String::new();
    api.stream(&path, &headers, |chunk| {
        buf.push_str(&String::from_utf8_lossy(chunk));
        for data in take_sse_data(&mut buf) {
            if let Ok(e) = serde_json::from_str::<Value>(&data) {
                print(&e);
            }
        }
        std::io::stdout().flush()?;
        Ok(())
    })
    .await
}

/// `slotpack agents stop`.
pub async fn agents(a: AgentsArgs) -> anyhow::Result<()> {
    match a.command {
        AgentsCommand::Stop {
            data_dir,
            agent_bin,
            json,
        } => stop_agents(&data_dir, agent_bin.as_deref(), json).await,
    }
}

async fn stop_agents(data_dir: &Path, agent_bin: Option<&Path>, json: bool) -> anyhow::Result<()> {
    if !data_dir.join("pools").is_dir() {
        bail!(
            "{} holds no local deployment (no pools/ folder): pass its --data-dir",
            data_dir.display()
        );
    }
    // Refused while serve runs: it would start the pools again at its next tick.
    let _lock = crate::server::DataDirLock::take(data_dir)?;
    let bin = crate::find_agent_bin(agent_bin).ok();
    let stopped = crate::backend::local::stop_agents(data_dir, bin.as_deref())
        .await
        .with_context(|| format!("the local deployment in {}", data_dir.display()))?;
    if json {
        println!("{}", serde_json::json!({ "stopped": stopped }));
    } else if stopped.is_empty() {
        println!("no agent of {} was running", data_dir.display());
    } else {
        for p in &stopped {
            println!("{p}: stopped");
        }
        println!(
            "{} agents stopped; their tenants start again with the next `slotpack serve` on {}",
            stopped.len(),
            data_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_tenant_line_holds_what_an_operator_reads_first() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_430_453 + 125);
        let t = json!({"id": "bot-1", "state": "running", "healthy": true, "restarts": 2,
            "placement": {"poolId": "pool-3", "slot": 1, "port": 9001},
            "resources": {"memoryMb": 128}, "startedAt": "2026-11-23T10:40:53.000Z",
            "usage": {"memory": {"bytes": 13_000_000}, "cpu": {"millis": 40}, "level": "healthy"}});
        let line = tenant_line(&t, now);
        for part in [
            "bot-1",
            "running",
            "healthy",
            "pool-3/1",
            "9001",
            "2m5s",
            "12.4M/128.0M",
            "40m",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
        // What is unknown is a dash, never a made-up number.
        let line = tenant_line(&json!({"id": "x", "state": "unknown"}), now);
        assert!(line.starts_with("x "), "{line}");
        assert!(!line.contains("healthy"), "{line}");
    }

    #[test]
    fn durations_and_sizes_read_short() {
        assert_eq!(duration(9), "9s");
        assert_eq!(duration(247), "4m7s");
        assert_eq!(duration(7500), "2h5m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600), "3d4h");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(3 << 30), "3.0G");
    }

    #[test]
    fn server_sent_events_are_taken_whole_and_partial_ones_wait() {
        let mut buf =
            String::from(": keep-alive\n\nid: 4\ndata: {\"seq\":4}\n\nid: 5\ndata: {\"se");
        assert_eq!(take_sse_data(&mut buf), ["{\"seq\":4}"]);
        buf.push_str("q\":5}\n\n");
        assert_eq!(take_sse_data(&mut buf), ["{\"seq\":5}"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn the_token_comes_from_the_flag_then_the_file() {
        let dir = std::env::temp_dir().join(format!("slotpack-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "s3cret\nignored\n").unwrap();
        let mut a = ClientArgs {
            url: Some("http://127.0.0.1:1/".into()),
            token: None,
            token_file: Some(f.clone()),
            json: false,
        };
        assert_eq!(
            a.token().unwrap(),
            (Some("s3cret".into()), TokenSource::File(f.clone()))
        );
        a.token = Some("given".into());
        assert_eq!(a.token().unwrap().1, TokenSource::Given);
        std::fs::write(&f, "\n").unwrap();
        a.token = None;
        assert!(a.token().is_err(), "an empty token file is an error");
        assert_eq!(a.address(), "http://127.0.0.1:1/");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
