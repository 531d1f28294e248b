//! [`gather`]: the one function that turns [`Facts`] into a judged [`Status`]. Pure (the
//! time is an argument), so the rules below are tested without a repository:
//!
//! broken (a restore would fail or lose data): the repository cannot be read, there is no
//! backup, a WAL file is missing between the oldest backup and the newest segment, the PITR
//! check cannot run, the last drill failed, a repository is outside its residency policy;
//!
//! degraded (restorable, but something needs attention): no point-in-time window yet, the
//! window is shorter than `retention.recovery_window`, the archive is older than
//! `pitr.rpo`, the newest backup is older than two backup intervals, no drill within the
//! horizon, the last retention run or off-site copy failed, no off-site copy yet (or an
//! old one), the daemon does not answer, is not ready, or has failing collectors.

use chrono::{DateTime, Utc};

use super::{
    seconds_between, BackupLine, Backups, Custody, Daemon, DrillLine, Drills, Facts, Finding,
    Health, OffsiteLine, Residency, RetentionLine, Status, StoreLine, Wal, Window, HORIZON_DAYS,
};
use crate::schedule::{next_due, JobOutcome};

/// How many findings of one kind are listed before "and N more".
const LISTED: usize = 3;

/// Judges `facts` at `now`; `daemon` is the daemon's health when it was asked.
pub fn gather(facts: &Facts, daemon: Option<Daemon>, now: DateTime<Utc>) -> Status {
    let mut findings = Vec::new();
    let horizon = now - chrono::Duration::days(HORIZON_DAYS);
    let report = facts.check.as_ref().and_then(|(r, _)| r.as_ref().ok());

    // Backups.
    let backups = match &facts.backups {
        Some(Ok(list)) => list.as_slice(),
        _ => &[],
    };
    let window_start = report.and_then(|r| r.window_start);
    let mut recent: Vec<BackupLine> = backups
        .iter()
        .rev()
        .filter(|b| b.stop_time >= horizon || Some(b.stop_time) == window_start)
        .map(|b| BackupLine::of(b, now))
        .collect();
    if recent.is_empty() {
        recent.extend(backups.last().map(|b| BackupLine::of(b, now)));
    }
    let backup_next = next_run(facts, "backup", now);
    match &facts.backups {
        None => findings.push(degraded(
            "backups",
            "the repository has not been read yet (the first check is under way)",
        )),
        Some(Err(e)) => findings.push(broken(
            "backups",
            format!("cannot read the repository: {e}"),
        )),
        Some(Ok(list)) if list.is_empty() => findings.push(broken(
            "backups",
            format!(
                "no backup yet: nothing can be restored; the first one {}",
                facts.first_backup_due
            ),
        )),
        Some(Ok(list)) => {
            let interval = job(facts, "backup").and_then(|j| interval(j.cron.as_ref()?, now));
            if let (Some(newest), Some(every)) = (list.last(), interval) {
                let age = seconds_between(newest.stop_time, now);
                if age > 2.0 * every {
                    findings.push(degraded(
                        "backups",
                        format!(
                            "the newest backup ({}) is {} old; backup.schedule takes one every {}",
                            newest.id,
                            span(age),
                            span(every)
                        ),
                    ));
                }
            }
        }
    }

    // The PITR check: window, continuity, RPO.
    let goal = facts.recovery_window.as_secs();
    let window = Window {
        earliest: window_start,
        latest: report.and_then(|r| r.window_end),
        goal_seconds: goal,
        covered_seconds: report.and_then(|r| Some(seconds_between(r.window_start?, r.window_end?))),
        chain_start: report.and_then(|r| r.chain_start),
    };
    let has_backups = !backups.is_empty();
    match &facts.check {
        Some((Err(e), _)) => {
            findings.push(broken("wal", format!("the PITR check could not run: {e}")))
        }
        Some((Ok(r), _)) if has_backups => {
            judge_continuity(r, &mut findings);
            match window.covered_seconds {
                None => findings.push(degraded(
                    "window",
                    "no point-in-time window yet: nothing committed after the oldest backup \
                     ended has been archived (the heartbeat writes one within pitr.heartbeat_interval)",
                )),
                Some(covered) if covered < goal as f64 => findings.push(degraded(
                    "window",
                    format!(
                        "the recovery window is {} of the {} goal (retention.recovery_window): \
                         points before {} cannot be restored",
                        span(covered),
                        span(goal as f64),
                        time(window.earliest)
                    ),
                )),
                Some(_) => {}
            }
        }
        _ => {}
    }
    let rpo = facts.rpo.as_secs();
    // The age as the check measured it, brought to now; or since the daemon's last push,
    // when that is more recent (the check may be minutes old).
    let checked_at = facts.check.as_ref().map(|(_, t)| *t);
    let archived_at = report
        .and_then(|r| r.archive_age_seconds)
        .zip(checked_at)
        .map(|(age, at)| at - chrono::Duration::milliseconds((age * 1000.0) as i64));
    let archived_at = archived_at.max(facts.last_push.filter(|_| report.is_some()));
    let archive_age = archived_at.map(|t| seconds_between(t, now).max(0.0));
    if report.is_some() && has_backups {
        match archive_age {
            Some(age) if age > rpo as f64 => findings.push(degraded(
                "rpo",
                format!(
                    "the last WAL file was archived {} ago, above pitr.rpo ({}): that much would be lost now",
                    span(age),
                    span(rpo as f64)
                ),
            )),
            Some(_) => {}
            None => findings.push(degraded("rpo", "no WAL file has been archived yet")),
        }
    }
    let wal = Wal {
        checked_at: facts.check.as_ref().map(|(_, t)| *t),
        check_error: facts
            .check
            .as_ref()
            .and_then(|(r, _)| r.as_ref().err().cloned()),
        archive_age_seconds: archive_age,
        rpo_seconds: rpo,
        last_archived_wal: report.and_then(|r| r.last_archived_wal.clone()),
        continuity_ok: report.is_some_and(|r| r.missing.is_empty()),
        segments_checked: report.map_or(0, |r| r.segments_checked),
        newest_segment: report.and_then(|r| r.newest_segment.clone()),
        timelines: report.map(|r| r.timelines.clone()).unwrap_or_default(),
        gaps: report.map(|r| r.gaps.clone()).unwrap_or_default(),
        problems: report.map(|r| r.problems.clone()).unwrap_or_default(),
        coverage_from: backups.first().map(|b| b.start_time),
    };

    // Drills.
    let mut drills: Vec<DrillLine> = facts
        .drills
        .iter()
        .filter(|d| d.started_at >= horizon)
        .map(DrillLine::of)
        .collect();
    drills.sort_by_key(|d| std::cmp::Reverse(d.started_at));
    let last = drills.first().cloned();
    match &last {
        Some(d) if !d.success => findings.push(broken(
            "drills",
            format!(
                "the last restore drill ({}) failed: {}",
                d.id,
                d.error.as_deref().unwrap_or("no reason recorded")
            ),
        )),
        Some(_) => {}
        None => findings.push(degraded(
            "drills",
            format!(
                "no restore drill in the last {HORIZON_DAYS} days: the backups are unproven (run `pgvigil drill`)"
            ),
        )),
    }

    // Custody.
    let mut stores = Vec::new();
    for s in &facts.stores {
        let residency = s.verdict.as_ref().map(|(v, at)| Residency {
            ok: v.ok,
            region: v.region.clone(),
            message: v.message.clone(),
            checked_at: *at,
        });
        if let Some(r) = residency.as_ref().filter(|r| !r.ok) {
            findings.push(broken(
                "custody",
                format!("the {} repository refuses writes: {}", s.label, r.message),
            ));
        }
        stores.push(StoreLine {
            label: s.label.to_string(),
            url: s.url.clone(),
            residency,
            object_lock: s.object_lock.map(|m| lock_word(m).to_string()),
            oldest_lock_until: s.oldest_lock_until,
        });
    }
    let retention = facts.retention.as_ref().map(|r| RetentionLine {
        finished: r.finished,
        error: r.error.clone(),
        stores: r.stores.clone(),
    });
    if let Some(RetentionLine {
        error: Some(e),
        finished,
        ..
    }) = &retention
    {
        findings.push(degraded(
            "custody",
            format!(
                "the last retention run ({}) failed: {e}",
                time(Some(*finished))
            ),
        ));
    }
    let offsite = facts.offsite.as_ref().map(|o| OffsiteLine {
        finished: o.finished,
        backup_id: o.backup_id.clone(),
        destination: o.destination.clone(),
        objects_copied: o.objects_copied,
        bytes_copied: o.bytes_copied,
        verified: o.verified,
    });
    let offsite_failure = job(facts, "offsite")
        .filter(|j| j.history.last_outcome == Some(JobOutcome::Failure))
        .filter(|j| {
            let failed = j.history.last_finished;
            offsite.as_ref().is_none_or(|o| failed > Some(o.finished))
        })
        .map(|j| {
            format!(
                "{} at {}",
                j.history.last_message.as_deref().unwrap_or("failed"),
                time(j.history.last_finished)
            )
        });
    if facts.offsite_configured {
        let every = job(facts, "offsite").and_then(|j| interval(j.cron.as_ref()?, now));
        match (&offsite, &offsite_failure) {
            (_, Some(f)) => findings.push(degraded(
                "custody",
                format!("the last off-site copy failed: {f}"),
            )),
            (None, None) => findings.push(degraded(
                "custody",
                "no off-site copy yet (run `pgvigil offsite`)",
            )),
            (Some(o), None) => {
                let age = seconds_between(o.finished, now);
                if every.is_some_and(|every| age > 2.0 * every) {
                    findings.push(degraded(
                        "custody",
                        format!("the last off-site copy is {} old", span(age)),
                    ));
                }
            }
        }
    }

    // The daemon.
    if let Some(d) = &daemon {
        if !d.reachable {
            findings.push(degraded(
                "daemon",
                format!(
                    "the daemon at {} does not answer ({}): no scheduled backups, checks or drills run",
                    d.url,
                    d.error.as_deref().unwrap_or("no answer")
                ),
            ));
        }
        if !d.unmet.is_empty() {
            findings.push(degraded(
                "daemon",
                format!(
                    "the daemon is not ready: waiting for {}",
                    d.unmet.join(", ")
                ),
            ));
        }
        if !d.failing_collectors.is_empty() {
            findings.push(degraded(
                "daemon",
                format!("collectors failing: {}", d.failing_collectors.join(", ")),
            ));
        }
    }

    findings.sort_by_key(|f| std::cmp::Reverse(f.health));
    Status {
        generated_at: now,
        health: findings
            .iter()
            .map(|f| f.health)
            .max()
            .unwrap_or(Health::Healthy),
        findings,
        repository: facts.repository.clone(),
        cluster: facts.cluster.clone(),
        window,
        wal,
        backups: Backups {
            error: facts
                .backups
                .as_ref()
                .and_then(|b| b.as_ref().err().cloned()),
            count: backups.len(),
            stored_bytes: backups.iter().map(|b| b.stored_bytes).sum(),
            recent,
            next: backup_next,
            first_due: matches!(&facts.backups, Some(Ok(l)) if l.is_empty())
                .then(|| facts.first_backup_due.clone()),
        },
        drills: Drills {
            last,
            recent: drills,
            next: next_run(facts, "drill", now),
        },
        custody: Custody {
            stores,
            retention,
            retention_next: next_run(facts, "retention", now),
            offsite_configured: facts.offsite_configured,
            offsite,
            offsite_next: facts
                .offsite_configured
                .then(|| next_run(facts, "offsite", now))
                .flatten(),
            offsite_failure,
        },
        daemon,
    }
}

/// Missing WAL: every gap is named, with where it lies in time.
fn judge_continuity(r: &crate::backup::pitr::Report, findings: &mut Vec<Finding>) {
    for g in r.gaps.iter().take(LISTED) {
        let files = if g.files == 1 {
            format!("WAL file {} is missing", g.first)
        } else {
            format!(
                "{} WAL files are missing, {} .. {}",
                g.files, g.first, g.last
            )
        };
        let when = match (g.after, g.before) {
            (Some(a), Some(b)) => format!(
                ": points between {} and {} cannot be restored",
                time(Some(a)),
                time(Some(b))
            ),
            (Some(a), None) => format!(": points after {} cannot be restored", time(Some(a))),
            _ => String::new(),
        };
        findings.push(broken("wal", format!("{files}{when}")));
    }
    if r.gaps.len() > LISTED {
        findings.push(broken(
            "wal",
            format!("and {} more gaps in the WAL", r.gaps.len() - LISTED),
        ));
    }
    // Backups that cannot be restored (a missing object, a broken incremental chain): the
    // others still restore, so the repository is degraded, not broken.
    for (id, why) in r.broken.iter().take(LISTED) {
        findings.push(degraded(
            "backups",
            format!("backup {id} cannot be restored: {why}"),
        ));
    }
    let about_broken = |p: &str| {
        r.broken
            .keys()
            .any(|id| p.starts_with(&format!("backup {id} cannot be restored")))
    };
    for p in r.problems.iter().filter(|p| !about_broken(p)).take(LISTED) {
        findings.push(degraded("wal", p.clone()));
    }
}

fn job<'a>(facts: &'a Facts, name: &str) -> Option<&'a super::Job> {
    facts.jobs.iter().find(|j| j.name == name)
}

/// When job `name` runs next (None when it is off or unknown).
fn next_run(facts: &Facts, name: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let j = job(facts, name)?;
    next_due(j.cron.as_ref()?, j.history.last_scheduled, now).map(|t| t.max(now))
}

/// Seconds between the next two occurrences of `cron` after `now`.
fn interval(cron: &croner::Cron, now: DateTime<Utc>) -> Option<f64> {
    let a = cron.find_next_occurrence(&now, false).ok()?;
    let b = cron.find_next_occurrence(&a, false).ok()?;
    Some(seconds_between(a, b))
}

fn lock_word(mode: crate::config::LockMode) -> &'static str {
    match mode {
        crate::config::LockMode::Governance => "governance",
        crate::config::LockMode::Compliance => "compliance",
    }
}

fn broken(area: &str, message: impl Into<String>) -> Finding {
    Finding {
        health: Health::Broken,
        area: area.into(),
        message: message.into(),
    }
}

fn degraded(area: &str, message: impl Into<String>) -> Finding {
    Finding {
        health: Health::Degraded,
        area: area.into(),
        message: message.into(),
    }
}

/// A time as the status shows it: `2026-12-06 10:12:03Z` ("-" for none).
pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A duration for people, two units at most: `35d`, `2h 05m`, `13m 04s`, `4.2s`.
pub fn span(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "-".into();
    }
    let negative = seconds < 0.0;
    let s = seconds.abs();
    let text = if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let whole = s.round() as u64;
        let (d, h, m, sec) = (
            whole / 86_400,
            whole / 3600 % 24,
            whole / 60 % 60,
            whole % 60,
        );
        match (d, h) {
            (0, 0) => format!("{m}m {sec:02}s"),
            (0, _) => format!("{h}h {m:02}m"),
            (_, 0) => format!("{d}d"),
            _ => format!("{d}d {h}h"),
        }
    };
    if negative {
        format!("-{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use chrono::Duration;

    use super::*;
    use crate::backup::catalog::BackupInfo;
    use crate::backup::drill::{Evidence, Timings};
    use crate::backup::pitr::{Gap, Report};
    use crate::status::Job;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn backup(id: &str, stop: DateTime<Utc>) -> BackupInfo {
        BackupInfo {
            start_time: stop - Duration::seconds(30),
            duration_seconds: 30.0,
            ..crate::backup::catalog::example(id, stop, "0/2000100")
        }
    }

    fn report(start: DateTime<Utc>, end: DateTime<Utc>, age: f64) -> Report {
        Report {
            ok: true,
            missing: vec![],
            gaps: vec![],
            backups: 1,
            timelines: vec![1],
            segments_checked: 12,
            newest_segment: Some("00000001000000000000000D".into()),
            window_start: Some(start),
            window_end: Some(end),
            archive_age_seconds: Some(age),
            last_archived_wal: Some("00000001000000000000000D".into()),
            last_archived_in_repository: Some(true),
            problems: vec![],
            chains: vec![],
            chain_start: Some(start),
            lineage: crate::backup::timeline::Lineage::single(1),
            broken: Default::default(),
        }
    }

    fn drill(id: &str, started: DateTime<Utc>, success: bool) -> Evidence {
        Evidence {
            id: id.into(),
            success,
            error: (!success).then(|| "checks failed: markers present".into()),
            started_at: started,
            finished_at: Some(started + Duration::seconds(9)),
            target_time: Some(started - Duration::days(3)),
            oldest_day: false,
            window_start: None,
            window_end: None,
            backup_id: Some("b1".into()),
            bytes_restored: 40 << 20,
            target_skew_seconds: Some(0.4),
            timings: Timings {
                download_seconds: 1.0,
                replay_seconds: 6.0,
                checks_seconds: 2.0,
                total_seconds: 9.0,
            },
            checks: vec![],
        }
    }

    /// A healthy repository: a 36-day window, WAL archived 20 s ago, a passed drill last
    /// week, a daily backup schedule and a backup this morning.
    fn healthy(now: DateTime<Utc>) -> Facts {
        let first = now - Duration::days(36);
        let last = now - Duration::hours(5);
        Facts {
            repository: "file:///repo".into(),
            cluster: "default".into(),
            recovery_window: StdDuration::from_secs(35 * 86_400),
            rpo: StdDuration::from_secs(300),
            check: Some((Ok(report(first, now - Duration::seconds(20), 20.0)), now)),
            last_push: None,
            backups: Some(Ok(vec![backup("b0", first), backup("b1", last)])),
            first_backup_due: "is scheduled".into(),
            drills: vec![drill("d1", now - Duration::days(7), true)],
            jobs: vec![Job {
                name: "backup",
                cron: Some("0 2 * * *".parse().unwrap()),
                history: Default::default(),
            }],
            retention: None,
            offsite_configured: false,
            offsite: None,
            stores: vec![],
        }
    }

    fn ready() -> Option<Daemon> {
        Some(Daemon {
            url: "http://127.0.0.1:9432".into(),
            reachable: true,
            error: None,
            version: Some("0".into()),
            unmet: vec![],
            failing_collectors: vec![],
        })
    }

    fn messages(s: &Status) -> Vec<String> {
        s.findings.iter().map(|f| f.message.clone()).collect()
    }

    #[test]
    fn a_proven_window_longer_than_the_goal_within_the_rpo_is_healthy() {
        let now = t("2026-12-06T10:00:00Z");
        let s = gather(&healthy(now), ready(), now);
        assert_eq!(s.health, Health::Healthy, "{:?}", messages(&s));
        assert_eq!(s.health.exit_code(), 0);
        assert_eq!(s.backups.recent.len(), 2);
        assert_eq!(s.backups.recent[0].id, "b1", "newest first");
        assert_eq!(s.backups.next, Some(t("2026-12-07T02:00:00Z")));
        assert!(s.window.covered_seconds.unwrap() > 35.0 * 86_400.0);
        assert_eq!(
            s.drills.last.as_ref().map(|d| d.rto.total_seconds),
            Some(9.0)
        );
    }

    #[test]
    fn a_short_window_an_old_archive_an_old_backup_and_a_silent_daemon_are_degraded() {
        let now = t("2026-12-06T10:00:00Z");
        let mut f = healthy(now);
        f.check = Some((Ok(report(now - Duration::days(12), now, 900.0)), now));
        f.backups = Some(Ok(vec![backup("b0", now - Duration::days(3))]));
        let silent = Some(Daemon {
            reachable: false,
            error: Some("connection refused".into()),
            ..ready().unwrap()
        });
        let s = gather(&f, silent, now);
        assert_eq!(s.health, Health::Degraded);
        assert_eq!(s.health.exit_code(), 1);
        let m = messages(&s).join("\n");
        for expected in [
            "the recovery window is 12d of the 35d goal",
            "archived 15m 00s ago, above pitr.rpo (5m 00s)",
            "the newest backup (b0) is 3d old; backup.schedule takes one every 1d",
            "does not answer (connection refused)",
        ] {
            assert!(m.contains(expected), "{expected:?} in\n{m}");
        }
    }

    #[test]
    fn no_backup_a_gap_and_a_failed_drill_are_broken_and_named() {
        let now = t("2026-12-06T10:00:00Z");
        let mut f = healthy(now);
        f.backups = Some(Ok(vec![]));
        let s = gather(&f, ready(), now);
        assert_eq!(s.health, Health::Broken);
        assert_eq!(s.health.exit_code(), 2);
        assert!(messages(&s)[0]
            .starts_with("no backup yet: nothing can be restored; the first one is scheduled"));
        assert_eq!(s.backups.first_due.as_deref(), Some("is scheduled"));

        let mut f = healthy(now);
        let mut r = report(now - Duration::days(36), now, 20.0);
        r.missing = vec![
            "000000010000000000000005".into(),
            "000000010000000000000006".into(),
        ];
        r.gaps = vec![Gap {
            first: "000000010000000000000005".into(),
            last: "000000010000000000000006".into(),
            files: 2,
            after: Some(t("2026-12-01T00:00:00Z")),
            before: Some(t("2026-12-01T01:00:00Z")),
        }];
        f.check = Some((Ok(r), now));
        f.drills.push(drill("d2", now - Duration::days(1), false));
        let s = gather(&f, ready(), now);
        assert_eq!(s.health, Health::Broken);
        let m = messages(&s);
        assert!(m.contains(&"2 WAL files are missing, 000000010000000000000005 .. 000000010000000000000006: points between 2026-12-01 00:00:00Z and 2026-12-01 01:00:00Z cannot be restored".to_string()), "{m:?}");
        assert!(
            m.contains(
                &"the last restore drill (d2) failed: checks failed: markers present".to_string()
            ),
            "{m:?}"
        );
        assert_eq!(s.drills.last.as_ref().map(|d| d.success), Some(false));
        assert_eq!(s.drills.recent.len(), 2);
        // Broken findings come first.
        assert!(s.findings.windows(2).all(|w| w[0].health >= w[1].health));
    }

    #[test]
    fn a_backup_that_cannot_be_restored_is_named_once_and_degrades() {
        let now = t("2026-12-06T10:00:00Z");
        let mut f = healthy(now);
        let mut r = report(now - Duration::days(36), now, 20.0);
        let why =
            "its parent backup b1 is broken: its object c/backups/b1/base.0.tar.zst is missing";
        r.broken.insert("b2".into(), why.into());
        r.problems
            .push(format!("backup b2 cannot be restored: {why}"));
        r.ok = false;
        f.check = Some((Ok(r), now));
        let s = gather(&f, ready(), now);
        assert_eq!(s.health, Health::Degraded);
        let m = messages(&s);
        let named: Vec<_> = m
            .iter()
            .filter(|m| m.contains("backup b2 cannot be restored"))
            .collect();
        assert_eq!(named.len(), 1, "{m:?}");
        assert!(s.findings.iter().any(|f| f.area == "backups"));
    }

    #[test]
    fn the_rpo_is_brought_to_now_between_checks_and_by_the_daemons_last_push() {
        let now = t("2026-12-06T10:00:00Z");
        let mut f = healthy(now);
        // Checked four minutes ago, when the archive was 30 s old: 4m 30s now.
        let at = now - Duration::minutes(4);
        f.check = Some((Ok(report(now - Duration::days(36), at, 30.0)), at));
        let s = gather(&f, ready(), now);
        assert_eq!(s.wal.archive_age_seconds, Some(270.0));
        // The daemon saw a push 5 s ago.
        f.last_push = Some(now - Duration::seconds(5));
        let s = gather(&f, ready(), now);
        assert_eq!(s.wal.archive_age_seconds, Some(5.0));
        assert_eq!(s.health, Health::Healthy, "{:?}", messages(&s));
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(span(4.21), "4.2s");
        assert_eq!(span(784.0), "13m 04s");
        assert_eq!(span(7500.0), "2h 05m");
        assert_eq!(span(35.0 * 86_400.0), "35d");
        assert_eq!(span(36.5 * 86_400.0), "36d 12h");
        assert_eq!(span(f64::NAN), "-");
        assert_eq!(
            time(Some(t("2026-12-06T10:00:00.7Z"))),
            "2026-12-06 10:00:00Z"
        );
    }
}
