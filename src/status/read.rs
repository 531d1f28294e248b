//! Reading the [`Facts`] from their sources: the repository (catalogue, PITR check, drill
//! evidence, job history, the last retention run and off-site copy, Object Lock dates),
//! PostgreSQL (what it last archived) and each bucket (where it is). The CLI reads them all
//! now ([`now`]); the daemon's cache reads the same pieces with these functions, each on
//! the loop that refreshes it. Reads only: nothing here writes to the repository or emits
//! an event.

use chrono::{DateTime, Utc};

use super::{Facts, Job, StoreFacts, HORIZON_DAYS};
use crate::backup::{catalog, drill, offsite, ops, pitr, retention};
use crate::config::Settings;
use crate::schedule;
use crate::store::{layout, Opened, Repo};

/// Every fact, read now. `stores` are the primary repository first, then the off-site one;
/// each bucket is asked where it is.
pub async fn now(settings: &Settings, stores: &[Opened]) -> Result<Facts, crate::backup::Error> {
    let primary = stores
        .first()
        .map(|s| s.repo.clone())
        .ok_or_else(|| crate::backup::Error::Invalid("no repository to report on".into()))?;
    let mut facts = empty(settings, stores);
    let now = Utc::now();
    let (backups, archiver) = tokio::join!(
        catalog::list(&primary),
        ops::archiver_state(&settings.postgres)
    );
    let backups = backups.map_err(|e| e.to_string());
    let check = match &backups {
        Ok(list) => pitr::verify_backups(&primary, list, archiver)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    facts.check = Some((check, Utc::now()));
    let mut drills = std::collections::BTreeMap::new();
    let since = now - chrono::Duration::days(HORIZON_DAYS);
    let (drills_read, jobs, retention, offsite) = tokio::join!(
        drill::refresh(&primary, since, &mut drills),
        jobs(settings, &primary),
        retention::last(&primary),
        offsite::last(&primary),
    );
    if let Err(e) = drills_read {
        tracing::warn!(event = "status.drills.failed", error = %e, "cannot read the drill evidence");
    }
    facts.drills = drills.into_values().collect();
    facts.jobs = jobs;
    facts.retention = retention;
    facts.offsite = offsite;
    for (s, f) in stores.iter().zip(facts.stores.iter_mut()) {
        let verdict = s.guard.check().await;
        f.verdict = Some((verdict, Utc::now()));
        f.oldest_lock_until = oldest_lock(&s.repo).await;
    }
    facts.backups = Some(backups);
    Ok(facts)
}

/// The facts known without reading anything: names, goals and schedules; nothing checked.
pub fn empty(settings: &Settings, stores: &[Opened]) -> Facts {
    Facts {
        repository: stores
            .first()
            .map(|s| s.repo.store.describe())
            .unwrap_or_default(),
        cluster: settings.storage.cluster.clone(),
        recovery_window: settings.retention.recovery_window,
        rpo: settings.pitr.rpo,
        check: None,
        last_push: None,
        backups: None,
        first_backup_due: ops::first_backup_due(&settings.backup),
        drills: Vec::new(),
        jobs: schedules(settings)
            .map(|(name, cron)| Job {
                name,
                cron,
                history: schedule::History::default(),
            })
            .collect(),
        retention: None,
        offsite_configured: settings.offsite.is_some(),
        offsite: None,
        stores: stores
            .iter()
            .map(|s| StoreFacts {
                label: s.label,
                url: s.repo.store.describe(),
                verdict: None,
                object_lock: s.repo.store.object_lock_mode(),
                oldest_lock_until: None,
            })
            .collect(),
    }
}

/// Each scheduled job and its schedule (None when off).
fn schedules(
    settings: &Settings,
) -> impl Iterator<Item = (&'static str, Option<croner::Cron>)> + '_ {
    let offsite = settings.offsite.as_ref().map(|o| &o.schedule);
    [
        ("backup", Some(&settings.backup.schedule)),
        ("drill", Some(&settings.drill.schedule)),
        ("retention", Some(&settings.retention.schedule)),
        ("offsite", offsite),
    ]
    .into_iter()
    .map(|(name, s)| (name, s.and_then(|s| s.cron()).cloned()))
}

/// Every job's schedule and the history the repository keeps of it.
pub async fn jobs(settings: &Settings, repo: &Repo) -> Vec<Job> {
    let mut out = Vec::new();
    for (name, cron) in schedules(settings) {
        let history = schedule::load_history(repo, name).await;
        out.push(Job {
            name,
            cron,
            history,
        });
    }
    out
}

/// When the Object Lock of the oldest backup's `backup.json` in `repo` ends: the first
/// backup that becomes deletable (None without Object Lock or without a backup). Backup ids
/// are their start times, so the first marker listed is the oldest.
pub async fn oldest_lock(repo: &Repo) -> Option<DateTime<Utc>> {
    repo.store.object_lock_mode()?;
    let read = async {
        let listed = repo
            .store
            .list(&repo.key(&layout::backups_prefix()))
            .await?;
        let Some(oldest) = listed.iter().find(|o| layout::is_backup_marker(&o.key)) else {
            return Ok(None);
        };
        repo.store.lock_until(&oldest.key).await
    };
    match read.await {
        Ok(t) => t.map(DateTime::<Utc>::from),
        Err(e) => {
            let e: crate::store::Error = e;
            tracing::warn!(event = "status.lock.failed", store = %repo.store.describe(), error = %e, "cannot read the Object Lock of the oldest backup");
            None
        }
    }
}

/// The daemon's own health, asked where `settings` says it listens: its `/status.json`, or
/// only `/readyz` when the status needs credentials this process does not have (basic auth)
/// or the daemon predates it.
pub async fn daemon(settings: &crate::config::Settings) -> super::Daemon {
    use crate::local_daemon::LocalDaemon;
    let patience = std::time::Duration::from_secs(3);
    let unreachable = |url: String, error: String| super::Daemon {
        url,
        reachable: false,
        error: Some(error),
        version: None,
        unmet: Vec::new(),
        failing_collectors: Vec::new(),
    };
    let client = match LocalDaemon::new(&settings.server, true) {
        Ok(c) => c,
        Err(e) => return unreachable(settings.server.listen.to_string(), e.to_string()),
    };
    let url = client.base().to_string();
    let status = match client.get("/status.json", patience).await {
        Err(e) => return unreachable(url, e.to_string()),
        Ok((code, body)) if code.is_success() => {
            match serde_json::from_slice::<super::Status>(&body) {
                Ok(super::Status {
                    daemon: Some(d), ..
                }) => return super::Daemon { url, ..d },
                _ => code,
            }
        }
        Ok((code, _)) => code,
    };
    // Readiness at least: /readyz is open unless server.protect_probes.
    let (ready, error) = match client.get("/readyz", patience).await {
        Ok((code, body)) if code.is_success() || code.as_u16() == 503 => {
            let text = String::from_utf8_lossy(&body);
            let unmet = text
                .trim()
                .strip_prefix("not ready: waiting for ")
                .map(|w| w.split(", ").map(str::to_string).collect())
                .unwrap_or_default();
            (
                Some(unmet),
                format!("/status.json answered {status}; readiness from /readyz only"),
            )
        }
        Ok((code, _)) => (
            None,
            format!("/status.json answered {status}, /readyz {code}"),
        ),
        Err(e) => (None, e.to_string()),
    };
    match ready {
        Some(unmet) => super::Daemon {
            url,
            reachable: true,
            error: Some(error),
            version: None,
            unmet,
            failing_collectors: Vec::new(),
        },
        None => unreachable(url, error),
    }
}
