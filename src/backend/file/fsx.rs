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

mod dir;
mod write;

pub use write::Staged;

use crate::backend::BackendError;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
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

impl SafeDir {
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
