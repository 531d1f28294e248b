//! A new deployment's first hour (issue 17): a daemon started on an empty repository takes a
//! first backup soon after start instead of waiting for the night's schedule.

use std::time::Duration;

use crate::harness::backup::LocalRepo;
use crate::harness::{self, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_an_empty_repository_takes_a_first_backup_soon_after_start() {
    let repo = LocalRepo::new();
    let primary = repo.archiving_primary().await;
    // The nightly schedule is far away; drills and retention are off.
    let extra = format!(
        "{}[drill]\nschedule = \"off\"\n[retention]\nschedule = \"off\"\n[pitr]\ncheck_interval = \"2s\"\n",
        repo.storage
    );
    let running =
        harness::daemon_as_configured(harness::settings(&primary.dsn("postgres"), &extra)).await;
    let s = eventually(Duration::from_secs(150), || async {
        let s = harness::scrape(&running).await;
        match s.metric("pgvigil_backups").value() {
            Some(n) if n >= 1.0 => Ok(s),
            other => Err(format!("no backup yet ({other:?})")),
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
    assert_eq!(s.metric("pgvigil_backups").value(), Some(1.0));
    assert!(
        s.metric("pgvigil_backup_last_success_timestamp_seconds")
            .value()
            .unwrap_or(0.0)
            > 0.0
    );
    let backups: Vec<_> = std::fs::read_dir(repo.repo_dir.join("default/backups"))
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    assert_eq!(backups.len(), 1, "exactly one backup, taken once");
}
