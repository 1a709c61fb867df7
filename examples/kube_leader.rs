//! A leader on a Kubernetes Lease that does its work only while its [`crown::Leadership`] is
//! live and stamps everything it writes with the fencing term.
//!
//! ```text
//! cargo run --example kube_leader -- [--namespace NS] [--lease NAME] [--id ID]
//! ```
//!
//! The leader writes a ConfigMap `<lease>-output` every second. Each write carries the term
//! (`crown.example/term`) and is a compare-and-swap on the ConfigMap's resourceVersion that
//! is refused when the ConfigMap already shows a later term: a leader whose term is over
//! cannot overwrite its successor's output, even if a write of its was delayed.
//! Needs RBAC for `leases` (get, create, update) and `configmaps` (get, create, update).

use crown::backend::kube::KubeBackend;
use crown::{Config, Elector, Identity, Leadership, Term};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TERM: &str = "crown.example/term";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut namespace = String::new(); // empty: the client's default namespace
    let mut lease = "kube-leader-example".to_string();
    let mut id =
        std::env::var("POD_NAME").unwrap_or_else(|_| format!("example-{}", std::process::id()));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--namespace" | "-n" => namespace = args.next().ok_or("--namespace needs a value")?,
            "--lease" => lease = args.next().ok_or("--lease needs a value")?,
            "--id" => id = args.next().ok_or("--id needs a value")?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }

    let me = Identity::new(id);
    // One client for the election and the work (or use KubeBackend::connect, which follows
    // kubectl's rules for the configuration and the namespace).
    let client = kube::Client::try_default().await?;
    if namespace.is_empty() {
        namespace = client.default_namespace().to_string();
    }
    let backend = KubeBackend::with_client(
        client.clone(),
        &namespace,
        &lease,
        &lease,
        me.clone(),
        Duration::from_secs(10),
    )
    .await?;
    let output: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let name = format!("{lease}-output");

    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        });
    }
    let (handle, _events) =
        Elector::new(Arc::new(backend), Config::default(), me.clone())?.spawn(shutdown);

    while let Some(lead) = handle.leadership().await {
        println!("{} leads in term {}", me.id, lead.term());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            // The token is checked before every write, and a write in flight is dropped
            // when it is cancelled.
            tokio::select! {
                _ = lead.cancelled() => break,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = lead.cancelled() => break,
                r = write(&output, &name, &me, &lead) => if let Err(e) = r {
                    eprintln!("write failed (term {}): {e}", lead.term());
                },
            }
        }
        println!("{} stopped leading (term {})", me.id, lead.term());
    }
    Ok(())
}

/// One write of the leader's output, stamped with its term; refused if the ConfigMap shows a
/// later term already.
async fn write(
    api: &Api<ConfigMap>,
    name: &str,
    me: &Identity,
    lead: &Leadership,
) -> Result<(), Box<dyn std::error::Error>> {
    let term = lead.term();
    let current = api.get_opt(name).await?;
    let seen = current
        .as_ref()
        .and_then(|c| c.metadata.annotations.as_ref()?.get(TERM)?.parse().ok())
        .map(Term);
    if seen.is_some_and(|t| t > term) {
        return Err(format!(
            "the output already shows term {} (we lead {term})",
            seen.unwrap()
        )
        .into());
    }
    let mut data = BTreeMap::new();
    data.insert("writer".to_string(), me.id.clone());
    data.insert("term".to_string(), term.to_string());
    data.insert("written_at".to_string(), jiff::Timestamp::now().to_string());
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(TERM.to_string(), term.0.to_string())])),
            // The compare-and-swap: fails if someone wrote since we read.
            resource_version: current
                .as_ref()
                .and_then(|c| c.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    match current {
        Some(_) => api.replace(name, &PostParams::default(), &cm).await?,
        None => api.create(&PostParams::default(), &cm).await?,
    };
    println!("  wrote {name} in term {term}");
    Ok(())
}
