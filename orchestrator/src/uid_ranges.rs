//! Slot uids that belong to one deployment on this host.
//!
//! Each deployment (one data dir) notes the slot uid ranges of its pools in
//! a file of its own in a host-wide folder (`/run/slotpack/uid-ranges` by
//! default). A new pool's range must touch no other deployment's noted
//! range, no account of `/etc/passwd` and no running process; `serve`
//! refuses to start when its pools or its first block would overlap one.
//! The decisions are pure functions over what was read ([`clash`]).

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The host-wide folder of noted ranges.
pub const DEFAULT_DIR: &str = "/run/slotpack/uid-ranges";

/// One other deployment's note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Its deployment name.
    pub deployment: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its slot uid ranges.
    pub ranges: Vec<Range<u64>>,
}

/// What is known about the host's uids.
#[derive(Debug, Clone, Default)]
pub struct HostUids {
    /// Other deployments' notes.
    pub notes: Vec<Note>,
    /// Accounts of `/etc/passwd`: uid and name.
    pub accounts: Vec<(u64, String)>,
    /// Real uids of running processes.
    pub running: BTreeSet<u64>,
}

/// Why `range` cannot be this deployment's, if it cannot (pure).
/// `ours` are ranges of our own stored pools, whose processes are ours.
pub fn clash(range: &Range<u64>, host: &HostUids, ours: &[Range<u64>]) -> Option<String> {
    let span = format!("slot uids {}-{}", range.start, range.end.saturating_sub(1));
    for n in &host.notes {
        if n.ranges
            .iter()
            .any(|r| r.start < range.end && range.start < r.end)
        {
            return Some(format!(
                "{span} overlap those of deployment {:?} (data dir {})",
                n.deployment,
                n.data_dir.display()
            ));
        }
    }
    if let Some((uid, name)) = host.accounts.iter().find(|(u, _)| range.contains(u)) {
        return Some(format!("{span} include uid {uid} ({name}) of /etc/passwd"));
    }
    let mine = |u: &u64| ours.iter().any(|r| r.contains(u));
    if let Some(uid) = host.running.range(range.clone()).find(|u| !mine(u)) {
        return Some(format!(
            "{span} include uid {uid}, used by a running process"
        ));
    }
    None
}

/// Parse `/etc/passwd` into (uid, name).
pub fn parse_passwd(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// The real uids of every running process.
pub fn running_uids() -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(s) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        if let Some(uid) = s
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
        {
            out.insert(uid);
        }
    }
    out
}

fn format_note(deployment: &str, data_dir: &Path, ranges: &[Range<u64>]) -> String {
    let r: Vec<String> = ranges
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect();
    format!(
        "deployment={deployment}\ndata_dir={}\nranges={}\n",
        data_dir.display(),
        r.join(",")
    )
}

/// Parse a note file (`None` if it is not one).
pub fn parse_note(text: &str) -> Option<Note> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
    };
    let ranges = field("ranges")?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (a, b) = s.split_once('-')?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Note {
        deployment: field("deployment")?.to_string(),
        data_dir: PathBuf::from(field("data_dir")?),
        ranges,
    })
}

/// This deployment's place in the host-wide folder.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    file: PathBuf,
    deployment: String,
    data_dir: PathBuf,
}

impl Registry {
    /// The registry in `dir` for the deployment of `data_dir`. `None` when
    /// the folder cannot be made (a user without the rights: uids are not
    /// switched then anyway).
    pub fn open(dir: &Path, deployment: &str, data_dir: &Path) -> Option<Registry> {
        std::fs::create_dir_all(dir).ok()?;
        let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let key = slotpack_proto::protocol::fnv1a(data_dir.as_os_str().as_encoded_bytes());
        Some(Registry {
            dir: dir.to_path_buf(),
            file: dir.join(format!("{key:016x}")),
            deployment: deployment.to_string(),
            data_dir,
        })
    }

    /// Read the host: other deployments' notes (a note whose data dir is
    /// gone is dropped: that deployment is gone), accounts, processes.
    pub fn read_host(&self) -> HostUids {
        let mut notes = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.path() == self.file {
                    continue;
                }
                let Some(n) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| parse_note(&t))
                else {
                    continue;
                };
                if n.data_dir == self.data_dir {
                    continue;
                }
                if n.data_dir.join("slotpack.db").exists() {
                    notes.push(n);
                } else {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let accounts = std::fs::read_to_string("/etc/passwd")
            .map(|t| parse_passwd(&t))
            .unwrap_or_default();
        HostUids {
            notes,
            accounts,
            running: running_uids(),
        }
    }

    /// Note `ranges` as this deployment's (replacing its last note).
    pub fn note(&self, ranges: &[Range<u64>]) -> std::io::Result<()> {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format_note(&self.deployment, &self.data_dir, ranges))?;
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        std::fs::rename(&tmp, &self.file)
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn host() -> HostUids {
        HostUids {
            notes: vec![Note {
                deployment: "a".into(),
                data_dir: "/srv/a".into(),
                ranges: vec![10_000..10_010],
            }],
            accounts: vec![(0, "root".into()), (65_534, "nobody".into())],
            running: [0, 20_005, 30_001].into_iter().collect(),
        }
    }

    #[test]
    fn a_range_clashes_with_notes_accounts_and_foreign_processes_only() {
        let h = host();
        let why = clash(&(10_005..10_015), &h, &[]).unwrap();
        assert!(
            why.contains("deployment \"a\"") && why.contains("/srv/a"),
            "{why}"
        );
        let why = clash(&(65_530..65_540), &h, &[]).unwrap();
        assert!(why.contains("65534 (nobody)"), "{why}");
        let why = clash(&(20_000..20_010), &h, &[]).unwrap();
        assert!(why.contains("20005") && why.contains("running"), "{why}");
        // Our own tenants' processes are no clash.
        assert_eq!(clash(&(30_000..30_010), &h, &[30_000..30_010]), None);
        assert_eq!(clash(&(10_010..10_020), &h, &[]), None);
    }

    #[test]
    fn notes_and_passwd_parse() {
        let n = parse_note(&format_note("b", Path::new("/d"), &[1..3, 7..9])).unwrap();
        assert_eq!(n.ranges, vec![1..3, 7..9]);
        assert_eq!(n.deployment, "b");
        assert_eq!(
            parse_passwd("root:x:0:0::/root:/bin/sh\nbad\nnobody:x:65534:65534::/:/x\n"),
            vec![(0, "root".to_string()), (65_534, "nobody".to_string())]
        );
    }
}
