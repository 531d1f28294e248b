//! The daemon's [`Facts`], kept between page views so that the status page reads memory
//! only, never the repository. Each piece has one writer, the loop that already does the
//! work: the PITR check hands over its report ([`Cache::checked`]), the custody loop its
//! residency verdict and Object Lock date ([`Cache::custody`]), and the catalogue refresh
//! ([`Cache::refresh`], every minute and right after a job) reads what changed: the
//! `backup.json` of new backups, new drill evidence, the job history and the last retention
//! run and off-site copy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::read;
use super::{gather, Daemon, Facts, Status, HORIZON_DAYS};
use crate::backup::catalog::{self, BackupInfo};
use crate::backup::drill::{self, Evidence};
use crate::backup::{offsite, pitr, retention, Error};
use crate::config::Settings;
use crate::store::Verdict;

/// What the status page is built from, and what refreshing it needs.
pub struct Cache {
    settings: Arc<Settings>,
    primary: crate::store::Repo,
    facts: Mutex<Facts>,
    /// The records read so far (only new ones are read on a refresh).
    known: tokio::sync::Mutex<Known>,
    /// Wakes the refresh loop early (a job finished).
    changed: Notify,
}

#[derive(Default)]
struct Known {
    backups: BTreeMap<String, BackupInfo>,
    drills: BTreeMap<String, Evidence>,
    /// The catalogue has been read once.
    read: bool,
}

impl Cache {
    /// A cache for the daemon of `settings` over `stores` (the primary repository first);
    /// nothing read yet.
    pub fn new(
        settings: Arc<Settings>,
        primary: crate::store::Repo,
        stores: &[crate::store::Opened],
    ) -> Self {
        Self {
            facts: Mutex::new(read::empty(&settings, stores)),
            settings,
            primary,
            known: tokio::sync::Mutex::new(Known::default()),
            changed: Notify::new(),
        }
    }

    /// The status now, with `daemon` as the daemon's own health and `last_push` as when it
    /// last saw a WAL file archived.
    pub fn status(
        &self,
        daemon: Option<Daemon>,
        last_push: Option<DateTime<Utc>>,
    ) -> Option<Status> {
        let mut facts = self.facts.lock().ok()?;
        facts.last_push = last_push;
        Some(gather::gather(&facts, daemon, Utc::now()))
    }

    /// Records the result of a PITR check (the daemon's `pitr.check_interval` loop).
    pub fn checked(&self, result: &Result<pitr::Report, Error>) {
        let result = match result {
            Ok(r) => Ok(r.clone()),
            Err(e) => Err(e.to_string()),
        };
        self.update(|f| f.check = Some((result, Utc::now())));
    }

    /// Records a residency check of the store labelled `label` and when the lock of its
    /// oldest backup ends (the custody loop).
    pub fn custody(&self, label: &str, verdict: &Verdict, oldest_lock: Option<DateTime<Utc>>) {
        self.update(|f| {
            if let Some(s) = f.stores.iter_mut().find(|s| s.label == label) {
                s.verdict = Some((verdict.clone(), Utc::now()));
                s.oldest_lock_until = oldest_lock;
            }
        });
    }

    /// Re-reads what may have changed in the repository: new backups and drills, the job
    /// history, the last retention run and off-site copy. Returns whether the catalogue
    /// changed since the last refresh (then the PITR check's window is out of date).
    pub async fn refresh(&self) -> bool {
        let mut known = self.known.lock().await;
        let before: Vec<String> = known.backups.keys().cloned().collect();
        let backups = catalog::refresh(&self.primary, &mut known.backups)
            .await
            .map(|()| catalog::oldest_first(known.backups.values()))
            .map_err(|e| e.to_string());
        let changed = known.read && !known.backups.keys().eq(before.iter());
        known.read |= backups.is_ok();
        let since = Utc::now() - chrono::Duration::days(HORIZON_DAYS);
        if let Err(e) = drill::refresh(&self.primary, since, &mut known.drills).await {
            tracing::warn!(event = "status.drills.failed", error = %e, "cannot read the drill evidence");
        }
        let drills: Vec<Evidence> = known.drills.values().cloned().collect();
        drop(known);
        let jobs = read::jobs(&self.settings, &self.primary).await;
        let retention = retention::last(&self.primary).await;
        let offsite = offsite::last(&self.primary).await;
        self.update(|f| {
            f.backups = Some(backups);
            f.drills = drills;
            f.jobs = jobs;
            f.retention = retention;
            f.offsite = offsite;
        });
        changed
    }

    /// Whether the last PITR check failed or found WAL missing: then the refresh loop checks
    /// again every minute rather than every `pitr.check_interval` (a backup's last segment is
    /// often archived just after the check that followed it).
    pub fn recheck(&self) -> bool {
        self.facts.lock().is_ok_and(|f| match &f.check {
            Some((Ok(r), _)) => !r.missing.is_empty(),
            Some((Err(_), _)) => true,
            None => false,
        })
    }

    /// Asks for a refresh soon (a job wrote its result).
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// Resolves when [`Cache::changed`] was called.
    pub async fn wait_changed(&self) {
        self.changed.notified().await;
    }

    fn update(&self, change: impl FnOnce(&mut Facts)) {
        if let Ok(mut f) = self.facts.lock() {
            change(&mut f);
        }
    }
}
