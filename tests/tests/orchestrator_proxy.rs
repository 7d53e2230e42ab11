//! The reverse proxy to tenants: methods, streaming bodies, websockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use slotpack_tests::http::read_head;
use slotpack_tests::orchestrator::{Slotpack, ADMIN};

#[test]
fn proxies_any_method_with_query_and_large_bodies() {
    let s = Slotpack::start(&[]);
    s.create_ok("px", json!({}));
    s.wait_pong("px");
    let r = s.call("GET", "/api/tenants/px/proxy/api/v1/ping?x=1", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"status":"pong"}"#);
    let info = s.call("GET", "/api/tenants/px/proxy/info", "").json();
    assert_eq!(info["tenant"], "px");
    // 4 MiB through the proxy and back.
    let big: String = (0..4 * 1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    for m in ["POST", "PUT", "PATCH"] {
        let r = s.call(m, "/api/tenants/px/proxy/echo", &big);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), big.len());
        assert!(r.body == big.as_bytes());
    }
    // The tenant's own status codes pass through.
    assert_eq!(
        s.call("GET", "/api/tenants/px/proxy/missing", "").status,
        404
    );
    // A tenant that is down: 502 JSON.
    s.call("POST", "/api/tenants/px/stop", "");
    let r = s.call("GET", "/api/tenants/px/proxy/api/v1/ping", "");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "bad_gateway");
}

#[test]
fn proxies_websockets() {
    let s = Slotpack::start(&[]);
    s.create_ok("ws", json!({}));
    s.wait_pong("ws");
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET /api/tenants/ws/proxy/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut c);
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // A masked text frame "hello", echoed back unmasked.
    for msg in ["hello", "second message"] {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x81, 0x80 | msg.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(msg.bytes().enumerate().map(|(i, x)| x ^ mask[i % 4]));
        c.write_all(&f).unwrap();
        let mut h = [0u8; 2];
        c.read_exact(&mut h).unwrap();
        assert_eq!(h[0], 0x81);
        let mut p = vec![0u8; h[1] as usize];
        c.read_exact(&mut p).unwrap();
        assert_eq!(p, msg.as_bytes());
    }
}

#[test]
fn the_proxy_never_forwards_our_tokens() {
    let s = Slotpack::start(&[]);
    s.create_ok("tok", json!({}));
    s.wait_pong("tok");
    // /headers answers with the request headers the tenant received.
    let r = slotpack_tests::http::request(
        &s.addr,
        "GET",
        "/api/tenants/tok/proxy/headers",
        &[
            ("Authorization", &format!("Bearer {ADMIN}")),
            ("X-API-Key", ADMIN),
            ("X-Custom", "kept"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.text().to_ascii_lowercase();
    assert!(seen.contains("x-custom: kept"), "{seen}");
    assert!(
        !seen.contains(&ADMIN.to_ascii_lowercase()),
        "our token reached the tenant:\n{seen}"
    );
    assert!(
        !seen.contains("authorization") && !seen.contains("x-api-key"),
        "{seen}"
    );
}

#[test]
fn the_proxy_forwards_the_path_exactly_as_received() {
    let s = Slotpack::start(&[]);
    s.create_ok("raw", json!({}));
    s.wait_pong("raw");
    for path in [
        "/target/a%2Fb",
        "/target/with%20space",
        "/target/q%3Fnot-a-query?real=1&x=%2F",
        "/target/%FF%00bytes",
        "/target/UPPER/..%2F..%2Fetc",
    ] {
        let r = s.call("GET", &format!("/api/tenants/raw/proxy{path}"), "");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.text(), path);
    }
}

#[test]
fn with_slotpacks_own_header_the_tenants_credentials_pass_and_no_cookie_is_a_credential() {
    let s = Slotpack::start(&[]);
    s.create_ok("own", json!({}));
    s.wait_pong("own");
    let headers = |h: &[(&str, &str)]| {
        let r =
            slotpack_tests::http::request(&s.addr, "GET", "/api/tenants/own/proxy/headers", h, b"")
                .unwrap();
        (r.status, r.text().to_ascii_lowercase())
    };
    // X-Slotpack-Token is slotpack's; Authorization is the tenant's login.
    let (status, seen) = headers(&[
        ("X-Slotpack-Token", ADMIN),
        ("Authorization", "Basic dXNlcjpwdw=="),
        ("Cookie", "session=abc; slotpack_token=whatever"),
    ]);
    assert_eq!(status, 200, "{seen}");
    assert!(seen.contains("authorization: basic dxnlcjpwdw=="), "{seen}");
    assert!(
        seen.contains("cookie: session=abc\r") || seen.contains("cookie: session=abc\n"),
        "{seen}"
    );
    assert!(!seen.contains(&ADMIN.to_ascii_lowercase()), "{seen}");
    assert!(
        !seen.contains("slotpack_token") && !seen.contains("x-slotpack-token"),
        "{seen}"
    );
    for want in [
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-prefix: /api/tenants/own/proxy",
        &format!("x-forwarded-host: {}", s.addr),
    ] {
        assert!(seen.contains(want), "missing {want}:\n{seen}");
    }
    // A cookie holding the admin token authenticates nothing: neither the
    // proxy nor an admin route, with or without a browser's Origin.
    let cookie = format!("slotpack_token={ADMIN}; slotpack_session={ADMIN}; theme=dark");
    let (status, seen) = headers(&[("Cookie", &cookie)]);
    assert_eq!(status, 401, "{seen}");
    let r = slotpack_tests::http::request(
        &s.addr,
        "POST",
        "/api/tokens",
        &[
            ("Cookie", &cookie),
            ("Origin", &format!("http://{}", s.addr)),
            ("Content-Type", "application/json"),
        ],
        br#"{"owner":"mallory"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    // A wrong one is refused; Bearer stays slotpack's (never forwarded).
    let (status, _) = headers(&[
        ("X-Slotpack-Token", "nope"),
        ("Authorization", &format!("Bearer {ADMIN}")),
    ]);
    assert_eq!(status, 401);
}

#[test]
fn a_request_in_flight_is_answered_when_the_orchestrator_stops() {
    let mut s = Slotpack::start(&[]);
    s.create_ok("gs", json!({}));
    s.wait_pong("gs");
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // `Expect: 100-continue`: the interim answer comes once the proxy reads
    // the body, so the request is surely in flight when the stop comes.
    write!(
        c,
        "POST /api/tenants/gs/proxy/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut c);
    assert!(
        head.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // New connections are no longer taken...
    slotpack_tests::wait_for(Duration::from_secs(20), "listener closed", || {
        TcpStream::connect(&s.addr).is_err().then_some(())
    });
    // ...while the one in flight gets its whole answer.
    c.write_all(b"helloworld").unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\nhelloworld"), "{text}");
    assert!(s.stop().success(), "{}", s.stderr());
}
