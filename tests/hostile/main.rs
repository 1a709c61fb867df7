//! Hostile neighbours and bad state (issue 12): every finding as a test that runs as root
//! against a real second, unprivileged local user. Nothing here skips: without root or
//! `useradd` the tests fail with the reason.
//!
//! One module per area; each adds its `mod` line below.

#[path = "../common/mod.rs"]
mod common;
mod file;
mod output;
mod second_user;
mod sidecar;
