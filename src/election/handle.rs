//! The public side of a running elector: the handle that controls it ([`ElectorHandle`]),
//! one grant of the lease ([`Leadership`]), the event stream ([`Events`]) and the status and
//! role types they carry. The state machine that feeds them is in `elector.rs`.

use super::{Event, LeaderInfo, Term};
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;

/// A participant's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Following a known leader.
    Follower,
    /// No leader known: trying to acquire.
    Candidate,
    /// Holding the lease.
    Leader,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// Requests to a running elector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Release the lease gracefully (if leading) and hold off for one retry period.
    Resign,
    /// Release the lease gracefully (if leading) and hold off for this long (at least one
    /// retry period): `--on-child-exit resign` backs off with it.
    ResignFor(Duration),
}

/// The elector's current view, for heartbeats and HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Our role.
    pub role: Role,
    /// The term we hold (leader) or last saw (follower).
    pub term: Term,
    /// The leader we know of.
    pub leader: Option<LeaderInfo>,
    /// While leading: the instant our renew deadline passes.
    pub deadline: Option<Instant>,
    /// Renewals that failed (backend errors) since start.
    pub renew_failures: u64,
}

/// How many events the stream buffers for a slow consumer before it drops the oldest (see
/// [`Events`]).
pub const EVENT_BUFFER: usize = 128;

/// Control of a running elector.
///
/// The election runs as long as at least one handle (or clone) is alive: dropping the last one
/// cancels it as a shutdown would (a held lease is released, then the elector stops and makes
/// no further backend calls).
pub struct ElectorHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) status: watch::Receiver<Status>,
    pub(super) grants: watch::Receiver<GrantSlot>,
    /// The term of the last [`Leadership`] this handle returned: [`Self::leadership`] only
    /// returns later grants.
    pub(super) last_grant: std::sync::Mutex<Term>,
}

impl Clone for ElectorHandle {
    fn clone(&self) -> Self {
        ElectorHandle {
            commands: self.commands.clone(),
            status: self.status.clone(),
            grants: self.grants.clone(),
            last_grant: std::sync::Mutex::new(
                *self.last_grant.lock().unwrap_or_else(|p| p.into_inner()),
            ),
        }
    }
}

impl std::fmt::Debug for ElectorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectorHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl ElectorHandle {
    /// Asks the leader to resign (ignored by followers).
    pub async fn resign(&self) {
        let _ = self.commands.send(Command::Resign).await;
    }

    /// Asks the leader to resign and not to campaign again for `hold_off` (at least one
    /// retry period); ignored by followers.
    pub async fn resign_for(&self, hold_off: Duration) {
        let _ = self.commands.send(Command::ResignFor(hold_off)).await;
    }

    /// A receiver of status changes.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Waits for the next grant to this participant; `None` once the elector has stopped.
    ///
    /// "Next" means a term later than the last one this handle returned: a grant still live
    /// when this is called is returned at once (so the first grant is never missed), and a
    /// caller that loops gets each grant once. See [`Leadership`].
    pub async fn leadership(&self) -> Option<Leadership> {
        let last = *self.last_grant.lock().unwrap_or_else(|p| p.into_inner());
        let mut rx = self.grants.clone();
        let lead = {
            let slot = rx
                .wait_for(|s| {
                    s.stopped
                        || s.current
                            .as_ref()
                            .is_some_and(|l| l.term > last && !l.token.is_cancelled())
                })
                .await
                .ok()?;
            if slot.stopped {
                return None;
            }
            slot.current.clone()?
        };
        let mut seen = self.last_grant.lock().unwrap_or_else(|p| p.into_inner());
        *seen = (*seen).max(lead.term);
        Some(lead)
    }
}

/// One grant of the lease to this participant: the Rust form of client-go's
/// `OnStartedLeading(ctx)`.
///
/// Do the leader's work only while [`token`](Self::token) is live, typically in a
/// `tokio::select!` against [`cancelled`](Self::cancelled), and attach [`term`](Self::term)
/// (the fencing token) to whatever it writes elsewhere. The token is cancelled no later than
/// the leader's own renew deadline (counted from when its last successful renewal was sent),
/// which comes before any other participant may be granted the lease, and at once on a
/// resign, a loss, a shutdown (the elector's shutdown token, or the last [`ElectorHandle`]
/// dropped) or a failure of the elector.
#[derive(Clone, Debug)]
pub struct Leadership {
    pub(super) term: Term,
    pub(super) token: CancellationToken,
}

impl Leadership {
    /// The fencing term of this grant.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Cancelled before the renew deadline passes, or on any loss, resign or shutdown.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Resolves when this grant is over (= `self.token().cancelled()`).
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }
}

/// What [`ElectorHandle::leadership`] watches.
#[derive(Clone, Debug, Default)]
pub(super) struct GrantSlot {
    pub(super) current: Option<Leadership>,
    pub(super) stopped: bool,
}

/// The elector's events, as returned by [`Elector::spawn`](crate::election::Elector::spawn).
///
/// Delivery never holds the elector back: events go through a buffer of [`EVENT_BUFFER`]
/// events, and a consumer that falls further behind loses the oldest ones. It then reads
/// [`Event::Lagged`] (how many it missed) before the oldest event still buffered. Renewals,
/// roles and leadership do not depend on anyone reading: use [`ElectorHandle::status`] for
/// the current state and [`ElectorHandle::leadership`] to act as leader. The stream ends
/// after the elector has stopped (and released a held lease); dropping it does not stop the
/// elector.
pub struct Events {
    pub(super) inner: BroadcastStream<Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl futures::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|e| {
            e.map(|r| match r {
                Ok(e) => e,
                Err(BroadcastStreamRecvError::Lagged(missed)) => Event::Lagged { missed },
            })
        })
    }
}
