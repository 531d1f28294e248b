//! Client-side encryption (`[storage.encryption]`) end to end: what reaches the bucket is
//! ciphertext, backups restore, a rotated key still opens old backups, a missing key is
//! named, and a tampered or swapped object is refused naming it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;

use crate::harness::backup::{
    archiving_cluster, archiving_cluster_env, start_restored_env, switch_and_archive, write_config,
};
use crate::harness::moto::MotoServer;
use crate::harness::{self, client, exec, postgres_dir, run_pgvigil};

/// The first key: 32 bytes of 0x11, as 64 hex digits in a private file.
const KEY_2026: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// Writes `key` to a file only the server's OS user can read (the archiver reads it).
fn key_file(dir: &Path, name: &str, key: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(&path).unwrap_or_else(|e| panic!("{e}"));
    path.display().to_string()
}

/// The second key, 32 bytes of 0x22 in base64 (either form is accepted).
fn key_2027() -> String {
    base64::engine::general_purpose::STANDARD.encode([0x22u8; 32])
}

async fn object(moto: &MotoServer, bucket: &str, key: &str) -> (Vec<u8>, Option<String>) {
    let out = moto
        .client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    let key_id = out.metadata().and_then(|m| m.get("key-id").cloned());
    let body = out.body.collect().await.unwrap_or_else(|e| panic!("{e}"));
    (body.into_bytes().to_vec(), key_id)
}

async fn replace(moto: &MotoServer, bucket: &str, key: &str, body: Vec<u8>) {
    moto.client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
}

async fn markers(c: &tokio_postgres::Client) -> Vec<i32> {
    c.query("SELECT id FROM markers ORDER BY id", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_backups_restore_across_a_key_rotation_and_tampering_is_named() {
    let moto = MotoServer::start().await;
    moto.create_bucket("sealed", "eu-central-1").await;
    let env = MotoServer::aws_env();
    let run = |args: &[&str]| harness::run_pgvigil_env(args, &env);
    let owner = postgres_dir();
    let config = owner.path().join("pgvigil.toml");
    let cfg = config.display().to_string();
    let k2026 = key_file(owner.path(), "backup-2026q4.key", KEY_2026);
    let storage = moto.storage_toml("sealed", "");
    let v1 =
        format!("{storage}[storage.encryption]\nkey_id = \"2026q4\"\nkey_file = \"{k2026}\"\n");
    let primary = archiving_cluster_env(&config, env.clone()).await;
    let dsn = primary.dsn("postgres");
    write_config(&config, &dsn, &v1);
    let db = client(&primary, "postgres").await;
    exec(&db, "CREATE TABLE markers (id int primary key)").await;
    exec(&db, "INSERT INTO markers VALUES (1)").await;
    switch_and_archive(&db).await;
    let (ok, out, err) = run(&["backup", "-c", &cfg, "--json"]);
    assert!(ok, "backup failed: {err}");
    let info: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let id = info["id"].as_str().unwrap_or("?").to_string();
    exec(&db, "INSERT INTO markers VALUES (2)").await;
    switch_and_archive(&db).await;

    // Every backup and WAL object in the bucket is sealed with the key it names; the
    // repository's own records are not (they hold no database content).
    let keys = moto.keys_under("sealed", "pgvigil/default/").await;
    let base_key = format!(
        "pgvigil/default/backups/{id}/{}",
        info["objects"][0]["name"].as_str().unwrap_or("?")
    );
    assert!(keys.contains(&base_key), "{keys:?}");
    for k in keys
        .iter()
        .filter(|k| k.contains("/backups/") || k.contains("/wal/"))
    {
        let (body, key_id) = object(&moto, "sealed", k).await;
        assert!(body.starts_with(b"PGVSEAL1"), "{k} is not sealed");
        assert_eq!(key_id.as_deref(), Some("2026q4"), "{k}");
    }
    let (binding, _) = object(&moto, "sealed", "pgvigil/default/state/cluster.json").await;
    assert!(binding.starts_with(b"{"), "state/ stays readable");
    // The listing size is what backup.json records, so an off-site copy or verify compares
    // listings without the key.
    let (base, _) = object(&moto, "sealed", &base_key).await;
    assert_eq!(
        info["objects"][0]["stored_bytes"].as_u64(),
        Some(base.len() as u64)
    );

    // Rotation: a new current key, the old one kept to open old objects.
    let v2 = format!(
        "{storage}[storage.encryption]\nkey_id = \"2027q1\"\nkey = \"{}\"\n[[storage.encryption.old_keys]]\nkey_id = \"2026q4\"\nkey_file = \"{k2026}\"\n",
        key_2027()
    );
    write_config(&config, &dsn, &v2);
    exec(&db, "INSERT INTO markers VALUES (3)").await;
    let newest: String =
        harness::query_value(&db, "SELECT pg_walfile_name(pg_current_wal_lsn())").await;
    switch_and_archive(&db).await;
    let newest_key = format!("pgvigil/default/wal/{newest}.zst");
    let (_, key_id) = object(&moto, "sealed", &newest_key).await;
    assert_eq!(
        key_id.as_deref(),
        Some("2027q1"),
        "WAL after the rotation uses the new key"
    );
    let (_, out, _) = run(&["check-config", "-c", &cfg]);
    assert!(
        out.lines().any(|l| l.starts_with("ok")
            && l.contains("encryption")
            && l.contains("\"2027q1\"")
            && l.contains("2026q4")),
        "{out}"
    );

    // The backup sealed with the old key restores, replaying WAL sealed with both.
    let restore_dir = owner.path().join("restored");
    let (ok, _, err) = run(&[
        "restore",
        "-c",
        &cfg,
        "--to",
        &restore_dir.display().to_string(),
    ]);
    assert!(ok, "restore failed: {err}");
    let restored = start_restored_env(&restore_dir, env.clone()).await;
    let rc = client(&restored, "postgres").await;
    harness::wait_promoted(&rc).await;
    assert_eq!(markers(&rc).await, [1, 2, 3]);
    drop(rc);
    drop(restored);

    // Without the old key, what it sealed is refused, naming the key id and the fix.
    let v3 = format!(
        "{storage}[storage.encryption]\nkey_id = \"2027q1\"\nkey = \"{}\"\n",
        key_2027()
    );
    write_config(&config, &dsn, &v3);
    let again = owner.path().join("restored-2");
    let (ok, _, err) = run(&["restore", "-c", &cfg, "--to", &again.display().to_string()]);
    assert!(
        !ok,
        "a restore without the key that sealed the backup succeeded"
    );
    assert!(
        err.contains(&format!("backups/{id}/backup.json"))
            && err.contains("key id \"2026q4\"")
            && err.contains("old_keys"),
        "{err}"
    );
    assert!(!again.join("PG_VERSION").exists());
    write_config(&config, &dsn, &v2);

    // A flipped bit in a stored WAL object, and a segment swapped onto another name, are
    // refused naming the object; nothing is written where PostgreSQL would read it.
    let (mut body, _) = object(&moto, "sealed", &newest_key).await;
    let last = body.len() - 1;
    body[last] ^= 0x01;
    replace(&moto, "sealed", &newest_key, body).await;
    let dest = owner.path().join("fetched");
    let (ok, _, err) = run(&[
        "wal-fetch",
        "-c",
        &cfg,
        &newest,
        &dest.display().to_string(),
    ]);
    assert!(
        !ok && err.contains(&format!("default/wal/{newest}.zst in s3://sealed/pgvigil"))
            && err.contains("does not authenticate"),
        "{err}"
    );
    assert!(!dest.exists());
    let mut wal: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("/wal/0") && k.ends_with(".zst"))
        .collect();
    wal.sort();
    let (victim, donor) = (wal[0], wal[1]);
    let (donor_body, _) = object(&moto, "sealed", donor).await;
    replace(&moto, "sealed", victim, donor_body).await;
    let victim_name = victim
        .rsplit('/')
        .next()
        .unwrap_or("")
        .trim_end_matches(".zst");
    let (ok, _, err) = run(&[
        "wal-fetch",
        "-c",
        &cfg,
        victim_name,
        &dest.display().to_string(),
    ]);
    assert!(
        !ok && err.contains(victim.trim_start_matches("pgvigil/"))
            && err.contains("does not authenticate"),
        "{err}"
    );
    assert!(!dest.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_off_site_copy_carries_ciphertext_as_it_is_and_restores_from_there() {
    let owner = postgres_dir();
    let config = owner.path().join("pgvigil.toml");
    let cfg = config.display().to_string();
    let (repo, offsite) = (owner.path().join("repo"), owner.path().join("offsite"));
    let key = key_file(owner.path(), "backup.key", KEY_2026);
    let encryption = format!("[storage.encryption]\nkey_id = \"k1\"\nkey_file = \"{key}\"\n");
    let primary = archiving_cluster(&config).await;
    let dsn = primary.dsn("postgres");
    write_config(
        &config,
        &dsn,
        &format!(
            "[storage]\nurl = \"file://{}\"\n{encryption}[offsite]\nurl = \"file://{}\"\n",
            repo.display(),
            offsite.display()
        ),
    );
    let db = client(&primary, "postgres").await;
    exec(&db, "CREATE TABLE markers (id int primary key)").await;
    exec(&db, "INSERT INTO markers VALUES (1)").await;
    switch_and_archive(&db).await;
    let (ok, out, err) = run_pgvigil(&["backup", "-c", &cfg, "--json"]);
    assert!(ok, "backup failed: {err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let id = info["id"].as_str().unwrap_or("?").to_string();
    exec(&db, "INSERT INTO markers VALUES (2)").await;
    switch_and_archive(&db).await;
    let (ok, out, err) = run_pgvigil(&["offsite", "-c", &cfg, "--json"]);
    assert!(ok, "offsite failed: {err}");
    let copy: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(copy["verified"], true, "{copy}");

    // The base object is copied byte for byte: no decryption and re-encryption.
    let base = format!(
        "default/backups/{id}/{}",
        info["objects"][0]["name"].as_str().unwrap_or("?")
    );
    let (a, b) = (
        std::fs::read(repo.join(&base)).unwrap_or_default(),
        std::fs::read(offsite.join(&base)).unwrap_or_default(),
    );
    assert!(a.starts_with(b"PGVSEAL1") && !a.is_empty());
    assert_eq!(a, b, "the off-site base object differs from the primary's");

    // The off-site repository restores with the same key.
    write_config(
        &config,
        &dsn,
        &format!(
            "[storage]\nurl = \"file://{}\"\n{encryption}",
            offsite.display()
        ),
    );
    drop(db);
    drop(primary);
    let restore_dir = owner.path().join("restored");
    let (ok, _, err) = run_pgvigil(&[
        "restore",
        "-c",
        &cfg,
        "--to",
        &restore_dir.display().to_string(),
    ]);
    assert!(ok, "restore from the off-site copy failed: {err}");
    let restored = start_restored_env(&restore_dir, Vec::new()).await;
    let rc = client(&restored, "postgres").await;
    harness::wait_promoted(&rc).await;
    assert_eq!(markers(&rc).await, [1, 2]);
}
