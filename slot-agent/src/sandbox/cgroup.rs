//! One cgroup per slot, under the agent's own cgroup (so the pool
//! container's limits stay the outer bound), on cgroup v1 or v2.
//!
//! A slot's group carries its memory limit (shmem and tmpfs included: the
//! kernel charges those pages to the group that touched them), its CPU
//! share, and its pids limit. Its programs enter it before they exec, and
//! they are ended by it: every process of the slot, whatever session or
//! process group it moved to, and nothing else.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Which cgroup hierarchy the agent's groups live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1: one folder of the agent's own per controller.
    V1 {
        /// `memory` controller folder.
        memory: PathBuf,
        /// `cpu` controller folder.
        cpu: Option<PathBuf>,
        /// `pids` controller folder.
        pids: Option<PathBuf>,
        /// `freezer` controller folder (a fork bomb is frozen before it is killed).
        freezer: Option<PathBuf>,
    },
    /// cgroup v2: the agent's folder in the unified hierarchy.
    V2 {
        /// The folder.
        root: PathBuf,
    },
}

/// Limits of one slot's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory (and memory plus swap) limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU share in millicores (a weight, not a cap: idle CPU is usable).
    pub cpu_millis: Option<u64>,
    /// Most tasks (processes and threads).
    pub pids: u64,
}

/// The agent's slot groups.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
}

/// `cpu.shares` (v1) for a share in millicores: 1024 is one core.
pub fn shares(millis: u64) -> u64 {
    (millis.saturating_mul(1024) / 1000).clamp(2, 262_144)
}

/// `cpu.weight` (v2) for a share in millicores: 100 is one core.
pub fn weight(millis: u64) -> u64 {
    (millis / 10).clamp(1, 10_000)
}

/// The value of `key` in a flat-keyed cgroup file (`oom_kill 3`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Where `controller` (v1) or the unified hierarchy (`None`) is mounted in
/// `mountinfo`: its mount point and the cgroup path at its root.
pub fn mount_of(mountinfo: &str, controller: Option<&str>) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let (root, point) = (f.get(3)?, f.get(4)?);
        let ok = match controller {
            None => r.first() == Some(&"cgroup2"),
            Some(c) => {
                r.first() == Some(&"cgroup")
                    && r.get(2).is_some_and(|o| o.split(',').any(|x| x == c))
            }
        };
        ok.then(|| (PathBuf::from(point), root.to_string()))
    })
}

/// The cgroup path of this process for `controller` (v1) or in the unified
/// hierarchy (`None`), from `/proc/self/cgroup`.
pub fn own_path(proc_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let ok = match controller {
            None => ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        ok.then(|| path.to_string())
    })
}

/// The folder of `path` below a mount whose root is `root`.
fn folder(point: &Path, root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(root).unwrap_or(path);
    point.join(rel.trim_start_matches('/'))
}

/// Make a cgroup mount writable (a container gets them read-only; with
/// `CAP_SYS_ADMIN` the agent may lift that for itself).
fn remount_rw(point: &Path) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    let flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, point, None::<&str>, flags, None::<&str>).map_err(io::Error::from)
}

/// Create `dir`, lifting a read-only mount at `point` once if needed.
fn make_dir(dir: &Path, point: &Path) -> io::Result<()> {
    match fs::create_dir_all(dir) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => {
            remount_rw(point)?;
            fs::create_dir_all(dir)
        }
        r => r,
    }
}

/// Remove the (empty) group `dir`, waiting a moment for processes killed
/// just now to leave it. A group that does not exist is fine.
pub fn remove_group(dir: &Path) {
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Cgroups {
    /// Set up the agent's group `name` below its own cgroup, read from this
    /// machine's `/proc/self/cgroup` and `/proc/self/mountinfo`.
    pub fn setup(name: &str) -> io::Result<Cgroups> {
        let cg = fs::read_to_string("/proc/self/cgroup")?;
        let mi = fs::read_to_string("/proc/self/mountinfo")?;
        let v1 = mount_of(&mi, Some("memory"));
        let layout = match (v1, mount_of(&mi, None)) {
            (Some(_), _) => Self::setup_v1(&cg, &mi, name)?,
            (None, Some((point, root))) => {
                let own = own_path(&cg, None).unwrap_or_else(|| "/".into());
                Self::setup_v2(&point, &folder(&point, &root, &own), name)?
            }
            (None, None) => {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no cgroup mount"));
            }
        };
        Ok(Cgroups { layout })
    }

    fn setup_v1(cg: &str, mi: &str, name: &str) -> io::Result<Layout> {
        let dir = |c: &str| -> Option<io::Result<PathBuf>> {
            let (point, root) = mount_of(mi, Some(c))?;
            let own = own_path(cg, Some(c)).unwrap_or_else(|| "/".into());
            let d = folder(&point, &root, &own).join(name);
            Some(make_dir(&d, &point).map(|_| d))
        };
        let memory = dir("memory").ok_or_else(|| io::Error::other("no memory controller"))??;
        let cpu = dir("cpu").transpose()?;
        let pids = dir("pids").transpose()?;
        // The freezer only helps; a host without it still kills by group.
        let freezer = dir("freezer").and_then(Result::ok);
        Ok(Layout::V1 {
            memory,
            cpu,
            pids,
            freezer,
        })
    }

    /// v2: groups need controllers enabled in every parent's
    /// `subtree_control`, and a parent with processes of its own cannot
    /// enable them. PID 1 of a container moves itself into a leaf first;
    /// an agent on a host whose own cgroup has other processes uses a
    /// `slotpack` folder at the hierarchy's root.
    fn setup_v2(point: &Path, own: &Path, name: &str) -> io::Result<Layout> {
        const CTRL: &str = "+memory +cpu +pids";
        let enable = |d: &Path| write(&d.join("cgroup.subtree_control"), CTRL);
        let base = match enable(own) {
            Ok(()) => own.to_path_buf(),
            Err(_) if std::process::id() == 1 => {
                let leaf = own.join("agent");
                make_dir(&leaf, point)?;
                write(&leaf.join("cgroup.procs"), "0")?;
                enable(own)?;
                own.to_path_buf()
            }
            Err(_) => {
                enable(point)?;
                let top = point.join("slotpack");
                make_dir(&top, point)?;
                enable(&top)?;
                top
            }
        };
        let root = base.join(name);
        make_dir(&root, point)?;
        enable(&root)?;
        Ok(Layout::V2 { root })
    }

    /// A layout over folders that already exist (the tests' fake hierarchy).
    pub fn with_layout(layout: Layout) -> Cgroups {
        Cgroups { layout }
    }

    /// Where the groups live.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// `v1` or `v2`.
    pub fn version(&self) -> &'static str {
        match self.layout {
            Layout::V1 { .. } => "v1",
            Layout::V2 { .. } => "v2",
        }
    }

    /// The agent's own folders (one per controller on v1).
    fn roots(&self) -> Vec<&PathBuf> {
        match &self.layout {
            Layout::V1 {
                memory,
                cpu,
                pids,
                freezer,
            } => [Some(memory), cpu.as_ref(), pids.as_ref(), freezer.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
            Layout::V2 { root } => vec![root],
        }
    }

    /// Every folder of `slot` (one per controller on v1).
    fn dirs(&self, slot: u32) -> Vec<PathBuf> {
        let leaf = format!("slot-{slot}");
        self.roots().into_iter().map(|d| d.join(&leaf)).collect()
    }

    fn memory_dir(&self, slot: u32) -> PathBuf {
        let leaf = format!("slot-{slot}");
        match &self.layout {
            Layout::V1 { memory, .. } => memory.join(leaf),
            Layout::V2 { root } => root.join(leaf),
        }
    }

    /// Create `slot`'s group (if new) and set its limits.
    pub fn prepare(&self, slot: u32, limits: Limits) -> io::Result<()> {
        for d in self.dirs(slot) {
            fs::create_dir_all(&d)?;
        }
        let leaf = format!("slot-{slot}");
        match &self.layout {
            Layout::V1 {
                memory, cpu, pids, ..
            } => {
                let m = memory.join(&leaf);
                let bytes = limits
                    .memory_bytes
                    .map_or("-1".to_string(), |b| b.to_string());
                let memsw = m.join("memory.memsw.limit_in_bytes");
                // memsw may never be below the limit: lift it, set, lower it.
                let swap = memsw.exists();
                if swap {
                    write(&memsw, "-1")?;
                }
                write(&m.join("memory.limit_in_bytes"), &bytes)?;
                if swap {
                    write(&memsw, &bytes)?;
                }
                if let (Some(c), Some(ms)) = (cpu, limits.cpu_millis) {
                    write(&c.join(&leaf).join("cpu.shares"), &shares(ms).to_string())?;
                }
                if let Some(p) = pids {
                    write(&p.join(&leaf).join("pids.max"), &limits.pids.to_string())?;
                }
            }
            Layout::V2 { root } => {
                let d = root.join(&leaf);
                let bytes = limits
                    .memory_bytes
                    .map_or("max".to_string(), |b| b.to_string());
                write(&d.join("memory.max"), &bytes)?;
                let _ = write(&d.join("memory.swap.max"), "0");
                // An OOM ends the whole slot, never a neighbour or half a program.
                let _ = write(&d.join("memory.oom.group"), "1");
                if let Some(ms) = limits.cpu_millis {
                    write(&d.join("cpu.weight"), &weight(ms).to_string())?;
                }
                write(&d.join("pids.max"), &limits.pids.to_string())?;
            }
        }
        Ok(())
    }

    /// Open every `cgroup.procs` of `slot` for its next program, which
    /// writes `0` to each before it execs (moving itself in).
    pub fn entry(&self, slot: u32) -> io::Result<Vec<OwnedFd>> {
        self.dirs(slot)
            .into_iter()
            .map(|d| {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))?;
                Ok(OwnedFd::from(f))
            })
            .collect()
    }

    /// The pids in `slot`'s group.
    pub fn procs(&self, slot: u32) -> Vec<i32> {
        fs::read_to_string(self.memory_dir(slot).join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kill every process of `slot` (SIGKILL), whatever group or session
    /// it is in; returns how many were signalled. v2 does it in one write
    /// (`cgroup.kill`); v1 freezes the group, kills what it holds and thaws.
    pub fn kill(&self, slot: u32) -> usize {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Layout::V2 { root } = &self.layout {
            let d = root.join(format!("slot-{slot}"));
            let n = self.procs(slot).len();
            if n == 0 || fs::write(d.join("cgroup.kill"), "1").is_ok() {
                return n;
            }
        }
        let freezer = match &self.layout {
            Layout::V1 { freezer, .. } => freezer
                .as_ref()
                .map(|f| f.join(format!("slot-{slot}/freezer.state"))),
            Layout::V2 { .. } => None,
        };
        let mut total = 0;
        // A frozen group cannot fork; a few rounds catch what forked while
        // it froze (and the pids limit bounds what there can be).
        for _ in 0..4 {
            let pids = self.procs(slot);
            if pids.is_empty() {
                break;
            }
            if let Some(f) = &freezer {
                let _ = fs::write(f, "FROZEN");
            }
            for p in self.procs(slot) {
                if kill(Pid::from_raw(p), Signal::SIGKILL).is_ok() {
                    total += 1;
                }
            }
            if let Some(f) = &freezer {
                let _ = fs::write(f, "THAWED");
            }
        }
        total
    }

    /// The slots that have a group now (whatever the agent's slot count was).
    pub fn present(&self) -> Vec<u32> {
        let Some(dir) = self.memory_dir(0).parent().map(Path::to_path_buf) else {
            return Vec::new();
        };
        let Ok(rd) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut v: Vec<u32> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("slot-")?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    }

    /// Remove the groups of `slots` slots and the agent's own folders (at
    /// shutdown, once their processes are gone), so that no empty group of
    /// a stopped agent stays behind on the machine.
    pub fn remove(&self, slots: u32) {
        for slot in 0..slots {
            for d in self.dirs(slot) {
                remove_group(&d);
            }
        }
        for r in self.roots() {
            remove_group(r);
        }
    }

    /// Memory the slot uses now (resident, page cache, shmem and tmpfs).
    pub fn memory(&self, slot: u32) -> u64 {
        let file = match self.layout {
            Layout::V1 { .. } => "memory.usage_in_bytes",
            Layout::V2 { .. } => "memory.current",
        };
        fs::read_to_string(self.memory_dir(slot).join(file))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU time the slot has used, in microseconds (v1: `cpuacct.usage`
    /// where `cpuacct` shares the `cpu` hierarchy; v2: `cpu.stat`).
    pub fn cpu_usec(&self, slot: u32) -> Option<u64> {
        let leaf = format!("slot-{slot}");
        match &self.layout {
            Layout::V1 { cpu, .. } => {
                let text =
                    fs::read_to_string(cpu.as_ref()?.join(leaf).join("cpuacct.usage")).ok()?;
                text.trim().parse::<u64>().ok().map(|ns| ns / 1000)
            }
            Layout::V2 { root } => keyed(
                &fs::read_to_string(root.join(leaf).join("cpu.stat")).ok()?,
                "usage_usec",
            ),
        }
    }

    /// How many processes the kernel's OOM killer has ended in `slot`.
    pub fn oom_kills(&self, slot: u32) -> u64 {
        let file = match self.layout {
            Layout::V1 { .. } => "memory.oom_control",
            Layout::V2 { .. } => "memory.events",
        };
        fs::read_to_string(self.memory_dir(slot).join(file))
            .ok()
            .and_then(|t| keyed(&t, "oom_kill"))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
35 30 0:31 / /sys/fs/cgroup/memory ro,nosuid,nodev,noexec - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
40 30 0:36 /docker/abc /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids
41 30 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    const PROC_CGROUP: &str = "\
8:pids:/docker/abc
4:memory:/process_api/x
2:cpu,cpuacct:/
0::/
";

    #[test]
    fn mounts_and_own_paths_are_read_per_controller() {
        let (p, r) = mount_of(MOUNTINFO, Some("cpu")).unwrap();
        assert_eq!(
            (p.to_str().unwrap(), r.as_str()),
            ("/sys/fs/cgroup/cpu,cpuacct", "/")
        );
        assert!(mount_of(MOUNTINFO, Some("cpuacct")).is_some());
        assert!(mount_of(MOUNTINFO, Some("freezer")).is_none());
        assert_eq!(
            mount_of(MOUNTINFO, None).unwrap().0,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(
            own_path(PROC_CGROUP, Some("memory")).unwrap(),
            "/process_api/x"
        );
        assert_eq!(own_path(PROC_CGROUP, None).unwrap(), "/");
        // A mount whose root is the process's own cgroup (a cgroup namespace).
        let (p, r) = mount_of(MOUNTINFO, Some("pids")).unwrap();
        let own = own_path(PROC_CGROUP, Some("pids")).unwrap();
        assert_eq!(folder(&p, &r, &own), PathBuf::from("/sys/fs/cgroup/pids"));
    }

    #[test]
    fn cpu_shares_and_weights_scale_with_millicores_within_the_kernels_range() {
        assert_eq!(shares(1000), 1024);
        assert_eq!(shares(250), 256);
        assert_eq!(shares(0), 2);
        assert_eq!(weight(1000), 100);
        assert_eq!(weight(0), 1);
        assert_eq!(weight(u64::MAX), 10_000);
        assert_eq!(keyed("oom 0\noom_kill 3\n", "oom_kill"), Some(3));
        assert_eq!(keyed("under_oom 0\n", "oom_kill"), None);
    }

    fn fake(layout: &str) -> (tempdir::Dir, Cgroups) {
        let dir = tempdir::Dir::new(layout);
        let l = if layout == "v2" {
            Layout::V2 {
                root: dir.0.clone(),
            }
        } else {
            for c in ["memory", "cpu", "pids"] {
                fs::create_dir_all(dir.0.join(c)).unwrap();
            }
            Layout::V1 {
                memory: dir.0.join("memory"),
                cpu: Some(dir.0.join("cpu")),
                pids: Some(dir.0.join("pids")),
                freezer: None,
            }
        };
        (dir, Cgroups::with_layout(l))
    }

    mod tempdir {
        /// A folder removed when dropped.
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new(tag: &str) -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "slot-agent-cg-{tag}-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn a_slots_limits_land_in_the_files_of_its_version() {
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(500),
            pids: 128,
        };
        let (d, cg) = fake("v2");
        cg.prepare(3, limits).unwrap();
        let read = |p: &str| fs::read_to_string(d.0.join(p)).unwrap();
        assert_eq!(read("slot-3/memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("slot-3/memory.oom.group"), "1");
        assert_eq!(read("slot-3/cpu.weight"), "50");
        assert_eq!(read("slot-3/pids.max"), "128");
        fs::write(
            d.0.join("slot-3/memory.events"),
            "low 0\noom 2\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills(3), 2);

        let (d, cg) = fake("v1");
        cg.prepare(0, limits).unwrap();
        let read = |p: &str| fs::read_to_string(d.0.join(p)).unwrap();
        assert_eq!(
            read("memory/slot-0/memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("cpu/slot-0/cpu.shares"), "512");
        assert_eq!(read("pids/slot-0/pids.max"), "128");
        assert_eq!(cg.dirs(0).len(), 3);
        assert_eq!(cg.procs(0), Vec::<i32>::new());
    }
}
