//! The follower's step: campaign (try to acquire) each retry period, or at once when the
//! lease changes, and report who leads.

use super::{Ctx, Elector, State};
use crate::election::handle::{Leadership, Role, Status};
use crate::election::lock::{BackendError, Outcome};
use crate::election::{Event, LeaderInfo, Term};
use std::time::Duration;
use tokio::time::{Instant, sleep};

impl Elector {
    pub(super) async fn follow_step(
        &self,
        mut announced: Option<Option<(String, Term)>>,
        hold_off_until: Option<Instant>,
        ctx: &mut Ctx,
    ) -> State {
        if ctx.shutdown.is_cancelled() {
            return State::Done;
        }
        let req = self.req(None, hold_off_until.is_some_and(|t| Instant::now() < t));
        let attempt_at = req.now;
        let result = tokio::select! {
            r = self.backend.try_acquire_or_renew(req, &mut ctx.observer) => r,
            _ = ctx.shutdown.cancelled() => return State::Done,
        };
        let mut wait = self.cfg.retry_period();
        if result.is_ok()
            && let Some((since, _, n)) = ctx.follow_errors.take()
        {
            tracing::info!(id = %self.me.id, "[{}] backend answers again after {} ms ({n} more errors)",
                self.me.id, since.elapsed().as_millis());
        }
        match result {
            Ok(Outcome::Acquired { term, .. }) => {
                *ctx.held.lock().expect("held lock") =
                    Some((term, attempt_at + self.cfg.renew_deadline()));
                let renew_failures = ctx.status.borrow().renew_failures;
                ctx.status.send_replace(Status {
                    role: Role::Leader,
                    term,
                    leader: Some(LeaderInfo {
                        id: self.me.id.clone(),
                        term,
                        pid: Some(self.me.pid),
                        host: Some(self.me.host.clone()),
                        since: Some(jiff::Timestamp::now()),
                    }),
                    deadline: Some(attempt_at + self.cfg.renew_deadline()),
                    renew_failures,
                });
                let token = ctx.shutdown.child_token();
                ctx.lead = Some(token.clone().drop_guard());
                ctx.grants
                    .send_modify(|g| g.current = Some(Leadership { term, token }));
                self.emit(ctx, Event::StartedLeading { term });
                return State::Leading {
                    term,
                    last_renew: attempt_at,
                    next_attempt: attempt_at + self.cfg.retry_period(),
                };
            }
            Ok(Outcome::Following { leader, recheck_in }) => {
                if let Some(r) = recheck_in {
                    // Wake just after the lease would expire by our clock.
                    wait = wait.min(r + Duration::from_millis(1));
                }
                let key = leader.as_ref().map(|l| (l.id.clone(), l.term));
                if announced.as_ref() != Some(&key) {
                    let (role, term) = match &leader {
                        Some(l) => (Role::Follower, l.term),
                        None => (Role::Candidate, ctx.status.borrow().term),
                    };
                    let renew_failures = ctx.status.borrow().renew_failures;
                    ctx.status.send_replace(Status {
                        role,
                        term,
                        leader: leader.clone(),
                        deadline: None,
                        renew_failures,
                    });
                    let ev = match &leader {
                        Some(l) => Event::NewLeader {
                            id: l.id.clone(),
                            term: l.term,
                        },
                        None => Event::NoLeader,
                    };
                    self.emit(ctx, ev);
                    announced = Some(key);
                }
            }
            Ok(Outcome::Renewed { .. } | Outcome::Lost { .. }) => {}
            Err(BackendError::Forbidden(message)) => {
                self.emit(ctx, Event::Fatal { message });
                return State::Done;
            }
            Err(e) => {
                // One line when errors start, then one summary a minute while they last.
                let now = Instant::now();
                match &mut ctx.follow_errors {
                    None => {
                        ctx.follow_errors = Some((now, now, 0));
                        tracing::warn!(id = %self.me.id, error = %e, "[{}] backend error while following: {e}", self.me.id);
                    }
                    Some((since, last, n)) => {
                        *n += 1;
                        if now.duration_since(*last) >= Duration::from_secs(60) {
                            tracing::warn!(id = %self.me.id, error = %e,
                                "[{}] backend errors while following for {} s ({} more; last: {e})",
                                self.me.id, now.duration_since(*since).as_secs(), n);
                            *last = now;
                            *n = 0;
                        }
                    }
                }
            }
        }
        if let Some(t) = hold_off_until {
            let now = Instant::now();
            if t > now {
                wait = wait.min(t - now);
            }
        }
        tokio::select! {
            _ = sleep(wait) => {}
            _ = self.backend.changed() => {}
            // Commands mean nothing to a follower; no handle left ends the election.
            c = ctx.commands.recv() => if c.is_none() { return State::Done },
            _ = ctx.shutdown.cancelled() => return State::Done,
        }
        State::Following {
            announced,
            hold_off_until: hold_off_until.filter(|t| *t > Instant::now()),
        }
    }
}
