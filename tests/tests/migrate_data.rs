//! `slotpack migrate` keeps a legacy tenant's data (issue K): its bind
//! mount and named volume become tenant volumes at the same paths with
//! their content, the dry run lists them with their size, the mounts stay
//! after the move, and a rollback copies what the tenant wrote while
//! pooled back into them, owned as before. Real engine (CI=true).

use std::process::{Command, Output};
use std::time::Duration;

use slotpack_tests::docker::{docker, pool_image, require_python_image, Deployment, PYTHON_IMAGE};
use slotpack_tests::orchestrator::{Slotpack, ADMIN};
use slotpack_tests::wait_for;

/// The legacy app: notes each start in both mounts, prints what they
/// hold, then serves the image's web app.
const APP: &str = r#"
import json, os, runpy
for d in ("/data/bind", "/data/vol"):
    with open(d + "/starts", "a") as f:
        f.write(os.environ.get("SLOT", "legacy") + "\n")
seen = {d: open(d + "/starts").read().split() for d in ("/data/bind", "/data/vol")}
print("seen " + json.dumps({"bind": seen["/data/bind"], "vol": seen["/data/vol"],
      "seed": os.path.exists("/data/bind/seed.txt")}), flush=True)
runpy.run_path("/app/server.py", run_name="__main__")
"#;

/// What this test made outside its deployment: the legacy container, its
/// named volume and its bind folder; removed at drop.
struct Legacy {
    name: String,
    volume: String,
    dir: std::path::PathBuf,
}

impl Drop for Legacy {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.volume])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn migrate(s: &Slotpack, args: &[&str]) -> Output {
    Command::new(slotpack_tests::bin("slotpack"))
        .arg("migrate")
        .args(args)
        .env("SLOTPACK_LISTEN", &s.addr)
        .env("SLOTPACK_ADMIN_TOKEN", ADMIN)
        .env("SLOTPACK_DATA_DIR", &s.data)
        .args(["--verify-timeout", "20"])
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

#[test]
fn a_migrated_tenant_keeps_its_mounts_data_and_a_rollback_brings_its_writes_back() {
    if !require_python_image("migrate with data") {
        return;
    }
    let pid = std::process::id();
    let dep = Deployment("migdata".into());
    let legacy = Legacy {
        name: format!("migdata-bot-{pid}"),
        volume: format!("migdata-vol-{pid}"),
        dir: std::env::temp_dir().join(format!("slotpack-migdata-{pid}")),
    };
    // The legacy bot runs as uid 1000, as such images do; its bind folder
    // holds a file of the host's, 2 MiB.
    std::fs::create_dir_all(&legacy.dir).unwrap();
    std::fs::write(legacy.dir.join("seed.txt"), vec![b's'; 2 << 20]).unwrap();
    std::os::unix::fs::chown(&legacy.dir, Some(1000), Some(1000)).unwrap();
    docker(&["volume", "create", &legacy.volume]);
    let bind = format!("{}:/data/bind", legacy.dir.display());
    let vol = format!("{}:/data/vol", legacy.volume);
    // The named volume is root's when made: give it to uid 1000 first.
    docker(&[
        "run",
        "--rm",
        "-u",
        "0",
        "--label",
        "managed-by=slotpack",
        "-v",
        &vol,
        PYTHON_IMAGE,
        "chown",
        "1000:1000",
        "/data/vol",
    ]);
    docker(&[
        "run",
        "-d",
        "--name",
        &legacy.name,
        "--label",
        "slotpack.legacy=true",
        "--label",
        "managed-by=slotpack",
        "--user",
        "1000:1000",
        "-e",
        "PORT=8080",
        "-w",
        "/app",
        "-v",
        &bind,
        "-v",
        &vol,
        "--mount",
        "type=tmpfs,destination=/scratch",
        PYTHON_IMAGE,
        "python3",
        "-c",
        APP,
    ]);
    let logs = |name: &str| docker(&["logs", name]);
    wait_for(Duration::from_secs(30), "the legacy bot starts", || {
        logs(&legacy.name).contains("\"seed\": true").then_some(())
    });

    let mut s = Slotpack::start(&[
        ("SLOTPACK_BACKEND", "docker"),
        ("SLOTPACK_POOL_IMAGE", &pool_image()),
        ("SLOTPACK_DEPLOYMENT", "migdata"),
    ]);
    // The dry run lists each mount with its size, and what is not kept.
    let o = migrate(&s, &["--dry-run"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "bind {} -> volume /data/bind (2.0 MiB)",
            legacy.dir.display()
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!("volume {} -> volume /data/vol", legacy.volume)),
        "{t}"
    );
    assert!(t.contains("not kept: /scratch: a tmpfs mount"), "{t}");

    let o = migrate(&s, &["--execute"]);
    let t = text(&o);
    assert!(
        o.status.success(),
        "{t}\n{}",
        text(&migrate(&s, &["--status", "--verbose"]))
    );
    let id = legacy.name.clone();
    // In the pool it finds its files at the same paths and adds its start
    // (the legacy bot started once).
    let pooled = wait_for(Duration::from_secs(30), "the pooled start", || {
        let l = s
            .call("GET", &format!("/api/tenants/{id}/logs?tail=50"), "")
            .text();
        l.lines()
            .find(|l| l.starts_with("seen "))
            .map(str::to_string)
    });
    let slot = s.call("GET", &format!("/api/tenants/{id}"), "").json()["tenant"]["placement"]
        ["slot"]
        .to_string();
    assert_eq!(
        pooled,
        format!(
            "seen {{\"bind\": [\"legacy\", \"{slot}\"], \"vol\": [\"legacy\", \"{slot}\"], \"seed\": true}}"
        ),
        "{pooled}"
    );
    // The legacy container is gone; its mounts are kept, and the log says so.
    assert!(docker_inspect_fails(&legacy.name));
    assert!(legacy.dir.join("seed.txt").is_file());
    assert!(docker(&["volume", "ls", "-q"])
        .lines()
        .any(|v| v == legacy.volume));
    let st = text(&migrate(&s, &["--status"]));
    assert!(st.contains("mounts are kept for a rollback"), "{st}");

    // A restart in the pool keeps its data (it is the tenant's).
    let r = s.call("POST", &format!("/api/tenants/{id}/restart"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for(Duration::from_secs(30), "the second pooled start", || {
        let l = s
            .call("GET", &format!("/api/tenants/{id}/logs?tail=50"), "")
            .text();
        l.contains(&format!("\"{slot}\", \"{slot}\"]"))
            .then_some(())
    });

    // Rollback: its pooled writes go back into the legacy mounts, owned by
    // the legacy user, and the legacy bot starts on them.
    let o = migrate(&s, &["--rollback", &id]);
    assert!(o.status.success(), "{}", text(&o));
    let want = format!("[\"legacy\", \"{slot}\", \"{slot}\", \"legacy\"]");
    wait_for(
        Duration::from_secs(30),
        "the legacy bot back on its data",
        || {
            let l = logs(&legacy.name);
            (l.contains(&format!("\"bind\": {want}")) && l.contains(&format!("\"vol\": {want}")))
                .then_some(())
        },
    );
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(legacy.dir.join("starts")).unwrap().uid();
    assert_eq!(owner, 1000, "the copied-back file is not the legacy user's");
    assert_eq!(s.call("GET", &format!("/api/tenants/{id}"), "").status, 404);
    s.stop();
    drop(s);
    drop(dep);
}

fn docker_inspect_fails(name: &str) -> bool {
    !Command::new("docker")
        .args(["inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}
