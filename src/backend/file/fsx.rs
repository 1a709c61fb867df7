//! Safe filesystem access for the file backend: a checked directory and files opened only
//! relative to it.
//!
//! [`SafeDir`] is a directory file descriptor plus its sharing policy. The directory is opened
//! without following a symlink in its last component and verified once: owned by us and not
//! writable by anyone else ([`Sharing::Private`]), or an explicit group share
//! ([`Sharing::Group`]: setgid, `rwx` for the group, nothing for others, owned by us or root).
//! Its ancestors must be owned by root or us and not writable by others unless sticky (`/tmp`).
//!
//! Every file is then opened with `openat(dirfd, name, O_NOFOLLOW | O_NONBLOCK)` and `fstat`ed:
//! only a regular file with one link, owned by us (or by the share's group), is read or written,
//! so a symlink, FIFO, device or directory planted under one of crown's names is a clear error,
//! never a write elsewhere or a hang. Files are created 0600 (0660 in a group share); temp files
//! for atomic replacement get an unpredictable name and `O_EXCL`. Reads are bounded.

mod write;

pub use write::Staged;

use crate::backend::BackendError;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Who may use the directory besides us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// Only our user: files 0600.
    Private,
    /// The members of this group (a setgid directory, mode 2770): files 0660.
    Group(u32),
}

/// A verified directory: every file crown touches is opened relative to it.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
    sharing: Sharing,
    euid: u32,
}

/// What a bounded read found.
pub enum Bounded {
    /// The whole file, at most the limit.
    Data(Vec<u8>),
    /// Larger than the limit: not loaded. A fingerprint of its identity, size and first bytes.
    TooBig {
        /// The file's size.
        size: u64,
        /// Changes when the file is replaced or changes size.
        fingerprint: u64,
    },
}

fn unavailable(msg: String) -> BackendError {
    BackendError::Unavailable(msg)
}

/// The name of a file type, for messages.
fn kind_name(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode as _) {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "special file",
    }
}

/// `uid 1001 (name)`: the user name from /etc/passwd when there is one.
pub fn describe_uid(uid: u32) -> String {
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|t| {
        t.lines().find_map(|l| {
            let mut it = l.split(':');
            let name = it.next()?;
            (it.nth(1)? == uid.to_string()).then(|| name.to_string())
        })
    });
    match name {
        Some(n) => format!("uid {uid} ({n})"),
        None => format!("uid {uid}"),
    }
}

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

    /// The directory's path (for messages and the inotify watch).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its sharing mode.
    pub fn sharing(&self) -> Sharing {
        self.sharing
    }

    fn file_mode(&self) -> u32 {
        match self.sharing {
            Sharing::Private => 0o600,
            Sharing::Group(_) => 0o660,
        }
    }

    fn shown(&self, name: &str) -> PathBuf {
        self.path.join(name)
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

    fn not_regular(&self, name: &str, wanted: &str) -> BackendError {
        let what = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| {
                format!(
                    "a {} owned by {}",
                    kind_name(st.st_mode),
                    describe_uid(st.st_uid)
                )
            })
            .unwrap_or_else(|_| "not what crown created".into());
        unavailable(format!(
            "refusing {}: it is {what}, not {wanted} (crown only uses files it created; remove it)",
            self.shown(name).display()
        ))
    }

    /// Checks an open file: a regular file with one link, owned as the policy says. A mode
    /// narrower than ours on a file we own is fixed; a wider one is narrowed for data files, but
    /// refused for a lock file (`lock`): another user may already hold it open, and a lock fd
    /// outlives a chmod.
    fn check_file(
        &self,
        name: &str,
        fd: &OwnedFd,
        lock: bool,
    ) -> Result<rustix::fs::Stat, BackendError> {
        let st = rustix::fs::fstat(fd).map_err(|e| {
            unavailable(format!(
                "cannot inspect {}: {e}",
                self.shown(name).display()
            ))
        })?;
        let mode = st.st_mode as u32;
        if FileType::from_raw_mode(mode as _) != FileType::RegularFile {
            return Err(unavailable(format!(
                "refusing {}: it is a {}, not a regular file (crown only uses files it created; remove it)",
                self.shown(name).display(),
                kind_name(mode)
            )));
        }
        let owner_ok = match self.sharing {
            Sharing::Private => st.st_uid == self.euid,
            Sharing::Group(g) => st.st_gid == g,
        };
        if !owner_ok || st.st_nlink > 1 {
            return Err(unavailable(format!(
                "refusing {}: owned by {} group {} with {} link(s), mode {:04o}; crown only uses files it created",
                self.shown(name).display(),
                describe_uid(st.st_uid),
                st.st_gid,
                st.st_nlink,
                mode & 0o7777
            )));
        }
        let want = self.file_mode();
        if lock && mode & 0o7777 & !want != 0 {
            return Err(unavailable(format!(
                "refusing lock file {}: mode {:04o} lets other users open (and flock) it, and an fd opened earlier outlives a chmod; stop every participant of this election and remove it (crown recreates it {want:04o})",
                self.shown(name).display(),
                mode & 0o7777
            )));
        }
        if mode & 0o7777 != want {
            if st.st_uid == self.euid {
                if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(want)) {
                    return Err(unavailable(format!(
                        "cannot restrict {} to mode {want:04o}: {e}",
                        self.shown(name).display()
                    )));
                }
            } else if mode & 0o007 != 0 {
                return Err(unavailable(format!(
                    "refusing {}: mode {:04o} lets other users open it",
                    self.shown(name).display(),
                    mode & 0o7777
                )));
            }
        }
        Ok(st)
    }

    fn open_raw(&self, name: &str, flags: OFlags) -> Result<Option<OwnedFd>, BackendError> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(self.file_mode())) {
            Ok(fd) => {
                if flags.contains(OFlags::CREATE) && self.sharing != Sharing::Private {
                    // The umask may have removed the group bits of a file we just created.
                    if let Ok(st) = rustix::fs::fstat(&fd)
                        && st.st_uid == self.euid
                        && FileType::from_raw_mode(st.st_mode as _) == FileType::RegularFile
                    {
                        let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(self.file_mode()));
                    }
                }
                Ok(Some(fd))
            }
            Err(rustix::io::Errno::NOENT) if !flags.contains(OFlags::CREATE) => Ok(None),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::ISDIR | rustix::io::Errno::NXIO) => {
                Err(self.not_regular(name, "a regular file"))
            }
            Err(e) => Err(unavailable(format!(
                "cannot open {}: {e}",
                self.shown(name).display()
            ))),
        }
    }

    /// Opens the lock file `name` for reading and writing, creating it if missing.
    pub fn open_rw(&self, name: &str) -> Result<File, BackendError> {
        let fd = self
            .open_raw(name, OFlags::RDWR | OFlags::CREATE)?
            .expect("created");
        self.check_file(name, &fd, true)?;
        Ok(File::from(fd))
    }

    /// Opens an existing `name` read-only; `Ok(None)` if it is missing.
    pub fn open_read(&self, name: &str) -> Result<Option<(File, rustix::fs::Stat)>, BackendError> {
        let Some(fd) = self.open_raw(name, OFlags::RDONLY)? else {
            return Ok(None);
        };
        let st = self.check_file(name, &fd, false)?;
        Ok(Some((File::from(fd), st)))
    }

    /// Reads `name` whole if it is at most `limit` bytes; `Ok(None)` if it is missing.
    pub fn read_bounded(&self, name: &str, limit: u64) -> Result<Option<Bounded>, BackendError> {
        let Some((f, st)) = self.open_read(name)? else {
            return Ok(None);
        };
        let size = st.st_size as u64;
        let mut buf = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| unavailable(format!("cannot read {}: {e}", self.shown(name).display())))?;
        if buf.len() as u64 > limit {
            return Ok(Some(Bounded::TooBig {
                size: size.max(buf.len() as u64),
                fingerprint: fingerprint(&buf, size),
            }));
        }
        Ok(Some(Bounded::Data(buf)))
    }

    /// The names in the directory (not `.`/`..`).
    pub fn list(&self) -> Result<Vec<String>, BackendError> {
        let dir = rustix::fs::Dir::read_from(&self.fd)
            .map_err(|e| unavailable(format!("cannot list {}: {e}", self.path.display())))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry
                .map_err(|e| unavailable(format!("cannot list {}: {e}", self.path.display())))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if let Ok(s) = std::str::from_utf8(name) {
                out.push(s.to_string());
            }
        }
        Ok(out)
    }

    /// If `name` exists, it must be a regular file (`dir == false`) or a directory.
    pub fn expect_kind(&self, name: &str, dir: bool) -> Result<(), BackendError> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(unavailable(format!(
                "cannot inspect {}: {e}",
                self.shown(name).display()
            ))),
            Ok(st) => {
                let t = FileType::from_raw_mode(st.st_mode as _);
                let want = if dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                if t == want {
                    Ok(())
                } else {
                    Err(self.not_regular(name, if dir { "a directory" } else { "a regular file" }))
                }
            }
        }
    }

    /// The directory fd (for the alive-lock waiter, which reopens the alive file).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
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

/// A fingerprint of a too-big file's first bytes and size (stable within and across
/// processes, so every participant sees the same "unchanged" file).
fn fingerprint(head: &[u8], size: u64) -> u64 {
    use std::hash::Hash;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    size.hash(&mut h);
    head.hash(&mut h);
    h.finish()
}

/// 64 unpredictable bits (std's per-process random SipHash keys, mixed with time and a counter).
pub fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}
