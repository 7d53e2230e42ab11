//! A slot's socket rules, enforced by the kernel at `bind`, `connect` and
//! `sendmsg` (cgroup `sock_addr` BPF programs on the slot's cgroup v2
//! folder; on a cgroup v1 machine in a folder of the unified hierarchy,
//! mounted detached, that holds nothing but these programs).
//!
//! - **bind** (TCP and UDP, IPv4 and IPv6, any address): only the slot's
//!   own port, or port 0 (an ephemeral port).
//! - **connect / sendmsg** (TCP and UDP): no guarded port (the agent's API,
//!   the other slots, the orchestrator's API on the local backend) at a
//!   local address: `127.0.0.0/8`, `0.0.0.0`, `::1`, `::`, IPv4-mapped
//!   forms of those, and the machine's own interface addresses. Everything
//!   else (a bot's exchange, DNS) is untouched.
//!
//! The programs are a few dozen instructions made here, loaded with the raw
//! `bpf` system call: a slot pays nothing per packet, only per call.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::libc;

const PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const ATTACH_INET4_BIND: u32 = 8;
const ATTACH_INET6_BIND: u32 = 9;
const ATTACH_INET4_CONNECT: u32 = 10;
const ATTACH_INET6_CONNECT: u32 = 11;
const ATTACH_UDP4_SENDMSG: u32 = 14;
const ATTACH_UDP6_SENDMSG: u32 = 15;
const CMD_PROG_LOAD: libc::c_int = 5;
const CMD_PROG_ATTACH: libc::c_int = 8;

// Offsets in `struct bpf_sock_addr`.
const USER_IP4: i16 = 4;
const USER_IP6: i16 = 8;
const USER_PORT: i16 = 24;

/// An inclusive range of guarded ports.
pub type PortRange = (u16, u16);

/// One BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// Where a jump goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Allow,
    Deny,
    Label(usize),
}

/// A tiny assembler: instructions with symbolic jumps, resolved at the end.
#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
    jumps: Vec<(usize, To)>,
    labels: Vec<Option<usize>>,
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.code.push(Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        });
    }
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn here(&mut self, l: usize) {
        self.labels[l] = Some(self.code.len());
    }
    /// A 32-bit compare of `dst` with `imm` (`op` is the BPF jump op).
    fn jump32(&mut self, op: u8, dst: u8, imm: u32, to: To) {
        self.jumps.push((self.code.len(), to));
        self.op(0x06 | op, dst, 0, 0, imm as i32);
    }
    fn jeq(&mut self, dst: u8, imm: u32, to: To) {
        self.jump32(0x10, dst, imm, to);
    }
    fn jne(&mut self, dst: u8, imm: u32, to: To) {
        self.jump32(0x50, dst, imm, to);
    }
    fn goto(&mut self, to: To) {
        self.jumps.push((self.code.len(), to));
        self.op(0x05, 0, 0, 0, 0);
    }
    fn load32(&mut self, dst: u8, off: i16) {
        self.op(0x61, dst, R6, off, 0);
    }
    fn ret(&mut self, v: i32) {
        self.op(0xb7, R0, 0, 0, v);
        self.op(0x95, 0, 0, 0, 0);
    }
    /// `r2` = the port asked for, in host order.
    fn port(&mut self) {
        self.op(0xbf, R6, R1, 0, 0); // r6 = ctx
        self.load32(R2, USER_PORT);
        self.op(0xdc, R2, 0, 0, 16); // to big endian: the port's value
    }
    /// Deny when `reg` (an IPv4 address as loaded) is local.
    fn deny_local_v4(&mut self, reg: u8, scratch: u8, local: &[[u8; 4]]) {
        self.op(0xbc, scratch, reg, 0, 0); // w_scratch = w_reg
        self.op(0x54, scratch, 0, 0, 0xff); // first octet
        self.jeq(scratch, 127, To::Deny);
        self.jeq(reg, 0, To::Deny);
        for a in local {
            self.jeq(reg, u32::from_ne_bytes(*a), To::Deny);
        }
    }
    fn finish(mut self) -> Vec<Insn> {
        let deny = self.code.len();
        self.ret(0);
        let allow = self.code.len();
        self.ret(1);
        for (at, to) in std::mem::take(&mut self.jumps) {
            let target = match to {
                To::Allow => allow,
                To::Deny => deny,
                To::Label(l) => self.labels[l].expect("label placed"),
            };
            self.code[at].off = (target as i64 - at as i64 - 1) as i16;
        }
        self.code
    }
}

/// The bind program: own port or 0, nothing else.
pub fn bind_program(own: u16) -> Vec<Insn> {
    let mut a = Asm::default();
    a.port();
    a.jeq(R2, 0, To::Allow);
    a.jeq(R2, u32::from(own), To::Allow);
    a.goto(To::Deny);
    a.finish()
}

/// Jump to `to` when `r2` (a port) is guarded and not `own`; else fall on.
fn guarded_port(a: &mut Asm, own: u16, guarded: &[PortRange], to: usize) {
    a.jeq(R2, u32::from(own), To::Allow);
    for &(lo, hi) in guarded {
        let next = a.label();
        a.jump32(0xa0, R2, u32::from(lo), To::Label(next)); // jlt
        a.jump32(0xb0, R2, u32::from(hi), To::Label(to)); // jle
        a.here(next);
    }
    a.goto(To::Allow);
}

/// The IPv4 connect/sendmsg program.
pub fn connect4_program(own: u16, guarded: &[PortRange], local: &[[u8; 4]]) -> Vec<Insn> {
    let mut a = Asm::default();
    a.port();
    let check = a.label();
    guarded_port(&mut a, own, guarded, check);
    a.here(check);
    a.load32(R3, USER_IP4);
    a.deny_local_v4(R3, R4, local);
    a.goto(To::Allow);
    a.finish()
}

/// The IPv6 connect/sendmsg program (IPv4-mapped addresses included).
pub fn connect6_program(
    own: u16,
    guarded: &[PortRange],
    local4: &[[u8; 4]],
    local6: &[[u8; 16]],
) -> Vec<Insn> {
    let word = |b: &[u8; 16], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut a = Asm::default();
    a.port();
    let check = a.label();
    guarded_port(&mut a, own, guarded, check);
    a.here(check);
    for (i, r) in [R2, R3, R4, R5].into_iter().enumerate() {
        a.load32(r, USER_IP6 + 4 * i as i16);
    }
    let list = a.label();
    let zero = a.label();
    let mapped = a.label();
    a.jne(R2, 0, To::Label(list));
    a.jne(R3, 0, To::Label(list));
    a.jeq(R4, 0, To::Label(zero));
    a.jeq(
        R4,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        To::Label(mapped),
    );
    a.goto(To::Label(list));
    a.here(zero); // :: and ::1
    a.jeq(R5, 0, To::Deny);
    a.jeq(R5, u32::from_ne_bytes([0, 0, 0, 1]), To::Deny);
    a.goto(To::Label(list));
    a.here(mapped); // ::ffff:a.b.c.d
    a.deny_local_v4(R5, R1, local4);
    a.goto(To::Allow);
    a.here(list);
    for addr in local6 {
        let next = a.label();
        a.jne(R2, word(addr, 0), To::Label(next));
        a.jne(R3, word(addr, 4), To::Label(next));
        a.jne(R4, word(addr, 8), To::Label(next));
        a.jeq(R5, word(addr, 12), To::Deny);
        a.here(next);
    }
    a.goto(To::Allow);
    a.finish()
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The `bpf` system call with `attr`, a `bpf_attr` prefix for `cmd`.
///
/// # Safety
/// `attr` must be a `bpf_attr` layout for `cmd`, and every pointer in it
/// valid for what the kernel does with it during the call.
#[allow(unsafe_code)]
unsafe fn bpf<T>(cmd: libc::c_int, attr: &T) -> libc::c_long {
    // SAFETY: as the caller promises.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    }
}

/// Load `insns` for `attach_type`; the verifier's log is in the error.
#[allow(unsafe_code)]
fn load(insns: &[Insn], attach_type: u32) -> io::Result<OwnedFd> {
    let mut log = vec![0u8; 16 * 1024];
    let attr = ProgLoad {
        prog_type: PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: c"GPL".as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: *b"slot_guard\0\0\0\0\0\0",
        expected_attach_type: attach_type,
        ..ProgLoad::default()
    };
    // SAFETY: a prog-load attr whose pointers (insns, license, log) are
    // live buffers for the duration of the call.
    let fd = unsafe { bpf(CMD_PROG_LOAD, &attr) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let end = log.iter().position(|b| *b == 0).unwrap_or(0);
        let text = String::from_utf8_lossy(&log[..end]);
        return Err(io::Error::new(
            e.kind(),
            format!("bpf load: {e} {}", text.trim()),
        ));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attach `prog` to the cgroup folder `dir` (replacing this hook's last).
#[allow(unsafe_code)]
fn attach(dir: &OwnedFd, prog: &OwnedFd, attach_type: u32) -> io::Result<()> {
    let attr = ProgAttach {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: 0,
        replace_bpf_fd: 0,
    };
    // SAFETY: a prog-attach attr of plain integers.
    let r = unsafe { bpf(CMD_PROG_ATTACH, &attr) };
    if r < 0 {
        return Err(io::Error::other(format!(
            "bpf attach: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// A detached mount of the unified hierarchy (no path of the machine's
/// mount table changes; it goes with the descriptor).
fn mount_unified() -> io::Result<OwnedFd> {
    super::detached_mount(c"cgroup2", &[])
}

/// The guard's folder `name` in a detached mount of the unified hierarchy
/// (cgroup v1 machines), with the mount that holds it.
fn detached_root(name: &str) -> io::Result<(OwnedFd, PathBuf)> {
    let m = mount_unified()?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| super::cgroup::own_path(&t, None))
        .unwrap_or_else(|| "/".into());
    // Pool containers share the unified root: their names differ.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let root = PathBuf::from(format!("/proc/self/fd/{}", m.as_raw_fd()))
        .join(own.trim_start_matches('/'))
        .join(format!(
            "{name}-{:08x}",
            slotpack_proto::protocol::fnv1a(host.trim().as_bytes()) as u32
        ));
    Ok((m, root))
}

/// Remove the guard folders an agent of `name` left (one killed hard),
/// for whoever removes its pool. Folders still holding processes stay.
pub fn remove_left(name: &str) {
    let Ok((_m, root)) = detached_root(name) else {
        return;
    };
    if let Ok(rd) = std::fs::read_dir(&root) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("slot-") {
                super::cgroup::remove_group(&e.path());
            }
        }
    }
    super::cgroup::remove_group(&root);
}

/// The machine's interface addresses (a slot may not reach guarded ports
/// at them either).
pub fn local_addresses() -> (Vec<[u8; 4]>, Vec<[u8; 16]>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            if let Some(s) = sa.as_sockaddr_in() {
                v4.push(s.ip().octets());
            } else if let Some(s) = sa.as_sockaddr_in6() {
                v6.push(s.ip().octets());
            }
        }
    }
    v4.sort();
    v4.dedup();
    v6.sort();
    v6.dedup();
    (v4, v6)
}

/// Parse `9000-9099,8080` into ranges.
pub fn parse_ranges(text: &str) -> Result<Vec<PortRange>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let p = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{part:?} is not a port or a range of ports (1-65535)"))
        };
        let (lo, hi) = (p(lo)?, p(hi)?);
        if lo > hi {
            return Err(format!("{part:?}: the range runs backwards"));
        }
        out.push((lo, hi));
    }
    Ok(out)
}

/// The socket rules of an agent's slots.
#[derive(Debug)]
pub struct SocketGuard {
    /// Folder whose `slot-N` children carry the programs.
    root: PathBuf,
    /// Keeps a detached mount alive (cgroup v1 machines).
    _mount: Option<OwnedFd>,
    /// Whether `root` is ours alone to remove at shutdown.
    own_root: bool,
    guarded: Vec<PortRange>,
    local4: Vec<[u8; 4]>,
    local6: Vec<[u8; 16]>,
    attached: Mutex<HashSet<u32>>,
}

impl SocketGuard {
    /// Guard the slots below `v2_root` (the agent's cgroup v2 folder), or
    /// below a folder `name` of a detached unified hierarchy when the slot
    /// cgroups are v1 (`v2_root` None). Checks that this kernel loads the
    /// programs.
    pub fn setup(
        v2_root: Option<&Path>,
        name: &str,
        guarded: Vec<PortRange>,
    ) -> io::Result<SocketGuard> {
        let (root, mount, own_root) = match v2_root {
            Some(r) => (r.to_path_buf(), None, false),
            None => {
                let (m, root) = detached_root(name)?;
                std::fs::create_dir_all(&root)?;
                (root, Some(m), true)
            }
        };
        let (local4, local6) = local_addresses();
        // A kernel that cannot load them is found out now, not per start.
        load(&bind_program(1), ATTACH_INET4_BIND)?;
        load(
            &connect6_program(1, &guarded, &local4, &local6),
            ATTACH_INET6_CONNECT,
        )?;
        Ok(SocketGuard {
            root,
            _mount: mount,
            own_root,
            guarded,
            local4,
            local6,
            attached: Mutex::new(HashSet::new()),
        })
    }

    fn dir(&self, slot: u32) -> PathBuf {
        self.root.join(format!("slot-{slot}"))
    }

    /// Make sure `slot` (port `own`) carries its programs; returns the
    /// `cgroup.procs` to enter when the slot folder is not one the slot's
    /// cgroups already enter (v1 machines).
    pub fn prepare(&self, slot: u32, own: u16) -> io::Result<Option<OwnedFd>> {
        let dir = self.dir(slot);
        let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        if !attached.contains(&slot) {
            std::fs::create_dir_all(&dir)?;
            let d = OwnedFd::from(std::fs::File::open(&dir)?);
            let bind = bind_program(own);
            let c4 = connect4_program(own, &self.guarded, &self.local4);
            let c6 = connect6_program(own, &self.guarded, &self.local4, &self.local6);
            for (prog, kind) in [
                (&bind, ATTACH_INET4_BIND),
                (&bind, ATTACH_INET6_BIND),
                (&c4, ATTACH_INET4_CONNECT),
                (&c6, ATTACH_INET6_CONNECT),
                (&c4, ATTACH_UDP4_SENDMSG),
                (&c6, ATTACH_UDP6_SENDMSG),
            ] {
                attach(&d, &load(prog, kind)?, kind)?;
            }
            attached.insert(slot);
        }
        if !self.own_root {
            return Ok(None);
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        Ok(Some(OwnedFd::from(f)))
    }

    /// Remove the folders this guard made (empty ones; at shutdown).
    pub fn remove(&self) {
        if !self.own_root {
            return;
        }
        let attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        for slot in attached.iter() {
            super::cgroup::remove_group(&self.dir(*slot));
        }
        super::cgroup::remove_group(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_ranges("9000-9099, 8080,").unwrap(),
            vec![(9000, 9099), (8080, 8080)]
        );
        assert!(parse_ranges("9-1").unwrap_err().contains("backwards"));
        assert!(parse_ranges("0").is_err());
        assert!(parse_ranges("70000").is_err());
    }

    #[test]
    fn jumps_land_on_allow_deny_or_their_label() {
        let p = connect6_program(9001, &[(9000, 9009), (7000, 7000)], &[[10, 0, 0, 2]], &[]);
        // Ends in deny (r0 = 0, exit) then allow (r0 = 1, exit).
        let n = p.len();
        assert_eq!((p[n - 4].imm, p[n - 2].imm), (0, 1));
        for (i, ins) in p.iter().enumerate() {
            let class = ins.code & 0x07;
            if (class == 0x05 || class == 0x06) && ins.code != 0x95 {
                let t = i as i64 + 1 + i64::from(ins.off);
                assert!(t > i as i64 && (t as usize) < n, "jump {i} -> {t}");
            }
        }
    }
}
