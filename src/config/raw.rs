//! The serde mirror of `pgvigil.toml`. Pure data: every field has the default documented
//! in `docs/configuration.md` and ARCHITECTURE.md, unknown keys are rejected, and nothing
//! here is validated beyond its TOML type. `settings.rs` turns this into checked values.

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub server: ServerConfig,
    pub postgres: PostgresConfig,
    pub pgbouncer: PgbouncerConfig,
    pub postgrest: PostgrestConfig,
    pub api_proxy: ApiProxyConfig,
    pub audit: AuditConfig,
    pub storage: StorageConfig,
    pub backup: BackupConfig,
    pub pitr: PitrConfig,
    pub drill: DrillConfig,
    pub retention: RetentionConfig,
    pub offsite: OffsiteConfig,
}

/// `[server]`: the HTTP endpoint serving /metrics, /healthz and /readyz.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address. Default `0.0.0.0:9432`.
    pub listen: String,
    /// File holding a bearer token (at least 32 bytes) that /metrics requires. Default: none.
    pub bearer_token_file: Option<String>,
    /// Prometheus exporter-toolkit web configuration file (YAML: TLS, client CA, bcrypt
    /// basic auth, response headers). Default: none. `pgvigil run --web.config.file` overrides it.
    pub web_config_file: Option<String>,
    /// Whether /healthz and /readyz require authentication too. Default `false` (kubelet probes).
    pub protect_probes: bool,
    /// PEM certificate chain for HTTPS; re-read when the file changes. Default: none (HTTP).
    pub tls_cert_file: Option<String>,
    /// PEM private key for HTTPS (mode 0600 or stricter); re-read when it changes.
    pub tls_key_file: Option<String>,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS).
    pub tls_client_ca_file: Option<String>,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    pub tls_min_version: String,
    /// How long a client may take for the TLS handshake and a request's headers. Default `10s`.
    pub header_read_timeout: String,
    /// A connection with no bytes moving for this long is closed. Default `60s`.
    pub idle_timeout: String,
    /// Connections served at once; more are accepted and closed at once. Default 1024.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9432".into(),
            bearer_token_file: None,
            web_config_file: None,
            protect_probes: false,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_min_version: "1.2".into(),
            header_read_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            max_connections: 1024,
        }
    }
}

/// `[postgres]`: the server pgvigil watches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// libpq URL or key=value DSN. Required. `${ENV}` references are expanded.
    pub dsn: Option<String>,
    /// File holding the password, re-read on every connect (Kubernetes secret rotation).
    pub password_file: Option<String>,
    /// Server-side `statement_timeout` on every session. Default `5s`.
    pub statement_timeout: String,
    /// Server-side `lock_timeout` on every session. Default `1s`.
    pub lock_timeout: String,
    /// How long a connection attempt may take. Default `1s`, so a scrape during an
    /// outage answers `pg_up 0` promptly.
    pub connect_timeout: String,
    /// Databases for per-database collectors; empty = every connectable non-template db.
    pub databases: Vec<String>,
    /// Cache time of expensive collectors (sizes, per-table, statements). Default `5m`.
    pub slow_collectors_interval: String,
    /// Per-database connections used at once by per-database collectors. Default 2.
    pub max_database_connections: usize,
    /// Tables per database in `pg_stat_user_tables_*`, largest first. Default 50.
    pub top_tables: usize,
    /// Statements in `pg_stat_statements_*`, by total time. Default 50.
    pub top_statements: usize,
    /// Put postgres_exporter 0.19's `server="host:port"` label on the families it puts it
    /// on (settings, activity, replication, slots, archiver, conflicts). Default false.
    pub server_label: bool,
    /// Custom SQL metrics.
    pub queries: Vec<QueryConfig>,
    /// PostgreSQL bin directories to pick binaries from, e.g.
    /// `["/usr/lib/postgresql/17/bin"]`; empty (default) = every
    /// `/usr/lib/postgresql/<major>/bin`. The server's major chooses among them.
    pub bindir: Vec<String>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            dsn: None,
            password_file: None,
            statement_timeout: "5s".into(),
            lock_timeout: "1s".into(),
            connect_timeout: "1s".into(),
            databases: Vec::new(),
            slow_collectors_interval: "5m".into(),
            max_database_connections: 2,
            top_tables: 50,
            top_statements: 50,
            server_label: false,
            queries: Vec::new(),
            bindir: Vec::new(),
        }
    }
}

/// `[[postgres.queries]]`: one custom SQL metric family (or one per value column).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Metric name; with several value columns, `<name>_<column>`.
    pub name: String,
    /// The query. Read-only; runs under the session's statement_timeout.
    pub sql: String,
    /// HELP text. Default: "Custom query <name>".
    pub help: Option<String>,
    /// Columns whose text values become labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Numeric columns that become samples. Default `["value"]`.
    #[serde(default)]
    pub values: Vec<String>,
    /// `gauge` (default) or `counter`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Database to run in. Default: the DSN's database.
    #[serde(default)]
    pub database: Option<String>,
    /// How long a result is reused. Default `1m`.
    #[serde(default)]
    pub interval: Option<String>,
}

/// `[pgbouncer]`: PgBouncer admin consoles to scrape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgbouncerConfig {
    /// Admin console DSNs (database `pgbouncer`). Several PgBouncer processes allowed.
    pub dsns: Vec<String>,
    /// Connect and per-command timeout. Default `1s`.
    pub timeout: String,
}

impl Default for PgbouncerConfig {
    fn default() -> Self {
        Self {
            dsns: Vec::new(),
            timeout: "1s".into(),
        }
    }
}

/// `[postgrest]`: PostgREST admin server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgrestConfig {
    /// Base URL of PostgREST's admin server (`admin-server-port`).
    pub admin_url: Option<String>,
    /// Timeout of each admin request. Default `1s`.
    pub timeout: String,
}

impl Default for PostgrestConfig {
    fn default() -> Self {
        Self {
            admin_url: None,
            timeout: "1s".into(),
        }
    }
}

/// `[api_proxy]`: reverse proxy in front of PostgREST.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiProxyConfig {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub role_claim_key: String,
    pub anon_role: String,
    pub jwt_secret_file: Option<String>,
    /// A JSON Web Key Set to verify tokens with: `https://`, or `http://` on loopback.
    pub jwks_url: Option<String>,
    /// How often the key set is fetched again. Default `5m`.
    pub jwks_refresh: String,
    /// PEM CA bundle trusted for an `https://` upstream and `jwks_url`; default: system roots.
    pub upstream_ca_file: Option<String>,
    /// The `aud` a verified token must carry (one of, if the claim is a list). Default: unchecked.
    pub jwt_audience: Option<String>,
    /// The `iss` a verified token must carry. Default: unchecked.
    pub jwt_issuer: Option<String>,
    /// Clock skew allowed for `exp` and `nbf`. Default `30s`.
    pub jwt_leeway: String,
    /// Whether a verified token must have `exp`. Default `true`.
    pub require_exp: bool,
    pub max_routes: usize,
    /// How long to wait for the upstream's response headers. Default `60s`.
    pub upstream_timeout: String,
    /// Largest request body passed upstream; larger ones get 413. Default 10 MiB.
    pub max_body_bytes: u64,
    /// PEM certificate chain for HTTPS; re-read when the file changes. Default: none (HTTP).
    pub tls_cert_file: Option<String>,
    /// PEM private key for HTTPS (mode 0600 or stricter); re-read when it changes.
    pub tls_key_file: Option<String>,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS).
    pub tls_client_ca_file: Option<String>,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    pub tls_min_version: String,
    /// How long a client may take for the TLS handshake and a request's headers. Default `10s`.
    pub header_read_timeout: String,
    /// A connection with no bytes moving for this long is closed. Default `60s`.
    pub idle_timeout: String,
    /// Connections served at once; more are accepted and closed at once. Default 1024.
    pub max_connections: usize,
    /// Threads serving the proxy, each with its own event loop, socket (`SO_REUSEPORT`) and
    /// upstream connection pool; 0 serves it on the daemon's shared runtime. Default: one
    /// per CPU, at most 16.
    pub workers: Option<usize>,
}

impl Default for ApiProxyConfig {
    fn default() -> Self {
        Self {
            listen: None,
            upstream: None,
            role_claim_key: ".role".into(),
            anon_role: "anon".into(),
            jwt_secret_file: None,
            jwks_url: None,
            jwks_refresh: "5m".into(),
            upstream_ca_file: None,
            jwt_audience: None,
            jwt_issuer: None,
            jwt_leeway: "30s".into(),
            require_exp: true,
            max_routes: 200,
            upstream_timeout: "60s".into(),
            max_body_bytes: 10 * 1024 * 1024,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_min_version: "1.2".into(),
            header_read_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            max_connections: 1024,
            workers: None,
        }
    }
}

/// `[audit]`: the JSON audit log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub stdout: bool,
    pub file: Option<String>,
    pub table: Option<String>,
    pub redact_columns: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            stdout: true,
            file: None,
            table: None,
            redact_columns: ["password", "password_hash", "token", "secret"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// `[storage]`: the backup repository.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub url: String,
    pub cluster: String,
    /// How long a job's lease lives without renewal (renewed every third of it).
    pub lease_ttl: String,
    pub residency: String,
    pub allowed_regions: Option<Vec<String>>,
    pub s3: S3Config,
    pub encryption: Option<EncryptionConfig>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "file:///var/lib/pgvigil/repo".into(),
            cluster: "default".into(),
            lease_ttl: "5m".into(),
            residency: "eu".into(),
            allowed_regions: None,
            s3: S3Config::default(),
            encryption: None,
        }
    }
}

/// `[storage.encryption]`: client-side encryption of backup and WAL objects.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// The id recorded in every object sealed with `key`.
    pub key_id: String,
    pub key: Option<String>,
    pub key_file: Option<String>,
    /// Keys that only decrypt: what older objects were sealed with.
    #[serde(default)]
    pub old_keys: Vec<OldKeyConfig>,
    /// Read objects written before encryption was turned on.
    #[serde(default)]
    pub accept_unencrypted: bool,
}

/// One entry of `storage.encryption.old_keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldKeyConfig {
    pub key_id: String,
    pub key: Option<String>,
    pub key_file: Option<String>,
}

// Hand-written so that a key never reaches a log through `{:?}`.
impl std::fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionConfig")
            .field("key_id", &self.key_id)
            .field("key_file", &self.key_file)
            .field("old_keys", &self.old_keys)
            .field("accept_unencrypted", &self.accept_unencrypted)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for OldKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OldKeyConfig")
            .field("key_id", &self.key_id)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// `[storage.s3]`: S3 client settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub object_lock: String,
    pub ca_file: Option<String>,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            region: None,
            endpoint: None,
            force_path_style: false,
            object_lock: "off".into(),
            ca_file: None,
        }
    }
}

/// `[backup]`: scheduled base backups.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    pub schedule: String,
    pub compression_level: i32,
    /// 5-field crontab (UTC) of incremental backups (PostgreSQL 17+), or "off".
    pub incremental_schedule: String,
    /// Take a first backup soon after start when the repository has none (primary only).
    pub initial_backup: bool,
    /// The daemon archives ready WAL files ahead of `archive_command`.
    pub archive_ahead: bool,
    /// Parallel uploads of the daemon's archiving ahead.
    pub archive_workers: usize,
    /// The server's `pg_wal` as the daemon sees it (default: `data_directory`/pg_wal).
    pub wal_directory: Option<String>,
    /// Parallel streams a base backup is split into (restores unpack them in parallel).
    pub streams: usize,
    /// WAL segments `wal-fetch` downloads ahead of recovery (0 turns read-ahead off).
    pub wal_prefetch: usize,
    /// Parallel downloads of the read-ahead.
    pub wal_prefetch_workers: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            schedule: "0 2 * * *".into(),
            incremental_schedule: "off".into(),
            compression_level: 3,
            initial_backup: true,
            archive_ahead: true,
            archive_workers: 2,
            wal_directory: None,
            streams: 4,
            wal_prefetch: 8,
            wal_prefetch_workers: 4,
        }
    }
}

/// `[pitr]`: continuity checks and the heartbeat.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PitrConfig {
    pub check_interval: String,
    pub heartbeat_interval: String,
    pub rpo: String,
}

impl Default for PitrConfig {
    fn default() -> Self {
        Self {
            check_interval: "5m".into(),
            heartbeat_interval: "10s".into(),
            rpo: "5m".into(),
        }
    }
}

/// `[drill]`: automated restore drills.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillConfig {
    pub schedule: String,
    pub work_dir: String,
    pub amcheck: bool,
    pub checks: Vec<DrillCheckConfig>,
}

impl Default for DrillConfig {
    fn default() -> Self {
        Self {
            schedule: "0 4 1 * *".into(),
            work_dir: "/var/lib/pgvigil/drill".into(),
            amcheck: true,
            checks: Vec::new(),
        }
    }
}

/// `[[drill.checks]]`: a user SQL check run on the restored cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillCheckConfig {
    pub name: String,
    pub sql: String,
    pub expect: String,
}

/// `[retention]`: recovery-window retention.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub recovery_window: String,
    pub min_backups: usize,
    pub schedule: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            recovery_window: "35days".into(),
            min_backups: 1,
            schedule: "30 3 * * *".into(),
        }
    }
}

/// `[offsite]`: weekly copy to a second repository.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffsiteConfig {
    /// The second repository (`s3://bucket/prefix` or `file:///path`). Default: none.
    pub url: Option<String>,
    /// 5-field crontab, UTC, or "off". Default `0 5 * * 0` (Sundays 05:00).
    pub schedule: String,
    /// S3 client settings of the second repository. Default: `[storage.s3]`'s.
    pub s3: Option<S3Config>,
}

impl Default for OffsiteConfig {
    fn default() -> Self {
        Self {
            url: None,
            schedule: "0 5 * * 0".into(),
            s3: None,
        }
    }
}
