//! pgvigil's JSON records in the repository (`backup.json`, drill evidence, the last
//! off-site copy and retention run), read and written one way: [`read`] and [`write`] for a
//! single record, [`refresh`] for a directory of them, which reads only the records it has
//! not seen yet (the daemon's status page keeps the catalogue and the drills between
//! refreshes, so a refresh costs one listing and the new records).
//!
//! Records come from the repository and are hostile until parsed: one that does not parse
//! is skipped with a warning, never trusted in part.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Error;
use crate::store::{Metadata, Repo};

/// The record at `key` (a full key), or None when it is missing or does not parse.
pub async fn read<T: DeserializeOwned>(repo: &Repo, key: &str) -> Option<T> {
    let body = repo.store.get_bytes(key).await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// Writes `value` as pretty JSON to `key` (a full key), replacing what was there.
pub async fn write<T: Serialize>(repo: &Repo, key: &str, value: &T) -> Result<(), Error> {
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Invalid(format!("encoding {key}: {e}")))?;
    repo.store
        .put_bytes(key, Bytes::from(body), Metadata::new())
        .await?;
    Ok(())
}

/// Brings `known` (full key → record) up to date with the records under `prefix` whose
/// key `is_record` accepts: records no longer listed are dropped, new ones read. A record
/// that does not parse is logged (`event`) and left out.
pub async fn refresh<T: DeserializeOwned>(
    repo: &Repo,
    prefix: &str,
    is_record: impl Fn(&str) -> bool,
    event: &'static str,
    known: &mut BTreeMap<String, T>,
) -> Result<(), Error> {
    let listed: Vec<String> = repo
        .store
        .list(prefix)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| is_record(k))
        .collect();
    known.retain(|k, _| listed.binary_search(k).is_ok());
    for key in listed {
        if known.contains_key(&key) {
            continue;
        }
        let body = repo.store.get_bytes(&key).await?;
        match serde_json::from_slice::<T>(&body) {
            Ok(record) => {
                known.insert(key, record);
            }
            Err(e) => {
                tracing::warn!(event, key = %key, error = %e, "ignoring an unreadable record")
            }
        }
    }
    Ok(())
}
