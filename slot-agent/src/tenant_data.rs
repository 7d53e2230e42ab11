//! A tenant's durable data: `<tenants-dir>/<id>/home` and one folder per
//! volume under `<tenants-dir>/<id>/volumes/`, kept through every restart,
//! move and agent restart, and removed only by a purge (the tenant's own
//! DELETE). The folders belong to the tenant, not to a slot: a tenant that
//! lands in another slot or pool finds them at the same paths, handed to
//! its new slot user.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use slotpack_proto::protocol::{volume_dir_name, VolumeSpec};

/// Where the tenants' data of one agent lives (shared by every pool of a
/// deployment on a host, see ARCHITECTURE.md).
#[derive(Debug, Clone)]
pub struct TenantData {
    root: PathBuf,
}

/// One volume of a launch: its data folder and where the program sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The tenant's folder for it.
    pub source: PathBuf,
    /// Absolute path in the slot's view.
    pub target: String,
}

impl TenantData {
    /// The data root `root`.
    pub fn new(root: PathBuf) -> TenantData {
        TenantData { root }
    }

    /// The root (every tenant's folder is below it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Tenant `id`'s folder.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Tenant `id`'s home.
    pub fn home(&self, id: &str) -> PathBuf {
        self.dir(id).join("home")
    }

    /// Tenant `id`'s volumes as a launch takes them.
    pub fn volumes(&self, id: &str, specs: &[VolumeSpec]) -> Vec<Volume> {
        specs
            .iter()
            .map(|v| Volume {
                source: self.dir(id).join("volumes").join(volume_dir_name(&v.path)),
                target: v.path.clone(),
            })
            .collect()
    }

    /// Make the root: root's own, traversable, not listable.
    pub fn create_root(&self) -> io::Result<()> {
        fs::create_dir_all(&self.root)?;
        crate::store::set_mode(&self.root, 0o711)
    }

    /// Make tenant `id`'s home and volume folders before a start, owned
    /// by `uid` (its slot user, if any): folders that a run in another
    /// slot left owned by another uid are handed over, with everything in
    /// them (symlinks not followed, no other file system entered).
    pub fn prepare(&self, id: &str, volumes: &[Volume], uid: Option<u32>) -> io::Result<()> {
        let dir = self.dir(id);
        for d in [dir.clone(), dir.join("volumes")] {
            fs::create_dir_all(&d)?;
            crate::store::set_mode(&d, 0o711)?;
        }
        let home = self.home(id);
        for d in std::iter::once(&home).chain(volumes.iter().map(|v| &v.source)) {
            fs::create_dir_all(d)?;
            if let Some(uid) = uid {
                if fs::symlink_metadata(d)?.uid() != uid {
                    own_tree(d, uid)?;
                }
            }
            crate::store::set_mode(d, 0o700)?;
        }
        Ok(())
    }

    /// Remove everything of tenant `id`; nothing if it has nothing.
    pub fn purge(&self, id: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.dir(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Move a home of the layout before per-tenant data (`old`, the slot's
    /// home) into tenant `id`'s home, unless it has one already. Returns
    /// whether it moved anything.
    pub fn adopt_slot_home(&self, id: &str, old: &Path) -> io::Result<bool> {
        let home = self.home(id);
        if home.exists() || !old.is_dir() {
            return Ok(false);
        }
        let dir = self.dir(id);
        fs::create_dir_all(&dir)?;
        crate::store::set_mode(&dir, 0o711)?;
        match fs::rename(old, &home) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
                // Another file system (a pool's state volume): copy, then
                // drop the old one only once the copy is whole.
                let part = dir.join("home.part");
                let _ = fs::remove_dir_all(&part);
                copy_tree(old, &part)?;
                fs::rename(&part, &home)?;
                fs::remove_dir_all(old)?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

/// Give `top` and everything below it to `uid` (and its group), on its
/// own file system only, never following a symlink.
fn own_tree(top: &Path, uid: u32) -> io::Result<()> {
    let dev = fs::symlink_metadata(top)?.dev();
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p)?;
        if meta.dev() != dev {
            continue;
        }
        std::os::unix::fs::lchown(&p, Some(uid), Some(uid))?;
        if meta.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

/// Copy the tree `from` to `to` (which must not exist): folders, files
/// and symlinks with their modes and owners.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if ft.is_dir() {
        fs::create_dir(to)?;
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        fs::set_permissions(to, meta.permissions())?;
    } else if ft.is_file() {
        fs::copy(from, to)?;
    } else {
        return Ok(()); // sockets, fifos, devices: not data
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder, removed at drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p =
                std::env::temp_dir().join(format!("slot-agent-data-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn data(name: &str) -> (Scratch, TenantData) {
        let t = Scratch::new(name);
        let d = TenantData::new(t.path().join("tenants"));
        d.create_root().unwrap();
        (t, d)
    }

    #[test]
    fn prepare_makes_home_and_volumes_and_purge_removes_them() {
        let (_t, d) = data("prepare");
        let vols = d.volumes(
            "bot",
            &[VolumeSpec {
                path: "/srv/data".into(),
            }],
        );
        d.prepare("bot", &vols, None).unwrap();
        assert!(d.home("bot").is_dir());
        assert!(vols[0].source.is_dir());
        assert!(vols[0].source.ends_with("volumes/srv%2Fdata"));
        fs::write(d.home("bot").join("db"), "x").unwrap();
        // Again (a restart): the data stays.
        d.prepare("bot", &vols, None).unwrap();
        assert_eq!(fs::read_to_string(d.home("bot").join("db")).unwrap(), "x");
        d.purge("bot").unwrap();
        assert!(!d.dir("bot").exists());
        d.purge("bot").unwrap();
    }

    #[test]
    fn an_old_slot_home_moves_in_once() {
        let (t, d) = data("adopt");
        let old = t.path().join("slots/3");
        fs::create_dir_all(old.join("sub")).unwrap();
        fs::write(old.join("sub/trades"), "42").unwrap();
        assert!(d.adopt_slot_home("bot", &old).unwrap());
        assert!(!old.exists());
        assert_eq!(
            fs::read_to_string(d.home("bot").join("sub/trades")).unwrap(),
            "42"
        );
        fs::create_dir_all(&old).unwrap();
        assert!(
            !d.adopt_slot_home("bot", &old).unwrap(),
            "has a home already"
        );
    }

    #[test]
    fn a_copied_tree_keeps_files_links_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let t = Scratch::new("copy");
        let a = t.path().join("a");
        fs::create_dir_all(a.join("d")).unwrap();
        fs::write(a.join("d/f"), "data").unwrap();
        fs::set_permissions(a.join("d/f"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("d/f", a.join("l")).unwrap();
        copy_tree(&a, &t.path().join("b")).unwrap();
        let b = t.path().join("b");
        assert_eq!(fs::read_to_string(b.join("d/f")).unwrap(), "data");
        assert_eq!(
            fs::metadata(b.join("d/f")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_link(b.join("l")).unwrap(), Path::new("d/f"));
    }
}
