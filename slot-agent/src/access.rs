//! Whether a slot user can run a program's command: every folder on the
//! way searchable and the file executable by that uid and gid (slot users
//! have no supplementary groups). Checked when a spec is accepted, so that
//! a command below a private home is a clear 400, not a restart loop. Also
//! refused: a command or working folder that every user may change (another
//! tenant could swap what the program runs).

use std::path::{Path, PathBuf};

/// Permission bits `bit` (4 read, 2 write, 1 execute/search) for `uid`/`gid`
/// on a file of `mode`, `owner`, `group`. Pure.
pub fn allows(mode: u32, owner: u32, group: u32, uid: u32, gid: u32, bit: u32) -> bool {
    let shift = if owner == uid {
        6
    } else if group == gid {
        3
    } else {
        0
    };
    (mode >> shift) & bit == bit
}

/// The file `command` names: as given when it holds a `/`, else the first
/// regular file of that name in `path` (a `PATH` value). `None`: not found
/// (a failed start at spawn, as a missing file may yet appear).
pub fn resolve(command: &str, path: &str) -> Option<PathBuf> {
    if command.contains('/') {
        return Some(PathBuf::from(command));
    }
    path.split(':')
        .map(|d| Path::new(d).join(command))
        .find(|p| p.is_file())
}

/// `Ok` if `uid`/`gid` can run `file`; else why not. A file that does not
/// exist is `Ok` (see [`resolve`]).
pub fn can_run(file: &Path, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !file.exists() {
        return Ok(());
    }
    let abs = std::fs::canonicalize(file).map_err(|e| format!("{}: {e}", file.display()))?;
    for dir in abs.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !allows(m.mode(), m.uid(), m.gid(), uid, gid, 1) {
            return Err(format!(
                "{} cannot be run by the slot's user (uid {uid}): it cannot enter {} (mode {:o}, owner {})",
                file.display(),
                dir.display(),
                m.mode() & 0o777,
                m.uid()
            ));
        }
    }
    let m = std::fs::metadata(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
    if !m.is_file() || !allows(m.mode(), m.uid(), m.gid(), uid, gid, 1) {
        return Err(format!(
            "{} is not executable by the slot's user (uid {uid}; mode {:o}, owner {})",
            file.display(),
            m.mode() & 0o777,
            m.uid()
        ));
    }
    Ok(())
}

/// `Ok` if `uid`/`gid` can enter the existing folder `dir` (every folder
/// on the way and `dir` itself searchable); else why not.
pub fn can_enter(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let abs =
        std::fs::canonicalize(dir).map_err(|e| format!("workingDir {}: {e}", dir.display()))?;
    if !abs.is_dir() {
        return Err(format!("workingDir {} is not a folder", dir.display()));
    }
    for d in abs.ancestors() {
        let m = std::fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if !allows(m.mode(), m.uid(), m.gid(), uid, gid, 1) {
            return Err(format!(
                "workingDir {} cannot be entered by the slot's user (uid {uid}): {} has mode {:o}, owner {}",
                dir.display(),
                d.display(),
                m.mode() & 0o777,
                m.uid()
            ));
        }
    }
    Ok(())
}

/// `Ok` unless every user may change `path` or a folder on its way (world
/// writable, a folder without the sticky bit): then any other tenant could
/// change what this program runs. A missing path is `Ok`.
pub fn not_shared_writable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(abs) = std::fs::canonicalize(path) else {
        return Ok(());
    };
    for p in abs.ancestors() {
        let m = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
        if m.mode() & 0o002 != 0 && !sticky_dir {
            return Err(format!(
                "{} is writable by every user (mode {:o}), so other tenants could change what {} runs",
                p.display(),
                m.mode() & 0o7777,
                path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_group_and_other_bits() {
        assert!(allows(0o700, 5, 5, 5, 5, 1));
        assert!(!allows(0o700, 0, 0, 5, 5, 1));
        assert!(allows(0o710, 0, 5, 7, 5, 1));
        assert!(allows(0o711, 0, 0, 7, 7, 1));
        // The owner's bits decide for the owner, even when others may.
        assert!(!allows(0o017, 5, 0, 5, 9, 1));
    }

    #[test]
    fn commands_are_found_in_path() {
        assert_eq!(resolve("/x/y", "/bin"), Some(PathBuf::from("/x/y")));
        assert_eq!(
            resolve("sh", "/nonexistent:/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(resolve("no-such-command-here", "/bin"), None);
        assert!(can_run(Path::new("/bin/sh"), 65_534, 65_534).is_ok());
        assert!(can_run(Path::new("/nonexistent/x"), 65_534, 65_534).is_ok());
    }

    #[test]
    fn working_folders_must_exist_and_be_enterable() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = std::env::temp_dir().join(format!("slot-access-{}", std::process::id()));
        let inner = dir.join("app");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
        let owner = std::fs::metadata(&dir).unwrap().uid();
        let stranger = owner + 4242;
        assert!(can_enter(&inner, stranger, stranger).is_ok());
        // A private folder on the way: refused for others, fine for its owner.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let why = can_enter(&inner, stranger, stranger).unwrap_err();
        assert!(why.contains("cannot be entered"), "{why}");
        assert!(can_enter(&inner, owner, owner).is_ok());
        assert!(can_enter(&dir.join("missing"), owner, owner).is_err());
        std::fs::write(dir.join("file"), b"").unwrap();
        assert!(can_enter(&dir.join("file"), owner, owner)
            .unwrap_err()
            .contains("not a folder"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn world_writable_paths_are_refused_sticky_folders_are_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("slot-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("run.sh");
        std::fs::write(&file, b"#!/bin/sh\n").unwrap();
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(&dir, 0o755).unwrap();
        mode(&file, 0o755).unwrap();
        assert!(not_shared_writable(&file).is_ok());
        mode(&file, 0o757).unwrap();
        assert!(not_shared_writable(&file)
            .unwrap_err()
            .contains("writable by every user"));
        mode(&file, 0o755).unwrap();
        mode(&dir, 0o777).unwrap();
        assert!(not_shared_writable(&file).is_err());
        mode(&dir, 0o1777).unwrap();
        assert!(not_shared_writable(&file).is_ok());
        assert!(not_shared_writable(&dir.join("missing")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
