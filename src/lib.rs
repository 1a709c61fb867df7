//! crown: a leader-election kit you can watch.
//!
//! - [`election`]: the pure core (timings, terms, the lease rule, the state machine);
//! - [`backend`]: where the lease lives (file, memory; etcd and Kubernetes in later modules);
//! - [`participant`]: `crown run`, wiring an elector to logs, heartbeats and signals;
//! - [`report`]: `crown status` and `crown history` output;
//! - [`tui`]: `crown tui`, the live dashboard, and `crown demo`;
//! - [`sidecar`]: a child process while leading, HTTP status and metrics, a webhook;
//! - [`cli`]: the command line.

pub mod backend;
pub mod cli;
pub mod election;
pub mod exit;
pub mod once;
pub mod participant;
pub mod report;
pub mod sidecar;
pub mod tui;

pub use election::{Config, Elector, ElectorHandle, Event, Events, Identity, Leadership, Term};
