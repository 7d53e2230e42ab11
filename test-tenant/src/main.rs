//! `test-tenant`: a small program that behaves like a tenant (listens on
//! `$PORT`, answers `GET /api/v1/ping` with `{"status":"pong"}`) and can be
//! told to misbehave, for slotpack's tests, demos and benchmarks.
//!
//! Flags (all optional):
//! `--host ADDR` bind address (default 127.0.0.1), `--no-listen`,
//! `--crash-after-ms N` abort (SIGABRT), `--exit-after-ms N` exit with
//! `--exit-code C` (default 0), `--hang-after-ms N` stop answering,
//! `--leak-mb-per-sec N` grow resident memory, `--ignore-term` survive SIGTERM,
//! `--spawn-orphan-ms N` leave a grandchild that exits after N ms with its
//! parent gone, `--print-env`, `--log-lines N`, `--write-home NAME=TEXT`,
//! `--try-read PATH`, `--try-kill PID`.
//!
//! `/target/...` answers with the request target exactly as received.
//! `GET /ws` with `Upgrade: websocket` completes a real websocket handshake
//! and echoes every text or binary frame back.
//! `/stream` answers chunked, one line every 100 ms, until the client leaves.
//! `/say/TEXT` prints `test-tenant: said TEXT` to its log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct Opts {
    host: String,
    listen: bool,
    crash_after: Option<u64>,
    exit_after: Option<u64>,
    exit_code: u8,
    hang_after: Option<u64>,
    leak_mb_per_sec: u64,
    ignore_term: bool,
    spawn_orphan: Option<u64>,
    orphan_middle: Option<u64>,
    print_env: bool,
    log_lines: u64,
    write_home: Vec<String>,
    try_read: Vec<String>,
    try_kill: Vec<i32>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        host: "127.0.0.1".into(),
        listen: true,
        ..Opts::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--host" => o.host = val()?,
            "--no-listen" => o.listen = false,
            "--crash-after-ms" => o.crash_after = Some(num(val()?)?),
            "--exit-after-ms" => o.exit_after = Some(num(val()?)?),
            "--exit-code" => o.exit_code = val()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--hang-after-ms" => o.hang_after = Some(num(val()?)?),
            "--leak-mb-per-sec" => o.leak_mb_per_sec = num(val()?)?,
            "--ignore-term" => o.ignore_term = true,
            "--spawn-orphan-ms" => o.spawn_orphan = Some(num(val()?)?),
            "--orphan-middle" => o.orphan_middle = Some(num(val()?)?),
            "--print-env" => o.print_env = true,
            "--log-lines" => o.log_lines = num(val()?)?,
            "--write-home" => o.write_home.push(val()?),
            "--try-read" => o.try_read.push(val()?),
            "--try-kill" => o
                .try_kill
                .push(val()?.parse().map_err(|e| format!("{a}: {e}"))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("test-tenant: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(ms) = o.orphan_middle {
        // Middle process of --spawn-orphan-ms: start the grandchild, exit at once.
        let _ = Command::new("/proc/self/exe")
            .args(["--no-listen", "--exit-after-ms", &ms.to_string()])
            .spawn();
        return ExitCode::SUCCESS;
    }
    if o.ignore_term {
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&set),
            None,
        );
    }
    side_effects(&o);
    let hung = Arc::new(AtomicBool::new(false));
    if let Some(ms) = o.crash_after {
        after(ms, || {
            println!("test-tenant: crashing");
            std::process::abort()
        });
    }
    if let Some(ms) = o.exit_after {
        let code = o.exit_code;
        after(ms, move || {
            println!("test-tenant: exiting with {code}");
            std::process::exit(i32::from(code))
        });
    }
    if let Some(ms) = o.hang_after {
        let h = hung.clone();
        after(ms, move || {
            println!("test-tenant: hanging");
            h.store(true, Ordering::SeqCst)
        });
    }
    if o.leak_mb_per_sec > 0 {
        let mb = o.leak_mb_per_sec;
        thread::spawn(move || {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page so the memory is resident.
                hoard.push(vec![1u8; (mb * 1024 * 1024) as usize]);
                thread::sleep(Duration::from_secs(1));
            }
        });
    }
    if !o.listen {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = match TcpListener::bind(format!("{}:{port}", o.host)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("test-tenant: bind {}:{port}: {e}", o.host);
            return ExitCode::from(3);
        }
    };
    println!("test-tenant: listening on {}:{port}", o.host);
    for conn in listener.incoming() {
        if hung.load(Ordering::SeqCst) {
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
        if let Ok(s) = conn {
            thread::spawn(move || {
                let _ = serve(s);
            });
        }
    }
    ExitCode::SUCCESS
}

fn after(ms: u64, f: impl FnOnce() + Send + 'static) {
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(ms));
        f()
    });
}

fn side_effects(o: &Opts) {
    if o.print_env {
        for (k, v) in std::env::vars() {
            println!("env {k}={v}");
        }
    }
    for i in 0..o.log_lines {
        println!("test-tenant: log line {i}");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    for w in &o.write_home {
        let (name, text) = w.split_once('=').unwrap_or((w, ""));
        match std::fs::write(format!("{home}/{name}"), text) {
            Ok(()) => println!("write-home {name}: ok"),
            Err(e) => println!("write-home {name}: error: {e}"),
        }
    }
    for p in &o.try_read {
        match std::fs::read_to_string(p) {
            Ok(t) => println!("try-read {p}: ok: {t}"),
            Err(e) => println!("try-read {p}: denied: {e}"),
        }
    }
    for pid in &o.try_kill {
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            Ok(()) => println!("try-kill {pid}: ok"),
            Err(e) => println!("try-kill {pid}: denied: {e}"),
        }
    }
    if let Some(ms) = o.spawn_orphan {
        let st = Command::new("/proc/self/exe")
            .args(["--orphan-middle", &ms.to_string()])
            .status();
        println!("spawn-orphan: middle exited: {st:?}");
    }
    let _ = std::io::stdout().flush();
}

/// Answer one HTTP/1.1 connection (keep-alive supported).
fn serve(s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("");
        let path = target.split('?').next().unwrap_or("").to_string();
        let mut seen_headers = String::new();
        let mut len = 0usize;
        let mut close = false;
        let mut ws_key: Option<String> = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            seen_headers.push_str(h);
            seen_headers.push('\n');
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "sec-websocket-key" {
                    ws_key = Some(v.trim().to_string());
                } else if k == "content-length" {
                    len = v.trim().parse().unwrap_or(0);
                } else if k == "connection" && v.trim().eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        if let (Some(key), "/ws") = (&ws_key, path.as_str()) {
            let accept = base64(&sha1(
                format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
            ));
            write!(
                w,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )?;
            return ws_echo(r, w);
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        if path == "/stream" {
            // A long answer: one chunk every 100 ms until the client leaves.
            w.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
            )?;
            for n in 0u64.. {
                let line = format!("tick {n}\n");
                w.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())?;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        let (status, ctype, out): (&str, &str, Vec<u8>) = match (method.as_str(), path.as_str()) {
            ("GET", "/api/v1/ping") => (
                "200 OK",
                "application/json",
                br#"{"status":"pong"}"#.to_vec(),
            ),
            ("GET", "/info") => {
                let v = |k: &str| std::env::var(k).unwrap_or_default();
                let j = format!(
                    r#"{{"tenant":"{}","port":"{}","slot":"{}","pid":{},"uid":{}}}"#,
                    v("TENANT_ID"),
                    v("PORT"),
                    v("SLOT"),
                    std::process::id(),
                    nix::unistd::getuid()
                );
                ("200 OK", "application/json", j.into_bytes())
            }
            (_, "/echo") => ("200 OK", "application/octet-stream", body),
            (_, "/headers") => ("200 OK", "text/plain", seen_headers.into_bytes()),
            (_, p) if p.starts_with("/say/") => {
                // A line in the log on demand (log followers' tests).
                println!("test-tenant: said {}", &p["/say/".len()..]);
                ("200 OK", "text/plain", b"said".to_vec())
            }
            (_, p) if p.starts_with("/target/") => {
                ("200 OK", "text/plain", target.as_bytes().to_vec())
            }
            _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
        };
        // One write per answer: no Nagle/delayed-ACK stall between head and body.
        let mut answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{}\r\n",
            out.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        answer.extend_from_slice(&out);
        w.write_all(&answer)?;
        if close {
            return Ok(());
        }
    }
}

/// Echo websocket frames (unmasking the client's) until a close frame.
fn ws_echo(mut r: BufReader<TcpStream>, mut w: TcpStream) -> std::io::Result<()> {
    loop {
        let mut h = [0u8; 2];
        r.read_exact(&mut h)?;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            len = u64::from_be_bytes(b);
        }
        let mut mask = [0u8; 4];
        if masked {
            r.read_exact(&mut mask)?;
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload)?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&payload);
        w.write_all(&out)?;
        if opcode == 0x8 {
            return Ok(());
        }
    }
}

/// SHA-1 (FIPS 180-4), for the websocket accept key only.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64) * 8;
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_accept_key_of_rfc_6455() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        assert_eq!(
            base64(&sha1(key.as_bytes())),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
