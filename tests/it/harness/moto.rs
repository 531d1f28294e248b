//! A real S3 HTTP server on loopback: `moto_server` (PyPI `moto[server]`) on a free port,
//! killed on drop. Tests talk to it through `S3Store::connect_with` and static credentials
//! (moto accepts any), never through process environment variables.
//!
//! Needs moto 5.2.5 or later: 5.2.0 and 5.2.1 answer CompleteMultipartUpload with the wrong
//! XML root element (`CompleteMultipartUploadResponse`, getmoto/moto#10055), which the Rust
//! SDK rejects, so every multipart put would fail.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgvigil::config::S3Settings;
use pgvigil::store::s3::{S3Store, StaticCredentials};

/// The region every test bucket lives in.
pub const REGION: &str = "eu-central-1";

/// The oldest moto these tests are known to work with.
const MIN_MOTO: (u32, u32, u32) = (5, 2, 5);

/// Fails with the upgrade command if the moto next to `moto_server` is too old (checked
/// once per test run; skipped if its version cannot be read).
fn check_moto_version() {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        // The python3 beside moto_server (a venv or pyenv shim directory) is the one that
        // runs it; otherwise the one on PATH.
        let beside = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .find(|dir| dir.join("moto_server").is_file())
                .map(|dir| dir.join("python3"))
                .filter(|p| p.is_file())
        });
        let python = beside.unwrap_or_else(|| PathBuf::from("python3"));
        let Ok(out) = Command::new(&python)
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('moto'))",
            ])
            .output()
        else {
            return Ok(());
        };
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let parsed: Vec<u32> = version.split('.').map_while(|p| p.parse().ok()).collect();
        if let [a, b, c, ..] = parsed[..] {
            if (a, b, c) < MIN_MOTO {
                return Err(format!(
                    "moto {version} is too old for these tests (5.2.0 and 5.2.1 break multipart \
                     uploads, getmoto/moto#10055): upgrade it with \
                     `pip install -U 'moto[server]>=5.2.5'`"
                ));
            }
        }
        Ok(())
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
}

/// A running moto_server.
pub struct MotoServer {
    child: Option<Child>,
    pub port: u16,
    /// moto's request log (stderr), shown when it fails to start.
    _log_dir: tempfile::TempDir,
    log: PathBuf,
}

impl MotoServer {
    /// Starts moto_server on 127.0.0.1 and a free port and waits (at most 30 s) until it
    /// answers HTTP.
    pub async fn start() -> Self {
        check_moto_version();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
            l.local_addr()
                .unwrap_or_else(|e| panic!("local_addr: {e}"))
                .port()
        };
        let log_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = log_dir.path().join("moto.log");
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "moto_server is not on PATH: install it with `pip install 'moto[server]'` or \
                 `make deps`"
            ),
            Err(e) => panic!("starting moto_server: {e}"),
        };
        let mut server = Self {
            child: Some(child),
            port,
            _log_dir: log_dir,
            log,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/moto-api/", self.endpoint());
        let client = super::http_client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("moto_server exited with {status}:\n{}", self.log_tail());
                }
            }
            match client.get(&url).send().await {
                Ok(_) => return,
                Err(e) if tokio::time::Instant::now() >= deadline => panic!(
                    "moto_server did not answer {url} within 30 s: {e}\n{}",
                    self.log_tail()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `[storage.s3]` pointing at this server.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            region: Some(REGION.into()),
            endpoint: Some(self.endpoint()),
            force_path_style: true,
            ..S3Settings::default()
        }
    }

    /// Test credentials (moto accepts any).
    pub fn credentials() -> StaticCredentials {
        StaticCredentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        }
    }

    /// An `S3Store` on `bucket`/`prefix` of this server.
    pub async fn store(&self, bucket: &str, prefix: &str) -> S3Store {
        S3Store::connect_with(bucket, prefix, &self.settings(), Some(Self::credentials()))
            .await
            .unwrap_or_else(|e| panic!("connecting to {bucket}: {e}"))
    }

    /// A plain SDK client for what the store does not offer (creating buckets, listing
    /// multipart uploads).
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_in(REGION)
    }

    /// A plain SDK client signing for `region` (moto, like S3, only creates a bucket in
    /// the region the request is addressed to).
    pub fn client_in(&self, region: &str) -> aws_sdk_s3::Client {
        let creds = Self::credentials();
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(region.to_string()))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                creds.access_key_id,
                creds.secret_access_key,
                None,
                None,
                "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// The environment that gives a pgvigil process (or a postmaster's archive_command)
    /// these credentials through the standard AWS chain.
    pub fn aws_env() -> Vec<(String, String)> {
        let c = Self::credentials();
        vec![
            ("AWS_ACCESS_KEY_ID".into(), c.access_key_id),
            ("AWS_SECRET_ACCESS_KEY".into(), c.secret_access_key),
            // Never fall back to the instance metadata service (not loopback).
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// A `[storage]` section for `url` (`s3://bucket/prefix`) on this server, the config
    /// claiming eu-central-1; `extra_s3` is appended to `[storage.s3]`.
    pub fn storage_toml_at(&self, url: &str, extra_s3: &str) -> String {
        format!(
            "[storage]\nurl = \"{url}\"\n[storage.s3]\nregion = \"{REGION}\"\nendpoint = \"{}\"\nforce_path_style = true\n{extra_s3}",
            self.endpoint()
        )
    }

    /// A `[storage]` section for `s3://<bucket>/pgvigil` on this server.
    pub fn storage_toml(&self, bucket: &str, extra_s3: &str) -> String {
        self.storage_toml_at(&format!("s3://{bucket}/pgvigil"), extra_s3)
    }

    /// Every key in `bucket` (one listing page: tests keep buckets small).
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        self.keys_under(bucket, "").await
    }

    /// The keys in `bucket` that start with `prefix` (one listing page).
    pub async fn keys_under(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// Creates `bucket` in `region`.
    pub async fn create_bucket(&self, bucket: &str, region: &str) {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        let mut req = self.client_in(region).create_bucket().bucket(bucket);
        // us-east-1 is the one region whose LocationConstraint must be absent.
        if region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        if let Err(e) = req.send().await {
            panic!(
                "creating bucket {bucket}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            );
        }
    }

    /// Kills the server now (for tests of an unreachable store).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
