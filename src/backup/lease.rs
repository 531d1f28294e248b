//! A lease object in the repository (`state/locks/<job>.json`) so that two sidecars (say,
//! after a failover, or two replicas of a Deployment) never run the same job at once. It
//! is taken with a no-overwrite put, names its holder, and expires, so a holder that died
//! does not block the job forever.

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::Error;
use crate::store::{Metadata, Repo};

#[derive(Debug, Serialize, Deserialize)]
struct LeaseBody {
    holder: String,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// A held lease; release it when the job ends.
#[derive(Debug)]
pub struct Lease {
    key: String,
    repo: Repo,
}

fn holder() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}/{}", std::process::id())
}

impl Lease {
    /// Takes the lease for `job`, valid for `ttl`; fails naming the holder if taken.
    pub async fn acquire(repo: &Repo, job: &str, ttl: Duration) -> Result<Lease, Error> {
        let key = repo.key(&format!("state/locks/{job}.json"));
        let now = Utc::now();
        let body = LeaseBody {
            holder: holder(),
            acquired_at: now,
            expires_at: now + ttl,
        };
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        for _ in 0..2 {
            if repo
                .store
                .put_if_absent(&key, bytes.clone(), Metadata::new())
                .await?
            {
                return Ok(Lease {
                    key,
                    repo: repo.clone(),
                });
            }
            let existing = repo
                .store
                .get_bytes(&key)
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<LeaseBody>(&b).ok());
            match existing {
                Some(l) if l.expires_at > now => {
                    return Err(Error::Refused(format!(
                        "{job} is already running on {} (lease {key} taken at {}, expires {})",
                        l.holder, l.acquired_at, l.expires_at
                    )))
                }
                // Expired or unreadable: the holder is gone. Remove it and try once more.
                _ => repo.store.delete(&key).await?,
            }
        }
        Err(Error::Refused(format!(
            "could not take the lease {key}: another sidecar took it first"
        )))
    }

    /// Gives the lease back.
    pub async fn release(self) {
        if let Err(e) = self.repo.store.delete(&self.key).await {
            tracing::warn!(event = "lease.release.failed", key = %self.key, error = %e, "could not release lease; it will expire");
        }
    }
}
