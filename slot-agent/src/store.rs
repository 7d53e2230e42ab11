//! Program specs on disk: one JSON file per program, written atomically.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use slotpack_proto::protocol::{is_valid_id, ProgramSpec};

/// Whether a program should run (the agent's own; the orchestrator's
/// tenant-level goal is `states::Desired`, which also has `deleting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunGoal {
    /// Keep it running.
    Running,
    /// Stopped through the API; stays stopped across agent restarts.
    Stopped,
}

/// What is persisted of one program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The spec as accepted.
    pub spec: ProgramSpec,
    /// Whether it should run.
    pub desired: RunGoal,
}

/// The `programs/` and `run/` folders of the state dir.
#[derive(Debug, Clone)]
pub struct Store {
    programs: PathBuf,
    run: PathBuf,
}

impl Store {
    /// Open (and create) the store below `state_dir`.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let s = Self {
            programs: state_dir.join("programs"),
            run: state_dir.join("run"),
        };
        for d in [&s.programs, &s.run] {
            fs::create_dir_all(d)?;
            set_mode(d, 0o700)?;
        }
        Ok(s)
    }

    /// Every stored record; unreadable files are reported and skipped.
    pub fn load(&self) -> io::Result<Vec<(String, Record)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.programs)? {
            let path = e?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if !is_valid_id(id) {
                continue;
            }
            match fs::read(&path).map(|b| serde_json::from_slice::<Record>(&b)) {
                Ok(Ok(r)) => out.push((id.to_string(), r)),
                Ok(Err(e)) => eprintln!("slot-agent: skipping {}: {e}", path.display()),
                Err(e) => eprintln!("slot-agent: skipping {}: {e}", path.display()),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Persist `rec` for `id`: temp file, fsync, rename, fsync of the folder.
    pub fn save(&self, id: &str, rec: &Record) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
        write_atomic(&self.programs, &format!("{id}.json"), &bytes)
    }

    /// Forget the spec of `id`. Its pid note stays until its run has ended,
    /// so that an agent restarted meanwhile still ends that run.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        remove_if_exists(&self.programs.join(format!("{id}.json")))
    }

    /// Note the process group of a running program (pid and start ticks), so
    /// that an agent restarted after a crash can end what the old one left.
    pub fn save_pid(&self, id: &str, pid: i32, start_ticks: u64) -> io::Result<()> {
        fs::write(
            self.run.join(format!("{id}.pid")),
            format!("{pid} {start_ticks}\n"),
        )
    }

    /// Forget the noted process group of `id`.
    pub fn clear_pid(&self, id: &str) -> io::Result<()> {
        remove_if_exists(&self.run.join(format!("{id}.pid")))
    }

    /// Every noted (pid, start ticks), removing the notes.
    pub fn take_pids(&self) -> io::Result<Vec<(i32, u64)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.run)? {
            let path = e?.path();
            if let Ok(text) = fs::read_to_string(&path) {
                let mut it = text.split_ascii_whitespace().map(str::parse::<u64>);
                if let (Some(Ok(pid)), Some(Ok(t))) = (it.next(), it.next()) {
                    if let Ok(pid) = i32::try_from(pid) {
                        out.push((pid, t));
                    }
                }
            }
            remove_if_exists(&path)?;
        }
        Ok(out)
    }
}

impl Store {
    /// SIGKILL the process groups the notes name whose start time still
    /// matches (a reused pid is never hit), remove the notes, and wait up to
    /// 3 s for those groups' leaders to be gone. Returns how many were ended.
    /// Blocking.
    pub fn end_noted_groups(&self) -> usize {
        use nix::sys::signal::{killpg, Signal};
        use std::time::{Duration, Instant};
        let Ok(noted) = self.take_pids() else {
            return 0;
        };
        let mut ended = Vec::new();
        for (pid, ticks) in noted {
            if slotpack_proto::procfs::stat(pid)
                .is_some_and(|s| s.start_ticks == ticks && s.state != 'Z')
            {
                let _ = killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                ended.push(pid);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline
            && ended
                .iter()
                .any(|p| slotpack_proto::procfs::stat(*p).is_some_and(|s| s.state != 'Z'))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        ended.len()
    }
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Set the permission bits of `p`.
pub fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("slot-agent-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_and_remove() {
        let d = tmpdir("rt");
        let s = Store::open(&d).unwrap();
        let spec: ProgramSpec =
            serde_json::from_str(r#"{"command":"/bin/true","slot":2}"#).unwrap();
        let rec = Record {
            spec,
            desired: RunGoal::Stopped,
        };
        s.save("a-1", &rec).unwrap();
        fs::write(d.join("programs/junk.json"), b"{").unwrap();
        assert_eq!(s.load().unwrap(), vec![("a-1".to_string(), rec)]);
        s.save_pid("a-1", 77, 123).unwrap();
        assert_eq!(s.take_pids().unwrap(), vec![(77, 123)]);
        assert!(s.take_pids().unwrap().is_empty());
        s.save_pid("a-1", 78, 124).unwrap();
        s.remove("a-1").unwrap();
        assert_eq!(s.load().unwrap().len(), 0);
        assert_eq!(s.take_pids().unwrap(), vec![(78, 124)]);
        fs::remove_dir_all(&d).unwrap();
    }
}
