//! The command line: every subcommand, its options and its help text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// pgvigil: a PostgreSQL operations sidecar.
#[derive(Debug, Parser)]
#[command(
    name = "pgvigil",
    version,
    about = "PostgreSQL operations sidecar: Prometheus metrics for PostgreSQL (postgres_exporter-compatible names), with backups, PITR checks and audit logs to follow",
    long_about = "pgvigil runs beside a PostgreSQL server and exports its statistics as Prometheus metrics \
                  (the metric names of postgres_exporter, so existing dashboards keep working), with a fixed, \
                  small number of SQL statements per scrape.\n\n\
                  Logs are JSON on stdout, or human-readable when stdout is a terminal; filter them with \
                  RUST_LOG (e.g. RUST_LOG=pgvigil=debug).",
    after_help = "Start here: `pgvigil dev` runs everything against a throwaway PostgreSQL. \
                  Then write a config (see pgvigil.example.toml), validate it with `pgvigil check-config -c FILE` \
                  and run `pgvigil run -c FILE`."
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        env = "PGVIGIL_CONFIG",
        default_value = "/etc/pgvigil/pgvigil.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,

    /// Log format: JSON lines, human-readable text, or auto (text on a terminal, else JSON).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// `pgvigil run` flags.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Prometheus exporter-toolkit web configuration file (TLS, basic auth); overrides
    /// server.web_config_file.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: serve /metrics, /healthz and /readyz on server.listen until SIGTERM or SIGINT.
    #[command(
        long_about = "Run the daemon. Serves /metrics (Prometheus text 0.0.4, or OpenMetrics 1.0 when the \
                      scraper's Accept header prefers it), /healthz (process alive) and /readyz (configuration \
                      loaded and a first successful collection) on server.listen (default 0.0.0.0:9432). \
                      SIGTERM and SIGINT stop it gracefully within 10 s. If PostgreSQL is down, /metrics still \
                      answers promptly with pg_up 0 and pgvigil reconnects with backoff. With \
                      --web.config.file (or server.web_config_file), the metrics server takes TLS, client \
                      certificates, bcrypt basic auth and response headers from a Prometheus exporter-toolkit \
                      web configuration file, the one postgres_exporter reads."
    )]
    Run(RunArgs),

    /// Start a throwaway PostgreSQL from the system binaries and run the daemon against it (like `vault server -dev`).
    #[command(
        long_about = "Development mode, following the `vault server -dev` convention: runs initdb in a temporary \
                      directory with the system's PostgreSQL binaries (as the postgres OS user when run as root), \
                      starts it on a free loopback port with pg_stat_statements, runs the daemon against it and \
                      prints the URLs. Ctrl-C stops everything and deletes the temporary cluster. No config file \
                      is needed; -c is ignored."
    )]
    Dev(DevArgs),

    /// Validate the configuration file, then probe every configured endpoint (one line per check).
    #[command(
        long_about = "Validate the configuration: unknown keys and bad values are errors naming the key and \
                      file:line. Then probe every configured endpoint (PostgreSQL: connection, version, role \
                      privileges, pg_stat_statements) and print one line per check. Exits non-zero if \
                      anything failed."
    )]
    CheckConfig,

    /// Take a base backup now (streamed through zstd into the repository).
    #[command(
        long_about = "Take a base backup now: pg_basebackup -D - -Ft -X fetch --checkpoint=fast, split into \
                      [backup] streams tar streams, each compressed by zstd and stored as its own object \
                      (storage.url), SHA-256 computed on the fly, backup.json written last as the commit marker. \
                      With --incremental (PostgreSQL 17+, summarize_wal = on), only what changed since the newest \
                      backup is taken (pg_basebackup --incremental) and restored with pg_combinebackup; when that \
                      cannot be done (an older server, summarize_wal off, no backup to build on, a broken chain) a \
                      full backup is taken and the reason logged. Only a primary is backed up, and a lease in the \
                      repository keeps two sidecars from backing up at once. Shows a progress bar on a terminal. \
                      The role needs the REPLICATION attribute and a replication line in pg_hba.conf."
    )]
    Backup(BackupArgs),

    /// List the backups in the repository: id, times, sizes, duration, WAL range.
    Backups(JsonArgs),

    /// After pg_upgrade: bind the repository to the upgraded cluster, keeping the old backups.
    #[command(
        long_about = "Record a pg_upgrade. The repository is bound to one database system (its system \
                      identifier), and pg_upgrade makes a new one, so backups and WAL of the upgraded server are \
                      refused until this is run against it (the upgraded primary, with its new major). It binds \
                      the repository to the new system and keeps the old one in the binding's history: the old \
                      cluster's backups and WAL stay restorable (restore and drills use the binaries of each \
                      backup's major), verify and retention treat the upgrade as the start of a new chain, not \
                      as a gap, and the old cluster can no longer push WAL. Refused when the server's major is \
                      not newer than the repository's newest backup (a different cluster of the same major needs \
                      its own storage.cluster). Take a backup right after it: the new chain starts with it."
    )]
    Upgrade(JsonArgs),

    /// Archive one WAL file: use as archive_command = 'pgvigil wal-push -c FILE %p'.
    #[command(
        long_about = "Archive one WAL file into the repository (zstd, SHA-256 in the object's metadata). For \
                      archive_command = 'pgvigil wal-push -c /etc/pgvigil/pgvigil.toml %p'. The first segment binds \
                      the repository to the cluster's system identifier; WAL of another cluster is refused. A \
                      segment already archived with identical content is success; with different content the push \
                      fails and nothing is overwritten. Exit status 0 = archived; anything else makes PostgreSQL retry."
    )]
    WalPush {
        /// Path of the WAL file (%p).
        #[arg(value_name = "PATH")]
        path: std::path::PathBuf,
    },

    /// Restore one archived WAL file: use as restore_command = 'pgvigil wal-fetch -c FILE %f %p'.
    #[command(
        long_about = "Fetch one WAL file from the repository, verify its SHA-256, and write it to DEST. For \
                      restore_command = 'pgvigil wal-fetch -c /etc/pgvigil/pgvigil.toml %f %p'. Exits non-zero \
                      when the file is not in the repository (which PostgreSQL expects for files that do not exist)."
    )]
    WalFetch {
        /// WAL file name (%f).
        #[arg(value_name = "NAME")]
        name: String,
        /// Where to write it (%p).
        #[arg(value_name = "DEST")]
        dest: std::path::PathBuf,
        /// Ask the drill that started this server for the file over its unix socket instead
        /// of reading the repository (no configuration or credentials needed; drills set it).
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
    },

    /// Download the WAL segments recovery will ask for next into a spool (started by wal-fetch).
    #[command(
        long_about = "Read-ahead for recovery, started in the background by `wal-fetch` when                       [backup] wal_prefetch is above 0: keeps the next wal_prefetch segments after the one                       PostgreSQL asked for last in SPOOL, downloading wal_prefetch_workers at a time and                       checking each against the SHA-256 recorded at push, so that `wal-fetch` finds them                       there. One per spool; it stops on its own 20 s after recovery stops asking and                       removes the spool. There is no need to run it by hand."
    )]
    WalPrefetch {
        /// The spool directory (wal-fetch uses pg_wal/pgvigil-prefetch).
        #[arg(long, value_name = "DIR")]
        spool: std::path::PathBuf,
    },

    /// Restore a backup into an empty directory, to the latest point or a target time, LSN or immediately.
    #[command(
        long_about = "Restore: picks the newest backup that ended before the target (or --backup), streams it \
                      from the repository verifying its SHA-256, unpacks it into --to (which must be empty or \
                      missing), and configures recovery: recovery.signal, restore_command through \
                      `pgvigil wal-fetch`, and the recovery target. Start PostgreSQL on the directory to replay."
    )]
    Restore(RestoreArgs),

    /// Check PITR continuity: every WAL segment from the oldest backup to the newest is archived.
    #[command(
        long_about = "Check that the repository can restore to any point between its oldest backup and its \
                      newest WAL, from listings only (no WAL is downloaded): every segment from the oldest \
                      backup's start to the newest archived segment is present, following .history files across \
                      timelines; every backup's own WAL is present; and the last WAL file pg_stat_archiver reports \
                      is in the repository. Prints the recovery window and the archive age (RPO), names every \
                      missing segment, and exits non-zero on any gap."
    )]
    Verify(JsonArgs),

    /// Run a restore drill now: restore to a point in the recovery window and check the result.
    #[command(
        long_about = "Prove the backups by restoring one: pick a target time in the recovery window (or \
                      --target-time), restore the newest backup before it into drill.work_dir (after checking \
                      free space), run pg_verifybackup, start a private postmaster (unix socket only, \
                      archive_mode=off, WAL through pgvigil wal-fetch), wait until the target is reached, then \
                      check the heartbeat row, pg_amcheck (drill.amcheck) and the [[drill.checks]]. The \
                      evidence (RTO split into download, replay and checks; target skew; bytes) is stored in \
                      the repository under state/drills/. Everything is cleaned up afterwards, also on failure, \
                      timeout or SIGTERM. Exits non-zero if the drill failed."
    )]
    Drill(DrillArgs),

    /// Apply the recovery-window retention: delete expired backups, WAL and orphans (--dry-run to preview).
    #[command(
        long_about = "Apply retention to the repository (and the off-site repository, when [offsite] url is \
                      set). Recovery-window semantics: every backup that ended inside retention.recovery_window \
                      (default 35 days) is kept, plus the newest backup that ended before it, so any point in \
                      the window stays recoverable; never fewer than retention.min_backups and never the last \
                      valid backup. WAL older than the oldest kept backup's start is deleted (.history files \
                      stay), and objects of backups that never committed (no backup.json) are deleted after a \
                      day. Backups are ordered by the times in backup.json. Objects under S3 Object Lock whose \
                      retention has not passed are reported as locked and left. Every deletion is logged \
                      (event retention.deleted). --dry-run prints what would be deleted and why, and deletes \
                      nothing."
    )]
    Retention(RetentionArgs),

    /// Copy the newest backup and the WAL it needs to the off-site repository ([offsite] url) and verify it.
    #[command(
        long_about = "Copy the newest valid backup, the WAL from its start to the newest archived segment and \
                      every .history file to [offsite] url, a second repository with the same residency checks. \
                      Objects are copied server-side when both repositories are on one S3 service, streamed \
                      otherwise; objects already there with the same size are skipped. Every copied object is \
                      read back and checked against its recorded SHA-256 (a copy that does not verify is \
                      deleted and the command fails); backup.json is written last. The result is recorded in \
                      the primary repository (state/offsite/last.json)."
    )]
    Offsite(JsonArgs),

    /// One screen: can I restore, to when, how long would it take? Exit 0 healthy, 1 degraded, 2 broken.
    #[command(
        long_about = "Answer the on-call questions on one screen: can I restore, to when, and how long will it \
                      take? Read now from the repository (storage.url), PostgreSQL and the running daemon:\n\n\
                      - the recovery window (earliest and latest restorable point) against its goal, \
                      retention.recovery_window;\n\
                      - the RPO now (how long ago the last WAL file was archived) against pitr.rpo, and WAL \
                      continuity with every gap named by its segments and placed in time;\n\
                      - the newest backups: size, duration, age (and kind and parent where recorded);\n\
                      - the last restore drill (when, target, backup, RTO split into download, replay and \
                      checks, result) and the next scheduled one;\n\
                      - custody: each repository's residency check (region), Object Lock mode and when the \
                      oldest backup's lock ends, the last retention run and what it deleted, the last \
                      off-site copy;\n\
                      - the daemon's own health (readiness conditions, failing collectors), asked at \
                      server.listen with its TLS certificate and bearer token, when it answers.\n\n\
                      The reasons for a verdict come first. Exit status: 0 = healthy; 1 = degraded \
                      (restorable, but something needs attention: the window is shorter than its goal, the \
                      RPO is exceeded, no drill in 40 days, the newest backup is old, retention or the \
                      off-site copy failed, the daemon does not answer or is not ready); 2 = broken (a \
                      restore would fail or lose data: no backup, a WAL gap, the last drill failed, a \
                      repository outside its residency policy or unreadable). Other failures (no \
                      configuration) exit 1 with a message. The daemon serves the same facts as a page at \
                      / and /status, and as JSON at /status.json."
    )]
    Status(StatusArgs),

    /// Print the metric catalogue: every metric family pgvigil can export.
    #[command(
        long_about = "Print the metric catalogue: name, type, labels and help of every metric family pgvigil \
                      can export, and whether the name is kept for postgres_exporter compatibility. Dashboards \
                      and alert rules are tested against this list. Custom [[postgres.queries]] metrics appear \
                      when a readable config file is given with -c."
    )]
    Catalog(CatalogArgs),

    /// The audit log: install the database change audit, verify an audit file's hash chain.
    #[command(
        subcommand,
        long_about = "The audit log. pgvigil writes one JSON line per event (kinds ops, data and access) to \
                      stdout and, with [audit] file, to an append-only file; every line carries seq, prev and \
                      hash (SHA-256), chaining it to the line before. `audit install` sets up the database \
                      change audit whose rows the daemon forwards ([audit] table); `audit verify` checks a file."
    )]
    Audit(AuditCommand),
}

/// Subcommands of `pgvigil audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Install deploy/sql/audit.sql (schema audit, table audit.logged_actions) and attach it to tables.
    #[command(
        long_about = "Install the database change audit into the database of postgres.dsn: schema `audit`, \
                      table `audit.logged_actions` (row data and changed fields as jsonb, transaction id, \
                      timestamps, session user, application name, client address, PostgREST request claims), \
                      the trigger function, `audit.audit_table(regclass)` and the daemon's cursor table \
                      `audit.pgvigil_cursor`. Idempotent: running it again keeps every row. The SQL is \
                      deploy/sql/audit.sql (built into the binary); deploy/sql/audit_down.sql removes it. \
                      Needs a role that may create schemas (or the database owner)."
    )]
    Install(AuditInstallArgs),

    /// Check an audit file's hash chain; exits non-zero at the first broken line and names it.
    #[command(
        long_about = "Verify an audit file written by pgvigil ([audit] file, or captured stdout reduced to its \
                      audit lines, e.g. grep ',\"hash\":\"'): every line's \
                      hash must match its content, each prev must equal the previous line's hash and each seq \
                      the previous seq plus one. The first line may continue a chain whose beginning was \
                      rotated away (unless its seq is 1). Prints the number of lines and the last hash (note \
                      it down: it proves later that nothing before it changed). Exit status 0 = intact, \
                      1 = broken (the message names the file and line number), 2 = unreadable. Needs no \
                      config file."
    )]
    Verify(AuditVerifyArgs),
}

/// Options of `pgvigil audit install`.
#[derive(Debug, clap::Args)]
pub struct AuditInstallArgs {
    /// Also attach the audit trigger to this table (schema.table; repeat for several).
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
}

/// Options of `pgvigil audit verify`.
#[derive(Debug, clap::Args)]
pub struct AuditVerifyArgs {
    /// The audit file (JSON lines).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `pgvigil dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where to serve /metrics; a free port is used instead if this one is taken.
    #[arg(long, default_value = "127.0.0.1:9432", value_name = "ADDR")]
    pub listen: SocketAddr,
}

/// Options of `pgvigil backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Only what changed since the newest backup (PostgreSQL 17+; else a full backup).
    #[arg(long)]
    pub incremental: bool,
}

/// A `--json` switch.
#[derive(Debug, clap::Args)]
pub struct JsonArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `pgvigil status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON (the same document as the daemon's /status.json).
    #[arg(long)]
    pub json: bool,
    /// The exporter-toolkit web configuration file the daemon runs with, when it is given to
    /// `pgvigil run --web.config.file` rather than set in server.web_config_file (its TLS
    /// certificate is how the daemon is recognised).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

/// Options of `pgvigil restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Directory to restore into (must be empty or not exist).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Backup id, or "latest". Default: the newest backup that ended before the target.
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Recover to this time (RFC 3339, e.g. 2026-11-23T14:05:00Z).
    #[arg(long, value_name = "T", conflicts_with_all = ["target_lsn", "target"])]
    pub target_time: Option<String>,
    /// Recover to this LSN (e.g. 0/3000028).
    #[arg(long, value_name = "L", conflicts_with = "target")]
    pub target_lsn: Option<String>,
    /// `immediate`: stop as soon as the backup is consistent.
    #[arg(long, value_name = "immediate", value_parser = ["immediate"])]
    pub target: Option<String>,
    /// What PostgreSQL does when it reaches the target.
    #[arg(long, value_enum, default_value_t = crate::backup::restore::TargetAction::Promote)]
    pub target_action: crate::backup::restore::TargetAction,
    /// Keep the backup's WAL archiving settings: for a restore that becomes the new primary.
    /// Without it the restored cluster gets `archive_mode = off`, so it cannot push its new
    /// timeline into the repository it came from.
    #[arg(long)]
    pub keep_archiving: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `pgvigil retention`.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// Print every object that would be deleted and why; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `pgvigil drill`.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// Recover to this time (RFC 3339) instead of a random one in the window.
    #[arg(long, value_name = "T")]
    pub target_time: Option<String>,
    /// Give up if recovery has not reached the target after this long.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Print the evidence as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `pgvigil catalog`.
#[derive(Debug, clap::Args)]
pub struct CatalogArgs {
    /// Print JSON (one array of objects) instead of a table.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,

    /// Print a Markdown table (what docs/catalogue.md holds).
    #[arg(long)]
    pub markdown: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_is_global() {
        let a = Cli::try_parse_from(["pgvigil", "-c", "a.toml", "run"]).map(|c| c.config);
        let b = Cli::try_parse_from(["pgvigil", "run", "-c", "b.toml"]).map(|c| c.config);
        assert_eq!(a.ok(), Some(PathBuf::from("a.toml")));
        assert_eq!(b.ok(), Some(PathBuf::from("b.toml")));
    }
}
