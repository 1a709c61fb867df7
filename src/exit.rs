//! Exit codes: each kind of failure has its own, documented in the README; and [`Failure`],
//! a failure with its code.

use crate::backend::BackendError;

/// Success.
pub const OK: i32 = 0;
/// Unexpected internal error; also `crown run` whose elector failed (panicked) after it gave
/// up the lease (child stopped, lease released or abandoned).
pub const INTERNAL: i32 = 1;
/// Bad flags or arguments (clap's own code).
pub const USAGE: i32 = 2;
/// Invalid configuration (timings that break the rule, bad election name).
pub const CONFIG: i32 = 3;
/// The backend cannot be reached or used (unwritable directory, refused connection), or the
/// open-file limit is too low for `crown run` even after raising it to the hard limit.
pub const BACKEND_UNAVAILABLE: i32 = 4;
/// The stored state is unreadable (corrupt lease file, malformed Lease).
pub const CORRUPT_STATE: i32 = 5;
/// Leadership was lost and `--on-loss exit` was asked for.
pub const LOST_LEADERSHIP: i32 = 6;
/// The backend denied a verb we need (Kubernetes RBAC).
pub const FORBIDDEN: i32 = 7;
/// `crown run --wait`: not leader by the deadline (like `flock -w`, `consul lock -timeout`).
pub const WAIT_EXPIRED: i32 = 8;
/// The binary was built without what the command needs: a backend (`--backend etcd` of a
/// crown built without the `etcd` feature), the dashboard (`tui`) or the sidecar's HTTP and
/// webhooks (`sidecar`).
pub const NOT_BUILT: i32 = 9;

/// A failure with its exit code, printed as one line at the edge.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Exit code (see the constants in this module).
    pub code: i32,
    /// One-line message.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        let code = match e {
            BackendError::Unavailable(_) | BackendError::Conflict(_) => BACKEND_UNAVAILABLE,
            BackendError::Corrupt(_) => CORRUPT_STATE,
            BackendError::Invalid(_) => CONFIG,
            BackendError::Forbidden(_) => FORBIDDEN,
        };
        Failure::new(code, e.to_string())
    }
}
