//! Many machines: `pool_map` chunks travel a NATS JetStream work queue to agents
//! (`mpscript worker --cluster URL`) that run them on local workers and relay every message back,
//! so the parent's hub sees each cluster slot as one more worker.

mod agent;
mod bridge;
mod envelope;
mod parcel;
mod slots;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use agent::Agent;
pub(crate) use slots::ClusterTransport;

use crate::Error;

/// The work-queue stream every run publishes its chunks to.
const STREAM: &str = "MPS_WORK";
/// The one durable pull consumer all agents share (the broker splits the work among them).
const CONSUMER: &str = "mps-agents";
/// Programs by hash: stored once per run, fetched once per agent.
const PROGRAMS: &str = "MPS_PROGRAMS";
/// Agents by name, with their slot counts; each refreshes its key, which expires when it is gone.
const AGENTS: &str = "MPS_AGENTS";
/// How long an agent's key lives without a refresh.
const AGENT_TTL: Duration = Duration::from_secs(10);
/// Runs in progress: each parent keeps its run's key fresh; agents drop the work of a run whose
/// key is gone (its parent was killed).
const RUNS: &str = "MPS_RUNS";
/// How long a run's key lives without a refresh: with agents looking every few seconds, a dead
/// parent's work stops within 15 s.
const RUN_TTL: Duration = Duration::from_secs(10);
/// How often keys are refreshed, and agents look at them.
const REFRESH: Duration = Duration::from_secs(2);

/// The environment variable an agent or a parent reads a token from, when no token file is given.
pub const TOKEN_ENV: &str = "MPSCRIPT_CLUSTER_TOKEN";

/// The key-value bucket `name`, made if missing. It is made as its stream directly:
/// async-nats 0.51's `create_key_value` first reads the account's info in a shape nats-server 2.9
/// does not send ("data did not match any variant").
async fn bucket(
    bridge: &bridge::Bridge,
    name: &str,
    max_age: Duration,
) -> Result<async_nats::jetstream::kv::Store, Error> {
    use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
    let js = &bridge.jetstream;
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let made = js
        .get_or_create_stream(Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            num_replicas: 1,
            duplicate_window: max_age.min(Duration::from_secs(120)),
            ..Default::default()
        })
        .await;
    made.map_err(|e| bridge::cluster_error(&format!("creating the {name} bucket"), e))?;
    js.get_key_value(name)
        .await
        .map_err(|e| bridge::cluster_error(&format!("opening the {name} bucket"), e))
}

fn work_subject(run: &str) -> String {
    format!("mps.work.{run}")
}

fn slot_subject(run: &str, slot: u64) -> String {
    format!("mps.run.{run}.{slot}")
}

/// Where a NATS server is and how to reach it safely: the same settings for `mpscript run
/// --cluster` and `mpscript worker --cluster`.
///
/// ```
/// let cluster = mpscript::Cluster::new("nats://10.0.0.5:4222");
/// let err = cluster.check().unwrap_err();
/// assert!(err.to_string().contains("TLS"), "{err}");
/// assert_eq!(err.exit_code(), 2);
/// assert!(mpscript::Cluster::new("nats://127.0.0.1:4222").check().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Cluster {
    url: String,
    token_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    insecure: bool,
    only: bool,
    ack_wait: Duration,
}

impl Cluster {
    /// A cluster reached at `url` (`nats://HOST:PORT`, or `tls://HOST:PORT` for TLS).
    pub fn new(url: impl Into<String>) -> Cluster {
        Cluster {
            url: url.into(),
            token_file: None,
            tls_ca: None,
            insecure: false,
            only: false,
            ack_wait: Duration::from_secs(10),
        }
    }

    /// Reads the token that authenticates to the server from this file (else from
    /// [`TOKEN_ENV`]); credentials never go on a command line.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Cluster {
        self.token_file = Some(path.into());
        self
    }

    /// Trusts this CA certificate (PEM) for the server's TLS certificate, and requires TLS.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Cluster {
        self.tls_ca = Some(path.into());
        self
    }

    /// Allows a server off this machine without TLS and credentials (`--cluster-insecure`).
    pub fn insecure(mut self, insecure: bool) -> Cluster {
        self.insecure = insecure;
        self
    }

    /// Keeps no local pool: every `pool_map` item runs on an agent (`--cluster-only`).
    pub fn only(mut self, only: bool) -> Cluster {
        self.only = only;
        self
    }

    /// For an agent: how long a chunk taken by an agent that died or stopped waits before another
    /// agent gets it (`mpscript worker --cluster-ack-wait`, default 10 s). The agents share one
    /// setting: the first agent on a server sets it.
    pub fn ack_wait(mut self, wait: Duration) -> Cluster {
        self.ack_wait = wait;
        self
    }

    /// Serves as an agent (`mpscript worker --cluster URL`): takes chunks of any run from the
    /// cluster's work queue and runs them on `slots` local worker processes, with `permissions`
    /// for the scripts whatever a run grants, until `interrupt` is triggered (then it finishes
    /// what it runs). `name` labels its output lines in the runs; the host name if empty.
    pub fn serve(
        &self,
        name: &str,
        slots: usize,
        permissions: crate::Permissions,
        interrupt: &crate::Interrupt,
    ) -> Result<(), Error> {
        let name = match name {
            "" => agent::default_name(),
            name => name.to_string(),
        };
        agent::serve(Agent {
            cluster: self,
            name,
            slots: slots.max(1),
            permissions,
            interrupt,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn is_only(&self) -> bool {
        self.only
    }

    /// The loopback rule, checked before anything connects: a server off this machine needs TLS
    /// and credentials, or [`Cluster::insecure`]. A URL carrying a user or password is refused:
    /// it would be on a command line.
    pub fn check(&self) -> Result<(), Error> {
        let (scheme, rest) = self.url.split_once("://").ok_or_else(|| {
            config(format!(
                "cluster URL `{}` is not nats://HOST:PORT",
                self.url
            ))
        })?;
        if !matches!(scheme, "nats" | "tls") {
            return Err(config(format!(
                "cluster URL `{}`: the scheme must be nats:// or tls://",
                self.url
            )));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(config(format!(
                "cluster URL `{}` carries credentials: put a token in a file (--cluster-token-file) \
                 or in {TOKEN_ENV}, never on the command line",
                self.url
            )));
        }
        if is_loopback(host_of(authority)) || self.insecure {
            return Ok(());
        }
        let tls = scheme == "tls" || self.tls_ca.is_some();
        let credentials = self.token_file.is_some() || std::env::var_os(TOKEN_ENV).is_some();
        let missing = match (tls, credentials) {
            (true, true) => return Ok(()),
            (false, true) => "TLS (a tls:// URL or --cluster-ca)",
            (true, false) => "credentials (--cluster-token-file or MPSCRIPT_CLUSTER_TOKEN)",
            (false, false) => {
                "TLS (a tls:// URL or --cluster-ca) and credentials (--cluster-token-file or \
                 MPSCRIPT_CLUSTER_TOKEN)"
            }
        };
        Err(config(format!(
            "cluster server `{}` is not on this machine and the connection lacks {missing}; \
             pass --cluster-insecure to connect anyway",
            self.url
        )))
    }

    /// The token, from the file or the environment.
    fn token(&self) -> Result<Option<String>, Error> {
        match &self.token_file {
            Some(path) => read_token(path).map(Some),
            None => Ok(std::env::var(TOKEN_ENV).ok()),
        }
    }
}

fn read_token(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading the token file {}", path.display()), e))?;
    Ok(text.trim().to_string())
}

fn config(message: String) -> Error {
    Error::Config(message)
}

/// The host of `host:port` (IPv6 in brackets).
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// 127.0.0.0/8, `::1` and `localhost`.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What an agent's and a parent's builds must share to run each other's chunks: the version, the
/// interpreter's, and the shape of the messages (raise `wire` when it changes).
const BUILD: &str = concat!(
    "mpscript ",
    env!("CARGO_PKG_VERSION"),
    " (rhai 1.27, wire 1)"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_nothing_and_any_other_host_needs_tls_and_credentials() {
        for url in [
            "nats://127.0.0.1:4222",
            "nats://127.8.9.1:1",
            "nats://localhost:4222",
            "nats://[::1]:4222",
        ] {
            assert!(Cluster::new(url).check().is_ok(), "{url}");
        }
        let remote = Cluster::new("nats://nats.example.com:4222");
        let err = remote.check().unwrap_err().to_string();
        assert!(err.contains("TLS") && err.contains("credentials"), "{err}");
        let err = Cluster::new("tls://nats.example.com:4222")
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("lacks credentials"), "{err}");
        let with_both = Cluster::new("tls://nats.example.com:4222").token_file("/nonexistent");
        assert!(with_both.check().is_ok());
        assert!(remote.insecure(true).check().is_ok());
        let err = Cluster::new("nats://me:secret@127.0.0.1:4222")
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("carries credentials"), "{err}");
        assert!(Cluster::new("http://127.0.0.1").check().is_err());
    }
}
