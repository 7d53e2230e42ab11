//! Per-program log files with size rotation, and reading their tail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// An open program log: `<dir>/<id>.log`, rotated to `.1` .. `.N` by size.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    backups: u32,
}

impl LogFile {
    /// A log at `path` rotated past `max_bytes`, keeping `backups` old files.
    pub fn new(path: PathBuf, max_bytes: u64, backups: u32) -> Self {
        Self {
            path,
            file: None,
            size: 0,
            max_bytes: max_bytes.max(1),
            backups,
        }
    }

    /// Append `data`, rotating whenever the file reaches the size limit. A
    /// chunk is cut at its last newline that fits, so lines stay whole unless
    /// one line alone is longer than the limit.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.file.is_none() {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                self.size = f.metadata()?.len();
                self.file = Some(f);
            }
            let room = self.max_bytes.saturating_sub(self.size) as usize;
            let take = if data.len() <= room {
                data.len()
            } else {
                match data[..room].iter().rposition(|c| *c == b'\n') {
                    Some(i) => i + 1,
                    None if self.size == 0 => room,
                    None => 0,
                }
            };
            if let Some(f) = self.file.as_mut() {
                f.write_all(&data[..take])?;
            }
            self.size += take as u64;
            data = &data[take..];
            if !data.is_empty() {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.backups == 0 {
            fs::remove_file(&self.path)?;
            return Ok(());
        }
        let nth = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = fs::remove_file(nth(self.backups));
        for n in (1..self.backups).rev() {
            let _ = fs::rename(nth(n), nth(n + 1));
        }
        fs::rename(&self.path, nth(1))
    }
}

/// Where a reader of a log is: the file (by inode) and the byte offset in
/// it, written `<inode>-<offset>` (the `X-Log-Cursor` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Inode of the file read.
    pub inode: u64,
    /// Bytes of it already read.
    pub offset: u64,
}

impl Cursor {
    /// Parse `<inode>-<offset>`.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (i, o) = s.split_once('-')?;
        Some(Cursor {
            inode: i.parse().ok()?,
            offset: o.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.inode, self.offset)
    }
}

/// The end of the log at `path` now (what a follower reads on from).
pub fn end(path: &Path) -> io::Result<Cursor> {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Ok(m) => Ok(Cursor {
            inode: m.ino(),
            offset: m.len(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Cursor {
            inode: 0,
            offset: 0,
        }),
        Err(e) => Err(e),
    }
}

/// What was written to the log at `path` after `from`, at most `max`
/// bytes, and the cursor after it. When the log was rotated since, the
/// rest of the older file (`.1`, found by inode) comes first.
pub fn read_after(path: &Path, from: Cursor, max: usize) -> io::Result<(Vec<u8>, Cursor)> {
    use std::os::unix::fs::MetadataExt;
    let now = end(path)?;
    let mut out = Vec::new();
    let mut start = from.offset;
    if now.inode != from.inode {
        let older = PathBuf::from(format!("{}.1", path.display()));
        if let Ok(m) = fs::metadata(&older) {
            if m.ino() == from.inode {
                read_range(&older, from.offset, m.len(), max, &mut out)?;
            }
        }
        start = 0;
    } else if start > now.offset {
        start = 0;
    }
    let room = max.saturating_sub(out.len());
    let upto = now.offset.min(start + room as u64);
    read_range(path, start, upto, room, &mut out)?;
    Ok((
        out,
        Cursor {
            inode: now.inode,
            offset: upto,
        },
    ))
}

fn read_range(path: &Path, from: u64, to: u64, max: usize, out: &mut Vec<u8>) -> io::Result<()> {
    if to <= from || max == 0 {
        return Ok(());
    }
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(from))?;
    let want = ((to - from) as usize).min(max);
    let at = out.len();
    out.resize(at + want, 0);
    let mut got = 0;
    while got < want {
        match f.read(&mut out[at + got..])? {
            0 => break,
            n => got += n,
        }
    }
    out.truncate(at + got);
    Ok(())
}

/// The last `n` lines of the log at `path`, reaching into `.1` when the
/// current file holds fewer. A missing log reads as empty.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    let mut out = tail_file(path, n)?;
    let have = count_lines(&out);
    if have < n {
        let older = tail_file(&PathBuf::from(format!("{}.1", path.display())), n - have)?;
        let mut joined = older;
        joined.extend_from_slice(&out);
        out = joined;
    }
    Ok(out)
}

fn count_lines(b: &[u8]) -> usize {
    let nl = b.iter().filter(|c| **c == b'\n').count();
    nl + usize::from(!b.is_empty() && b.last() != Some(&b'\n'))
}

fn tail_file(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    // Read backwards in chunks until n + 1 newlines are held (the extra one
    // bounds the first wanted line) or the file start is reached.
    while pos > 0 {
        let step = pos.min(64 * 1024);
        pos -= step;
        f.seek(SeekFrom::Start(pos))?;
        let mut chunk = vec![0u8; step as usize];
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if body.iter().filter(|c| **c == b'\n').count() >= n {
            break;
        }
    }
    let body_end = if buf.last() == Some(&b'\n') {
        buf.len() - 1
    } else {
        buf.len()
    };
    let mut seen = 0;
    let mut start = 0;
    for i in (0..body_end).rev() {
        if buf[i] == b'\n' {
            seen += 1;
            if seen == n {
                start = i + 1;
                break;
            }
        }
    }
    Ok(buf.split_off(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("slot-agent-logs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_follower_reads_on_from_its_cursor_across_a_rotation() {
        let d = tmpdir("cursor");
        let path = d.join("p.log");
        let mut log = LogFile::new(path.clone(), 20, 2);
        assert_eq!(end(&path).unwrap().offset, 0);
        log.write(b"one\ntwo\n").unwrap();
        let (got, c) = read_after(&path, end(&path).unwrap(), 1024).unwrap();
        assert!(got.is_empty());
        log.write(b"three\n").unwrap();
        let (got, c) = read_after(&path, c, 1024).unwrap();
        assert_eq!(got, b"three\n");
        // Past 20 bytes the file rotates: the rest of the old file comes
        // first, then the new one.
        log.write(b"four\nfive\nsix\n").unwrap();
        let (got, c) = read_after(&path, c, 1024).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), "four\nfive\nsix\n");
        // A cap cuts an answer, and the next read goes on from the cut.
        log.write(b"seven\n").unwrap();
        let (got, c) = read_after(&path, c, 3).unwrap();
        assert_eq!(got, b"sev");
        let (got, _) = read_after(&path, c, 1024).unwrap();
        assert_eq!(got, b"en\n");
        assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        assert_eq!(Cursor::parse("x-1"), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotates_by_size_and_keeps_backups() {
        let d = tmpdir("rot");
        let p = d.join("x.log");
        let mut l = LogFile::new(p.clone(), 10, 2);
        for i in 0..5 {
            l.write(format!("line{i}...\n").as_bytes()).unwrap(); // 10 bytes each
        }
        assert_eq!(fs::read_to_string(&p).unwrap(), "line4...\n");
        assert_eq!(fs::read_to_string(d.join("x.log.1")).unwrap(), "line3...\n");
        assert_eq!(fs::read_to_string(d.join("x.log.2")).unwrap(), "line2...\n");
        assert!(!d.join("x.log.3").exists());
        // One chunk larger than the limit is split at line ends.
        let mut l = LogFile::new(d.join("y.log"), 10, 2);
        l.write(b"aaaa\nbbbb\ncccc\ndddddddddddddd\n").unwrap();
        // Files in order: "aaaa\nbbbb\n" (dropped), "cccc\n", then the
        // 15-byte line split into 10 + 5 bytes.
        assert_eq!(fs::read_to_string(d.join("y.log.2")).unwrap(), "cccc\n");
        assert_eq!(fs::read_to_string(d.join("y.log.1")).unwrap(), "dddddddddd");
        assert_eq!(fs::read_to_string(d.join("y.log")).unwrap(), "dddd\n");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tail_reads_last_lines_across_rotation() {
        let d = tmpdir("tail");
        let p = d.join("t.log");
        fs::write(d.join("t.log.1"), "a\nb\nc\n").unwrap();
        fs::write(&p, "d\ne").unwrap();
        assert_eq!(tail(&p, 1).unwrap(), b"e");
        assert_eq!(tail(&p, 2).unwrap(), b"d\ne");
        assert_eq!(tail(&p, 4).unwrap(), b"b\nc\nd\ne");
        assert_eq!(tail(&p, 100).unwrap(), b"a\nb\nc\nd\ne");
        assert_eq!(tail(&d.join("none.log"), 5).unwrap(), b"");
        let big: String = (0..20_000).map(|i| format!("{i}\n")).collect();
        fs::write(&p, &big).unwrap();
        assert_eq!(tail(&p, 3).unwrap(), b"19997\n19998\n19999\n");
        fs::remove_dir_all(&d).unwrap();
    }
}
