//! The audit log end to end: database change rows forwarded exactly once (also when a
//! transaction commits out of id order, and across a SIGKILL of the daemon), redaction
//! inside PostgreSQL, and `audit verify` catching a modified byte with its line number.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::process::KillOnDrop;
use crate::harness::{
    self, client, eventually, exec, postgres_dir, query_value, run_pgvigil, scrape,
};

/// The `kind: "data"` lines of an audit file, parsed.
fn data_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "data")
        .collect()
}

fn ids(lines: &[serde_json::Value]) -> Vec<i64> {
    lines
        .iter()
        .map(|v| {
            v["details"]["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("no details.id in {v}"))
        })
        .collect()
}

fn daemon_config(dir: &std::path::Path, dsn: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("pgvigil.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[postgres]\ndsn = \"{dsn}\"\n\
         [audit]\nstdout = false\nfile = \"{audit}\"\ntable = \"audit.logged_actions\"\n{extra}\n\
         [storage]\nurl = \"file://{repo}\"\n[backup]\nschedule = \"off\"\n[drill]\nschedule = \"off\"\n\
         [pitr]\nheartbeat_interval = \"0s\"\ncheck_interval = \"1h\"\n",
        audit = dir.join("audit.jsonl").display(),
        repo = dir.join("repo").display(),
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(&path).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// `pgvigil run` as a child process (as the postgres OS user when root), output discarded,
/// killed on drop.
fn spawn_daemon(config: &std::path::Path) -> KillOnDrop {
    KillOnDrop::spawn(
        harness::pgvigil_command(&["run", "-c", &config.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// Inserts one row of `public.items` per id, each in its own transaction.
async fn insert_items(db: &tokio_postgres::Client, ids: std::ops::RangeInclusive<i32>, note: &str) {
    for n in ids {
        exec(
            db,
            &format!("INSERT INTO public.items VALUES ({n}, '{note}')"),
        )
        .await;
    }
}

async fn wait_for_rows(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(30), || async {
        let lines = data_lines(path);
        if lines.len() >= n {
            Ok(lines)
        } else {
            Err(format!(
                "{} of {n} data lines in {}",
                lines.len(),
                path.display()
            ))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_forwarded_once_across_out_of_order_commits_and_a_kill() {
    let pg = harness::cluster().await;
    let dir = postgres_dir();
    let config = daemon_config(dir.path(), &pg.dsn("postgres"), "");
    let audit_file = dir.path().join("audit.jsonl");
    let cfg = config.display().to_string();
    let db = client(&pg, "postgres").await;
    exec(
        &db,
        "CREATE TABLE public.items (n int PRIMARY KEY, note text)",
    )
    .await;
    let (ok, out, _) = run_pgvigil(&["check-config", "-c", &cfg]);
    assert!(
        !ok && out.lines().any(|l| l.starts_with("FAIL")
            && l.contains("audit table")
            && l.contains("audit install")),
        "before the install, check-config fails on the audit table: {out}"
    );
    let (ok, out, err) = run_pgvigil(&["audit", "install", "-c", &cfg, "--table", "public.items"]);
    assert!(ok, "audit install: {out} {err}");
    let (_, out, err) = run_pgvigil(&["check-config", "-c", &cfg]);
    for name in ["audit file", "audit table"] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(name)),
            "check-config has no ok line for {name}: {out} {err}"
        );
    }

    let mut daemon = spawn_daemon(&config);
    tailer_polling(&db).await;

    // A transaction takes the lowest id and stays open while 200 later rows commit.
    let early = client(&pg, "postgres").await;
    exec(
        &early,
        "BEGIN; INSERT INTO public.items VALUES (0, 'early')",
    )
    .await;
    insert_items(&db, 1..=200, "later").await;
    let low: i64 = query_value(&db, "SELECT min(id) FROM audit.logged_actions").await;
    let high: i64 = query_value(&db, "SELECT max(id) FROM audit.logged_actions").await;
    assert_eq!(
        high - low,
        199,
        "200 committed rows, the open one's id is below them"
    );
    // The open transaction's row is invisible, so nothing past its id may be forwarded yet.
    // A negative can only be shown by waiting: longer than the 1 s fallback poll (and
    // every commit above also sent a notification).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        data_lines(&audit_file).len(),
        0,
        "rows forwarded past an open transaction"
    );
    let cursor: Option<i64> = db
        .query_opt(
            "SELECT last_id FROM audit.pgvigil_cursor WHERE consumer = 'pgvigil'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|r| r.get(0));
    assert!(
        cursor.is_none_or(|c| c < low),
        "cursor {cursor:?} passed the open row's id"
    );
    exec(&early, "COMMIT").await;

    let lines = wait_for_rows(&audit_file, 201).await;
    let got = ids(&lines);
    assert_eq!(got.len(), 201, "exactly 201 rows: {got:?}");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in id order, each once: {got:?}"
    );
    assert_eq!(got[0], low - 1, "the out-of-order row is there");
    assert_eq!(lines[0]["details"]["row"]["note"], "early");
    assert_eq!(lines[0]["event"], "data.insert");
    assert_eq!(lines[0]["target"]["table"], "items");

    // Mid-stream: 50 more rows, kill -9 as soon as some of them are forwarded.
    insert_items(&db, 201..=250, "before kill").await;
    wait_for_rows(&audit_file, 202).await;
    daemon.kill9();
    // A kill between writing a batch and committing the cursor leaves the cursor behind
    // the file: force that case, whatever the moment of the kill was.
    exec(
        &db,
        "UPDATE audit.pgvigil_cursor SET last_id = last_id - 5 WHERE consumer = 'pgvigil'",
    )
    .await;
    insert_items(&db, 251..=300, "while down").await;
    let mut daemon = spawn_daemon(&config);
    // A CLI command appends to the same file while the daemon writes to it (no backup
    // exists, so `verify` fails and says so in an ops line).
    let (ok, _, err) = run_pgvigil(&["verify", "-c", &cfg]);
    assert!(!ok, "verify without backups fails: {err}");
    let lines = wait_for_rows(&audit_file, 301).await;
    // Nothing more arrives (a duplicate would be appended after the 301st).
    let cursor_done = cursor_caught_up(&db).await;
    let lines_after = data_lines(&audit_file);
    daemon.kill9();
    assert_eq!(lines_after.len(), lines.len());
    let got = ids(&lines_after);
    let unique: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(got.len(), 301, "301 lines");
    assert_eq!(unique.len(), 301, "no duplicates");
    assert_eq!(*got.last().unwrap_or(&0), cursor_done);
    let notes: BTreeSet<i64> = lines_after
        .iter()
        .filter_map(|v| v["details"]["row"]["n"].as_i64())
        .collect();
    assert_eq!(
        notes,
        (0..=300).collect::<BTreeSet<i64>>(),
        "every row n = 0..=300"
    );

    let text = std::fs::read_to_string(&audit_file).unwrap_or_default();
    let cli_line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["actor"]["process"] == "pgvigil verify");
    let cli_line = cli_line.unwrap_or_else(|| panic!("no ops line of `pgvigil verify`"));
    assert_eq!(cli_line["kind"], "ops");
    // The repository has no backup yet: a state (WARN), said with when the first one comes.
    assert_eq!(cli_line["event"], "pitr.check.no_backup");
    assert_eq!(cli_line["outcome"], "success");
    assert!(
        cli_line["details"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no backup yet")),
        "{cli_line}"
    );

    // The file's chain survived the kill, both restarts and the CLI's append.
    let (ok, out, err) = run_pgvigil(&["audit", "verify", &audit_file.display().to_string()]);
    assert!(ok, "audit verify: {out} {err}");
    assert!(out.starts_with("ok:"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_columns_never_leave_the_database_and_metrics_follow() {
    let pg = harness::cluster().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let audit_file = dir.path().join("audit.jsonl");
    let db = client(&pg, "postgres").await;
    exec(
        &db,
        "CREATE TABLE public.users (id int PRIMARY KEY, name text, password text, api_key text)",
    )
    .await;
    let settings = harness::settings(
        &pg.dsn("postgres"),
        &format!(
            "[audit]\nstdout = false\nfile = \"{}\"\ntable = \"audit.logged_actions\"\n\
             redact_columns = [\"password\", \"api_key\"]\n\
             [storage]\nurl = \"file://{}\"\n[backup]\nschedule = \"off\"\n[drill]\nschedule = \"off\"\n\
             [pitr]\nheartbeat_interval = \"0s\"\ncheck_interval = \"1h\"\n",
            audit_file.display(),
            dir.path().join("repo").display()
        ),
    );
    let opts = pgvigil::pg::ConnectOptions::from_settings(&settings.postgres);
    // Twice: the install is idempotent.
    for _ in 0..2 {
        pgvigil::audit::schema::install(&opts, &["public.users".to_string()])
            .await
            .unwrap_or_else(|e| panic!("install: {e}"));
    }
    let running = harness::daemon(settings).await;

    exec(
        &db,
        "BEGIN;
         SELECT set_config('request.jwt.claims', '{\"role\":\"web_user\",\"sub\":\"alice\"}', true);
         INSERT INTO public.users VALUES (1, 'alice', 'hunter2-SECRET', 'key-SECRET-1');
         COMMIT;
         UPDATE public.users SET password = 'correct-horse-SECRET', name = 'Alice' WHERE id = 1;
         DELETE FROM public.users WHERE id = 1;
         TRUNCATE public.users;",
    )
    .await;
    let lines = wait_for_rows(&audit_file, 4).await;
    let text = std::fs::read_to_string(&audit_file).unwrap_or_default();
    assert!(!text.contains("SECRET"), "a redacted value leaked:\n{text}");
    let events: Vec<&str> = lines.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(
        events,
        ["data.insert", "data.update", "data.delete", "data.truncate"]
    );
    let insert = &lines[0];
    assert_eq!(insert["details"]["row"]["password"], "[redacted]");
    assert_eq!(insert["details"]["row"]["api_key"], "[redacted]");
    assert_eq!(insert["details"]["row"]["name"], "alice");
    assert_eq!(insert["actor"]["claims"]["sub"], "alice");
    assert_eq!(insert["actor"]["session_user"], "postgres");
    assert_eq!(insert["outcome"], "success");
    let update = &lines[1];
    assert_eq!(update["details"]["changed"]["password"], "[redacted]");
    assert_eq!(update["details"]["changed"]["name"], "Alice");
    assert!(update["details"]["changed"].get("id").is_none());
    assert_eq!(lines[3]["details"]["statement_only"], true);
    let ts = insert["ts"].as_str().unwrap_or("");
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
        "ts {ts:?} is RFC 3339 UTC with ms"
    );

    let max: i64 = query_value(&db, "SELECT max(id) FROM audit.logged_actions").await;
    let s = eventually(Duration::from_secs(10), || async {
        let s = scrape(&running).await;
        match s.metric("pgvigil_audit_cursor_id").get()? as i64 {
            c if c == max => Ok(s),
            c => Err(format!("cursor {c}, max id {max}")),
        }
    })
    .await;
    assert_eq!(
        s.metric("pgvigil_audit_events_total")
            .label("kind", "data")
            .get(),
        Ok(4.0)
    );
    // config.loaded went through the same log: one ops line at least.
    assert!(s
        .metric("pgvigil_audit_events_total")
        .label("kind", "ops")
        .get()
        .is_ok_and(|v| v >= 1.0));
    let lag = s.metric("pgvigil_audit_forward_lag_seconds").get();
    assert!(
        lag.as_ref().is_ok_and(|l| (0.0..30.0).contains(l)),
        "{lag:?}"
    );
    assert!(text.contains("\"event\":\"config.loaded\""), "{text}");
    running.shutdown(Duration::from_secs(10)).await;
    let (ok, out, err) = run_pgvigil(&["audit", "verify", &audit_file.display().to_string()]);
    assert!(ok, "{out} {err}");

    // The down script removes the triggers and the schema; the table keeps working.
    exec(&db, pgvigil::audit::schema::REMOVE_SQL).await;
    exec(&db, pgvigil::audit::schema::REMOVE_SQL).await;
    let left: i64 = query_value(
        &db,
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'audit') \
              + (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgvigil_audit%')",
    )
    .await;
    assert_eq!(left, 0);
    exec(&db, "INSERT INTO public.users VALUES (2, 'bob', 'x', 'y')").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_the_line_of_a_modified_byte() {
    use pgvigil::events::{Events, Op};
    let dir = postgres_dir();
    let path = dir.path().join("audit.jsonl");
    let tracker = tokio_util::task::TaskTracker::new();
    let token = tokio_util::sync::CancellationToken::new();
    let log = pgvigil::audit::AuditLog::open(
        &pgvigil::audit::SinkConfig {
            stdout: false,
            file: Some(path.clone()),
        },
        None,
        &tracker,
        token.clone(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let events = Events::new(log, "test");
    for i in 0..100 {
        events.emit(
            Op::success("backup.completed", "backup completed")
                .target(serde_json::json!({"backup": format!("b{i:03}")})),
        );
    }
    events.close().await;
    token.cancel();
    tracker.close();
    tracker.wait().await;
    pgvigil::pg::binaries::chown_to_server_user(&path).unwrap_or_else(|e| panic!("{e}"));
    let file = path.display().to_string();

    let (ok, out, err) = run_pgvigil(&["audit", "verify", &file]);
    assert!(ok, "an untouched file passes: {out} {err}");
    assert!(out.contains("100 lines"), "{out}");

    // Change one byte of line 50 (b049 -> b949).
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let changed = text.replacen("\"b049\"", "\"b949\"", 1);
    assert_ne!(changed, text);
    std::fs::write(&path, changed).unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = run_pgvigil(&["audit", "verify", &file]);
    assert!(!ok, "a modified file fails: {out}");
    assert!(err.contains(&format!("{file}:50:")), "names line 50: {err}");
    assert!(err.contains("hash mismatch"), "{err}");
}

/// The newest transaction of the cluster, still open, holding a drawn id: no snapshot lists
/// it as running (it is above every snapshot's xmax), and its row must still not be skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_newest_transaction_is_waited_for() {
    let pg = harness::cluster().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let audit_file = dir.path().join("audit.jsonl");
    let db = client(&pg, "postgres").await;
    exec(&db, "CREATE TABLE public.t (n int PRIMARY KEY)").await;
    let settings = tailing_settings(&pg, &audit_file, dir.path());
    let opts = pgvigil::pg::ConnectOptions::from_settings(&settings.postgres);
    pgvigil::audit::schema::install(&opts, &["public.t".to_string()])
        .await
        .unwrap_or_else(|e| panic!("install: {e}"));
    let running = harness::daemon(settings).await;
    exec(&db, "INSERT INTO public.t VALUES (1)").await;
    wait_for_rows(&audit_file, 1).await;

    let open = client(&pg, "postgres").await;
    exec(&open, "BEGIN; INSERT INTO public.t VALUES (2)").await;
    let open_id: i64 = query_value(&open, "SELECT max(id) FROM audit.logged_actions").await;
    // Longer than two fallback polls: the tailer sees the drawn id and must wait.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let cursor: i64 = query_value(
        &db,
        "SELECT last_id FROM audit.pgvigil_cursor WHERE consumer = 'pgvigil'",
    )
    .await;
    assert!(
        cursor < open_id,
        "cursor {cursor} passed the open row {open_id}"
    );
    let s = scrape(&running).await;
    let lag = s.metric("pgvigil_audit_forward_lag_seconds").get();
    assert!(
        lag.as_ref().is_ok_and(|l| *l >= 1.0),
        "the wait shows as lag: {lag:?}"
    );
    exec(&open, "COMMIT").await;
    let lines = wait_for_rows(&audit_file, 2).await;
    assert_eq!(ids(&lines), [open_id - 1, open_id]);
    running.shutdown(Duration::from_secs(10)).await;
}

/// A token that fails verification at the API proxy is an `auth.denied` ops event next to
/// its access line, and neither carries the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_token_is_an_auth_denied_event() {
    let fake = crate::harness::postgrest::FakePostgrest::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = dir.path().join("jwt");
    std::fs::write(&secret, "reallyreallyreallyreallyreallysafe\n")
        .unwrap_or_else(|e| panic!("{e}"));
    harness::make_private(&secret);
    let audit_file = dir.path().join("audit.jsonl");
    let running = harness::daemon(harness::settings(
        "postgresql://postgres@127.0.0.1:1/postgres",
        &format!(
            "[api_proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\njwt_secret_file = \"{}\"\n\
             [audit]\nstdout = false\nfile = \"{}\"\n",
            fake.api,
            secret.display(),
            audit_file.display()
        ),
    ))
    .await;
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"role": "admin", "sub": "mallory"}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-not-the-secret-xx"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let proxy = running.proxy_addr.unwrap_or_else(|| panic!("no proxy"));
    let resp = harness::http_client()
        .get(format!("http://{proxy}/articles"))
        .header("authorization", format!("Bearer {forged}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = resp.bytes().await;
    let denied = eventually(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&audit_file).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "auth.denied")
            .ok_or_else(|| format!("no auth.denied line yet:\n{text}"))
    })
    .await;
    assert_eq!(denied["kind"], "ops");
    assert_eq!(denied["outcome"], "failure");
    assert_eq!(denied["target"]["route"], "/articles");
    assert_eq!(denied["details"]["role"], "invalid_token");
    assert_eq!(denied["details"]["token_verified"], false);
    let text = std::fs::read_to_string(&audit_file).unwrap_or_default();
    assert!(
        !text.contains(&forged),
        "the token leaked into the audit file"
    );
    assert!(text.contains("\"event\":\"api.request\""), "{text}");
    running.shutdown(Duration::from_secs(10)).await;
}

/// With the same config on a standby, nothing is forwarded until it is promoted; then its
/// rows are, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_forwards_nothing_until_promoted() {
    let primary = harness::cluster().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let audit_file = dir.path().join("audit.jsonl");
    let db = client(&primary, "postgres").await;
    exec(&db, "CREATE TABLE public.t (n int PRIMARY KEY)").await;
    let toml = |dsn: &str| {
        harness::settings(
            dsn,
            &format!(
                "[audit]\nstdout = false\nfile = \"{}\"\ntable = \"audit.logged_actions\"\n\
                 [storage]\nurl = \"file://{}\"\n[backup]\nschedule = \"off\"\n[drill]\nschedule = \"off\"\n\
                 [pitr]\nheartbeat_interval = \"0s\"\ncheck_interval = \"1h\"\n",
                audit_file.display(),
                dir.path().join("repo").display()
            ),
        )
    };
    let opts = pgvigil::pg::ConnectOptions::from_settings(&toml(&primary.dsn("postgres")).postgres);
    pgvigil::audit::schema::install(&opts, &["public.t".to_string()])
        .await
        .unwrap_or_else(|e| panic!("install: {e}"));
    let replica = primary.replica().await.unwrap_or_else(|e| panic!("{e}"));
    let running = harness::daemon(toml(&replica.dsn("postgres"))).await;
    exec(&db, "INSERT INTO public.t SELECT generate_series(1, 3)").await;
    let rdb = client(&replica, "postgres").await;
    eventually(Duration::from_secs(30), || async {
        let n: i64 = query_value(&rdb, "SELECT count(*) FROM audit.logged_actions").await;
        if n == 3 {
            Ok(())
        } else {
            Err(format!("{n} audit rows replicated"))
        }
    })
    .await;
    // A negative needs a wait: the rows are on the standby, and nothing may be forwarded.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(data_lines(&audit_file).len(), 0, "a standby forwarded rows");
    exec(&rdb, "SELECT pg_promote()").await;
    let lines = wait_for_rows(&audit_file, 3).await;
    assert_eq!(ids(&lines).len(), 3);
    running.shutdown(Duration::from_secs(10)).await;
}

/// Settings of an in-process daemon that tails the audit table into `audit_file`, with a
/// repository in `dir` and no scheduled jobs.
fn tailing_settings(
    pg: &pgvigil::pg::TempCluster,
    audit_file: &std::path::Path,
    dir: &std::path::Path,
) -> pgvigil::config::Settings {
    harness::settings(
        &pg.dsn("postgres"),
        &format!(
            "[audit]\nstdout = false\nfile = \"{}\"\ntable = \"audit.logged_actions\"\n\
             [storage]\nurl = \"file://{}\"\n[backup]\nschedule = \"off\"\n[drill]\nschedule = \"off\"\n\
             [pitr]\nheartbeat_interval = \"0s\"\ncheck_interval = \"1h\"\n",
            audit_file.display(),
            dir.join("repo").display()
        ),
    )
}

/// Sets up `public.items` with the audit trigger (through `pgvigil audit install`), and
/// returns the config path and the audit file of a daemon in `dir` (`extra` appended to
/// its config, e.g. another `[audit] file`).
async fn audited_items(
    pg: &pgvigil::pg::TempCluster,
    dir: &std::path::Path,
    db: &tokio_postgres::Client,
) -> std::path::PathBuf {
    let config = daemon_config(dir, &pg.dsn("postgres"), "");
    exec(
        db,
        "CREATE TABLE public.items (n int PRIMARY KEY, note text)",
    )
    .await;
    let cfg = config.display().to_string();
    let (ok, out, err) = run_pgvigil(&["audit", "install", "-c", &cfg, "--table", "public.items"]);
    assert!(ok, "audit install: {out} {err}");
    config
}

/// Waits until the daemon's tailer is running: its session has polled the sequence.
async fn tailer_polling(db: &tokio_postgres::Client) {
    eventually(Duration::from_secs(30), || async {
        let n: i64 = query_value(
            db,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgvigil' \
             AND query LIKE '%pg_sequence_last_value%'",
        )
        .await;
        if n > 0 {
            Ok(())
        } else {
            Err("the audit tailer has not polled yet".to_string())
        }
    })
    .await;
}

/// Waits (at most 10 s) until the tailer's cursor is at the newest audit row; returns it.
async fn cursor_caught_up(db: &tokio_postgres::Client) -> i64 {
    eventually(Duration::from_secs(10), || async {
        let c: i64 = query_value(
            db,
            "SELECT last_id FROM audit.pgvigil_cursor WHERE consumer = 'pgvigil'",
        )
        .await;
        let max: i64 = query_value(db, "SELECT max(id) FROM audit.logged_actions").await;
        if c == max {
            Ok(c)
        } else {
            Err(format!("cursor {c} < max id {max}"))
        }
    })
    .await
}

/// The `n` of every data line, in file order.
fn row_numbers(path: &std::path::Path) -> Vec<i64> {
    data_lines(path)
        .iter()
        .filter_map(|v| v["details"]["row"]["n"].as_i64())
        .collect()
}

/// PostgreSQL stopped and started while rows are being forwarded (fault matrix: PostgreSQL
/// restarted during audit forwarding): the tailer reconnects, and every row, before and
/// after the restart, is in the file once and in order; the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_forwarded_once_across_a_postgres_restart() {
    let mut pg = harness::cluster().await;
    let dir = postgres_dir();
    let db = client(&pg, "postgres").await;
    let config = audited_items(&pg, dir.path(), &db).await;
    let audit_file = dir.path().join("audit.jsonl");
    let _daemon = spawn_daemon(&config);
    tailer_polling(&db).await;
    insert_items(&db, 1..=100, "before").await;
    // Stop while the daemon is still forwarding them.
    wait_for_rows(&audit_file, 1).await;
    drop(db);
    pg.stop().await;
    if let Err(e) = pg.start_server().await {
        panic!("restarting PostgreSQL: {e}");
    }
    let db = client(&pg, "postgres").await;
    insert_items(&db, 101..=200, "after").await;
    wait_for_rows(&audit_file, 200).await;
    // Nothing more arrives: the cursor is at the newest row, and no line repeats.
    cursor_caught_up(&db).await;
    assert_eq!(row_numbers(&audit_file), (1..=200).collect::<Vec<i64>>());
    let (ok, out, err) = run_pgvigil(&["audit", "verify", &audit_file.display().to_string()]);
    assert!(ok, "audit verify: {out} {err}");
}

/// The audit file on a tmpfs that fills up (item 9, disk full: the audit file): `/readyz`
/// says so, naming the file and the free space; nothing half-written stays in the file
/// and the cursor does not pass what was written; once there is space (the tmpfs grown in
/// place) every row arrives once, in order, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_file_holds_rows_back_says_why_and_loses_nothing() {
    let pg = harness::cluster().await;
    let dir = postgres_dir();
    let db = client(&pg, "postgres").await;
    audited_items(&pg, dir.path(), &db).await;
    let disk = crate::harness::tmpfs::Tmpfs::mount(&dir.path().join("small"), "64k");
    let audit_file = disk.path().join("audit.jsonl");
    let running = harness::daemon(tailing_settings(&pg, &audit_file, dir.path())).await;
    tailer_polling(&db).await;
    // Rows of 1 KiB: 64 KiB holds a few dozen lines.
    for n in 1..=200 {
        exec(
            &db,
            &format!("INSERT INTO public.items VALUES ({n}, repeat('x', 1000))"),
        )
        .await;
    }
    let url = format!("http://{}/readyz", running.addr);
    let said = eventually(Duration::from_secs(30), || async {
        let body = harness::get_text(&url).await?;
        if body.contains("is full") {
            Ok(body)
        } else {
            Err(format!("/readyz: {body}"))
        }
    })
    .await;
    assert!(
        said.contains(&audit_file.display().to_string()) && said.contains("free"),
        "{said}"
    );
    let written = row_numbers(&audit_file);
    assert!(written.len() < 200, "{} rows fit in 64 KiB?", written.len());
    assert_eq!(written, (1..=written.len() as i64).collect::<Vec<i64>>());
    // The file ends with a complete line: nothing half-written.
    let text = std::fs::read_to_string(&audit_file).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'));
    let cursor: i64 = query_value(
        &db,
        "SELECT coalesce(max(last_id), 0) FROM audit.pgvigil_cursor WHERE consumer = 'pgvigil'",
    )
    .await;
    let min_id: i64 = query_value(&db, "SELECT min(id) FROM audit.logged_actions").await;
    assert!(
        cursor < min_id + written.len() as i64,
        "the cursor {cursor} passed what was written ({} rows from id {min_id})",
        written.len()
    );

    disk.resize("4m");
    eventually(Duration::from_secs(30), || async {
        let rows = row_numbers(&audit_file);
        if rows.len() >= 200 {
            Ok(())
        } else {
            Err(format!("{} of 200 rows", rows.len()))
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
    assert_eq!(row_numbers(&audit_file), (1..=200).collect::<Vec<i64>>());
    let (ok, out, err) = run_pgvigil(&["audit", "verify", &audit_file.display().to_string()]);
    assert!(ok, "audit verify: {out} {err}");
}
