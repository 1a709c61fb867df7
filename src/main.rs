//! The `crown` binary: parses flags, runs the command, maps failures to one line on stderr
//! and a distinct exit code (see `crown::exit`).

use clap::Parser;
use crown::cli::{Cli, Command, OutputFormat};
use crown::participant::{self, Failure};
use crown::{exit, report};

fn main() {
    let cli = Cli::parse();
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
    crown::backend::kube::set_client_options(cli.kube.options());
    match cli.command {
        Command::Run(args) => {
            participant::init_logging(args.log_format);
            participant::run(args).await
        }
        Command::Status(args) => {
            participant::init_logging(crown::cli::LogFormat::Text);
            let wait = args.backend.wait_for_backend;
            let connect = wait + std::time::Duration::from_secs(5);
            let b = report::bounded(connect, participant::observe_backend(&args.backend)).await?;
            let read = async { Ok(report::status(b.as_ref(), &args.backend.election).await?) };
            let r = report::bounded(report::read_limit(wait), read).await?;
            // The kube backend says which namespace it used (kubectl's rules pick it).
            let ns = b.namespace();
            match args.output {
                OutputFormat::Json => {
                    let mut v = serde_json::to_value(&r).expect("serializes");
                    if let (Some((name, how)), Some(o)) = (&ns, v.as_object_mut()) {
                        o.insert("namespace".into(), name.as_str().into());
                        o.insert("namespace_from".into(), (*how).into());
                    }
                    println!("{}", serde_json::to_string_pretty(&v).expect("serializes"))
                }
                OutputFormat::Text => {
                    let text = report::status_text(&r);
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
            }
            Ok(exit::OK)
        }
        Command::Tui(args) => crown::tui::run_tui(args).await,
        Command::Demo(args) => crown::tui::run_demo(args).await,
        Command::History(args) => {
            participant::init_logging(crown::cli::LogFormat::Text);
            let wait = args.backend.wait_for_backend;
            let connect = wait + std::time::Duration::from_secs(5);
            let b = report::bounded(connect, participant::observe_backend(&args.backend)).await?;
            let read = async { Ok(report::history(b.as_ref()).await?) };
            let rows = report::bounded(report::read_limit(wait), read).await?;
            match args.output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("serializes")
                ),
                OutputFormat::Text => print!("{}", report::history_text(&rows)),
            }
            Ok(exit::OK)
        }
        Command::ExecGuard(_) => unreachable!("handled before the runtime starts"),
    }
}
