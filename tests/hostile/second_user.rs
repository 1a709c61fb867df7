//! The second local user the hostile tests act as.

#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::OnceLock;

/// The unprivileged account the tests act as.
pub const INTRUDER: &str = "crown-intruder";

/// Creates [`INTRUDER`] once (idempotent) and returns its uid. Fails the test with the reason
/// (and the command to fix it) when the tests are not root or `useradd` is missing.
pub fn intruder_uid() -> u32 {
    static UID: OnceLock<u32> = OnceLock::new();
    *UID.get_or_init(|| {
        let me = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
        assert_eq!(
            me.trim(),
            "0",
            "the hostile tests need root to create and act as a second user (run `make test` as root, as CI does)"
        );
        if uid_of(INTRUDER).is_none() {
            let out = Command::new("useradd")
                .args(["-M", "-s", "/usr/sbin/nologin", INTRUDER])
                .output()
                .unwrap_or_else(|e| panic!("useradd not runnable ({e}): apt-get install -y passwd"));
            // A concurrent test may have created it between the check and useradd (exit 9).
            assert!(
                out.status.success() || out.status.code() == Some(9),
                "useradd {INTRUDER} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        uid_of(INTRUDER).expect("second user exists after useradd")
    })
}

fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// Runs `argv` as [`INTRUDER`] (runuser) and waits for it.
pub fn as_intruder(argv: &[&str]) -> Output {
    intruder_uid();
    Command::new("runuser")
        .args(["-u", INTRUDER, "--"])
        .args(argv)
        .output()
        .expect("runuser")
}

/// A shell snippet run as [`INTRUDER`]; panics with its stderr if it fails.
pub fn intruder_sh(script: &str) -> String {
    let out = as_intruder(&["sh", "-c", script]);
    assert!(
        out.status.success(),
        "as {INTRUDER}: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `fs.protected_symlinks` set to `value` while the guard lives (restored on drop). Tests that
/// depend on it must hold [`sysctl_lock`] for their whole run.
pub struct ProtectedSymlinks(String);

impl ProtectedSymlinks {
    pub fn set(value: u8) -> ProtectedSymlinks {
        let path = "/proc/sys/fs/protected_symlinks";
        let old = std::fs::read_to_string(path).expect("read fs.protected_symlinks");
        std::fs::write(path, value.to_string()).expect("set fs.protected_symlinks (needs root)");
        ProtectedSymlinks(old.trim().to_string())
    }
}

impl Drop for ProtectedSymlinks {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/fs/protected_symlinks", &self.0);
    }
}

/// Serialises tests that change host-wide settings.
pub fn sysctl_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
