//! What a slot user leaves behind once its program is gone: processes that
//! escaped the process group (`setsid`, double forks) and files outside its
//! home (`/tmp`, `/var/tmp`, `/dev/shm`). Only used when slots run under
//! their own uids, so a uid names exactly one slot's processes and files.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Shared writable folders where a slot user can leave files.
pub const SHARED_TMP: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// Most entries looked at below one shared folder, and how deep the walk
/// goes (bounds on what a hostile tree can cost).
const WALK_LIMIT: usize = 200_000;
const WALK_DEPTH: usize = 16;

/// Whether `/proc/<pid>/status` says the process runs as `uid` (real,
/// effective or saved).
pub fn runs_as(status: &str, uid: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| {
            ids.split_whitespace()
                .take(3)
                .any(|x| x.parse::<u32>() == Ok(uid))
        })
}

/// Every live process whose uid is in `uids`. One pass over `/proc`: the
/// owner of `/proc/<pid>` (one `stat`) is the process's uid, except for a
/// process that made itself non-dumpable, which shows as root; for those
/// (and root's own) the `Uid:` line of its status decides.
pub fn processes_of(uids: &std::ops::Range<u32>) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
        let owner = e.metadata().ok()?.uid();
        let mine = if owner == 0 {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            uids.clone().any(|u| runs_as(&status, u))
        } else {
            uids.contains(&owner)
        };
        let zombie = || slotpack_proto::procfs::stat(pid).is_some_and(|s| s.state == 'Z');
        (mine && !zombie()).then_some(pid)
    })
    .collect()
}

/// End every process of the uids in `uids`: stop them all first (so a fork
/// bomb cannot replace what is killed), then kill them, until none is left
/// or about a second has passed. Returns how many were signalled. Blocking.
pub fn end_processes(uids: std::ops::Range<u32>) -> usize {
    let mut total = 0;
    for round in 0..100 {
        let pids = processes_of(&uids);
        if pids.is_empty() {
            break;
        }
        total += pids.len();
        for p in &pids {
            let _ = kill(Pid::from_raw(*p), Signal::SIGSTOP);
        }
        for p in processes_of(&uids).iter().chain(&pids) {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        if round > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    total
}

/// Remove every file and folder owned by `uid` below the shared temporary
/// folders (symlinks are removed, never followed). Returns how many entries
/// were removed.
pub fn remove_files(uid: u32) -> usize {
    SHARED_TMP
        .iter()
        .map(|root| remove_owned(Path::new(root), uid, 0, &mut 0))
        .sum()
}

fn remove_owned(dir: &Path, uid: u32, depth: usize, seen: &mut usize) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        *seen += 1;
        if *seen > WALK_LIMIT {
            break;
        }
        let path = e.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() == uid {
            let r: io::Result<()> = if meta.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed += usize::from(r.is_ok());
        } else if meta.is_dir() && depth < WALK_DEPTH {
            // Another user's folder may still hold this user's files.
            removed += remove_owned(&path, uid, depth + 1, seen);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_line_matches_real_effective_or_saved() {
        let s = "Name:\tsh\nUid:\t10002\t10002\t10002\t10002\nGid:\t1\n";
        assert!(runs_as(s, 10002));
        assert!(!runs_as(s, 1000));
        let setuid = "Uid:\t1000\t0\t0\t0\n";
        assert!(runs_as(setuid, 1000) && runs_as(setuid, 0));
        assert!(!runs_as("Name:\tx\n", 0));
    }
}
