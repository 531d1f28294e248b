//! `[backup]`, `[pitr]`, `[drill]` and `[retention]`: what the backup jobs do and when.
//! Owns their Settings structs and validators; schedules arrive parsed ([`Schedule`]).

use std::path::PathBuf;
use std::time::Duration;

use super::schedule::{self, Schedule};
use super::{Ctx, Error};
use crate::config::raw::{BackupConfig, DrillConfig, PitrConfig, RetentionConfig};

/// `[backup]`, validated.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub schedule: Schedule,
    /// zstd level (1..=19).
    pub compression_level: i32,
    /// When incremental backups are taken (PostgreSQL 17+; `off` by default).
    pub incremental_schedule: Schedule,
    /// The daemon takes a first backup soon after start when the repository has none and
    /// the server is a primary (never when `schedule` is off).
    pub initial_backup: bool,
    /// The daemon pushes WAL files marked ready in `pg_wal/archive_status` itself, several
    /// at a time, so that `archive_command` finds them stored and returns at once.
    pub archive_ahead: bool,
    /// How many WAL files the daemon uploads at once (1..=16).
    pub archive_workers: usize,
    /// Where the daemon reads `pg_wal` (None: the server's `data_directory` + `/pg_wal`).
    pub wal_directory: Option<PathBuf>,
    /// How many streams (objects) a base backup is split into, 1..=16: a restore
    /// downloads, checks and unpacks them in parallel.
    pub streams: usize,
    /// How many segments after the one recovery asked for are downloaded ahead (0: off).
    pub wal_prefetch: usize,
    /// How many of them are downloaded at once (1..=16).
    pub wal_prefetch_workers: usize,
}

/// `[pitr]`, validated.
#[derive(Debug, Clone)]
pub struct PitrSettings {
    pub check_interval: Duration,
    /// Zero disables the heartbeat table.
    pub heartbeat_interval: Duration,
    pub rpo: Duration,
}

impl Default for PitrSettings {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(10),
            rpo: Duration::from_secs(300),
        }
    }
}

/// `[drill]`, validated.
#[derive(Debug, Clone)]
pub struct DrillSettings {
    pub schedule: Schedule,
    pub work_dir: PathBuf,
    pub amcheck: bool,
    pub checks: Vec<DrillCheck>,
}

/// A user check run on a restored cluster: the first column of the first row, as text,
/// must equal `expect`.
#[derive(Debug, Clone)]
pub struct DrillCheck {
    pub name: String,
    pub sql: String,
    pub expect: String,
}

/// `[retention]`, validated.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Every point in time this far back stays recoverable.
    pub recovery_window: Duration,
    /// Never fewer backups than this (and never zero).
    pub min_backups: usize,
    pub schedule: Schedule,
}

pub(super) fn validate_backup(ctx: &Ctx<'_>, raw: &BackupConfig) -> Result<BackupSettings, Error> {
    Ok(BackupSettings {
        schedule: schedule::validate(ctx, &["backup", "schedule"], &raw.schedule)?,
        incremental_schedule: schedule::validate(
            ctx,
            &["backup", "incremental_schedule"],
            &raw.incremental_schedule,
        )?,
        initial_backup: raw.initial_backup,
        archive_ahead: raw.archive_ahead,
        archive_workers: match raw.archive_workers {
            n @ 1..=16 => n,
            n => {
                return Err(ctx.invalid(
                    &["backup", "archive_workers"],
                    format!("{n} is outside 1..=16"),
                ))
            }
        },
        streams: match raw.streams {
            n @ 1..=16 => n,
            n => return Err(ctx.invalid(&["backup", "streams"], format!("{n} is outside 1..=16"))),
        },
        wal_prefetch: match raw.wal_prefetch {
            n @ 0..=64 => n,
            n => {
                return Err(ctx.invalid(
                    &["backup", "wal_prefetch"],
                    format!("{n} is outside 0..=64 (segments held in the spool)"),
                ))
            }
        },
        wal_prefetch_workers: match raw.wal_prefetch_workers {
            n @ 1..=16 => n,
            n => {
                return Err(ctx.invalid(
                    &["backup", "wal_prefetch_workers"],
                    format!("{n} is outside 1..=16"),
                ))
            }
        },
        wal_directory: match &raw.wal_directory {
            None => None,
            Some(d) if d.starts_with('/') => Some(PathBuf::from(d)),
            Some(_) => {
                return Err(ctx.invalid(
                    &["backup", "wal_directory"],
                    "must be an absolute path (the server's pg_wal as this host sees it)",
                ))
            }
        },
        compression_level: match raw.compression_level {
            l @ 1..=19 => l,
            l => {
                return Err(ctx.invalid(
                    &["backup", "compression_level"],
                    format!("{l} is outside 1..=19"),
                ))
            }
        },
    })
}

pub(super) fn validate_retention(
    ctx: &Ctx<'_>,
    raw: &RetentionConfig,
) -> Result<RetentionSettings, Error> {
    let recovery_window = ctx.duration(&["retention", "recovery_window"], &raw.recovery_window)?;
    let schedule = schedule::validate(ctx, &["retention", "schedule"], &raw.schedule)?;
    if recovery_window.is_zero() {
        return Err(ctx.invalid(&["retention", "recovery_window"], "must be longer than 0s"));
    }
    Ok(RetentionSettings {
        recovery_window,
        min_backups: raw.min_backups.max(1),
        schedule,
    })
}

pub(super) fn validate_pitr(ctx: &Ctx<'_>, raw: &PitrConfig) -> Result<PitrSettings, Error> {
    Ok(PitrSettings {
        check_interval: ctx.duration(&["pitr", "check_interval"], &raw.check_interval)?,
        heartbeat_interval: ctx
            .duration(&["pitr", "heartbeat_interval"], &raw.heartbeat_interval)?,
        rpo: ctx.duration(&["pitr", "rpo"], &raw.rpo)?,
    })
}

pub(super) fn validate_drill(ctx: &Ctx<'_>, raw: &DrillConfig) -> Result<DrillSettings, Error> {
    let schedule = schedule::validate(ctx, &["drill", "schedule"], &raw.schedule)?;
    if !raw.work_dir.starts_with('/') {
        return Err(ctx.invalid(&["drill", "work_dir"], "must be an absolute path"));
    }
    Ok(DrillSettings {
        schedule,
        work_dir: PathBuf::from(&raw.work_dir),
        amcheck: raw.amcheck,
        checks: raw
            .checks
            .iter()
            .map(|c| DrillCheck {
                name: c.name.clone(),
                sql: c.sql.clone(),
                expect: c.expect.clone(),
            })
            .collect(),
    })
}
