//! The sidecar's policies, decided here and applied by `crown run`'s event loop:
//! `--on-child-exit` (with the [`ResignBackoff`]), `--on-loss`, and the `--once` [`Linger`].
//! Nothing here calls the backend or the elector: each policy answers what to do.

use super::child::Exited;
use crate::cli::{OnChildExit, OnLoss};
use crate::election::{StopReason, Term};
use std::time::Duration;
use tokio::time::Instant;

/// `--on-child-exit resign`: a child that exits soon after it started would otherwise make
/// this participant resign and win again every retry period. After such a child it stays out
/// of the campaign for 1 s, doubling on every further short run up to 30 s; a child that ran
/// for [`ResignBackoff::RAN_LONG_ENOUGH`] resets it.
#[derive(Debug, Default)]
pub struct ResignBackoff {
    last: Option<Duration>,
}

impl ResignBackoff {
    /// A run at least this long resets the backoff.
    pub const RAN_LONG_ENOUGH: Duration = Duration::from_secs(10);
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    /// How long to stay out after a child that ran for `ran` (`None`: the usual hold-off of
    /// one retry period).
    pub fn after(&mut self, ran: Duration) -> Option<Duration> {
        if ran >= Self::RAN_LONG_ENOUGH {
            self.last = None;
            return None;
        }
        let d = match self.last {
            None => Self::FIRST,
            Some(d) => (d * 2).min(Self::MAX),
        };
        self.last = Some(d);
        Some(d)
    }
}

/// What to do about a child that exited on its own (`--on-child-exit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildExitAction {
    /// Nothing: `restart` is the supervisor's own; the exit belongs to a term that is over;
    /// or crown is already stopping.
    Nothing,
    /// Release and exit with this code (the child's).
    Exit(i32),
    /// Resign, with the usual hold-off of one retry period.
    Resign,
    /// Resign and stay out of the campaign this long (the child ran only briefly).
    ResignFor(Duration),
}

/// `--on-child-exit` and `--on-loss`, with the state they keep (the resign backoff).
#[derive(Debug)]
pub struct Policies {
    on_child_exit: OnChildExit,
    on_loss: OnLoss,
    backoff: ResignBackoff,
}

impl Policies {
    /// The policies the flags ask for.
    pub fn new(on_child_exit: OnChildExit, on_loss: OnLoss) -> Self {
        Policies {
            on_child_exit,
            on_loss,
            backoff: ResignBackoff::default(),
        }
    }

    /// The child of term `x.term` exited on its own; we are now in term `current`, and
    /// `stopping` says whether crown is already shutting down.
    pub fn on_child_exit(&mut self, x: &Exited, current: Term, stopping: bool) -> ChildExitAction {
        match self.on_child_exit {
            OnChildExit::Exit if !stopping => ChildExitAction::Exit(x.code),
            OnChildExit::Resign if current == x.term => match self.backoff.after(x.ran) {
                None => ChildExitAction::Resign,
                Some(d) => ChildExitAction::ResignFor(d),
            },
            _ => ChildExitAction::Nothing,
        }
    }

    /// `--on-loss exit`: whether leadership lost this way ends the process (with
    /// [`LOST_LEADERSHIP`](crate::exit::LOST_LEADERSHIP)). Only involuntary losses count.
    pub fn exits_on_loss(&self, reason: &StopReason) -> bool {
        self.on_loss == OnLoss::Exit
            && matches!(reason, StopReason::RenewDeadline | StopReason::Superseded)
    }

    /// `--once`: CMD exited 0 after its term was over, so its success was not recorded (the
    /// current leader runs it): whether that ends the process (`--on-loss exit`).
    pub fn exits_on_unrecorded_duty(&self) -> bool {
        self.on_loss == OnLoss::Exit
    }
}

/// `crown run --once`, once the duty is recorded: the lease is held a little longer, so that
/// the followers see the record (they look every retry period) and exit as followers, rather
/// than each being granted the lease in turn only to find the duty done. It is released at
/// the end of the linger or as soon as no one else is left.
#[derive(Debug, Default)]
pub struct Linger {
    until: Option<Instant>,
}

impl Linger {
    /// Starts lingering for two retry periods from now.
    pub fn start(&mut self, retry_period: Duration) {
        self.until = Some(Instant::now() + 2 * retry_period);
    }

    /// Whether we linger (then the `--once` duty checks and `--on-loss` no longer apply).
    pub fn active(&self) -> bool {
        self.until.is_some()
    }

    /// Whether the linger is over: `alone` (no other participant left), or its time is up.
    pub fn over(&self, alone: bool) -> bool {
        alone || self.until.is_some_and(|t| Instant::now() >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(term: u64, code: i32, ran_ms: u64) -> Exited {
        Exited {
            term: Term(term),
            code,
            ran: Duration::from_millis(ran_ms),
        }
    }

    #[test]
    fn the_resign_backoff_doubles_on_short_runs_and_resets_after_a_long_one() {
        let mut b = ResignBackoff::default();
        let short = Duration::from_millis(100);
        assert_eq!(b.after(short), Some(Duration::from_secs(1)));
        assert_eq!(b.after(short), Some(Duration::from_secs(2)));
        for _ in 0..10 {
            b.after(short);
        }
        assert_eq!(b.after(short), Some(Duration::from_secs(30)));
        assert_eq!(b.after(ResignBackoff::RAN_LONG_ENOUGH), None);
        assert_eq!(b.after(short), Some(Duration::from_secs(1)));
    }

    #[test]
    fn on_child_exit_follows_the_flag_and_ignores_stale_terms() {
        let mut exit = Policies::new(OnChildExit::Exit, OnLoss::Recampaign);
        assert_eq!(
            exit.on_child_exit(&exited(3, 7, 100), Term(3), false),
            ChildExitAction::Exit(7)
        );
        assert_eq!(
            exit.on_child_exit(&exited(3, 7, 100), Term(3), true),
            ChildExitAction::Nothing
        );
        let mut resign = Policies::new(OnChildExit::Resign, OnLoss::Recampaign);
        assert_eq!(
            resign.on_child_exit(&exited(3, 0, 60_000), Term(3), false),
            ChildExitAction::Resign
        );
        assert_eq!(
            resign.on_child_exit(&exited(3, 0, 100), Term(3), false),
            ChildExitAction::ResignFor(Duration::from_secs(1))
        );
        // A child of a term that is over: no resign, and the backoff is not advanced.
        assert_eq!(
            resign.on_child_exit(&exited(3, 0, 100), Term(4), false),
            ChildExitAction::Nothing
        );
        assert_eq!(
            resign.on_child_exit(&exited(4, 0, 100), Term(4), false),
            ChildExitAction::ResignFor(Duration::from_secs(2))
        );
        let mut restart = Policies::new(OnChildExit::Restart, OnLoss::Exit);
        assert_eq!(
            restart.on_child_exit(&exited(3, 1, 100), Term(3), false),
            ChildExitAction::Nothing
        );
    }

    #[test]
    fn on_loss_exit_counts_only_involuntary_losses() {
        let exit = Policies::new(OnChildExit::Exit, OnLoss::Exit);
        assert!(exit.exits_on_loss(&StopReason::RenewDeadline));
        assert!(exit.exits_on_loss(&StopReason::Superseded));
        assert!(!exit.exits_on_loss(&StopReason::Released));
        assert!(!exit.exits_on_loss(&StopReason::Shutdown));
        assert!(exit.exits_on_unrecorded_duty());
        let stay = Policies::new(OnChildExit::Exit, OnLoss::Recampaign);
        assert!(!stay.exits_on_loss(&StopReason::Superseded));
        assert!(!stay.exits_on_unrecorded_duty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_linger_ends_when_alone_or_after_two_retry_periods() {
        let mut l = Linger::default();
        assert!(!l.active());
        assert!(!l.over(false));
        l.start(Duration::from_secs(1));
        assert!(l.active());
        assert!(!l.over(false));
        assert!(l.over(true));
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(!l.over(false));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(l.over(false));
    }
}
