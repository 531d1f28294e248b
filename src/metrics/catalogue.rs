//! Every metric family pgvigil can export: name, type, labels, help, and whether the name
//! is kept for compatibility with postgres_exporter / pgbouncer_exporter (such names may
//! break exporter naming rules, e.g. counters without `_total` or milliseconds). This list
//! is the single source of truth: collectors build families from these entries, and the
//! dashboards and alerts are tested against it (`pgvigil catalog --json`).

use serde::Serialize;

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// Whose name a compatibility metric keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compat {
    PostgresExporter,
    PgbouncerExporter,
}

/// How the name is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// The name is exactly `name`.
    Exact,
    /// `name` is a prefix; the rest comes from the server (`pg_settings_*`).
    Prefix,
    /// The name comes from the configuration (`[[postgres.queries]]`).
    Configured,
}

/// One catalogue entry.
#[derive(Debug, Serialize)]
pub struct MetricDef {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    pub compat: Option<Compat>,
    pub naming: Naming,
}

impl MetricDef {
    /// Whether a concrete series name belongs to this entry.
    pub fn matches(&self, name: &str) -> bool {
        match self.naming {
            Naming::Exact => {
                name == self.name
                    || (self.kind == Kind::Histogram
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(self.name)))
            }
            Naming::Prefix => name.starts_with(self.name) && name.len() > self.name.len(),
            Naming::Configured => false,
        }
    }
}

/// Finds the entry a series name belongs to.
pub fn lookup(name: &str) -> Option<&'static MetricDef> {
    ALL.iter().copied().find(|d| d.matches(name))
}

macro_rules! compat {
    (pe) => {
        Some(Compat::PostgresExporter)
    };
    (pbe) => {
        Some(Compat::PgbouncerExporter)
    };
    (new) => {
        None
    };
}

macro_rules! kind {
    (counter) => {
        Kind::Counter
    };
    (gauge) => {
        Kind::Gauge
    };
    (histogram) => {
        Kind::Histogram
    };
    (untyped) => {
        Kind::Untyped
    };
}

macro_rules! catalogue {
    ($( $id:ident : $kind:ident $name:literal [$($label:literal),*] $compat:ident $help:literal; )*) => {
        $(
            #[doc = $help]
            pub static $id: MetricDef = MetricDef {
                name: $name,
                kind: kind!($kind),
                labels: &[$($label),*],
                help: $help,
                compat: compat!($compat),
                naming: Naming::Exact,
            };
        )*
        /// Every fixed-name entry, in catalogue order, followed by the pattern entries.
        pub static ALL: &[&MetricDef] = &[$(&$id,)* &PG_SETTINGS, &PGRST, &CUSTOM_QUERY];
    };
}

/// `pg_settings_<name>[_seconds|_bytes]`: numeric and boolean server settings.
pub static PG_SETTINGS: MetricDef = MetricDef {
    name: "pg_settings_",
    kind: Kind::Gauge,
    labels: &[],
    help: "Server setting (bool as 0/1; time in seconds, sizes in bytes, as postgres_exporter). Cached for postgres.slow_collectors_interval.",
    compat: Some(Compat::PostgresExporter),
    naming: Naming::Prefix,
};

/// PostgREST's own admin metrics, passed through unchanged.
pub static PGRST: MetricDef = MetricDef {
    name: "pgrst_",
    kind: Kind::Untyped,
    labels: &[],
    help: "PostgREST's admin /metrics families (pgrst_*), passed through unchanged with their own types and help.",
    compat: None,
    naming: Naming::Prefix,
};

/// A `[[postgres.queries]]` metric: name, help and labels come from the configuration.
pub static CUSTOM_QUERY: MetricDef = MetricDef {
    name: "[[postgres.queries]]",
    kind: Kind::Gauge,
    labels: &[],
    help: "Custom SQL metric defined in the configuration.",
    compat: None,
    naming: Naming::Configured,
};

catalogue! {
    // --- availability and instance -------------------------------------------------
    PG_UP: gauge "pg_up" [] pe "Whether the last scrape of metrics from PostgreSQL was able to connect to the server (1 for yes, 0 for no).";
    PG_POSTMASTER_START_TIME_SECONDS: gauge "pg_postmaster_start_time_seconds" [] pe "Time at which postmaster started";
    PG_REPLICATION_LAG_SECONDS: gauge "pg_replication_lag_seconds" [] pe "Replication lag behind master in seconds";
    PG_REPLICATION_IS_REPLICA: gauge "pg_replication_is_replica" [] pe "Indicates if the server is a replica";
    PG_REPLICATION_LAST_REPLAY_SECONDS: gauge "pg_replication_last_replay_seconds" [] pe "Age of last replay in seconds (0 on a primary, as postgres_exporter)";
    PG_STATIC: gauge "pg_static" ["short_version", "version"] pe "Version string as reported by postgres (always 1; cached with the settings)";
    PG_WAL_SEGMENTS: gauge "pg_wal_segments" [] pe "Number of WAL segments";
    PG_WAL_SIZE_BYTES: gauge "pg_wal_size_bytes" [] pe "Total size of WAL segments";
    PG_ROLES_CONNECTION_LIMIT: gauge "pg_roles_connection_limit" ["rolname"] pe "Connection limit set for the role";
    PG_WAL_LSN_BYTES: gauge "pg_wal_lsn_bytes" [] new "Current WAL position in bytes since 0/0: insert position on a primary, replay position on a replica.";

    // --- pg_stat_database ----------------------------------------------------------
    PG_STAT_DATABASE_NUMBACKENDS: gauge "pg_stat_database_numbackends" ["datid", "datname"] pe "Number of backends currently connected to this database. This is the only column in this view that returns a value reflecting current state; all other columns return the accumulated values since the last reset.";
    PG_STAT_DATABASE_XACT_COMMIT: counter "pg_stat_database_xact_commit" ["datid", "datname"] pe "Number of transactions in this database that have been committed";
    PG_STAT_DATABASE_XACT_ROLLBACK: counter "pg_stat_database_xact_rollback" ["datid", "datname"] pe "Number of transactions in this database that have been rolled back";
    PG_STAT_DATABASE_BLKS_READ: counter "pg_stat_database_blks_read" ["datid", "datname"] pe "Number of disk blocks read in this database";
    PG_STAT_DATABASE_BLKS_HIT: counter "pg_stat_database_blks_hit" ["datid", "datname"] pe "Number of times disk blocks were found already in the buffer cache, so that a read was not necessary (this only includes hits in the PostgreSQL buffer cache, not the operating system's file system cache)";
    PG_STAT_DATABASE_TUP_RETURNED: counter "pg_stat_database_tup_returned" ["datid", "datname"] pe "Number of rows returned by queries in this database";
    PG_STAT_DATABASE_TUP_FETCHED: counter "pg_stat_database_tup_fetched" ["datid", "datname"] pe "Number of rows fetched by queries in this database";
    PG_STAT_DATABASE_TUP_INSERTED: counter "pg_stat_database_tup_inserted" ["datid", "datname"] pe "Number of rows inserted by queries in this database";
    PG_STAT_DATABASE_TUP_UPDATED: counter "pg_stat_database_tup_updated" ["datid", "datname"] pe "Number of rows updated by queries in this database";
    PG_STAT_DATABASE_TUP_DELETED: counter "pg_stat_database_tup_deleted" ["datid", "datname"] pe "Number of rows deleted by queries in this database";
    PG_STAT_DATABASE_CONFLICTS: counter "pg_stat_database_conflicts" ["datid", "datname"] pe "Number of queries canceled due to conflicts with recovery in this database. (Conflicts occur only on standby servers; see pg_stat_database_conflicts for details.)";
    PG_STAT_DATABASE_TEMP_FILES: counter "pg_stat_database_temp_files" ["datid", "datname"] pe "Number of temporary files created by queries in this database. All temporary files are counted, regardless of why the temporary file was created (e.g., sorting or hashing), and regardless of the log_temp_files setting.";
    PG_STAT_DATABASE_TEMP_BYTES: counter "pg_stat_database_temp_bytes" ["datid", "datname"] pe "Total amount of data written to temporary files by queries in this database. All temporary files are counted, regardless of why the temporary file was created, and regardless of the log_temp_files setting.";
    PG_STAT_DATABASE_DEADLOCKS: counter "pg_stat_database_deadlocks" ["datid", "datname"] pe "Number of deadlocks detected in this database";
    PG_STAT_DATABASE_BLK_READ_TIME: counter "pg_stat_database_blk_read_time" ["datid", "datname"] pe "Time spent reading data file blocks by backends in this database, in milliseconds";
    PG_STAT_DATABASE_BLK_WRITE_TIME: counter "pg_stat_database_blk_write_time" ["datid", "datname"] pe "Time spent writing data file blocks by backends in this database, in milliseconds";
    PG_STAT_DATABASE_STATS_RESET: counter "pg_stat_database_stats_reset" ["datid", "datname"] pe "Time at which these statistics were last reset";
    PG_STAT_DATABASE_ACTIVE_TIME_SECONDS_TOTAL: counter "pg_stat_database_active_time_seconds_total" ["datid", "datname"] pe "Time spent executing SQL statements in this database, in seconds";
    PG_STAT_DATABASE_CONFLICTS_CONFL_TABLESPACE: counter "pg_stat_database_conflicts_confl_tablespace" ["datid", "datname"] pe "Number of queries in this database that have been canceled due to dropped tablespaces";
    PG_STAT_DATABASE_CONFLICTS_CONFL_LOCK: counter "pg_stat_database_conflicts_confl_lock" ["datid", "datname"] pe "Number of queries in this database that have been canceled due to lock timeouts";
    PG_STAT_DATABASE_CONFLICTS_CONFL_SNAPSHOT: counter "pg_stat_database_conflicts_confl_snapshot" ["datid", "datname"] pe "Number of queries in this database that have been canceled due to old snapshots";
    PG_STAT_DATABASE_CONFLICTS_CONFL_BUFFERPIN: counter "pg_stat_database_conflicts_confl_bufferpin" ["datid", "datname"] pe "Number of queries in this database that have been canceled due to pinned buffers";
    PG_STAT_DATABASE_CONFLICTS_CONFL_DEADLOCK: counter "pg_stat_database_conflicts_confl_deadlock" ["datid", "datname"] pe "Number of queries in this database that have been canceled due to deadlocks";

    // --- per-database, new ------------------------------------------------------------
    PG_DATABASE_XID_AGE: gauge "pg_database_xid_age" ["datname"] new "Age of the database's oldest unfrozen transaction ID (age(datfrozenxid)), in transactions.";
    PG_DATABASE_MXID_AGE: gauge "pg_database_mxid_age" ["datname"] new "Age of the database's oldest unfrozen multixact ID (mxid_age(datminmxid)).";
    PG_DATABASE_WRAPAROUND_RATIO: gauge "pg_database_wraparound_ratio" ["datname"] new "How far the database is towards transaction ID wraparound: the larger of xid and multixact age over 2^31 (0..1; multiply by 100 for percent).";

    // --- sizes (slow, cached) ------------------------------------------------------
    PG_DATABASE_SIZE_BYTES: gauge "pg_database_size_bytes" ["datname"] pe "Disk space used by the database (cached for postgres.slow_collectors_interval)";
    PG_DATABASE_CONNECTION_LIMIT: gauge "pg_database_connection_limit" ["datname"] pe "Connection limit set for the database (-1 = none)";
    PG_DATABASE_WRAPAROUND_AGE_DATFROZENXID_SECONDS: gauge "pg_database_wraparound_age_datfrozenxid_seconds" ["datname"] pe "Age of the oldest transaction ID that has not been frozen (age(datfrozenxid), in transactions despite the name; databases that allow connections).";
    PG_DATABASE_WRAPAROUND_AGE_DATMINMXID_SECONDS: gauge "pg_database_wraparound_age_datminmxid_seconds" ["datname"] pe "Age of the oldest multi-transaction ID that has been replaced with a transaction ID (mxid_age(datminmxid), in multixacts despite the name).";

    // --- pg_stat_activity and locks ---------------------------------------------------
    PG_STAT_ACTIVITY_COUNT: gauge "pg_stat_activity_count" ["datname", "state", "usename", "application_name", "backend_type", "wait_event_type", "wait_event"] pe "number of connections in this state (the 20 commonest usename and application_name values each; the rest as \"other\")";
    PG_STAT_ACTIVITY_MAX_TX_DURATION: gauge "pg_stat_activity_max_tx_duration" ["datname", "state", "usename", "application_name", "backend_type", "wait_event_type", "wait_event"] pe "max duration in seconds any active transaction has been running";
    PGVIGIL_STAT_ACTIVITY_FOLDED_VALUES: gauge "pgvigil_stat_activity_folded_values" ["label"] new "Distinct usename or application_name values folded into \"other\" in pg_stat_activity_* because more than 20 were seen (0 when none).";
    PG_LONG_RUNNING_TRANSACTIONS: gauge "pg_long_running_transactions" [] pe "Current number of long running transactions (open transactions not idle, autovacuum and pgvigil's own session excluded)";
    PG_LONG_RUNNING_TRANSACTIONS_OLDEST_TIMESTAMP_SECONDS: gauge "pg_long_running_transactions_oldest_timestamp_seconds" [] pe "The current maximum transaction age in seconds (0 when there is none)";
    PG_PROCESS_IDLE_SECONDS: histogram "pg_process_idle_seconds" ["state", "application_name"] pe "Idle time of server processes: how long each idle session (state idle*, pgvigil's own excluded) has been in its state, in seconds";
    PG_STAT_ACTIVITY_OLDEST_XACT_SECONDS: gauge "pg_stat_activity_oldest_xact_seconds" ["datname"] new "Age of the oldest open transaction in the database, in seconds (pgvigil's own session excluded); 0 when none.";
    PG_STAT_ACTIVITY_OLDEST_IDLE_IN_TRANSACTION_SECONDS: gauge "pg_stat_activity_oldest_idle_in_transaction_seconds" ["datname"] new "How long the longest idle-in-transaction session has been idle, in seconds; 0 when none.";
    PG_LOCKS_COUNT: gauge "pg_locks_count" ["datname", "mode"] pe "Number of locks";
    PG_LOCKS_BLOCKED_SESSIONS: gauge "pg_locks_blocked_sessions" ["datname"] new "Sessions currently waiting for a heavyweight lock (wait_event_type = 'Lock').";
    PG_LOCKS_MAX_WAIT_SECONDS: gauge "pg_locks_max_wait_seconds" ["datname"] new "Longest current wait for a heavyweight lock, in seconds (pg_locks.waitstart); 0 when nobody waits.";

    // --- replication ----------------------------------------------------------------
    PG_STAT_REPLICATION_PG_CURRENT_WAL_LSN_BYTES: gauge "pg_stat_replication_pg_current_wal_lsn_bytes" ["application_name", "client_addr", "state", "slot_name"] pe "WAL position in bytes";
    PG_STAT_REPLICATION_PG_WAL_LSN_DIFF: gauge "pg_stat_replication_pg_wal_lsn_diff" ["application_name", "client_addr", "state", "slot_name"] pe "Lag in bytes between master and slave";
    PG_STAT_REPLICATION_WRITE_LAG_SECONDS: gauge "pg_stat_replication_write_lag_seconds" ["application_name", "client_addr", "state", "slot_name"] new "Time until the standby wrote recent WAL (pg_stat_replication.write_lag), in seconds; absent when idle.";
    PG_STAT_REPLICATION_FLUSH_LAG_SECONDS: gauge "pg_stat_replication_flush_lag_seconds" ["application_name", "client_addr", "state", "slot_name"] new "Time until the standby flushed recent WAL (flush_lag), in seconds; absent when idle.";
    PG_STAT_REPLICATION_REPLAY_LAG_SECONDS: gauge "pg_stat_replication_replay_lag_seconds" ["application_name", "client_addr", "state", "slot_name"] new "Time until the standby replayed recent WAL (replay_lag), in seconds; absent when idle.";
    PG_STAT_REPLICATION_WRITE_LAG_BYTES: gauge "pg_stat_replication_write_lag_bytes" ["application_name", "client_addr", "state", "slot_name"] new "WAL bytes sent but not yet written by the standby.";
    PG_STAT_REPLICATION_FLUSH_LAG_BYTES: gauge "pg_stat_replication_flush_lag_bytes" ["application_name", "client_addr", "state", "slot_name"] new "WAL bytes not yet flushed by the standby.";
    PG_STAT_REPLICATION_REPLAY_LAG_BYTES: gauge "pg_stat_replication_replay_lag_bytes" ["application_name", "client_addr", "state", "slot_name"] new "WAL bytes not yet replayed by the standby.";
    PG_STAT_REPLICATION_REPLY_TIME: gauge "pg_stat_replication_reply_time" ["application_name", "client_addr", "state", "slot_name"] pe "Send time of the last reply message received from the standby (Unix seconds)";
    PG_REPLICATION_SLOTS_ACTIVE: gauge "pg_replication_slots_active" ["slot_name", "database"] pe "Flag indicating if the slot is active";
    PG_REPLICATION_SLOTS_PG_WAL_LSN_DIFF: gauge "pg_replication_slots_pg_wal_lsn_diff" ["slot_name", "database"] pe "Replication lag in bytes";
    PG_REPLICATION_SLOTS_SAFE_WAL_SIZE_BYTES: gauge "pg_replication_slots_safe_wal_size_bytes" ["slot_name", "database"] new "WAL bytes that can still be written before this slot is in danger of losing required WAL (absent when max_slot_wal_keep_size = -1).";

    // --- archiver, bgwriter, checkpointer, WAL -------------------------------------
    PG_STAT_ARCHIVER_ARCHIVED_COUNT: counter "pg_stat_archiver_archived_count" [] pe "Number of WAL files that have been successfully archived";
    PG_STAT_ARCHIVER_FAILED_COUNT: counter "pg_stat_archiver_failed_count" [] pe "Number of failed attempts for archiving WAL files";
    PG_STAT_ARCHIVER_LAST_ARCHIVE_AGE: gauge "pg_stat_archiver_last_archive_age" [] pe "Time in seconds since last WAL segment was successfully archived";
    PG_STAT_BGWRITER_CHECKPOINTS_TIMED_TOTAL: counter "pg_stat_bgwriter_checkpoints_timed_total" [] pe "Number of scheduled checkpoints that have been performed";
    PG_STAT_BGWRITER_CHECKPOINTS_REQ_TOTAL: counter "pg_stat_bgwriter_checkpoints_req_total" [] pe "Number of requested checkpoints that have been performed";
    PG_STAT_BGWRITER_CHECKPOINT_WRITE_TIME_TOTAL: counter "pg_stat_bgwriter_checkpoint_write_time_total" [] pe "Total amount of time that has been spent in the portion of checkpoint processing where files are written to disk, in milliseconds";
    PG_STAT_BGWRITER_CHECKPOINT_SYNC_TIME_TOTAL: counter "pg_stat_bgwriter_checkpoint_sync_time_total" [] pe "Total amount of time that has been spent in the portion of checkpoint processing where files are synchronized to disk, in milliseconds";
    PG_STAT_BGWRITER_BUFFERS_CHECKPOINT_TOTAL: counter "pg_stat_bgwriter_buffers_checkpoint_total" [] pe "Number of buffers written during checkpoints";
    PG_STAT_BGWRITER_BUFFERS_CLEAN_TOTAL: counter "pg_stat_bgwriter_buffers_clean_total" [] pe "Number of buffers written by the background writer";
    PG_STAT_BGWRITER_MAXWRITTEN_CLEAN_TOTAL: counter "pg_stat_bgwriter_maxwritten_clean_total" [] pe "Number of times the background writer stopped a cleaning scan because it had written too many buffers";
    PG_STAT_BGWRITER_BUFFERS_BACKEND_TOTAL: counter "pg_stat_bgwriter_buffers_backend_total" [] pe "Number of buffers written directly by a backend";
    PG_STAT_BGWRITER_BUFFERS_BACKEND_FSYNC_TOTAL: counter "pg_stat_bgwriter_buffers_backend_fsync_total" [] pe "Number of times a backend had to execute its own fsync call (normally the background writer handles those even when the backend does its own write)";
    PG_STAT_BGWRITER_BUFFERS_ALLOC_TOTAL: counter "pg_stat_bgwriter_buffers_alloc_total" [] pe "Number of buffers allocated";
    PG_STAT_BGWRITER_STATS_RESET_TOTAL: counter "pg_stat_bgwriter_stats_reset_total" [] pe "Time at which these statistics were last reset";
    PG_STAT_CHECKPOINTER_NUM_TIMED_TOTAL: counter "pg_stat_checkpointer_num_timed_total" [] pe "Number of scheduled checkpoints due to timeout (PostgreSQL 17+)";
    PG_STAT_CHECKPOINTER_NUM_REQUESTED_TOTAL: counter "pg_stat_checkpointer_num_requested_total" [] pe "Number of requested checkpoints that have been performed (PostgreSQL 17+)";
    PG_STAT_CHECKPOINTER_RESTARTPOINTS_TIMED_TOTAL: counter "pg_stat_checkpointer_restartpoints_timed_total" [] pe "Number of scheduled restartpoints due to timeout or after a failed attempt to perform it (PostgreSQL 17+)";
    PG_STAT_CHECKPOINTER_RESTARTPOINTS_REQ_TOTAL: counter "pg_stat_checkpointer_restartpoints_req_total" [] pe "Number of requested restartpoints (PostgreSQL 17+)";
    PG_STAT_CHECKPOINTER_RESTARTPOINTS_DONE_TOTAL: counter "pg_stat_checkpointer_restartpoints_done_total" [] pe "Number of restartpoints that have been performed (PostgreSQL 17+)";
    PG_STAT_CHECKPOINTER_WRITE_TIME_TOTAL: counter "pg_stat_checkpointer_write_time_total" [] pe "Total amount of time that has been spent in the portion of processing checkpoints and restartpoints where files are written to disk, in milliseconds (PostgreSQL 17+)";
    PG_STAT_CHECKPOINTER_SYNC_TIME_TOTAL: counter "pg_stat_checkpointer_sync_time_total" [] pe "Total amount of time that has been spent in the portion of processing checkpoints and restartpoints where files are synchronized to disk, in milliseconds (PostgreSQL 17+)";
    PG_STAT_CHECKPOINTER_BUFFERS_WRITTEN_TOTAL: counter "pg_stat_checkpointer_buffers_written_total" [] pe "Number of buffers written during checkpoints and restartpoints (PostgreSQL 17+)";
    PG_STAT_CHECKPOINTER_STATS_RESET_TOTAL: counter "pg_stat_checkpointer_stats_reset_total" [] pe "Time at which these statistics were last reset (PostgreSQL 17+)";
    PG_STAT_CHECKPOINTER_NUM_DONE_TOTAL: counter "pg_stat_checkpointer_num_done_total" [] new "Number of checkpoints that have been performed (PostgreSQL 18+)";
    PG_STAT_CHECKPOINTER_SLRU_WRITTEN_TOTAL: counter "pg_stat_checkpointer_slru_written_total" [] new "Number of SLRU buffers written during checkpoints and restartpoints (PostgreSQL 18+)";
    PG_STAT_WAL_RECORDS_TOTAL: counter "pg_stat_wal_records_total" [] new "Total number of WAL records generated (pg_stat_wal, PostgreSQL 14+)";
    PG_STAT_WAL_FPI_TOTAL: counter "pg_stat_wal_fpi_total" [] new "Total number of WAL full page images generated";
    PG_STAT_WAL_BYTES_TOTAL: counter "pg_stat_wal_bytes_total" [] new "Total amount of WAL generated in bytes";
    PG_STAT_WAL_BUFFERS_FULL_TOTAL: counter "pg_stat_wal_buffers_full_total" [] new "Number of times WAL data was written to disk because WAL buffers became full";
    PG_STAT_WAL_WRITE_TOTAL: counter "pg_stat_wal_write_total" [] new "Number of times WAL buffers were written out to disk (PostgreSQL 14-17)";
    PG_STAT_WAL_SYNC_TOTAL: counter "pg_stat_wal_sync_total" [] new "Number of times WAL files were synced to disk (PostgreSQL 14-17)";
    PG_STAT_WAL_WRITE_TIME_SECONDS_TOTAL: counter "pg_stat_wal_write_time_seconds_total" [] new "Time spent writing WAL buffers to disk, in seconds (needs track_wal_io_timing; PostgreSQL 14-17)";
    PG_STAT_WAL_SYNC_TIME_SECONDS_TOTAL: counter "pg_stat_wal_sync_time_seconds_total" [] new "Time spent syncing WAL files to disk, in seconds (needs track_wal_io_timing; PostgreSQL 14-17)";

    // --- pg_stat_io (16+): one row per backend type x object x context PostgreSQL tracks
    PG_STAT_IO_READS_TOTAL: counter "pg_stat_io_reads_total" ["backend_type", "object", "context"] new "Number of read operations (pg_stat_io.reads, PostgreSQL 16+)";
    PG_STAT_IO_READ_BYTES_TOTAL: counter "pg_stat_io_read_bytes_total" ["backend_type", "object", "context"] new "Bytes read (read_bytes on 18+, reads x op_bytes on 16-17)";
    PG_STAT_IO_READ_TIME_SECONDS_TOTAL: counter "pg_stat_io_read_time_seconds_total" ["backend_type", "object", "context"] new "Time spent in read operations, in seconds (needs track_io_timing)";
    PG_STAT_IO_WRITES_TOTAL: counter "pg_stat_io_writes_total" ["backend_type", "object", "context"] new "Number of write operations";
    PG_STAT_IO_WRITE_BYTES_TOTAL: counter "pg_stat_io_write_bytes_total" ["backend_type", "object", "context"] new "Bytes written (write_bytes on 18+, writes x op_bytes on 16-17)";
    PG_STAT_IO_WRITE_TIME_SECONDS_TOTAL: counter "pg_stat_io_write_time_seconds_total" ["backend_type", "object", "context"] new "Time spent in write operations, in seconds (needs track_io_timing)";
    PG_STAT_IO_WRITEBACKS_TOTAL: counter "pg_stat_io_writebacks_total" ["backend_type", "object", "context"] new "Number of units of op_bytes the process asked the kernel to write out to storage";
    PG_STAT_IO_EXTENDS_TOTAL: counter "pg_stat_io_extends_total" ["backend_type", "object", "context"] new "Number of relation extend operations";
    PG_STAT_IO_EXTEND_BYTES_TOTAL: counter "pg_stat_io_extend_bytes_total" ["backend_type", "object", "context"] new "Bytes added by relation extends (extend_bytes on 18+, extends x op_bytes on 16-17)";
    PG_STAT_IO_HITS_TOTAL: counter "pg_stat_io_hits_total" ["backend_type", "object", "context"] new "Number of times a desired block was found in a shared buffer";
    PG_STAT_IO_EVICTIONS_TOTAL: counter "pg_stat_io_evictions_total" ["backend_type", "object", "context"] new "Number of times a block was written out from a buffer to make it available for another use";
    PG_STAT_IO_REUSES_TOTAL: counter "pg_stat_io_reuses_total" ["backend_type", "object", "context"] new "Number of times an existing buffer in a size-limited ring buffer outside shared buffers was reused";
    PG_STAT_IO_FSYNCS_TOTAL: counter "pg_stat_io_fsyncs_total" ["backend_type", "object", "context"] new "Number of fsync calls (only tracked in context normal)";

    // --- per-table (slow, cached; top postgres.top_tables by size per database) ----
    PG_STAT_USER_TABLES_SEQ_SCAN: counter "pg_stat_user_tables_seq_scan" ["datname", "schemaname", "relname"] pe "Number of sequential scans initiated on this table";
    PG_STAT_USER_TABLES_SEQ_TUP_READ: counter "pg_stat_user_tables_seq_tup_read" ["datname", "schemaname", "relname"] pe "Number of live rows fetched by sequential scans";
    PG_STAT_USER_TABLES_IDX_SCAN: counter "pg_stat_user_tables_idx_scan" ["datname", "schemaname", "relname"] pe "Number of index scans initiated on this table";
    PG_STAT_USER_TABLES_IDX_TUP_FETCH: counter "pg_stat_user_tables_idx_tup_fetch" ["datname", "schemaname", "relname"] pe "Number of live rows fetched by index scans";
    PG_STAT_USER_TABLES_N_TUP_INS: counter "pg_stat_user_tables_n_tup_ins" ["datname", "schemaname", "relname"] pe "Number of rows inserted";
    PG_STAT_USER_TABLES_N_TUP_UPD: counter "pg_stat_user_tables_n_tup_upd" ["datname", "schemaname", "relname"] pe "Number of rows updated";
    PG_STAT_USER_TABLES_N_TUP_DEL: counter "pg_stat_user_tables_n_tup_del" ["datname", "schemaname", "relname"] pe "Number of rows deleted";
    PG_STAT_USER_TABLES_N_TUP_HOT_UPD: counter "pg_stat_user_tables_n_tup_hot_upd" ["datname", "schemaname", "relname"] pe "Number of rows HOT updated (i.e., with no separate index update required)";
    PG_STAT_USER_TABLES_N_LIVE_TUP: gauge "pg_stat_user_tables_n_live_tup" ["datname", "schemaname", "relname"] pe "Estimated number of live rows";
    PG_STAT_USER_TABLES_N_DEAD_TUP: gauge "pg_stat_user_tables_n_dead_tup" ["datname", "schemaname", "relname"] pe "Estimated number of dead rows";
    PG_STAT_USER_TABLES_N_MOD_SINCE_ANALYZE: gauge "pg_stat_user_tables_n_mod_since_analyze" ["datname", "schemaname", "relname"] pe "Estimated number of rows changed since last analyze";
    PG_STAT_USER_TABLES_LAST_VACUUM: gauge "pg_stat_user_tables_last_vacuum" ["datname", "schemaname", "relname"] pe "Last time at which this table was manually vacuumed (not counting VACUUM FULL)";
    PG_STAT_USER_TABLES_LAST_AUTOVACUUM: gauge "pg_stat_user_tables_last_autovacuum" ["datname", "schemaname", "relname"] pe "Last time at which this table was vacuumed by the autovacuum daemon";
    PG_STAT_USER_TABLES_LAST_ANALYZE: gauge "pg_stat_user_tables_last_analyze" ["datname", "schemaname", "relname"] pe "Last time at which this table was manually analyzed";
    PG_STAT_USER_TABLES_LAST_AUTOANALYZE: gauge "pg_stat_user_tables_last_autoanalyze" ["datname", "schemaname", "relname"] pe "Last time at which this table was analyzed by the autovacuum daemon";
    PG_STAT_USER_TABLES_VACUUM_COUNT: counter "pg_stat_user_tables_vacuum_count" ["datname", "schemaname", "relname"] pe "Number of times this table has been manually vacuumed (not counting VACUUM FULL)";
    PG_STAT_USER_TABLES_AUTOVACUUM_COUNT: counter "pg_stat_user_tables_autovacuum_count" ["datname", "schemaname", "relname"] pe "Number of times this table has been vacuumed by the autovacuum daemon";
    PG_STAT_USER_TABLES_ANALYZE_COUNT: counter "pg_stat_user_tables_analyze_count" ["datname", "schemaname", "relname"] pe "Number of times this table has been manually analyzed";
    PG_STAT_USER_TABLES_AUTOANALYZE_COUNT: counter "pg_stat_user_tables_autoanalyze_count" ["datname", "schemaname", "relname"] pe "Number of times this table has been analyzed by the autovacuum daemon";
    PG_STAT_USER_TABLES_TABLE_SIZE_BYTES: gauge "pg_stat_user_tables_table_size_bytes" ["datname", "schemaname", "relname"] pe "Total disk space used by this table, in bytes";
    PG_STAT_USER_TABLES_INDEX_SIZE_BYTES: gauge "pg_stat_user_tables_index_size_bytes" ["datname", "schemaname", "relname"] pe "Total disk space used by this index, in bytes";
    PG_STAT_USER_TABLES_TOTAL_VACUUM_TIME_SECONDS_TOTAL: counter "pg_stat_user_tables_total_vacuum_time_seconds_total" ["datname", "schemaname", "relname"] new "Time this table has been manually vacuumed, in seconds (PostgreSQL 18+)";
    PG_STAT_USER_TABLES_TOTAL_AUTOVACUUM_TIME_SECONDS_TOTAL: counter "pg_stat_user_tables_total_autovacuum_time_seconds_total" ["datname", "schemaname", "relname"] new "Time this table has been vacuumed by autovacuum, in seconds (PostgreSQL 18+)";
    PG_STAT_USER_TABLES_TOTAL_ANALYZE_TIME_SECONDS_TOTAL: counter "pg_stat_user_tables_total_analyze_time_seconds_total" ["datname", "schemaname", "relname"] new "Time this table has been manually analyzed, in seconds (PostgreSQL 18+)";
    PG_STAT_USER_TABLES_TOTAL_AUTOANALYZE_TIME_SECONDS_TOTAL: counter "pg_stat_user_tables_total_autoanalyze_time_seconds_total" ["datname", "schemaname", "relname"] new "Time this table has been analyzed by autovacuum, in seconds (PostgreSQL 18+)";
    PG_STATIO_USER_TABLES_HEAP_BLOCKS_READ: counter "pg_statio_user_tables_heap_blocks_read" ["datname", "schemaname", "relname"] pe "Number of disk blocks read from this table";
    PG_STATIO_USER_TABLES_HEAP_BLOCKS_HIT: counter "pg_statio_user_tables_heap_blocks_hit" ["datname", "schemaname", "relname"] pe "Number of buffer hits in this table";
    PG_STATIO_USER_TABLES_IDX_BLOCKS_READ: counter "pg_statio_user_tables_idx_blocks_read" ["datname", "schemaname", "relname"] pe "Number of disk blocks read from all indexes on this table";
    PG_STATIO_USER_TABLES_IDX_BLOCKS_HIT: counter "pg_statio_user_tables_idx_blocks_hit" ["datname", "schemaname", "relname"] pe "Number of buffer hits in all indexes on this table";
    PG_STATIO_USER_TABLES_TOAST_BLOCKS_READ: counter "pg_statio_user_tables_toast_blocks_read" ["datname", "schemaname", "relname"] pe "Number of disk blocks read from this table's TOAST table (if any)";
    PG_STATIO_USER_TABLES_TOAST_BLOCKS_HIT: counter "pg_statio_user_tables_toast_blocks_hit" ["datname", "schemaname", "relname"] pe "Number of buffer hits in this table's TOAST table (if any)";
    PG_STATIO_USER_TABLES_TIDX_BLOCKS_READ: counter "pg_statio_user_tables_tidx_blocks_read" ["datname", "schemaname", "relname"] pe "Number of disk blocks read from this table's TOAST table indexes (if any)";
    PG_STATIO_USER_TABLES_TIDX_BLOCKS_HIT: counter "pg_statio_user_tables_tidx_blocks_hit" ["datname", "schemaname", "relname"] pe "Number of buffer hits in this table's TOAST table indexes (if any)";
    PG_STATIO_USER_INDEXES_IDX_BLKS_READ_TOTAL: counter "pg_statio_user_indexes_idx_blks_read_total" ["datname", "schemaname", "relname", "indexrelname"] pe "Number of disk blocks read from this index (the indexes of the postgres.top_tables largest tables)";
    PG_STATIO_USER_INDEXES_IDX_BLKS_HIT_TOTAL: counter "pg_statio_user_indexes_idx_blks_hit_total" ["datname", "schemaname", "relname", "indexrelname"] pe "Number of buffer hits in this index";

    // --- pg_stat_statements (slow, cached; top postgres.top_statements by total time)
    PG_STAT_STATEMENTS_CALLS_TOTAL: counter "pg_stat_statements_calls_total" ["user", "datname", "queryid"] pe "Number of times executed";
    PG_STAT_STATEMENTS_SECONDS_TOTAL: counter "pg_stat_statements_seconds_total" ["user", "datname", "queryid"] pe "Total time spent in the statement, in seconds";
    PG_STAT_STATEMENTS_ROWS_TOTAL: counter "pg_stat_statements_rows_total" ["user", "datname", "queryid"] pe "Total number of rows retrieved or affected by the statement";
    PG_STAT_STATEMENTS_BLOCK_READ_SECONDS_TOTAL: counter "pg_stat_statements_block_read_seconds_total" ["user", "datname", "queryid"] pe "Total time the statement spent reading blocks, in seconds";
    PG_STAT_STATEMENTS_BLOCK_WRITE_SECONDS_TOTAL: counter "pg_stat_statements_block_write_seconds_total" ["user", "datname", "queryid"] pe "Total time the statement spent writing blocks, in seconds";

    // --- PgBouncer (pgbouncer_exporter 0.12 names; `instance` label when several are configured)
    PGBOUNCER_UP: gauge "pgbouncer_up" [] pbe "The pgbouncer scrape succeeded";
    PGBOUNCER_VERSION_INFO: gauge "pgbouncer_version_info" ["version"] pbe "The pgbouncer version info";
    PGBOUNCER_POOLS_CLIENT_ACTIVE_CONNECTIONS: gauge "pgbouncer_pools_client_active_connections" ["database", "user"] pbe "Client connections linked to server connection and able to process queries, shown as connection";
    PGBOUNCER_POOLS_CLIENT_WAITING_CONNECTIONS: gauge "pgbouncer_pools_client_waiting_connections" ["database", "user"] pbe "Client connections waiting on a server connection, shown as connection";
    PGBOUNCER_POOLS_CLIENT_ACTIVE_CANCEL_CONNECTIONS: gauge "pgbouncer_pools_client_active_cancel_connections" ["database", "user"] pbe "Client connections that have forwarded query cancellations to the server and are waiting for the server response";
    PGBOUNCER_POOLS_CLIENT_WAITING_CANCEL_CONNECTIONS: gauge "pgbouncer_pools_client_waiting_cancel_connections" ["database", "user"] pbe "Client connections that have not forwarded query cancellations to the server yet";
    PGBOUNCER_POOLS_SERVER_ACTIVE_CONNECTIONS: gauge "pgbouncer_pools_server_active_connections" ["database", "user"] pbe "Server connections linked to a client connection, shown as connection";
    PGBOUNCER_POOLS_SERVER_ACTIVE_CANCEL_CONNECTIONS: gauge "pgbouncer_pools_server_active_cancel_connections" ["database", "user"] pbe "Server connections that are currently forwarding a cancel request.";
    PGBOUNCER_POOLS_SERVER_BEING_CANCELED_CONNECTIONS: gauge "pgbouncer_pools_server_being_canceled_connections" ["database", "user"] pbe "Servers that normally could become idle but are waiting to do so until all in-flight cancel requests have completed that were sent to cancel a query on this server.";
    PGBOUNCER_POOLS_SERVER_IDLE_CONNECTIONS: gauge "pgbouncer_pools_server_idle_connections" ["database", "user"] pbe "Server connections idle and ready for a client query, shown as connection";
    PGBOUNCER_POOLS_SERVER_USED_CONNECTIONS: gauge "pgbouncer_pools_server_used_connections" ["database", "user"] pbe "Server connections idle more than server_check_delay, needing server_check_query, shown as connection";
    PGBOUNCER_POOLS_SERVER_TESTING_CONNECTIONS: gauge "pgbouncer_pools_server_testing_connections" ["database", "user"] pbe "Server connections currently running either server_reset_query or server_check_query, shown as connection";
    PGBOUNCER_POOLS_SERVER_LOGIN_CONNECTIONS: gauge "pgbouncer_pools_server_login_connections" ["database", "user"] pbe "Server connections currently in the process of logging in, shown as connection";
    PGBOUNCER_POOLS_CLIENT_MAXWAIT_SECONDS: gauge "pgbouncer_pools_client_maxwait_seconds" ["database", "user"] pbe "Age of oldest unserved client connection, shown as second (maxwait plus maxwait_us: pgvigil keeps the microseconds pgbouncer_exporter drops)";
    PGBOUNCER_CLIENT_CONNECTIONS: gauge "pgbouncer_client_connections" ["database", "user", "application_name", "state"] pbe "Number of client connections grouped by database, user, application name, and state (SHOW CLIENTS; the 20 commonest application names, the rest as \"other\")";
    PGBOUNCER_POOLS_UTILIZATION_RATIO: gauge "pgbouncer_pools_utilization_ratio" ["database", "user"] new "Server connections in use (sv_active) over the database's pool_size; 1 means the pool is exhausted, above 1 the reserve pool is in use.";
    PGBOUNCER_STATS_TOTALS_QUERIES_POOLED_TOTAL: counter "pgbouncer_stats_totals_queries_pooled_total" ["database"] pbe "Total number of SQL queries pooled";
    PGBOUNCER_STATS_TOTALS_QUERIES_DURATION_SECONDS_TOTAL: counter "pgbouncer_stats_totals_queries_duration_seconds_total" ["database"] pbe "Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, executing queries";
    PGBOUNCER_STATS_TOTALS_RECEIVED_BYTES_TOTAL: counter "pgbouncer_stats_totals_received_bytes_total" ["database"] pbe "Total volume in bytes of network traffic received by pgbouncer, shown as bytes";
    PGBOUNCER_STATS_TOTALS_SENT_BYTES_TOTAL: counter "pgbouncer_stats_totals_sent_bytes_total" ["database"] pbe "Total volume in bytes of network traffic sent by pgbouncer, shown as bytes";
    PGBOUNCER_STATS_TOTALS_CLIENT_WAIT_SECONDS_TOTAL: counter "pgbouncer_stats_totals_client_wait_seconds_total" ["database"] pbe "Time spent by clients waiting for a server in seconds";
    PGBOUNCER_STATS_TOTALS_SQL_TRANSACTIONS_POOLED_TOTAL: counter "pgbouncer_stats_totals_sql_transactions_pooled_total" ["database"] pbe "Total number of SQL transactions pooled";
    PGBOUNCER_STATS_TOTALS_SERVER_IN_TRANSACTION_SECONDS_TOTAL: counter "pgbouncer_stats_totals_server_in_transaction_seconds_total" ["database"] pbe "Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction, either idle in transaction or executing queries";
    PGBOUNCER_STATS_TOTALS_SERVER_ASSIGNMENTS_TOTAL: counter "pgbouncer_stats_totals_server_assignments_total" ["database"] pbe "Total number of client connections which have been served since process start (PgBouncer 1.23+)";
    PGBOUNCER_STATS_TOTALS_CLIENT_PARSES_TOTAL: counter "pgbouncer_stats_totals_client_parses_total" ["database"] pbe "Total number of prepared statement Parse messages received from clients (PgBouncer 1.24+)";
    PGBOUNCER_STATS_TOTALS_SERVER_PARSES_TOTAL: counter "pgbouncer_stats_totals_server_parses_total" ["database"] pbe "Total number of prepared statement Parse messages sent by pgbouncer to PostgreSQL (PgBouncer 1.24+)";
    PGBOUNCER_STATS_TOTALS_BINDS_TOTAL: counter "pgbouncer_stats_totals_binds_total" ["database"] pbe "Total number of prepared statements readied for execution with a Bind message (PgBouncer 1.24+)";
    PGBOUNCER_DATABASES_POOL_SIZE: gauge "pgbouncer_databases_pool_size" ["name", "host", "port", "database", "force_user", "pool_mode"] pbe "Maximum number of server connections";
    PGBOUNCER_DATABASES_RESERVE_POOL: gauge "pgbouncer_databases_reserve_pool" ["name", "host", "port", "database", "force_user", "pool_mode"] pbe "Maximum number of additional connections for this database";
    PGBOUNCER_DATABASES_MAX_CONNECTIONS: gauge "pgbouncer_databases_max_connections" ["name", "host", "port", "database", "force_user", "pool_mode"] pbe "Maximum number of allowed connections for this database";
    PGBOUNCER_DATABASES_CURRENT_CONNECTIONS: gauge "pgbouncer_databases_current_connections" ["name", "host", "port", "database", "force_user", "pool_mode"] pbe "Current number of connections for this database";
    PGBOUNCER_DATABASES_PAUSED: gauge "pgbouncer_databases_paused" ["name", "host", "port", "database", "force_user", "pool_mode"] pbe "1 if this database is currently paused, else 0";
    PGBOUNCER_DATABASES_DISABLED: gauge "pgbouncer_databases_disabled" ["name", "host", "port", "database", "force_user", "pool_mode"] pbe "1 if this database is currently disabled, else 0";
    PGBOUNCER_DATABASES: gauge "pgbouncer_databases" [] pbe "Count of databases";
    PGBOUNCER_USERS: gauge "pgbouncer_users" [] pbe "Count of users";
    PGBOUNCER_POOLS: gauge "pgbouncer_pools" [] pbe "Count of pools";
    PGBOUNCER_FREE_CLIENTS: gauge "pgbouncer_free_clients" [] pbe "Count of free clients";
    PGBOUNCER_USED_CLIENTS: gauge "pgbouncer_used_clients" [] pbe "Count of used clients";
    PGBOUNCER_LOGIN_CLIENTS: gauge "pgbouncer_login_clients" [] pbe "Count of clients in login state";
    PGBOUNCER_FREE_SERVERS: gauge "pgbouncer_free_servers" [] pbe "Count of free servers";
    PGBOUNCER_USED_SERVERS: gauge "pgbouncer_used_servers" [] pbe "Count of used servers";
    PGBOUNCER_CACHED_DNS_NAMES: gauge "pgbouncer_cached_dns_names" [] pbe "Count of DNS names in the cache";
    PGBOUNCER_CACHED_DNS_ZONES: gauge "pgbouncer_cached_dns_zones" [] pbe "Count of DNS zones in the cache";
    PGBOUNCER_IN_FLIGHT_DNS_QUERIES: gauge "pgbouncer_in_flight_dns_queries" [] pbe "Count of in-flight DNS queries";
    PGBOUNCER_CONFIG_MAX_CLIENT_CONNECTIONS: gauge "pgbouncer_config_max_client_connections" [] pbe "Config maximum number of client connections";
    PGBOUNCER_CONFIG_MAX_USER_CONNECTIONS: gauge "pgbouncer_config_max_user_connections" [] pbe "Config maximum number of server connections per user";

    // --- PostgREST (admin server) ----------------------------------------------------
    PGVIGIL_POSTGREST_UP: gauge "pgvigil_postgrest_up" [] new "Whether PostgREST's admin /metrics answered the last scrape (1) or not (0).";
    PGVIGIL_POSTGREST_READY: gauge "pgvigil_postgrest_ready" [] new "Whether PostgREST's admin /ready answered 200 (1) or not (0): ready means connected to the database with a loaded schema cache.";

    // --- API proxy ----------------------------------------------------------------
    PGVIGIL_API_REQUESTS_TOTAL: counter "pgvigil_api_requests_total" ["route", "method", "code", "role"] new "Requests through the API proxy, by route (path without query; 'other' past api_proxy.max_routes), method, status code and role (JWT claim at api_proxy.role_claim_key, anon_role without a token).";
    PGVIGIL_API_REQUEST_DURATION_SECONDS: histogram "pgvigil_api_request_duration_seconds" ["route", "method"] new "Time from receiving a request to the end of its response body, in seconds.";
    PGVIGIL_API_ROWS_TOTAL: counter "pgvigil_api_rows_total" ["route", "method"] new "Rows returned or affected, from the upstream's Content-Range header (0-24/* is 25 rows).";
    PGVIGIL_API_UPSTREAM_ERRORS_TOTAL: counter "pgvigil_api_upstream_errors_total" ["route", "error"] new "Errors by code: PostgREST's Proxy-Status error (e.g. PGRST116), or upstream_unreachable / upstream_timeout when the proxy got no response.";
    PGVIGIL_API_UPSTREAM_STAGE_DURATION_SECONDS: histogram "pgvigil_api_upstream_stage_duration_seconds" ["stage"] new "PostgREST's Server-Timing stages (jwt, parse, plan, transaction, response), in seconds; only when PostgREST sends Server-Timing.";
    PGVIGIL_API_JWKS_REFRESH_FAILURES_TOTAL: counter "pgvigil_api_jwks_refresh_failures_total" [] new "Failed fetches of api_proxy.jwks_url (unreachable, non-2xx, not a JSON key set, or no usable key); the proxy keeps verifying with the keys it last fetched.";
    PGVIGIL_API_JWKS_LAST_REFRESH_TIMESTAMP_SECONDS: gauge "pgvigil_api_jwks_last_refresh_timestamp_seconds" [] new "When the key set at api_proxy.jwks_url was last fetched successfully, as a Unix timestamp; 0 until the first success.";
    PGVIGIL_API_JWKS_KEYS: gauge "pgvigil_api_jwks_keys" [] new "Signing keys in the cached key set from api_proxy.jwks_url that the proxy can verify with.";

    // --- backups and the WAL archive ----------------------------------------------------
    PGVIGIL_BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS: gauge "pgvigil_backup_last_success_timestamp_seconds" [] new "Stop time of the newest committed backup in the repository (Unix seconds); absent until there is one.";
    PGVIGIL_BACKUP_LAST_DURATION_SECONDS: gauge "pgvigil_backup_last_duration_seconds" [] new "How long the newest committed backup took, in seconds.";
    PGVIGIL_BACKUP_LAST_SIZE_BYTES: gauge "pgvigil_backup_last_size_bytes" ["kind"] new "Size of the newest committed backup: kind=raw (the tar stream) or kind=stored (compressed, in the repository).";
    PGVIGIL_BACKUP_FAILURES_TOTAL: counter "pgvigil_backup_failures_total" [] new "Scheduled backups that failed (skipped runs on a standby or without the lease do not count).";
    PGVIGIL_BACKUP_RUNNING: gauge "pgvigil_backup_running" [] new "1 while this daemon runs a scheduled backup.";
    PGVIGIL_BACKUPS: gauge "pgvigil_backups" [] new "Committed backups in the repository.";
    PGVIGIL_WAL_PUSH_TOTAL: counter "pgvigil_wal_push_total" ["outcome"] new "WAL files pushed by archive_command (pgvigil wal-push), reported to this daemon over loopback: outcome=success or failure.";
    PGVIGIL_WAL_PUSH_DURATION_SECONDS: histogram "pgvigil_wal_push_duration_seconds" [] new "Time per WAL push, in seconds (read, compress, upload).";
    PGVIGIL_WAL_LAST_PUSHED_TIMESTAMP_SECONDS: gauge "pgvigil_wal_last_pushed_timestamp_seconds" [] new "When the last successful WAL push was reported (Unix seconds).";
    PGVIGIL_JOB_NEXT_RUN_TIMESTAMP_SECONDS: gauge "pgvigil_job_next_run_timestamp_seconds" ["task"] new "When the scheduled task (backup, drill, retention, offsite) runs next (Unix seconds). The label is not `job`, which Prometheus reserves for the scrape job.";

    // --- PITR verification, heartbeat, drills --------------------------------------------
    PGVIGIL_PITR_WINDOW_START_TIMESTAMP_SECONDS: gauge "pgvigil_pitr_window_start_timestamp_seconds" [] new "Earliest recoverable time: the end of the oldest backup (Unix seconds).";
    PGVIGIL_PITR_WINDOW_END_TIMESTAMP_SECONDS: gauge "pgvigil_pitr_window_end_timestamp_seconds" [] new "Latest recoverable time: just before the newest commit or abort in the archived WAL before any gap, a point replay provably reaches (Unix seconds; 0 when none after the oldest backup).";
    PGVIGIL_PITR_MISSING_SEGMENTS: gauge "pgvigil_pitr_missing_segments" [] new "WAL files expected in the repository but missing (0 when the archive is continuous).";
    PGVIGIL_BACKUPS_UNRESTORABLE: gauge "pgvigil_backups_unrestorable" [] new "Backups that cannot be restored: an object listed in backup.json is missing or has another size, or a link of an incremental backup's chain is missing or broken (0 when every backup is whole).";
    PGVIGIL_PITR_CONTINUITY_OK: gauge "pgvigil_pitr_continuity_ok" [] new "1 when every WAL segment from the oldest backup to the newest archived one is present, every backup's WAL is present and the last WAL PostgreSQL archived is in the repository.";
    PGVIGIL_PITR_LAST_CHECK_TIMESTAMP_SECONDS: gauge "pgvigil_pitr_last_check_timestamp_seconds" [] new "When the last PITR check finished (Unix seconds).";
    PGVIGIL_WAL_ARCHIVE_AGE_SECONDS: gauge "pgvigil_wal_archive_age_seconds" [] new "Seconds since the last WAL file was archived (pg_stat_archiver at each PITR check, else the repository, or the last push the daemon heard of if newer), counted up every second: the current RPO.";
    PGVIGIL_HEARTBEAT_LAG_SECONDS: gauge "pgvigil_heartbeat_lag_seconds" [] new "Age of the row in pgvigil.heartbeat as this server sees it: on a replica, the replication lag (exact to the heartbeat interval).";
    PGVIGIL_DRILL_LAST_SUCCESS_TIMESTAMP_SECONDS: gauge "pgvigil_drill_last_success_timestamp_seconds" [] new "When the last successful restore drill finished (Unix seconds).";
    PGVIGIL_DRILL_LAST_DURATION_SECONDS: gauge "pgvigil_drill_last_duration_seconds" [] new "RTO of the last restore drill: download + replay + checks, in seconds.";
    PGVIGIL_DRILL_LAST_TARGET_SKEW_SECONDS: gauge "pgvigil_drill_last_target_skew_seconds" [] new "How far before its target time the last drill's recovery stopped (target minus last replayed commit), in seconds.";
    PGVIGIL_DRILL_FAILURES_TOTAL: counter "pgvigil_drill_failures_total" [] new "Restore drills that failed.";

    // --- retention, residency, Object Lock, off-site copies ----------------------------------
    PGVIGIL_RETENTION_LAST_RUN_TIMESTAMP_SECONDS: gauge "pgvigil_retention_last_run_timestamp_seconds" [] new "When the last retention run finished without error (Unix seconds).";
    PGVIGIL_RETENTION_DELETED_OBJECTS_TOTAL: counter "pgvigil_retention_deleted_objects_total" ["store", "reason"] new "Objects deleted by retention, by store (primary or offsite) and reason (expired_backup, expired_wal, orphan).";
    PGVIGIL_RETENTION_LOCKED_OBJECTS: gauge "pgvigil_retention_locked_objects" ["store"] new "Objects the last retention run wanted to delete but left because their Object Lock retain-until date has not passed.";
    PGVIGIL_RETENTION_FAILURES_TOTAL: counter "pgvigil_retention_failures_total" [] new "Retention runs that failed.";
    PGVIGIL_STORAGE_RESIDENCY_OK: gauge "pgvigil_storage_residency_ok" ["store"] new "1 when the store's real location (asked of the bucket, not taken from the config) is allowed by storage.residency / allowed_regions; 0 when it is not or cannot be determined (writes are then refused).";
    PGVIGIL_STORAGE_OBJECT_LOCK_ENABLED: gauge "pgvigil_storage_object_lock_enabled" ["store"] new "1 when the store writes every object with an Object Lock retain-until date (storage.s3.object_lock) and the bucket has Object Lock enabled.";
    PGVIGIL_OFFSITE_LAST_SUCCESS_TIMESTAMP_SECONDS: gauge "pgvigil_offsite_last_success_timestamp_seconds" [] new "When the last verified off-site copy finished (Unix seconds).";
    PGVIGIL_OFFSITE_FAILURES_TOTAL: counter "pgvigil_offsite_failures_total" [] new "Off-site copies that failed.";

    // --- audit log ---------------------------------------------------------------------
    PGVIGIL_AUDIT_EVENTS_TOTAL: counter "pgvigil_audit_events_total" ["kind"] new "Audit lines written, by kind (ops, data, access).";
    PGVIGIL_AUDIT_WRITE_FAILURES_TOTAL: counter "pgvigil_audit_write_failures_total" [] new "Failed writes of an audit sink (the file is retried every second until it works; a closed stdout stops the writer). Anything above 0 needs a look: /readyz names the error.";
    PGVIGIL_AUDIT_DROPPED_LINES_TOTAL: counter "pgvigil_audit_dropped_lines_total" [] new "Audit lines dropped because a failing sink let more than 64 MiB queue up (access and ops lines; database change rows wait instead).";
    PGVIGIL_AUDIT_FORWARD_LAG_SECONDS: gauge "pgvigil_audit_forward_lag_seconds" [] new "Age of the newest database change row forwarded from the audit table when it was forwarded, or of the oldest row still waiting (seconds).";
    PGVIGIL_AUDIT_CURSOR_ID: gauge "pgvigil_audit_cursor_id" [] new "The audit table id up to which every row has been forwarded (the persisted cursor).";

    // --- pgvigil itself ---------------------------------------------------------------
    PGVIGIL_BUILD_INFO: gauge "pgvigil_build_info" ["version"] new "pgvigil build information; always 1.";
    PGVIGIL_SCRAPES_TOTAL: counter "pgvigil_scrapes_total" [] new "Collections run (concurrent scrapes that share one collection count once).";
    PGVIGIL_SCRAPE_COLLECTOR_DURATION_SECONDS: gauge "pgvigil_scrape_collector_duration_seconds" ["collector"] new "How long the collector's last run took, in seconds.";
    PGVIGIL_SCRAPE_COLLECTOR_SUCCESS: gauge "pgvigil_scrape_collector_success" ["collector"] new "Whether the collector's last run succeeded (1) or failed or was skipped because its source is down (0).";
    // The standard process metrics (Prometheus client conventions), for pgvigil's own process.
    PROCESS_CPU_SECONDS_TOTAL: counter "process_cpu_seconds_total" [] new "Total user and system CPU time spent in seconds.";
    PROCESS_OPEN_FDS: gauge "process_open_fds" [] new "Number of open file descriptors.";
    PROCESS_MAX_FDS: gauge "process_max_fds" [] new "Maximum number of open file descriptors.";
    PROCESS_VIRTUAL_MEMORY_BYTES: gauge "process_virtual_memory_bytes" [] new "Virtual memory size in bytes.";
    PROCESS_VIRTUAL_MEMORY_MAX_BYTES: gauge "process_virtual_memory_max_bytes" [] new "Maximum amount of virtual memory available in bytes.";
    PROCESS_RESIDENT_MEMORY_BYTES: gauge "process_resident_memory_bytes" [] new "Resident memory size in bytes.";
    PROCESS_START_TIME_SECONDS: gauge "process_start_time_seconds" [] new "Start time of the process since unix epoch in seconds.";
    PROCESS_THREADS: gauge "process_threads" [] new "Number of OS threads in the process.";
    // postgres_exporter's names for the same, which community alerts and dashboards use.
    PG_SCRAPE_COLLECTOR_DURATION_SECONDS: gauge "pg_scrape_collector_duration_seconds" ["collector"] pe "postgres_exporter: collector_name duration in seconds (as pgvigil_scrape_collector_duration_seconds).";
    PG_SCRAPE_COLLECTOR_SUCCESS: gauge "pg_scrape_collector_success" ["collector"] pe "postgres_exporter: collector_name success (as pgvigil_scrape_collector_success).";
    PG_EXPORTER_LAST_SCRAPE_ERROR: gauge "pg_exporter_last_scrape_error" [] pe "Whether the last scrape of metrics from PostgreSQL resulted in an error (1 for error, 0 for success): PostgreSQL down, or any collector failed.";
    PG_EXPORTER_LAST_SCRAPE_DURATION_SECONDS: gauge "pg_exporter_last_scrape_duration_seconds" [] pe "Duration of the last scrape of metrics from PostgreSQL and the other sources.";
    PG_EXPORTER_SCRAPES_TOTAL: counter "pg_exporter_scrapes_total" [] pe "Total number of times PostgreSQL was scraped for metrics (collections; concurrent scrapes share one).";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for d in ALL {
            assert!(seen.insert(d.name), "duplicate {}", d.name);
            if d.naming == Naming::Exact {
                assert!(
                    d.name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{}",
                    d.name
                );
            }
            assert!(!d.help.is_empty());
        }
    }

    #[test]
    fn new_metrics_follow_exporter_conventions() {
        for d in ALL
            .iter()
            .filter(|d| d.compat.is_none() && d.naming == Naming::Exact)
        {
            if d.kind == Kind::Counter {
                assert!(
                    d.name.ends_with("_total"),
                    "counter {} lacks _total",
                    d.name
                );
            } else {
                assert!(
                    !d.name.ends_with("_total"),
                    "non-counter {} ends in _total",
                    d.name
                );
            }
            assert!(
                !d.name.contains("_ms") && !d.name.contains("_milliseconds"),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn lookup_finds_patterns() {
        assert_eq!(
            lookup("pg_settings_max_connections").map(|d| d.name),
            Some("pg_settings_")
        );
        assert_eq!(lookup("pg_up").map(|d| d.name), Some("pg_up"));
        assert!(lookup("pg_nope").is_none());
    }
}

/// The PostgreSQL majors a family exists on, for families that exist only on some:
/// (entry, first major that has it, first major that no longer has it). Every other
/// PostgreSQL family exists on every supported major (13 and newer). The collectors'
/// column version ranges are tested against this table, and a scrape of each major in the
/// harness exports exactly these.
pub static PG_MAJORS: &[(&MetricDef, u32, u32)] = &[
    (&PG_STAT_BGWRITER_CHECKPOINTS_TIMED_TOTAL, 0, 17),
    (&PG_STAT_BGWRITER_CHECKPOINTS_REQ_TOTAL, 0, 17),
    (&PG_STAT_BGWRITER_CHECKPOINT_WRITE_TIME_TOTAL, 0, 17),
    (&PG_STAT_BGWRITER_CHECKPOINT_SYNC_TIME_TOTAL, 0, 17),
    (&PG_STAT_BGWRITER_BUFFERS_CHECKPOINT_TOTAL, 0, 17),
    (&PG_STAT_BGWRITER_BUFFERS_BACKEND_TOTAL, 0, 17),
    (&PG_STAT_BGWRITER_BUFFERS_BACKEND_FSYNC_TOTAL, 0, 17),
    (&PG_STAT_CHECKPOINTER_NUM_TIMED_TOTAL, 17, u32::MAX),
    (&PG_STAT_CHECKPOINTER_NUM_REQUESTED_TOTAL, 17, u32::MAX),
    (
        &PG_STAT_CHECKPOINTER_RESTARTPOINTS_TIMED_TOTAL,
        17,
        u32::MAX,
    ),
    (&PG_STAT_CHECKPOINTER_RESTARTPOINTS_REQ_TOTAL, 17, u32::MAX),
    (&PG_STAT_CHECKPOINTER_RESTARTPOINTS_DONE_TOTAL, 17, u32::MAX),
    (&PG_STAT_CHECKPOINTER_WRITE_TIME_TOTAL, 17, u32::MAX),
    (&PG_STAT_CHECKPOINTER_SYNC_TIME_TOTAL, 17, u32::MAX),
    (&PG_STAT_CHECKPOINTER_BUFFERS_WRITTEN_TOTAL, 17, u32::MAX),
    (&PG_STAT_CHECKPOINTER_STATS_RESET_TOTAL, 17, u32::MAX),
    (&PG_STAT_CHECKPOINTER_NUM_DONE_TOTAL, 18, u32::MAX),
    (&PG_STAT_CHECKPOINTER_SLRU_WRITTEN_TOTAL, 18, u32::MAX),
    (&PG_STAT_WAL_RECORDS_TOTAL, 14, u32::MAX),
    (&PG_STAT_WAL_FPI_TOTAL, 14, u32::MAX),
    (&PG_STAT_WAL_BYTES_TOTAL, 14, u32::MAX),
    (&PG_STAT_WAL_BUFFERS_FULL_TOTAL, 14, u32::MAX),
    (&PG_STAT_WAL_WRITE_TOTAL, 14, 18),
    (&PG_STAT_WAL_SYNC_TOTAL, 14, 18),
    (&PG_STAT_WAL_WRITE_TIME_SECONDS_TOTAL, 14, 18),
    (&PG_STAT_WAL_SYNC_TIME_SECONDS_TOTAL, 14, 18),
    (&PG_STAT_IO_READS_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_READ_BYTES_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_READ_TIME_SECONDS_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_WRITES_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_WRITE_BYTES_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_WRITE_TIME_SECONDS_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_WRITEBACKS_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_EXTENDS_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_EXTEND_BYTES_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_HITS_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_EVICTIONS_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_REUSES_TOTAL, 16, u32::MAX),
    (&PG_STAT_IO_FSYNCS_TOTAL, 16, u32::MAX),
    (
        &PG_STAT_USER_TABLES_TOTAL_VACUUM_TIME_SECONDS_TOTAL,
        18,
        u32::MAX,
    ),
    (
        &PG_STAT_USER_TABLES_TOTAL_AUTOVACUUM_TIME_SECONDS_TOTAL,
        18,
        u32::MAX,
    ),
    (
        &PG_STAT_USER_TABLES_TOTAL_ANALYZE_TIME_SECONDS_TOTAL,
        18,
        u32::MAX,
    ),
    (
        &PG_STAT_USER_TABLES_TOTAL_AUTOANALYZE_TIME_SECONDS_TOTAL,
        18,
        u32::MAX,
    ),
];

/// The majors `def` exists on: `(since, until)`, until exclusive; `(0, u32::MAX)` for
/// families that exist on every major.
pub fn pg_majors(def: &MetricDef) -> (u32, u32) {
    PG_MAJORS
        .iter()
        .find(|(d, _, _)| std::ptr::eq(*d, def))
        .map_or((0, u32::MAX), |&(_, since, until)| (since, until))
}

/// Whether `def` exists on PostgreSQL `major`.
pub fn exists_on(def: &MetricDef, major: u32) -> bool {
    let (since, until) = pg_majors(def);
    major >= since && major < until
}

/// The catalogue's PostgreSQL column: "17+", "up to 16", "14-17", or empty for every major.
fn majors_text(def: &MetricDef) -> String {
    match pg_majors(def) {
        (0, u32::MAX) => String::new(),
        (since, u32::MAX) => format!("{since}+"),
        (0, until) => format!("up to {}", until - 1),
        (since, until) => format!("{since}-{}", until - 1),
    }
}

/// The catalogue as a Markdown table (`pgvigil catalog --markdown`, docs/catalogue.md).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Metric catalogue\n\nGenerated by `pgvigil catalog --markdown`; a test keeps it in sync with \
         `src/metrics/catalogue.rs`. \"compat\" marks names kept from postgres_exporter / \
         pgbouncer_exporter, which may break exporter naming rules (counters without `_total`, \
         milliseconds). \"PostgreSQL\" names the majors a family exists on when not every \
         supported one (13 and newer).\n\n| name | type | labels | compat | PostgreSQL | help |\n|---|---|---|---|---|---|\n",
    );
    for d in ALL {
        let name = match d.naming {
            Naming::Exact => format!("`{}`", d.name),
            Naming::Prefix => format!("`{}*`", d.name),
            Naming::Configured => d.name.to_string(),
        };
        let kind = match d.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        };
        let compat = match d.compat {
            Some(Compat::PostgresExporter) => "postgres_exporter",
            Some(Compat::PgbouncerExporter) => "pgbouncer_exporter",
            None => "",
        };
        out.push_str(&format!(
            "| {name} | {kind} | {} | {compat} | {} | {} |\n",
            d.labels.join(", "),
            majors_text(d),
            d.help.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod doc_tests {
    #[test]
    fn docs_catalogue_is_current() {
        let committed = include_str!("../../docs/catalogue.md");
        assert!(
            committed == super::markdown(),
            "docs/catalogue.md is stale: run `pgvigil catalog --markdown > docs/catalogue.md`"
        );
    }
}
