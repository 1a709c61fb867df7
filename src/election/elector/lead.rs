//! The leader's step (renew before the deadline, or step down) and the step-down itself
//! (`stop`: the grant's token first, then `StoppedLeading`, the before-release hook, and the
//! release or abandon of the lease).

use super::{Ctx, Elector, State};
use crate::election::handle::{Command, Role};
use crate::election::lock::{AcquireRequest, Outcome};
use crate::election::{Event, StopReason, Term};
use std::time::Duration;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

impl Elector {
    async fn stop(&self, ctx: &mut Ctx, term: Term, reason: StopReason, write_release: bool) {
        // The leader's work stops first, before anything else may happen.
        ctx.lead = None;
        ctx.grants.send_modify(|g| g.current = None);
        ctx.status.send_modify(|s| {
            s.role = Role::Candidate;
            s.deadline = None;
            s.leader = None;
        });
        self.emit(ctx, Event::StoppedLeading { term, reason });
        if let Some((hook, bound)) = &self.before_release
            && timeout(*bound, hook(term)).await.is_err()
        {
            tracing::warn!(id = %self.me.id, term = term.0, "[{}] step-down hook still running after {bound:?} (term {term})", self.me.id);
        }
        if write_release {
            let deadline = Instant::now() + self.cfg.renew_deadline();
            match timeout_at(deadline, self.backend.release(term)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(id = %self.me.id, term = term.0, "[{}] could not release the lease (term {term}): {e}", self.me.id)
                }
                Err(_) => {
                    tracing::warn!(id = %self.me.id, term = term.0, "[{}] releasing the lease (term {term}) timed out", self.me.id)
                }
            }
        } else {
            self.backend.abandon().await;
        }
        *ctx.held.lock().expect("held lock") = None;
    }

    pub(super) async fn lead_step(
        &self,
        term: Term,
        mut last_renew: Instant,
        next_attempt: Instant,
        ctx: &mut Ctx,
    ) -> State {
        let resign = tokio::select! {
            _ = sleep_until(next_attempt) => None,
            c = ctx.commands.recv() => match c {
                Some(Command::Resign) => Some(self.cfg.retry_period()),
                Some(Command::ResignFor(d)) => Some(d.max(self.cfg.retry_period())),
                // No handle left: the election is over, as on a shutdown.
                None => {
                    let live = Instant::now() < last_renew + self.cfg.renew_deadline();
                    self.stop(ctx, term, StopReason::Shutdown, live).await;
                    return State::Done;
                }
            },
            _ = self.backend.resign_requested(term) => Some(self.cfg.retry_period()),
            _ = ctx.shutdown.cancelled() => {
                // The deadline may have passed while we were paused: then do not write.
                let live = Instant::now() < last_renew + self.cfg.renew_deadline();
                self.stop(ctx, term, StopReason::Shutdown, live).await;
                return State::Done;
            }
        };
        let now = Instant::now();
        let deadline = last_renew + self.cfg.renew_deadline();
        if now >= deadline {
            // Paused or starved past the deadline: step down without writing in this term.
            self.stop(ctx, term, StopReason::RenewDeadline, false).await;
            return self.following_after_stop();
        }
        if let Some(hold_off) = resign {
            self.stop(ctx, term, StopReason::Released, true).await;
            return State::Following {
                announced: None,
                hold_off_until: Some(Instant::now() + hold_off),
            };
        }
        let sent = now;
        let result = timeout_at(
            deadline,
            self.backend.try_acquire_or_renew(
                AcquireRequest {
                    deadline: Some(deadline),
                    ..self.req(Some(term), false)
                },
                &mut ctx.observer,
            ),
        )
        .await;
        match result {
            Ok(Ok(Outcome::Renewed { .. })) if Instant::now() < deadline => {
                last_renew = sent;
                *ctx.held.lock().expect("held lock") =
                    Some((term, sent + self.cfg.renew_deadline()));
                ctx.status
                    .send_modify(|s| s.deadline = Some(sent + self.cfg.renew_deadline()));
                let took = Instant::now().saturating_duration_since(sent);
                self.emit(ctx, Event::Renewed { term, took });
                State::Leading {
                    term,
                    last_renew,
                    next_attempt: sent + self.cfg.retry_period(),
                }
            }
            Ok(Ok(Outcome::Renewed { .. })) => {
                // Came back too late to count: step down and hand over cleanly.
                self.stop(ctx, term, StopReason::RenewDeadline, true).await;
                self.following_after_stop()
            }
            Ok(Ok(Outcome::Lost { .. } | Outcome::Following { .. } | Outcome::Acquired { .. })) => {
                self.stop(ctx, term, StopReason::Superseded, false).await;
                self.following_after_stop()
            }
            Ok(Err(e)) => {
                ctx.status.send_modify(|s| s.renew_failures += 1);
                let left = deadline.saturating_duration_since(Instant::now());
                tracing::warn!(id = %self.me.id, term = term.0, error = %e,
                    "[{}] renew failed (term {term}), {} ms left before stepping down: {e}",
                    self.me.id, left.as_millis());
                // Retry sooner than a full period, as the deadline approaches.
                let retry = (self.cfg.retry_period() / 4).max(Duration::from_millis(50));
                State::Leading {
                    term,
                    last_renew,
                    next_attempt: (Instant::now() + retry).min(deadline),
                }
            }
            Err(_) => {
                self.stop(ctx, term, StopReason::RenewDeadline, false).await;
                self.following_after_stop()
            }
        }
    }

    fn following_after_stop(&self) -> State {
        State::Following {
            announced: None,
            hold_off_until: None,
        }
    }
}
