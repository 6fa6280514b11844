//! The store wrapper of secrets encryption: values under `/registry/core/secrets/` are encrypted
//! on create and update and decrypted on get, list, delete and in watch events, so the
//! registry, watch cache, informers and controllers above it only ever see plaintext and
//! the SQLite file only ciphertext. Other keys pass through untouched.

use std::sync::Arc;

use super::{Encryption, SECRETS_PREFIX};
use crate::server::store::{
    Event, KeyValue, ListPage, Revision, Store, StoreError, StoreFuture, Watch,
};

/// A [`Store`] that encrypts Secrets with the live [`Encryption`] settings.
pub struct EncryptingStore {
    inner: Arc<dyn Store>,
    enc: Arc<Encryption>,
}

fn is_secret(key: &str) -> bool {
    key.starts_with(SECRETS_PREFIX)
}

impl EncryptingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, enc: Arc<Encryption>) -> EncryptingStore {
        EncryptingStore { inner, enc }
    }

    fn seal(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if !is_secret(key) {
            return Ok(value);
        }
        self.enc
            .encrypt(&value)
            .map_err(|e| StoreError::Backend(format!("encrypting {key}: {e}")))
    }

    fn open(&self, mut kv: KeyValue) -> Result<KeyValue, StoreError> {
        if is_secret(&kv.key) {
            let plain = self
                .enc
                .decrypt(&kv.value)
                .map_err(|e| StoreError::Backend(format!("decrypting {}: {e}", kv.key)))?;
            kv.value = Arc::from(plain);
        }
        Ok(kv)
    }

    /// Rewrites every Secret with the active key (or as plaintext when disabled); returns
    /// how many were rewritten. Secrets changed meanwhile are retried; deleted ones skipped.
    pub async fn reencrypt(&self) -> Result<usize, StoreError> {
        let mut done = 0;
        let mut after = None;
        loop {
            let page = self
                .inner
                .list(SECRETS_PREFIX.to_string(), after.clone(), 100)
                .await?;
            for kv in &page.items {
                let mut current = Some(kv.clone());
                while let Some(kv) = current.take() {
                    let plain = self.open(kv.clone())?;
                    let value = self.seal(&kv.key, plain.value.to_vec())?;
                    match self
                        .inner
                        .update(kv.key.clone(), value, Some(kv.mod_revision))
                        .await
                    {
                        Ok(_) => done += 1,
                        Err(StoreError::Conflict { .. }) => {
                            current = self.inner.get(kv.key.clone()).await?;
                        }
                        Err(StoreError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            match page.continue_after {
                Some(last) => after = Some(last),
                None => return Ok(done),
            }
        }
    }
}

impl Store for EncryptingStore {
    fn create(&self, key: String, value: Vec<u8>) -> StoreFuture<'_, Revision> {
        Box::pin(async move {
            let value = self.seal(&key, value)?;
            self.inner.create(key, value).await
        })
    }

    fn update(
        &self,
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> StoreFuture<'_, Revision> {
        Box::pin(async move {
            let value = self.seal(&key, value)?;
            self.inner.update(key, value, expected).await
        })
    }

    fn delete(&self, key: String, expected: Option<Revision>) -> StoreFuture<'_, KeyValue> {
        Box::pin(async move { self.open(self.inner.delete(key, expected).await?) })
    }

    fn get(&self, key: String) -> StoreFuture<'_, Option<KeyValue>> {
        Box::pin(async move {
            self.inner
                .get(key)
                .await?
                .map(|kv| self.open(kv))
                .transpose()
        })
    }

    fn list(
        &self,
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, ListPage> {
        Box::pin(async move {
            let mut page = self.inner.list(prefix, start_after, limit).await?;
            page.items = page
                .items
                .into_iter()
                .map(|kv| self.open(kv))
                .collect::<Result<_, _>>()?;
            Ok(page)
        })
    }

    fn count(&self, prefix: String) -> StoreFuture<'_, u64> {
        self.inner.count(prefix)
    }

    fn watch(&self, prefix: String, after: Revision) -> StoreFuture<'_, Watch> {
        Box::pin(async move {
            let mut inner = self.inner.watch(prefix, after).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            let enc = self.enc.clone();
            tokio::spawn(async move {
                while let Some(ev) = inner.events.recv().await {
                    let Some(ev) = open_event(&enc, ev) else {
                        // An undecryptable event ends the watch; the client re-lists and
                        // gets the error from the list.
                        return;
                    };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Watch { events: rx })
        })
    }

    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }

    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }

    fn compact(&self) -> StoreFuture<'_, ()> {
        self.inner.compact()
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.inner.close()
    }
}

fn open_kv(enc: &Encryption, mut kv: KeyValue) -> Option<KeyValue> {
    if is_secret(&kv.key) {
        match enc.decrypt(&kv.value) {
            Ok(plain) => kv.value = Arc::from(plain),
            Err(e) => {
                tracing::error!(key = %kv.key, error = %e, "secrets encryption: cannot decrypt a watched value");
                return None;
            }
        }
    }
    Some(kv)
}

fn open_event(enc: &Encryption, ev: Event) -> Option<Event> {
    Some(Event {
        kind: ev.kind,
        kv: open_kv(enc, ev.kv)?,
        prev: match ev.prev {
            Some(p) => Some(open_kv(enc, p)?),
            None => None,
        },
    })
}
