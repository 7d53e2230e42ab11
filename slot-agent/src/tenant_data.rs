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

/// Where a volume's content goes in and out: a tar whose entries lie
/// under one top folder named as the volume's last path part
/// (`user_data/...` for `/freqtrade/user_data`), as `docker cp` makes
/// and takes them.
impl TenantData {
    /// Put the tar `archive` into tenant `id`'s volume at `path`: files
    /// it has replace those of the same name, others stay; everything is
    /// then `uid`'s (its slot user, if any). Extracted into a staging
    /// folder first, which keeps every entry inside it.
    pub fn import(&self, id: &str, path: &str, archive: &Path, uid: Option<u32>) -> io::Result<()> {
        let vol = self.dir(id).join("volumes").join(volume_dir_name(path));
        let stage = self.dir(id).join(".import");
        let _ = fs::remove_dir_all(&stage);
        fs::create_dir_all(&vol)?;
        fs::create_dir_all(&stage)?;
        let result = (|| {
            let mut ar = tar::Archive::new(fs::File::open(archive)?);
            ar.set_preserve_permissions(true);
            ar.set_overwrite(true);
            ar.unpack(&stage)?;
            let mut tops = fs::read_dir(&stage)?;
            let top = match (tops.next(), tops.next()) {
                (Some(t), None) => t?.path(),
                (None, _) => return Ok(()), // empty: nothing to put in
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "the archive must hold one top folder (as docker cp makes it)",
                    ))
                }
            };
            if !fs::symlink_metadata(&top)?.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the archive's top entry must be a folder",
                ));
            }
            for e in fs::read_dir(&top)? {
                let e = e?;
                let to = vol.join(e.file_name());
                if let Ok(m) = fs::symlink_metadata(&to) {
                    if m.is_dir() {
                        fs::remove_dir_all(&to)?;
                    } else {
                        fs::remove_file(&to)?;
                    }
                }
                fs::rename(e.path(), to)?;
            }
            Ok(())
        })();
        let _ = fs::remove_dir_all(&stage);
        result?;
        if let Some(uid) = uid {
            own_tree(&vol, uid)?;
        }
        crate::store::set_mode(&vol, 0o700)
    }

    /// Write tenant `id`'s volume at `path` to `out` as a tar (see above),
    /// every entry owned by `owner` (uid, gid) when given, else as it is.
    /// Symlinks are kept as links, never followed.
    pub fn export(
        &self,
        id: &str,
        path: &str,
        out: &Path,
        owner: Option<(u64, u64)>,
    ) -> io::Result<()> {
        let vol = self.dir(id).join("volumes").join(volume_dir_name(path));
        let top = Path::new(path)
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("volume"));
        fs::create_dir_all(self.dir(id))?;
        let mut b = tar::Builder::new(fs::File::create(out)?);
        b.follow_symlinks(false);
        if !vol.is_dir() {
            // Never started: nothing written yet, an empty folder.
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            if let Some((u, g)) = owner {
                h.set_uid(u);
                h.set_gid(g);
            }
            b.append_data(&mut h, &top, io::empty())?;
            return b.finish();
        }
        let mut stack = vec![(vol.clone(), top)];
        while let Some((src, name)) = stack.pop() {
            let meta = fs::symlink_metadata(&src)?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&meta);
            if let Some((u, g)) = owner {
                h.set_uid(u);
                h.set_gid(g);
            }
            if meta.file_type().is_symlink() {
                h.set_size(0);
                b.append_link(&mut h, &name, fs::read_link(&src)?)?;
            } else if meta.is_dir() {
                h.set_size(0);
                b.append_data(&mut h, &name, io::empty())?;
                for e in fs::read_dir(&src)? {
                    let e = e?;
                    stack.push((e.path(), name.join(e.file_name())));
                }
            } else if meta.is_file() {
                b.append_data(&mut h, &name, fs::File::open(&src)?)?;
            }
        }
        b.finish()
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

/// Bytes of the files under `dir` (not following links), counting at most
/// [`SIZE_WALK_LIMIT`] entries; a missing folder is 0.
pub fn size_of(dir: &Path) -> u64 {
    let (mut total, mut seen) = (0u64, 0usize);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > SIZE_WALK_LIMIT {
                return total;
            }
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// The most entries [`size_of`] walks (a tenant's million small files
/// cost the agent no more than this).
pub const SIZE_WALK_LIMIT: usize = 200_000;

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
    fn a_volume_goes_out_and_in_as_docker_cp_makes_it() {
        let (t, d) = data("volume-io");
        let vols = d.volumes(
            "bot",
            &[VolumeSpec {
                path: "/app/user_data".into(),
            }],
        );
        d.prepare("bot", &vols, None).unwrap();
        fs::create_dir_all(vols[0].source.join("db")).unwrap();
        fs::write(vols[0].source.join("db/trades.sqlite"), "t1").unwrap();
        std::os::unix::fs::symlink("db/trades.sqlite", vols[0].source.join("link")).unwrap();
        let out = t.path().join("out.tar");
        d.export("bot", "/app/user_data", &out, Some((1000, 1000)))
            .unwrap();
        let mut names: Vec<(String, u64)> = tar::Archive::new(fs::File::open(&out).unwrap())
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().uid().unwrap(),
                )
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("user_data".to_string(), 1000),
                ("user_data/db".into(), 1000),
                ("user_data/db/trades.sqlite".into(), 1000),
                ("user_data/link".into(), 1000)
            ]
        );
        // Into another tenant: same files, a file there already replaced,
        // others kept.
        let other = d.volumes(
            "two",
            &[VolumeSpec {
                path: "/x/user_data".into(),
            }],
        );
        d.prepare("two", &other, None).unwrap();
        fs::write(other[0].source.join("keep"), "k").unwrap();
        d.import("two", "/x/user_data", &out, None).unwrap();
        let got = &other[0].source;
        assert_eq!(
            fs::read_to_string(got.join("db/trades.sqlite")).unwrap(),
            "t1"
        );
        assert_eq!(fs::read_to_string(got.join("keep")).unwrap(), "k");
        assert_eq!(
            fs::read_link(got.join("link")).unwrap(),
            Path::new("db/trades.sqlite")
        );
        assert!(!d.dir("two").join(".import").exists());
        // An archive of two top folders is refused.
        let two = t.path().join("two.tar");
        let mut b = tar::Builder::new(fs::File::create(&two).unwrap());
        for top in ["a", "b"] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, top, io::empty()).unwrap();
        }
        b.finish().unwrap();
        drop(b);
        assert!(d.import("two", "/x/user_data", &two, None).is_err());
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
