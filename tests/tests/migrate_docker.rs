//! `slotpack migrate` on a fleet of legacy one-per-tenant containers made
//! from the test tenant, against the real engine (required when CI=true).

use std::process::{Command, Output};

use slotpack_tests::docker::{docker, pool_image, require_docker, wait_ping};
use slotpack_tests::orchestrator::{Slotpack, ADMIN};

/// Removes, by id, the legacy and pool containers (and volumes) of this test.
struct Cleanup;

fn ours(filter: &str) -> Vec<String> {
    docker(&["ps", "-aq", "--filter", filter])
        .lines()
        .map(str::to_string)
        .collect()
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in ["label=slotpack.migrate-test=true", "label=slotpack.pool"] {
            for id in ours(f) {
                let _ = Command::new("docker")
                    .args(["rm", "-f", "-v", &id])
                    .output();
            }
        }
        for v in docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            "label=managed-by=slotpack",
        ])
        .lines()
        {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

fn legacy(name: &str, extra_labels: &[&str]) -> String {
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "managed-by=slotpack",
        "--label",
        "slotpack.legacy=true",
        "--label",
        "slotpack.migrate-test=true",
        "-e",
        "PORT=8080",
        "-p",
        "127.0.0.1::8080",
        "--memory",
        "64m",
        // No anonymous volume for the image's /pool (migration removes the
        // container and would leave it behind).
        "--mount",
        "type=tmpfs,destination=/pool",
        "--entrypoint",
        "/usr/local/bin/test-tenant",
    ];
    for l in extra_labels {
        args.extend(["--label", l]);
    }
    let image = pool_image();
    args.extend([image.as_str(), "--host", "0.0.0.0"]);
    docker(&args)
}

fn legacy_pong(name: &str) {
    wait_ping(name, "8080/tcp");
}

fn migrate(s: &Slotpack, args: &[&str]) -> Output {
    Command::new(slotpack_tests::bin("slotpack"))
        .arg("migrate")
        .args(args)
        .env("SLOTPACK_LISTEN", &s.addr)
        .env("SLOTPACK_ADMIN_TOKEN", ADMIN)
        .env("SLOTPACK_DATA_DIR", &s.data)
        .args(["--verify-timeout", "5"])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn running(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

#[test]
fn a_legacy_fleet_is_migrated_failures_roll_back_and_a_crash_resumes() {
    if !require_docker("migrate") {
        return;
    }
    let _cleanup = Cleanup;
    let mut s = Slotpack::start(&[
        ("SLOTPACK_BACKEND", "docker"),
        ("SLOTPACK_POOL_IMAGE", &pool_image()),
    ]);
    legacy("mig-a", &[]);
    legacy("mig-b", &[]);
    // Answers in its legacy container but not on this path in the pool.
    legacy("mig-bad", &["slotpack.ping-path=/nope"]);
    for n in ["mig-a", "mig-b", "mig-bad"] {
        legacy_pong(n);
    }

    // --dry-run lists the fleet and changes nothing.
    let o = migrate(&s, &["--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("3 legacy containers would be migrated"), "{t}");
    assert!(
        t.contains("mig-a")
            && t.contains("/usr/local/bin/test-tenant --host 0.0.0.0")
            && t.contains("64 MiB"),
        "{t}"
    );
    assert!(running("mig-a") && running("mig-b") && running("mig-bad"));
    assert_eq!(
        s.call("GET", "/api/tenants", "").json()["tenants"],
        serde_json::json!([])
    );

    // With the orchestrator down, nothing is touched: migrate asks it for
    // the pool classes before it stops any container.
    s.stop();
    let o = migrate(&s, &["--execute"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not answer"), "{}", text(&o));
    assert!(running("mig-a") && running("mig-b") && running("mig-bad"));
    s.spawn();

    // A crash mid-migration: migrate is killed right after it stopped mig-a.
    let mut child = Command::new(slotpack_tests::bin("slotpack"))
        .args(["migrate", "--execute", "--verbose", "--verify-timeout", "5"])
        .env("SLOTPACK_LISTEN", &s.addr)
        .env("SLOTPACK_ADMIN_TOKEN", ADMIN)
        .env("SLOTPACK_DATA_DIR", &s.data)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("mig-a: legacy-stopped") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.contains("mig-a: legacy-stopped"), "{seen}");
    assert!(!running("mig-a"), "mig-a should be stopped mid-migration");

    // --execute resumes: mig-a and mig-b move; mig-bad fails verification and is rolled back.
    let o = migrate(&s, &["--execute", "--verbose"]);
    let t = text(&o);
    assert!(!o.status.success(), "one tenant must fail: {t}");
    assert!(t.contains("migrated 2 of 3"), "{t}");
    assert!(
        t.contains("[########################] 3/3"),
        "no progress bar: {t}"
    );
    for id in ["mig-a", "mig-b"] {
        s.wait_pong(id);
        assert!(
            Command::new("docker")
                .args(["inspect", id])
                .output()
                .unwrap()
                .status
                .code()
                != Some(0),
            "{id} legacy container left"
        );
    }
    assert_eq!(s.call("GET", "/api/tenants/mig-bad", "").status, 404);
    assert!(
        running("mig-bad"),
        "mig-bad was not restarted in its legacy container"
    );
    legacy_pong("mig-bad");
    let st = s.call("GET", "/api/pool/status", "").json();
    assert_eq!(
        st["totalBots"], 2,
        "the failed tenant's slot was not freed: {st}"
    );

    // --status prints the log.
    let o = migrate(&s, &["--status", "--verbose"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for want in [
        "mig-a",
        "done",
        "mig-bad",
        "rolled-back",
        "migration.legacy-stopped",
        "migration.verified",
    ] {
        assert!(t.contains(want), "{want} missing in\n{t}");
    }

    // --rollback restores a migrated tenant's legacy container from its backup.
    let o = migrate(&s, &["--rollback=mig-a"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(s.call("GET", "/api/tenants/mig-a", "").status, 404);
    assert!(running("mig-a"));
    legacy_pong("mig-a");
    // Nothing given twice: mig-b still answers in its pool.
    s.wait_pong("mig-b");
}
