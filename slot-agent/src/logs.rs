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
