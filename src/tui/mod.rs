//! `crown tui` (a live dashboard that only observes) and `crown demo` (N local participants
//! plus the dashboard, or their interleaved logs without a terminal).
//!
//! - [`state`]: plain data updated from backend snapshots at an injected `now`;
//! - [`input`]: key → [`input::Action`], pure;
//! - [`render`]: `render(frame, &State)`, pure;
//! - [`app`]: the `tokio::select!` loop that reads, signals and draws;
//! - [`demo`]: the demo's child processes;
//! - [`terminal`]: raw mode and alternate screen, restored by a Drop guard and a panic hook.
//!
//! The dashboard never writes to the screen outside ratatui: its log goes to a file.

pub mod app;
pub mod demo;
pub mod input;
pub mod render;
pub mod state;
pub mod terminal;

use crate::backend::file::FileBackend;
use crate::cli::{BackendKind, DemoArgs, TimingArgs, TuiArgs};
use crate::exit;
use crate::participant::{self, Failure};
use app::{App, Options};
use state::State;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Sends this process's log to `path` (appending), never to the screen.
pub fn init_file_logging(path: &Path) -> Result<(), Failure> {
    use tracing_subscriber::EnvFilter;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            Failure::new(
                exit::CONFIG,
                format!("cannot write the dashboard log {}: {e}", path.display()),
            )
        })?;
    let filter = EnvFilter::try_from_env("CROWN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .try_init();
    Ok(())
}

fn config(t: &TimingArgs) -> Result<crate::election::Config, Failure> {
    t.config()
        .map_err(|e| Failure::new(exit::CONFIG, e.to_string()))
}

fn new_state(election: &str, backend: String, demo: bool, t: &TimingArgs, log: &Path) -> State {
    let mut s = State::new(
        election,
        &backend,
        &participant::hostname(),
        demo,
        jiff::Timestamp::now(),
    );
    s.retry_period = t.retry_period;
    s.lease_duration = t.lease_duration;
    s.tz = jiff::tz::TimeZone::system();
    s.log_path = Some(log.display().to_string());
    s
}

/// `crown tui`.
pub async fn run_tui(args: TuiArgs) -> Result<i32, Failure> {
    config(&args.timing)?;
    let log = args
        .log_file
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("crown-tui.log"));
    init_file_logging(&log)?;
    let backend = participant::observe_backend(&args.backend).await?;
    let state = new_state(
        &args.backend.election,
        format!("{} {}", backend.kind(), args.backend.location()),
        false,
        &args.timing,
        &log,
    );
    let headless = !std::io::stdout().is_terminal();
    // No children: keep the sender so the exit channel stays open and silent.
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    App::new(backend, state, None)
        .run(
            Options {
                refresh: args.refresh,
                headless,
                duration: None,
                chaos: None,
            },
            rx,
        )
        .await
}

/// The timing flags that reproduce `t` on a child's command line.
pub fn timing_flags(t: &TimingArgs) -> Vec<String> {
    vec![
        "--lease-duration".into(),
        format!("{}ms", t.lease_duration.as_millis()),
        "--renew-deadline".into(),
        format!("{}ms", t.renew_deadline.as_millis()),
        "--retry-period".into(),
        format!("{}ms", t.retry_period.as_millis()),
    ]
}

/// `crown demo`.
pub async fn run_demo(args: DemoArgs) -> Result<i32, Failure> {
    if args.backend == BackendKind::Kube {
        return Err(Failure::new(
            exit::CONFIG,
            "crown demo starts its participants on this machine: use --backend file or etcd (for Kubernetes, deploy k8s/ and watch with `crown tui --backend kube`)",
        ));
    }
    config(&args.timing)?;
    crate::backend::validate_election_name(&args.election)?;
    std::fs::create_dir_all(&args.dir).map_err(|e| {
        Failure::new(
            exit::BACKEND_UNAVAILABLE,
            format!("cannot create directory {}: {e}", args.dir.display()),
        )
    })?;
    // Absolute, so the participants' command lines name it (`make kill-demo` finds them).
    let dir = std::fs::canonicalize(&args.dir).unwrap_or_else(|_| args.dir.clone());
    let args = DemoArgs { dir, ..args };
    let log = args.dir.join("crown-tui.log");
    init_file_logging(&log)?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot find this executable: {e}")))?;
    let (backend, location, child_backend): (
        Arc<dyn crate::backend::Backend>,
        String,
        Vec<String>,
    ) = match args.backend {
        BackendKind::Etcd => {
            let observe = crate::cli::BackendArgs {
                backend: BackendKind::Etcd,
                dir: args.dir.clone(),
                election: args.election.clone(),
                namespace: "default".into(),
                lease_name: None,
                etcd: args.etcd.clone(),
                wait_for_backend: std::time::Duration::from_secs(10),
            };
            let b = crate::participant::observe_backend(&observe).await?;
            (b, observe.location(), args.etcd.to_flags())
        }
        _ => (
            Arc::new(FileBackend::observe(&args.dir, &args.election)?),
            format!("file {}", args.dir.display()),
            vec!["--dir".into(), args.dir.to_string_lossy().into_owned()],
        ),
    };
    let headless = args.headless || !std::io::stdout().is_terminal();
    let state = new_state(&args.election, location, true, &args.timing, &log);
    let (demo, exits) = demo::Demo::new(exe, &args.dir, &args.election, timing_flags(&args.timing));
    let mut demo = demo.with_backend(args.backend.name(), child_backend);
    for _ in 0..args.participants {
        demo.spawn_next().map_err(|e| {
            Failure::new(exit::INTERNAL, format!("cannot start a participant: {e}"))
        })?;
    }
    if headless {
        println!(
            "demo | {} participant(s) in {} (logs: <id>.log there){}; Ctrl-C to stop",
            args.participants,
            args.dir.display(),
            if args.chaos {
                format!(
                    ", chaos: kill -9 the leader every {}",
                    state::fmt_duration(args.chaos_interval)
                )
            } else {
                String::new()
            }
        );
    }
    App::new(backend, state, Some(demo))
        .run(
            Options {
                refresh: args.refresh,
                headless,
                duration: args.duration,
                chaos: args.chaos.then_some(args.chaos_interval),
            },
            exits,
        )
        .await
}
