//! Backends from the command line: the one place of the binary that names a concrete backend,
//! so each is compiled only with its cargo feature (`file`, `etcd`, `kube`). A backend this
//! binary was built without is refused with one line and exit code 9 ([`exit::NOT_BUILT`]).

use crate::backend::Backend;
use crate::cli::{BackendArgs, BackendKind};
use crate::election::Identity;
use crate::exit::{self, Failure};
use std::sync::Arc;

/// Whether this binary was built with backend `kind`.
pub fn built_with(kind: BackendKind) -> bool {
    match kind {
        BackendKind::File => cfg!(feature = "file"),
        BackendKind::Etcd => cfg!(feature = "etcd"),
        BackendKind::Kube => cfg!(feature = "kube"),
    }
}

/// The failure for a backend this binary was built without.
pub fn not_built(kind: BackendKind) -> Failure {
    let name = kind.name();
    Failure::new(
        exit::NOT_BUILT,
        format!(
            "this crown was built without the {name} backend (cargo build --features {name}, or the default features)"
        ),
    )
}

/// `Ok` if this binary has backend `kind`, else the [`not_built`] failure.
pub fn ensure_built(kind: BackendKind) -> Result<(), Failure> {
    if built_with(kind) {
        Ok(())
    } else {
        Err(not_built(kind))
    }
}

/// Hands the global Kubernetes client flags to the kube backend (nothing without it).
pub fn set_kube_options(args: &crate::cli::KubeArgs) {
    #[cfg(feature = "kube")]
    crate::backend::kube::set_client_options(crate::backend::kube::ClientOptions {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        pod_name: args.pod_name.clone(),
    });
    #[cfg(not(feature = "kube"))]
    let _ = args;
}

/// Opens the backend named by the flags for participant `me`.
pub async fn open_backend(args: &BackendArgs, me: Identity) -> Result<Arc<dyn Backend>, Failure> {
    match args.backend {
        #[cfg(feature = "file")]
        BackendKind::File => {
            let b = crate::backend::file::FileBackend::open(&args.dir, &args.election, me)?;
            if let Err(e) = b.watch() {
                tracing::warn!("{e}; falling back to polling every retry period");
            }
            Ok(Arc::new(b))
        }
        #[cfg(feature = "kube")]
        BackendKind::Kube => {
            let b = crate::backend::kube::KubeBackend::connect(
                &args.namespace,
                args.lease_name(),
                &args.election,
                me,
                args.wait_for_backend,
            )
            .await?;
            b.watch();
            Ok(Arc::new(b))
        }
        #[cfg(feature = "etcd")]
        BackendKind::Etcd => Ok(Arc::new(
            crate::backend::etcd::EtcdBackend::connect(etcd_options(args)?, Some(me)).await?,
        )),
        #[allow(unreachable_patterns)]
        other => {
            drop(me);
            Err(not_built(other))
        }
    }
}

/// The etcd backend's options from the flags (the password only from `$ETCD_PASSWORD`).
#[cfg(feature = "etcd")]
pub fn etcd_options(args: &BackendArgs) -> Result<crate::backend::etcd::EtcdOptions, Failure> {
    let password = match &args.etcd.user {
        Some(_) => Some(
            std::env::var("ETCD_PASSWORD")
                .or_else(|_| std::env::var("ETCDCTL_PASSWORD"))
                .map_err(|_| {
                    Failure::new(
                        exit::CONFIG,
                        "--user needs the password in $ETCD_PASSWORD (it is never taken as a flag)",
                    )
                })?,
        ),
        None => None,
    };
    Ok(crate::backend::etcd::EtcdOptions {
        endpoints: args.etcd.endpoints.clone(),
        prefix: args.etcd.etcd_prefix.clone(),
        election: args.election.clone(),
        cacert: args.etcd.cacert.clone(),
        cert: args.etcd.cert.clone(),
        key: args.etcd.key.clone(),
        user: args.etcd.user.clone().zip(password),
        wait: args.wait_for_backend,
        history_limit: match args.etcd.etcd_history_limit {
            0 => crate::backend::etcd::HISTORY_LIMIT,
            n => n as usize,
        },
    })
}

/// An identity for a process that only observes (no id of its own).
#[cfg(feature = "kube")]
fn observer() -> Identity {
    Identity {
        id: String::new(),
        pid: std::process::id(),
        host: crate::participant::hostname(),
    }
}

/// Connects to the Lease named by the flags as an observer (status, history, dashboard).
#[cfg(feature = "kube")]
async fn connect_kube_observer(
    args: &BackendArgs,
) -> Result<crate::backend::kube::KubeBackend, Failure> {
    Ok(crate::backend::kube::KubeBackend::connect(
        &args.namespace,
        args.lease_name(),
        &args.election,
        observer(),
        args.wait_for_backend,
    )
    .await?)
}

/// Connects to the etcd election named by the flags as an observer (no participant key).
#[cfg(feature = "etcd")]
async fn connect_etcd_observer(
    args: &BackendArgs,
) -> Result<crate::backend::etcd::EtcdBackend, Failure> {
    Ok(crate::backend::etcd::EtcdBackend::connect(etcd_options(args)?, None).await?)
}

/// Opens the backend for an observer (status, history, dashboard): creates nothing.
pub async fn observe_backend(args: &BackendArgs) -> Result<Arc<dyn Backend>, Failure> {
    match args.backend {
        #[cfg(feature = "file")]
        BackendKind::File => Ok(Arc::new(crate::backend::file::FileBackend::observe(
            &args.dir,
            &args.election,
        )?)),
        #[cfg(feature = "kube")]
        BackendKind::Kube => Ok(Arc::new(connect_kube_observer(args).await?)),
        #[cfg(feature = "etcd")]
        BackendKind::Etcd => Ok(Arc::new(connect_etcd_observer(args).await?)),
        #[allow(unreachable_patterns)]
        other => Err(not_built(other)),
    }
}

/// The dashboard's backend (`crown tui`): on Kubernetes and etcd it keeps the concrete client
/// too, so that `k`/`r` act through it.
#[cfg(feature = "tui")]
pub async fn dashboard_backend(
    args: &BackendArgs,
) -> Result<(Arc<dyn Backend>, Option<crate::tui::app::Remote>), Failure> {
    match args.backend {
        #[cfg(feature = "kube")]
        BackendKind::Kube => {
            let k = Arc::new(connect_kube_observer(args).await?);
            Ok((k.clone(), Some(crate::tui::app::Remote::Kube(k))))
        }
        #[cfg(feature = "etcd")]
        BackendKind::Etcd => {
            let e = Arc::new(connect_etcd_observer(args).await?);
            Ok((e.clone(), Some(crate::tui::app::Remote::Etcd(e))))
        }
        _ => Ok((observe_backend(args).await?, None)),
    }
}
