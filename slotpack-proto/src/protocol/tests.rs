//! Spec checks and wire shapes.

use super::*;

#[test]
fn ids() {
    assert!(is_valid_id("bot-1"));
    assert!(is_valid_id("0"));
    assert!(is_valid_id(&"a".repeat(63)));
    assert!(!is_valid_id(&"a".repeat(64)));
    assert!(!is_valid_id(""));
    assert!(!is_valid_id("../x"));
    assert!(!is_valid_id("-a"));
    assert!(!is_valid_id("Bot"));
    assert!(!is_valid_id("a.b"));
}

#[test]
fn spec_defaults_and_unknown_fields() {
    let s: ProgramSpec = serde_json::from_str(r#"{"command":"/bin/true","slot":1}"#).unwrap();
    assert_eq!(s.restart.policy, RestartPolicy::Always);
    assert_eq!(s.stop.signal, StopSignal::Term);
    assert!(s.ping.is_none());
    let e = serde_json::from_str::<ProgramSpec>(r#"{"command":"x","slot":1,"bogus":1}"#);
    assert!(e.unwrap_err().to_string().contains("bogus"));
    let p: PingSpec = serde_json::from_str(r#"{"kind":"tcp"}"#).unwrap();
    assert_eq!(p.interval_ms, None);
    assert_eq!(p.failure_threshold, 3);
}

#[test]
fn every_number_has_a_range() {
    let base = r#"{"command":"/bin/true","slot":1}"#;
    let ok: ProgramSpec = serde_json::from_str(base).unwrap();
    assert!(check_spec(&ok).is_ok());
    for (patch, field) in [
        (r#"{"stop":{"timeoutMs":300000}}"#, "stop.timeoutMs"),
        (
            r#"{"ping":{"kind":"tcp","intervalMs":5}}"#,
            "ping.intervalMs",
        ),
        (r#"{"ping":{"kind":"tcp","timeoutMs":0}}"#, "ping.timeoutMs"),
        (
            r#"{"ping":{"kind":"tcp","failureThreshold":0}}"#,
            "ping.failureThreshold",
        ),
        (
            r#"{"restart":{"startSecs":18446744073709551615}}"#,
            "restart.startSecs",
        ),
        (r#"{"restart":{"maxAttempts":0}}"#, "restart.maxAttempts"),
        (r#"{"restart":{"backoffMs":86400001}}"#, "restart.backoffMs"),
        (r#"{"maxMemoryMb":0}"#, "maxMemoryMb"),
    ] {
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        let p: serde_json::Value = serde_json::from_str(patch).unwrap();
        for (k, x) in p.as_object().unwrap() {
            v[k] = x.clone();
        }
        let spec: ProgramSpec = serde_json::from_value(v).unwrap();
        let e = check_spec(&spec).unwrap_err();
        assert!(e.starts_with(field), "{patch}: {e}");
    }
}

#[test]
fn design_example_parses() {
    let j = r#"{"command": "/usr/bin/python3", "args": ["-m", "http.server"], "env": {},
 "slot": 3, "port": 9003,
 "ping": {"kind": "http", "path": "/api/v1/ping", "intervalMs": 30000,
      "timeoutMs": 5000, "failureThreshold": 3, "initialDelayMs": 0},
 "restart": {"policy": "always", "maxAttempts": 3, "cooldownMs": 60000,
         "startSecs": 1, "backoffMs": 1000},
 "stop": {"signal": "TERM", "timeoutMs": 10000},
 "maxMemoryMb": 512}"#;
    let s: ProgramSpec = serde_json::from_str(j).unwrap();
    assert_eq!(s.port, Some(9003));
    assert_eq!(s.restart.max_attempts, Some(3));
    assert_eq!(s.ping.unwrap().interval_ms, Some(30_000));
    assert_eq!(s.max_memory_mb, Some(512));
}

#[test]
fn a_tenant_id_is_valid_by_construction() {
    assert_eq!(TenantId::parse("bot-1").unwrap().as_str(), "bot-1");
    for bad in ["", "Bot", "-x", "a b", "../x", &"a".repeat(64)] {
        assert!(TenantId::parse(bad).is_err(), "{bad:?}");
    }
    let id: TenantId = serde_json::from_str(r#""ok_1""#).unwrap();
    assert_eq!(id, "ok_1");
    let err = serde_json::from_str::<TenantId>(r#""NO""#).unwrap_err();
    assert!(err.to_string().contains("invalid id"), "{err}");
}

#[test]
fn volume_paths_are_checked() {
    let v = |p: &str| VolumeSpec { path: p.into() };
    assert!(check_volumes(&[v("/freqtrade/user_data"), v("/data")]).is_ok());
    for bad in [
        "data", "/", "/proc", "/proc/1", "/sys/fs", "/dev/shm", "/a/../b", "/a/./b", "/a//b",
        "/a/", "/a\nb",
    ] {
        let e = check_volumes(&[v(bad)]).expect_err(bad);
        assert!(e.contains("volumes[0].path"), "{bad}: {e}");
    }
    // Not to be confused with /dev: a sibling with the same prefix is fine.
    assert!(check_volumes(&[v("/devices")]).is_ok());
    assert!(check_volumes(&[v("/a"), v("/a")])
        .unwrap_err()
        .contains("twice"));
    assert!(check_volumes(&[v("/a"), v("/a/b")])
        .unwrap_err()
        .contains("nested"));
    let nine: Vec<_> = (0..9).map(|i| v(&format!("/v{i}"))).collect();
    assert!(check_volumes(&nine).unwrap_err().contains("at most 8"));
    assert!(check_volumes(&[v(&format!("/{}", "x".repeat(MAX_VOLUME_PATH)))]).is_err());
}

#[test]
fn volume_folder_names_are_unique_and_readable() {
    assert_eq!(
        volume_dir_name("/freqtrade/user_data"),
        "freqtrade%2Fuser_data"
    );
    assert_ne!(volume_dir_name("/a%2Fb"), volume_dir_name("/a/b"));
}
