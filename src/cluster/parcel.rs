//! Messages bigger than the server accepts (1 MiB by default): their bytes go to the object store
//! and the message itself carries only a header naming the object.

use std::{sync::Arc, time::Duration};

use async_nats::{
    Client, HeaderMap,
    jetstream::{
        Context,
        object_store::{Config, ObjectStore},
    },
};
use bytes::Bytes;
use tokio::{io::AsyncReadExt, sync::OnceCell};

use super::bridge::cluster_error;
use crate::{Error, transport::local::random_hex};

/// The object store that carries big messages.
const OBJECTS: &str = "MPS_OBJECTS";
/// The header that names a message's stored bytes.
const STORED: &str = "Mps-Object";
/// Room left in a message for its headers.
const HEADROOM: usize = 4096;
/// Objects whose reader never deleted them (it died) go after this long.
const OBJECT_TTL: Duration = Duration::from_secs(24 * 3600);

/// A message's bytes ready to send: inline, or the header that names where they were stored.
pub(crate) struct Parcel {
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
    /// The object the bytes went to, which someone must delete once they were read.
    pub(crate) stored: Option<String>,
}

/// The object store for big messages, cheap to clone into the bridge's tasks.
#[derive(Clone)]
pub(crate) struct Objects {
    client: Client,
    jetstream: Context,
    /// Opened when first needed.
    store: Arc<OnceCell<ObjectStore>>,
}

impl Objects {
    pub(crate) fn new(client: Client, jetstream: Context) -> Objects {
        Objects {
            client,
            jetstream,
            store: Arc::default(),
        }
    }

    /// Wraps `bytes` for one message; if they are too big for it, they are stored under a new
    /// name that starts with `prefix` (named only then: most messages are small).
    pub(crate) async fn pack(&self, bytes: Vec<u8>, prefix: &str) -> Result<Parcel, Error> {
        let mut headers = HeaderMap::new();
        if bytes.len() + HEADROOM <= self.client.server_info().max_payload {
            let payload = bytes.into();
            return Ok(Parcel {
                headers,
                payload,
                stored: None,
            });
        }
        let name = format!("{prefix}.{}", random_hex()?);
        let objects = self.store().await?;
        let put = objects.put(name.as_str(), &mut bytes.as_slice()).await;
        put.map_err(|e| cluster_error(&format!("storing a message of {} bytes", bytes.len()), e))?;
        headers.insert(STORED, name.as_str());
        Ok(Parcel {
            headers,
            payload: Bytes::new(),
            stored: Some(name),
        })
    }

    /// A received message's bytes, fetched from the object store if they were stored, and the
    /// object's name (which the reader deletes when the sender will not need it again).
    pub(crate) async fn unpack(
        &self,
        message: &async_nats::Message,
    ) -> Result<(Bytes, Option<String>), Error> {
        let stored = message.headers.as_ref().and_then(|h| h.get(STORED));
        let Some(name) = stored.map(|n| n.to_string()) else {
            return Ok((message.payload.clone(), None));
        };
        let objects = self.store().await?;
        let mut bytes = Vec::new();
        let fetching = async {
            let mut object = objects.get(&name).await?;
            object.read_to_end(&mut bytes).await?;
            Ok::<_, async_nats::Error>(())
        };
        fetching
            .await
            .map_err(|e| cluster_error(&format!("fetching the stored message {name}"), e))?;
        Ok((bytes.into(), Some(name)))
    }

    /// Deletes a stored message's bytes (gone already is fine).
    pub(crate) async fn discard(&self, name: &str) {
        if let Ok(objects) = self.store().await {
            let _ = objects.delete(name).await;
        }
    }

    async fn store(&self) -> Result<&ObjectStore, Error> {
        self.store
            .get_or_try_init(|| async {
                let js = &self.jetstream;
                if let Ok(store) = js.get_object_store(OBJECTS).await {
                    return Ok(store);
                }
                let config = Config {
                    bucket: OBJECTS.into(),
                    max_age: OBJECT_TTL,
                    ..Default::default()
                };
                match js.create_object_store(config).await {
                    Ok(store) => Ok(store),
                    // Made by another process meanwhile.
                    Err(e) => js
                        .get_object_store(OBJECTS)
                        .await
                        .map_err(|_| cluster_error("making the object store", e)),
                }
            })
            .await
    }
}
