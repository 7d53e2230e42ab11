//! The README's first minutes, run as written: the block between
//! `<!-- first-minutes -->` and `<!-- /first-minutes -->` in a shell of a
//! new user (own HOME, nothing on PATH of slotpack's), against the real
//! binaries on the embedded local backend. Only where it would touch the
//! machine's own places is it moved aside: the install prefix, the data
//! dir and the uid registry go to a temporary folder, and the binaries
//! installed are the test build (`SLOTPACK_PROFILE=debug`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use slotpack_tests::{in_ci, processes_of_uid};

/// The README's first-minutes block (the shell lines of its code fence).
fn first_minutes(readme: &str) -> String {
    let start = readme
        .find("<!-- first-minutes -->")
        .expect("README has a first-minutes block");
    let end = readme
        .find("<!-- /first-minutes -->")
        .expect("the block ends");
    let block = &readme[start..end];
    let body: Vec<&str> = block
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert!(!body.is_empty(), "an empty block");
    body.join("\n") + "\n"
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_first_minutes_of_the_readme_work_as_written() {
    // The block speaks to 127.0.0.1:8088, as a new user's serve listens.
    if TcpListener::bind("127.0.0.1:8088").is_err() {
        assert!(!in_ci(), "port 8088 is taken: the README block needs it");
        eprintln!("skipped: port 8088 is in use here");
        return;
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let script = first_minutes(&readme);
    let tmp = std::env::temp_dir().join(format!("slotpack-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (home, prefix) = (tmp.join("home"), tmp.join("prefix"));
    for d in [&tmp, &home, &prefix] {
        std::fs::create_dir_all(d).unwrap();
        // Slot users run what is installed here and traverse to it.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let script_file = tmp.join("first-minutes.sh");
    std::fs::write(&script_file, &script).unwrap();
    let real_home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = format!(
        "{}/bin:{}",
        prefix.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let data = tmp.join("data");
    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail"])
        .arg(&script_file)
        .current_dir(repo())
        .env_clear()
        .env("PATH", &path)
        .env("HOME", &home)
        // Cargo and its toolchain stay the machine's own.
        .env(
            "CARGO_HOME",
            std::env::var("CARGO_HOME").unwrap_or(format!("{real_home}/.cargo")),
        )
        .env(
            "RUSTUP_HOME",
            std::env::var("RUSTUP_HOME").unwrap_or(format!("{real_home}/.rustup")),
        )
        .env("PREFIX", &prefix)
        .env("SLOTPACK_PROFILE", "debug")
        .env("SLOTPACK_DATA_DIR", &data)
        .env("SLOTPACK_UID_REGISTRY", tmp.join("uid-registry"))
        .env("SLOT_UID_BASE", "61000")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- the block ---\n{script}--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
    // Whatever happened, nothing of it stays running.
    let leftovers = slotpack_agents_of(&data);
    for pid in &leftovers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(out.status.success(), "the block failed: {}", out.status);
    for want in [
        "installed",
        "tenant bot-1 created",
        "token from the file",
        "bot-1: restarted",
        "test-tenant: listening on",
        "tenant.placed",
        "pool-1: stopped",
    ] {
        assert!(stdout.contains(want), "{want:?} not in the output");
    }
    let tenants = stdout
        .lines()
        .find(|l| l.starts_with("bot-1 "))
        .expect("slotpack tenants lists bot-1");
    assert!(
        tenants.contains("pool-1/0") && tenants.contains("9000"),
        "{tenants}"
    );
    assert!(leftovers.is_empty(), "agents left running: {leftovers:?}");
    // The slot's user has no process left either (uid of slot 0, block 0).
    assert!(processes_of_uid(61000).is_empty());
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Processes whose command line names `data` (serve and its agents).
fn slotpack_agents_of(data: &Path) -> Vec<i32> {
    let needle = data.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

#[test]
fn the_block_is_found_and_holds_shell_lines_only() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let s = first_minutes(&readme);
    assert!(s.starts_with("bash scripts/install.sh\n"), "{s}");
    assert!(!s.contains("```"), "{s}");
}
