//! A lease object in the repository (`state/locks/<job>.json`) so that two sidecars (say,
//! after a failover, or two replicas of a Deployment) never run the same job at once. It
//! is taken with a no-overwrite put, names its holder, and is short-lived but renewed while
//! the job runs, so a holder that was killed blocks the job for one TTL at most.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Error;
use crate::store::{layout, Metadata, Repo};

/// How long a lease lives without renewal; it is renewed every third of that.
pub const TTL: Duration = Duration::from_secs(300);

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
    renewal: Option<tokio::task::JoinHandle<()>>,
}

fn holder() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}/{}", std::process::id())
}

/// Whether a lease holder is a process on this host that no longer runs (its release may
/// have failed because the repository was unreachable), or carries our own PID (a restarted
/// container reusing it): then the lease is stale before its expiry.
fn holder_is_gone(holder_id: &str) -> bool {
    let Some((host, pid)) = holder_id.rsplit_once('/') else {
        return false;
    };
    let this_host = holder();
    if this_host.rsplit_once('/').map(|(h, _)| h) != Some(host) {
        return false;
    }
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if pid == std::process::id() as i32 {
        return true;
    }
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn body(holder: &str, acquired_at: DateTime<Utc>) -> Bytes {
    let b = LeaseBody {
        holder: holder.into(),
        acquired_at,
        expires_at: Utc::now() + chrono::Duration::from_std(TTL).unwrap_or_default(),
    };
    Bytes::from(serde_json::to_vec(&b).unwrap_or_default())
}

impl Lease {
    /// Takes the lease for `job`; `Error::Skipped` naming the holder if someone has it.
    pub async fn acquire(repo: &Repo, job: &str) -> Result<Lease, Error> {
        let key = repo.key(&layout::job_lock(job));
        let me = holder();
        let acquired_at = Utc::now();
        for _ in 0..2 {
            if repo
                .store
                .put_if_absent(&key, body(&me, acquired_at), Metadata::new())
                .await?
            {
                let renewal = Some(tokio::spawn(renew(
                    repo.clone(),
                    key.clone(),
                    me.clone(),
                    acquired_at,
                )));
                return Ok(Lease {
                    key,
                    repo: repo.clone(),
                    renewal,
                });
            }
            let existing = repo
                .store
                .get_bytes(&key)
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<LeaseBody>(&b).ok());
            match existing {
                Some(l) if l.expires_at > Utc::now() && !holder_is_gone(&l.holder) => {
                    return Err(Error::Skipped(format!(
                        "{job} is already running on {} (lease {key} taken at {}, expires {})",
                        l.holder, l.acquired_at, l.expires_at
                    )))
                }
                // Expired or unreadable: the holder is gone. Remove it and try once more.
                _ => repo.store.delete(&key).await?,
            }
        }
        Err(Error::Skipped(format!(
            "could not take the lease {key}: another sidecar took it first"
        )))
    }

    /// Gives the lease back.
    pub async fn release(mut self) {
        // Stop renewing first (and wait for it), so no renewal lands after the delete.
        if let Some(r) = self.renewal.take() {
            r.abort();
            let _ = r.await;
        }
        if let Err(e) = self.repo.store.delete(&self.key).await {
            tracing::warn!(event = "lease.release.failed", key = %self.key, error = %e, "could not release lease; it will expire");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Not released (a panic or an early return): stop renewing; the lease expires.
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
    }
}

/// Rewrites the lease every TTL/3; aborted by `release` (bounded by the job's lifetime).
async fn renew(repo: Repo, key: String, me: String, acquired_at: DateTime<Utc>) {
    loop {
        tokio::time::sleep(TTL / 3).await;
        if let Err(e) = repo
            .store
            .put_bytes(&key, body(&me, acquired_at), Metadata::new())
            .await
        {
            tracing::warn!(event = "lease.renew.failed", key = %key, error = %e, "could not renew lease");
        }
    }
}
