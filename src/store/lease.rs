//! Leases: an object in the repository (`state/locks/<job>.json`) that says who runs a job
//! now, so that two sidecars (a primary and a freshly promoted replica during a failover,
//! two replicas of a Deployment, a CLI run beside the daemon) never run one job at once.
//!
//! Every change of the lease object is a compare-and-swap (`ObjectStore::put_versioned`):
//! taking a free lease creates it only where none is (`If-None-Match: *`, `link()`),
//! taking over an expired one, renewing and releasing each replace only the version that
//! was read (`If-Match`, the local lock). Two sidecars racing for a stale lease cannot
//! both win, and a renewal or release never overwrites whoever holds it now. The object is
//! never deleted: a release marks it released, so its `generation` grows by one with every
//! holder, whatever happens in between.
//!
//! The generation and the lease's unique id are the fencing token. A holder does not know
//! that it lost its lease (it was stopped past the TTL, paused in a GC, cut off from the
//! network), so the token is checked by the repository writes themselves: a job writes
//! only through [`Lease::fence`], a store wrapper (`fence.rs`) that, before every write and
//! delete, reads the lease object and refuses unless it still names this holding. On a
//! local repository the check and the write happen under a shared lock on the lease
//! (`ObjectStore::pin`), which a takeover needs exclusively, so no write of a lost holder
//! can take effect. S3 has no locks: there the check is one request before each write, and
//! a holder also refuses to write when less than a third of its TTL is left, so a takeover
//! (which waits for the whole TTL) cannot fall between check and write unless that one
//! request takes longer than that.
//!
//! A holder killed without releasing blocks the job for one TTL at most, and not at all
//! when it was a process on this host that no longer runs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{layout, Error, ObjectStore, Pinned, Repo, Version};

/// The lease object: who holds it, its fencing token (`lease` and `generation`), and until
/// when. Older pgvigil versions wrote only `holder`, `acquired_at` and `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    holder: String,
    /// Unique per holding (a UUID); with `generation`, what a fenced write checks.
    #[serde(default)]
    lease: String,
    /// One more than the previous holder's: grows with every holder.
    #[serde(default)]
    generation: u64,
    acquired_at: DateTime<Utc>,
    #[serde(default)]
    renewed_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    /// Given back; anyone may take it.
    #[serde(default)]
    released: bool,
}

impl Record {
    fn bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec_pretty(self).unwrap_or_default())
    }

    fn parse(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }

    /// Whether the record names holding `other`.
    fn same_holding(&self, other: &Record) -> bool {
        self.lease == other.lease && self.generation == other.generation
    }

    /// "generation 7, held by host/123 until …" for messages.
    fn describe(&self) -> String {
        if self.released {
            format!(
                "generation {}, released by {}",
                self.generation, self.holder
            )
        } else {
            format!(
                "generation {}, held by {} until {}",
                self.generation, self.holder, self.expires_at
            )
        }
    }
}

/// The lease ids this process holds now: a record carrying this process's pid is stale
/// (a restarted container reusing the pid) unless it is one of these (another daemon
/// running in the same process, as in the tests).
fn held_here() -> &'static Mutex<HashSet<String>> {
    static HELD: std::sync::OnceLock<Mutex<HashSet<String>>> = std::sync::OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

fn hold_here(id: &str, held: bool) {
    if let Ok(mut set) = held_here().lock() {
        if held {
            set.insert(id.to_string());
        } else {
            set.remove(id);
        }
    }
}

fn holder() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}/{}", std::process::id())
}

/// Whether the holder of `r` is a process on this host that no longer runs (its release
/// may have failed because the repository was unreachable), or carries our own pid without
/// being a lease this process holds: then the lease is stale before its expiry.
fn holder_is_gone(r: &Record) -> bool {
    let Some((host, pid)) = r.holder.rsplit_once('/') else {
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
        return !held_here()
            .lock()
            .map(|set| set.contains(&r.lease))
            .unwrap_or(true);
    }
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// What a holder knows about its lease, shared by the renewal task and every fenced store.
#[derive(Debug)]
struct Holding {
    store: Arc<dyn ObjectStore>,
    key: String,
    job: String,
    ttl: Duration,
    /// The record as last written by us, and its version.
    current: Mutex<(Record, Version)>,
    /// Why this holding ended (lost to another holder, or released), once it has.
    ended: Mutex<Option<String>>,
    /// How far this host's clock was ahead of the repository's when the lease was taken
    /// (negative: behind); None for a store without a clock of its own.
    skew: Option<chrono::Duration>,
    renewal: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Holding {
    fn drop(&mut self) {
        // Not released (a panic or an early return): stop renewing; the lease expires.
        if let Ok(mut r) = self.renewal.lock() {
            if let Some(r) = r.take() {
                r.abort();
            }
        }
        if let Ok(c) = self.current.lock() {
            hold_here(&c.0.lease, false);
        }
    }
}

impl Holding {
    fn record(&self) -> (Record, Version) {
        match self.current.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn end(&self, why: String) {
        if let Ok(mut e) = self.ended.lock() {
            e.get_or_insert(why);
        }
    }

    fn ended(&self) -> Option<String> {
        self.ended.lock().ok().and_then(|e| e.clone())
    }

    /// Checks, for a write of `key` (in `store`), that this holding is still the lease's;
    /// returns the pin that keeps it so while the write takes effect.
    async fn admit(&self, key: &str, store: &str) -> Result<Option<Pinned>, Error> {
        let refuse = |message: String| Error::Fenced {
            key: key.to_string(),
            store: store.to_string(),
            message,
        };
        if let Some(why) = self.ended() {
            return Err(refuse(why));
        }
        let pin = self.store.pin(&self.key).await?;
        let (mine, _) = self.record();
        let stored = self
            .store
            .get_versioned(&self.key)
            .await?
            .and_then(|(b, _)| Record::parse(&b));
        match stored {
            Some(now) if now.same_holding(&mine) && !now.released => {}
            other => {
                let why = format!(
                    "the lease {} for {} was lost: this holder had generation {}, the repository now says {}",
                    self.key,
                    self.job,
                    mine.generation,
                    other.map_or_else(|| "no lease".to_string(), |r| r.describe())
                );
                self.end(why.clone());
                return Err(refuse(why));
            }
        }
        if pin.is_none() {
            // No lock to keep a takeover out between this check and the write: refuse
            // while close to expiry, as a takeover waits for the whole TTL.
            let left = mine.expires_at - Utc::now();
            let margin = chrono::Duration::from_std(self.ttl / 3).unwrap_or_default();
            if left < margin {
                return Err(refuse(format!(
                    "the lease {} for {} expires at {} ({}s left): it was not renewed in time, \
                     and writing this close to expiry could race a takeover",
                    self.key,
                    self.job,
                    mine.expires_at,
                    left.num_seconds()
                )));
            }
        }
        Ok(pin)
    }

    /// Writes `next` over our current record; false when the lease is no longer ours.
    async fn replace(&self, next: Record) -> Result<bool, Error> {
        let (_, version) = self.record();
        match self
            .store
            .put_versioned(&self.key, next.bytes(), Some(&version))
            .await?
        {
            Some(v) => {
                if let Ok(mut c) = self.current.lock() {
                    *c = (next, v);
                }
                Ok(true)
            }
            None => {
                let now = self
                    .store
                    .get_versioned(&self.key)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|(b, _)| Record::parse(&b));
                self.end(format!(
                    "the lease {} for {} was taken over: the repository now says {}",
                    self.key,
                    self.job,
                    now.map_or_else(|| "no lease".to_string(), |r| r.describe())
                ));
                Ok(false)
            }
        }
    }
}

/// A held lease. Clones share it; [`Lease::release`] gives it back for all of them.
#[derive(Debug, Clone)]
pub struct Lease {
    holding: Arc<Holding>,
}

impl Lease {
    /// Takes the lease of `job` in `repo` for `ttl` (renewed every third of it while held).
    /// `Error::Held` naming the holder when someone else has it; `Error::Busy` when its
    /// holder is in the middle of a write (local repository).
    pub async fn acquire(repo: &Repo, job: &str, ttl: Duration) -> Result<Lease, Error> {
        let key = repo.key(&layout::job_lock(job));
        let store = repo.store.clone();
        let me = holder();
        let ttl_chrono = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        for _ in 0..3 {
            let now = Utc::now();
            let current = store.get_versioned(&key).await?;
            let (generation, expected) = match &current {
                None => (1, None),
                Some((bytes, version)) => match Record::parse(bytes) {
                    Some(r) if !r.released && r.expires_at > now && !holder_is_gone(&r) => {
                        return Err(Error::Held {
                            key: key.clone(),
                            message: format!(
                                "{job} is already running on {} (lease {key}, generation {}, taken at {}, expires {})",
                                r.holder, r.generation, r.acquired_at, r.expires_at
                            ),
                        })
                    }
                    Some(r) => (r.generation + 1, Some(version.clone())),
                    // Unreadable: nobody can be fenced by it; take it over.
                    None => (1, Some(version.clone())),
                },
            };
            let record = Record {
                holder: me.clone(),
                lease: uuid::Uuid::new_v4().to_string(),
                generation,
                acquired_at: now,
                renewed_at: None,
                expires_at: now + ttl_chrono,
                released: false,
            };
            // Held here before it is written: another taker in this process that reads the
            // record between the write and this line must not judge it stale (its pid is
            // ours) and take it over (seen in a test racing two takers in one process).
            hold_here(&record.lease, true);
            let written = store
                .put_versioned(&key, record.bytes(), expected.as_deref())
                .await;
            if !matches!(written, Ok(Some(_))) {
                hold_here(&record.lease, false);
            }
            let written = match written {
                Ok(w) => w,
                Err(Error::Busy { message, .. }) => {
                    return Err(Error::Held {
                        key: key.clone(),
                        message: format!(
                            "{job}: the lease {key} expired but its holder is still writing under it ({message})"
                        ),
                    })
                }
                Err(e) => return Err(e),
            };
            let Some(version) = written else {
                continue; // another sidecar moved first: look again
            };
            let skew = if store.has_own_clock() {
                match store.head(&key).await {
                    Ok(head) => head
                        .and_then(|(m, _)| m.last_modified)
                        .map(|t| now - DateTime::<Utc>::from(t)),
                    Err(e) => {
                        // Nobody holds what was written: it is stale, here too.
                        hold_here(&record.lease, false);
                        return Err(e);
                    }
                }
            } else {
                None
            };
            let holding = Arc::new(Holding {
                store: store.clone(),
                key: key.clone(),
                job: job.to_string(),
                ttl,
                current: Mutex::new((record, version)),
                ended: Mutex::new(None),
                skew,
                renewal: Mutex::new(None),
            });
            let task = tokio::spawn(renew(Arc::downgrade(&holding), ttl));
            if let Ok(mut r) = holding.renewal.lock() {
                *r = Some(task);
            }
            tracing::debug!(event = "lease.acquired", key = %key, generation, "lease taken");
            return Ok(Lease { holding });
        }
        Err(Error::Held {
            key: key.clone(),
            message: format!("could not take the lease {key}: another sidecar took it first"),
        })
    }

    /// `repo` with every write and delete fenced by this lease: refused once the lease is
    /// lost or released.
    pub fn fence(&self, repo: &Repo) -> Repo {
        Repo {
            store: Arc::new(super::fence::Fenced::new(repo.store.clone(), self.clone())),
            cluster: repo.cluster.clone(),
        }
    }

    /// The fencing token: the lease's generation.
    pub fn generation(&self) -> u64 {
        self.holding.record().0.generation
    }

    /// Who holds it (`host/pid`).
    pub fn holder(&self) -> String {
        self.holding.record().0.holder
    }

    /// The job the lease is for.
    pub fn job(&self) -> &str {
        &self.holding.job
    }

    /// How far this host's clock was ahead of the repository's when the lease was taken
    /// (the time the store stamped on the lease object); None for a local directory.
    pub fn clock_skew(&self) -> Option<chrono::Duration> {
        self.holding.skew
    }

    /// Why the lease no longer holds (lost or released), or None while it holds.
    pub fn ended(&self) -> Option<String> {
        self.holding.ended()
    }

    /// For the fenced store: see [`Holding::admit`].
    pub(super) async fn admit(&self, key: &str, store: &str) -> Result<Option<Pinned>, Error> {
        self.holding.admit(key, store).await
    }

    /// Gives the lease back (marks it released, if it is still ours); fenced writes of
    /// every clone are refused from then on.
    pub async fn release(self) {
        let h = &self.holding;
        // Stop renewing first (and wait for it), so no renewal lands after the release.
        let task = h.renewal.lock().ok().and_then(|mut r| r.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        if h.ended().is_some() {
            return;
        }
        let (mut next, _) = h.record();
        next.released = true;
        next.expires_at = Utc::now();
        match h.replace(next).await {
            Ok(true) => h.end(format!("the lease {} for {} was released", h.key, h.job)),
            Ok(false) => {
                tracing::warn!(event = "lease.release.lost", key = %h.key, reason = ?h.ended(), "the lease was taken over before it was released")
            }
            Err(e) => {
                h.end(format!(
                    "the lease {} for {} was released (unconfirmed)",
                    h.key, h.job
                ));
                tracing::warn!(event = "lease.release.failed", key = %h.key, error = %e, "could not release lease; it will expire")
            }
        }
        hold_here(&h.record().0.lease, false);
    }
}

/// Renews the lease every TTL/3 until it ends; holds only a weak reference, so a dropped
/// lease stops it.
async fn renew(holding: Weak<Holding>, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let Some(h) = holding.upgrade() else { return };
        if h.ended().is_some() {
            return;
        }
        let (mut next, _) = h.record();
        let now = Utc::now();
        next.renewed_at = Some(now);
        next.expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        match h.replace(next).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(event = "lease.lost", key = %h.key, reason = ?h.ended(), "lease lost: its writes are refused from now on");
                return;
            }
            // Our own long write holds the lock (local): the next round renews.
            Err(Error::Busy { .. }) => {
                tracing::debug!(event = "lease.renew.busy", key = %h.key, "lease busy; renewing later")
            }
            Err(e) => {
                tracing::warn!(event = "lease.renew.failed", key = %h.key, error = %e, "could not renew lease")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    fn repo(dir: &std::path::Path) -> Repo {
        Repo {
            store: Arc::new(LocalStore::new(dir.to_path_buf())),
            cluster: "c".into(),
        }
    }

    #[tokio::test]
    async fn a_taken_lease_is_held_a_released_one_is_taken_with_the_next_generation() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let a = Lease::acquire(&r, "backup", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(a.generation(), 1);
        let held = Lease::acquire(&r, "backup", Duration::from_secs(60)).await;
        assert!(
            matches!(&held, Err(Error::Held { message, .. }) if message.contains("already running")),
            "{held:?}"
        );
        let fenced = a.fence(&r);
        fenced
            .store
            .put_bytes("c/state/x", Bytes::from("1"), Default::default())
            .await
            .unwrap();
        a.clone().release().await;
        // Released: its fenced writes are refused, and the next holder is generation 2.
        let refused = fenced
            .store
            .put_bytes("c/state/x", Bytes::from("2"), Default::default())
            .await;
        assert!(matches!(refused, Err(Error::Fenced { .. })), "{refused:?}");
        let b = Lease::acquire(&r, "backup", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(b.generation(), 2);
        b.release().await;
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_once_and_its_old_holder_is_fenced_out() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let old = Lease::acquire(&r, "retention", Duration::from_secs(1))
            .await
            .unwrap();
        // The old holder stops renewing (as if stopped) and its lease runs out.
        if let Some(t) = old.holding.renewal.lock().unwrap().take() {
            t.abort();
        }
        let fenced = old.fence(&r);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // Two takers race: exactly one wins.
        let (x, y) = tokio::join!(
            Lease::acquire(&r, "retention", Duration::from_secs(60)),
            Lease::acquire(&r, "retention", Duration::from_secs(60))
        );
        assert!(x.is_ok() != y.is_ok(), "{x:?} {y:?}");
        let winner = x.or(y).unwrap();
        assert_eq!(winner.generation(), 2);
        // The old holder wakes up: its delete is refused, naming the new generation.
        std::fs::create_dir_all(dir.path().join("c/wal")).unwrap();
        std::fs::write(dir.path().join("c/wal/keep"), b"x").unwrap();
        let refused = fenced.store.delete("c/wal/keep").await;
        assert!(
            matches!(&refused, Err(Error::Fenced { message, .. }) if message.contains("generation 2")),
            "{refused:?}"
        );
        assert!(dir.path().join("c/wal/keep").exists());
        // And its release does not touch the new holder's lease.
        old.release().await;
        let still = Lease::acquire(&r, "retention", Duration::from_secs(60)).await;
        assert!(matches!(still, Err(Error::Held { .. })), "{still:?}");
        winner.release().await;
    }

    #[tokio::test]
    async fn a_holder_writing_under_its_pin_keeps_a_takeover_out_locally() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let holder = Lease::acquire(&r, "backup", Duration::from_secs(1))
            .await
            .unwrap();
        if let Some(t) = holder.holding.renewal.lock().unwrap().take() {
            t.abort();
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // Expired, but its holder is in the middle of a write (a long upload): the pin
        // it holds keeps the takeover out, which reports the lease busy, not taken.
        let pin = holder
            .admit("c/backups/x/base.tar.zst", "test")
            .await
            .unwrap();
        assert!(pin.is_some(), "a local store pins");
        let taken = Lease::acquire(&r, "backup", Duration::from_secs(60)).await;
        assert!(
            matches!(&taken, Err(Error::Held { message, .. }) if message.contains("still writing")),
            "{taken:?}"
        );
        drop(pin);
        let next = Lease::acquire(&r, "backup", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(next.generation(), 2);
        next.release().await;
    }
}
