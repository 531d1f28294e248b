//! The fixture of the S3 fault and lease tests: moto with a bucket, the fault-injecting
//! relay in front of it, an archiving primary whose `archive_command` goes through the
//! relay, and two config files for the same repository: `relay.toml` (through the relay,
//! where the test injects faults) and `direct.toml` (straight to moto, for checking what is
//! really there and for runs that must not meet the faults).

use super::backup::{archiving_cluster_env, write_config};
use super::moto::{MotoServer, REGION};
use super::relay::Relay;

/// `[storage]` for `url` at `endpoint`: `keys` inside `[storage]` (e.g. `lease_ttl`), then
/// `[storage.s3]`, then `extra` (later sections).
pub fn s3_storage_at(url: &str, endpoint: &str, keys: &str, extra: &str) -> String {
    format!(
        "[storage]\nurl = \"{url}\"\n{keys}[storage.s3]\nregion = \"{REGION}\"\nendpoint = \"{endpoint}\"\nforce_path_style = true\n{extra}"
    )
}

/// `[offsite]` for `s3://<bucket>/offsite` at `endpoint`.
pub fn s3_offsite(bucket: &str, endpoint: &str) -> String {
    format!(
        "[offsite]\nurl = \"s3://{bucket}/offsite\"\n[offsite.s3]\nregion = \"{REGION}\"\nendpoint = \"{endpoint}\"\nforce_path_style = true\n"
    )
}

/// What the fixture started; everything stops when it drops.
pub struct S3Relay {
    pub moto: MotoServer,
    pub relay: Relay,
    pub owner: tempfile::TempDir,
    pub pg: pgvigil::pg::TempCluster,
    pub db: tokio_postgres::Client,
    /// `-c` for the configuration through the relay.
    pub via_relay: String,
    /// `-c` for the configuration straight to moto.
    pub direct: String,
    /// The AWS credentials of every pgvigil process.
    pub env: Vec<(String, String)>,
    bucket: String,
}

impl S3Relay {
    /// The repository `s3://<bucket>/pgvigil`: `keys` go into `[storage]` of both configs,
    /// `extra` after it in both, `relay_extra` only in `relay.toml`.
    pub async fn start(bucket: &str, keys: &str, extra: &str, relay_extra: &str) -> Self {
        let moto = MotoServer::start().await;
        moto.create_bucket(bucket, REGION).await;
        let relay = Relay::in_front_of(&moto).await;
        let owner = super::postgres_dir();
        let env = MotoServer::aws_env();
        let via_relay = owner.path().join("relay.toml");
        let direct = owner.path().join("direct.toml");
        let pg = archiving_cluster_env(&via_relay, env.clone()).await;
        let dsn = pg.dsn("postgres");
        let url = format!("s3://{bucket}/pgvigil");
        write_config(
            &via_relay,
            &dsn,
            &s3_storage_at(
                &url,
                &relay.endpoint(),
                keys,
                &format!("{extra}{relay_extra}"),
            ),
        );
        write_config(
            &direct,
            &dsn,
            &s3_storage_at(&url, &moto.endpoint(), keys, extra),
        );
        let db = super::client(&pg, "postgres").await;
        Self {
            via_relay: via_relay.display().to_string(),
            direct: direct.display().to_string(),
            moto,
            relay,
            owner,
            pg,
            db,
            env,
            bucket: bucket.to_string(),
        }
    }

    /// Writes `offsite.toml`: the repository through the relay and an off-site repository
    /// in a new bucket `<bucket>-copy`, through the relay too; returns its `-c`.
    pub async fn offsite_config(&self) -> String {
        let copy = format!("{}-copy", self.bucket);
        self.moto.create_bucket(&copy, REGION).await;
        let path = self.owner.path().join("offsite.toml");
        write_config(
            &path,
            &self.pg.dsn("postgres"),
            &s3_storage_at(
                &format!("s3://{}/pgvigil", self.bucket),
                &self.relay.endpoint(),
                "",
                &s3_offsite(&copy, &self.relay.endpoint()),
            ),
        );
        path.display().to_string()
    }
}
