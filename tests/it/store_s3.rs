//! The S3 backend against a real S3 HTTP server (moto_server) on loopback: round trips with
//! metadata, a streamed multipart put, a failed or cancelled stream leaving nothing behind
//! (no object, no multipart upload in progress), no-overwrite puts, and error messages that
//! name the store, the key and the service's error code.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use pgvigil::store::{ByteStream, Metadata, ObjectStore};
use sha2::{Digest, Sha256};

use crate::harness::eventually;
use crate::harness::moto::{MotoServer, REGION};

const MIB: usize = 1024 * 1024;

fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `count` deterministic pseudo-random chunks of 1 MiB, then `tail` (an error, or nothing).
fn chunks(seed: u64, count: usize) -> Vec<Bytes> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            let mut v = vec![0u8; MIB];
            rng.fill(&mut v);
            Bytes::from(v)
        })
        .collect()
}

fn stream_of(parts: Vec<Result<Bytes, std::io::Error>>) -> ByteStream {
    Box::pin(futures_util::stream::iter(parts))
}

async fn uploads_in_progress(moto: &MotoServer, bucket: &str) -> Vec<String> {
    let out = moto
        .client()
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    out.uploads()
        .iter()
        .map(|u| format!("{:?} {:?}", u.key(), u.upload_id()))
        .collect()
}

#[tokio::test]
async fn put_get_head_list_delete_round_trip() {
    let moto = MotoServer::start().await;
    moto.create_bucket("repo", REGION).await;
    let store = moto.store("repo", "/pg/prod/").await;
    assert_eq!(store.describe(), "s3://repo/pg/prod");

    let before = std::time::SystemTime::now() - Duration::from_secs(5);
    let n = store
        .put_stream(
            "c/wal/0001.zst",
            stream_of(vec![Ok(Bytes::from("ab")), Ok(Bytes::from("cd"))]),
            meta(&[("sha256", "0123abcd"), ("Kind", "wal")]),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 4);
    assert_eq!(
        store.get_bytes("c/wal/0001.zst").await.unwrap(),
        Bytes::from("abcd")
    );

    // Stored under the prefix, as one plain PutObject (no multipart ETag suffix).
    let raw = moto
        .client()
        .head_object()
        .bucket("repo")
        .key("pg/prod/c/wal/0001.zst")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    assert!(
        !raw.e_tag().unwrap_or("-").contains('-'),
        "{:?}",
        raw.e_tag()
    );

    let (om, md) = store.head("c/wal/0001.zst").await.unwrap().unwrap();
    assert_eq!(om.key, "c/wal/0001.zst");
    assert_eq!(om.size, 4);
    assert_eq!(md, meta(&[("kind", "wal"), ("sha256", "0123abcd")]));
    let modified = om.last_modified.unwrap();
    assert!(modified >= before, "{modified:?} < {before:?}");
    assert!(store.head("c/wal/0002.zst").await.unwrap().is_none());

    store
        .put_bytes(
            "c/backups/b1/backup.json",
            Bytes::from("{}"),
            Metadata::new(),
        )
        .await
        .unwrap();
    // Objects outside the prefix (including a sibling spelled like it) are not listed.
    for key in ["pg/production/c/wal/x", "other/c/wal/y"] {
        moto.client()
            .put_object()
            .bucket("repo")
            .key(key)
            .body(Bytes::from("x").into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    }
    let keys = |v: Vec<pgvigil::store::ObjectMeta>| -> Vec<(String, u64)> {
        v.into_iter().map(|m| (m.key, m.size)).collect()
    };
    assert_eq!(
        keys(store.list("c/wal/").await.unwrap()),
        [("c/wal/0001.zst".to_string(), 4)]
    );
    assert_eq!(
        keys(store.list("").await.unwrap()),
        [
            ("c/backups/b1/backup.json".to_string(), 2),
            ("c/wal/0001.zst".to_string(), 4)
        ]
    );

    store.delete("c/wal/0001.zst").await.unwrap();
    assert!(store.head("c/wal/0001.zst").await.unwrap().is_none());
    store.delete("c/wal/0001.zst").await.unwrap(); // missing is fine
    assert_eq!(
        keys(store.list("c/").await.unwrap()),
        [("c/backups/b1/backup.json".to_string(), 2)]
    );

    // A store with no prefix sees the whole bucket, keys unchanged.
    let whole = moto.store("repo", "").await;
    assert_eq!(whole.describe(), "s3://repo");
    let all: Vec<String> = whole
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        all,
        [
            "other/c/wal/y",
            "pg/prod/c/backups/b1/backup.json",
            "pg/production/c/wal/x"
        ]
    );
}

#[tokio::test]
async fn listing_follows_pagination() {
    let moto = MotoServer::start().await;
    moto.create_bucket("many", REGION).await;
    let store = moto.store("many", "p").await;
    // ListObjectsV2 returns at most 1,000 keys per page.
    let n = 1_005;
    futures_util::stream::iter(0..n)
        .map(|i| {
            let store = &store;
            async move {
                store
                    .put_bytes(
                        &format!("wal/{i:06}"),
                        Bytes::from(vec![0u8; i % 7]),
                        Metadata::new(),
                    )
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let listed = store.list("wal/").await.unwrap();
    assert_eq!(listed.len(), n);
    for (i, m) in listed.iter().enumerate() {
        assert_eq!(m.key, format!("wal/{i:06}"));
        assert_eq!(m.size, (i % 7) as u64);
    }

    // A batch delete across the 1,000-key request limit, with a key that does not exist:
    // everything asked for is gone, nothing else is touched.
    let mut doomed: Vec<String> = (0..1_002).map(|i| format!("wal/{i:06}")).collect();
    doomed.push("wal/never-there".into());
    let failed = store.delete_many(&doomed).await;
    assert!(failed.is_empty(), "{failed:?}");
    let left: Vec<String> = store
        .list("wal/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(left, ["wal/001002", "wal/001003", "wal/001004"]);
}

#[tokio::test]
async fn a_40_mib_stream_goes_up_in_parts_and_reads_back_identical() {
    let moto = MotoServer::start().await;
    moto.create_bucket("big", REGION).await;
    let store = moto.store("big", "repo").await;
    let parts = chunks(7, 40);
    let mut want = Sha256::new();
    for p in &parts {
        want.update(p);
    }
    let want = hex::encode(want.finalize());

    let body = stream_of(parts.into_iter().map(Ok).collect());
    let n = store
        .put_stream(
            "c/backups/b1/base.tar.zst",
            body,
            meta(&[("sha256", &want)]),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 40 * MIB as u64);

    // A multipart object's ETag ends in the number of parts: 16 + 16 + 8 MiB.
    let raw = moto
        .client()
        .head_object()
        .bucket("big")
        .key("repo/c/backups/b1/base.tar.zst")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    assert!(
        raw.e_tag().unwrap_or("").trim_matches('"').ends_with("-3"),
        "{:?}",
        raw.e_tag()
    );

    let listed = store.list("c/backups/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "c/backups/b1/base.tar.zst");
    assert_eq!(listed[0].size, 40 * MIB as u64);
    let (om, md) = store
        .head("c/backups/b1/base.tar.zst")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(om.size, 40 * MIB as u64);
    assert_eq!(md, meta(&[("sha256", &want)]));

    let mut got = Sha256::new();
    let mut size = 0usize;
    let mut s = store.get_stream("c/backups/b1/base.tar.zst").await.unwrap();
    while let Some(chunk) = s.try_next().await.unwrap() {
        size += chunk.len();
        got.update(&chunk);
    }
    assert_eq!(size, 40 * MIB);
    assert_eq!(hex::encode(got.finalize()), want);
    assert!(uploads_in_progress(&moto, "big").await.is_empty());
}

#[tokio::test]
async fn a_stream_failing_after_20_mib_leaves_nothing() {
    let moto = MotoServer::start().await;
    moto.create_bucket("fail", REGION).await;
    let store = moto.store("fail", "repo").await;
    let mut body: Vec<Result<Bytes, std::io::Error>> = chunks(1, 20).into_iter().map(Ok).collect();
    body.push(Err(std::io::Error::other(
        "pg_basebackup exited with status 1",
    )));

    let err = store
        .put_stream(
            "c/backups/b2/base.tar.zst",
            stream_of(body),
            Metadata::new(),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("a failing stream was stored"));
    let msg = err.to_string();
    assert!(msg.contains("c/backups/b2/base.tar.zst"), "{msg}");
    assert!(msg.contains("s3://fail/repo"), "{msg}");
    assert!(
        std::error::Error::source(&err)
            .is_some_and(|s| s.to_string() == "pg_basebackup exited with status 1"),
        "{err:?}"
    );

    assert!(store.list("").await.unwrap().is_empty());
    assert!(moto.keys("fail").await.is_empty());
    assert_eq!(
        uploads_in_progress(&moto, "fail").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_cancelled_put_aborts_its_multipart_upload() {
    let moto = MotoServer::start().await;
    moto.create_bucket("cancel", REGION).await;
    let store = moto.store("cancel", "").await;
    // 20 MiB, then a producer that never finishes.
    let body: ByteStream = Box::pin(
        futures_util::stream::iter(chunks(2, 20).into_iter().map(Ok))
            .chain(futures_util::stream::pending()),
    );
    let put = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .put_stream("c/backups/b3/base.tar.zst", body, Metadata::new())
                .await
        }
    });
    eventually(Duration::from_secs(30), || async {
        match uploads_in_progress(&moto, "cancel").await.len() {
            1 => Ok(()),
            n => Err(format!("{n} uploads in progress")),
        }
    })
    .await;
    put.abort();
    assert!(put.await.is_err_and(|e| e.is_cancelled()));
    eventually(Duration::from_secs(30), || async {
        let left = uploads_in_progress(&moto, "cancel").await;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still in progress: {left:?}"))
        }
    })
    .await;
    assert!(moto.keys("cancel").await.is_empty());
}

#[tokio::test]
async fn put_if_absent_never_overwrites() {
    let moto = MotoServer::start().await;
    moto.create_bucket("wal", REGION).await;
    let store = moto.store("wal", "repo").await;

    assert!(store
        .put_if_absent(
            "c/wal/000000010000000000000001.zst",
            Bytes::from("first"),
            meta(&[("sha256", "aaa")]),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}")));
    assert!(!store
        .put_if_absent(
            "c/wal/000000010000000000000001.zst",
            Bytes::from("second"),
            meta(&[("sha256", "bbb")]),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(
        store
            .get_bytes("c/wal/000000010000000000000001.zst")
            .await
            .unwrap(),
        Bytes::from("first")
    );
    let (om, md) = store
        .head("c/wal/000000010000000000000001.zst")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((om.size, md), (5, meta(&[("sha256", "aaa")])));

    // The server itself refuses the conditional PUT (so put_if_absent is one atomic
    // request, not a HEAD-then-PUT race).
    let refused = moto
        .client()
        .put_object()
        .bucket("wal")
        .key("repo/c/wal/000000010000000000000001.zst")
        .if_none_match("*")
        .body(Bytes::from("third").into())
        .send()
        .await
        .err()
        .unwrap_or_else(|| panic!("moto ignored If-None-Match"));
    assert_eq!(
        refused.raw_response().map(|r| r.status().as_u16()),
        Some(412)
    );
    assert_eq!(
        aws_sdk_s3::error::ProvideErrorMetadata::code(&refused),
        Some("PreconditionFailed")
    );
}

/// The compare-and-swap leases and job history use, against moto: `If-None-Match: *`
/// creates only where nothing is, `If-Match` replaces only the version that was read (moto
/// 5.2.6 honours both on PUT, and `If-Match` on DELETE), and a write that finds exactly its
/// own bytes stored (a retry whose first attempt landed) is success. Then the lease itself
/// over S3: one of two racing takers wins, and the loser's fenced delete is refused
/// (issue 14, item 7).
#[tokio::test]
async fn conditional_writes_compare_and_swap_and_leases_fence_over_s3() {
    use pgvigil::store::lease::Lease;
    let moto = MotoServer::start().await;
    moto.create_bucket("cas", REGION).await;
    let store = moto.store("cas", "repo").await;
    let key = "c/state/jobs/backup.json";

    let v1 = store
        .put_versioned(key, Bytes::from("one"), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("create refused on an empty key"));
    // Create again: refused, nothing written.
    assert_eq!(
        store
            .put_versioned(key, Bytes::from("other"), None)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        None
    );
    // Replace the version read: accepted; a stale version: refused.
    let v2 = store
        .put_versioned(key, Bytes::from("two"), Some(&v1))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("compare-and-swap on the current version refused"));
    assert_ne!(v1, v2);
    assert_eq!(
        store
            .put_versioned(key, Bytes::from("three"), Some(&v1))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        None
    );
    // A retry of the write that landed ("two" over v1) finds its own bytes: success.
    assert_eq!(
        store
            .put_versioned(key, Bytes::from("two"), Some(&v1))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Some(v2.clone())
    );
    let (body, version) = store
        .get_versioned(key)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{key} vanished"));
    assert_eq!((body, version), (Bytes::from("two"), v2.clone()));
    // If-Match on a missing key: refused, not created.
    assert_eq!(
        store
            .put_versioned("c/state/none.json", Bytes::from("x"), Some(&v2))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        None
    );
    assert!(store.head("c/state/none.json").await.unwrap().is_none());
    // moto refuses a DELETE with a stale If-Match too (not used by pgvigil, recorded here
    // because the design relies on the server honouring conditions).
    let stale_delete = moto
        .client()
        .delete_object()
        .bucket("cas")
        .key(format!("repo/{key}"))
        .if_match(&v1)
        .send()
        .await;
    assert_eq!(
        stale_delete
            .err()
            .and_then(|e| e.raw_response().map(|r| r.status().as_u16())),
        Some(412)
    );

    // Leases over S3.
    let repo = pgvigil::store::Repo {
        store: std::sync::Arc::new(store),
        cluster: "c".into(),
    };
    let ttl = Duration::from_secs(2);
    let old = Lease::acquire(&repo, "retention", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(old.clock_skew().is_some_and(|s| s.num_seconds().abs() < 60));
    let fenced = old.fence(&repo);
    repo.store
        .put_bytes("c/wal/keep", Bytes::from("x"), meta(&[]))
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        Lease::acquire(&repo, "retention", ttl),
        Lease::acquire(&repo, "retention", ttl)
    );
    assert!(
        a.is_err() && b.is_err(),
        "a live lease was taken: {a:?} {b:?}"
    );
    fenced
        .store
        .delete("c/wal/keep")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    repo.store
        .put_bytes("c/wal/keep", Bytes::from("x"), meta(&[]))
        .await
        .unwrap();
    old.release().await;
    let (a, b) = tokio::join!(
        Lease::acquire(&repo, "retention", ttl),
        Lease::acquire(&repo, "retention", ttl)
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one taker wins: {a:?} {b:?}"
    );
    let winner = a.or(b).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(winner.generation(), 2);
    let refused = fenced.store.delete("c/wal/keep").await;
    assert!(
        matches!(&refused, Err(pgvigil::store::Error::Fenced { .. })),
        "{refused:?}"
    );
    assert!(repo.store.head("c/wal/keep").await.unwrap().is_some());
    winner.release().await;
}

#[tokio::test]
async fn a_missing_key_is_not_found() {
    let moto = MotoServer::start().await;
    moto.create_bucket("empty", REGION).await;
    let store = moto.store("empty", "repo").await;
    let err = store
        .get_stream("c/backups/none/backup.json")
        .await
        .err()
        .unwrap_or_else(|| panic!("got a missing object"));
    assert!(err.is_not_found(), "{err}");
    assert_eq!(
        err.to_string(),
        "c/backups/none/backup.json not found in s3://empty/repo"
    );
    assert!(store
        .head("c/backups/none/backup.json")
        .await
        .unwrap()
        .is_none());
    assert!(store.list("c/").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_bucket_is_named_with_the_service_error_code() {
    let moto = MotoServer::start().await;
    let store = moto.store("no-such-repo-bucket", "repo").await;
    let err = store
        .put_bytes("c/wal/1.zst", Bytes::from("x"), Metadata::new())
        .await
        .err()
        .unwrap_or_else(|| panic!("wrote into a missing bucket"));
    let msg = err.to_string();
    assert!(msg.contains("s3://no-such-repo-bucket/repo"), "{msg}");
    assert!(msg.contains("c/wal/1.zst"), "{msg}");
    assert!(msg.contains("NoSuchBucket"), "{msg}");
    assert!(msg.contains("HTTP 404"), "{msg}");
    assert!(!msg.contains("service error"), "{msg}");

    // Reading from it is a failure, not a missing object.
    let err = store
        .get_stream("c/wal/1.zst")
        .await
        .err()
        .unwrap_or_else(|| panic!("read from a missing bucket"));
    assert!(!err.is_not_found(), "{err}");
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");

    let err = store
        .list("c/")
        .await
        .err()
        .unwrap_or_else(|| panic!("listed a missing bucket"));
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
    assert!(err.to_string().contains("no-such-repo-bucket"), "{err}");
}

#[tokio::test]
async fn an_unreachable_endpoint_names_the_store_and_the_cause() {
    let mut moto = MotoServer::start().await;
    moto.create_bucket("gone", REGION).await;
    let store = moto.store("gone", "repo").await;
    moto.stop();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        store.put_bytes("c/wal/1.zst", Bytes::from("x"), Metadata::new()),
    )
    .await
    .unwrap_or_else(|_| panic!("a put to a stopped server did not fail within 60 s"))
    .err()
    .unwrap_or_else(|| panic!("wrote to a stopped server"));
    let msg = err.to_string();
    assert!(
        msg.starts_with("uploading c/wal/1.zst in s3://gone/repo: "),
        "{msg}"
    );
    assert!(
        msg.to_lowercase().contains("connect") || msg.to_lowercase().contains("refused"),
        "{msg}"
    );
}

/// An S3-compatible endpoint with a private CA (MinIO-style): `storage.s3.ca_file` makes
/// it trusted; without it the connection is refused, naming the certificate problem.
#[tokio::test]
async fn an_https_endpoint_with_a_private_ca_is_trusted_through_ca_file() {
    use pgvigil::store::s3::S3Store;
    let moto = MotoServer::start().await;
    moto.create_bucket("tls", REGION).await;
    let mut pki = crate::harness::tls::TestPki::new("s3");
    let cert = pki.server("s3", &[]);
    let token = tokio_util::sync::CancellationToken::new();
    let target: std::net::SocketAddr = moto
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let front = crate::harness::https::tls_front(&cert, target, token.clone()).await;
    let https = pgvigil::config::S3Settings {
        endpoint: Some(format!("https://127.0.0.1:{}", front.port())),
        ca_file: Some(pki.ca_cert.clone()),
        ..moto.settings()
    };
    let store = S3Store::connect_with("tls", "p", &https, Some(MotoServer::credentials()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .put_bytes("k", Bytes::from("over tls"), Metadata::new())
        .await
        .unwrap_or_else(|e| panic!("put over TLS: {e}"));
    assert_eq!(
        store.get_bytes("k").await.unwrap_or_else(|e| panic!("{e}")),
        Bytes::from("over tls")
    );

    // The system roots alone do not trust the private CA.
    let untrusted = pgvigil::config::S3Settings {
        ca_file: None,
        ..https.clone()
    };
    let store = S3Store::connect_with("tls", "p", &untrusted, Some(MotoServer::credentials()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let e = store.get_bytes("k").await.unwrap_err().to_string();
    assert!(
        e.contains("s3://tls/p") && e.to_lowercase().contains("certificate"),
        "{e}"
    );

    // A file without a certificate is refused by name.
    let empty = pki.file("empty.pem", "not a certificate\n");
    let bad = pgvigil::config::S3Settings {
        ca_file: Some(empty.clone()),
        ..https
    };
    let e = S3Store::connect_with("tls", "p", &bad, Some(MotoServer::credentials()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&empty.display().to_string()) && e.contains("no PEM certificate"),
        "{e}"
    );
    token.cancel();
}
