//! A crown built without the `sidecar` feature: `main` refuses `--http` and `--notify-url`
//! (exit code 9) before `crown run` starts, so these stand-ins keep `crown run`'s code the same
//! but never serve, send or count anything.

/// Stand-in for the `--http` endpoint.
pub mod http {
    use crate::election::{Config, Status};
    use std::sync::Arc;
    use tokio::sync::watch;

    pub use super::metrics::Metrics;

    /// What the handlers would read.
    pub struct AppState {
        /// The elector's status.
        pub status: watch::Receiver<Status>,
        /// Event counters.
        pub metrics: Arc<Metrics>,
        /// Election name.
        pub election: String,
        /// Timings.
        pub cfg: Config,
    }

    /// Refuses: this crown has no HTTP endpoint.
    pub fn listen(_addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        Err(std::io::Error::other(
            "this crown was built without the sidecar feature (--http)",
        ))
    }

    /// Never called ([`listen`] refuses); ends at once.
    pub fn serve(
        _listener: tokio::net::TcpListener,
        _state: Arc<AppState>,
        _shutdown: tokio_util::sync::CancellationToken,
        _max_connections: usize,
        _limits: crate::sidecar::fds::Limits,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async {})
    }
}

/// Stand-in for the metrics.
pub mod metrics {
    use crate::election::Event;

    /// The webhook's counters (none).
    #[derive(Clone, Debug, Default)]
    pub struct WebhookCounters;

    /// The participant's metrics (none are kept).
    #[derive(Debug, Default)]
    pub struct Metrics {
        _none: (),
    }

    impl Metrics {
        /// The counters to hand to the webhook task.
        pub fn webhook(&self) -> WebhookCounters {
            WebhookCounters
        }

        /// Records nothing.
        pub fn observe(&self, _ev: &Event) {}
    }
}

/// Stand-in for the webhook sender.
pub mod notify {
    use super::metrics::WebhookCounters;
    use crate::election::Event;
    use std::time::Duration;

    /// Never sends (`main` refuses `--notify-url`).
    pub struct Notifier;

    impl Notifier {
        /// A sender that sends nothing.
        pub fn spawn(_url: String, _id: String, _election: String, _c: WebhookCounters) -> Self {
            Notifier
        }

        /// Sends nothing.
        pub fn observe(&self, _ev: &Event) {}

        /// Nothing to wait for.
        pub async fn finish(self, _bound: Duration) {}
    }
}
