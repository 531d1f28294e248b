//! `pgvigil status` for a terminal: the verdict and why first, then one line per question
//! (window, RPO, WAL, backups, drills, custody, daemon), so the answer to "can I restore,
//! to when, and how long will it take" is in the first five lines.

use std::fmt::Write;

use indicatif::HumanBytes;

use super::gather::{span, time};
use super::{Health, Status};

/// How many backups are listed.
const BACKUPS_LISTED: usize = 5;

/// The status as text, one screen.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "{}  {} (cluster {}) at {}",
        s.health.word(),
        s.repository,
        s.cluster,
        time(Some(s.generated_at))
    );
    for f in &s.findings {
        let mark = if f.health == Health::Broken {
            "!!"
        } else {
            " !"
        };
        let _ = writeln!(w, "{mark} {}", f.message);
    }
    let _ = writeln!(w);

    let win = &s.window;
    let covered = win
        .covered_seconds
        .map(|c| format!("{} of the {} goal", span(c), span(win.goal_seconds as f64)))
        .unwrap_or_else(|| "none yet".into());
    let _ = writeln!(
        w,
        "recovery window  {} .. {}  ({covered})",
        time(win.earliest),
        time(win.latest)
    );
    let wal = &s.wal;
    let rpo = match wal.archive_age_seconds {
        Some(age) => format!(
            "{} since the last WAL was archived (pitr.rpo {}){}",
            span(age),
            span(wal.rpo_seconds as f64),
            wal.last_archived_wal
                .as_deref()
                .map(|n| format!(", {n}"))
                .unwrap_or_default()
        ),
        None => "no WAL archived yet".into(),
    };
    let _ = writeln!(w, "RPO now          {rpo}");
    let continuity = match (&wal.checked_at, &wal.check_error) {
        (None, _) => "not checked yet".to_string(),
        (Some(_), Some(e)) => format!("check failed: {e}"),
        (Some(at), None) if wal.gaps.is_empty() => format!(
            "continuous: {} segment(s) checked on timeline(s) {:?}, newest {} (checked {})",
            wal.segments_checked,
            wal.timelines,
            wal.newest_segment.as_deref().unwrap_or("-"),
            time(Some(*at))
        ),
        (Some(_), None) => format!("{} gap(s)", wal.gaps.len()),
    };
    let _ = writeln!(w, "WAL              {continuity}");
    for g in &wal.gaps {
        let _ = writeln!(
            w,
            "                 GAP {} .. {} ({} file(s)), between {} and {}",
            g.first,
            g.last,
            g.files,
            time(g.after),
            time(g.before)
        );
    }

    let b = &s.backups;
    let next = b
        .next
        .map(|t| format!("; next {}", time(Some(t))))
        .unwrap_or_else(|| "; backup.schedule is off".into());
    match (&b.error, b.count) {
        (Some(e), _) => {
            let _ = writeln!(w, "backups          cannot be read: {e}");
        }
        (None, 0) => {
            let due = b.first_due.as_deref().unwrap_or("");
            let _ = writeln!(w, "backups          none yet; the first one {due}");
        }
        (None, n) => {
            let _ = writeln!(
                w,
                "backups          {n}, {} stored{next}",
                HumanBytes(b.stored_bytes)
            );
        }
    }
    for l in b.recent.iter().take(BACKUPS_LISTED) {
        let kind = match (&l.kind, &l.parent) {
            (Some(k), Some(p)) => format!("{k} of {p}"),
            (Some(k), None) => k.clone(),
            _ => "full".into(),
        };
        let _ = writeln!(
            w,
            "  {:<18} {:<12} {:>10} stored {:>10} raw  took {:<8} {} ago",
            l.id,
            kind,
            HumanBytes(l.stored_bytes).to_string(),
            HumanBytes(l.raw_bytes).to_string(),
            span(l.duration_seconds),
            span(l.age_seconds)
        );
    }

    let d = &s.drills;
    match &d.last {
        Some(l) => {
            let rto = &l.rto;
            let _ = writeln!(
                w,
                "last drill       {} {} {} ago: target {}, backup {}, RTO {} (download {} + replay {} + checks {})",
                l.id,
                if l.success { "PASSED" } else { "FAILED" },
                span((s.generated_at - l.started_at).num_milliseconds() as f64 / 1000.0),
                time(l.target_time),
                l.backup_id.as_deref().unwrap_or("-"),
                span(rto.total_seconds),
                span(rto.download_seconds),
                span(rto.replay_seconds),
                span(rto.checks_seconds)
            );
            if let Some(e) = &l.error {
                let _ = writeln!(w, "                 error: {e}");
            }
        }
        None => {
            let _ = writeln!(
                w,
                "last drill       none in the last {} days",
                super::HORIZON_DAYS
            );
        }
    }
    let _ = writeln!(w, "next drill       {}", next_or_off(d.next));

    let c = &s.custody;
    for (i, st) in c.stores.iter().enumerate() {
        let residency = match &st.residency {
            None => "residency not checked yet".to_string(),
            Some(r) => format!(
                "{} ({})",
                if r.ok {
                    "residency ok"
                } else {
                    "RESIDENCY REFUSED"
                },
                r.message
            ),
        };
        let lock = match (&st.object_lock, st.oldest_lock_until) {
            (Some(m), Some(t)) => format!("Object Lock {m}, oldest lock until {}", time(Some(t))),
            (Some(m), None) => format!("Object Lock {m}"),
            (None, _) => "Object Lock off".into(),
        };
        let head = if i == 0 { "custody" } else { "" };
        let _ = writeln!(w, "{head:<16} {} {}: {residency}; {lock}", st.label, st.url);
    }
    let retention = match &c.retention {
        None => "never ran".to_string(),
        Some(r) => {
            let did: Vec<String> = r
                .stores
                .iter()
                .map(|st| {
                    format!(
                        "{}: deleted {} backup(s), {} WAL file(s), {} orphan(s) ({}), {} locked",
                        st.store,
                        st.deleted_backups,
                        st.deleted_wal_files,
                        st.deleted_orphans,
                        HumanBytes(st.deleted_bytes),
                        st.locked_objects
                    )
                })
                .collect();
            let failed = r
                .error
                .as_ref()
                .map(|e| format!("; FAILED: {e}"))
                .unwrap_or_default();
            format!(
                "last run {}: {}{failed}",
                time(Some(r.finished)),
                did.join("; ")
            )
        }
    };
    let _ = writeln!(
        w,
        "retention        {retention}; next {}",
        next_or_off(c.retention_next)
    );
    if c.offsite_configured {
        let last = match &c.offsite {
            Some(o) => format!(
                "last {}: backup {} to {}, {} object(s) ({}){}",
                time(Some(o.finished)),
                o.backup_id,
                o.destination,
                o.objects_copied,
                HumanBytes(o.bytes_copied),
                if o.verified { " verified" } else { "" }
            ),
            None => "none yet".into(),
        };
        let failed = c
            .offsite_failure
            .as_ref()
            .map(|f| format!("; then FAILED: {f}"))
            .unwrap_or_default();
        let _ = writeln!(
            w,
            "off-site copy    {last}{failed}; next {}",
            next_or_off(c.offsite_next)
        );
    } else {
        let _ = writeln!(w, "off-site copy    not configured ([offsite] url)");
    }

    match &s.daemon {
        None => {}
        Some(d) if !d.reachable => {
            let _ = writeln!(
                w,
                "daemon           {} not answering: {}",
                d.url,
                d.error.as_deref().unwrap_or("-")
            );
        }
        Some(d) => {
            let ready = if d.unmet.is_empty() {
                "ready".to_string()
            } else {
                format!("NOT READY (waiting for {})", d.unmet.join(", "))
            };
            let collectors = if d.failing_collectors.is_empty() {
                "collectors ok".to_string()
            } else {
                format!("collectors FAILING: {}", d.failing_collectors.join(", "))
            };
            let _ = writeln!(
                w,
                "daemon           {} {ready}; {collectors}{}",
                d.url,
                d.version
                    .as_deref()
                    .map(|v| format!("; version {v}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

fn next_or_off(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| time(Some(t)))
        .unwrap_or_else(|| "off (schedule \"off\")".into())
}
