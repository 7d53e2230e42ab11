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
pub mod landlock;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::libc;

pub use cgroup::{Cgroups, Limits};

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
}

/// What one program is started with, made before the fork so that the
/// child only makes system calls.
pub struct Prepared {
    cgroup_fds: Vec<OwnedFd>,
    ruleset: Option<OwnedFd>,
    tmp_options: Option<CString>,
    uid: u32,
    max_procs: u64,
}

impl Sandbox {
    /// Find out what can be enforced here, and set up the agent's cgroup
    /// `name` (a name of this agent's own: its state dir's hash).
    pub fn detect(name: &str) -> Sandbox {
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
        Sandbox {
            cgroups,
            namespaces,
            landlock,
        }
    }

    /// One line for the start-up log and `/v1/health`.
    pub fn describe(&self) -> String {
        format!(
            "cgroup {}, namespaces {}, landlock abi {}",
            self.cgroups.as_ref().map_or("none", |c| c.version()),
            if self.namespaces { "on" } else { "off" },
            self.landlock
        )
    }

    /// Whether a slot's TCP binds are limited to its own port by the kernel.
    pub fn binds_enforced(&self) -> bool {
        landlock::coverage(self.landlock).bind
    }

    /// Make what slot `slot` (user `uid`, port `port`) needs for one start.
    pub fn prepare(
        &self,
        slot: u32,
        uid: u32,
        port: u16,
        limits: Limits,
        tmp_mb: u64,
    ) -> io::Result<Prepared> {
        let cgroup_fds = match &self.cgroups {
            Some(c) => {
                c.prepare(slot, limits)?;
                c.entry(slot)?
            }
            None => Vec::new(),
        };
        let ruleset = landlock::slot_ruleset(self.landlock, port)?;
        let tmp_options = self.namespaces.then(|| {
            CString::new(format!("size={}m,mode=1777,nr_inodes=65536", tmp_mb.max(1)))
                .expect("no NUL")
        });
        Ok(Prepared {
            cgroup_fds,
            ruleset,
            tmp_options,
            uid,
            max_procs: limits.pids,
        })
    }
}

/// Whether this agent can give a child private mounts and IPC: starts
/// itself (`--version`) with the same steps.
fn probe_namespaces() -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let opts = CString::new("size=1m,mode=1777").expect("no NUL");
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the hook only makes system calls on data made before the fork.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || private_mounts(&opts));
    }
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("probe exited {status}")))
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
fn private_mounts(tmp_options: &CString) -> io::Result<()> {
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
        for (inner, target) in [
            (c"/tmp/.slot/var-tmp", c"/var/tmp"),
            (c"/tmp/.slot/shm", c"/dev/shm"),
            (c"/tmp/.slot/lock", c"/run/lock"),
        ] {
            check(libc::mkdir(inner.as_ptr(), 0o1777))?;
            check(libc::chmod(inner.as_ptr(), 0o1777))?;
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
    }
    Ok(())
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
            private_mounts(opts)?;
        }
        // SAFETY: plain system calls with integer arguments.
        unsafe {
            for cap in 0..=63 {
                // Unknown capabilities above the kernel's last are EINVAL.
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
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

/// A short stable name for the agent's cgroup from its state dir
/// (FNV-1a of the path), so that two agents on one host never share one.
pub fn group_name(state_dir: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("slot-agent-{h:016x}")
}
