//! The pure election core: timings ([`Config`]), the fencing token ([`Term`]), the lease
//! record every record-based backend stores, the decision rule ([`lease::decide`]) and the
//! state machine that turns backend answers into [`Event`]s ([`Elector`]).
//!
//! Nothing here touches files or sockets, nor imports from the backends: the [`Elector`]
//! talks to a [`Lock`] trait object (see [`lock`]) and uses tokio's clock, so the whole core is
//! tested on paused time with the in-memory backend.

mod config;
mod elector;
mod handle;
pub mod lease;
pub mod lock;

pub use config::{Config, ConfigError};
pub use elector::{BeforeRelease, Elector};
pub use handle::{Command, EVENT_BUFFER, ElectorHandle, Events, Leadership, Role, Status};
pub use lock::{AcquireRequest, BackendError, Lock, Outcome};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The fencing token: strictly increasing with every grant of the lease within one election,
/// never reused. Anything a leader writes elsewhere should carry it, so that the receiver can
/// reject writes from a leader whose term has been superseded.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Term(pub u64);

impl Term {
    /// The term after this one.
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }

    /// The term after this one, or `None` at `u64::MAX` (terms never wrap).
    pub fn checked_next(self) -> Option<Term> {
        self.0.checked_add(1).map(Term)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who a participant is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Unique id within the election (`--id`, `$POD_NAME`, or `<host>-<pid>`).
    pub id: String,
    /// Process id.
    pub pid: u32,
    /// Host name (or pod name).
    pub host: String,
}

impl Identity {
    /// This process (its pid and host name) as participant `id`, which must be unique within
    /// the election (backends check its syntax: 1-63 letters, digits, `.`, `_`, `-`).
    pub fn new(id: impl Into<String>) -> Self {
        Identity {
            id: id.into(),
            pid: std::process::id(),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
        }
    }
}

/// The current leader as seen by an observer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// Holder id.
    pub id: String,
    /// Fencing token of the grant.
    pub term: Term,
    /// Holder pid, where the backend knows it.
    pub pid: Option<u32>,
    /// Holder host, where the backend knows it.
    pub host: Option<String>,
    /// When the grant was made (holder's wall clock; informational only).
    pub since: Option<Timestamp>,
}

/// Why a leader stopped leading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It released the lease on request (resign).
    Released,
    /// It could not renew within the renew deadline (or was paused past it).
    RenewDeadline,
    /// The lease record shows another holder or term.
    Superseded,
    /// The participant is shutting down (and released the lease).
    Shutdown,
    /// The elector itself failed (a panic): it stopped acting and released the lease.
    Failed,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Released => "released",
            StopReason::RenewDeadline => "renew deadline passed",
            StopReason::Superseded => "superseded",
            StopReason::Shutdown => "shutdown",
            StopReason::Failed => "elector failed",
        })
    }
}

/// What the [`Elector`] reports (on its [`Events`] stream).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// This participant was granted the lease in `term` and may act as leader.
    StartedLeading {
        /// The fencing token of this grant.
        term: Term,
    },
    /// This participant renewed its lease (a leader heartbeat).
    Renewed {
        /// The term still held.
        term: Term,
        /// How long the renewal took (request sent to answer).
        took: std::time::Duration,
    },
    /// This participant stopped leading; it must not act in `term` any more.
    StoppedLeading {
        /// The term that ended.
        term: Term,
        /// Why.
        reason: StopReason,
    },
    /// Another participant leads.
    NewLeader {
        /// Its id.
        id: String,
        /// Its term.
        term: Term,
    },
    /// The lease is free (released, or expired with no successor yet).
    NoLeader,
    /// The backend refused a verb this participant needs (e.g. RBAC): campaigning cannot
    /// work until an operator fixes it, so the elector stops. Never sent while leading.
    Fatal {
        /// One line saying what is missing.
        message: String,
    },
    /// The elector task failed (it panicked): it has stepped down (`StoppedLeading` with
    /// [`StopReason::Failed`] first if it led, the before-release hook run and the lease
    /// released) and campaigns no more. The last event of the stream; `crown run` exits 1.
    Failed {
        /// What went wrong (the panic message).
        message: String,
    },
    /// This consumer read the stream too slowly and missed the `missed` oldest events
    /// (the elector never waits for a reader; see [`Events`]). The current state is in
    /// [`ElectorHandle::status`].
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
}

/// How a grant ended, as recorded by its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    /// The holder released it.
    Released,
    /// Nobody saw it renewed for the lease duration.
    Expired,
    /// The holder's process was gone (its alive lock was free).
    HolderDied,
    /// The lease record was unreadable and was replaced after the lease duration.
    Corrupt,
    /// The holder's session was revoked (etcd: its lease ended long before it could expire).
    Revoked,
}

impl fmt::Display for EndKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndKind::Released => "released",
            EndKind::Expired => "expired",
            EndKind::HolderDied => "holder died",
            EndKind::Corrupt => "corrupt record replaced",
            EndKind::Revoked => "revoked",
        })
    }
}

/// The lease record stored by record-based backends (JSON in the file backend).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Holder id; empty when released.
    pub holder: String,
    /// Fencing token of the current (or last) grant.
    pub term: Term,
    /// When the grant was made (holder's wall clock, informational).
    pub acquired_at: Timestamp,
    /// Last renewal (holder's wall clock, informational: never used to judge expiry).
    pub renewed_at: Timestamp,
    /// The holder's lease duration in milliseconds.
    pub lease_duration_ms: u64,
    /// Holder pid.
    pub pid: u32,
    /// Holder host.
    pub host: String,
    /// When it was released, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Timestamp>,
    /// Who released it, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    /// Bumped on every write: lets observers see a change even within a second.
    #[serde(default)]
    pub revision: u64,
}

impl LeaseRecord {
    /// Whether the record names a holder.
    pub fn is_held(&self) -> bool {
        !self.holder.is_empty()
    }

    /// The leader it names, if held.
    pub fn leader(&self) -> Option<LeaderInfo> {
        self.is_held().then(|| LeaderInfo {
            id: self.holder.clone(),
            term: self.term,
            pid: (self.pid != 0).then_some(self.pid),
            host: (!self.host.is_empty()).then(|| self.host.clone()),
            // The Unix epoch stands for "unknown" (a backend that cannot tell).
            since: (self.acquired_at != Timestamp::UNIX_EPOCH).then_some(self.acquired_at),
        })
    }
}

/// One grant of the lease, as kept in the leader history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Fencing token of this grant.
    pub term: Term,
    /// Who got it.
    pub holder: String,
    /// When (new holder's wall clock).
    pub acquired_at: Timestamp,
    /// Holder pid, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Holder host, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The previous holder, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_holder: Option<String>,
    /// How the previous grant ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_end: Option<EndKind>,
    /// Time without a leader before this grant, in ms (from the release, or the previous
    /// holder's last renewal, to this grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_ms: Option<u64>,
}

/// A participant's heartbeat, published every retry period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Participant id.
    pub id: String,
    /// Process id.
    pub pid: u32,
    /// Host or pod.
    pub host: String,
    /// Current role.
    pub role: Role,
    /// Term held (leader) or last seen (follower).
    pub term: Term,
    /// Last heartbeat (its wall clock).
    pub last_heartbeat: Timestamp,
    /// When the participant started.
    pub started_at: Timestamp,
    /// crown version.
    pub version: String,
    /// What identifies the process that wrote this heartbeat (absent in heartbeats of older
    /// versions): the dashboard signals `pid` only while the live process there matches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessStamp>,
}

/// What identifies a participant's process beyond its pid, which the kernel reuses: its start
/// time and the boot it runs in, and the election it campaigns in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessStamp {
    /// Start time of the process in clock ticks since boot (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` of the host it runs on.
    pub boot_id: String,
    /// The election it campaigns in.
    pub election: String,
}
