//! The one thread that runs the async NATS client: a current-thread tokio runtime driven there,
//! which the rest of the program (threads and channels) reaches by blocking on its futures.

use std::{future::Future, thread, time::Duration};

use async_nats::{
    Client, ConnectOptions,
    jetstream::{self, Context},
};
use tokio::runtime::{Builder, Handle};

use super::{Cluster, parcel::Objects};
use crate::Error;

/// A connection to the NATS server, and the thread that drives it.
pub(crate) struct Bridge {
    handle: Handle,
    pub(crate) client: Client,
    pub(crate) jetstream: Context,
    /// Where messages too big for the server go.
    pub(crate) objects: Objects,
    /// Dropping it ends the driving thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Bridge {
    /// Connects to `cluster` as `name`; the client reconnects by itself after that.
    pub(crate) fn connect(cluster: &Cluster, name: &str) -> Result<Bridge, Error> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the cluster connection's runtime", e))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        thread::Builder::new()
            .name("mpscript-nats".into())
            .spawn(move || runtime.block_on(async move { drop(stopped.await) }))
            .map_err(|e| Error::io("starting the cluster connection's thread", e))?;
        let mut options = ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None);
        if let Some(token) = cluster.token()? {
            options = options.token(token);
        }
        if let Some(ca) = &cluster.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let client = handle
            .block_on(options.connect(cluster.url()))
            .map_err(|e| {
                Error::Config(format!(
                    "cannot reach the cluster at {}: {e}",
                    cluster.url()
                ))
            })?;
        // The context starts a task of its own, so it is made on the runtime.
        let jetstream = handle.block_on(async { jetstream::new(client.clone()) });
        Ok(Bridge {
            handle,
            objects: Objects::new(client.clone(), jetstream.clone()),
            client,
            jetstream,
            _stop: stop,
        })
    }

    /// Runs `future` to its end on the bridge (from any thread but the bridge's own).
    pub(crate) fn wait<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    /// Runs `future` on the bridge in the background.
    pub(crate) fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(future);
    }

    /// Publishes `payload` on a core subject, without waiting.
    pub(crate) fn publish(&self, subject: String, payload: Vec<u8>) -> Result<(), Error> {
        self.wait(self.client.publish(subject, payload.into()))
            .map_err(|e| cluster_error("publishing", e))
    }
}

/// An error of the cluster connection, as the runtime reports it.
pub(crate) fn cluster_error(doing: &str, e: impl std::fmt::Display) -> Error {
    Error::WorkerStart(format!("cluster: {doing}: {e}"))
}
