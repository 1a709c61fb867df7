//! The directory checks: opening a directory or subdirectory and verifying it, its ancestors
//! and its sharing policy.

use super::{SafeDir, Sharing, describe_uid, kind_name, unavailable};
use crate::backend::BackendError;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::io;
use std::path::Path;

fn our_groups() -> Vec<u32> {
    let mut g: Vec<u32> = rustix::process::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    g.push(rustix::process::getegid().as_raw());
    g
}

/// Checks that no ancestor of `dir` (canonical) can be replaced by another user: each is owned
/// by root or us and not writable by group or others unless it has the sticky bit.
fn check_ancestors(dir: &Path, euid: u32) -> Result<(), BackendError> {
    for a in dir.ancestors() {
        let st = match rustix::fs::stat(a) {
            Ok(st) => st,
            Err(e) => return Err(unavailable(format!("cannot inspect {}: {e}", a.display()))),
        };
        let mode = st.st_mode as u32;
        let uid = st.st_uid;
        let sticky = mode & 0o1000 != 0;
        if (uid != 0 && uid != euid) || (mode & 0o022 != 0 && !sticky) {
            return Err(unavailable(format!(
                "refusing {}: its parent {} is owned by {} with mode {:04o}; another user could swap the directory (use a directory whose parents are owned by root or you and not writable by others)",
                dir.display(),
                a.display(),
                describe_uid(uid),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

impl SafeDir {
    /// Opens (creating it 0700 if `create` and missing) and verifies the directory `path`.
    /// A missing directory with `create == false` is `Ok(None)`.
    pub fn open(path: &Path, create: bool) -> Result<Option<SafeDir>, BackendError> {
        let euid = rustix::process::geteuid().as_raw();
        if create {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
            {
                Ok(()) => {}
                // A symlink or a non-directory: reported with its owner and mode below.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(unavailable(format!(
                        "cannot create directory {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| unavailable(format!("cannot resolve {}: {e}", path.display())))?
                .join(path)
        };
        let (parent, name) = match (abs.parent(), abs.file_name()) {
            (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
            // `/`, or a path ending in `..`: resolve it fully (no last component to protect).
            _ => {
                let c = std::fs::canonicalize(&abs)
                    .map_err(|e| unavailable(format!("cannot resolve {}: {e}", path.display())))?;
                match (c.parent(), c.file_name()) {
                    (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
                    _ => {
                        return Err(unavailable(format!(
                            "refusing {}: not a directory crown can own",
                            path.display()
                        )));
                    }
                }
            }
        };
        let parent = match std::fs::canonicalize(&parent) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => {
                return Err(unavailable(format!(
                    "cannot resolve {}: {e}",
                    parent.display()
                )));
            }
        };
        let pfd = rustix::fs::open(
            &parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| unavailable(format!("cannot open {}: {e}", parent.display())))?;
        let shown = parent.join(&name);
        let fd = match rustix::fs::openat(
            &pfd,
            name.as_os_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) if !create => return Ok(None),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                let what = rustix::fs::statat(&pfd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| {
                        format!(
                            "is a {} owned by {}",
                            kind_name(st.st_mode),
                            describe_uid(st.st_uid)
                        )
                    })
                    .unwrap_or_else(|_| "is not a directory".into());
                return Err(unavailable(format!(
                    "refusing {}: it {what}, not a directory (crown never follows a symlink for its directory)",
                    shown.display()
                )));
            }
            Err(e) => {
                return Err(unavailable(format!(
                    "cannot open directory {}: {e}",
                    shown.display()
                )));
            }
        };
        check_ancestors(&parent, euid)?;
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| unavailable(format!("cannot inspect {}: {e}", shown.display())))?;
        let sharing = dir_policy(&shown, st.st_uid, st.st_gid, st.st_mode as u32, euid)?;
        Ok(Some(SafeDir {
            fd,
            path: shown,
            sharing,
            euid,
        }))
    }

    /// Opens (or with `create`, creates) the subdirectory `name` and verifies it like its
    /// parent. `Ok(None)` if it is missing and `create` is false.
    pub fn subdir(&self, name: &str, create: bool) -> Result<Option<SafeDir>, BackendError> {
        let shown = self.shown(name);
        if create {
            let mode = if self.sharing == Sharing::Private {
                0o700
            } else {
                0o2770
            };
            match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
                Ok(()) => {
                    if let Sharing::Group(_) = self.sharing
                        && let Ok(fd) = rustix::fs::openat(
                            &self.fd,
                            name,
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                            Mode::empty(),
                        )
                    {
                        // The umask may have removed the group bits.
                        let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode));
                    }
                }
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => {
                    return Err(unavailable(format!(
                        "cannot create {}: {e}",
                        shown.display()
                    )));
                }
            }
        }
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) if !create => return Ok(None),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                return Err(self.not_regular(name, "a directory"));
            }
            Err(e) => {
                return Err(unavailable(format!("cannot open {}: {e}", shown.display())));
            }
        };
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| unavailable(format!("cannot inspect {}: {e}", shown.display())))?;
        let sharing = match self.sharing {
            // Inside a verified share any member may have created it: it must stay a share.
            Sharing::Group(g) => {
                let perm = st.st_mode as u32 & 0o7777;
                if st.st_gid != g || perm & 0o2070 != 0o2070 || perm & 0o007 != 0 {
                    return Err(unavailable(format!(
                        "refusing {}: owned by {} group {}, mode {perm:04o}; in a group share it must be setgid, group {g}, mode 2770",
                        shown.display(),
                        describe_uid(st.st_uid),
                        st.st_gid
                    )));
                }
                Sharing::Group(g)
            }
            Sharing::Private => {
                dir_policy(&shown, st.st_uid, st.st_gid, st.st_mode as u32, self.euid)?
            }
        };
        if sharing != self.sharing {
            return Err(unavailable(format!(
                "refusing {}: its sharing ({sharing:?}) differs from its parent's ({:?})",
                shown.display(),
                self.sharing
            )));
        }
        Ok(Some(SafeDir {
            fd,
            path: shown,
            sharing,
            euid: self.euid,
        }))
    }
}

/// The policy a directory's owner and mode allow, or the one-line refusal.
fn dir_policy(
    path: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
    euid: u32,
) -> Result<Sharing, BackendError> {
    let perm = mode & 0o7777;
    let setgid = mode & 0o2000 != 0;
    if uid == euid && perm & 0o022 == 0 {
        return Ok(Sharing::Private);
    }
    if setgid
        && (uid == euid || uid == 0)
        && perm & 0o070 == 0o070
        && perm & 0o007 == 0
        && (euid == 0 || our_groups().contains(&gid))
    {
        return Ok(Sharing::Group(gid));
    }
    Err(unavailable(format!(
        "refusing directory {}: owned by {} group {gid}, mode {perm:04o}; it must be owned by you ({}) and not writable by group or others, or be a group share (setgid, mode 2770, owned by you or root, a group you are in; see README \"Running on shared hosts\")",
        path.display(),
        describe_uid(uid),
        describe_uid(euid),
    )))
}
