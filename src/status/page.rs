//! The status page the daemon serves at `/` and `/status`: the same facts as
//! `pgvigil status`, plus the picture of the recovery window (`timeline.rs`: the last 40
//! days, and a close-up of the last day). One self-contained HTML document: inline CSS and
//! SVG, no script, no external asset, readable without JavaScript, light or dark as the
//! browser prefers (`prefers-color-scheme`). It refreshes itself every minute (a meta
//! refresh, for wall screens).
//!
//! Everything that comes from outside (backup ids, segment names, error texts, URLs) is
//! escaped by [`escape`] where it is written; nothing is written unescaped but the page's
//! own markup.

use std::fmt::Write;

use chrono::Duration;
use indicatif::HumanBytes;

use super::gather::{span, time};
use super::{timeline, Health, Status, HORIZON_DAYS};

/// `text` safe inside HTML and SVG text and attribute values (double- or single-quoted).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters have no place in a page (and some are invalid in XML).
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --panel: #f6f8fa;
  --line: #d1d9e0; --ok: #1a7f37; --warn: #9a6700; --bad: #d1242f; --band: #4ac26b; --backup: #0969da; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --panel: #151b23; --line: #3d444d;
    --ok: #3fb950; --warn: #d29922; --bad: #f85149; --band: #2ea043; --backup: #4493f8; } }
body { background: var(--bg); color: var(--fg); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1000px; padding: 16px; }
h1 { font-size: 22px; margin: 0; } h2 { font-size: 16px; margin: 22px 0 6px; }
.verdict { border-left: 8px solid var(--ok); background: var(--panel); padding: 10px 14px; }
.verdict.degraded { border-color: var(--warn); } .verdict.broken { border-color: var(--bad); }
.verdict p { margin: 4px 0 0; color: var(--muted); }
ul.findings { margin: 8px 0 0; padding-left: 20px; } li.broken { color: var(--bad); } li.degraded { color: var(--warn); }
dl { display: grid; grid-template-columns: 150px 1fr; gap: 4px 12px; margin: 0; } dt { color: var(--muted); } dd { margin: 0; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
.ok { color: var(--ok); } .bad, .failed { color: var(--bad); font-weight: 600; } .warn { color: var(--warn); }
footer { margin-top: 24px; color: var(--muted); } a { color: var(--backup); }
svg.timeline { display: block; margin: 6px 0 2px; background: var(--panel); border-radius: 6px; }
svg text { fill: var(--fg); font: 11px system-ui, sans-serif; } svg .row { fill: var(--muted); font-weight: 600; }
svg .tick { fill: var(--muted); } svg .grid { stroke: var(--line); stroke-width: 1; }
svg .band { fill: var(--band); } svg .gap { fill: var(--bad); } svg .gap-label { fill: var(--bad); font-weight: 700; }
svg .rpo { fill: var(--warn); opacity: 0.55; } svg .rpo-late { fill: var(--bad); } svg .rpo-label { fill: var(--muted); }
svg .window { fill: none; stroke: var(--fg); stroke-width: 1.5; }
svg .backup-run { fill: var(--backup); opacity: 0.35; } svg .backup-mark { fill: var(--backup); }
svg .drill-pass circle { fill: var(--ok); } svg .drill-fail circle { fill: var(--bad); } svg .drill-fail text { fill: var(--bad); font-weight: 700; }
svg .goal { stroke: var(--warn); stroke-width: 1.5; stroke-dasharray: 5 4; } svg .goal-label { fill: var(--warn); }
svg .now { stroke: var(--fg); stroke-width: 1; }
.legend { color: var(--muted); font-size: 12px; }
"#;

/// The page of `s`.
pub fn render(s: &Status) -> String {
    let mut o = String::with_capacity(32 * 1024);
    let verdict = match s.health {
        Health::Healthy => "healthy",
        Health::Degraded => "degraded",
        Health::Broken => "broken",
    };
    let _ = write!(
        o,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="60"><title>pgvigil: {} ({})</title><style>{STYLE}</style></head><body>"#,
        s.health.word(),
        escape(&s.cluster)
    );
    let _ = write!(
        o,
        r#"<header class="verdict {verdict}" id="verdict"><h1>{}</h1><p>{} (cluster {}) at {}</p>"#,
        s.health.word(),
        escape(&s.repository),
        escape(&s.cluster),
        escape(&time(Some(s.generated_at)))
    );
    if !s.findings.is_empty() {
        o.push_str(r#"<ul class="findings">"#);
        for f in &s.findings {
            let class = if f.health == Health::Broken {
                "broken"
            } else {
                "degraded"
            };
            let _ = write!(o, r#"<li class="{class}">{}</li>"#, escape(&f.message));
        }
        o.push_str("</ul>");
    }
    o.push_str("</header>");

    // The picture.
    let now = s.generated_at;
    o.push_str(r#"<section id="timeline"><h2>Recovery window</h2>"#);
    o.push_str(&timeline::strip(
        s,
        now - Duration::days(HORIZON_DAYS),
        now,
        &format!("the last {HORIZON_DAYS} days"),
    ));
    let recent = timeline::recent_from(s);
    o.push_str(&timeline::strip(
        s,
        recent,
        now,
        &format!("the last {}", span((now - recent).num_seconds() as f64)),
    ));
    let _ = write!(
        o,
        r#"<p class="legend">Above: the last {HORIZON_DAYS} days; below: the last {}. Blue: backups (a mark where each ended). Green band: archived WAL, red: a gap (named), amber at its end: the RPO now. The bracket under it: the recovery window. Dots: drills at the point they restored to, green passed, red failed, with their RTO. Dashed: the {} goal.</p>"#,
        span((now - recent).num_seconds() as f64),
        span(s.window.goal_seconds as f64)
    );
    o.push_str("</section>");

    summary(&mut o, s);
    gaps(&mut o, s);
    backups(&mut o, s);
    drills(&mut o, s);
    custody(&mut o, s);
    daemon(&mut o, s);
    o.push_str(r#"<footer><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a> · <a href="/status.json">/status.json</a> · pgvigil</footer></body></html>"#);
    o.push('\n');
    o
}

fn summary(o: &mut String, s: &Status) {
    let w = &s.window;
    let covered = w
        .covered_seconds
        .map(|c| format!("{} of the {} goal", span(c), span(w.goal_seconds as f64)))
        .unwrap_or_else(|| "no window yet".into());
    let wal = &s.wal;
    let rpo = match wal.archive_age_seconds {
        Some(a) => {
            let class = if a > wal.rpo_seconds as f64 {
                "bad"
            } else {
                "ok"
            };
            format!(
                r#"<span class="{class}">{}</span> since the last WAL was archived (pitr.rpo {})"#,
                escape(&span(a)),
                escape(&span(wal.rpo_seconds as f64))
            )
        }
        None => "no WAL archived yet".into(),
    };
    let continuity = match (&wal.checked_at, &wal.check_error) {
        (None, _) => "not checked yet".to_string(),
        (Some(_), Some(e)) => format!(r#"<span class="bad">check failed: {}</span>"#, escape(e)),
        (Some(at), None) if wal.gaps.is_empty() => format!(
            r#"<span class="ok">continuous</span>: {} segment(s) checked, newest <code>{}</code>, checked {}"#,
            wal.segments_checked,
            escape(wal.newest_segment.as_deref().unwrap_or("-")),
            escape(&time(Some(*at)))
        ),
        (Some(_), None) => format!(
            r#"<span class="bad">{} gap(s)</span>: see below"#,
            wal.gaps.len()
        ),
    };
    let problems: String = wal
        .problems
        .iter()
        .map(|p| format!(r#"<br><span class="warn">{}</span>"#, escape(p)))
        .collect();
    let _ = write!(
        o,
        r#"<section id="summary"><h2>Now</h2><dl><dt>recovery window</dt><dd>{} .. {} ({covered})</dd><dt>RPO now</dt><dd>{rpo}</dd><dt>WAL continuity</dt><dd>{continuity}{problems}</dd></dl></section>"#,
        escape(&time(w.earliest)),
        escape(&time(w.latest))
    );
}

fn gaps(o: &mut String, s: &Status) {
    if s.wal.gaps.is_empty() {
        return;
    }
    o.push_str(r#"<section id="gaps"><h2>WAL gaps</h2><ul>"#);
    for g in &s.wal.gaps {
        let _ = write!(
            o,
            r#"<li class="gap bad">missing <code>{}</code>{} ({} file(s)): points between {} and {} cannot be restored</li>"#,
            escape(&g.first),
            if g.last == g.first {
                String::new()
            } else {
                format!(" .. <code>{}</code>", escape(&g.last))
            },
            g.files,
            escape(&time(g.after)),
            escape(&time(g.before))
        );
    }
    o.push_str("</ul></section>");
}

fn backups(o: &mut String, s: &Status) {
    let b = &s.backups;
    let _ = write!(
        o,
        r#"<section id="backups"><h2>Backups</h2><p>{} in the repository, {} stored; next {}</p>"#,
        b.count,
        HumanBytes(b.stored_bytes),
        escape(&next(b.next))
    );
    if let Some(e) = &b.error {
        let _ = write!(
            o,
            r#"<p class="bad">cannot read the catalogue: {}</p>"#,
            escape(e)
        );
    }
    if b.count == 0 {
        if let Some(due) = &b.first_due {
            let _ = write!(o, "<p>No backup yet; the first one {}.</p>", escape(due));
        }
    }
    if !b.recent.is_empty() {
        o.push_str(r#"<table><thead><tr><th>id</th><th>kind</th><th>ended</th><th>age</th><th class="num">stored</th><th class="num">raw</th><th class="num">took</th><th>timeline</th></tr></thead><tbody>"#);
        for l in &b.recent {
            let kind = match (&l.kind, &l.parent) {
                (Some(k), Some(p)) => format!("{} of {}", escape(k), escape(p)),
                (Some(k), None) => escape(k),
                _ => "full".into(),
            };
            let _ = write!(
                o,
                r#"<tr class="backup"><td class="mono">{}</td><td>{kind}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td></tr>"#,
                escape(&l.id),
                escape(&time(Some(l.stop_time))),
                escape(&span(l.age_seconds)),
                HumanBytes(l.stored_bytes),
                HumanBytes(l.raw_bytes),
                escape(&span(l.duration_seconds)),
                l.timeline
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");
}

fn drills(o: &mut String, s: &Status) {
    let d = &s.drills;
    let _ = write!(
        o,
        r#"<section id="drills"><h2>Restore drills</h2><p>next {}</p>"#,
        escape(&next(d.next))
    );
    if d.recent.is_empty() {
        let _ = write!(
            o,
            r#"<p class="warn">No drill in the last {HORIZON_DAYS} days.</p>"#
        );
    } else {
        o.push_str(r#"<table><thead><tr><th>id</th><th>result</th><th>target</th><th>backup</th><th class="num">RTO</th><th>download + replay + checks</th><th>error</th></tr></thead><tbody>"#);
        for l in &d.recent {
            let (class, word) = if l.success {
                ("passed ok", "passed")
            } else {
                ("failed", "FAILED")
            };
            let r = &l.rto;
            let _ = write!(
                o,
                r#"<tr class="drill {class}"><td class="mono">{}</td><td class="{class}">{word}</td><td>{}</td><td class="mono">{}</td><td class="num">{}</td><td>{} + {} + {}</td><td>{}</td></tr>"#,
                escape(&l.id),
                escape(&time(l.target_time)),
                escape(l.backup_id.as_deref().unwrap_or("-")),
                escape(&span(r.total_seconds)),
                escape(&span(r.download_seconds)),
                escape(&span(r.replay_seconds)),
                escape(&span(r.checks_seconds)),
                escape(l.error.as_deref().unwrap_or(""))
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");
}

fn custody(o: &mut String, s: &Status) {
    let c = &s.custody;
    o.push_str(r#"<section id="custody"><h2>Custody</h2><dl>"#);
    for st in &c.stores {
        let residency = match &st.residency {
            None => "residency not checked yet".to_string(),
            Some(r) => format!(
                r#"<span class="{}">{}</span> {}{}"#,
                if r.ok { "ok" } else { "bad" },
                if r.ok {
                    "residency ok"
                } else {
                    "residency REFUSED"
                },
                escape(&r.message),
                r.region
                    .as_deref()
                    .map(|reg| format!(" (region {})", escape(reg)))
                    .unwrap_or_default()
            ),
        };
        let lock = match (&st.object_lock, st.oldest_lock_until) {
            (Some(m), Some(t)) => format!(
                "Object Lock {}, oldest lock until {}",
                escape(m),
                escape(&time(Some(t)))
            ),
            (Some(m), None) => format!("Object Lock {}", escape(m)),
            (None, _) => "Object Lock off".into(),
        };
        let _ = write!(
            o,
            r#"<dt>{} repository</dt><dd><code>{}</code>: {residency}; {lock}</dd>"#,
            escape(&st.label),
            escape(&st.url)
        );
    }
    let retention = match &c.retention {
        None => "never ran".to_string(),
        Some(r) => {
            let mut t = format!("{}:", escape(&time(Some(r.finished))));
            for st in &r.stores {
                let _ = write!(
                    t,
                    " {} deleted {} backup(s), {} WAL file(s), {} orphan(s) ({}), {} locked",
                    escape(&st.store),
                    st.deleted_backups,
                    st.deleted_wal_files,
                    st.deleted_orphans,
                    HumanBytes(st.deleted_bytes),
                    st.locked_objects
                );
            }
            if let Some(e) = &r.error {
                let _ = write!(t, r#"<span class="bad">FAILED: {}</span>"#, escape(e));
            }
            t
        }
    };
    let _ = write!(
        o,
        "<dt>last retention</dt><dd>{retention}. Next {}.</dd>",
        escape(&next(c.retention_next))
    );
    let offsite = if !c.offsite_configured {
        "not configured".to_string()
    } else {
        let mut t = match &c.offsite {
            Some(l) => format!(
                "{}: backup <code>{}</code> to <code>{}</code>, {} object(s) ({}){}.",
                escape(&time(Some(l.finished))),
                escape(&l.backup_id),
                escape(&l.destination),
                l.objects_copied,
                HumanBytes(l.bytes_copied),
                if l.verified { ", verified" } else { "" }
            ),
            None => "none yet.".into(),
        };
        if let Some(f) = &c.offsite_failure {
            let _ = write!(t, r#" <span class="bad">Then FAILED: {}</span>"#, escape(f));
        }
        let _ = write!(t, " Next {}.", escape(&next(c.offsite_next)));
        t
    };
    let _ = write!(
        o,
        "<dt>last off-site copy</dt><dd>{offsite}</dd></dl></section>"
    );
}

fn daemon(o: &mut String, s: &Status) {
    let Some(d) = &s.daemon else {
        return;
    };
    // Good when nothing is listed, else what is wrong and the list.
    let judged = |list: &[String], good: &str, bad: &str| {
        if list.is_empty() {
            format!(r#"<span class="ok">{good}</span>"#)
        } else {
            format!(
                r#"<span class="bad">{bad}</span>: {}"#,
                escape(&list.join(", "))
            )
        }
    };
    let ready = judged(&d.unmet, "ready", "not ready, waiting for");
    let collectors = judged(&d.failing_collectors, "every collector answers", "failing");
    let _ = write!(
        o,
        r#"<section id="daemon"><h2>The daemon</h2><dl><dt>readiness</dt><dd>{ready}</dd><dt>collectors</dt><dd>{collectors}</dd><dt>version</dt><dd>{}</dd></dl></section>"#,
        escape(d.version.as_deref().unwrap_or("-"))
    );
}

fn next(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| time(Some(t)))
        .unwrap_or_else(|| "off (schedule \"off\")".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_no_markup_from_outside() {
        let hostile = r#"</td><script>alert('x')</script><img src=x onerror="y"> & "q""#;
        let e = escape(hostile);
        assert_eq!(
            e,
            "&lt;/td&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=&quot;y&quot;&gt; &amp; &quot;q&quot;"
        );
        for c in ['<', '>', '"', '\''] {
            assert!(!e.contains(c), "{c} survived: {e}");
        }
        // Every & left starts an entity this function wrote.
        assert!(e
            .match_indices('&')
            .all(|(i, _)| ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                .iter()
                .any(|ent| e[i..].starts_with(ent))));
        assert_eq!(
            escape("backup\u{0}\u{1b}[31m"),
            "backup\u{FFFD}\u{FFFD}[31m"
        );
        assert_eq!(escape("20261206T101112Z"), "20261206T101112Z");
    }
}
