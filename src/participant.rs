//! `crown run`: builds the backend and the elector, logs every event in demo-friendly lines,
//! publishes heartbeats every retry period, and maps signals: SIGINT/SIGTERM release the
//! lease and exit 0, SIGUSR1 asks the leader to resign.

use crate::backend::validate_election_name;
use crate::cli::LogFormat;
use crate::election::Identity;
use crate::exit;

mod duty;
mod log;
mod prepare;
mod run;
mod spawn;
mod wait;

pub use crate::exit::Failure;
pub use crate::sidecar::policy::ResignBackoff;
pub use log::log_event;
pub use run::run;
// The backends are built at the edge, each behind its cargo feature.
pub use crate::connect::{observe_backend, open_backend};

/// This host's name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Our identity from `--id`/`$POD_NAME` or `<hostname>-<pid>`.
pub fn identity(id: Option<&str>) -> Result<Identity, Failure> {
    let host = hostname();
    let pid = std::process::id();
    let id = match id {
        Some(id) => id.to_string(),
        None => crate::cli::default_id(&host, pid),
    };
    validate_election_name(&id)
        .map_err(|_| Failure::new(exit::CONFIG, format!("invalid participant id {id:?}: use 1-63 letters, digits, '.', '_' or '-', not starting with '.'")))?;
    Ok(Identity { id, pid, host })
}

/// The default log filter of `crown run` and the dashboard: crown's own lines from INFO (role
/// changes; heartbeats are DEBUG), libraries' from WARN.
pub const LOG_DEFAULT: &str = "warn,crown=info";

/// The default log filter of one-shot commands (`status`, `history`): only crown's own
/// warnings, so that a failure is the one `crown: error:` line (the clients' own retries and
/// errors stay quiet).
pub const ONE_SHOT_LOG_DEFAULT: &str = "crown=warn";

/// The log filter: `$CROWN_LOG` if set, else `$RUST_LOG` (the usual variable of Rust
/// services), else `default`; a filter that does not parse falls back to `default`.
pub fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    ["CROWN_LOG", "RUST_LOG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default))
}

/// Installs the log subscriber (filter from [`log_filter`] with `default`): text lines with
/// only the message, or JSON with fields.
pub fn init_logging(format: LogFormat, default: &str) {
    let filter = log_filter(default);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
                |w, field, value| {
                    if field.name() == "message" {
                        // Ids, hosts and errors may come from the backend: one event, one
                        // line, no terminal control.
                        write!(w, "{}", crate::text::escape(&format!("{value:?}")))
                    } else {
                        Ok(())
                    }
                },
            ))
            .try_init(),
    };
}
