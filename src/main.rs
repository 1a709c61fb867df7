//! The `crown` binary: parses flags, runs the command, maps failures to one line on stderr
//! and a distinct exit code (see `crown::exit`).

use crown::cli::{Cli, Command, OnceCommand, OutputFormat};
use crown::participant::{self, Failure};
use crown::{exit, report};

fn main() {
    let cli = crown::cli::parse();
    if let Command::ExecGuard(g) = &cli.command {
        // Before any thread exists: this process becomes the child.
        std::process::exit(crown::sidecar::child::exec_guard(
            g.parent_pid,
            g.nofile,
            &g.command,
        ));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crown: error: cannot start the runtime: {e}");
            std::process::exit(exit::INTERNAL);
        }
    };
    let code = match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("crown: error: {}", report::escape(&f.message));
            f.code
        }
    };
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> Result<i32, Failure> {
    crown::connect::set_kube_options(&cli.kube);
    // A backend this binary was built without: one line, exit 9, before anything starts.
    let backend = match &cli.command {
        Command::Run(a) => Some(a.backend.backend),
        Command::Status(a) => Some(a.backend.backend),
        Command::History(a) => Some(a.backend.backend),
        Command::Tui(a) => Some(a.backend.backend),
        Command::Demo(a) => Some(a.backend),
        Command::Once(OnceCommand::Reset(a)) => Some(a.backend.backend),
        Command::Completions { .. } | Command::Man | Command::ExecGuard(_) => None,
    };
    if let Some(kind) = backend {
        crown::connect::ensure_built(kind)?;
    }
    match cli.command {
        Command::Run(args) => {
            if !cfg!(feature = "sidecar") {
                if args.sidecar.http.is_some() {
                    return Err(not_built("sidecar", "--http"));
                }
                if args.sidecar.notify_url.is_some() {
                    return Err(not_built("sidecar", "--notify-url"));
                }
            }
            participant::init_logging(args.log_format, participant::LOG_DEFAULT);
            participant::run(args).await
        }
        Command::Status(args) => {
            participant::init_logging(
                crown::cli::LogFormat::Text,
                participant::ONE_SHOT_LOG_DEFAULT,
            );
            let wait = args.backend.wait_for_backend;
            let connect = report::read_limit(wait) + std::time::Duration::from_secs(1);
            let b =
                report::bounded(connect, crown::connect::observe_backend(&args.backend)).await?;
            let read = async { Ok(report::status(b.as_ref(), &args.backend.election).await?) };
            let r = report::bounded(report::read_limit(wait), read).await?;
            // The kube backend says which namespace it used (kubectl's rules pick it).
            let ns = b.namespace();
            match args.output {
                OutputFormat::Text | OutputFormat::Wide => {
                    let text = report::status_text(&r, args.output == OutputFormat::Wide);
                    match (&ns, text.split_once('\n')) {
                        (Some((name, how)), Some((first, rest))) => {
                            print!(
                                "{first}\nnamespace {} ({how})\n{rest}",
                                report::escape(name)
                            )
                        }
                        _ => print!("{text}"),
                    }
                }
                f => {
                    let mut v = serde_json::to_value(&r).expect("serializes");
                    if let (Some((name, how)), Some(o)) = (&ns, v.as_object_mut()) {
                        o.insert("namespace".into(), name.as_str().into());
                        o.insert("namespace_from".into(), (*how).into());
                    }
                    print!("{}", serialized(&v, f))
                }
            }
            Ok(exit::OK)
        }
        #[cfg(feature = "tui")]
        Command::Tui(args) => crown::tui::run_tui(args).await,
        #[cfg(feature = "tui")]
        Command::Demo(args) => crown::tui::run_demo(args).await,
        #[cfg(not(feature = "tui"))]
        Command::Tui(_) => Err(not_built("tui", "crown tui")),
        #[cfg(not(feature = "tui"))]
        Command::Demo(_) => Err(not_built("tui", "crown demo")),
        Command::History(args) => {
            participant::init_logging(
                crown::cli::LogFormat::Text,
                participant::ONE_SHOT_LOG_DEFAULT,
            );
            let wait = args.backend.wait_for_backend;
            let connect = report::read_limit(wait) + std::time::Duration::from_secs(1);
            let b =
                report::bounded(connect, crown::connect::observe_backend(&args.backend)).await?;
            let read = async { Ok(report::history(b.as_ref()).await?) };
            let rows = report::bounded(report::read_limit(wait), read).await?;
            match args.output {
                OutputFormat::Text | OutputFormat::Wide => print!(
                    "{}",
                    report::history_text(&rows, args.output == OutputFormat::Wide)
                ),
                f => print!("{}", serialized(&rows, f)),
            }
            Ok(exit::OK)
        }
        Command::Once(OnceCommand::Reset(args)) => {
            participant::init_logging(
                crown::cli::LogFormat::Text,
                participant::ONE_SHOT_LOG_DEFAULT,
            );
            let wait = args.backend.wait_for_backend;
            let connect = report::read_limit(wait) + std::time::Duration::from_secs(1);
            let b =
                report::bounded(connect, crown::connect::observe_backend(&args.backend)).await?;
            let reset = async { Ok(b.reset_duty().await?) };
            let removed = report::bounded(report::read_limit(wait), reset).await?;
            let e = report::escape(&args.backend.election).into_owned();
            match removed {
                crown::once::Removed::Nothing => {
                    println!("election {e}: no duty record, nothing to reset")
                }
                crown::once::Removed::Record(r) => println!(
                    "election {e}: duty reset (was: {}); the next `crown run --once` runs it again",
                    report::escape(&r.describe())
                ),
                crown::once::Removed::Unreadable(why) => println!(
                    "election {e}: removed an unreadable duty record ({})",
                    report::escape(&why)
                ),
            }
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            let mut cmd = crown::cli::command();
            clap_complete::generate(shell, &mut cmd, "crown", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Man => {
            let out = crown::cli::man_page()
                .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot render: {e}")))?;
            std::io::Write::write_all(&mut std::io::stdout(), &out)
                .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot write: {e}")))?;
            Ok(exit::OK)
        }
        Command::ExecGuard(_) => unreachable!("handled before the runtime starts"),
    }
}

/// The failure for `what`, which needs the cargo feature `feature` this crown was built without.
#[cfg_attr(all(feature = "tui", feature = "sidecar"), allow(dead_code))]
fn not_built(feature: &str, what: &str) -> Failure {
    Failure::new(
        exit::NOT_BUILT,
        format!(
            "this crown was built without {what} (cargo build --features {feature}, or the default features)"
        ),
    )
}

/// `-o json` (pretty, one trailing newline) or `-o yaml`.
fn serialized<T: serde::Serialize>(v: &T, f: OutputFormat) -> String {
    match f {
        OutputFormat::Yaml => serde_yaml::to_string(v).expect("serializes"),
        _ => serde_json::to_string_pretty(v).expect("serializes") + "\n",
    }
}
