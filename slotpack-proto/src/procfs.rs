//! Reading `/proc`: resident memory per process group, process start times,
//! and who listens on a TCP port (`/proc/net/tcp{,6}`).

use std::collections::HashMap;
use std::fs;

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// One-letter state (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent process id.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
    /// Resident pages.
    pub rss_pages: u64,
    /// CPU time used in user and kernel mode, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parse the text of `/proc/<pid>/stat`; the command name may hold spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let rest: Vec<&str> = text.get(close + 2..)?.split_ascii_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    Some(ProcStat {
        pid,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start_ticks: rest.get(19)?.parse().ok()?,
        rss_pages: rest.get(21)?.parse().ok()?,
        cpu_ticks: rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?,
    })
}

/// The stat of one process, if it exists.
pub fn stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process visible in `/proc`.
pub fn all() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// Resident bytes summed per process group.
pub fn rss_by_group(procs: &[ProcStat]) -> HashMap<i32, u64> {
    let page = page_size();
    let mut m = HashMap::new();
    for p in procs {
        *m.entry(p.pgrp).or_insert(0) += p.rss_pages * page;
    }
    m
}

/// CPU time used, in microseconds, summed per process group.
pub fn cpu_usec_by_group(procs: &[ProcStat]) -> HashMap<i32, u64> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as u64;
    let mut m = HashMap::new();
    for p in procs {
        *m.entry(p.pgrp).or_insert(0) += p.cpu_ticks * 1_000_000 / hz;
    }
    m
}

/// One listening TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Local port (any local address).
    pub port: u16,
    /// Owner uid.
    pub uid: u32,
    /// Socket inode (what `/proc/<pid>/fd/*` links name as `socket:[inode]`).
    pub inode: u64,
}

/// Every listening socket in a `/proc/net/tcp` or `/proc/net/tcp6` text. Pure.
pub fn parse_listeners(text: &str) -> Vec<Listener> {
    const LISTEN: &str = "0A";
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            (*f.get(3)? == LISTEN).then_some(())?;
            Some(Listener {
                port,
                uid: f.get(7)?.parse().ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// Every listening TCP socket in this network namespace.
pub fn listeners() -> Vec<Listener> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .flat_map(|t| parse_listeners(&t))
        .collect()
}

/// A uid other than `owner` that listens on `port`, if any: the port of a
/// slot (or of an agent) is held by someone else. No listener is no answer.
pub fn foreign_listener(port: u16, owner: u32) -> Option<u32> {
    listeners()
        .into_iter()
        .find(|l| l.port == port && l.uid != owner)
        .map(|l| l.uid)
}

/// The process that holds the listening socket on `port` (a scan of
/// every process's open files; slow, for rare use).
pub fn listener_pid(port: u16) -> Option<i32> {
    let inodes: Vec<String> = listeners()
        .into_iter()
        .filter(|l| l.port == port)
        .map(|l| format!("socket:[{}]", l.inode))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    fs::read_link(fd.path())
                        .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
                })
            })
        })
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let t = "42 (a b) c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 1000 33 18446744073709551615";
        let s = parse_stat(t).unwrap();
        assert_eq!((s.pid, s.state, s.ppid, s.pgrp), (42, 'S', 1, 42));
        assert_eq!((s.start_ticks, s.rss_pages), (777, 33));
    }

    #[test]
    fn finds_listeners_and_their_uids() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000 10003        0 1683 1
   1: 0100007F:2328 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  10001        0 1684 1
   2: 0100007F:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1685 1";
        let got: Vec<(u16, u32, u64)> = parse_listeners(t)
            .iter()
            .map(|l| (l.port, l.uid, l.inode))
            .collect();
        assert_eq!(got, vec![(9000, 10003, 1683), (9001, 0, 1685)]);
        let me = nix::unistd::geteuid().as_raw();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listeners().iter().any(|l| l.port == port && l.uid == me));
        assert_eq!(listener_pid(port), Some(std::process::id() as i32));
        assert_eq!(foreign_listener(port, me), None);
        assert_eq!(foreign_listener(port, me + 1), Some(me));
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.rss_pages > 0);
        assert!(all().iter().any(|p| p.pid == me));
    }
}
