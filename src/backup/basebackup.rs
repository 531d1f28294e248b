//! A base backup: `pg_basebackup -D - -Ft -X fetch --checkpoint=fast` streamed through
//! multi-threaded zstd into one repository object, `backups/<id>/base.tar.zst`, hashed on
//! the fly; `backup.json` is written last. The pipeline runs the child's stdout through a
//! tar inspector (to keep `backup_label` and the end of `backup_manifest`), the encoder and
//! a bounded channel into the store's streamed put, so memory stays at a few MiB plus one
//! upload part whatever the database size.
//!
//! Failure anywhere (child exit, upload error, a killed process) leaves no `backup.json`,
//! so nothing lists as a backup; the streamed put removes its partial object (S3 aborts the
//! multipart upload).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::catalog::{self, BackupInfo, BackupKind, BackupObject};
use super::compress::HashingWriter;
use super::progress::Progress;
use super::{pitr, wal, Error};
use crate::config::Settings;
use crate::pg::binaries::{self, PgBinaries, Runner, Search};
use crate::pg::{connect, db_error_message, ConnectOptions};
use crate::store::{layout, ByteStream, Metadata, Repo};

/// Keeps `backup_label` whole and the last 64 KiB of `backup_manifest` while a tar stream
/// passes through (the manifest's WAL-Ranges are at its end). Any byte stream is accepted:
/// what is not a tar header is skipped, and what it keeps is bounded (a label of at most
/// [`MAX_LABEL`] bytes, a GNU long name of at most [`MAX_LONG_NAME`]), so a stream that is
/// not what pg_basebackup writes can neither panic it nor grow it without limit.
#[derive(Debug, Default)]
pub struct TarInspector {
    /// Bytes left in the current header block (512) being collected.
    header: Vec<u8>,
    /// Member data still to pass, including padding to 512.
    remaining: u64,
    /// Data bytes (without padding) still to pass for the current member.
    data_left: u64,
    capture: Option<&'static str>,
    /// A GNU long name's raw bytes, collected across chunks; it ends at its first NUL.
    long_name: Option<Vec<u8>>,
    label: Vec<u8>,
    manifest_tail: Vec<u8>,
    /// Where the whole `backup_manifest` goes, when it is to be kept (the next incremental
    /// builds on it); `manifest_spool_failed` when writing there failed.
    manifest_spool: Option<std::fs::File>,
    manifest_spool_failed: bool,
}

const MANIFEST_TAIL: usize = 64 * 1024;
/// A real `backup_label` is a few hundred bytes.
pub const MAX_LABEL: usize = 64 * 1024;
/// PATH_MAX: no file name in a data directory is longer.
pub const MAX_LONG_NAME: usize = 4096;

impl TarInspector {
    /// The `backup_label` seen so far (at most [`MAX_LABEL`] bytes).
    pub fn label(&self) -> &[u8] {
        &self.label
    }

    /// Keeps the whole `backup_manifest` in `file` as it passes.
    pub fn spool_manifest(&mut self, file: std::fs::File) {
        self.manifest_spool = Some(file);
    }

    /// The last bytes of `backup_manifest` seen so far (at most 128 KiB).
    pub fn manifest_tail(&self) -> &[u8] {
        &self.manifest_tail
    }

    /// Passes the next bytes of the stream.
    pub fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let data_n = usize::try_from(self.data_left).unwrap_or(usize::MAX).min(n);
                match self.capture {
                    Some("backup_label") => {
                        let room = MAX_LABEL.saturating_sub(self.label.len()).min(data_n);
                        self.label.extend_from_slice(&buf[..room]);
                    }
                    Some("backup_manifest") => {
                        if let Some(spool) = &mut self.manifest_spool {
                            self.manifest_spool_failed |= spool.write_all(&buf[..data_n]).is_err();
                        }
                        self.manifest_tail.extend_from_slice(&buf[..data_n]);
                        if self.manifest_tail.len() > 2 * MANIFEST_TAIL {
                            let cut = self.manifest_tail.len() - MANIFEST_TAIL;
                            self.manifest_tail.drain(..cut);
                        }
                    }
                    Some("longname") => {
                        // Raw bytes: where the stream is cut into chunks must not change the
                        // name (trimming NULs per chunk did, found by fuzzing tar_inspector).
                        let long = self.long_name.get_or_insert_with(Vec::new);
                        let room = MAX_LONG_NAME.saturating_sub(long.len()).min(data_n);
                        long.extend_from_slice(&buf[..room]);
                    }
                    _ => {}
                }
                self.data_left = self.data_left.saturating_sub(data_n as u64);
                self.remaining = self.remaining.saturating_sub(n as u64);
                buf = &buf[n..];
                continue;
            }
            let need = 512 - self.header.len();
            let n = need.min(buf.len());
            self.header.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.header.len() == 512 {
                self.start_member();
                self.header.clear();
            }
        }
    }

    fn start_member(&mut self) {
        let h = &self.header;
        if h.iter().all(|b| *b == 0) {
            return; // end-of-archive blocks
        }
        let field = |a: usize, b: usize| {
            String::from_utf8_lossy(&h[a..b])
                .trim_end_matches('\0')
                .to_string()
        };
        let size =
            u64::from_str_radix(field(124, 136).trim().trim_end_matches('\0'), 8).unwrap_or(0);
        let typeflag = h[156];
        let mut name = field(0, 100);
        let prefix = field(345, 500);
        if !prefix.is_empty() && &h[257..262] == b"ustar" {
            name = format!("{prefix}/{name}");
        }
        if let Some(long) = self.long_name.take() {
            let end = long.iter().position(|b| *b == 0).unwrap_or(long.len());
            name = String::from_utf8_lossy(&long[..end]).into_owned();
        }
        self.capture = match (typeflag, name.trim_start_matches("./")) {
            (b'L', _) => Some("longname"),
            (b'0' | 0, "backup_label") => Some("backup_label"),
            (b'0' | 0, "backup_manifest") => Some("backup_manifest"),
            _ => None,
        };
        self.data_left = size;
        self.remaining = size.div_ceil(512).saturating_mul(512);
    }
}

/// Facts parsed from `backup_label`.
#[derive(Debug, Default, PartialEq)]
pub struct Label {
    pub start_lsn: String,
    pub start_wal: String,
    pub timeline: u32,
    pub start_time: Option<DateTime<Utc>>,
}

/// Parses a `backup_label`; fields it does not find are empty (0, None). Never fails:
/// [`check_label`] decides whether the result can go into a `backup.json`.
pub fn parse_label(text: &str) -> Label {
    let mut l = Label::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
            let mut parts = rest.split_whitespace();
            l.start_lsn = parts.next().unwrap_or("").to_string();
            l.start_wal = rest
                .split("(file ")
                .nth(1)
                .map(|s| s.trim_end_matches(')').to_string())
                .unwrap_or_default();
        } else if let Some(rest) = line.strip_prefix("START TIMELINE: ") {
            l.timeline = rest.trim().parse().unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("START TIME: ") {
            // "2026-11-23 14:45:01 UTC": only trusted when the server logs in UTC/GMT.
            let rest = rest.trim();
            if let Some(ts) = rest
                .strip_suffix(" UTC")
                .or_else(|| rest.strip_suffix(" GMT"))
            {
                l.start_time = chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S")
                    .ok()
                    .map(|n| n.and_utc());
            }
        }
    }
    l
}

/// Whether a parsed label can be recorded in `backup.json`: a real LSN, a WAL segment
/// name and a timeline, which verify, restore and retention rely on.
pub fn check_label(l: &Label) -> Result<(), Error> {
    if catalog::parse_lsn(&l.start_lsn).is_none() {
        return Err(Error::Invalid(format!(
            "backup_label has no readable START WAL LOCATION ({:?}); is this a single-tablespace cluster?",
            l.start_lsn
        )));
    }
    if wal::classify(&l.start_wal) != Some(wal::WalKind::Segment) || l.timeline == 0 {
        return Err(Error::Invalid(format!(
            "backup_label names no WAL segment and timeline (file {:?}, timeline {})",
            l.start_wal, l.timeline
        )));
    }
    if label_segment_size(l).is_none() {
        return Err(Error::Invalid(format!(
            "backup_label's START WAL LOCATION {} is not in its file {} for any WAL segment size",
            l.start_lsn, l.start_wal
        )));
    }
    Ok(())
}

/// The WAL segment size (a power of two from 1 MiB to 1 GiB) for which the label's start
/// LSN lies in the segment its file names; None when there is none (a label that verify,
/// restore and retention could not place).
pub fn label_segment_size(l: &Label) -> Option<u64> {
    let lsn = catalog::parse_lsn(&l.start_lsn)?;
    let tli = u32::from_str_radix(l.start_wal.get(0..8)?, 16).ok()?;
    (20..=30).map(|bits| 1u64 << bits).find(|size| {
        let segs_per_id = (1u64 << 32) / size;
        pitr::segment_name((tli, lsn / size), segs_per_id) == l.start_wal
    })
}

/// The last End-LSN of the manifest's WAL-Ranges.
pub fn manifest_stop_lsn(tail: &str) -> Option<String> {
    let i = tail.rfind("\"End-LSN\"")?;
    let rest = tail.get(i + "\"End-LSN\"".len()..)?;
    let start = rest.find('"')? + 1;
    let end = start + rest.get(start..)?.find('"')?;
    Some(rest.get(start..end)?.to_string())
}

/// A `Write` that hands full chunks to the async side.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    progress: Arc<Progress>,
}

const CHUNK: usize = 1 << 20;

/// The step of the pipeline's error when it stopped because the upload failed first.
const UPLOAD_STOPPED: &str = "streaming the backup to the repository";

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.progress
            .stored
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

struct PipelineResult {
    label: Label,
    stop_lsn: Option<String>,
    raw_bytes: u64,
    /// The SHA-256 of each stream's stored bytes, in stream order.
    sha256: Vec<String>,
    /// The whole `backup_manifest` is in the spool file.
    manifest_kept: bool,
}

/// One output stream of a backup: a thread that compresses what it is given, hashes the
/// result and hands it to the upload, so that several streams compress in parallel.
struct StreamEncoder {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
    thread: std::thread::JoinHandle<std::io::Result<String>>,
}

/// What a [`StreamEncoder`] buffers before handing bytes to its thread.
const ENCODER_CHUNK: usize = 256 * 1024;

impl StreamEncoder {
    /// Starts the thread: zstd at `level` (with `threads` workers of its own when above
    /// 1), SHA-256 of the compressed bytes, then `sink`.
    fn start(sink: ChannelWriter, level: i32, threads: u32) -> std::io::Result<StreamEncoder> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let mut enc = zstd::stream::write::Encoder::new(HashingWriter::new(sink), level)?;
        if threads > 1 {
            enc.multithread(threads)?;
        }
        let thread = std::thread::spawn(move || -> std::io::Result<String> {
            for chunk in rx {
                enc.write_all(&chunk)?;
            }
            let (sha, _stored, mut sink) = enc.finish()?.finish();
            sink.flush()?;
            Ok(sha)
        });
        Ok(StreamEncoder {
            tx: Some(tx),
            buf: Vec::with_capacity(ENCODER_CHUNK),
            thread,
        })
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(ENCODER_CHUNK));
        match &self.tx {
            Some(tx) if tx.send(chunk).is_ok() => Ok(()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "a backup stream stopped",
            )),
        }
    }

    /// Flushes, ends the stream and returns the SHA-256 of what was stored (or the
    /// thread's error).
    fn finish(mut self) -> std::io::Result<String> {
        let sent = self.send();
        drop(self.tx.take());
        let result = self
            .thread
            .join()
            .map_err(|_| std::io::Error::other("a compression thread panicked"))?;
        sent.and(result)
    }
}

impl Write for StreamEncoder {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= ENCODER_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Runs pg_basebackup and splits its tar stream into one compressed stream per sender in
/// `txs` ([`super::split`]). Blocking: call from `spawn_blocking`.
fn pipeline(
    mut cmd: Command,
    level: i32,
    txs: Vec<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    progress: Arc<Progress>,
    manifest: Option<std::fs::File>,
) -> Result<PipelineResult, Error> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io {
            step: "starting pg_basebackup (is postgresql-client installed?)".into(),
            cause: e,
        })?;
    let stderr = child.stderr.take();
    let stderr_tail = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = s.read_to_string(&mut text);
        }
        crate::pg::process_tail(&text, 2000)
    });
    let Some(mut stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err(Error::Invalid("pg_basebackup has no stdout".into()));
    };
    let run = || -> std::io::Result<(TarInspector, Vec<String>, u64)> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        // Streams compress in parallel; one stream alone uses zstd's own workers.
        let per_stream = (cores / txs.len().max(1) as u32).max(1);
        let encoders = txs
            .iter()
            .map(|tx| {
                let sink = ChannelWriter {
                    tx: tx.clone(),
                    buf: Vec::with_capacity(CHUNK),
                    progress: progress.clone(),
                };
                StreamEncoder::start(sink, level, per_stream)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut split = super::split::TarSplitter::new(encoders);
        let mut inspector = TarInspector::default();
        if let Some(file) = manifest {
            inspector.spool_manifest(file);
        }
        let mut buf = vec![0u8; 256 * 1024];
        let mut raw = 0u64;
        loop {
            let n = stdout.read(&mut buf)?;
            if n == 0 {
                break;
            }
            raw += n as u64;
            progress.set(raw);
            inspector.feed(&buf[..n]);
            split.write_all(&buf[..n])?;
        }
        let shas = split
            .finish()?
            .into_iter()
            .map(StreamEncoder::finish)
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok((inspector, shas, raw))
    };
    let result = run();
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| Error::Io {
        step: "waiting for pg_basebackup".into(),
        cause: e,
    })?;
    // The upload side went away (its error is the cause; the child was killed by us).
    if let Err(e) = &result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Err(Error::Io {
                step: UPLOAD_STOPPED.into(),
                cause: std::io::Error::new(e.kind(), e.to_string()),
            });
        }
    }
    let stderr = stderr_tail.join().unwrap_or_default();
    if !status.success() {
        return Err(Error::Child {
            program: "pg_basebackup",
            status: status.to_string(),
            stderr,
        });
    }
    let (inspector, sha256, raw_bytes) = result.map_err(|e| Error::Io {
        step: "streaming the backup".into(),
        cause: e,
    })?;
    let label = parse_label(&String::from_utf8_lossy(&inspector.label));
    if label.start_lsn.is_empty() {
        return Err(Error::Invalid(
            "the backup stream has no backup_label; is this a single-tablespace cluster?".into(),
        ));
    }
    check_label(&label)?;
    let stop_lsn = manifest_stop_lsn(&String::from_utf8_lossy(&inspector.manifest_tail));
    Ok(PipelineResult {
        label,
        stop_lsn,
        raw_bytes,
        sha256,
        manifest_kept: inspector.manifest_spool.is_some() && !inspector.manifest_spool_failed,
    })
}

/// libpq connection string for pg_basebackup (the password goes through PGPASSWORD and the
/// TLS parameters through PGSSL*, never the command line).
fn conninfo(cfg: &tokio_postgres::Config) -> String {
    let mut parts = Vec::new();
    match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => parts.push(format!("host='{h}'")),
        Some(tokio_postgres::config::Host::Unix(p)) => {
            parts.push(format!("host='{}'", p.display()))
        }
        None => {}
    }
    if let Some(p) = cfg.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = cfg.get_user() {
        parts.push(format!("user='{}'", u.replace('\'', "\\'")));
    }
    parts.push("application_name=pgvigil-backup".into());
    parts.join(" ")
}

/// Who the server is: its database system and major, read from a primary.
pub struct Identity {
    pub system_identifier: u64,
    pub server_version_num: i32,
    /// Tablespaces besides pg_default and pg_global.
    pub extra_tablespaces: i64,
}

/// Reads the server's [`Identity`]; refused on a standby (`what` says what only the
/// primary's sidecar does).
pub async fn identity(settings: &Settings, what: &str) -> Result<Identity, Error> {
    let conn = connect(&ConnectOptions::from_settings(&settings.postgres), None)
        .await
        .map_err(|e| Error::Postgres(e.to_string()))?;
    let row = conn
        .client
        .query_one(
            "SELECT pg_is_in_recovery(), (SELECT system_identifier::text FROM pg_control_system()), \
                    (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))",
            &[],
        )
        .await
        .map_err(|e| Error::Postgres(db_error_message(&e)))?;
    let (in_recovery, sysid, extra_tablespaces): (bool, String, i64) =
        (row.get(0), row.get(1), row.get(2));
    if in_recovery {
        return Err(Error::Refused(format!(
            "this server is a standby: only the primary's sidecar {what}"
        )));
    }
    let system_identifier = sysid
        .parse()
        .map_err(|_| Error::Postgres(format!("bad system identifier {sysid:?}")))?;
    Ok(Identity {
        system_identifier,
        server_version_num: conn.server_version_num,
        extra_tablespaces,
    })
}

/// A backup taken, and why it is a full one when an incremental was asked for.
#[derive(Debug)]
pub struct Taken {
    pub info: BackupInfo,
    /// Why a full backup was taken instead of the incremental asked for.
    pub fallback: Option<String>,
}

/// Takes a base backup (`want`: full, or incremental on the newest backup when the server
/// and the repository allow it, else full with the reason) and commits it. `progress`
/// counts the uncompressed bytes read from pg_basebackup as done and the compressed bytes
/// as stored (its phase and expected size are the caller's, which knows the database size).
/// The caller holds the backup lease and passes the repository fenced by it
/// (`ops::Ops::backup`).
pub async fn run(
    settings: &Settings,
    repo: &Repo,
    progress: Arc<Progress>,
    want: BackupKind,
) -> Result<Taken, Error> {
    let id = identity(settings, "takes backups").await?;
    if id.extra_tablespaces > 0 {
        return Err(Error::Refused(format!(
            "the cluster has {} extra tablespace(s): pg_basebackup can stream only a single tablespace to stdout",
            id.extra_tablespaces
        )));
    }
    wal::check_binding(repo, id.system_identifier).await?;
    let (parent, mut fallback) = match want {
        BackupKind::Full => (None, None),
        BackupKind::Incremental => match incremental_parent(settings, repo, &id).await? {
            Ok(parent) => (Some(parent), None),
            Err(why) => (None, Some(why)),
        },
    };
    let mut result = take(settings, repo, progress.clone(), &id, parent.as_ref()).await;
    if let (Some(_), Err(e)) = (&parent, &result) {
        if refuses_incremental(e) {
            fallback = Some(format!("pg_basebackup refused the incremental backup: {e}"));
            progress.stored.store(0, Ordering::Relaxed);
            progress.set(0);
            result = take(settings, repo, progress, &id, None).await;
        }
    }
    result.map(|info| Taken { info, fallback })
}

/// The backup an incremental backup builds on: the newest one of this database system and
/// major on the newest timeline's history, whose chain is whole and whose manifest is
/// kept. `Ok(Err(why))` when an incremental backup cannot be taken and a full one is.
async fn incremental_parent(
    settings: &Settings,
    repo: &Repo,
    id: &Identity,
) -> Result<Result<BackupInfo, String>, Error> {
    let major = binaries::major_of_version_num(id.server_version_num);
    if major < 17 {
        return Ok(Err(format!(
            "the server is PostgreSQL {major}; incremental backups need PostgreSQL 17 or newer"
        )));
    }
    let conn = connect(&ConnectOptions::from_settings(&settings.postgres), None)
        .await
        .map_err(|e| Error::Postgres(e.to_string()))?;
    let summarize: String = conn
        .client
        .query_one("SHOW summarize_wal", &[])
        .await
        .map_err(|e| Error::Postgres(db_error_message(&e)))?
        .get(0);
    if summarize != "on" {
        return Ok(Err(
            "summarize_wal is off on the server (incremental backups need summarize_wal = on)"
                .into(),
        ));
    }
    let backups = catalog::list(repo).await?;
    let broken = catalog::judge(repo, &backups).await?;
    let lineage = super::timeline::current(repo).await?;
    let sysid = id.system_identifier.to_string();
    // The newest backup of this system on the timeline the server is on: an incremental
    // builds on it or not at all (a broken chain is not skipped over).
    let newest = backups.iter().rev().find(|b| {
        b.system_identifier == sysid
            && catalog::parse_lsn(&b.stop_lsn).is_some_and(|s| lineage.reaches(b.timeline, s))
    });
    Ok(match newest {
        None => Err("there is no backup of this server to build on".into()),
        Some(b) => match broken.get(&b.id) {
            Some(why) => Err(format!(
                "the newest backup {} cannot be built on: {why}",
                b.id
            )),
            None if b.pg_major() != major => Err(format!(
                "the newest backup {} is of PostgreSQL {}, the server is {major}",
                b.id,
                b.pg_major()
            )),
            None if b.manifest.is_none() => Err(format!(
                "the newest backup {} has no kept manifest to build on",
                b.id
            )),
            None => Ok(b.clone()),
        },
    })
}

/// Whether pg_basebackup failed because the server refused `--incremental` (WAL summaries
/// missing or incomplete, a manifest of another system or timeline): a full backup works.
fn refuses_incremental(e: &Error) -> bool {
    match e {
        Error::Child { stderr, .. } => {
            let s = stderr.to_lowercase();
            s.contains("incremental") || s.contains("wal summar") || s.contains("manifest")
        }
        _ => false,
    }
}

async fn take(
    settings: &Settings,
    repo: &Repo,
    progress: Arc<Progress>,
    server: &Identity,
    parent: Option<&BackupInfo>,
) -> Result<BackupInfo, Error> {
    let pg = &settings.postgres;
    let sysid = server.system_identifier.to_string();
    let pg_version_num = server.server_version_num;
    let (started, id) = fresh_id(repo).await?;
    let major = binaries::major_of_version_num(pg_version_num);
    let bins = PgBinaries::client(
        &Search::from_settings(pg),
        major,
        &format!("pg_basebackup of a PostgreSQL {major} server"),
    )
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let mut cmd = match bins.runner {
        // pg_basebackup is a client: on the host it runs as pgvigil's own user.
        Runner::Host => Command::new(bins.bin("pg_basebackup")),
        Runner::Chroot(_) => bins
            .command("pg_basebackup")
            .map_err(|e| Error::Invalid(e.to_string()))?,
    };
    cmd.args([
        "-D",
        "-",
        "-F",
        "tar",
        "-X",
        "fetch",
        "--checkpoint=fast",
        "--no-password",
        "-l",
    ])
    .arg(format!("pgvigil {id}"))
    .arg("-d")
    .arg(conninfo(&pg.dsn));
    let password = match &pg.password_file {
        Some(p) => Some(
            tokio::fs::read_to_string(p)
                .await
                .map_err(super::io(format!(
                    "reading postgres.password_file {}",
                    p.display()
                )))?
                .trim_end()
                .to_string(),
        ),
        None => pg
            .dsn
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    };
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    // The same TLS as pgvigil's own sessions, through the environment (never argv).
    for (name, value) in pg.tls.child_env() {
        cmd.env(name, value);
    }
    // An incremental backup: the parent's manifest, where pg_basebackup can read it.
    let parent_manifest = match parent {
        Some(p) => {
            let file = parent_manifest(repo, p, &bins).await?;
            let guest = bins
                .guest_path(file.path())
                .map_err(|e| Error::Invalid(e.to_string()))?;
            cmd.arg(format!("--incremental={}", guest.display()));
            Some(file)
        }
        None => None,
    };
    // The whole manifest is kept from 17 on, for the next incremental to build on.
    let spool = if major >= 17 {
        Some(tempfile::tempfile().map_err(super::io(
            "creating a temporary file for the backup manifest",
        ))?)
    } else {
        None
    };
    let spool_read = match &spool {
        Some(f) => Some(
            f.try_clone()
                .map_err(super::io("opening the manifest spool"))?,
        ),
        None => None,
    };
    let streams = settings.backup.streams;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..streams)
        .map(|_| mpsc::channel::<Result<Bytes, std::io::Error>>(8))
        .unzip();
    let level = settings.backup.compression_level;
    let worker = {
        let txs_on_error = txs.clone();
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            let r = pipeline(cmd, level, txs, progress, spool);
            if let Err(e) = &r {
                // Fail the uploads too, so nothing is committed.
                for tx in &txs_on_error {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
            }
            r
        })
    };
    let names: Vec<String> = (0..streams)
        .map(|i| layout::base_object(i, streams))
        .collect();
    let keys: Vec<String> = names
        .iter()
        .map(|n| repo.key(&layout::backup_object(&id, n)))
        .collect();
    let uploads = futures_util::future::join_all(keys.iter().zip(rxs).map(|(key, rx)| {
        let body: ByteStream = Box::pin(tokio_stream_from(rx));
        repo.store.put_stream(key, body, Metadata::new())
    }))
    .await;
    let piped = worker
        .await
        .map_err(|e| Error::Invalid(format!("backup task: {e}")))?;
    let uploaded: Result<Vec<u64>, _> = uploads.into_iter().collect();
    // The child's failure is the cause to report, even if the upload failed because of it;
    // unless the child was stopped because the upload failed first (a full disk, S3 gone).
    // Whatever was stored of a failed backup is removed (nothing lists it: no backup.json).
    let failed = match (piped, uploaded) {
        (Ok(p), Ok(stored)) => Ok((p, stored)),
        (Err(Error::Io { step, .. }), Err(e)) if step == UPLOAD_STOPPED => Err(e.into()),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.into()),
    };
    let (piped, stored) = match failed {
        Ok(done) => done,
        Err(e) => {
            for key in &keys {
                repo.store.delete(key).await.ok();
            }
            return Err(e);
        }
    };
    drop(parent_manifest);
    let manifest = match spool_read {
        Some(file) if piped.manifest_kept => keep_manifest(repo, &id, file).await,
        _ => None,
    };
    let stored_bytes: u64 = stored.iter().sum();
    let objects: Vec<BackupObject> = names
        .into_iter()
        .zip(stored)
        .zip(piped.sha256.iter().cloned())
        .map(|((name, stored_bytes), sha256)| BackupObject {
            name,
            stored_bytes,
            sha256,
        })
        .collect();
    let stopped = Utc::now();
    let info = BackupInfo {
        format: 1,
        id: id.clone(),
        pgvigil_version: crate::VERSION.into(),
        system_identifier: sysid,
        pg_version_num,
        timeline: piped.label.timeline,
        start_lsn: piped.label.start_lsn.clone(),
        stop_lsn: piped
            .stop_lsn
            .unwrap_or_else(|| piped.label.start_lsn.clone()),
        start_wal: piped.label.start_wal.clone(),
        start_time: piped.label.start_time.unwrap_or(started),
        stop_time: stopped,
        duration_seconds: (stopped - started).num_milliseconds() as f64 / 1000.0,
        raw_bytes: piped.raw_bytes,
        stored_bytes,
        compression: "zstd".into(),
        objects,
        kind: if parent.is_some() {
            BackupKind::Incremental
        } else {
            BackupKind::Full
        },
        parent: parent.map(|p| p.id.clone()),
        manifest,
    };
    catalog::commit(repo, &info).await?;
    Ok(info)
}

/// A backup id (its UTC start time to the second) that no backup in the repository has
/// yet: an incremental taken right after a full one waits for the next second.
async fn fresh_id(repo: &Repo) -> Result<(DateTime<Utc>, String), Error> {
    // Bounded: a few seconds at most.
    for _ in 0..5 {
        let now = Utc::now();
        let id = now.format("%Y%m%dT%H%M%SZ").to_string();
        if repo
            .store
            .list(&repo.key(&layout::backup_prefix(&id)))
            .await?
            .is_empty()
        {
            return Ok((now, id));
        }
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    }
    Err(Error::Invalid(
        "no free backup id: a backup was started every second for five seconds".into(),
    ))
}

/// Writes `parent`'s manifest to a temporary file the binaries can read (inside their
/// chroot if they run in one), checked against the SHA-256 in its `backup.json`.
async fn parent_manifest(
    repo: &Repo,
    parent: &BackupInfo,
    bins: &PgBinaries,
) -> Result<tempfile::NamedTempFile, Error> {
    let object = parent
        .manifest
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("backup {} has no manifest kept", parent.id)))?;
    let key = repo.key(&layout::backup_object(&parent.id, &object.name));
    let body = repo.store.get_bytes(&key).await?;
    let sha = super::compress::sha256_hex(&body);
    if sha != object.sha256 {
        return Err(Error::Refused(format!(
            "{key} in {} is corrupt: sha256 {sha}, recorded {}",
            repo.store.describe(),
            object.sha256
        )));
    }
    let raw = tokio::task::spawn_blocking(move || super::compress::decompress(&body))
        .await
        .map_err(|e| Error::Invalid(format!("decompression task: {e}")))?
        .map_err(super::io(format!("decompressing {key}")))?;
    let dir = bins.default_parent_dir().unwrap_or_else(std::env::temp_dir);
    let mut file = tempfile::Builder::new()
        .prefix("pgvigil-manifest-")
        .tempfile_in(&dir)
        .map_err(super::io(format!(
            "creating a temporary file in {}",
            dir.display()
        )))?;
    file.write_all(&raw)
        .map_err(super::io(format!("writing {}", file.path().display())))?;
    bins.chown_to_server_user(file.path())
        .map_err(super::io(format!("chown {}", file.path().display())))?;
    Ok(file)
}

/// Stores the manifest spooled during the backup as `backup_manifest.zst` beside it; None
/// (logged) when that fails: the backup is good, only the next incremental falls back to
/// a full one.
async fn keep_manifest(repo: &Repo, id: &str, mut file: std::fs::File) -> Option<BackupObject> {
    use std::io::Seek;
    let key = repo.key(&layout::backup_object(id, layout::MANIFEST_OBJECT));
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        file.rewind()?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)?;
        super::compress::compress(&raw, 3)
    })
    .await;
    let body = match read {
        Ok(Ok(body)) => Bytes::from(body),
        other => {
            tracing::warn!(event = "backup.manifest.failed", backup = id, error = ?other.err(), "could not keep the backup manifest; the next incremental backup will be a full one");
            return None;
        }
    };
    let object = BackupObject {
        name: layout::MANIFEST_OBJECT.into(),
        stored_bytes: 0,
        sha256: super::compress::sha256_hex(&body),
    };
    match repo
        .store
        .put_stream(
            &key,
            Box::pin(futures_util::stream::iter([Ok(body)])),
            Metadata::new(),
        )
        .await
    {
        Ok(stored) => Some(BackupObject {
            stored_bytes: stored,
            ..object
        }),
        Err(e) => {
            tracing::warn!(event = "backup.manifest.failed", backup = id, error = %e, "could not keep the backup manifest; the next incremental backup will be a full one");
            None
        }
    }
}

/// Adapts an mpsc receiver into a stream.
fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backup_label() {
        let l = parse_label(
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n\
             BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-23 14:45:01 UTC\nLABEL: x\nSTART TIMELINE: 1\n",
        );
        assert_eq!(l.start_lsn, "0/2000028");
        assert_eq!(l.start_wal, "000000010000000000000002");
        assert_eq!(l.timeline, 1);
        assert_eq!(
            l.start_time.map(|t| t.to_rfc3339()),
            Some("2026-11-23T14:45:01+00:00".into())
        );
        assert_eq!(
            parse_label("START TIME: 2026-11-23 14:45:01 CET\n").start_time,
            None
        );
    }

    #[test]
    fn a_label_without_a_segment_name_is_refused_before_backup_json() {
        let good = parse_label(
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n",
        );
        assert!(check_label(&good).is_ok());
        assert_eq!(label_segment_size(&good), Some(16 << 20));
        // 1 MiB segments: 0/2000028 is in segment 0x20.
        let small = parse_label(
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000020)\nSTART TIMELINE: 1\n",
        );
        assert_eq!(label_segment_size(&small), Some(1 << 20));
        for text in [
            "START WAL LOCATION: 0/2000028 (file 0000)\nSTART TIMELINE: 1\n",
            "START WAL LOCATION: 0/2000028\nSTART TIMELINE: 1\n",
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
            "START WAL LOCATION: x/y (file 000000010000000000000002)\nSTART TIMELINE: 1\n",
            // Found by the fuzzer: a segment number no segment size gives this LSN.
            "START WAL LOCATION: 0/2000028 (file 000000010000000000080002)\nSTART TIMELINE: 1\n",
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000003)\nSTART TIMELINE: 1\n",
        ] {
            let e = check_label(&parse_label(text)).unwrap_err().to_string();
            assert!(e.contains("backup_label"), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_inspector_bounds_what_it_keeps() {
        // A GNU long name and a label far larger than any real one.
        let mut ar = tar::Builder::new(Vec::new());
        let long = "d/".repeat(300_000) + "backup_label";
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o600);
        ar.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        let big = vec![b'S'; 1 << 20];
        h.set_size(big.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        ar.append_data(&mut h, "backup_label", &big[..]).unwrap();
        let data = ar.into_inner().unwrap();
        let mut insp = TarInspector::default();
        for chunk in data.chunks(100_000) {
            insp.feed(chunk);
        }
        assert_eq!(insp.label().len(), MAX_LABEL);
        assert!(insp.long_name.is_none());
        // A header whose size field is not octal counts as an empty member.
        let mut junk = vec![b'x'; 512];
        junk[124..136].copy_from_slice(b"zzzzzzzzzzz\0");
        insp.feed(&junk);
        assert_eq!((insp.remaining, insp.data_left), (0, 0));
    }

    #[test]
    fn finds_stop_lsn_in_manifest_tail() {
        let tail = r#"..."WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138" }
],
"Manifest-Checksum": "abc"}"#;
        assert_eq!(manifest_stop_lsn(tail).as_deref(), Some("0/2000138"));
    }

    #[test]
    fn tar_inspector_captures_members_across_chunks() {
        let mut ar = tar::Builder::new(Vec::new());
        for (name, body) in [
            ("PG_VERSION", &b"15\n"[..]),
            (
                "backup_label",
                b"START WAL LOCATION: 0/5 (file 000000010000000000000001)\n",
            ),
            ("backup_manifest", b"{\"End-LSN\": \"0/9\"}"),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            ar.append_data(&mut h, name, body).unwrap();
        }
        let data = ar.into_inner().unwrap();
        let mut insp = TarInspector::default();
        for chunk in data.chunks(7) {
            insp.feed(chunk);
        }
        assert!(String::from_utf8_lossy(&insp.label).starts_with("START WAL LOCATION: 0/5"));
        assert_eq!(
            manifest_stop_lsn(&String::from_utf8_lossy(&insp.manifest_tail)).as_deref(),
            Some("0/9")
        );
    }
}
