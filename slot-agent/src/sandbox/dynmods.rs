//! Fast cgroup moves: every start moves a process into its slot's cgroups,
//! and the kernel's default makes each move wait for an RCU grace period
//! (measured here: 7–15 ms per start, serialised). The `favordynmods`
//! mount option of a cgroup hierarchy flips that lock to favour writers
//! (moves take ~0.4 ms; forks and exits on the machine take a slightly
//! slower path). The agent holds a detached mount of a named, empty v1
//! hierarchy with that option for as long as it runs: no path in any mount
//! table, and the kernel drops the mode when the last holder goes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

/// Name of the (empty) hierarchy every agent shares for the option.
const NAME: &std::ffi::CStr = c"slotpack-dynmods";

/// Hold the option; the returned descriptor keeps it on.
#[allow(unsafe_code)]
pub fn hold() -> io::Result<OwnedFd> {
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
    // SAFETY: fsopen/fsconfig/fsmount on static strings and our own fds.
    unsafe {
        let fs = ok(libc::syscall(libc::SYS_fsopen, c"cgroup".as_ptr(), 1u32))?;
        let fs = OwnedFd::from_raw_fd(fs as i32);
        let cfg = |cmd: u32, key: &std::ffi::CStr, value: *const libc::c_char| {
            ok(libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                key.as_ptr(),
                value,
                0,
            ))
        };
        cfg(SET_FLAG, c"none", std::ptr::null())?;
        cfg(SET_STRING, c"name", NAME.as_ptr())?;
        cfg(SET_FLAG, c"favordynmods", std::ptr::null())?;
        ok(libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        ))?;
        let m = ok(libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), 1u32, 0u32))?;
        Ok(OwnedFd::from_raw_fd(m as i32))
    }
}
