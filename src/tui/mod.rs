//! `crown tui` (a live dashboard that only observes) and `crown demo` (N local participants
//! plus the dashboard, or their interleaved logs without a terminal).
//!
//! - [`state`]: plain data updated from backend snapshots at an injected `now`;
//! - [`input`]: key → [`input::Action`], pure;
//! - [`render`]: `render(frame, &State)`, pure;
//! - [`app`]: the `tokio::select!` loop that reads, signals and draws;
//! - [`remote`]: actions on a leader it cannot signal (delete its Pod, revoke its session,
//!   ask it to resign), through the backend's client;
//! - [`demo`]: the demo's child processes;
//! - [`terminal`]: raw mode and alternate screen, restored by a Drop guard and a panic hook;
//! - [`procfs`]: who is behind a pid, so signals reach only confirmed participants.
//!
//! The dashboard never writes to the screen outside ratatui: its log goes to a file in a
//! private directory ([`default_log_path`]), opened without following symlinks.

pub mod app;
pub mod demo;
pub mod input;
pub mod procfs;
pub mod remote;
pub mod render;
pub mod state;
pub mod terminal;

use crate::cli::{BackendKind, DemoArgs, TimingArgs, TuiArgs};
use crate::exit;
use crate::participant::{self, Failure};
use app::{App, Options};
use state::State;
use std::io::IsTerminal;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Opens `path` for appending, created 0600, without following a symlink (the last component
/// may not be one) and without blocking on a FIFO; anything but a regular file is refused.
pub fn open_append_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    use nix::libc;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other("it is a symlink (not followed)"),
            Some(libc::ENXIO) => std::io::Error::other("it is a FIFO"),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// The dashboard log's default place: `$XDG_STATE_HOME/crown/tui.log`, else
/// `~/.local/state/crown/tui.log`, else `$XDG_RUNTIME_DIR/crown/tui.log`. The `crown`
/// directory is created 0700 and must be a directory (not a symlink) of ours that nobody else
/// can write to. Never a shared, predictable name in `/tmp`.
pub fn default_log_path() -> Result<PathBuf, Failure> {
    let var = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = var("XDG_STATE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".local/state")))
        .or_else(|| var("XDG_RUNTIME_DIR"))
        .ok_or_else(|| {
            Failure::new(
                exit::CONFIG,
                "no private place for the dashboard log ($XDG_STATE_HOME, $HOME and $XDG_RUNTIME_DIR are unset): give --log-file",
            )
        })?;
    let dir = base.join("crown");
    let fail = |what: String| {
        Failure::new(
            exit::CONFIG,
            format!(
                "dashboard log directory {}: {what}; give --log-file",
                dir.display()
            ),
        )
    };
    std::fs::create_dir_all(&base).map_err(|e| fail(format!("cannot create its parent: {e}")))?;
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(format!("cannot create it: {e}"))),
    }
    let md = std::fs::symlink_metadata(&dir).map_err(|e| fail(e.to_string()))?;
    // Our effective uid: `/proc/self` belongs to it.
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| fail(format!("cannot read /proc/self: {e}")))?
        .uid();
    if !md.file_type().is_dir() {
        return Err(fail("not a directory (a symlink?)".into()));
    }
    if md.uid() != me || md.mode() & 0o022 != 0 {
        return Err(fail(format!(
            "owned by uid {} with mode {:04o}, but must be ours (uid {me}) and writable by nobody else",
            md.uid(),
            md.mode() & 0o7777
        )));
    }
    Ok(dir.join("tui.log"))
}

/// Sends this process's log to `path` (appending; see [`open_append_nofollow`]), never to the
/// screen. Control characters in messages are escaped, as in `crown run`'s text logs.
pub fn init_file_logging(path: &Path) -> Result<(), Failure> {
    let file = open_append_nofollow(path).map_err(|e| {
        Failure::new(
            exit::CONFIG,
            format!("cannot write the dashboard log {}: {e}", path.display()),
        )
    })?;
    let filter = crate::participant::log_filter(crate::participant::LOG_DEFAULT);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
            |w, field, value| {
                if field.name() == "message" {
                    write!(w, "{}", crate::text::escape(&format!("{value:?}")))
                } else {
                    write!(
                        w,
                        " {}={}",
                        field.name(),
                        crate::text::escape(&format!("{value:?}"))
                    )
                }
            },
        ))
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
    s.log_path = Some(crate::text::escape(&log.display().to_string()).into_owned());
    s
}

/// `crown tui`.
pub async fn run_tui(args: TuiArgs) -> Result<i32, Failure> {
    config(&args.timing)?;
    let log = match &args.log_file {
        Some(p) => p.clone(),
        None => default_log_path()?,
    };
    init_file_logging(&log)?;
    // On Kubernetes and etcd the dashboard keeps the concrete client: `k`/`r` act through it.
    let (backend, remote) = crate::connect::dashboard_backend(&args.backend).await?;
    let mut state = new_state(
        &args.backend.election,
        format!("{} {}", backend.kind(), args.backend.location()),
        false,
        &args.timing,
        &log,
    );
    let headless = !std::io::stdout().is_terminal();
    // No children: keep the sender so the exit channel stays open and silent.
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    state.reach = match args.backend.backend {
        BackendKind::Kube => state::Reach::Kube,
        BackendKind::Etcd => state::Reach::Etcd,
        BackendKind::File => state::Reach::Local,
    };
    let mut app = App::new(backend, state, None);
    if let Some(r) = remote {
        app = app.with_remote(r);
    }
    app.run(
        Options {
            refresh: args.refresh,
            headless,
            duration: None,
            chaos: None,
            read_timeout: app::READ_TIMEOUT,
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
            let b = crate::connect::observe_backend(&observe).await?;
            (b, observe.location(), args.etcd.to_flags())
        }
        _ => (
            crate::connect::observe_backend(&crate::cli::BackendArgs {
                backend: BackendKind::File,
                dir: args.dir.clone(),
                election: args.election.clone(),
                namespace: "default".into(),
                lease_name: None,
                etcd: args.etcd.clone(),
                wait_for_backend: std::time::Duration::from_secs(10),
            })
            .await?,
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
                read_timeout: app::READ_TIMEOUT,
            },
            exits,
        )
        .await
}
