//! Forwards the rows of the database change audit table (`[audit] table`, normally
//! `audit.logged_actions` from `deploy/sql/audit.sql`) as `kind: "data"` audit lines,
//! losslessly and without duplicates across restarts.
//!
//! # The cursor and the transaction bound
//!
//! Row ids come from a sequence (CACHE 1), but transactions commit in any order: a
//! transaction can draw id 7, stay open while ids 8..=300 commit, and commit last. Reading
//! `id > cursor` alone would skip row 7 forever. So the cursor `C` is exact — every row with
//! `id <= C` has been forwarded or can never appear — and it advances only to a *settled*
//! bound:
//!
//! 1. read `M` = the sequence's `last_value` (every id `<= M` has been drawn), then, in a
//!    later transaction of its own, take a fresh transaction id `X = pg_current_xact_id()`
//!    and commit. The trigger assigns its transaction id before it draws a row id, and xids
//!    are handed out in order, so every transaction holding an id `<= M` has an xid `< X`.
//!    `(M, X)` is the candidate.
//! 2. the candidate is settled once a later snapshot has `xmin >= X`. Because `X` itself
//!    has committed, that snapshot's `xmax` is above every xid `< X`, so any of them still
//!    running would be in its running set and hold `xmin` below `X`: all those
//!    transactions have ended, and that snapshot sees every committed row with `id <= M`.
//!    (`pg_snapshot_xmax` would not do as `X`: it is the latest *completed* xid plus one,
//!    and a running transaction with a newer xid is in no snapshot's running set.)
//! 3. in that same snapshot (one statement) read the rows with `C < id <= M` in id order,
//!    write them, wait until every sink has written them ([`AuditLog::flushed`]), then
//!    persist `C = M` in `<schema>.pgvigil_cursor` (one row per consumer).
//!
//! Taking `X` costs one transaction id (committed asynchronously, no WAL flush) per
//! forwarding cycle while rows are waiting; none when idle. A cycle that caught up paces the
//! next one ([`MIN_CYCLE`]), so a stream of small commits costs at most ~100 cycles a second.
//!
//! Rows are therefore forwarded in id order, each once. The price: a transaction that stays
//! open holds back rows drawn after it began (they are forwarded when it ends);
//! `pgvigil_audit_forward_lag_seconds` shows the age of the oldest row waiting.
//!
//! A crash between writing a batch and committing the cursor would repeat that batch on
//! stdout. With `[audit] file` the tailer starts from the newest `data` line in the file
//! when it is ahead of the stored cursor, so the file never holds a row twice.
//!
//! Wake-ups come from `LISTEN pgvigil_audit` (the trigger notifies; a transaction's
//! notifications arrive once, at commit), with a poll every second as a fallback. Columns in
//! `[audit] redact_columns` are replaced by `"[redacted]"` in the SELECT, so their values
//! never leave PostgreSQL.

use std::path::PathBuf;
use std::time::Duration;

use prometheus::Gauge;
use tokio_util::sync::CancellationToken;

use super::event::EventKind;
use super::sink::{self, AuditLog, SinkError};
use crate::config::AuditTable;
use crate::pg::{self, ConnectOptions};

/// The `consumer` row of this daemon in the cursor table.
pub const CONSUMER: &str = "pgvigil";
/// The marker that replaces redacted values.
pub const REDACTED: &str = "[redacted]";
/// The NOTIFY channel of the audit trigger.
pub const CHANNEL: &str = "pgvigil_audit";

/// The shortest time between two forwarding cycles after one that caught up.
const MIN_CYCLE: Duration = Duration::from_millis(10);

/// Takes a new transaction id and commits it (asynchronously: nothing was written).
const FRESH_XID: &str = "BEGIN; SET LOCAL synchronous_commit = off; \
     SELECT pg_current_xact_id()::text; COMMIT";

/// Why a tailing session ended.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(transparent)]
    Connect(#[from] pg::conn::ConnectError),
    #[error("audit tail of {table}: {step}: {message}")]
    Query {
        table: String,
        step: &'static str,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("audit tail of {table}: {what}; run `pgvigil audit install -c FILE` first")]
    NotInstalled { table: String, what: String },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("audit tail of {table}: pg_current_xact_id() returned no number")]
    NoXid { table: String },
}

crate::own_metrics! {
    /// The tailer's cursor and lag.
    pub struct TailMetrics {
        pub cursor: Gauge = PGVIGIL_AUDIT_CURSOR_ID,
        pub lag: Gauge = PGVIGIL_AUDIT_FORWARD_LAG_SECONDS,
    }
}

/// What the tailer needs.
#[derive(Clone)]
pub struct Tailer {
    pub connect: ConnectOptions,
    pub table: AuditTable,
    pub redact_columns: Vec<String>,
    pub audit: AuditLog,
    /// `[audit] file`, read on start to skip rows already written there.
    pub file: Option<PathBuf>,
    pub metrics: TailMetrics,
    /// Rows per SELECT.
    pub batch: i64,
    /// Fallback poll when no notification arrives.
    pub poll: Duration,
}

/// Tails until cancelled, reconnecting with backoff (250 ms doubling to 5 s) after errors.
pub async fn run(tailer: Tailer, token: CancellationToken) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match session(&tailer, &token).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(event = "audit.tail.failed", table = %tailer.table.quoted(), error = %e, "audit table forwarding stopped; retrying with backoff");
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The SELECT that reads rows in one snapshot, with that snapshot's xmin (in every row,
/// and alone when no row qualifies). Redaction happens here, inside PostgreSQL; the line is
/// assembled in Rust ([`write_line`]), which costs PostgreSQL a third of building it in SQL.
/// `$1` cursor, `$2` upper bound, `$3` limit, `$4` redacted column names.
fn fetch_sql(table: &AuditTable) -> String {
    let redact = |col: &str| {
        format!(
            "(CASE WHEN a.{col} ?| $4::text[] THEN (a.{col} - $4::text[]) || \
             (SELECT jsonb_object_agg(k, to_jsonb('{REDACTED}'::text)) FROM unnest($4::text[]) k WHERE a.{col} ? k) \
             ELSE a.{col} END)::text"
        )
    };
    let ts = |col: &str| {
        format!("to_char(a.{col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
    };
    format!(
        "WITH s AS MATERIALIZED (
           SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin, clock_timestamp() AS now)
         SELECT s.xmin, r.id, extract(epoch FROM s.now - r.action_tstamp_clk)::float8 AS age,
                r.ts, r.action, r.schema_name, r.table_name, r.session_user_name, r.application_name,
                r.client_addr, r.client_port, r.claims, r.transaction_id, r.statement_only,
                r.tx_ts, r.stm_ts, r.row_data, r.changed
           FROM s LEFT JOIN LATERAL (
             SELECT a.id, a.action_tstamp_clk, {clk} AS ts, a.action, a.schema_name, a.table_name,
                    a.session_user_name, a.application_name, host(a.client_addr) AS client_addr,
                    a.client_port, {claims} AS claims, a.transaction_id, a.statement_only,
                    {tx} AS tx_ts, {stm} AS stm_ts, {row} AS row_data, {changed} AS changed
               FROM {table} a
              WHERE a.id > $1 AND a.id <= $2
              ORDER BY a.id
              LIMIT $3) r ON true
          ORDER BY r.id",
        clk = ts("action_tstamp_clk"),
        tx = ts("action_tstamp_tx"),
        stm = ts("action_tstamp_stm"),
        claims = redact("request_claims"),
        row = redact("row_data"),
        changed = redact("changed_fields"),
        table = table.quoted(),
    )
}

/// Appends `s` as a JSON string, or `null`.
fn json_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        // Writing a &str into a Vec cannot fail.
        Some(s) => {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends JSON text PostgreSQL produced (jsonb output is valid JSON), or `null`.
fn json_raw(out: &mut Vec<u8>, s: Option<&str>) {
    out.extend_from_slice(s.unwrap_or("null").as_bytes());
}

/// Appends `key` (the JSON text before a value, e.g. `,"table":`) and a string or `null`.
fn str_field(out: &mut Vec<u8>, key: &[u8], s: Option<&str>) {
    out.extend_from_slice(key);
    json_str(out, s);
}

/// Appends `key` and JSON text PostgreSQL produced, or `null`.
fn raw_field(out: &mut Vec<u8>, key: &[u8], s: Option<&str>) {
    out.extend_from_slice(key);
    json_raw(out, s);
}

/// Appends `key` and a number or boolean, or `null`.
fn plain_field(out: &mut Vec<u8>, key: &[u8], v: Option<impl std::fmt::Display>) {
    out.extend_from_slice(key);
    match v {
        Some(v) => out.extend_from_slice(v.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends one `data` line (and `\n`) for a row of [`fetch_sql`].
fn write_line(out: &mut Vec<u8>, r: &tokio_postgres::Row, id: i64) {
    let text = |i: usize| r.get::<_, Option<&str>>(i);
    let action = text(4).unwrap_or("");
    let event = format!("data.{}", action.to_ascii_lowercase());
    str_field(out, b"{\"ts\":", text(3));
    str_field(out, b",\"kind\":\"data\",\"event\":", Some(&event));
    str_field(
        out,
        b",\"outcome\":\"success\",\"actor\":{\"session_user\":",
        text(7),
    );
    str_field(out, b",\"application_name\":", text(8));
    str_field(out, b",\"client_addr\":", text(9));
    plain_field(out, b",\"client_port\":", r.get::<_, Option<i32>>(10));
    raw_field(out, b",\"claims\":", text(11));
    str_field(out, b"},\"target\":{\"schema\":", text(5));
    str_field(out, b",\"table\":", text(6));
    str_field(out, b",\"action\":", Some(action));
    plain_field(out, b"},\"details\":{\"id\":", Some(id));
    plain_field(out, b",\"transaction_id\":", r.get::<_, Option<i64>>(12));
    plain_field(out, b",\"statement_only\":", r.get::<_, Option<bool>>(13));
    str_field(out, b",\"transaction_ts\":", text(14));
    str_field(out, b",\"statement_ts\":", text(15));
    raw_field(out, b",\"row\":", text(16));
    raw_field(out, b",\"changed\":", text(17));
    out.extend_from_slice(b"}}\n");
}

async fn fresh_xid(client: &tokio_postgres::Client) -> Result<Option<i64>, tokio_postgres::Error> {
    let messages = client.simple_query(FRESH_XID).await?;
    Ok(messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
        _ => None,
    }))
}

struct Statements {
    last_value: tokio_postgres::Statement,
    fetch: tokio_postgres::Statement,
    save: tokio_postgres::Statement,
}

async fn session(t: &Tailer, token: &CancellationToken) -> Result<(), TailError> {
    let table = t.table.quoted();
    let q = |step: &'static str| {
        let table = table.clone();
        move |source: tokio_postgres::Error| TailError::Query {
            table,
            step,
            message: pg::db_error_message(&source),
            source,
        }
    };
    let (tx, mut notified) = tokio::sync::mpsc::unbounded_channel();
    let conn = pg::connect_listening(&t.connect, None, tx).await?;
    let client = &conn.client;

    // Every pod of an HA cluster runs the same config: on a standby, wait for a promotion
    // (the primary's sidecar forwards; a standby cannot take transaction ids).
    let mut logged = false;
    loop {
        let standby: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(q("checking for recovery"))?
            .get(0);
        if !standby {
            break;
        }
        if !std::mem::replace(&mut logged, true) {
            tracing::info!(event = "audit.tail.standby", table = %table, "the server is a standby: audit rows are forwarded by the primary's pgvigil; waiting for a promotion");
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }

    let sequence: Option<String> = client
        .query_one("SELECT pg_get_serial_sequence($1, 'id')", &[&table])
        .await
        .map_err(|e| match e.as_db_error().map(|d| d.code().code()) {
            Some("42P01") => TailError::NotInstalled {
                table: table.clone(),
                what: "the table does not exist".into(),
            },
            _ => q("finding the id sequence")(e),
        })?
        .get(0);
    let Some(sequence) = sequence else {
        return Err(TailError::NotInstalled {
            table: table.clone(),
            what: "its id column has no sequence".into(),
        });
    };
    let cursor_table = format!("\"{}\".pgvigil_cursor", t.table.schema);
    let st = Statements {
        last_value: client
            .prepare(&format!(
                "SELECT coalesce(pg_sequence_last_value('{}'::regclass), 0)",
                sequence.replace('\'', "''")
            ))
            .await
            .map_err(q("preparing"))?,
        fetch: client
            .prepare(&fetch_sql(&t.table))
            .await
            .map_err(q("preparing the row query"))?,
        save: client
            .prepare(&format!(
                "INSERT INTO {cursor_table} (consumer, last_id, updated_at) VALUES ($1, $2, now())
                 ON CONFLICT (consumer) DO UPDATE SET last_id = excluded.last_id, updated_at = now()"
            ))
            .await
            .map_err(|e| match e.as_db_error().map(|d| d.code().code()) {
                Some("42P01") => TailError::NotInstalled {
                    table: table.clone(),
                    what: format!("{cursor_table} does not exist"),
                },
                _ => q("preparing")(e),
            })?,
    };
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(q("LISTEN"))?;

    let stored: Option<i64> = client
        .query_opt(
            &format!("SELECT last_id FROM {cursor_table} WHERE consumer = $1"),
            &[&CONSUMER],
        )
        .await
        .map_err(q("reading the cursor"))?
        .map(|r| r.get(0));
    let mut cursor = stored.unwrap_or(0);
    if let Some(path) = &t.file {
        let in_file = tokio::task::spawn_blocking({
            let path = path.clone();
            move || sink::last_data_id(&path)
        })
        .await
        .map_err(|e| SinkError::File {
            path: path.clone(),
            step: "reading its last data line",
            source: std::io::Error::other(e.to_string()),
        })??;
        if let Some((id, xid)) = in_file.filter(|(id, _)| *id > cursor) {
            // Only when that row is this table's (not of an earlier install whose ids the
            // file still holds): same id, same transaction.
            let same = client
                .query_opt(
                    &format!("SELECT 1 FROM {table} WHERE id = $1 AND transaction_id = $2"),
                    &[&id, &xid],
                )
                .await
                .map_err(q("checking the audit file's last row"))?
                .is_some();
            if same {
                tracing::info!(event = "audit.tail.resumed_from_file", stored = cursor, file_id = id, "the audit file is ahead of the stored cursor (stopped before committing it); continuing after its last row");
                cursor = id;
                client
                    .execute(&st.save, &[&CONSUMER, &cursor])
                    .await
                    .map_err(q("saving the cursor"))?;
            } else {
                tracing::warn!(event = "audit.tail.file_mismatch", stored = cursor, file_id = id, "the audit file's last data row is not in the audit table (reinstalled?); following the stored cursor");
            }
        }
    }
    t.metrics.cursor.set(cursor as f64);
    tracing::info!(event = "audit.tail.started", table = %table, cursor, "forwarding audit table rows");

    // (M, X): every id <= M is final once a snapshot has xmin >= X.
    let mut candidate: Option<(i64, i64)> = None;
    // When the candidate was taken: rows <= M have waited at least this long.
    let mut candidate_since = tokio::time::Instant::now();
    let mut wait = Duration::ZERO;
    // Set after a cycle that forwarded everything it could see: the next one starts no
    // sooner than MIN_CYCLE later, so a stream of small commits (one notification each)
    // costs at most ~100 cycles (transaction ids, cursor commits) a second.
    let mut pace = false;
    loop {
        if std::mem::take(&mut pace) {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(MIN_CYCLE) => {}
            }
            while notified.try_recv().is_ok() {}
        } else if !wait.is_zero() {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = notified.recv() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            while notified.try_recv().is_ok() {}
        }
        if token.is_cancelled() {
            return Ok(());
        }
        let last: i64 = client
            .query_one(&st.last_value, &[])
            .await
            .map_err(q("reading the sequence"))?
            .get(0);
        if last > cursor && candidate.is_none() {
            let xid = fresh_xid(client)
                .await
                .map_err(q("taking a transaction id"))?
                .ok_or_else(|| TailError::NoXid {
                    table: table.clone(),
                })?;
            candidate = Some((last, xid));
            candidate_since = tokio::time::Instant::now();
        }
        let Some((bound, bound_xid)) = candidate else {
            // Idle: the lag stays what it was when the newest row was forwarded.
            wait = t.poll;
            continue;
        };
        // While waiting for an open transaction, one row (the oldest waiting) is enough to
        // tell whether it ended and how old the wait is.
        let limit = if wait.is_zero() { t.batch } else { 1 };
        let rows = client
            .query(&st.fetch, &[&cursor, &bound, &limit, &t.redact_columns])
            .await
            .map_err(q("reading rows"))?;
        let xmin: i64 = rows.first().map_or(0, |r| r.get(0));
        let Some(settled) = (bound_xid <= xmin).then_some(bound) else {
            // Some transaction that may hold a lower id is still open: wait for it. The lag
            // is the oldest visible row's age, or (its row being invisible) how long the
            // bound has waited.
            let oldest = rows
                .iter()
                .filter_map(|r| r.get::<_, Option<f64>>(2))
                .fold(candidate_since.elapsed().as_secs_f64(), f64::max);
            t.metrics.lag.set(oldest);
            wait = (wait * 2).clamp(Duration::from_millis(5), t.poll);
            continue;
        };
        let mut out = Vec::with_capacity(rows.len() * 512);
        let mut n = 0u64;
        let mut last_id = None;
        let mut newest_age = 0.0f64;
        for r in &rows {
            let Some(id) = r.get::<_, Option<i64>>(1) else {
                continue;
            };
            if id > settled {
                break;
            }
            write_line(&mut out, r, id);
            n += 1;
            last_id = Some(id);
            newest_age = r.get::<_, Option<f64>>(2).unwrap_or(0.0);
        }
        let full = rows.len() as i64 >= limit;
        let new_cursor = match (full, last_id) {
            // The batch may have stopped short of the bound: continue after its last row.
            (true, Some(id))
                if rows.last().and_then(|r| r.get::<_, Option<i64>>(1)) <= Some(settled) =>
            {
                id
            }
            _ => settled,
        };
        if n > 0 {
            t.audit.emit_serialized(EventKind::Data, &out, n);
            t.audit.flushed().await?;
        }
        client
            .execute(&st.save, &[&CONSUMER, &new_cursor])
            .await
            .map_err(q("saving the cursor"))?;
        cursor = new_cursor;
        candidate = candidate.filter(|c| c.0 > cursor);
        t.metrics.cursor.set(cursor as f64);
        t.metrics.lag.set(newest_age.max(0.0));
        // A full batch: more is waiting, go again at once. Otherwise pace the next cycle.
        wait = Duration::ZERO;
        pace = !full;
    }
}
