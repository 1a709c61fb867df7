//! `crown run --wait`: the deadline to become leader by.

use crate::election::Event;
use crate::exit;

/// `crown run --wait`: the deadline to become leader by, once.
pub(super) struct WaitLimit {
    /// The deadline, while it still matters (not yet leader, not yet given up).
    deadline: Option<tokio::time::Instant>,
    /// What was asked, for the log line.
    asked: std::time::Duration,
    /// Whether one campaign attempt has concluded (we know a leader, or that there is none).
    attempted: bool,
    /// Whether we gave up (the lease, if granted meanwhile, is released at once).
    pub(super) gave_up: bool,
    /// The latest we wait when no attempt concludes (the backend keeps failing).
    cap: std::time::Duration,
}

impl WaitLimit {
    pub(super) fn new(
        wait: Option<std::time::Duration>,
        lease_duration: std::time::Duration,
    ) -> Self {
        WaitLimit {
            deadline: wait.map(|w| tokio::time::Instant::now() + w),
            asked: wait.unwrap_or_default(),
            attempted: false,
            gave_up: false,
            cap: lease_duration,
        }
    }

    /// Whether the deadline still matters.
    pub(super) fn pending(&self) -> bool {
        self.deadline.is_some() && !self.gave_up
    }

    /// Resolves when we must give up: at the deadline once an attempt has concluded (so
    /// `--wait 0` tries once), or one lease duration later if none does.
    pub(super) async fn expired(&self) {
        match self.deadline {
            Some(d) if self.attempted => tokio::time::sleep_until(d).await,
            Some(d) => tokio::time::sleep_until(d + self.cap).await,
            None => std::future::pending().await,
        }
    }

    /// Notes an event; true if it means giving up now (an attempt concluded without the lease
    /// at or after the deadline).
    pub(super) fn observe(&mut self, ev: &Event) -> bool {
        if !self.pending() {
            return false;
        }
        match ev {
            Event::StartedLeading { .. } => {
                self.deadline = None;
                false
            }
            Event::NewLeader { .. } | Event::NoLeader => {
                self.attempted = true;
                self.deadline
                    .is_some_and(|d| tokio::time::Instant::now() >= d)
            }
            _ => false,
        }
    }

    pub(super) fn give_up(&mut self, id: &str) {
        self.gave_up = true;
        tracing::info!(
            event = "wait_expired",
            id,
            "[{id}] not leader within --wait {}: giving up (exit code {})",
            humantime::format_duration(self.asked),
            exit::WAIT_EXPIRED
        );
    }
}
