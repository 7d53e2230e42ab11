//! The API and the proxy as a boundary (issue I): a tenant's page in a
//! real browser cannot act with slotpack's credentials; ending a grant
//! (revocation, delete, stop, move) ends the websockets and long answers
//! it opened; idle and flooding connections are bounded; one `serve` per
//! data dir and address; owner quotas; websockets reach servers that check
//! `Upgrade`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slotpack_tests::http::request;
use slotpack_tests::orchestrator::{tenant, Slotpack, ADMIN};
use slotpack_tests::{in_ci, wait_for};

/// One response head, lower-cased.
fn read_head(c: &mut TcpStream) -> String {
    String::from_utf8_lossy(&slotpack_tests::http::read_head(c)).to_ascii_lowercase()
}

/// A masked websocket text frame.
fn ws_frame(msg: &str) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut f = vec![0x81, 0x80 | msg.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(msg.bytes().enumerate().map(|(i, x)| x ^ mask[i % 4]));
    f
}

/// Send `msg` and read its echo (an unmasked text frame).
fn ws_echo(c: &mut TcpStream, msg: &str) {
    c.write_all(&ws_frame(msg)).unwrap();
    let mut h = [0u8; 2];
    c.read_exact(&mut h).unwrap();
    assert_eq!(h[0], 0x81, "a text frame");
    let mut p = vec![0u8; (h[1] & 0x7f) as usize];
    c.read_exact(&mut p).unwrap();
    assert_eq!(p, msg.as_bytes());
}

/// A websocket through the proxy to tenant `id`, with `token`.
fn open_ws(addr: &str, token: &str, id: &str, path: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET /api/tenants/{id}/proxy{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    c
}

/// A long answer (test-tenant's `/stream`) through the proxy, its first
/// tick read.
fn open_long(addr: &str, token: &str, id: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET /api/tenants/{id}/proxy/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut b = [0u8; 64];
    assert!(c.read(&mut b).unwrap() > 0);
    c
}

/// How long after `since` the stream `c` ended (EOF or reset); panics if it
/// still carries data (or stays open) 3 s after `since`.
fn ended_after(c: &mut TcpStream, since: Instant, what: &str) -> Duration {
    ended_by(c, since, since + Duration::from_secs(3), what)
}

/// How long after `since` the stream `c` ended; panics if it is still open
/// at `deadline`.
fn ended_by(c: &mut TcpStream, since: Instant, deadline: Instant, what: &str) -> Duration {
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "{what}: still open {:?} after",
            since.elapsed()
        );
        match c.read(&mut b) {
            Ok(0) => return since.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return since.elapsed(),
        }
    }
}

fn new_token(s: &Slotpack, body: Value) -> (String, String) {
    let r = s.call("POST", "/api/tokens", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    (
        j["token"].as_str().unwrap().to_string(),
        j["id"].as_str().unwrap().to_string(),
    )
}

fn create_as(s: &Slotpack, token: &str, id: &str, extra: Value) -> slotpack_tests::http::Response {
    s.call_as(
        Some(token),
        "POST",
        "/api/tenants",
        &tenant(id, extra).to_string(),
    )
}

#[test]
fn ending_a_grant_ends_the_websockets_and_long_answers_it_opened() {
    let s = Slotpack::start(&[]);
    let (tok, tok_id) = new_token(&s, json!({"owner": "streamer"}));
    assert_eq!(create_as(&s, &tok, "st-1", json!({})).status, 201);
    s.wait_pong("st-1");
    let mut took = Vec::new();
    let mut check = |what: &str, token: &str, end: &dyn Fn()| {
        let mut ws = open_ws(&s.addr, token, "st-1", "/ws");
        ws_echo(&mut ws, "before");
        let mut long = open_long(&s.addr, token, "st-1");
        let t0 = Instant::now();
        end();
        let a = ended_after(&mut ws, t0, &format!("websocket, {what}"));
        let b = ended_after(&mut long, t0, &format!("long answer, {what}"));
        println!("{what}: websocket ended after {a:?}, long answer after {b:?}");
        took.push(a.max(b));
    };
    check("its token revoked", &tok, &|| {
        let r = s.call("DELETE", &format!("/api/tokens/{tok_id}"), "");
        assert_eq!(r.status, 200, "{}", r.text());
    });
    assert_eq!(
        s.call_as(Some(&tok), "GET", "/api/tenants/st-1", "").status,
        401
    );
    let (tok2, _) = new_token(&s, json!({"owner": "streamer"}));
    let (tok3, _) = new_token(&s, json!({"owner": "streamer"}));
    check("its owner's tokens revoked", &tok2, &|| {
        let r = s.call("DELETE", "/api/tokens?owner=streamer", "");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("2 tokens"), "{}", r.text());
    });
    assert_eq!(
        s.call_as(Some(&tok3), "GET", "/api/tenants/st-1", "")
            .status,
        401
    );
    let (tok4, _) = new_token(&s, json!({"owner": "streamer"}));
    check("the tenant stopped", &tok4, &|| {
        assert_eq!(s.call("POST", "/api/tenants/st-1/stop", "").status, 200);
    });
    assert_eq!(s.call("POST", "/api/tenants/st-1/start", "").status, 200);
    s.wait_pong("st-1");
    check("the tenant deleted (admin's streams)", ADMIN, &|| {
        assert_eq!(s.call("DELETE", "/api/tenants/st-1", "").status, 200);
    });
    let worst = took.iter().max().unwrap();
    println!("slowest end: {worst:?}");
}

#[test]
fn a_move_ends_the_streams_to_the_old_slot() {
    let s = Slotpack::start(&[("SLOTPACK_CONSOLIDATE", "true")]);
    for i in 1..=4 {
        s.create_ok(&format!("mv-{i}"), json!({}));
    }
    s.wait_pong("mv-4");
    let pool = |id: &str| {
        s.call("GET", &format!("/api/tenants/{id}"), "").json()["tenant"]["placement"]["poolId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(pool("mv-4"), "pool-2");
    assert_eq!(s.call("DELETE", "/api/tenants/mv-1", "").status, 200);
    let mut ws = open_ws(&s.addr, ADMIN, "mv-4", "/ws");
    ws_echo(&mut ws, "before the move");
    let mut long = open_long(&s.addr, ADMIN, "mv-4");
    let t0 = Instant::now();
    let h = s.health_check();
    let tick = t0.elapsed();
    assert!(
        h["recoveryActions"].to_string().contains("moved mv-4"),
        "{h}"
    );
    // The move is the whole tick (stop, pool removal, start elsewhere): the
    // streams end once it is committed, so by the tick's end at the latest;
    // 3 s past it leaves room for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(3);
    let a = ended_by(&mut ws, t0, deadline, "websocket, moved");
    let b = ended_by(&mut long, t0, deadline, "long answer, moved");
    println!(
        "moved: websocket ended after {a:?}, long answer after {b:?} \
         (from the tick's start; the tick took {tick:?})"
    );
    assert_eq!(pool("mv-4"), "pool-1");
    // A new one reaches the tenant where it is now.
    s.wait_pong("mv-4");
    let mut ws = open_ws(&s.addr, ADMIN, "mv-4", "/ws");
    ws_echo(&mut ws, "after the move");
}

#[test]
fn idle_and_flooding_connections_are_bounded_and_others_keep_answering() {
    let s = Slotpack::start(&[
        ("SLOTPACK_HEADER_TIMEOUT_MS", "1000"),
        ("SLOTPACK_MAX_CONNECTIONS_PER_CLIENT", "40"),
    ]);
    s.create_ok("fl-1", json!({}));
    s.wait_pong("fl-1");
    // The descriptor soft limit was raised to the hard one.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums[0], nums[1], "soft = hard: {line}");

    // A connection that sends nothing is closed after the header timeout.
    let mut idle = TcpStream::connect(&s.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 16];
    match idle.read(&mut b) {
        Ok(n) => assert_eq!(n, 0, "closed, not answered"),
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "still open: {e}"
        ),
    }
    println!("a silent connection was closed after {:?}", t0.elapsed());

    // A flood from 127.0.0.2: past 40 connections it gets 503 + Retry-After.
    let port: u16 = s.addr.rsplit(':').next().unwrap().parse().unwrap();
    let flood: Vec<socket2::Socket> = (0..40)
        .map(|_| {
            let c =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            c.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
                .unwrap();
            c.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
                .unwrap();
            // Half a request head: held open until the header timeout.
            c.send(b"GET /healthz HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    // Every one of them accepted (the scrape's own connection is one more).
    let open = |s: &Slotpack| -> u64 {
        let m = s.call("GET", "/metrics", "").text();
        m.lines()
            .find_map(|l| l.strip_prefix("slotpack_api_connections "))
            .unwrap()
            .parse()
            .unwrap()
    };
    wait_for(Duration::from_secs(5), "the flood accepted", || {
        (open(&s) > 40).then_some(())
    });
    let over = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    over.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    over.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut over: TcpStream = over.into();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let got = over.read_to_string(&mut answer);
    println!("over the cap: {got:?}");
    let answer = answer.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("\"unavailable\""), "{answer}");

    // Meanwhile 127.0.0.1 gets /healthz, the API and the proxy.
    let mut lat = Vec::new();
    for i in 0..60 {
        let path = match i % 3 {
            0 => "/healthz",
            1 => "/api/tenants/fl-1",
            _ => "/api/tenants/fl-1/proxy/api/v1/ping",
        };
        let t = Instant::now();
        let r = s.call("GET", path, "");
        lat.push(t.elapsed());
        assert_eq!(r.status, 200, "{path} during the flood: {}", r.text());
    }
    lat.sort();
    println!(
        "during a 40-connection flood from another client: p50 {:?}, p99 {:?} over 60 requests",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    let m = s.call("GET", "/metrics", "").text();
    let refused = m
        .lines()
        .find_map(|l| l.strip_prefix("slotpack_api_connections_refused "))
        .unwrap();
    assert!(refused.parse::<u64>().unwrap() >= 1, "{m}");
    drop(flood);
}

#[test]
fn one_serve_per_data_dir_and_per_address() {
    let s = Slotpack::start(&[]);
    let second = |data: &str, listen: &str| {
        Command::new(slotpack_tests::bin("slotpack"))
            .arg("serve")
            .env_clear()
            .env("SLOTPACK_ADMIN_TOKEN", ADMIN)
            .env("SLOTPACK_DATA_DIR", data)
            .env("SLOTPACK_LISTEN", listen)
            .env("SLOTPACK_UID_REGISTRY", "/nonexistent/registry")
            .output()
            .unwrap()
    };
    let free = slotpack_tests::agent::free_ports(1);
    let out = second(&s.data.display().to_string(), &format!("127.0.0.1:{free}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("pid {}", s.pid())),
        "names the holder: {err}"
    );
    // The first still answers, alone on its address.
    assert_eq!(s.call("GET", "/healthz", "").status, 200);
    let other = std::env::temp_dir().join(format!("slotpack-second-{}", std::process::id()));
    let out = second(&other.display().to_string(), &s.addr);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {}", s.addr)),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&other);
    for _ in 0..20 {
        assert_eq!(s.call("GET", "/api/tenants", "").status, 200);
    }
}

#[test]
fn owner_quotas_refuse_creates_naming_the_quota_and_change_nothing() {
    let s = Slotpack::start(&[("SLOTPACK_MAX_TENANTS_PER_OWNER", "2")]);
    let (small, _) = new_token(&s, json!({"owner": "small"}));
    for id in ["qa-1", "qa-2"] {
        assert_eq!(create_as(&s, &small, id, json!({})).status, 201);
    }
    let pools_before = s.call("GET", "/api/pool/status", "").json()["totalPools"].clone();
    let r = create_as(&s, &small, "qa-3", json!({}));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "quota_exceeded");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("SLOTPACK_MAX_TENANTS_PER_OWNER"), "{msg}");
    assert_eq!(s.call("GET", "/api/tenants/qa-3", "").status, 404);
    assert_eq!(
        s.call("GET", "/api/pool/status", "").json()["totalPools"],
        pools_before
    );
    // A token's own quotas: 5 tenants, 200 memoryMb.
    let (big, big_id) = new_token(
        &s,
        json!({"owner": "big", "maxTenants": 5, "maxMemoryMb": 200}),
    );
    for id in ["qb-1", "qb-2", "qb-3"] {
        assert_eq!(create_as(&s, &big, id, json!({})).status, 201);
    }
    let r = create_as(&s, &big, "qb-4", json!({}));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("256 memoryMb"), "{}", r.text());
    assert!(r.text().contains("maxMemoryMb"), "{}", r.text());
    // Bad quotas are a 400 and make no token.
    let before = s.call("GET", "/api/tokens", "").json()["tokens"]
        .as_array()
        .unwrap()
        .len();
    for bad in [
        json!({"owner": "x", "maxTenants": 0}),
        json!({"owner": "x", "maxMemoryMb": 2_000_000_000u64}),
        json!({"owner": "x", "maxTenants": "many"}),
    ] {
        let r = s.call("POST", "/api/tokens", &bad.to_string());
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let tokens = s.call("GET", "/api/tokens", "").json();
    let list = tokens["tokens"].as_array().unwrap();
    assert_eq!(list.len(), before, "{tokens}");
    let b = list.iter().find(|t| t["id"] == big_id.as_str()).unwrap();
    assert_eq!(
        (
            &b["maxTenants"],
            &b["maxMemoryMb"],
            &b["tenants"],
            &b["memoryMb"]
        ),
        (&json!(5), &json!(200), &json!(3), &json!(192)),
        "{tokens}"
    );
    let m = s.call("GET", "/metrics", "").text();
    for line in [
        "slotpack_owner_tenants{owner=\"big\"} 3",
        "slotpack_owner_quota_memory_bytes{owner=\"big\"} 209715200",
        "slotpack_owner_quota_tenants{owner=\"small\"} 2",
        "slotpack_quota_refusals_total 2",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
    }
    // The id POST answered revokes the token.
    assert_eq!(
        s.call("DELETE", &format!("/api/tokens/{big_id}"), "")
            .status,
        200
    );
    assert_eq!(s.call_as(Some(&big), "GET", "/api/tenants", "").status, 401);
}

/// Tenant `id`: the Python program `text` (written as `file` where slots
/// can read it) run by Debian's python3 with `env`, pinged over TCP;
/// returns once it is healthy.
fn start_python(s: &Slotpack, id: &str, file: &str, text: &str, env: Value) {
    let program = slotpack_tests::dir_seen_by_slots().join(file);
    std::fs::write(&program, text).unwrap();
    let spec = json!({
        "id": id,
        "command": "/usr/bin/python3",
        "args": [program.display().to_string()],
        "env": env,
        "resources": {"memoryMb": 128, "cpuMillis": 10},
        "ping": {"kind": "tcp", "intervalMs": 200},
    });
    let r = s.call("POST", "/api/tenants", &spec.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    wait_for(Duration::from_secs(30), &format!("{id} running"), || {
        let t = s.call("GET", &format!("/api/tenants/{id}"), "").json();
        (t["tenant"]["healthy"] == true).then_some(())
    });
}

/// Python's `websockets` package (PyPI), installed once into a folder
/// slot users can read; `None` (the test skips) outside CI without pip.
fn python_websockets() -> Option<String> {
    let dir = slotpack_tests::dir_seen_by_slots().join("pylib");
    if dir.join("websockets").exists() {
        return Some(dir.display().to_string());
    }
    let tmp = slotpack_tests::dir_seen_by_slots().join(format!("pylib.{}", std::process::id()));
    let ok = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&tmp)
        .arg("websockets>=12,<16")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(!in_ci(), "pip install websockets failed");
        eprintln!("skipped: cannot pip install websockets");
        return None;
    }
    let _ = std::fs::rename(&tmp, &dir);
    let _ = std::fs::remove_dir_all(&tmp);
    Some(dir.display().to_string())
}

const WS_SERVER: &str = r#"
import asyncio, os, websockets
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, "127.0.0.1", int(os.environ["PORT"])):
        await asyncio.Future()
asyncio.run(main())
"#;

#[test]
fn websockets_reach_a_server_that_checks_upgrade() {
    let Some(pylib) = python_websockets() else {
        return;
    };
    let s = Slotpack::start(&[]);
    start_python(
        &s,
        "pyws",
        "ws_echo.py",
        WS_SERVER,
        json!({"PYTHONPATH": pylib}),
    );
    // Without Upgrade the server refuses (it checks): 426.
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET /api/tenants/pyws/proxy/ HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n",
        s.addr
    )
    .unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("http/1.1 426"), "{head}");
    let mut ws = open_ws(&s.addr, ADMIN, "pyws", "/");
    for msg in ["hello", "through slotpack's proxy"] {
        ws_echo(&mut ws, msg);
    }
}

/// The page of a hostile tenant: its script tries the admin's routes from
/// the browser of an admin who opened it, and writes what happened.
const HOSTILE_PAGE: &str = r#"
import http.server, json, os
API = os.environ["API"]
seen = []
PAGE = """<html><body><pre id="out">start
</pre><script>
const out = document.getElementById('out');
const log = s => { out.textContent += s + '\\n'; };
log('cookie-visible:' + (document.cookie.indexOf('slotpack') >= 0 ? 'yes' : 'no'));
const api = '%s';
(async () => {
  const tries = [
    ['api-cors', api + '/api/tokens', {method: 'POST', credentials: 'include',
      headers: {'Content-Type': 'application/json'}, body: '{"owner":"mallory"}'}],
    ['api-simple', api + '/api/tokens', {method: 'POST', mode: 'no-cors', credentials: 'include',
      body: '{"owner":"mallory2"}'}],
    ['own-host', '/api/tokens', {method: 'POST', credentials: 'include', body: '{"owner":"mallory3"}'}],
  ];
  for (const [name, url, opts] of tries) {
    log('tried ' + name + ' ' + url);
    try {
      const r = await fetch(url, opts);
      log(name + ':status=' + r.status + ' type=' + r.type);
    } catch (e) { log(name + ':error=' + e); }
  }
  log('done');
})();
</script></body></html>""" % API
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def answer(self, code, ctype, body, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
    def record(self):
        seen.append({"method": self.command, "path": self.path,
                     "cookie": self.headers.get("Cookie", "")})
    def do_GET(self):
        if self.path == "/seen":
            return self.answer(200, "application/json", json.dumps(seen).encode())
        self.record()
        if self.path == "/":
            return self.answer(200, "text/html", PAGE.encode(),
                [("Set-Cookie", "slotpack_session=planted; Path=/"), ("Set-Cookie", "theme=dark; Path=/")])
        self.answer(404, "text/plain", b"no")
    def do_POST(self):
        self.record()
        n = int(self.headers.get("Content-Length", "0") or 0)
        self.rfile.read(n)
        self.answer(200, "text/plain", b"the tenant's own /api/tokens")
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

#[test]
fn a_tenant_page_in_a_real_browser_cannot_act_as_the_admin() {
    if !slotpack_tests::have_chromium() {
        return;
    }
    let browser = "chromium";
    let s = Slotpack::start(&[]);
    let api = format!("http://{}", s.addr);
    start_python(
        &s,
        "evil",
        "hostile_page.py",
        HOSTILE_PAGE,
        json!({"API": api}),
    );
    // On the API's origin (the path proxy) the page is sandboxed and our
    // cookie name is dropped from the tenant's answer.
    let r = s.call("GET", "/api/tenants/evil/proxy/", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-security-policy"), Some("sandbox"));
    let raw = request(
        &s.addr,
        "GET",
        "/api/tenants/evil/proxy/",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        b"",
    )
    .unwrap();
    let cookies: Vec<&str> = raw
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["theme=dark; Path=/"], "{:?}", raw.headers);

    // The admin opens the tenant's page as the console would: a session
    // url on the tenant's own host.
    let sess = s.call("POST", "/api/tenants/evil/session", "").json();
    let url = sess["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://evil.localhost:"), "{sess}");
    let profile = std::env::temp_dir().join(format!("slotpack-chromium-{}", std::process::id()));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    println!("the page's own account of what it tried:\n{dom}");
    assert!(
        dom.contains("done"),
        "the script ran to its end: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It tried the admin route both ways, and neither worked.
    assert!(dom.contains("tried api-cors"), "{dom}");
    assert!(dom.contains("api-cors:error=TypeError"), "{dom}");
    assert!(dom.contains("tried api-simple"), "{dom}");
    assert!(dom.contains("cookie-visible:no"), "{dom}");
    let tokens = s.call("GET", "/api/tokens", "").text();
    assert!(!tokens.contains("mallory"), "a token was made: {tokens}");
    // Its own host's /api/tokens is the tenant's, and our session cookie
    // never reached the tenant.
    assert!(dom.contains("own-host:status=200"), "{dom}");
    let seen: Value = s.call("GET", "/api/tenants/evil/proxy/seen", "").json();
    let seen = seen.as_array().unwrap();
    assert!(
        seen.iter()
            .any(|r| r["method"] == "POST" && r["path"] == "/api/tokens"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|r| !r["cookie"].as_str().unwrap().contains("slotpack")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|r| r["cookie"].as_str().unwrap().contains("theme=dark")),
        "the browser kept the tenant's own cookie: {seen:?}"
    );
}
