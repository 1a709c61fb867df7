//! The writers of [`SafeDir`]: atomic replacement through a staged temp file, appended lines,
//! removals.

use super::{SafeDir, random_u64, unavailable};
use crate::backend::BackendError;
use rustix::fs::{AtFlags, FileType, OFlags};
use std::fs::File;
use std::io::{self, Write};

/// A temp file written and synced, waiting to be renamed over its name
/// ([`SafeDir::stage`]); removed if dropped uncommitted.
pub struct Staged<'d> {
    dir: &'d SafeDir,
    tmp: String,
    name: String,
    done: bool,
}

impl Staged<'_> {
    /// Renames the temp file over its name: atomic, so readers see the old or the new bytes.
    /// The directory is not synced here ([`SafeDir::sync`]).
    pub fn commit(mut self) -> Result<(), BackendError> {
        rustix::fs::renameat(
            &self.dir.fd,
            self.tmp.as_str(),
            &self.dir.fd,
            self.name.as_str(),
        )
        .map_err(|e| {
            unavailable(format!(
                "cannot write {}: {e}",
                self.dir.shown(&self.name).display()
            ))
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = rustix::fs::unlinkat(&self.dir.fd, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

impl SafeDir {
    /// Replaces `name` atomically with `bytes`: a new temp file (`O_EXCL`, unpredictable name),
    /// fsync, rename over `name`, fsync of the directory.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), BackendError> {
        self.stage(name, bytes)?.commit()?;
        self.sync();
        Ok(())
    }

    /// The slow half of [`SafeDir::write_atomic`]: `bytes` written and synced to a new temp
    /// file (`O_EXCL`, unpredictable name) that `Staged::commit` renames over `name`.
    /// Dropped uncommitted, the temp file is removed. A caller that must compare and replace
    /// under a lock stages first, so the lock covers only the rename (microseconds), never an
    /// fsync: a participant frozen (SIGSTOP) inside its locked section is then very unlikely.
    pub fn stage<'d>(&'d self, name: &str, bytes: &[u8]) -> Result<Staged<'d>, BackendError> {
        let staged = Staged {
            dir: self,
            tmp: format!(".{name}.{:016x}.tmp", random_u64()),
            name: name.to_owned(),
            done: false,
        };
        let fd = self
            .open_raw(
                &staged.tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::TRUNC,
            )?
            .expect("created");
        let mut f = File::from(fd);
        let io =
            |e: io::Error| unavailable(format!("cannot write {}: {e}", self.shown(name).display()));
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(staged)
    }

    /// fsync of the directory itself (best effort), making renames in it durable.
    pub fn sync(&self) {
        let _ = rustix::fs::fsync(&self.fd);
    }

    /// Appends `line` (which must end in `\n`) to `name`, on a fresh line even if the file
    /// ends with a torn one, and syncs it. On failure the file is cut back to its old size
    /// (best effort), so crown itself never leaves a torn line behind.
    pub fn append_line(&self, name: &str, line: &[u8]) -> Result<(), BackendError> {
        let fd = self
            .open_raw(name, OFlags::RDWR | OFlags::CREATE | OFlags::APPEND)?
            .expect("created");
        let st = self.check_file(name, &fd, false)?;
        let size = st.st_size as u64;
        let io = |e: io::Error| {
            unavailable(format!(
                "cannot append to {}: {e}",
                self.shown(name).display()
            ))
        };
        let mut buf = Vec::with_capacity(line.len() + 1);
        if size > 0 {
            let mut last = [0u8; 1];
            let n = rustix::io::pread(&fd, &mut last, size - 1).map_err(|e| io(e.into()))?;
            if n == 1 && last[0] != b'\n' {
                buf.push(b'\n');
            }
        }
        buf.extend_from_slice(line);
        let mut f = File::from(fd);
        let res = f.write_all(&buf).and_then(|_| f.sync_data());
        if let Err(e) = res {
            let _ = f.set_len(size);
            let _ = f.sync_data();
            return Err(io(e));
        }
        Ok(())
    }

    /// Removes crown's temp files (`.<prefix>….tmp`) older than a minute: left behind only by a
    /// crash between their creation and their rename.
    pub fn sweep_temps(&self, prefix: &str) {
        let Ok(names) = self.list() else { return };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        for n in names {
            if n.len() > prefix.len() + 1
                && n.starts_with('.')
                && n[1..].starts_with(prefix)
                && n.ends_with(".tmp")
                && let Ok(st) = rustix::fs::statat(&self.fd, n.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                && FileType::from_raw_mode(st.st_mode as _) == FileType::RegularFile
                && now - st.st_mtime > 60
            {
                let _ = rustix::fs::unlinkat(&self.fd, n.as_str(), AtFlags::empty());
            }
        }
    }

    /// Removes `name`; a missing file is fine.
    pub fn remove(&self, name: &str) -> Result<(), BackendError> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(unavailable(format!(
                "cannot remove {}: {e}",
                self.shown(name).display()
            ))),
        }
    }
}
