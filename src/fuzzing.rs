//! The fuzz targets: one function per parser of external input, each taking arbitrary
//! bytes. `fuzz/fuzz_targets/<name>.rs` (cargo-fuzz, libFuzzer) calls exactly these, and so
//! does the corpus test of `make test` (`tests/it/fuzz_corpus.rs`), which runs every file
//! of `fuzz/corpus/<name>/` and `fuzz/artifacts/<name>/` through them on stable Rust, so
//! every seed and every crash once found stays a regression case. [`TARGETS`] lists them.
//!
//! The invariant they hold: no input makes a parser panic, overflow or loop without bound;
//! malformed input is an error or is skipped. Each target also asserts a few properties of
//! what the parser returns (a round trip, a bound); a failed assertion is a crash like any
//! other. Nothing here is used by the daemon or the CLI.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::backup::{basebackup, catalog, pitr, restore, retention, wal};
use crate::metrics::{self, parse::parse_text, Family, Format};
use crate::store::{local::LocalStore, Metadata, ObjectMeta, Repo};

/// A fuzz target: a name (its file in `fuzz/fuzz_targets/` and its corpus directory) and
/// the function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    ("prometheus_text", prometheus_text),
    ("pgbouncer_show", pgbouncer_show),
    ("content_range", content_range),
    ("upstream_response", upstream_response),
    ("jwt", jwt),
    ("backup_label", backup_label),
    ("tar_inspector", tar_inspector),
    ("backup_json", backup_json),
    ("wal_page_header", wal_page_header),
    ("wal_names", wal_names),
    ("repository_listing", repository_listing),
    ("config", config),
    ("restore_unpack", restore_unpack),
];

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// One sample as (name with suffix, label pairs, value as text).
type FlatSample = (String, Vec<(String, String)>, String);

/// Every sample of a page, sorted.
fn samples(families: &[Family]) -> Vec<FlatSample> {
    let mut out: Vec<_> = families
        .iter()
        .flat_map(|f| {
            f.samples.iter().map(move |s| {
                (
                    format!("{}{}", f.name, s.suffix),
                    s.labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                    metrics::family::format_value(s.value),
                )
            })
        })
        .collect();
    out.sort();
    out
}

/// PostgREST's admin `/metrics` (Prometheus text) as pgvigil passes it through: parsed,
/// re-encoded in both formats, and the text encoding parses back to the same samples.
pub fn prometheus_text(data: &[u8]) {
    let families = parse_text(&text(data), |n| n.starts_with("pgrst_"));
    for f in &families {
        assert!(f.name.starts_with("pgrst_"), "kept {:?}", f.name);
        assert!(!f.samples.is_empty(), "empty family {:?}", f.name);
    }
    let _ = metrics::encode(&families, Format::OpenMetrics);
    let page = metrics::encode(&families, Format::Text);
    let again = parse_text(&page, |_| true);
    assert_eq!(
        samples(&families),
        samples(&again),
        "re-encoded page differs:\n{page}"
    );
}

/// PgBouncer's seven SHOW results (`psql -A -F'|'` text, as in the collector's fixtures),
/// separated by lines `;;` in the collector's order: VERSION, LISTS, CONFIG, DATABASES,
/// POOLS, STATS_TOTALS, CLIENTS. Whatever the cells hold, the page pgvigil serves parses back.
pub fn pgbouncer_show(data: &[u8]) {
    use crate::collectors::pgbouncer::{families_from_tables, table::Table, Tables};
    let text = text(data);
    let mut parts = text.split("\n;;\n");
    let tables: Tables = std::array::from_fn(|_| Table::from_fixture(parts.next().unwrap_or("")));
    let mut out = Vec::new();
    families_from_tables(&tables, &mut out);
    for f in &out {
        for s in &f.samples {
            assert_eq!(s.labels.len(), f.label_names.len(), "{}", f.name);
        }
    }
    let page = metrics::encode(&out, Format::Text);
    assert_eq!(
        samples(&out),
        samples(&parse_text(&page, |_| true)),
        "page does not parse back:\n{page}"
    );
}

/// PostgREST response headers the proxy reads: `Content-Range`, `Proxy-Status` and
/// `Server-Timing` (the whole input is each header's value).
/// The API proxy's reading of an upstream response (`proxy::upstream`): the head, then
/// the body by its framing, for a GET and a HEAD. The body never holds more bytes than came
/// in, and never an empty frame.
pub fn upstream_response(data: &[u8]) {
    for head_only in [false, true] {
        if let Some((body, _end)) = crate::proxy::upstream::decode_all(data, head_only) {
            let total: usize = body.iter().map(|b| b.len()).sum();
            assert!(
                total <= data.len(),
                "{total} body bytes from {} in",
                data.len()
            );
            assert!(body.iter().all(|b| !b.is_empty()), "an empty frame");
            if head_only {
                assert!(body.is_empty(), "a HEAD response with a body");
            }
        }
    }
}

pub fn content_range(data: &[u8]) {
    use crate::proxy::headers;
    let value = text(data);
    if let Some((rows, total)) = headers::content_range(&value) {
        // "*/N" is zero rows; "a-b/N" is b - a + 1 >= 1.
        let star = value.trim().starts_with('*');
        assert!(star == (rows == 0), "{value:?} -> {rows} rows");
        let _ = total;
    }
    let _ = headers::proxy_status_error(&value);
    for (name, seconds) in headers::server_timing(&value) {
        assert!(!name.is_empty() && seconds.is_finite() && seconds >= 0.0);
    }
}

/// The proxy's JWT handling: the first line is a `role_claim_key`, the rest an
/// `Authorization` header value, resolved unverified and with an HS256 secret.
pub fn jwt(data: &[u8]) {
    use crate::config::{ClaimPath, ClaimRules};
    use crate::proxy::jwt::{RoleResolver, INVALID_ROLE};
    let text = text(data);
    let (path, header) = text.split_once('\n').unwrap_or((".role", &text));
    let Ok(path) = ClaimPath::parse(path) else {
        return;
    };
    let rules = ClaimRules {
        audience: None,
        issuer: None,
        leeway: std::time::Duration::from_secs(30),
        require_exp: false,
    };
    let unverified = RoleResolver::new(path.clone(), "anon".into(), None, None, &rules);
    // Without a key set nothing is fetched: the future is ready at once.
    use futures_util::FutureExt;
    let Some(id) = unverified.identify(Some(header)).now_or_never() else {
        return;
    };
    assert!(!id.verified || id.role == "anon", "{id:?}");
    let secret = b"fuzzing-secret-fuzzing-secret-32";
    let verifying = RoleResolver::new(path, "anon".into(), Some(secret), None, &rules);
    let Some(id) = verifying.identify(Some(header)).now_or_never() else {
        return;
    };
    assert!(id.verified || id.role == INVALID_ROLE, "{id:?}");
}

/// `backup_label` and the end of `backup_manifest`, as read from pg_basebackup's stream.
pub fn backup_label(data: &[u8]) {
    let text = text(data);
    let label = basebackup::parse_label(&text);
    if basebackup::check_label(&label).is_ok() {
        // What check_label lets into backup.json, verify and retention can read.
        assert!(catalog::parse_lsn(&label.start_lsn).is_some());
        let size = basebackup::label_segment_size(&label);
        assert!(
            size.is_some_and(|s| pitr::parse_segment(&label.start_wal, (1 << 32) / s).is_some())
        );
    }
    if let Some(lsn) = basebackup::manifest_stop_lsn(&text) {
        assert!(text.contains(&lsn));
    }
}

/// The tar inspector over any byte stream: fed whole and in chunks (the first byte picks
/// the chunk size), it keeps the same label, and never more than its bounds.
pub fn tar_inspector(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let mut whole = basebackup::TarInspector::default();
    whole.feed(stream);
    let mut chunked = basebackup::TarInspector::default();
    for chunk in stream.chunks(usize::from(first).max(1)) {
        chunked.feed(chunk);
    }
    assert!(whole.label().len() <= basebackup::MAX_LABEL);
    assert_eq!(whole.label(), chunked.label());
    let (a, b) = (whole.manifest_tail(), chunked.manifest_tail());
    assert!(a.ends_with(b) || b.ends_with(a), "manifest tails differ");
    let _ = basebackup::parse_label(&text(whole.label()));
}

/// A current-thread runtime for the targets that run repository code.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("fuzz harness: no tokio runtime: {e}"),
        }
    })
}

/// A `file://` repository (cluster `c`) in a fresh temp dir.
fn temp_repo() -> (tempfile::TempDir, Repo) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("fuzz harness: no temp dir: {e}"),
    };
    let repo = Repo {
        store: Arc::new(LocalStore::new(dir.path().into())),
        cluster: "c".into(),
    };
    (dir, repo)
}

async fn put(repo: &Repo, key: &str, body: &[u8], meta: Metadata) {
    if let Err(e) = try_put(repo, key, body, meta).await {
        panic!("fuzz harness: writing {key}: {e}");
    }
}

async fn try_put(
    repo: &Repo,
    key: &str,
    body: &[u8],
    meta: Metadata,
) -> Result<(), crate::store::Error> {
    repo.store
        .put_bytes(key, bytes::Bytes::copy_from_slice(body), meta)
        .await
}

fn raw_size(size: &str) -> Metadata {
    [("raw-size".to_string(), size.to_string())].into()
}

fn compressed(body: &[u8]) -> Vec<u8> {
    match crate::backup::compress::compress(body, 1) {
        Ok(c) => c,
        Err(e) => panic!("fuzz harness: zstd: {e}"),
    }
}

/// Everything pgvigil does with the committed backups of a repository, given their
/// `backup.json`s and the repository's objects: verify, restore's selection and
/// retention's plan, whose invariants are checked.
async fn judge(repo: &Repo) {
    let report = match pitr::verify(repo, None).await {
        Ok(r) => r,
        Err(e) => panic!("verify of a readable repository failed: {e}"),
    };
    assert!(!report.ok || report.missing.is_empty());
    let backups = match catalog::list(repo).await {
        Ok(b) => b,
        Err(e) => panic!("listing a readable repository failed: {e}"),
    };
    assert_eq!(report.backups, backups.len());
    let now: chrono::DateTime<chrono::Utc> = chrono::DateTime::from_timestamp(1_800_000_000, 0)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    for target in [
        catalog::Target::Latest,
        catalog::Target::Time(now),
        catalog::Target::Lsn(u64::MAX),
        catalog::Target::Immediate,
    ] {
        let _ = catalog::select(
            &backups,
            None,
            &target,
            &crate::backup::timeline::Lineage::single(1),
        );
    }
    let mut objects: Vec<ObjectMeta> = Vec::new();
    for prefix in ["c/backups/", "c/wal/"] {
        match repo.store.list(prefix).await {
            Ok(l) => objects.extend(l),
            Err(e) => panic!("listing {prefix}: {e}"),
        }
    }
    check_plan(repo, &backups, &objects, now);
}

/// Runs retention's plan and checks what must always hold: the newest backup and
/// `.history` files are never deleted, and nothing is deleted twice.
fn check_plan(
    repo: &Repo,
    backups: &[catalog::BackupInfo],
    objects: &[ObjectMeta],
    now: chrono::DateTime<chrono::Utc>,
) {
    for window_days in [0u64, 35, 1 << 40] {
        let policy = retention::Policy {
            recovery_window: std::time::Duration::from_secs(window_days.saturating_mul(86_400)),
            min_backups: 1,
        };
        let plan = retention::plan(
            repo,
            backups,
            objects,
            now,
            policy,
            &crate::backup::timeline::Lineage::single(1),
        );
        let newest = backups
            .iter()
            .max_by(|a, b| a.stop_time.cmp(&b.stop_time).then_with(|| a.id.cmp(&b.id)));
        if let Some(newest) = newest {
            assert!(plan.kept.iter().any(|k| k.id == newest.id));
            let marker = repo.key(&crate::store::layout::backup_marker(&newest.id));
            assert!(plan.delete.iter().all(|d| d.key != marker), "{marker}");
        }
        let mut keys: Vec<&str> = plan.delete.iter().map(|d| d.key.as_str()).collect();
        let wal = repo.key("wal/");
        assert!(
            keys.iter()
                .all(|k| !(k.starts_with(&wal) && k.ends_with(".history.zst"))),
            "a .history file is deleted: {keys:?}"
        );
        keys.sort_unstable();
        let n = keys.len();
        keys.dedup();
        assert_eq!(n, keys.len(), "a key is deleted twice");
    }
}

/// The WAL every `backup_json` input is judged against: segments 1 to 3 of timeline 1
/// and timeline 2's history.
async fn seed_wal(repo: &Repo) {
    for seg in 1..=3u32 {
        let name = format!("00000001000000000000000{seg}");
        put(
            repo,
            &format!("c/wal/{name}.zst"),
            &compressed(b"wal"),
            raw_size("16777216"),
        )
        .await;
    }
}

/// A `backup.json` from the repository (the whole input), next to a valid backup and a
/// little WAL: verify, selection and retention take whatever it says.
pub fn backup_json(data: &[u8]) {
    let (_dir, repo) = temp_repo();
    runtime().block_on(async {
        seed_wal(&repo).await;
        put(
            &repo,
            "c/backups/good/backup.json",
            GOOD_BACKUP_JSON,
            Metadata::new(),
        )
        .await;
        put(&repo, "c/backups/fuzzed/backup.json", data, Metadata::new()).await;
        put(&repo, "c/backups/fuzzed/base.tar.zst", b"", Metadata::new()).await;
        judge(&repo).await;
    });
}

/// A valid `backup.json` (trimmed from a real one).
const GOOD_BACKUP_JSON: &[u8] = br#"{"format":1,"id":"good","pgvigil_version":"0.1.0","system_identifier":"7400000000000000001","pg_version_num":150000,"timeline":1,"start_lsn":"0/1000028","stop_lsn":"0/1000100","start_wal":"000000010000000000000001","start_time":"2026-01-01T00:00:00Z","stop_time":"2026-01-01T00:00:05Z","duration_seconds":5.0,"raw_bytes":1000,"stored_bytes":100,"compression":"zstd","objects":[{"name":"base.tar.zst","stored_bytes":100,"sha256":"00"}]}"#;

/// The first bytes of a WAL segment, as `wal-push` reads its system identifier, and its
/// records, as `verify` reads the newest transaction time from them.
pub fn wal_page_header(data: &[u8]) {
    if let Some(sysid) = wal::system_identifier(data) {
        assert!(data.len() >= 32 && data[2] & 0x02 != 0);
        assert_eq!(data.get(24..32), Some(&sysid.to_le_bytes()[..]));
    }
    let _ = crate::backup::wal_scan::newest_xact_time(data);
}

/// WAL file names (one per line) and `.history` content (the whole input).
pub fn wal_names(data: &[u8]) {
    let text = text(data);
    for line in text.lines() {
        let kind = wal::classify(line);
        for segs_per_id in [1u64, 4, 256, 4096] {
            if let Some(seg) = pitr::parse_segment(line, segs_per_id) {
                assert_eq!(kind, Some(wal::WalKind::Segment), "{line:?}");
                assert_eq!(pitr::segment_name(seg, segs_per_id), line, "round trip");
            }
        }
    }
    for (tli, lsn) in pitr::parse_history(&text) {
        let _ = (tli, lsn);
    }
}

/// Keys of a repository listing (as S3 or a directory returns them), one per line with
/// an optional ` <raw-size>`; the text after the first empty line is the content of every
/// `.history` object. Retention plans over the raw keys; keys that can be files are also
/// written to a `file://` repository (beside one valid backup) and verified.
pub fn repository_listing(data: &[u8]) {
    let text = text(data);
    let (listing, history) = text.split_once("\n\n").unwrap_or((&text, ""));
    let entries: Vec<(&str, Option<&str>)> = listing
        .lines()
        .map(|l| match l.rsplit_once(' ') {
            Some((k, s)) => (k, Some(s)),
            None => (l, None),
        })
        .collect();
    let backups: Vec<catalog::BackupInfo> = serde_json::from_slice(GOOD_BACKUP_JSON)
        .map(|b| vec![b])
        .unwrap_or_default();
    // A listing names each key once.
    let keys: std::collections::BTreeSet<&str> = entries.iter().map(|(k, _)| *k).collect();
    let objects: Vec<ObjectMeta> = keys
        .iter()
        .map(|k| ObjectMeta {
            key: (*k).to_string(),
            size: 1,
            last_modified: Some(std::time::SystemTime::UNIX_EPOCH),
        })
        .collect();
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let (_dir, repo) = temp_repo();
    check_plan(&repo, &backups, &objects, now);
    runtime().block_on(async {
        put(
            &repo,
            "c/backups/good/backup.json",
            GOOD_BACKUP_JSON,
            Metadata::new(),
        )
        .await;
        for (key, size) in entries.iter().take(64) {
            // Only keys that name a file inside the repository's own directories.
            let Some((dir, name)) = key.strip_prefix("c/").and_then(|k| k.split_once('/')) else {
                continue;
            };
            let sane = matches!(dir, "wal" | "backups")
                && !name.is_empty()
                && name.len() < 200
                && !name.contains(['/', '\0'])
                && !name.starts_with('.');
            if !sane {
                continue;
            }
            let body = if name.ends_with(".history.zst") {
                compressed(history.as_bytes())
            } else {
                compressed(b"wal")
            };
            let meta = size.map(raw_size).unwrap_or_default();
            // A key the directory cannot hold (a file where a directory is) is skipped.
            let _ = try_put(&repo, key, &body, meta).await;
        }
        judge(&repo).await;
    });
}

/// A configuration file (`pgvigil.toml`), parsed and validated; errors must display.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "PGVIGIL_FUZZ").then(|| "value".to_string());
    if let Err(e) = crate::config::parse(text, Path::new("fuzz.toml"), &env) {
        let message = e.to_string();
        assert!(message.starts_with("fuzz.toml"), "{message}");
    }
}

/// A (decompressed) tar stream from the repository, unpacked by restore into an empty
/// directory: whatever it holds, nothing may appear beside that directory.
pub fn restore_unpack(data: &[u8]) {
    let (dir, _repo) = temp_repo();
    let target = dir.path().join("data");
    if let Err(e) = std::fs::create_dir(&target) {
        panic!("fuzz harness: {e}");
    }
    let _ = restore::unpack_tar(data, &target);
    let beside: Vec<String> = match std::fs::read_dir(dir.path()) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "data")
            .collect(),
        Err(e) => panic!("fuzz harness: {e}"),
    };
    assert!(beside.is_empty(), "unpacked outside the target: {beside:?}");
    // Issue 14 item 2 (refuse symlinks leaving the target, hard links, devices) will add
    // its assertions here: today the tar crate creates such symlinks.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_backup_json_is_valid() {
        let b: catalog::BackupInfo = serde_json::from_slice(GOOD_BACKUP_JSON).unwrap();
        assert_eq!(b.start_wal, "000000010000000000000001");
    }

    #[test]
    fn targets_hold_on_trivial_inputs() {
        for (name, target) in TARGETS {
            for input in [&b""[..], b"\n", b"\0\0\0\0", b"{}"] {
                let r = std::panic::catch_unwind(|| target(input));
                assert!(r.is_ok(), "{name} on {input:?}");
            }
        }
    }
}
