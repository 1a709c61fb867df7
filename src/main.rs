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
            eprintln!("crown: error: {}", f.message);
            f.code
        }
    };
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Run(args) => {
            participant::init_logging(args.log_format);
            participant::run(args).await
        }
        Command::Status(args) => {
            participant::init_logging(crown::cli::LogFormat::Text);
            let b = participant::observe_backend(&args.backend).await?;
            let r = report::status(b.as_ref(), &args.backend.election).await?;
            match args.output {
                OutputFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&r).expect("serializes"))
                }
                OutputFormat::Text => print!("{}", report::status_text(&r)),
            }
            Ok(exit::OK)
        }
        Command::Tui(args) => crown::tui::run_tui(args).await,
        Command::Demo(args) => crown::tui::run_demo(args).await,
        Command::History(args) => {
            participant::init_logging(crown::cli::LogFormat::Text);
            let b = participant::observe_backend(&args.backend).await?;
            let rows = report::history(b.as_ref()).await?;
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
