//! `[storage]`, `[storage.s3]` and `[offsite]`: where the repositories are and the policy
//! they are held to. Owns the parsed store location ([`StoreSpec`], built once here, so no
//! URL is parsed again when a store is opened), the residency policy ([`Residency`]), the
//! S3 client and Object Lock settings, and their validators. This is plain data: the
//! `store` module opens stores from it and enforces the policy; nothing here does I/O.

use std::path::PathBuf;
use std::time::Duration;

use super::schedule::{self, Schedule};
use super::{Ctx, Error};
use crate::config::raw::{OffsiteConfig, S3Config, StorageConfig};

/// `[storage]`, validated.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// The repository, from `storage.url` (`${ENV}` expanded) and `[storage.s3]`.
    pub store: StoreSpec,
    /// Directory of this cluster's objects inside the repository.
    pub cluster: String,
    /// `storage.lease_ttl`: how long a job's lease lives without renewal; a holder killed
    /// without releasing blocks its job this long at most.
    pub lease_ttl: Duration,
    /// Where repositories may keep data (`residency`, `allowed_regions`).
    pub residency: Residency,
    /// `[storage.encryption]`: seals backup and WAL objects of both repositories.
    pub encryption: Option<super::EncryptionSettings>,
}

/// `[offsite]`, validated.
#[derive(Debug, Clone)]
pub struct OffsiteSettings {
    /// The second repository, from `offsite.url` and `[offsite.s3]` (default
    /// `[storage.s3]`).
    pub store: StoreSpec,
    pub schedule: Schedule,
}

/// Where a repository is: a parsed `storage.url` / `offsite.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `file:///path`: a local directory (absolute path).
    File(PathBuf),
    /// `s3://bucket/prefix`: objects under `prefix` (no leading or trailing slash, may be
    /// empty) in `bucket`, reached with `s3`.
    S3 {
        bucket: String,
        prefix: String,
        s3: S3Settings,
    },
}

impl StoreSpec {
    /// The URL without credentials (`file:///path`, `s3://bucket/prefix`), for messages.
    pub fn describe(&self) -> String {
        match self {
            StoreSpec::File(path) => format!("file://{}", path.display()),
            StoreSpec::S3 { bucket, prefix, .. } if prefix.is_empty() => format!("s3://{bucket}"),
            StoreSpec::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `[storage.s3]` (or `[offsite.s3]`), validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// Region; default: the standard AWS chain (AWS_REGION, profile, IMDS).
    pub region: Option<String>,
    /// Custom endpoint for S3-compatible stores, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    /// PEM CA certificates trusted for the endpoint besides the system roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Object Lock on backup and WAL objects; None when `object_lock = "off"`.
    pub object_lock: Option<ObjectLockSettings>,
}

/// `storage.s3.object_lock`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLockSettings {
    pub mode: LockMode,
    /// How long each object stays locked after it is written: the recovery window, one
    /// backup interval and a day of margin, so that retention finds it unlocked exactly
    /// when it is due.
    pub retain_for: Duration,
}

/// S3 Object Lock retention mode (`storage.s3.object_lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` can still delete.
    Governance,
    /// Nobody, not even the root account, can delete before the date.
    Compliance,
}

/// AWS regions in EU member states (Frankfurt, Ireland, Paris, Milan, Spain, Stockholm).
/// London (`eu-west-2`) and Zurich (`eu-central-2`) start with `eu-` and are not in the
/// EU, so regions are matched exactly, never by prefix.
pub const EU_REGIONS: &[&str] = &[
    "eu-central-1",
    "eu-west-1",
    "eu-west-3",
    "eu-south-1",
    "eu-south-2",
    "eu-north-1",
];

/// Where a store may keep data (`storage.residency`, `storage.allowed_regions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Residency {
    /// `residency = "any"`: no check.
    Any,
    /// Only these regions. `policy` names where the list came from (`eu` or
    /// `allowed_regions`), for messages.
    Regions {
        policy: String,
        regions: Vec<String>,
    },
}

impl Residency {
    /// The policy for `residency = "eu"`.
    pub fn eu() -> Self {
        Residency::Regions {
            policy: "eu".into(),
            regions: EU_REGIONS.iter().map(|r| r.to_string()).collect(),
        }
    }

    /// Whether `region` (already normalized) is allowed.
    pub fn allows(&self, region: &str) -> bool {
        match self {
            Residency::Any => true,
            Residency::Regions { regions, .. } => regions.iter().any(|r| r == region),
        }
    }

    /// `residency "eu"` or `allowed_regions [..]`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Residency::Any => "residency \"any\" (no check)".into(),
            Residency::Regions { policy, regions } if policy == "eu" => {
                format!("residency \"eu\" ({})", regions.join(", "))
            }
            Residency::Regions { regions, .. } => {
                format!("allowed_regions [{}]", regions.join(", "))
            }
        }
    }
}

/// Validates `[storage]` and `[offsite]`; `retain_for` is the Object Lock duration.
pub(super) fn validate(
    ctx: &Ctx<'_>,
    raw: &StorageConfig,
    offsite: &OffsiteConfig,
    retain_for: Duration,
) -> Result<(StorageSettings, Option<OffsiteSettings>), Error> {
    let residency = validate_residency(ctx, raw)?;
    let storage_s3 = validate_s3(ctx, &["storage", "s3"], &raw.s3, retain_for)?;
    let offsite = match &offsite.url {
        None => None,
        Some(url) => {
            let s3 = match &offsite.s3 {
                Some(s3) => validate_s3(ctx, &["offsite", "s3"], s3, retain_for)?,
                None => storage_s3.clone(),
            };
            Some(OffsiteSettings {
                store: validate_store_url(ctx, &["offsite", "url"], url, s3)?,
                schedule: schedule::validate(ctx, &["offsite", "schedule"], &offsite.schedule)?,
            })
        }
    };
    let storage = StorageSettings {
        store: validate_store_url(ctx, &["storage", "url"], &raw.url, storage_s3)?,
        cluster: validate_cluster(ctx, &raw.cluster)?,
        lease_ttl: validate_lease_ttl(ctx, &raw.lease_ttl)?,
        residency,
        encryption: super::encryption::validate(ctx, raw.encryption.as_ref())?,
    };
    Ok((storage, offsite))
}

fn validate_residency(ctx: &Ctx<'_>, raw: &StorageConfig) -> Result<Residency, Error> {
    if let Some(regions) = &raw.allowed_regions {
        let path = ["storage", "allowed_regions"];
        if regions.is_empty() {
            return Err(ctx.invalid(
                &path,
                "is empty: list the regions data may live in, or remove the key",
            ));
        }
        if let Some(bad) = regions
            .iter()
            .find(|r| r.trim().is_empty() || r.trim() != r.as_str())
        {
            return Err(ctx.invalid(&path, format!("{bad:?} is not a region name")));
        }
        if raw.residency == "any" {
            return Err(ctx.invalid(
                &path,
                "conflicts with residency = \"any\" (which turns the check off)",
            ));
        }
        return Ok(Residency::Regions {
            policy: "allowed_regions".into(),
            regions: regions.clone(),
        });
    }
    match raw.residency.as_str() {
        "eu" => Ok(Residency::eu()),
        "any" => Ok(Residency::Any),
        other => Err(ctx.invalid(
            &["storage", "residency"],
            format!(
                "{other:?} is not \"eu\" or \"any\"; for another region list use allowed_regions = [\"...\"]"
            ),
        )),
    }
}

fn validate_s3(
    ctx: &Ctx<'_>,
    path: &[&str],
    raw: &S3Config,
    retain_for: Duration,
) -> Result<S3Settings, Error> {
    let at = |key: &'static str| {
        let mut p = path.to_vec();
        p.push(key);
        p
    };
    let object_lock = match raw.object_lock.as_str() {
        "off" => None,
        "governance" => Some(LockMode::Governance),
        "compliance" => Some(LockMode::Compliance),
        other => {
            return Err(ctx.invalid(
                &at("object_lock"),
                format!("{other:?} is not \"off\", \"governance\" or \"compliance\""),
            ))
        }
    };
    Ok(S3Settings {
        region: raw.region.clone(),
        endpoint: match &raw.endpoint {
            Some(e) => Some(ctx.expand(&at("endpoint"), e)?),
            None => None,
        },
        force_path_style: raw.force_path_style,
        ca_file: match &raw.ca_file {
            Some(f) if !f.is_empty() => {
                Some(std::path::PathBuf::from(ctx.expand(&at("ca_file"), f)?))
            }
            _ => None,
        },
        object_lock: object_lock.map(|mode| ObjectLockSettings { mode, retain_for }),
    })
}

/// Parses a repository URL into a [`StoreSpec`] reached with `s3` (when it is on S3).
fn validate_store_url(
    ctx: &Ctx<'_>,
    path: &[&str],
    url: &str,
    s3: S3Settings,
) -> Result<StoreSpec, Error> {
    let url = ctx.expand(path, url)?;
    if let Some(p) = url.strip_prefix("file://") {
        if !p.starts_with('/') {
            return Err(ctx.invalid(
                path,
                format!(
                    "{url:?}: file:// needs an absolute path, e.g. file:///var/lib/pgvigil/repo"
                ),
            ));
        }
        return Ok(StoreSpec::File(PathBuf::from(p)));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ctx.invalid(
                path,
                format!("{url:?} names no bucket: use s3://bucket/prefix"),
            ));
        }
        return Ok(StoreSpec::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            s3,
        });
    }
    Err(ctx.invalid(path, format!("{url:?} must start with file:// or s3://")))
}

fn validate_lease_ttl(ctx: &Ctx<'_>, value: &str) -> Result<Duration, Error> {
    let path = ["storage", "lease_ttl"];
    let ttl = ctx.duration(&path, value)?;
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(86_400) {
        return Err(ctx.invalid(
            &path,
            format!("{value:?} must be between 1s and 1day (it is renewed every third of it)"),
        ));
    }
    Ok(ttl)
}

fn validate_cluster(ctx: &Ctx<'_>, name: &str) -> Result<String, Error> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(ctx.invalid(
            &["storage", "cluster"],
            format!("{name:?} must be letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs_describe_their_url() {
        assert_eq!(
            StoreSpec::File("/var/lib/pgvigil/repo".into()).describe(),
            "file:///var/lib/pgvigil/repo"
        );
        let s3 = |prefix: &str| StoreSpec::S3 {
            bucket: "b".into(),
            prefix: prefix.into(),
            s3: S3Settings::default(),
        };
        assert_eq!(s3("").to_string(), "s3://b");
        assert_eq!(s3("p/q").to_string(), "s3://b/p/q");
    }

    #[test]
    fn eu_regions_are_matched_exactly() {
        let eu = Residency::eu();
        assert!(eu.allows("eu-central-1") && eu.allows("eu-west-1"));
        assert!(!eu.allows("eu-west-2") && !eu.allows("eu-central-2") && !eu.allows("eu"));
        assert!(Residency::Any.allows("us-east-1"));
        assert!(eu.describe().starts_with("residency \"eu\" (eu-central-1"));
    }
}
