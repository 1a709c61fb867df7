#![warn(missing_docs)]
//! crown: leader election for Rust services, over a file lock, an etcd election or a
//! Kubernetes Lease, with fencing terms.
//!
//! An [`Elector`] campaigns for one participant ([`Identity`]) with validated timings
//! ([`Config`]) over a [`Backend`](backend::Backend). Each grant of the lease to this
//! participant comes as a [`Leadership`]: its fencing [`Term`] and a token that is cancelled
//! before the leader's renew deadline passes (so before anyone else can be granted the lease)
//! or at once on a loss, a resign or a shutdown. Do the leader's work only while it is live:
//!
//! ```no_run
//! use crown::backend::file::FileBackend;
//! use crown::{Config, Elector, Identity};
//! use std::sync::Arc;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn write_with_term(_term: crown::Term) {}
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let me = Identity::new("worker-1");
//!     // Or: crown::backend::kube::KubeBackend::with_client(client, namespace, lease, …)
//!     //     crown::backend::etcd::EtcdBackend::with_client(client, prefix, election, …)
//!     //     crown::backend::etcd::EtcdBackend::connect(options, Some(me))
//!     let backend = FileBackend::open("/run/crown".as_ref(), "reports", me.clone())?;
//!     let shutdown = CancellationToken::new(); // cancel it to release the lease and stop
//!     let (handle, _events) = Elector::new(Arc::new(backend), Config::default(), me)?
//!         .spawn(shutdown.clone());
//!     while let Some(lead) = handle.leadership().await {
//!         println!("leading in term {}", lead.term());
//!         tokio::select! {
//!             _ = lead.cancelled() => println!("term {} is over", lead.term()),
//!             _ = async {
//!                 loop {
//!                     write_with_term(lead.term()).await; // attach the fencing token
//!                 }
//!             } => {}
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! The election ends when the `shutdown` token is cancelled or the last [`ElectorHandle`] is
//! dropped (a held lease is released first). The [`Events`] stream reports every role change
//! and never holds the elector back (a slow reader gets [`Event::Lagged`]);
//! [`ElectorHandle::status`] is the current role. Runnable examples: `examples/file_leader.rs`,
//! `examples/kube_leader.rs`.
//!
//! Backend constructors, from plain data or from a client you already have (your TLS,
//! credentials, layers):
//! - file: [`FileBackend::open`](backend::file::FileBackend::open)`(dir, election, me)`;
//! - etcd: [`EtcdBackend::connect`](backend::etcd::EtcdBackend::connect)`(options, me)` or
//!   [`EtcdBackend::with_client`](backend::etcd::EtcdBackend::with_client)`(etcd_client::Client, prefix, election, me, wait)`;
//! - Kubernetes: [`KubeBackend::connect`](backend::kube::KubeBackend::connect)`(namespace, lease, election, me, wait)`
//!   or [`KubeBackend::with_client`](backend::kube::KubeBackend::with_client)`(kube::Client, namespace, lease, election, me, wait)`.
//!
//! Modules:
//! - [`election`]: the core (timings, terms, the lease rule, the elector);
//! - [`backend`]: where the lease lives: [`backend::file`] (one host), [`backend::etcd`],
//!   [`backend::kube`] (a `coordination.k8s.io/v1` Lease) and [`backend::memory`] (tests);
//! - [`exit`]: the `crown` binary's exit codes.
//!
//! Cargo features (default: all):
//! - `file`, `etcd` (needs `protoc` to build), `kube`: the backends, each on its own:
//!   `crown = { default-features = false, features = ["kube"] }` builds neither etcd-client
//!   nor ratatui nor axum;
//! - `cli`: the `crown` binary's own modules (command line, `crown run`, reports); `tui`: its
//!   dashboard (`crown tui`, `crown demo`); `sidecar`: `crown run --http` and `--notify-url`.
//!   They are not part of the library's API. The binary builds with any subset of backends and
//!   refuses one it was built without (exit code 9, [`exit::NOT_BUILT`]).

pub mod backend;
pub mod election;
pub mod exit;
pub mod once;
pub mod text;

#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod connect;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod participant;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod report;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod sidecar;
#[cfg(feature = "tui")]
#[doc(hidden)]
pub mod tui;
/// Without the dashboard, `crown run` still stamps its process for one built with it.
#[cfg(all(feature = "cli", not(feature = "tui")))]
#[doc(hidden)]
pub mod tui {
    pub mod procfs;
}

pub use election::{Config, Elector, ElectorHandle, Event, Events, Identity, Leadership, Term};
