//! What the dashboard's keys may act on: the confirmed targets of signals and the plans for
//! `k` and `r` on each backend. Pure decisions over [`State`]; the I/O is in `tui::app`.

use super::State;
use crate::election::{ProcessStamp, Role, Term};

/// A process the dashboard may signal: a pid confirmed by a heartbeat, with what identifies
/// the process (checked against `/proc` again right before any signal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Participant id.
    pub id: String,
    /// Its pid.
    pub pid: u32,
    /// What its heartbeat says identifies the process.
    pub stamp: ProcessStamp,
}

/// What the dashboard can reach besides processes on this host, by backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    /// Signals to confirmed local processes only (file backend).
    #[default]
    Local,
    /// Kubernetes: `k` deletes the leader's Pod, `r` asks it to resign through the Lease;
    /// `p` is local only.
    Kube,
    /// etcd: a leader on another host has its session revoked by `k` and is asked to resign
    /// through the `…:resign` key by `r` (signals to a confirmed local one); `p` is local only.
    Etcd,
}

/// What `k` (then `y`) does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillPlan {
    /// SIGKILL a confirmed participant process on this host.
    Signal(Target),
    /// Delete the leader's Pod through the apiserver.
    DeletePod(PodKill),
    /// Revoke the leader's session lease through etcd (`fallback` is always `None`).
    RevokeSession(PodKill),
}

/// The leader's Pod to delete (checked by the apiserver call: same holder and term, crown's
/// label). When the holder names no Pod (crown runs on this host outside a Pod) and
/// `fallback` is a confirmed local process, that process is SIGKILLed instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodKill {
    /// Holder identity = the Pod's name.
    pub holder: String,
    /// The term it holds.
    pub term: Term,
    /// The confirmed local process of that leader, if any.
    pub fallback: Option<Target>,
}

/// What `r` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResignPlan {
    /// SIGUSR1 a confirmed participant process on this host.
    Signal(Target),
    /// Ask the holder of `term` to resign through the backend (the Lease annotation).
    Request {
        /// The leader asked.
        holder: String,
        /// The term to resign; the request is ignored by any other term.
        term: Term,
    },
}

/// Why a key does nothing right now (shown greyed in the footer), or what it acts on.
pub type Availability = Result<Target, String>;

impl State {
    /// The leader, if the dashboard may signal it. A pid named by the lease alone is never
    /// enough: the leader's own heartbeat must confirm it (same id and pid, on this host,
    /// saying it leads in the lease's term, with what identifies its process), its id must not
    /// be shared by two processes, and the live process must match (checked by the snapshot
    /// reader and again right before any signal).
    pub fn leader_target(&self) -> Availability {
        let Some(l) = &self.leader else {
            return Err("no leader".into());
        };
        match l.host.as_deref() {
            Some(h) if h == self.host => {}
            Some(h) => return Err(format!("leader on {h}")),
            None => {}
        }
        let Some(v) = self.members.iter().find(|m| m.member.id == l.id) else {
            return Err(format!("no heartbeat of {} confirms its pid", l.id));
        };
        let m = &v.member;
        if m.host != self.host {
            return Err(format!("leader on {}", m.host));
        }
        if let Some(pids) = self.duplicate_pids(&l.id) {
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            return Err(format!("duplicate id {} (pids {})", l.id, pids.join(", ")));
        }
        if let Some(pid) = l.pid
            && pid != m.pid
        {
            return Err(format!(
                "lease names pid {pid}, heartbeat of {} pid {}",
                l.id, m.pid
            ));
        }
        if m.role != Role::Leader || m.term != l.term {
            return Err(format!(
                "heartbeat of {} says {} in term {}, not leader in term {}",
                l.id, m.role, m.term, l.term
            ));
        }
        let Some(stamp) = &m.process else {
            return Err(format!(
                "heartbeat of {} does not identify its process (older crown)",
                l.id
            ));
        };
        if v.alive == Some(false) {
            return Err(format!("pid {} is gone", m.pid));
        }
        if let Some(why) = self.mismatched.get(&m.pid) {
            return Err(why.clone());
        }
        Ok(Target {
            id: l.id.clone(),
            pid: m.pid,
            stamp: stamp.clone(),
        })
    }

    /// What `k` would kill by a signal (chaos mode uses this).
    pub fn kill_target(&self) -> Availability {
        self.leader_target()
    }

    /// What `k` does. On Kubernetes the leader's Pod is deleted, even when its process runs
    /// on this host (a test kubelet): a killed container is restarted in the same Pod, the
    /// Pod is what Kubernetes manages and what `kubectl delete pod` would remove. A confirmed
    /// local process is the fallback for a holder that names no Pod (crown run on this host
    /// with `--backend kube`). Elsewhere, a confirmed local process only.
    pub fn kill_plan(&self) -> Result<KillPlan, String> {
        match self.reach {
            Reach::Kube => {
                if let Some(p) = &self.pending {
                    return Err(format!("waiting for {p}"));
                }
                let Some(l) = &self.leader else {
                    return Err("no leader".into());
                };
                Ok(KillPlan::DeletePod(PodKill {
                    holder: l.id.clone(),
                    term: l.term,
                    fallback: self.leader_target().ok(),
                }))
            }
            // A confirmed local process is killed for real; a leader elsewhere has its session
            // revoked (a crown successor waits out its TTL, so it has stopped acting first).
            Reach::Etcd => match self.leader_target() {
                Ok(t) => Ok(KillPlan::Signal(t)),
                Err(why) if self.paused.is_some() => Err(why),
                Err(_) => {
                    if let Some(p) = &self.pending {
                        return Err(format!("waiting for {p}"));
                    }
                    let Some(l) = &self.leader else {
                        return Err("no leader".into());
                    };
                    Ok(KillPlan::RevokeSession(PodKill {
                        holder: l.id.clone(),
                        term: l.term,
                        fallback: None,
                    }))
                }
            },
            Reach::Local => self.leader_target().map(KillPlan::Signal),
        }
    }

    /// A refusal of a key that only signals processes on this host, saying so when there is
    /// a leader it cannot reach.
    fn local_only(&self, why: String) -> String {
        if self.leader.is_some() {
            format!("{why}; local only")
        } else {
            why
        }
    }

    /// What `p` would pause (or resume, when something is paused): a confirmed process on
    /// this host, on every backend (there is no remote pause).
    pub fn pause_target(&self) -> Availability {
        match &self.paused {
            Some(t) => Ok(t.clone()),
            None => match self.reach {
                Reach::Local => self.leader_target(),
                Reach::Kube | Reach::Etcd => self.leader_target().map_err(|w| self.local_only(w)),
            },
        }
    }

    /// What `r` does. On Kubernetes always the resign request on the Lease (it reaches the
    /// holder wherever it runs, names the term, and a stale one is ignored), never SIGUSR1. On
    /// etcd SIGUSR1 to a confirmed process on this host, else the resign request through the
    /// `…:resign` key (a crown leader anywhere honours it; etcd refuses it for a foreign one).
    pub fn resign_plan(&self) -> Result<ResignPlan, String> {
        let request = || {
            if let Some(p) = &self.pending {
                return Err(format!("waiting for {p}"));
            }
            let Some(l) = &self.leader else {
                return Err("no leader".into());
            };
            if let Some(p) = &self.paused
                && p.id == l.id
            {
                return Err("leader is paused".into());
            }
            Ok(ResignPlan::Request {
                holder: l.id.clone(),
                term: l.term,
            })
        };
        match self.reach {
            Reach::Kube => request(),
            Reach::Etcd => match self.resign_target() {
                Ok(t) => Ok(ResignPlan::Signal(t)),
                Err(why) if self.paused.is_some() => Err(why),
                Err(_) => request(),
            },
            Reach::Local => self.resign_target().map(ResignPlan::Signal),
        }
    }

    /// What `r` would ask to resign.
    pub fn resign_target(&self) -> Availability {
        let t = self.leader_target()?;
        if self.paused.as_ref().is_some_and(|p| p.pid == t.pid) {
            return Err("leader is paused".into());
        }
        Ok(t)
    }

    /// Whether `n` may start a participant.
    pub fn spawn_available(&self) -> Result<(), String> {
        if self.demo {
            Ok(())
        } else {
            Err("demo only".into())
        }
    }
}
