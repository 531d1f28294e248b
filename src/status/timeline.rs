//! The picture of the recovery window: an inline SVG strip over a span of time with a row
//! of backups (one mark each, at its end), the WAL coverage as a band from the oldest
//! backup's start to the last archived file with every gap cut out in red and named, the
//! recovery window as a bracket under it, the RPO now at its right end, drills as points
//! coloured by their result and labelled with their RTO, the recovery-window goal as a
//! dashed line, and now. Drawn by hand (no template crate, no script): colours come from
//! the page's stylesheet classes, so the light and dark schemes apply, and every text
//! from outside goes through [`escape`].

use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};

use super::gather::{span, time};
use super::page::escape;
use super::Status;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 196.0;
/// Room for the row names on the left, and for "now" on the right.
const LEFT: f64 = 84.0;
const RIGHT: f64 = 24.0;

/// The rows' vertical places.
const AXIS_Y: f64 = 30.0;
const BACKUPS_Y: f64 = 44.0;
const BAND_Y: f64 = 82.0;
const BAND_H: f64 = 20.0;
const GAP_LABEL_Y: f64 = 118.0;
const DRILLS_Y: f64 = 150.0;

/// A strip from `from` to `to` (now), titled `title`.
pub fn strip(s: &Status, from: DateTime<Utc>, to: DateTime<Utc>, title: &str) -> String {
    let scale = Scale { from, to };
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="timeline" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(title)
    );
    let _ = write!(o, "<title>{}</title>", escape(title));
    axis(&mut o, &scale);
    for (y, name) in [
        (BACKUPS_Y + 14.0, "backups"),
        (BAND_Y + 14.0, "WAL"),
        (DRILLS_Y + 4.0, "drills"),
    ] {
        let _ = write!(o, r#"<text class="row" x="4" y="{y}">{name}</text>"#);
    }
    goal(&mut o, s, &scale);
    wal(&mut o, s, &scale);
    backups(&mut o, s, &scale);
    drills(&mut o, s, &scale);
    let now = scale.x(to);
    let _ = write!(
        o,
        r#"<line class="now" x1="{now:.1}" y1="{AXIS_Y}" x2="{now:.1}" y2="{}"/><text class="tick" x="{now:.1}" y="{}" text-anchor="end">now</text>"#,
        HEIGHT - 14.0,
        HEIGHT - 4.0
    );
    o.push_str("</svg>");
    o
}

/// The span of the second, close-up strip: the last day, or less when everything of
/// interest is younger (a new deployment), so its marks do not pile up at "now".
pub fn recent_from(s: &Status) -> DateTime<Utc> {
    let now = s.generated_at;
    let day = now - Duration::hours(24);
    let times = s
        .backups
        .recent
        .iter()
        .flat_map(|b| [b.start_time, b.stop_time])
        .chain(s.wal.coverage_from)
        .chain(s.drills.recent.iter().map(|d| d.at()))
        .chain(s.wal.gaps.iter().filter_map(|g| g.after))
        .filter(|t| *t >= day);
    let earliest = times.min().unwrap_or(day);
    let seconds = ((now - earliest).num_seconds() as f64 * 1.1).max(60.0);
    (now - Duration::seconds(seconds as i64)).max(day)
}

struct Scale {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Scale {
    fn seconds(&self) -> f64 {
        ((self.to - self.from).num_milliseconds() as f64 / 1000.0).max(1.0)
    }

    /// The x of `t`, clamped to the strip.
    fn x(&self, t: DateTime<Utc>) -> f64 {
        let f = (t - self.from).num_milliseconds() as f64 / 1000.0 / self.seconds();
        LEFT + f.clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn contains(&self, t: DateTime<Utc>) -> bool {
        t >= self.from && t <= self.to
    }
}

/// Ticks at a round step, about six across.
fn axis(o: &mut String, scale: &Scale) {
    const STEPS: [i64; 16] = [
        5,
        10,
        15,
        30,
        60,
        300,
        600,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86_400,
        2 * 86_400,
        5 * 86_400,
        10 * 86_400,
    ];
    let total = scale.seconds();
    let step = STEPS
        .into_iter()
        .find(|s| total / *s as f64 <= 8.0)
        .unwrap_or(10 * 86_400);
    let first = scale.from.timestamp().div_euclid(step) * step + step;
    let format = match step {
        86_400.. => "%b %d",
        60.. => "%H:%M",
        _ => "%H:%M:%S",
    };
    let _ = write!(
        o,
        r#"<line class="grid" x1="{LEFT}" y1="{AXIS_Y}" x2="{}" y2="{AXIS_Y}"/>"#,
        WIDTH - RIGHT
    );
    let mut t = first;
    // Bounded: at most eight steps fit.
    for _ in 0..12 {
        let Some(at) = DateTime::<Utc>::from_timestamp(t, 0).filter(|at| *at < scale.to) else {
            break;
        };
        let x = scale.x(at);
        let _ = write!(
            o,
            r#"<line class="grid" x1="{x:.1}" y1="{AXIS_Y}" x2="{x:.1}" y2="{}"/><text class="tick" x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            HEIGHT - 14.0,
            AXIS_Y - 8.0,
            at.format(format)
        );
        t += step;
    }
}

/// The recovery-window goal: points older than this line must still be restorable.
fn goal(o: &mut String, s: &Status, scale: &Scale) {
    let goal = s.generated_at - Duration::seconds(s.window.goal_seconds as i64);
    if !scale.contains(goal) {
        return;
    }
    let x = scale.x(goal);
    let _ = write!(
        o,
        r#"<line class="goal" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}"/><text class="goal-label" x="{:.1}" y="{}">{} goal</text>"#,
        AXIS_Y + 2.0,
        HEIGHT - 14.0,
        x + 4.0,
        HEIGHT - 4.0,
        span(s.window.goal_seconds as f64)
    );
}

fn wal(o: &mut String, s: &Status, scale: &Scale) {
    let w = &s.wal;
    let last_archived = w
        .archive_age_seconds
        .map(|a| s.generated_at - Duration::milliseconds((a * 1000.0) as i64));
    if let (Some(from), Some(to)) = (w.coverage_from, last_archived) {
        let (x1, x2) = (scale.x(from), scale.x(to));
        let _ = write!(
            o,
            r#"<rect class="band" x="{x1:.1}" y="{BAND_Y}" width="{:.1}" height="{BAND_H}"><title>WAL archived from {} to {}</title></rect>"#,
            (x2 - x1).max(1.0),
            escape(&time(Some(from))),
            escape(&time(Some(to)))
        );
    }
    // The RPO now: what would be lost if the server died this instant.
    if let Some(to) = last_archived {
        let (x1, x2) = (scale.x(to), scale.x(s.generated_at));
        let late = w.archive_age_seconds.unwrap_or(0.0) > w.rpo_seconds as f64;
        let _ = write!(
            o,
            r#"<rect class="{}" x="{x1:.1}" y="{BAND_Y}" width="{:.1}" height="{BAND_H}"><title>RPO now: {}</title></rect><text class="rpo-label" x="{x2:.1}" y="{}" text-anchor="end">RPO {}</text>"#,
            if late { "rpo-late" } else { "rpo" },
            (x2 - x1).max(2.0),
            escape(&span(w.archive_age_seconds.unwrap_or(0.0))),
            BAND_Y - 3.0,
            escape(&span(w.archive_age_seconds.unwrap_or(0.0)))
        );
    }
    // The window: the points a restore can reach.
    if let (Some(a), Some(b)) = (s.window.earliest, s.window.latest) {
        let (x1, x2) = (scale.x(a), scale.x(b));
        let y = BAND_Y + BAND_H + 4.0;
        let _ = write!(
            o,
            r#"<path class="window" d="M{x1:.1} {:.1} V{y:.1} H{x2:.1} V{:.1}"><title>recovery window {} .. {}</title></path>"#,
            y - 3.0,
            y - 3.0,
            escape(&time(Some(a))),
            escape(&time(Some(b)))
        );
    }
    for (i, g) in w.gaps.iter().enumerate() {
        let (Some(a), b) = (g.after, g.before.or(Some(s.generated_at))) else {
            continue;
        };
        let (x1, x2) = (scale.x(a), scale.x(b.unwrap_or(a)));
        let width = (x2 - x1).max(4.0);
        let label = if g.files == 1 {
            format!("gap {}", g.first)
        } else {
            format!("gap {} .. {}", g.first, g.last)
        };
        let _ = write!(
            o,
            r#"<rect class="gap" x="{:.1}" y="{}" width="{width:.1}" height="{}"><title>{} ({} file(s) missing): {} .. {}</title></rect><text class="gap-label" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x1 - if width > x2 - x1 {
                (width - (x2 - x1)) / 2.0
            } else {
                0.0
            },
            BAND_Y - 4.0,
            BAND_H + 8.0,
            escape(&label),
            g.files,
            escape(&time(g.after)),
            escape(&time(g.before)),
            ((x1 + x2) / 2.0).clamp(LEFT + 120.0, WIDTH - RIGHT - 120.0),
            GAP_LABEL_Y + 12.0 * i as f64,
            escape(&label)
        );
    }
}

fn backups(o: &mut String, s: &Status, scale: &Scale) {
    for b in s
        .backups
        .recent
        .iter()
        .filter(|b| scale.contains(b.stop_time))
    {
        let (x1, x2) = (scale.x(b.start_time), scale.x(b.stop_time));
        let _ = write!(
            o,
            r#"<g class="backup"><rect class="backup-run" x="{x1:.1}" y="{BACKUPS_Y}" width="{:.1}" height="20"/><rect class="backup-mark" x="{:.1}" y="{BACKUPS_Y}" width="3" height="20"/><title>backup {}: ended {}, {} stored, took {}</title></g>"#,
            (x2 - x1).max(0.0),
            x2 - 1.5,
            escape(&b.id),
            escape(&time(Some(b.stop_time))),
            indicatif::HumanBytes(b.stored_bytes),
            escape(&span(b.duration_seconds))
        );
    }
}

fn drills(o: &mut String, s: &Status, scale: &Scale) {
    for d in s.drills.recent.iter().filter(|d| scale.contains(d.at())) {
        let x = scale.x(d.at());
        let (class, word) = if d.success {
            ("drill-pass", "passed")
        } else {
            ("drill-fail", "FAILED")
        };
        let label = if d.success {
            format!("RTO {}", span(d.rto.total_seconds))
        } else {
            "FAILED".to_string()
        };
        // Near the right edge the label goes to the left of its point.
        let (lx, anchor) = if x > WIDTH - RIGHT - 90.0 {
            (x - 9.0, "end")
        } else {
            (x + 9.0, "start")
        };
        let _ = write!(
            o,
            r#"<g class="{class}"><circle cx="{x:.1}" cy="{DRILLS_Y}" r="6"/><text class="drill-label" x="{lx:.1}" y="{}" text-anchor="{anchor}">{}</text><title>drill {} {word} (target {}): RTO {}{}</title></g>"#,
            DRILLS_Y + 4.0,
            escape(&label),
            escape(&d.id),
            escape(&time(d.target_time)),
            escape(&span(d.rto.total_seconds)),
            d.error
                .as_deref()
                .map(|e| format!(": {}", escape(e)))
                .unwrap_or_default()
        );
    }
}
