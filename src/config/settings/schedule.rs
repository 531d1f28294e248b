//! Job schedules (`backup.schedule`, `drill.schedule`, `retention.schedule`,
//! `offsite.schedule`): "off" or a 5-field crontab in UTC, parsed once here with croner
//! exactly as the scheduler will read it, so the daemon never parses a schedule again and
//! cannot fail to start on one.

use std::time::Duration;

use super::{Ctx, Error};

/// A validated job schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// `"off"`: the job never runs on its own (the CLI can still run it).
    Off,
    /// A 5-field crontab (minute hour day-of-month month day-of-week), UTC.
    Cron {
        /// The expression as written, for messages.
        expr: String,
        /// Boxed: a parsed crontab is a few hundred bytes, `Off` is none.
        cron: Box<croner::Cron>,
    },
}

impl Schedule {
    /// Parses "off" or a 5-field crontab; the error says why, without the key path.
    pub fn parse(expr: &str) -> Result<Self, String> {
        if expr == "off" {
            return Ok(Schedule::Off);
        }
        if expr.split_whitespace().count() != 5 {
            return Err(format!(
                "{expr:?} is not a 5-field crontab (minute hour day-of-month month day-of-week)"
            ));
        }
        let cron = expr
            .parse::<croner::Cron>()
            .map_err(|e| format!("{expr:?} is not a valid crontab: {e}"))?;
        Ok(Schedule::Cron {
            expr: expr.to_string(),
            cron: Box::new(cron),
        })
    }

    /// The parsed crontab, or None when the schedule is off.
    pub fn cron(&self) -> Option<&croner::Cron> {
        match self {
            Schedule::Off => None,
            Schedule::Cron { cron, .. } => Some(cron.as_ref()),
        }
    }

    /// The expression as written ("off" when off).
    pub fn expr(&self) -> &str {
        match self {
            Schedule::Off => "off",
            Schedule::Cron { expr, .. } => expr,
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expr())
    }
}

/// Validates the schedule at `path`.
pub(super) fn validate(ctx: &Ctx<'_>, path: &[&str], expr: &str) -> Result<Schedule, Error> {
    Schedule::parse(expr).map_err(|e| ctx.invalid(path, e))
}

/// The longest gap between consecutive runs of `cron` (over the next 16 runs): "one backup
/// interval" for Object Lock dates. A day when the schedule is off or has no runs.
pub fn longest_interval(cron: Option<&croner::Cron>) -> Duration {
    let day = Duration::from_secs(86_400);
    let Some(cron) = cron else { return day };
    let mut longest = Duration::ZERO;
    let mut at = chrono::Utc::now();
    let Ok(mut prev) = cron.find_next_occurrence(&at, false) else {
        return day;
    };
    for _ in 0..16 {
        at = prev;
        let Ok(next) = cron.find_next_occurrence(&at, false) else {
            break;
        };
        longest = longest.max((next - prev).to_std().unwrap_or_default());
        prev = next;
    }
    if longest.is_zero() {
        day
    } else {
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_off_or_five_field_crontabs() {
        assert_eq!(Schedule::parse("off"), Ok(Schedule::Off));
        let s = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(s.expr(), "0 2 * * *");
        assert!(s.cron().is_some());
        assert!(Schedule::Off.cron().is_none());
        for bad in ["daily", "0 2 * *", "0 0 2 * * *", "61 2 * * *", ""] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn longest_interval_of_daily_weekly_and_off() {
        let day = Duration::from_secs(86_400);
        let daily = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(longest_interval(daily.cron()), day);
        let weekly = Schedule::parse("0 5 * * 0").unwrap();
        assert_eq!(longest_interval(weekly.cron()), 7 * day);
        assert_eq!(longest_interval(None), day);
    }
}
