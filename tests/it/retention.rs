//! Retention, residency, Object Lock and the off-site copy, against real clusters and a
//! real S3 server (moto_server): buckets outside the EU are refused with nothing written;
//! 40 days later (libfaketime) retention keeps exactly the newest of three backups, which
//! still restores; a locked object is not deleted early and is reported; the off-site
//! copy is verified, incremental and restorable.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pgvigil::backup::retention::{self, Fate, Policy};
use pgvigil::config::{ObjectLockSettings, S3Settings};
use pgvigil::store::s3::S3Store;
use pgvigil::store::{LockMode, Repo};

use crate::harness::backup::{
    archiving_cluster, archiving_cluster_env, start_restored_env, switch_and_archive, wal_segments,
    walk, write_config,
};
use crate::harness::moto::MotoServer;
use crate::harness::process::KillOnDrop;
use crate::harness::{
    self, client, eventually, exec, postgres_dir, query_value, run_pgvigil, run_pgvigil_env,
};

/// Runs pgvigil as the postgres user under libfaketime, `offset` ahead (e.g. "+40d").
fn run_pgvigil_at(offset: &str, args: &[&str]) -> (bool, String, String) {
    harness::run_pgvigil_at(offset, args, &[])
}

fn backup_ids(cfg: &str, env: &[(String, String)]) -> Vec<String> {
    let (ok, out, err) = run_pgvigil_env(&["backups", "-c", cfg, "--json"], env);
    assert!(ok, "{err}");
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    list.iter()
        .filter_map(|b| b["id"].as_str().map(str::to_string))
        .collect()
}

/// Takes a backup; backup ids are UTC seconds, so wait for the next second first.
fn take_backup(cfg: &str, env: &[(String, String)]) -> serde_json::Value {
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, out, err) = run_pgvigil_env(&["backup", "-c", cfg, "--json"], env);
    assert!(ok, "backup failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Restores the latest point of the repository in `cfg` and returns the marker ids.
async fn restored_markers(
    cfg: &str,
    owner: &Path,
    name: &str,
    env: Vec<(String, String)>,
) -> Vec<i32> {
    let dir = owner.join(name);
    let (ok, _, err) = run_pgvigil_env(
        &["restore", "-c", cfg, "--to", &dir.display().to_string()],
        &env,
    );
    assert!(ok, "restore failed: {err}");
    let restored = start_restored_env(&dir, env).await;
    let rc = client(&restored, "postgres").await;
    harness::wait_promoted(&rc).await;
    rc.query("SELECT id FROM markers ORDER BY id", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_days_later_retention_keeps_the_newest_of_three_and_it_restores() {
    let owner = postgres_dir();
    let config = owner.path().join("pgvigil.toml");
    let repo_dir = owner.path().join("repo");
    let offsite_dir = owner.path().join("offsite");
    let storage = format!(
        "[storage]\nurl = \"file://{}\"\n[offsite]\nurl = \"file://{}\"\n",
        repo_dir.display(),
        offsite_dir.display()
    );
    let pg = archiving_cluster(&config).await;
    write_config(&config, &pg.dsn("postgres"), &storage);
    let cfg = config.display().to_string();
    let db = client(&pg, "postgres").await;
    exec(&db, "CREATE TABLE markers (id int primary key)").await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        exec(&db, &format!("INSERT INTO markers VALUES ({i})")).await;
        switch_and_archive(&db).await;
        ids.push(
            take_backup(&cfg, &[])["id"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    exec(&db, "INSERT INTO markers VALUES (4)").await;
    switch_and_archive(&db).await;
    assert_eq!(backup_ids(&cfg, &[]), ids);

    // The off-site copy of the newest backup (file:// to file://: streamed).
    let (ok, out, err) = run_pgvigil(&["offsite", "-c", &cfg, "--json"]);
    assert!(ok, "offsite failed: {err}");
    let copy: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(copy["backup_id"], ids[2].as_str());
    assert_eq!(copy["verified"], true);
    assert_eq!(copy["server_side"], 0);
    assert!(copy["objects_copied"].as_u64().unwrap_or(0) >= 2, "{copy}");

    // Today every backup is inside the window: only WAL from before the first one goes.
    let (ok, out, err) = run_pgvigil(&["retention", "-c", &cfg, "--json"]);
    assert!(ok, "{err}");
    let reports: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(reports.len(), 2, "primary and off-site: {out}");
    assert_eq!(
        reports[0]["kept"].as_array().map(Vec::len),
        Some(3),
        "{out}"
    );
    let reasons: Vec<&str> = reports
        .iter()
        .flat_map(|r| r["objects"].as_array().into_iter().flatten())
        .filter_map(|o| o["reason"].as_str())
        .collect();
    assert!(reasons.iter().all(|r| *r == "expired_wal"), "{out}");
    assert_eq!(backup_ids(&cfg, &[]), ids);

    // 40 days later, a dry run lists what would go and deletes nothing.
    let wal_dir = repo_dir.join("default/wal");
    let segments_before = wal_segments(&wal_dir);
    let (ok, out, err) = run_pgvigil_at("+40d", &["retention", "-c", &cfg, "--dry-run"]);
    assert!(ok, "{err}");
    for id in &ids[..2] {
        assert!(
            out.contains(&format!("would delete default/backups/{id}/backup.json")),
            "{out}"
        );
    }
    assert!(out.contains(&format!("keep    backup {}", ids[2])), "{out}");
    assert_eq!(backup_ids(&cfg, &[]).len(), 3, "a dry run deletes nothing");
    assert_eq!(wal_segments(&wal_dir), segments_before);

    // Then for real: exactly the newest backup stays, in both repositories.
    let (ok, out, err) = run_pgvigil_at("+40d", &["retention", "-c", &cfg, "--json"]);
    assert!(ok, "{err}");
    let reports: Vec<serde_json::Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let kept: Vec<&str> = reports[0]["kept"]
        .as_array()
        .map(|k| k.iter().filter_map(|b| b["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kept, [ids[2].as_str()]);
    assert_eq!(backup_ids(&cfg, &[]), [ids[2].clone()]);
    let oldest_needed = reports[0]["oldest_needed_wal"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let remaining = wal_segments(&wal_dir);
    assert!(!remaining.is_empty());
    assert!(
        remaining.iter().all(|s| s[8..24] >= oldest_needed[8..24]),
        "WAL before {oldest_needed} is gone: {remaining:?}"
    );
    assert!(remaining.len() < segments_before.len());
    for id in &ids[..2] {
        let left: Vec<_> = walk(&repo_dir.join("default/backups").join(id))
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        assert!(left.is_empty(), "backup {id} is gone: {left:?}");
    }
    // The off-site repository only ever had the newest backup: nothing of it goes.
    assert_eq!(reports[1]["deleted_objects"], 0, "{out}");
    assert!(offsite_dir
        .join("default/backups")
        .join(&ids[2])
        .join("backup.json")
        .exists());

    // The kept backup still restores, to the latest archived point.
    drop(db);
    assert_eq!(
        restored_markers(&cfg, owner.path(), "restored", Vec::new()).await,
        [1, 2, 3, 4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_outside_the_eu_are_refused_with_nothing_written() {
    let moto = MotoServer::start().await;
    moto.create_bucket("virginia", "us-east-1").await;
    moto.create_bucket("london", "eu-west-2").await;
    moto.create_bucket("frankfurt", "eu-central-1").await;
    let pg = harness::cluster().await;
    let owner = postgres_dir();
    let env = MotoServer::aws_env();
    for (bucket, region) in [("virginia", "us-east-1"), ("london", "eu-west-2")] {
        let config = owner.path().join(format!("{bucket}.toml"));
        write_config(&config, &pg.dsn("postgres"), &moto.storage_toml(bucket, ""));
        let cfg = config.display().to_string();
        let (ok, _, err) = run_pgvigil_env(&["backup", "-c", &cfg], &env);
        assert!(!ok, "a backup into {bucket} ({region}) must be refused");
        assert!(
            err.contains(&format!("bucket {bucket} is in {region}"))
                && err.contains("outside residency \"eu\""),
            "{err}"
        );
        assert!(
            moto.keys(bucket).await.is_empty(),
            "nothing written to {bucket}"
        );
        let (ok, out, _) = run_pgvigil_env(&["check-config", "-c", &cfg], &env);
        assert!(!ok);
        assert!(
            out.lines()
                .any(|l| l.starts_with("FAIL") && l.contains("residency") && l.contains(region)),
            "{out}"
        );
    }
    // An EU bucket that replicates to a bucket outside the EU is refused too.
    moto.create_bucket("replicated", "eu-central-1").await;
    let eu = moto.client_in("eu-central-1");
    for b in ["replicated", "virginia"] {
        moto.client_in(if b == "virginia" {
            "us-east-1"
        } else {
            "eu-central-1"
        })
        .put_bucket_versioning()
        .bucket(b)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    }
    let rule = aws_sdk_s3::types::ReplicationRule::builder()
        .id("all")
        .status(aws_sdk_s3::types::ReplicationRuleStatus::Enabled)
        .filter(
            aws_sdk_s3::types::ReplicationRuleFilter::builder()
                .prefix("")
                .build(),
        )
        .priority(1)
        .delete_marker_replication(
            aws_sdk_s3::types::DeleteMarkerReplication::builder()
                .status(aws_sdk_s3::types::DeleteMarkerReplicationStatus::Disabled)
                .build(),
        )
        .destination(
            aws_sdk_s3::types::Destination::builder()
                .bucket("arn:aws:s3:::virginia")
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    eu.put_bucket_replication()
        .bucket("replicated")
        .replication_configuration(
            aws_sdk_s3::types::ReplicationConfiguration::builder()
                .role("arn:aws:iam::123456789012:role/replication")
                .rules(rule)
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    let config = owner.path().join("replicated.toml");
    write_config(
        &config,
        &pg.dsn("postgres"),
        &moto.storage_toml("replicated", ""),
    );
    let (ok, _, err) = run_pgvigil_env(&["backup", "-c", &config.display().to_string()], &env);
    assert!(!ok);
    assert!(
        err.contains("bucket replicated replicates to bucket virginia in us-east-1"),
        "{err}"
    );
    assert!(moto.keys("replicated").await.is_empty());

    let config = owner.path().join("frankfurt.toml");
    write_config(
        &config,
        &pg.dsn("postgres"),
        &moto.storage_toml("frankfurt", ""),
    );
    let cfg = config.display().to_string();
    take_backup(&cfg, &env);
    assert!(moto
        .keys("frankfurt")
        .await
        .iter()
        .any(|k| k.ends_with("/backup.json")));
    let (ok, out, err) = run_pgvigil_env(&["check-config", "-c", &cfg], &env);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("bucket frankfurt is in eu-central-1, allowed by residency \"eu\""),
        "{out}"
    );

    // The daemon reports the refusal as a metric (run as a process: it reads AWS
    // credentials from its environment).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().map(|a| a.port()).unwrap_or(0)
    };
    let config = owner.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[postgres]\ndsn = \"{}\"\n{}[backup]\nschedule = \"off\"\n[drill]\nschedule = \"off\"\n[retention]\nschedule = \"off\"\n",
            pg.dsn("postgres"),
            moto.storage_toml("virginia", "")
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut daemon = KillOnDrop::spawn(
        harness::pgvigil_command(&["run", "-c", &config.display().to_string()])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let seen = eventually(Duration::from_secs(30), || async {
        let text = harness::get_text(&url).await?;
        let s = harness::Scrape::parse(&text);
        match s
            .metric("pgvigil_storage_residency_ok")
            .label("store", "primary")
            .value()
        {
            Some(v) => Ok(v),
            None => Err("no residency metric yet".to_string()),
        }
    })
    .await;
    // PostgreSQL is up and scraped, but the bucket is outside the policy: the daemon is not
    // ready, and /readyz says what it waits for (scrapes used to make it ready regardless).
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let (status, body) = eventually(Duration::from_secs(30), || async {
        let r = harness::http_client()
            .get(&readyz)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.text().await.map_err(|e| e.to_string())?;
        if body.contains("scrape") {
            Err(format!("PostgreSQL not scraped yet: {body}"))
        } else {
            Ok((status, body))
        }
    })
    .await;
    let pg_up = harness::Scrape::parse(
        &harness::get_text(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .metric("pg_up")
    .value();
    daemon.kill9();
    assert_eq!(seen, 0.0);
    assert_eq!(pg_up, Some(1.0));
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body, "not ready: waiting for the residency check of the primary repository\n",
        "{body}"
    );
    assert!(moto.keys("virginia").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_keeps_objects_until_their_date_and_retention_reports_them() {
    let moto = MotoServer::start().await;
    // A lock-enabled bucket (versioning comes with it), and one without Object Lock.
    moto.client()
        .create_bucket()
        .bucket("locked")
        .object_lock_enabled_for_bucket(true)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuCentral1)
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    moto.create_bucket("unlocked", "eu-central-1").await;
    let pg = harness::cluster().await;
    let owner = postgres_dir();
    let env = MotoServer::aws_env();

    // Asking for a lock on a bucket that cannot lock is refused before writing.
    let config = owner.path().join("unlocked.toml");
    let lock = "object_lock = \"governance\"\n";
    write_config(
        &config,
        &pg.dsn("postgres"),
        &moto.storage_toml("unlocked", lock),
    );
    let (ok, _, err) = run_pgvigil_env(&["backup", "-c", &config.display().to_string()], &env);
    assert!(!ok && err.contains("has no Object Lock enabled"), "{err}");
    assert!(moto.keys("unlocked").await.is_empty());

    let config = owner.path().join("locked.toml");
    write_config(
        &config,
        &pg.dsn("postgres"),
        &moto.storage_toml("locked", lock),
    );
    let cfg = config.display().to_string();
    let first = take_backup(&cfg, &env);
    let second = take_backup(&cfg, &env);
    let first_id = first["id"].as_str().unwrap_or("").to_string();

    // Every backup object carries the lock: window 35d + one backup interval (daily) +
    // a day of margin = 37 days.
    let head = moto
        .client()
        .head_object()
        .bucket("locked")
        .key(format!(
            "pgvigil/default/backups/{first_id}/{}",
            first["objects"][0]["name"].as_str().unwrap_or("?")
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    assert_eq!(
        head.object_lock_mode(),
        Some(&aws_sdk_s3::types::ObjectLockMode::Governance)
    );
    let until = head
        .object_lock_retain_until_date()
        .map(|d| d.secs())
        .unwrap_or(0);
    let expected = chrono::Utc::now().timestamp() + 37 * 86_400;
    assert!(
        (until - expected).abs() < 3600,
        "retain until {until}, expected about {expected}"
    );
    // `pgvigil status` reads where the bucket is and when the oldest backup's lock ends.
    let (_, out, err) = run_pgvigil_env(&["status", "-c", &cfg, "--json"], &env);
    let status: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    let store = &status["custody"]["stores"][0];
    assert_eq!(store["object_lock"], "governance", "{store}");
    assert_eq!(store["residency"]["ok"], true, "{store}");
    assert_eq!(store["residency"]["region"], "eu-central-1", "{store}");
    let oldest = store["oldest_lock_until"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0);
    assert!(
        (oldest - until).abs() < 60,
        "oldest lock until {oldest}, the first backup's objects until {until}: {store}"
    );
    // Lease and job state are never locked: they are rewritten (a released lease stays,
    // marked released, so its generation keeps growing).
    let leases: Vec<String> = moto
        .keys("locked")
        .await
        .into_iter()
        .filter(|k| k.contains("/state/locks/"))
        .collect();
    assert!(!leases.is_empty(), "the backup ran under a lease");
    for key in &leases {
        let head = moto
            .client()
            .head_object()
            .bucket("locked")
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        assert_eq!(head.object_lock_mode(), None, "{key} is locked");
    }

    // Retention as of 40 days from now wants the first backup gone, but S3 still holds
    // the lock (its clock is today's): reported as locked, nothing lost, no failure.
    let settings = S3Settings {
        object_lock: Some(ObjectLockSettings {
            mode: LockMode::Governance,
            retain_for: Duration::from_secs(37 * 86_400),
        }),
        ..moto.settings()
    };
    let store = S3Store::connect_with(
        "locked",
        "pgvigil",
        &settings,
        Some(MotoServer::credentials()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let repo = Repo {
        store: Arc::new(store),
        cluster: "default".into(),
    };
    let policy = Policy {
        recovery_window: Duration::from_secs(35 * 86_400),
        min_backups: 1,
    };
    let later = chrono::Utc::now() + chrono::Duration::days(40);
    let report = retention::run(&repo, policy, later, false, &|_| {}, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("retention must not fail on locked objects: {e}"));
    assert_eq!(report.deleted_objects, 0);
    assert!(report.locked_objects >= 1, "{report:?}");
    let marker = format!("default/backups/{first_id}/backup.json");
    assert!(report
        .objects
        .iter()
        .any(|o| o.object.key == marker && matches!(o.fate, Fate::Locked { .. })));
    // The kept (second) backup would outlive its lock: retention renewed it to 37 days
    // after its "now".
    assert!(report.renewed_locks >= 1, "{report:?}");
    let second_id = second["id"].as_str().unwrap_or("").to_string();
    let renewed = moto
        .client()
        .head_object()
        .bucket("locked")
        .key(format!(
            "pgvigil/default/backups/{second_id}/{}",
            second["objects"][0]["name"].as_str().unwrap_or("?")
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)))
        .object_lock_retain_until_date()
        .map(|d| d.secs())
        .unwrap_or(0);
    let expected = later.timestamp() + 37 * 86_400;
    assert!(
        (renewed - expected).abs() < 3600,
        "renewed until {renewed}, expected about {expected}"
    );
    assert_eq!(
        backup_ids(&cfg, &env),
        [first_id, second_id],
        "both backups are still valid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsite_copy_between_buckets_is_server_side_verified_incremental_and_restorable() {
    let moto = MotoServer::start().await;
    moto.create_bucket("primary", "eu-central-1").await;
    moto.create_bucket("copies", "eu-west-1").await;
    moto.create_bucket("abroad", "us-east-1").await;
    let owner = postgres_dir();
    let env = MotoServer::aws_env();
    let config = owner.path().join("pgvigil.toml");
    let pg = archiving_cluster_env(&config, env.clone()).await;
    let offsite = |bucket: &str| {
        format!(
            "{}[offsite]\nurl = \"s3://{bucket}/offsite\"\n",
            moto.storage_toml("primary", "")
        )
    };
    write_config(&config, &pg.dsn("postgres"), &offsite("copies"));
    let cfg = config.display().to_string();
    let db = client(&pg, "postgres").await;
    exec(&db, "CREATE TABLE markers (id int primary key)").await;
    exec(&db, "INSERT INTO markers VALUES (1)").await;
    switch_and_archive(&db).await;
    let backup = take_backup(&cfg, &env);
    exec(&db, "INSERT INTO markers VALUES (2)").await;
    switch_and_archive(&db).await;

    let (ok, out, err) = run_pgvigil_env(&["offsite", "-c", &cfg, "--json"], &env);
    assert!(ok, "offsite failed: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(r["backup_id"], backup["id"]);
    assert_eq!(r["verified"], true);
    let copied = r["objects_copied"].as_u64().unwrap_or(0);
    assert!(copied >= 3, "the backup and its WAL: {r}");
    assert_eq!(
        r["server_side"].as_u64(),
        Some(copied),
        "same service: CopyObject"
    );
    let keys = moto.keys("copies").await;
    assert!(keys.iter().any(|k| k.ends_with("/backup.json")), "{keys:?}");

    // A second run copies only what is new.
    exec(&db, "INSERT INTO markers VALUES (3)").await;
    switch_and_archive(&db).await;
    let (ok, out, err) = run_pgvigil_env(&["offsite", "-c", &cfg, "--json"], &env);
    assert!(ok, "{err}");
    let r2: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert!(
        r2["objects_present"].as_u64().unwrap_or(0) >= copied,
        "{r2}"
    );
    assert!(r2["objects_copied"].as_u64().unwrap_or(99) < copied, "{r2}");

    // The copy restores on its own: a config whose repository is the off-site bucket.
    let restore_cfg = owner.path().join("from-offsite.toml");
    let offsite_storage = moto.storage_toml_at("s3://copies/offsite", "");
    write_config(&restore_cfg, &pg.dsn("postgres"), &offsite_storage);
    let last: i32 = query_value(&db, "SELECT max(id) FROM markers").await;
    assert_eq!(last, 3);
    drop(db);
    let markers = restored_markers(
        &restore_cfg.display().to_string(),
        owner.path(),
        "restored",
        env.clone(),
    )
    .await;
    assert_eq!(markers, [1, 2, 3]);

    // An off-site bucket outside the EU is refused, with nothing written to it.
    write_config(&config, &pg.dsn("postgres"), &offsite("abroad"));
    let (ok, _, err) = run_pgvigil_env(&["offsite", "-c", &cfg], &env);
    assert!(!ok);
    assert!(err.contains("bucket abroad is in us-east-1"), "{err}");
    assert!(moto.keys("abroad").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_retention_and_the_offsite_copy_and_exports_their_metrics() {
    let owner = postgres_dir();
    let config = owner.path().join("pgvigil.toml");
    let repo_dir = owner.path().join("repo");
    let storage = format!(
        "[storage]\nurl = \"file://{}\"\n[offsite]\nurl = \"file://{}/offsite\"\n",
        repo_dir.display(),
        owner.path().display()
    );
    let pg = archiving_cluster(&config).await;
    write_config(&config, &pg.dsn("postgres"), &storage);
    let cfg = config.display().to_string();
    let db = client(&pg, "postgres").await;
    // WAL from before the backup, which retention will find unnecessary.
    exec(&db, "CREATE TABLE t AS SELECT 1 AS x").await;
    switch_and_archive(&db).await;
    switch_and_archive(&db).await;
    take_backup(&cfg, &[]);

    // Both jobs last ran long ago (by their history in the repository): the scheduler
    // catches each missed run up once, right away.
    let jobs = repo_dir.join("default/state/jobs");
    std::fs::create_dir_all(&jobs).unwrap_or_else(|e| panic!("{e}"));
    for job in ["retention", "offsite"] {
        std::fs::write(
            jobs.join(format!("{job}.json")),
            r#"{"last_scheduled": "2026-01-01T00:00:00Z"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let audit_file = owner.path().join("audit.jsonl");
    let extra = format!(
        "{storage}[backup]\nschedule = \"off\"\n[drill]\nschedule = \"off\"\n[retention]\nschedule = \"0 3 * * *\"\n[audit]\nfile = \"{}\"\n",
        audit_file.display()
    );
    let running = harness::daemon(harness::settings(&pg.dsn("postgres"), &extra)).await;
    harness::wait_ready(&running).await;
    // Both catch-up runs take a few seconds alone; the bound is for a loaded CI host (seen
    // once each in two full runs: not both within 60 s). A failed run is not retried before
    // its next occurrence, so the message says what the audit file says of the two jobs.
    let s = eventually(Duration::from_secs(180), || async {
        let s = harness::scrape(&running).await;
        let last = |name: &str| s.metric(name).value().unwrap_or(0.0);
        if last("pgvigil_retention_last_run_timestamp_seconds") > 0.0
            && last("pgvigil_offsite_last_success_timestamp_seconds") > 0.0
        {
            Ok(s)
        } else {
            let said: Vec<String> = std::fs::read_to_string(&audit_file)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("\"retention.") || l.contains("\"offsite.") || l.contains("\"job."))
                .map(|l| l.chars().take(300).collect())
                .collect();
            Err(format!(
                "retention and offsite have not both run yet (retention last run {}, offsite last success {}, failures {} / {}); the audit file on them: {said:#?}",
                last("pgvigil_retention_last_run_timestamp_seconds"),
                last("pgvigil_offsite_last_success_timestamp_seconds"),
                last("pgvigil_retention_failures_total"),
                last("pgvigil_offsite_failures_total"),
            ))
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
    for store in ["primary", "offsite"] {
        assert_eq!(
            s.metric("pgvigil_storage_residency_ok")
                .label("store", store)
                .value(),
            Some(1.0),
            "{store}"
        );
        assert_eq!(
            s.metric("pgvigil_storage_object_lock_enabled")
                .label("store", store)
                .value(),
            Some(0.0)
        );
    }
    let now = chrono::Utc::now().timestamp() as f64;
    let ran = s
        .metric("pgvigil_retention_last_run_timestamp_seconds")
        .value()
        .unwrap_or(0.0);
    assert!((now - ran).abs() < 120.0, "{ran} vs {now}");
    // The WAL from before the backup was deleted and counted.
    let deleted = s
        .metric("pgvigil_retention_deleted_objects_total")
        .label("store", "primary")
        .label("reason", "expired_wal")
        .value()
        .unwrap_or(0.0);
    let left = wal_segments(&repo_dir.join("default/wal"));
    assert!(deleted >= 1.0, "deleted {deleted}, left {left:?}");
    assert_eq!(
        s.metric("pgvigil_retention_failures_total").value(),
        Some(0.0)
    );
    assert_eq!(
        s.metric("pgvigil_offsite_failures_total").value(),
        Some(0.0)
    );
    // Every deletion, the copy and the residency checks are in the audit file, whose
    // chain verifies.
    let text = std::fs::read_to_string(&audit_file).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let count = |event: &str| lines.iter().filter(|l| l["event"] == event).count();
    assert_eq!(count("retention.deleted") as f64, deleted, "{text}");
    assert_eq!(count("offsite.completed"), 1, "{text}");
    assert_eq!(count("storage.residency.checked"), 2, "{text}");
    assert!(lines
        .iter()
        .filter(|l| l["event"] == "retention.deleted")
        .all(|l| l["kind"] == "ops" && l["details"]["reason"] == "expired_wal"));
    let (ok, out, err) = run_pgvigil(&["audit", "verify", &audit_file.display().to_string()]);
    assert!(ok, "{out}{err}");

    // The copy is there, committed.
    let ids = backup_ids(&cfg, &[]);
    assert!(owner
        .path()
        .join("offsite/default/backups")
        .join(&ids[0])
        .join("backup.json")
        .exists());
}
