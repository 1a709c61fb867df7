//! Exit codes: each kind of failure has its own, documented in the README.

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
