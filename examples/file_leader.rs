//! A minimal leader loop on the file backend (participants on one host).
//!
//! ```text
//! cargo run --example file_leader -- [--dir DIR] [--election NAME] [--id ID] [--once]
//! ```
//!
//! Run it in two terminals: one leads and works, the other waits; stop the leader (Ctrl-C)
//! and the other takes over at once. With `--once` it exits after its first term has done
//! three rounds of work, releasing the lease.

use crown::backend::file::FileBackend;
use crown::{Config, Elector, Identity, Term};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dir = std::env::temp_dir().join("crown-example");
    let mut election = "example".to_string();
    let mut id = format!("example-{}", std::process::id());
    let mut once = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().ok_or("--dir needs a value")?.into(),
            "--election" => election = args.next().ok_or("--election needs a value")?,
            "--id" => id = args.next().ok_or("--id needs a value")?,
            "--once" => once = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }

    let me = Identity::new(id);
    let backend = FileBackend::open(&dir, &election, me.clone())?;
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        });
    }
    let (handle, _events) =
        Elector::new(Arc::new(backend), Config::default(), me.clone())?.spawn(shutdown.clone());
    println!("{} campaigning in {} ({})", me.id, election, dir.display());

    // One turn per grant; `None` once the elector has stopped (and released the lease).
    while let Some(lead) = handle.leadership().await {
        let term = lead.term();
        println!("{} leads in term {term}", me.id);
        tokio::select! {
            _ = lead.cancelled() => println!("{} stopped leading (term {term})", me.id),
            _ = work(term, once.then_some(3)) => shutdown.cancel(),
        }
    }
    println!("{} stopped", me.id);
    Ok(())
}

/// The leader's work, each round tagged with the fencing term: `rounds` rounds, or forever.
/// Dropped at once when the term ends.
async fn work(term: Term, rounds: Option<u32>) {
    let mut round = 0u64;
    while rounds.is_none_or(|n| round < u64::from(n)) {
        round += 1;
        println!("  working in term {term} (round {round})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
