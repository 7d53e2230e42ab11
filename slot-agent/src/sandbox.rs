//! The slot as a sandbox the kernel enforces (agents running as root).
//!
//! Each program starts in its slot's cgroup (memory with shmem and tmpfs,
//! CPU share, pids), in mount and IPC namespaces of its own (private `/tmp`,
//! `/var/tmp`, `/dev/shm` and `/run/lock` on one size-limited tmpfs, SysV
//! IPC and POSIX message queues, a `/proc` that shows only its own uid's
//! processes), as its slot user with an empty capability bounding set and
//! `no_new_privs`, under a Landlock ruleset that lets it bind TCP only on
//! its own port and keeps it from abstract unix sockets and signals outside
//! its run. The namespaces die with the slot's last process, so nothing of
//! a run is left for the next one.
//!
//! What the machine lacks is reported at start and left out; without root
//! there is no sandbox (the agent then samples memory, as before).

pub mod cgroup;
pub mod dynmods;
pub mod landlock;
pub mod socket_guard;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use nix::libc;

pub use cgroup::{Cgroups, Layout, Limits};
pub use socket_guard::SocketGuard;

/// Temporary folders a slot gets of its own (mount points made at start).
pub const PRIVATE_TMP: [&str; 4] = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"];

/// Size of a slot's temporary folders when its spec gives no `diskMb`.
pub const DEFAULT_TMP_MB: u64 = 256;

/// What this machine lets the agent enforce.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Slot cgroups, if the agent could make them.
    pub cgroups: Option<Cgroups>,
    /// Mount and IPC namespaces per slot.
    pub namespaces: bool,
    /// Landlock ABI (0: none).
    pub landlock: u32,
    /// Kernel socket rules per slot (bind, connect, sendmsg).
    pub guard: Option<Arc<SocketGuard>>,
    /// Keeps cgroup moves fast while the agent runs (see `dynmods`).
    pub fast_moves: Option<Arc<OwnedFd>>,
}

/// One start in a slot, as [`Sandbox::prepare`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct SlotStart<'a> {
    /// The slot.
    pub slot: u32,
    /// Its user.
    pub uid: u32,
    /// Its port.
    pub port: u16,
    /// Its cgroup limits.
    pub limits: Limits,
    /// Size of its temp folders in MiB.
    pub tmp_mb: u64,
    /// Folders (home, working dir) kept visible where they lie below a
    /// folder the slot gets a private one of.
    pub keep: &'a [&'a Path],
    /// The same, read only (the command's folder).
    pub keep_read_only: &'a [&'a Path],
    /// The tenant's data: the only tenant folder the slot sees.
    pub tenant: Option<TenantView<'a>>,
}

/// What of the tenants' data a slot sees: its own tenant's folder, at the
/// same path, and its volumes at their paths; the other tenants' folders
/// are covered (an empty tmpfs over `root`).
#[derive(Debug, Clone, Copy)]
pub struct TenantView<'a> {
    /// Root of every tenant's data.
    pub root: &'a Path,
    /// This tenant's folder (below `root`).
    pub dir: &'a Path,
    /// Its volumes.
    pub volumes: &'a [crate::tenant_data::Volume],
}

/// What one program is started with, made before the fork so that the
/// child only makes system calls.
pub struct Prepared {
    cgroup_fds: Vec<OwnedFd>,
    carry: Vec<Carry>,
    tenant: Option<TenantMounts>,
    ruleset: Option<OwnedFd>,
    tmp_options: Option<CString>,
    uid: u32,
    max_procs: u64,
    /// The kernel's highest capability number.
    last_cap: libc::c_ulong,
}

impl Sandbox {
    /// Find out what can be enforced here, and set up the agent's cgroup
    /// `name` (a name of this agent's own: its state dir's hash); no slot
    /// may reach the `guarded` ports at a local address; `fast_moves` asks
    /// for the kernel's writer-favouring cgroup mode (see `dynmods`).
    pub fn detect(name: &str, guarded: Vec<(u16, u16)>, fast_moves: bool) -> Sandbox {
        for d in PRIVATE_TMP {
            let _ = std::fs::create_dir_all(d);
        }
        let cgroups = match Cgroups::setup(name) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("slot-agent: sandbox: no slot cgroups ({e}): memory is sampled");
                None
            }
        };
        let namespaces = match probe_namespaces() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("slot-agent: sandbox: no private mounts or IPC per slot ({e})");
                false
            }
        };
        let landlock = landlock::abi();
        let v2 = match cgroups.as_ref().map(Cgroups::layout) {
            Some(Layout::V2 { root }) => Some(root.clone()),
            _ => None,
        };
        let guard = match SocketGuard::setup(v2.as_deref(), name, guarded) {
            Ok(g) => Some(Arc::new(g)),
            Err(e) => {
                eprintln!("slot-agent: sandbox: no socket guard ({e}): connects are not limited");
                None
            }
        };
        let fast_moves = if cgroups.is_some() && fast_moves {
            match dynmods::hold() {
                Ok(fd) => Some(Arc::new(fd)),
                Err(e) => {
                    eprintln!("slot-agent: sandbox: cgroup moves stay slow ({e})");
                    None
                }
            }
        } else {
            None
        };
        Sandbox {
            cgroups,
            namespaces,
            landlock,
            guard,
            fast_moves,
        }
    }

    /// One line for the start-up log and `/v1/health`.
    pub fn describe(&self) -> String {
        format!(
            "cgroup {}, namespaces {}, landlock abi {}, socket guard {}, fast moves {}",
            self.cgroups.as_ref().map_or("none", |c| c.version()),
            if self.namespaces { "on" } else { "off" },
            self.landlock,
            if self.guard.is_some() { "on" } else { "off" },
            if self.fast_moves.is_some() {
                "on"
            } else {
                "off"
            },
        )
    }

    /// Whether a slot's TCP binds are limited to its own port by the kernel.
    pub fn binds_enforced(&self) -> bool {
        landlock::coverage(self.landlock).bind || self.guard.is_some()
    }

    /// Make what one start in a slot needs (see [`SlotStart`]).
    pub fn prepare(&self, start: &SlotStart<'_>) -> io::Result<Prepared> {
        let SlotStart {
            slot,
            uid,
            port,
            limits,
            tmp_mb,
            keep,
            keep_read_only,
            tenant,
        } = *start;
        let mut cgroup_fds = match &self.cgroups {
            Some(c) => {
                c.prepare(slot, limits)?;
                c.entry(slot)?
            }
            None => Vec::new(),
        };
        if let Some(g) = &self.guard {
            cgroup_fds.extend(g.prepare(slot, port)?);
        }
        let ruleset = landlock::slot_ruleset(self.landlock, port)?;
        let tmp_options = self.namespaces.then(|| {
            CString::new(format!("size={}m,mode=1777,nr_inodes=65536", tmp_mb.max(1)))
                .expect("no NUL")
        });
        let mut carry = Vec::new();
        let tenant = match tenant {
            Some(t) if self.namespaces => Some(TenantMounts::of(&t)?),
            _ => None,
        };
        if self.namespaces {
            let canonical_dir = tenant
                .as_ref()
                .map(|_| std::fs::canonicalize(start.tenant.map_or(Path::new("/"), |t| t.dir)))
                .transpose()?;
            // Read-only ones first: a writable home inside one stays writable.
            let all = keep_read_only
                .iter()
                .map(|k| (k, true))
                .chain(keep.iter().map(|k| (k, false)))
                // The tenant's own folder comes along whole.
                .filter(|(k, _)| {
                    canonical_dir.as_ref().is_none_or(|d| {
                        std::fs::canonicalize(k).map_or(true, |k| !k.starts_with(d))
                    })
                });
            for (k, read_only) in all {
                if let Some(c) = Carry::of(k, read_only)? {
                    if carry.len() < MAX_CARRY
                        && !carry.iter().any(|o: &Carry| o.source == c.source)
                    {
                        carry.push(c);
                    }
                }
            }
        }
        Ok(Prepared {
            cgroup_fds,
            carry,
            tenant,
            ruleset,
            tmp_options,
            uid,
            max_procs: limits.pids,
            last_cap: last_cap(),
        })
    }
}

/// Whether this agent can give a child private mounts and IPC: starts
/// itself (`--version`) with the same steps.
fn probe_namespaces() -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let opts = CString::new("size=1m,mode=1777").expect("no NUL");
    // The agent's own folder may lie below /tmp (a checkout there).
    let carry: Vec<Carry> = match exe.parent() {
        Some(d) => Carry::of(d, true)?.into_iter().collect(),
        None => Vec::new(),
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the hook only makes system calls on data made before the fork.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || private_mounts(&opts, &carry, None));
    }
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("probe exited {status}")))
    }
}

/// A mount of file system `fstype` with `options` (a flag when its value
/// is `None`), made with `fsopen`/`fsconfig`/`fsmount` and attached to no
/// path: it lives as long as the returned descriptor.
#[allow(unsafe_code)]
pub(crate) fn detached_mount(
    fstype: &std::ffi::CStr,
    options: &[(&std::ffi::CStr, Option<&std::ffi::CStr>)],
) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    const SET_FLAG: u32 = 0;
    const SET_STRING: u32 = 1;
    const CMD_CREATE: u32 = 6;
    let ok = |v: libc::c_long| -> io::Result<libc::c_long> {
        if v < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(v)
        }
    };
    // SAFETY: NUL-terminated strings that outlive the calls, and our own fds.
    unsafe {
        let fs = ok(libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), 1u32))?;
        let fs = OwnedFd::from_raw_fd(fs as i32);
        let config = |cmd: u32, key: *const libc::c_char, value: *const libc::c_char| {
            ok(libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                key,
                value,
                0,
            ))
        };
        for (key, value) in options {
            match value {
                Some(v) => config(SET_STRING, key.as_ptr(), v.as_ptr())?,
                None => config(SET_FLAG, key.as_ptr(), std::ptr::null())?,
            };
        }
        config(CMD_CREATE, std::ptr::null(), std::ptr::null())?;
        let m = ok(libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), 1u32, 0u32))?;
        Ok(OwnedFd::from_raw_fd(m as i32))
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// New mount and IPC namespaces with private temp folders and `/proc`.
/// Runs in the forked child: system calls only.
#[allow(unsafe_code)]
fn private_mounts(
    tmp_options: &CString,
    carry: &[Carry],
    tenant: Option<&TenantMounts>,
) -> io::Result<()> {
    // SAFETY (whole function): every pointer is a NUL-terminated string
    // that lives across the call, or null where the call allows it.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC))?;
        // Nothing mounted here propagates back to the pool.
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        // Copies of the folders to carry, taken before /tmp is covered.
        let mut held = [-1; MAX_CARRY];
        for (c, slot) in carry.iter().zip(held.iter_mut()) {
            const OPEN_TREE_CLONE: libc::c_uint = 1;
            let flags = OPEN_TREE_CLONE
                | libc::O_CLOEXEC as libc::c_uint
                | libc::AT_RECURSIVE as libc::c_uint;
            let fd = libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                c.source.as_ptr(),
                flags,
            );
            check(fd as libc::c_int)?;
            *slot = fd as libc::c_int;
        }
        // And of the tenant's own folder, before the others are covered.
        let tenant_fd = match tenant {
            Some(t) => {
                let fd = clone_tree(&t.source);
                check(fd)?;
                fd
            }
            None => -1,
        };
        let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            c"/tmp".as_ptr(),
            c"tmpfs".as_ptr(),
            nosuid,
            tmp_options.as_ptr().cast(),
        ))?;
        // One tmpfs for all four folders: one size bounds them together.
        check(libc::mkdir(c"/tmp/.slot".as_ptr(), 0o755))?;
        for inner in [c"/tmp/.slot/var-tmp", c"/tmp/.slot/shm", c"/tmp/.slot/lock"] {
            check(libc::mkdir(inner.as_ptr(), 0o1777))?;
            check(libc::chmod(inner.as_ptr(), 0o1777))?;
        }
        // A home or working dir below one of them stays where it was.
        for (c, fd) in carry.iter().zip(held) {
            make_dirs(&c.dirs)?;
            put_back(fd, &c.target)?;
            if c.read_only {
                check(libc::mount(
                    std::ptr::null(),
                    c.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | nosuid,
                    std::ptr::null(),
                ))?;
            }
        }
        for (inner, target) in [
            (c"/tmp/.slot/var-tmp", c"/var/tmp"),
            (c"/tmp/.slot/shm", c"/dev/shm"),
            (c"/tmp/.slot/lock", c"/run/lock"),
        ] {
            check(libc::mount(
                inner.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
        }
        // A /proc that shows a slot user only its own processes.
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            nosuid | libc::MS_NOEXEC,
            c"hidepid=2".as_ptr().cast(),
        ))?;
        if let Some(t) = tenant {
            t.mount(tenant_fd)?;
        }
    }
    Ok(())
}

/// A detached copy (`open_tree` clone, recursive) of the tree at `path`.
/// In the child: a system call only.
#[allow(unsafe_code)]
fn clone_tree(path: &CString) -> libc::c_int {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: a NUL-terminated path that outlives the call.
    unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) as libc::c_int
    }
}

/// Attach the detached tree `fd` (an `open_tree` clone) at `target`, and
/// close it. In the child: system calls only.
#[allow(unsafe_code)]
fn put_back(fd: libc::c_int, target: &CString) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    // SAFETY: NUL-terminated strings that outlive the call, our own fd.
    unsafe {
        let r = libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        );
        libc::close(fd);
        check(r as libc::c_int)
    }
}

/// Make each folder of `dirs` (outermost first), root's, mode 0711 when
/// new (whatever the agent's umask: the slot user passes through, and
/// lists nothing). In the child: system calls only.
#[allow(unsafe_code)]
fn make_dirs(dirs: &[CString]) -> io::Result<()> {
    for d in dirs {
        // SAFETY: NUL-terminated strings that outlive the calls.
        unsafe {
            if libc::mkdir(d.as_ptr(), 0o711) == 0 {
                check(libc::chmod(d.as_ptr(), 0o711))?;
            } else if *libc::__errno_location() != libc::EEXIST {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The tenant's view of the tenants' data, made before the fork (see
/// [`TenantView`]).
struct TenantMounts {
    /// The tenant's folder, as it is outside the slot.
    source: CString,
    /// The tenants' root to cover with an empty tmpfs (`None` when it lies
    /// below a private temp folder, which covers it already).
    cover: Option<CString>,
    /// Folders to make on the cover, outermost first, then the target.
    dirs: Vec<CString>,
    /// Where the tenant's folder goes back (its own path in the slot).
    target: CString,
    /// Volumes: source folder (visible once the tenant's folder is back),
    /// the folders of its target path outermost first, and the target.
    volumes: Vec<(CString, Vec<CString>, CString)>,
}

impl TenantMounts {
    fn of(view: &TenantView<'_>) -> io::Result<TenantMounts> {
        use std::os::unix::ffi::OsStrExt;
        let cs = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
        let root = std::fs::canonicalize(view.root)?;
        let dir = std::fs::canonicalize(view.dir)?;
        if !dir.starts_with(&root) {
            return Err(io::Error::other("tenant folder outside the tenants' root"));
        }
        // Below a private temp folder the slot's own tmpfs covers the
        // root already; elsewhere an empty tmpfs covers it.
        let private = PRIVATE_TMP
            .iter()
            .map(Path::new)
            .find(|p| dir.starts_with(p));
        let (cover, base) = match private {
            Some(p) => (None, p.to_path_buf()),
            None => (Some(cs(&root)?), root.clone()),
        };
        let mut dirs = Vec::new();
        let mut at = base.clone();
        for part in dir
            .strip_prefix(&base)
            .map_err(io::Error::other)?
            .components()
        {
            at.push(part);
            dirs.push(cs(&at)?);
        }
        let target = cs(&dir)?;
        let mut volumes = Vec::new();
        for v in view.volumes {
            let mut prefixes = Vec::new();
            let mut at = std::path::PathBuf::from("/");
            for part in Path::new(&v.target).components().skip(1) {
                at.push(part);
                prefixes.push(cs(&at)?);
            }
            volumes.push((
                cs(&dir.join(v.source.strip_prefix(view.dir).map_err(io::Error::other)?))?,
                prefixes,
                cs(Path::new(&v.target))?,
            ));
        }
        Ok(TenantMounts {
            source: cs(&dir)?,
            cover,
            dirs,
            target,
            volumes,
        })
    }

    /// In the child, after the temp folders: cover the tenants' root, put
    /// the tenant's folder (`fd`, its clone) back, bind its volumes.
    #[allow(unsafe_code)]
    fn mount(&self, fd: libc::c_int) -> io::Result<()> {
        let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
        // SAFETY (whole function): NUL-terminated strings that outlive the
        // calls, and a descriptor of our own.
        unsafe {
            if let Some(root) = &self.cover {
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    root.as_ptr(),
                    c"tmpfs".as_ptr(),
                    nosuid | libc::MS_NOEXEC,
                    c"size=64k,nr_inodes=64,mode=0711".as_ptr().cast(),
                ))?;
            }
            make_dirs(&self.dirs)?;
            put_back(fd, &self.target)?;
            for (source, prefixes, target) in &self.volumes {
                make_dirs(prefixes)?;
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    std::ptr::null(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | nosuid,
                    std::ptr::null(),
                ))?;
            }
        }
        Ok(())
    }
}

impl Prepared {
    /// Everything the child does before exec, in order: enter the slot's
    /// cgroups, private mounts and IPC, become the slot user with no
    /// capabilities, `no_new_privs`, the process limit, Landlock.
    /// Async-signal-safe: system calls on data made before the fork.
    #[allow(unsafe_code)]
    pub fn enter(&self) -> io::Result<()> {
        for fd in &self.cgroup_fds {
            // SAFETY: writing two bytes from a static buffer to an open fd.
            let n = unsafe { libc::write(fd.as_raw_fd(), c"0".as_ptr().cast(), 1) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(opts) = &self.tmp_options {
            private_mounts(opts, &self.carry, self.tenant.as_ref())?;
        }
        // SAFETY: plain system calls with integer arguments.
        unsafe {
            for cap in 0..=self.last_cap {
                check(libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0))?;
            }
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(self.uid))?;
            check(libc::setuid(self.uid))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            let lim = libc::rlimit {
                rlim_cur: self.max_procs,
                rlim_max: self.max_procs,
            };
            check(libc::setrlimit(libc::RLIMIT_NPROC, &lim))?;
        }
        if let Some(r) = &self.ruleset {
            landlock::restrict_self(r.as_raw_fd())?;
        }
        Ok(())
    }
}

/// Most folders carried into a slot's temp folders (home, working dir).
const MAX_CARRY: usize = 3;

/// A folder of the pool that lies below a private temp folder, carried
/// into the slot's own: cloned (`open_tree`) in the slot's mount namespace
/// before its tmpfs covers it, then moved to the same path on the tmpfs.
struct Carry {
    read_only: bool,
    source: CString,
    /// Folders to make on the tmpfs, outermost first (the target last).
    dirs: Vec<CString>,
    target: CString,
}

impl Carry {
    /// `path` if it lies below a private temp folder.
    fn of(path: &Path, read_only: bool) -> io::Result<Option<Carry>> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::fs::canonicalize(path)?;
        let inner = [
            ("/tmp", "/tmp"),
            ("/var/tmp", "/tmp/.slot/var-tmp"),
            ("/dev/shm", "/tmp/.slot/shm"),
            ("/run/lock", "/tmp/.slot/lock"),
        ];
        let Some((rel, base)) = inner
            .iter()
            .find_map(|(p, b)| Some((path.strip_prefix(p).ok()?, *b)))
        else {
            return Ok(None);
        };
        if rel.as_os_str().is_empty() {
            return Ok(None);
        }
        let cs = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
        let mut dirs = Vec::new();
        let mut at = Path::new(base).to_path_buf();
        for part in rel.components() {
            at.push(part);
            dirs.push(cs(&at)?);
        }
        Ok(Some(Carry {
            read_only,
            source: cs(&path)?,
            dirs,
            target: cs(&at)?,
        }))
    }
}

/// The kernel's highest capability number (`cap_last_cap`; 40 when it
/// cannot be read, the highest of kernel 6.x).
fn last_cap() -> libc::c_ulong {
    static LAST: std::sync::OnceLock<libc::c_ulong> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(40)
    })
}

/// A short stable name for the agent's cgroup from its state dir
/// (FNV-1a of the path), so that two agents on one host never share one.
pub fn group_name(state_dir: &Path) -> String {
    format!(
        "slot-agent-{:016x}",
        slotpack_proto::protocol::fnv1a(state_dir.as_os_str().as_encoded_bytes())
    )
}
