//! Landlock rulesets of a slot, made with the raw system calls (three of
//! them, no allocation in the child that applies one).
//!
//! A slot's program may bind TCP only to its own port (and to port 0, an
//! ephemeral port for an outgoing connection), on any address (ABI 4), and
//! may neither connect to abstract unix sockets nor signal processes made
//! outside its own run (ABI 6 scopes).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use nix::libc;

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_NET_PORT: libc::c_int = 2;
const ACCESS_NET_BIND_TCP: u64 = 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
const SCOPE_SIGNAL: u64 = 2;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

/// The Landlock ABI version of this kernel (0 when Landlock is off).
#[allow(unsafe_code)]
pub fn abi() -> u32 {
    // SAFETY: a null attribute with size 0 and the version flag only asks.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

/// What a slot's ruleset can enforce on a kernel of ABI `abi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// TCP bind rules (ABI 4).
    pub bind: bool,
    /// Abstract unix socket and signal scopes (ABI 6).
    pub scopes: bool,
}

/// What ABI `abi` covers.
pub fn coverage(abi: u32) -> Coverage {
    Coverage {
        bind: abi >= 4,
        scopes: abi >= 6,
    }
}

/// A ruleset for the slot of `port` (its TCP binds, its scopes), to be
/// applied by the slot's program with [`restrict_self`]. `None` when the
/// kernel enforces none of it.
#[allow(unsafe_code)]
pub fn slot_ruleset(abi: u32, port: u16) -> io::Result<Option<OwnedFd>> {
    let c = coverage(abi);
    if !c.bind {
        return Ok(None);
    }
    let attr = RulesetAttr {
        handled_access_fs: 0,
        handled_access_net: ACCESS_NET_BIND_TCP,
        scoped: if c.scopes {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    };
    // Older ABIs know the struct without `scoped`.
    let size = if c.scopes { 24usize } else { 16 };
    // SAFETY: `attr` is a valid landlock_ruleset_attr of at least `size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    for p in [0, port] {
        let rule = NetPortAttr {
            allowed_access: ACCESS_NET_BIND_TCP,
            port: u64::from(p),
        };
        // SAFETY: `rule` is a valid landlock_net_port_attr; fd is a ruleset.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                RULE_NET_PORT,
                &rule as *const NetPortAttr,
                0u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Some(fd))
}

/// Enforce ruleset `fd` on the calling process and its future children.
/// Async-signal-safe (for a pre-exec hook); `no_new_privs` must be set.
#[allow(unsafe_code)]
pub fn restrict_self(fd: i32) -> io::Result<()> {
    // SAFETY: one system call on a descriptor number.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
