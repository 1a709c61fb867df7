//! Where the kube backend talks to, by kubectl's rules.
//!
//! - Client configuration: `--kubeconfig FILE` (else `$KUBECONFIG`, else `~/.kube/config`) and
//!   `--context NAME` (else the kubeconfig's `current-context`); with no kubeconfig at all, the
//!   in-cluster service account.
//! - Namespace: `-n` / `--namespace`, else `$NAMESPACE` (both given to us as one value by the
//!   command line), else the service-account namespace file when running in a Pod, else the
//!   namespace of the kubeconfig's context, else `default`.

use super::super::BackendError;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The service-account namespace file that Kubernetes mounts into every Pod with a token.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Client options from the command line (`--kubeconfig`, `--context`, `--pod-name`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// A kubeconfig file instead of `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A context instead of the kubeconfig's current one.
    pub context: Option<String>,
    /// The Pod this participant runs in (labelled while leading, carries its heartbeat).
    pub pod_name: Option<String>,
}

static OPTIONS: OnceLock<ClientOptions> = OnceLock::new();

/// Sets the process-wide client options (once, from `main`, before any backend connects).
pub fn set_client_options(o: ClientOptions) {
    let _ = OPTIONS.set(o);
}

/// The process-wide client options (defaults when never set).
pub fn client_options() -> ClientOptions {
    OPTIONS.get().cloned().unwrap_or_default()
}

/// Which rule chose the namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceSource {
    /// `-n` / `--namespace` or `$NAMESPACE`.
    Flag,
    /// The service-account namespace file of the Pod we run in.
    ServiceAccount,
    /// The kubeconfig context's `namespace`.
    Context,
    /// Nothing said otherwise.
    Default,
}

impl NamespaceSource {
    /// For log lines and `crown status`.
    pub fn describe(self) -> &'static str {
        match self {
            NamespaceSource::Flag => "from -n/$NAMESPACE",
            NamespaceSource::ServiceAccount => "from the Pod's service account",
            NamespaceSource::Context => "from the kubeconfig context",
            NamespaceSource::Default => "default",
        }
    }
}

/// A resolved namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace.
    pub name: String,
    /// Which rule chose it.
    pub source: NamespaceSource,
}

/// Loads the kubeconfig that `opts` names (`None` when there is none to load).
fn read_kubeconfig(opts: &ClientOptions) -> Result<Option<Kubeconfig>, String> {
    match &opts.kubeconfig {
        Some(p) => Kubeconfig::read_from(p)
            .map(Some)
            .map_err(|e| format!("cannot read --kubeconfig {}: {e}", p.display())),
        None => match Kubeconfig::from_env() {
            Ok(Some(k)) => Ok(Some(k)),
            Ok(None) => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                match home.map(|h| h.join(".kube").join("config")) {
                    Some(p) if p.is_file() => Kubeconfig::read_from(&p)
                        .map(Some)
                        .map_err(|e| format!("cannot read {}: {e}", p.display())),
                    _ => Ok(None),
                }
            }
            Err(e) => Err(format!("cannot read $KUBECONFIG: {e}")),
        },
    }
}

/// The namespace of `context` (or the current context) in `k`, if it names one.
fn context_namespace(k: &Kubeconfig, context: Option<&str>) -> Option<String> {
    let name = context.or(k.current_context.as_deref())?;
    k.contexts
        .iter()
        .find(|c| c.name == name)?
        .context
        .as_ref()?
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
}

/// kubectl's rule, with the inputs spelled out (see the module docs).
pub fn resolve_namespace_with(
    flag: Option<&str>,
    service_account_file: &Path,
    kubeconfig: Option<&Kubeconfig>,
    context: Option<&str>,
) -> Namespace {
    if let Some(n) = flag.filter(|n| !n.is_empty()) {
        return Namespace {
            name: n.to_string(),
            source: NamespaceSource::Flag,
        };
    }
    if let Ok(s) = std::fs::read_to_string(service_account_file) {
        let s = s.trim();
        if !s.is_empty() {
            return Namespace {
                name: s.to_string(),
                source: NamespaceSource::ServiceAccount,
            };
        }
    }
    if let Some(n) = kubeconfig.and_then(|k| context_namespace(k, context)) {
        return Namespace {
            name: n,
            source: NamespaceSource::Context,
        };
    }
    Namespace {
        name: "default".into(),
        source: NamespaceSource::Default,
    }
}

/// The namespace for `flag` (the value of `-n`/`$NAMESPACE`, empty when neither is given) by
/// kubectl's rule, with the process-wide client options.
pub fn resolve_namespace(flag: &str) -> Namespace {
    let opts = client_options();
    let k = if flag.is_empty() {
        read_kubeconfig(&opts).ok().flatten()
    } else {
        None
    };
    resolve_namespace_with(
        Some(flag),
        Path::new(SERVICE_ACCOUNT_NAMESPACE),
        k.as_ref(),
        opts.context.as_deref(),
    )
}

/// The client configuration by kubectl's rules (see the module docs).
pub async fn load_config(opts: &ClientOptions) -> Result<Config, BackendError> {
    let unavailable = |m: String| BackendError::Unavailable(m);
    let kopts = KubeConfigOptions {
        context: opts.context.clone(),
        ..KubeConfigOptions::default()
    };
    if opts.kubeconfig.is_none() && opts.context.is_none() {
        return Config::infer().await.map_err(|e| {
            unavailable(format!(
                "cannot load a Kubernetes configuration (in-cluster, --kubeconfig, $KUBECONFIG or ~/.kube/config): {e}"
            ))
        });
    }
    let k = read_kubeconfig(opts)
        .map_err(BackendError::Unavailable)?
        .ok_or_else(|| {
        unavailable(
            "--context needs a kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config), and none was found"
                .into(),
        )
    })?;
    if let Some(c) = &opts.context
        && !k.contexts.iter().any(|x| &x.name == c)
    {
        return Err(BackendError::Invalid(format!(
            "--context {c:?}: no such context in the kubeconfig"
        )));
    }
    Config::from_custom_kubeconfig(k, &kopts)
        .await
        .map_err(|e| unavailable(format!("cannot use the kubeconfig: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KC: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
contexts:
  - name: dev
    context: {cluster: c, user: u, namespace: myns}
  - name: other
    context: {cluster: c, user: u}
clusters:
  - name: c
    cluster: {server: "https://127.0.0.1:1"}
users:
  - name: u
    user: {token: t}
"#;

    #[test]
    fn kubectl_order_flag_then_service_account_then_context_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let sa = dir.path().join("namespace");
        let k = Kubeconfig::from_yaml(KC).unwrap();
        let r = |flag, k: Option<&Kubeconfig>, ctx| resolve_namespace_with(flag, &sa, k, ctx);
        // No service-account file (not in a Pod).
        assert_eq!(r(None, Some(&k), None).name, "myns");
        assert_eq!(r(None, Some(&k), None).source, NamespaceSource::Context);
        assert_eq!(r(None, Some(&k), Some("other")).name, "default");
        assert_eq!(
            r(None, Some(&k), Some("other")).source,
            NamespaceSource::Default
        );
        assert_eq!(r(None, None, None).name, "default");
        assert_eq!(r(Some(""), Some(&k), None).name, "myns");
        assert_eq!(r(Some("given"), Some(&k), None).name, "given");
        assert_eq!(
            r(Some("given"), Some(&k), None).source,
            NamespaceSource::Flag
        );
        // In a Pod: the service-account file wins over the context, not over the flag.
        std::fs::write(&sa, "podns\n").unwrap();
        assert_eq!(r(None, Some(&k), None).name, "podns");
        assert_eq!(
            r(None, Some(&k), None).source,
            NamespaceSource::ServiceAccount
        );
        assert_eq!(r(Some("given"), Some(&k), None).name, "given");
        // An empty file says nothing.
        std::fs::write(&sa, "").unwrap();
        assert_eq!(r(None, Some(&k), None).name, "myns");
    }
}
