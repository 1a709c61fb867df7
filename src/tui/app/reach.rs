//! How the dashboard reaches a leader it cannot signal: the client it is given
//! ([`App::with_remote`]), the backend actions run off the loop ([`App::spawn_remote`]) and
//! how each ended ([`App::remote_done`]). The actions themselves are in [`crate::tui::remote`].

use super::App;
#[cfg(feature = "etcd")]
use crate::backend::etcd::EtcdBackend;
#[cfg(feature = "kube")]
use crate::backend::kube::KubeBackend;
use crate::tui::remote::{Done, Remote};
use crate::tui::state::{LogKind, Reach};
use nix::sys::signal::Signal;
use std::future::Future;
#[cfg(any(feature = "kube", feature = "etcd"))]
use std::sync::Arc;

impl App {
    /// `k` and `r` act through `remote` on a leader this host cannot signal.
    pub fn with_remote(self, remote: Remote) -> Self {
        match remote {
            #[cfg(feature = "kube")]
            Remote::Kube(k) => self.with_kube(k),
            #[cfg(feature = "etcd")]
            Remote::Etcd(e) => self.with_etcd(e),
        }
    }

    /// On Kubernetes: `k` deletes the leader's Pod and `r` asks it to resign through `kube`
    /// (the same backend the dashboard reads).
    #[cfg(feature = "kube")]
    pub fn with_kube(mut self, kube: Arc<KubeBackend>) -> Self {
        self.remote = Some(Remote::Kube(kube));
        self.state.reach = Reach::Kube;
        self
    }

    /// On etcd: `r` asks a leader this host cannot signal to resign through `etcd`.
    #[cfg(feature = "etcd")]
    pub fn with_etcd(mut self, etcd: Arc<EtcdBackend>) -> Self {
        self.remote = Some(Remote::Etcd(etcd));
        self.state.reach = Reach::Etcd;
        self
    }

    /// Runs a backend action in its own task (the loop never waits for the apiserver); its
    /// result comes back as [`Done`].
    pub(super) fn spawn_remote<F>(&mut self, what: String, f: impl FnOnce(Remote) -> F)
    where
        F: Future<Output = Done> + Send + 'static,
    {
        let Some(remote) = self.remote.clone() else {
            self.state.log(
                LogKind::Error,
                format!("{what}: no client to reach the leader"),
            );
            return;
        };
        self.state.log(LogKind::Action, format!("{what}…"));
        self.state.pending = Some(what);
        let tx = self.done_tx.clone();
        let fut = f(remote);
        tokio::spawn(async move {
            let _ = tx.send(fut.await);
        });
    }

    /// Shows how a backend action ended.
    pub fn remote_done(&mut self, d: Done) {
        self.state.tick(jiff::Timestamp::now());
        self.state.pending = None;
        match d {
            Done::PodDeleted { pod, term } => self.state.log(
                LogKind::Action,
                format!("deleted Pod {pod} (leader in term {term}); a follower takes over"),
            ),
            Done::SessionRevoked {
                holder,
                term,
                lease,
            } => self.state.log(
                LogKind::Action,
                format!(
                    "revoked lease {lease} of {holder} (leader in term {term}); a follower takes over once that lease's TTL has passed"
                ),
            ),
            Done::NoPod(t) => {
                let what = format!("kill -9 {} (pid {}): it runs in no Pod", t.id, t.pid);
                if self.send(&t, Signal::SIGKILL, &what)
                    && self.state.paused.as_ref().is_some_and(|p| p.pid == t.pid)
                {
                    self.state.paused = None;
                }
            }
            Done::ResignRequested { holder, term } => {
                let through = match self.state.reach {
                    Reach::Etcd => "the resign key",
                    _ => "the Lease",
                };
                self.state.log(
                    LogKind::Action,
                    format!("asked {holder} to resign term {term} through {through}"),
                )
            }
            Done::Failed(why) => self.state.log(LogKind::Warn, why),
        }
    }
}
