//! Fixtures for slotpack's end-to-end tests: locating the real binaries,
//! starting real agents on free loopback ports, a small HTTP client, and
//! poll-until-true waits instead of sleeps.

pub mod agent;
pub mod docker;
pub mod http;
pub mod orchestrator;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Path of a workspace binary built next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// A workspace binary at a path a sandboxed slot sees: a slot gets private
/// `/tmp`, `/var/tmp`, `/dev/shm` and `/run/lock`, so a binary a script
/// names below those (a checkout in `/tmp`) is copied to
/// `/var/lib/slotpack-tests` first. (A spec's `command` needs none of this:
/// the agent keeps the command's folder visible.)
pub fn bin_seen_by_slots(name: &str) -> PathBuf {
    let p = bin(name);
    let hidden = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"]
        .iter()
        .any(|d| p.starts_with(d));
    if !hidden {
        return p;
    }
    let dir = dir_seen_by_slots();
    // Copied aside and renamed: a concurrent test may be running the last copy.
    let to = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::copy(&p, &tmp).unwrap();
    std::fs::rename(&tmp, &to).unwrap();
    to
}

/// `/var/lib/slotpack-tests` (made, mode 0755): a folder slot users can
/// read, outside the private `/tmp` of slots, for binaries and scripts of
/// tests that tenants run.
pub fn dir_seen_by_slots() -> PathBuf {
    let dir = PathBuf::from("/var/lib/slotpack-tests");
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Poll `f` every 10 ms until it returns `Some`, panicking with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Slot uids of test agents and orchestrators: 100000 + the slot's port,
/// unique across concurrent tests because their ports are.
pub fn uid_of_port(port: u16) -> u32 {
    100_000 + u32::from(port)
}

/// Live processes whose real uid is `uid`.
pub fn processes_of_uid(uid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                let real = s
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok());
                real == Some(uid) && !s.contains("State:\tZ")
            })
        })
        .collect()
}

/// Whether we run as root (needed for per-slot users).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True if we are root; otherwise says that `test` is skipped, or panics
/// on CI, where every root-only test must run.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(!in_ci(), "{test} needs root, and CI must run it");
    eprintln!("skipping {test}: needs root");
    false
}

/// Whether this is a CI run, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether Debian's headless `chromium` is here (the browser tests'
/// browser); on CI, where it must be, its absence is a failure.
pub fn have_chromium() -> bool {
    let ok = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !in_ci(),
            "chromium is missing (apt-get install chromium; scripts/test.sh installs it)"
        );
        eprintln!("skipped: no chromium");
    }
    ok
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// (pid, state letter) of the children of `ppid`.
pub fn children_of(ppid: i32) -> Vec<(i32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = s.rsplit_once(')')?;
            let mut f = rest.split_whitespace();
            let state = f.next()?.chars().next()?;
            let parent: i32 = f.next()?.parse().ok()?;
            (parent == ppid).then_some((pid, state))
        })
        .collect()
}
