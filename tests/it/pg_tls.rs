//! TLS from pgvigil to PostgreSQL and PgBouncer, against real servers with `ssl=on` and
//! certificates made per run: libpq's `sslmode` meanings, errors that name their cause,
//! client certificates with `cert` authentication, `check-config`'s report, and backup,
//! restore, a drill and the daemon against a server that refuses plaintext.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use pgvigil::config::Settings;
use pgvigil::pg::{ConnectOptions, TempCluster, TempClusterOptions, TempPgbouncer};

use crate::harness::backup::{switch_and_archive, write_config};
use crate::harness::tls::{other_ca, CertFiles, TestPki};
use crate::harness::{self, eventually, exec, query_value, run_pgvigil};

/// A PostgreSQL that accepts TLS only (`hostnossl … reject`), with `cert` authentication
/// for the role `certuser`, its CA and a client certificate for `certuser`.
struct TlsServer {
    pki: TestPki,
    cluster: TempCluster,
    client_cert: CertFiles,
}

const HBA: &str = "local all all trust\n\
hostssl all certuser 127.0.0.1/32 cert\n\
hostssl replication all 127.0.0.1/32 trust\n\
hostssl all all 127.0.0.1/32 trust\n\
hostnossl all all 0.0.0.0/0 reject\n\
hostnossl replication all 0.0.0.0/0 reject\n";

async fn tls_server(extra: Vec<(String, String)>) -> TlsServer {
    let mut pki = TestPki::new("pg");
    let server = pki.server("pg-server", &[]);
    let client_cert = pki.client("certuser", "certuser");
    let hba = pki.file("pg_hba.conf", HBA);
    let q = |p: &Path| format!("'{}'", p.display());
    let mut settings = vec![
        ("ssl".to_string(), "on".to_string()),
        ("ssl_cert_file".to_string(), q(&server.cert)),
        ("ssl_key_file".to_string(), q(&server.key)),
        ("ssl_ca_file".to_string(), q(&pki.ca_cert)),
        ("hba_file".to_string(), q(&hba)),
    ];
    settings.extend(extra);
    let cluster = TempCluster::start(TempClusterOptions {
        settings,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("starting a TLS PostgreSQL: {e}"));
    let tls = TlsServer {
        pki,
        cluster,
        client_cert,
    };
    exec(
        &tls.local().await,
        "CREATE ROLE certuser LOGIN; GRANT pg_monitor TO certuser",
    )
    .await;
    tls
}

impl TlsServer {
    /// A superuser session over the unix socket (plaintext, `local … trust`).
    async fn local(&self) -> tokio_postgres::Client {
        let (client, conn) = self
            .cluster
            .socket_config("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("socket connection: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// A key=value DSN to the TCP port with `tls` appended.
    fn dsn(&self, user: &str, tls: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres {tls}",
            self.cluster.port()
        )
    }

    fn ca(&self) -> String {
        self.pki.ca_cert.display().to_string()
    }
}

fn settings_for(dsn: &str) -> Settings {
    harness::settings(&dsn.replace('\\', "\\\\").replace('"', "\\\""), "")
}

/// Connects with pgvigil's one connection helper; Ok: (ssl, version) from pg_stat_ssl.
async fn try_connect(dsn: &str) -> Result<(bool, String, pgvigil::pg::Handshake), String> {
    let settings = settings_for(dsn);
    let conn = pgvigil::pg::connect(&ConnectOptions::from_settings(&settings.postgres), None)
        .await
        .map_err(|e| e.to_string())?;
    let row = conn
        .client
        .query_one(
            "SELECT ssl, coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((row.get(0), row.get(1), conn.tls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_verify_as_libpq_does_and_failures_name_their_cause() {
    let s = tls_server(Vec::new()).await;
    let ca = s.ca();
    let (_other_pki, other) = other_ca("elsewhere");
    let other = other.display().to_string();

    // verify-full: encrypted, as the server itself reports, and verified in full.
    let (ssl, version, hs) =
        try_connect(&s.dsn("postgres", &format!("sslmode=verify-full sslrootcert={ca}")))
            .await
            .unwrap_or_else(|e| panic!("verify-full: {e}"));
    assert!(ssl, "pg_stat_ssl says the session is not encrypted");
    assert_eq!(hs.version, Some(version.as_str()), "{hs:?}");
    assert_eq!(hs.verified, pgvigil::pg::Verified::Full(ca.clone()));

    // A CA that did not sign the server's certificate: named in the error.
    let e = try_connect(&s.dsn(
        "postgres",
        &format!("sslmode=verify-full sslrootcert={other}"),
    ))
    .await
    .unwrap_err();
    assert!(e.contains(&format!("not trusted by {other}")), "{e}");

    // A host name the certificate does not carry (the socket still goes to 127.0.0.1).
    let e = try_connect(
        &s.dsn(
            "postgres",
            &format!("hostaddr=127.0.0.1 sslmode=verify-full sslrootcert={ca}"),
        )
        .replace("host=127.0.0.1", "host=db.wrong.example"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("not valid for host \"db.wrong.example\""), "{e}");
    // verify-ca accepts that name: it checks the chain only.
    let (_, _, hs) = try_connect(
        &s.dsn(
            "postgres",
            &format!("hostaddr=127.0.0.1 sslmode=verify-ca sslrootcert={ca}"),
        )
        .replace("host=127.0.0.1", "host=db.wrong.example"),
    )
    .await
    .unwrap_or_else(|e| panic!("verify-ca: {e}"));
    assert_eq!(hs.verified, pgvigil::pg::Verified::Chain(ca.clone()));

    // require encrypts without verifying, unless a root certificate is given: then it
    // verifies the chain (libpq's rule), so the wrong CA fails.
    let (ssl, _, hs) = try_connect(&s.dsn("postgres", "sslmode=require"))
        .await
        .unwrap_or_else(|e| panic!("require: {e}"));
    assert!(ssl);
    assert_eq!(hs.verified, pgvigil::pg::Verified::No);
    let e = try_connect(&s.dsn("postgres", &format!("sslmode=require sslrootcert={other}")))
        .await
        .unwrap_err();
    assert!(e.contains("not trusted by"), "{e}");

    // verify-full without any root certificate is refused before connecting.
    let e = try_connect(&s.dsn("postgres", "sslmode=verify-full"))
        .await
        .unwrap_err();
    assert!(e.contains("needs a root certificate"), "{e}");

    // allow tries plaintext, is rejected by pg_hba, and retries with TLS; disable fails.
    let (ssl, _, _) = try_connect(&s.dsn("postgres", "sslmode=allow"))
        .await
        .unwrap_or_else(|e| panic!("allow: {e}"));
    assert!(ssl, "allow ended up in plaintext on a TLS-only server");
    let e = try_connect(&s.dsn("postgres", "sslmode=disable"))
        .await
        .unwrap_err();
    assert!(e.contains("no encryption"), "{e}");

    // The URI form and the PG* fallbacks give the same.
    let uri = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        s.cluster.port(),
        ca.replace('/', "%2F")
    );
    let (ssl, _, _) = try_connect(&uri)
        .await
        .unwrap_or_else(|e| panic!("uri: {e}"));
    assert!(ssl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_log_in_without_a_password_and_check_config_reports_tls() {
    let s = tls_server(Vec::new()).await;
    let ca = s.ca();
    let cert = s.client_cert.cert.display().to_string();
    let key = s.client_cert.key.display().to_string();
    let dsn = s.dsn(
        "certuser",
        &format!("sslmode=verify-full sslrootcert={ca} sslcert={cert} sslkey={key}"),
    );
    let (ssl, _, _) = try_connect(&dsn)
        .await
        .unwrap_or_else(|e| panic!("client certificate: {e}"));
    assert!(ssl);
    // Without the certificate, pg_hba's `cert` line refuses the role.
    let e = try_connect(&s.dsn("certuser", &format!("sslmode=verify-full sslrootcert={ca}")))
        .await
        .unwrap_err();
    assert!(e.contains("certificate"), "{e}");

    // check-config: the negotiated version and what was verified, per connection.
    let dir = harness::postgres_dir();
    let config = dir.path().join("pgvigil.toml");
    write_config(&config, &dsn, "");
    let (ok, out, err) = run_pgvigil(&["check-config", "-c", &config.display().to_string()]);
    assert!(ok, "{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.contains("postgres.tls"))
        .unwrap_or_else(|| panic!("no postgres.tls line:\n{out}"));
    assert!(
        line.contains("TLSv1.3")
            && line.contains(&format!("verified against {ca}, host name checked")),
        "{line}"
    );
    // sslmode=require: encrypted but not verified, which check-config warns about.
    write_config(&config, &s.dsn("postgres", "sslmode=require"), "");
    let (_, out, _) = run_pgvigil(&["check-config", "-c", &config.display().to_string()]);
    let line = out
        .lines()
        .find(|l| l.contains("postgres.tls"))
        .unwrap_or("");
    assert!(
        line.starts_with("warn") && line.contains("NOT verified"),
        "{out}"
    );

    // A client key others may read is refused, naming the file, as libpq refuses it.
    std::fs::set_permissions(&s.client_cert.key, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    let e = try_connect(&dsn).await.unwrap_err();
    assert!(e.contains(&key) && e.contains("0644"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_server_without_tls_fails_and_prefer_falls_back() {
    let plain = harness::cluster().await;
    let dsn = |tls: &str| {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres {tls}",
            plain.port()
        )
    };
    let e = try_connect(&dsn("sslmode=require")).await.unwrap_err();
    assert!(
        e.contains("the server does not support TLS, and sslmode=require requires it"),
        "{e}"
    );
    let (ssl, _, hs) = try_connect(&dsn(""))
        .await
        .unwrap_or_else(|e| panic!("prefer: {e}"));
    assert!(!ssl);
    assert_eq!(hs.version, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_drill_and_the_daemon_work_against_a_tls_only_server() {
    let owner = harness::postgres_dir();
    let config = owner.path().join("pgvigil.toml");
    let repo = owner.path().join("repo");
    let work = owner.path().join("drill");
    let archive = format!(
        "'{} wal-push -c {} %p'",
        harness::pgvigil_bin().display(),
        config.display()
    );
    let s = tls_server(vec![
        ("archive_mode".into(), "on".into()),
        ("archive_command".into(), archive),
    ])
    .await;
    let dsn = s.dsn(
        "postgres",
        &format!("sslmode=verify-full sslrootcert={}", s.ca()),
    );
    let section = format!(
        "[storage]\nurl = \"file://{}\"\n[pitr]\nheartbeat_interval = \"1s\"\n[drill]\nwork_dir = \"{}\"\n",
        repo.display(),
        work.display()
    );
    write_config(&config, &dsn, &section);
    let db = s.local().await;
    exec(&db, "CREATE TABLE markers (id int)").await;
    exec(&db, "INSERT INTO markers VALUES (1)").await;

    // The daemon: collectors and the heartbeat over TLS.
    let daemon = harness::daemon(harness::settings(&dsn, &section)).await;
    let scrape = eventually(Duration::from_secs(20), || async {
        let s = harness::scrape(&daemon).await;
        match s.metric("pg_up").value() {
            Some(1.0) => Ok(s),
            other => Err(format!("pg_up {other:?}")),
        }
    })
    .await;
    let sessions: i64 = query_value(
        &db,
        "SELECT count(*) FROM pg_stat_activity JOIN pg_stat_ssl USING (pid) \
         WHERE application_name = 'pgvigil' AND ssl",
    )
    .await;
    assert!(
        sessions >= 1,
        "no encrypted pgvigil session in pg_stat_activity"
    );
    assert!(scrape.metric("pg_stat_database_xact_commit").all().len() > 1);

    // pg_basebackup gets the same TLS through PGSSL*: pg_hba rejects every plaintext
    // replication connection, so a backup that succeeds went over TLS.
    let cfg = config.display().to_string();
    let (ok, out, err) = run_pgvigil(&["backup", "-c", &cfg, "--json"]);
    assert!(ok, "backup against a TLS-only server: {err}");
    assert!(out.contains("\"timeline\""), "{out}");
    exec(&db, "INSERT INTO markers VALUES (2)").await;
    switch_and_archive(&db).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    switch_and_archive(&db).await;

    // Restore to the latest point: both rows are there.
    let restored = owner.path().join("restored");
    let (ok, _, err) = run_pgvigil(&[
        "restore",
        "-c",
        &cfg,
        "--to",
        &restored.display().to_string(),
    ]);
    assert!(ok, "restore: {err}");
    let mut rc = TempCluster::adopt(
        &restored,
        TempClusterOptions {
            settings: vec![("archive_mode".into(), "off".into())],
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("starting the restored cluster: {e}"));
    let (rclient, conn) = rc
        .socket_config("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    harness::wait_promoted(&rclient).await;
    let n: i64 = query_value(&rclient, "SELECT count(*) FROM markers").await;
    assert_eq!(n, 2);
    rc.stop().await;

    // A drill of the same backup passes.
    let (ok, out, err) = run_pgvigil(&["drill", "-c", &cfg, "--timeout", "2m", "--json"]);
    let ev: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("drill output {out:?} / {err}: {e}"));
    assert!(ok && ev["success"] == true, "{ev:#}");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_admin_console_over_verified_tls() {
    if !TempPgbouncer::available() {
        panic!("pgbouncer is not installed: run `make deps`");
    }
    let pg = harness::cluster().await;
    let mut pki = TestPki::new("pgbouncer");
    let server = pki.server("pgbouncer", &[]);
    let dbs = [format!(
        "postgres = host=127.0.0.1 port={} dbname=postgres",
        pg.port()
    )];
    let extra = [
        "client_tls_sslmode = require".to_string(),
        format!("client_tls_cert_file = {}", server.cert.display()),
        format!("client_tls_key_file = {}", server.key.display()),
        format!("client_tls_ca_file = {}", pki.ca_cert.display()),
    ];
    let pgb = TempPgbouncer::start_with(&dbs, "transaction", &["postgres"], &extra)
        .await
        .unwrap_or_else(|e| panic!("starting pgbouncer with TLS: {e}"));
    let ca = pki.ca_cert.display().to_string();
    let admin = |tls: &str| {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=pgbouncer {tls}",
            pgb.port()
        )
    };
    let toml = format!(
        "[pgbouncer]\ndsns = [\"{}\"]\n",
        admin(&format!("sslmode=verify-full sslrootcert={ca}"))
    );
    let daemon = harness::daemon(harness::settings(&pg.dsn("postgres"), &toml)).await;
    let s = eventually(Duration::from_secs(20), || async {
        let s = harness::scrape(&daemon).await;
        match s.metric("pgbouncer_up").value() {
            Some(1.0) => Ok(s),
            other => Err(format!("pgbouncer_up {other:?}")),
        }
    })
    .await;
    assert!(!s
        .metric("pgbouncer_pools_client_active_connections")
        .all()
        .is_empty());

    // check-config names the TLS of the admin connection; a plaintext console is refused.
    let dir = harness::postgres_dir();
    let config = dir.path().join("pgvigil.toml");
    write_config(&config, &pg.dsn("postgres"), &toml);
    let (_, out, _) = run_pgvigil(&["check-config", "-c", &config.display().to_string()]);
    let line = out
        .lines()
        .find(|l| l.contains("pgbouncer.tls"))
        .unwrap_or("");
    assert!(
        line.starts_with("ok") && line.contains("host name checked"),
        "{out}"
    );
    let mut plain: tokio_postgres::Config = admin("sslmode=disable")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let refused = pgvigil::pg::connect_admin_console(
        &plain,
        &pgvigil::config::PgTls::disabled(),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        refused.is_err(),
        "a plaintext admin connection was accepted"
    );
}
