//! The operator's page at `/dashboard`, driven in a real headless Chromium
//! (Debian's package) through the DevTools protocol, against a real
//! `slotpack serve` on the local backend: it lists the tenants (all for the
//! admin, only its own for an owner), its buttons restart, stop, start and
//! (after an in-page confirmation) delete, its log view shows a line the
//! tenant printed after the page opened, its event feed shows a tenant
//! created after it opened, and the token never leaves the tab's
//! sessionStorage. Screenshots go to `target/dashboard-screenshots/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use slotpack_tests::orchestrator::{Slotpack, ADMIN};
use slotpack_tests::{dir_seen_by_slots, have_chromium, wait_for};

/// How long any one thing the page should do may take before the test
/// fails (a limit for a stuck test, never a measurement).
const PATIENCE: Duration = Duration::from_secs(45);

/// A client websocket (RFC 6455), enough for the DevTools protocol: text
/// frames out (masked), text frames in (possibly fragmented), pings
/// answered.
struct Ws {
    s: TcpStream,
    mask_seed: u32,
}

impl Ws {
    fn connect(url: &str) -> Ws {
        let rest = url.strip_prefix("ws://").expect("a ws:// url");
        let (host, path) = rest.split_at(rest.find('/').expect("a path"));
        let mut s = TcpStream::connect(host).expect("connect to devtools");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s.set_nodelay(true).unwrap();
        // A fixed key: the server only echoes its digest.
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: c2xvdHBhY2stZGFzaGJvYXJk\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let head = slotpack_tests::http::read_head(&mut s);
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "devtools handshake: {head}"
        );
        Ws {
            s,
            mask_seed: 0x5107_9ac3,
        }
    }

    fn frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        // Any key will do for a client of our own (xorshift, not secret).
        self.mask_seed ^= self.mask_seed << 13;
        self.mask_seed ^= self.mask_seed >> 17;
        self.mask_seed ^= self.mask_seed << 5;
        let mask = self.mask_seed.to_be_bytes();
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&out)
    }

    fn send(&mut self, text: &str) {
        self.frame(0x1, text.as_bytes()).expect("write to devtools");
    }

    fn recv(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.s.read_exact(&mut h).expect("read from devtools");
            let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.s.read_exact(&mut b).unwrap();
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.s.read_exact(&mut b).unwrap();
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; len as usize];
            self.s.read_exact(&mut payload).unwrap();
            match opcode {
                0x9 => self.frame(0xA, &payload).expect("pong to devtools"),
                0x8 => panic!("devtools closed the websocket"),
                0xA => {}
                _ => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).expect("utf-8 from devtools");
                    }
                }
            }
        }
    }
}

/// One headless Chromium (in a process group of its own) and one page of
/// it, spoken to over the DevTools protocol.
struct Browser {
    proc: Chromium,
    /// The browser's own endpoint (targets, close).
    browser: Ws,
    /// The page's.
    ws: Ws,
    next_id: u64,
    /// Exceptions, console errors and browser log errors of the page.
    problems: Vec<String>,
}

/// One command on `ws`, events before its answer dropped; its result.
fn command(ws: &mut Ws, id: u64, method: &str, params: Value) -> Value {
    ws.send(&json!({"id": id, "method": method, "params": params}).to_string());
    loop {
        let m: Value = serde_json::from_str(&ws.recv()).expect("devtools JSON");
        if m["id"] == id {
            assert!(m.get("error").is_none(), "{method}: {}", m["error"]);
            return m["result"].clone();
        }
    }
}

impl Browser {
    fn start() -> Browser {
        // A profile of its own: the tests of this file run at once.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "slotpack-dashboard-chromium-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--window-size=1600,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        // Ended and its profile removed however this test ends from here on.
        let mut proc = Chromium { child, profile };
        // Its stderr is read to the end (a full pipe would stall it); the
        // first "DevTools listening on ws://..." names its port.
        let err = proc.child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let browser_url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium printed its DevTools address");
        let host = browser_url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .unwrap()
            .to_string();
        let mut browser = Ws::connect(&browser_url);
        // Its first tab (about:blank), reached at its own endpoint.
        let page = wait_for(Duration::from_secs(30), "chromium's page", || {
            let r = command(&mut browser, 1, "Target.getTargets", json!({}));
            r["targetInfos"]
                .as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["targetId"].as_str())
                .map(str::to_string)
        });
        let mut b = Browser {
            ws: Ws::connect(&format!("ws://{host}/devtools/page/{page}")),
            browser,
            proc,
            next_id: 0,
            problems: Vec::new(),
        };
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b.call("Log.enable", json!({}));
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// One DevTools command; its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// One DevTools command; its result, or the error it answered.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.ws
            .send(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let m: Value = serde_json::from_str(&self.ws.recv()).expect("devtools JSON");
            if m["id"] == id {
                return match m.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(m["result"].clone()),
                };
            }
            self.note(&m);
        }
    }

    /// Keep what the page reported going wrong.
    fn note(&mut self, m: &Value) {
        let p = &m["params"];
        match m["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                self.problems.push(format!(
                    "exception: {}",
                    d["exception"]["description"]
                        .as_str()
                        .unwrap_or(&d["text"].to_string())
                ));
            }
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.problems.push(format!("console.error: {}", p["args"]));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.problems.push(format!(
                    "{}: {}",
                    p["entry"]["source"].as_str().unwrap_or("log"),
                    p["entry"]["text"].as_str().unwrap_or_default()
                ));
            }
            _ => {}
        }
    }

    /// Evaluate `js` in the page (promises awaited); its JSON value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{js}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Wait until `js` is truthy; its value. While the page loads, an
    /// evaluation that finds no document yet counts as not yet.
    fn wait(&mut self, what: &str, js: &str) -> Value {
        wait_for(PATIENCE, what, || {
            let r = self
                .try_call(
                    "Runtime.evaluate",
                    json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
                )
                .ok()?;
            if r.get("exceptionDetails").is_some() {
                return None;
            }
            let v = r["result"]["value"].clone();
            let truthy = !(v.is_null()
                || v == json!(false)
                || v == json!("")
                || v == json!(0)
                || v.as_array().is_some_and(|a| a.is_empty()));
            truthy.then_some(v)
        })
    }

    fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) return 'missing'; \
             if (e.disabled) return 'disabled'; e.click(); return 'ok'; }})()",
            s = json!(selector)
        );
        assert_eq!(self.eval(&js), json!("ok"), "click {selector}");
    }

    fn text(&mut self, selector: &str) -> String {
        let js = format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            json!(selector)
        );
        self.eval(&js).as_str().unwrap_or_default().to_string()
    }

    /// The tenant ids of the table's rows, sorted.
    fn rows(&mut self) -> Vec<String> {
        let v = self.eval(
            "[...document.querySelectorAll('#tenant-rows [data-tenant]')].map(r => r.dataset.tenant).sort()",
        );
        serde_json::from_value(v).unwrap()
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// A PNG of the viewport, saved under `dir`; its path (printed).
    fn screenshot(&mut self, dir: &Path, name: &str) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Asked to close first; [`Chromium`] makes sure of it.
        let close = json!({"id": 2, "method": "Browser.close"}).to_string();
        let _ = self.browser.frame(0x1, close.as_bytes());
        for _ in 0..300 {
            if self.proc.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The Chromium we started, leader of a process group of its own, and its
/// profile folder: dropped, the group is killed (by the pid we started)
/// and the folder removed.
struct Chromium {
    child: Child,
    profile: PathBuf,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= if c == b'=' { 0 } else { val(c) } << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

/// `target/dashboard-screenshots` of this build.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>
    let target = exe.ancestors().nth(3).expect("target dir");
    target.join("dashboard-screenshots")
}

fn tenant_json(s: &Slotpack, id: &str) -> Value {
    let r = s.call("GET", &format!("/api/tenants/{id}"), "");
    assert_eq!(r.status, 200, "{id}: {}", r.text());
    r.json()["tenant"].clone()
}

/// Wait until the API shows `id` so; its tenant.
fn wait_tenant(s: &Slotpack, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(PATIENCE, &format!("{id}: {what}"), || {
        let t = tenant_json(s, id);
        f(&t).then_some(t)
    })
}

#[test]
fn the_dashboard_assets_carry_a_strict_policy_and_no_inline_code() {
    let s = Slotpack::start(&[]);
    for (path, ctype) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let r = s.call_as(None, "GET", path, "");
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(ctype),
            "{path}"
        );
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    }
    let html = s.call_as(None, "GET", "/dashboard", "").text();
    // Every script has a src (none inline), no element has a style
    // attribute or an on* handler: the policy would refuse them anyway.
    for tag in html.split("<script").skip(1) {
        let head = &tag[..tag.find('>').unwrap()];
        assert!(head.contains("src="), "inline script: <script{head}>");
    }
    assert!(!html.contains(" style="), "inline style in {html}");
    assert!(!html.contains(" onclick="), "inline handler in {html}");
    // The page holds nothing secret and no token is needed to load it.
    assert!(!html.contains(ADMIN));
}

#[test]
fn the_dashboard_in_a_real_browser_lists_acts_follows_and_scopes_to_the_owner() {
    if !have_chromium() {
        return;
    }
    let s = Slotpack::start(&[]);
    let shots = screenshot_dir();
    let _ = std::fs::remove_dir_all(&shots);

    // An owner, and tenants of the admin and of the owner. "web" prints
    // the content of a file at each start: the file changes after the page
    // opened, so its next line can only be printed after that.
    let tok = s.call("POST", "/api/tokens", r#"{"owner":"alice"}"#);
    assert_eq!(tok.status, 201, "{}", tok.text());
    let tok = tok.json();
    let alice = tok["token"].as_str().unwrap().to_string();
    let alice_id = tok["id"].as_str().unwrap().to_string();
    let said = Removed(dir_seen_by_slots().join(format!("dashboard-{}.txt", std::process::id())));
    let said = &said.0;
    let nonce = format!(
        "{:x}",
        std::process::id() as u64 * 7919 + s.base_port as u64
    );
    std::fs::write(said, format!("before-{nonce}")).unwrap();
    s.create_ok(
        "web",
        json!({"args": ["--try-read", said.display().to_string()]}),
    );
    s.create_ok("worker", json!({}));
    let body = slotpack_tests::orchestrator::tenant("alice-bot", json!({}));
    let r = s.call_as(Some(&alice), "POST", "/api/tenants", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    for id in ["web", "worker", "alice-bot"] {
        s.wait_pong(id);
    }

    let mut b = Browser::start();
    let base = format!("http://{}", s.addr);

    // The admin opens the page with the token in the fragment: it moves
    // to sessionStorage and leaves the address.
    b.navigate(&format!("{base}/dashboard#token={ADMIN}"));
    b.wait(
        "the first table",
        "document.body && document.body.dataset.loadedMs",
    );
    let where_token = b.eval(&format!(
        "({{hash: location.hash, href: location.href.includes({t}), cookie: document.cookie, \
          session: sessionStorage.getItem('slotpack.token') === {t}, local: localStorage.length}})",
        t = json!(ADMIN)
    ));
    assert_eq!(
        where_token,
        json!({"hash": "", "href": false, "cookie": "", "session": true, "local": 0}),
        "the token is in sessionStorage only"
    );
    assert_eq!(b.rows(), ["alice-bot", "web", "worker"]);
    b.wait("the admin's role", "document.body.dataset.role === 'admin'");
    assert!(b.text("#whoami").contains("admin"));

    // The pools, as the API reports them: used and free slots of each.
    let pools = s.call("GET", "/api/pool/status", "").json();
    let pools = pools["pools"].as_array().unwrap().clone();
    assert!(!pools.is_empty());
    b.wait(
        "the pools table",
        &format!(
            "!document.getElementById('pools-section').hidden && \
             document.querySelectorAll('#pool-rows tr').length === {}",
            pools.len()
        ),
    );
    for p in &pools {
        let (used, cap) = (
            p["botsCount"].as_u64().unwrap(),
            p["capacity"].as_u64().unwrap(),
        );
        let id = p["id"].as_str().unwrap();
        assert_eq!(
            b.text(&format!("tr[data-pool=\"{id}\"] [data-field=\"used\"]")),
            format!("{used} / {}", cap - used),
            "pool {id}"
        );
        let slots = b.eval(&format!(
            "document.querySelectorAll('tr[data-pool=\"{id}\"] .slot').length"
        ));
        assert_eq!(slots, json!(cap), "pool {id} shows each slot");
    }

    // Each row says what the API says.
    b.wait(
        "web running on the page",
        "document.querySelector('#tenant-rows [data-tenant=\"web\"]').dataset.state === 'running'",
    );
    let web = tenant_json(&s, "web");
    assert_eq!(
        b.text("#tenant-rows [data-tenant=\"web\"] [data-field=\"port\"]"),
        web["placement"]["port"].to_string()
    );
    assert_eq!(
        b.text("#tenant-rows [data-tenant=\"web\"] [data-field=\"placement\"]"),
        format!(
            "{} / {}",
            web["placement"]["poolId"].as_str().unwrap(),
            web["placement"]["slot"]
        )
    );

    // The log view follows web's log: first what it printed before.
    b.click("#tenant-rows [data-tenant=\"web\"] button[data-action=\"logs\"]");
    b.wait(
        "web's log on the page",
        &format!(
            "document.getElementById('log').textContent.includes({})",
            json!(format!("ok: before-{nonce}"))
        ),
    );

    // A restart from the page restarts it (its count goes up in the API),
    // and the line it prints as it starts again, which did not exist when
    // the page opened, reaches the log view without a click.
    let restarts = web["restarts"].as_u64().unwrap();
    std::fs::write(said, format!("after-{nonce}")).unwrap();
    b.click("#tenant-rows [data-tenant=\"web\"] button[data-action=\"restart\"]");
    let web = wait_tenant(&s, "web", "restarted", |t| {
        t["restarts"].as_u64().unwrap() > restarts && t["state"] == "running"
    });
    b.wait(
        "the new line in the log view",
        &format!(
            "document.getElementById('log').textContent.includes({})",
            json!(format!("ok: after-{nonce}"))
        ),
    );
    b.wait(
        "the page's restart count",
        &format!(
            "Number(document.querySelector('#tenant-rows [data-tenant=\"web\"] [data-field=\"restarts\"]').textContent) >= {}",
            web["restarts"]
        ),
    );
    let log_status = b.text("#log-status");
    println!(
        "log view: {log_status}; event feed: {}",
        b.text("#events-status")
    );

    // A tenant created now shows in the live event feed and in the table.
    s.create_ok("late", json!({}));
    b.wait(
        "late's placement in the event feed",
        "document.querySelector('#events li[data-tenant=\"late\"][data-kind=\"tenant.placed\"]')",
    );
    b.wait(
        "late's row",
        "document.querySelector('#tenant-rows [data-tenant=\"late\"]')",
    );
    let shot = b.screenshot(&shots, "1-admin.png");

    // Stop and start from the page.
    b.click("#tenant-rows [data-tenant=\"worker\"] button[data-action=\"stop\"]");
    wait_tenant(&s, "worker", "stopped", |t| {
        t["desired"] == "stopped" && t["state"] == "stopped"
    });
    b.wait(
        "worker stopped on the page",
        "document.querySelector('#tenant-rows [data-tenant=\"worker\"]').dataset.state === 'stopped'",
    );
    b.click("#tenant-rows [data-tenant=\"worker\"] button[data-action=\"start\"]");
    wait_tenant(&s, "worker", "running again", |t| {
        t["desired"] == "running" && t["state"] == "running"
    });

    // The API's error envelope is shown: a restart clicked on a row whose
    // tenant another operator has just deleted.
    b.wait(
        "worker running on the page, no action pending",
        "(r => r.dataset.state === 'running' && !r.classList.contains('busy'))\
         (document.querySelector('#tenant-rows [data-tenant=\"worker\"]'))",
    );
    let status = b.eval(
        "(async () => { \
           const button = document.querySelector('#tenant-rows [data-tenant=\"worker\"] button[data-action=\"restart\"]'); \
           const r = await fetch('/api/tenants/worker', {method: 'DELETE', \
             headers: {Authorization: 'Bearer ' + sessionStorage.getItem('slotpack.token')}}); \
           button.click(); \
           return r.status; })()",
    );
    assert_eq!(status, json!(200));
    let error = b.wait(
        "the error banner",
        "!document.getElementById('error').hidden && document.getElementById('error-text').textContent",
    );
    let error = error.as_str().unwrap();
    assert!(
        error.contains("restart worker") && error.contains("404"),
        "{error}"
    );
    assert!(error.contains("not_found"), "the API's code: {error}");
    b.wait(
        "worker gone from the table",
        "!document.querySelector('#tenant-rows [data-tenant=\"worker\"]')",
    );
    b.click("#error-close");

    // Delete asks first, in the page: cancel keeps the tenant.
    b.click("#tenant-rows [data-tenant=\"late\"] button[data-action=\"delete\"]");
    b.wait(
        "the confirmation",
        "document.getElementById('confirm').open && document.getElementById('confirm').dataset.tenant === 'late'",
    );
    assert!(b.text("#confirm-text").contains("late"));
    b.screenshot(&shots, "2-confirm-delete.png");
    b.click("#confirm-cancel");
    b.wait(
        "the confirmation closed",
        "!document.getElementById('confirm').open",
    );
    assert_eq!(
        s.call("GET", "/api/tenants/late", "").status,
        200,
        "cancel deletes nothing"
    );
    // Confirmed, it deletes.
    b.click("#tenant-rows [data-tenant=\"late\"] button[data-action=\"delete\"]");
    b.wait(
        "the confirmation",
        "document.getElementById('confirm').open",
    );
    b.click("#confirm-ok");
    wait_for(PATIENCE, "late deleted", || {
        (s.call("GET", "/api/tenants/late", "").status == 404).then_some(())
    });
    b.wait(
        "late gone from the table",
        "!document.querySelector('#tenant-rows [data-tenant=\"late\"]')",
    );
    assert_eq!(b.rows(), ["alice-bot", "web"]);

    // Log out: the token is gone from the tab.
    b.click("#logout");
    b.wait(
        "the login form",
        "!document.getElementById('login').hidden && document.getElementById('console').hidden",
    );
    assert_eq!(
        b.eval("sessionStorage.getItem('slotpack.token')"),
        Value::Null
    );
    assert!(b.rows().is_empty());

    // The owner logs in through the form: only its own tenant, no pools.
    b.eval(&format!(
        "document.getElementById('token').value = {}; \
         document.getElementById('login-form').requestSubmit(); true",
        json!(alice)
    ));
    b.wait("the owner's role", "document.body.dataset.role === 'owner'");
    b.wait(
        "the owner's table",
        "document.querySelector('#tenant-rows [data-tenant=\"alice-bot\"]')",
    );
    assert_eq!(b.rows(), ["alice-bot"]);
    assert_eq!(
        b.eval("document.getElementById('pools-section').hidden"),
        json!(true)
    );
    assert!(b.text("#whoami").contains("owner"), "{}", b.text("#whoami"));
    // Its restart button works for it too.
    let before = tenant_json(&s, "alice-bot")["restarts"].as_u64().unwrap();
    b.wait(
        "alice-bot running on the page",
        "document.querySelector('#tenant-rows [data-tenant=\"alice-bot\"]').dataset.state === 'running'",
    );
    b.click("#tenant-rows [data-tenant=\"alice-bot\"] button[data-action=\"restart\"]");
    wait_tenant(&s, "alice-bot", "restarted by its owner", |t| {
        t["restarts"].as_u64().unwrap() > before
    });
    b.click("#tenant-rows [data-tenant=\"alice-bot\"] button[data-action=\"logs\"]");
    b.wait(
        "alice-bot's log",
        "document.getElementById('log').textContent.includes('test-tenant: listening on')",
    );
    b.screenshot(&shots, "3-owner.png");

    // Revoked, the token no longer works: the page says so and asks again.
    let r = s.call("DELETE", &format!("/api/tokens/{alice_id}"), "");
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    b.wait(
        "the login form after the revocation",
        "!document.getElementById('login').hidden && document.getElementById('login-error').textContent.includes('refused')",
    );
    assert_eq!(
        b.eval("sessionStorage.getItem('slotpack.token')"),
        Value::Null
    );
    b.screenshot(&shots, "4-revoked.png");

    // Nothing went wrong in the page: no uncaught exception, nothing the
    // content security policy refused.
    let bad: Vec<&String> = b
        .problems
        .iter()
        .filter(|p| {
            p.starts_with("exception")
                || p.contains("Content Security Policy")
                || p.contains("Refused to")
        })
        .collect();
    assert!(bad.is_empty(), "the page reported: {bad:#?}");
    println!("browser log (errors): {:#?}", b.problems);

    // The README's picture, when asked for (or when there is none yet).
    let docs = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("docs/dashboard.png");
    if std::env::var_os("SLOTPACK_DOCS_SCREENSHOT").is_some() || !docs.exists() {
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::copy(&shot, &docs).unwrap();
        println!("screenshot: {}", docs.display());
    }
}

/// A file removed when the test ends, however it ends.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_dashboards_event_stream_parser_takes_chunks_split_anywhere() {
    if !have_chromium() {
        return;
    }
    let s = Slotpack::start(&[]);
    let mut b = Browser::start();
    b.navigate(&format!("http://{}/dashboard", s.addr));
    b.wait(
        "the login form",
        "document.body && document.body.dataset.view === 'login'",
    );
    // The page's own parser, fed a stream in every split of it: comments,
    // CRLF and CR line ends, multi-line data, ids, a retry.
    let v = b.eval(
        r#"(() => {
          const text = ": keep-alive\r\nid: 7\r\ndata: {\"seq\":7,\r\ndata: \"kind\":\"tenant.placed\"}\r\n\r\n"
            + ":\n\nretry: 2500\nid: 8\ndata: {\"seq\":8}\n\n" + "id: 9\rdata: {\"seq\":9}\r\r" + "data: partial";
          const results = new Set();
          for (let cut1 = 0; cut1 <= text.length; cut1++) {
            for (let cut2 = cut1; cut2 <= text.length; cut2 += 7) {
              const got = [];
              const p = new window.SlotpackSse((m) => got.push([m.id, JSON.parse(m.data).seq]));
              p.feed(text.slice(0, cut1)); p.feed(text.slice(cut1, cut2)); p.feed(text.slice(cut2));
              results.add(JSON.stringify([got, p.lastId, p.retry, p.comments]));
            }
          }
          return [...results];
        })()"#,
    );
    assert_eq!(
        v,
        json!([r#"[[["7",7],["8",8],["9",9]],"9",2500,2]"#]),
        "one result, whatever the chunks"
    );
}
