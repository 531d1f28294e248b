//! `[storage.encryption]`: which key seals new backup and WAL objects, which older keys
//! still open old ones, and whether objects written before encryption was turned on are
//! read. A key is 32 random bytes written as 64 hex digits or as base64 (`openssl rand
//! -hex 32`), given inline (`key = "${PGVIGIL_BACKUP_KEY}"`, the sidecar's secret from the
//! environment) or as a file (`key_file`, a mounted secret). Inline keys are parsed here;
//! key files are read when a repository is opened ([`KeySource::load`]), so that this
//! module stays free of I/O and a rotated secret file is picked up by the next command.

use std::path::PathBuf;

use base64::Engine;

use super::{Ctx, Error};
use crate::config::raw::EncryptionConfig;

/// The length of an encryption key, in bytes.
pub const KEY_BYTES: usize = 32;

/// `[storage.encryption]`, validated.
#[derive(Debug, Clone)]
pub struct EncryptionSettings {
    /// Seals every new object (and opens the objects it sealed).
    pub current: KeySpec,
    /// Open objects sealed with them; never seal.
    pub old_keys: Vec<KeySpec>,
    /// Objects without pgvigil's encryption header are read as they are (a repository
    /// that was written before encryption was turned on); otherwise they are refused.
    pub accept_unencrypted: bool,
}

/// One key: its id and where its bytes are.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Recorded in every object the key seals: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    /// The configuration key that gave it (`storage.encryption.key_file`,
    /// `storage.encryption.old_keys[1].key`, ...), for messages.
    pub config_key: String,
    pub source: KeySource,
}

/// Where a key's bytes are.
#[derive(Clone)]
pub enum KeySource {
    /// Given inline (usually `${ENV}`), already parsed.
    Inline([u8; KEY_BYTES]),
    /// A file holding the key, read on use; it must not be readable by group or others.
    File(PathBuf),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Inline(_) => f.write_str("Inline(<redacted>)"),
            KeySource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

impl KeySpec {
    /// The key's bytes: inline, or read from its file (permissions checked, content
    /// parsed). The error names the configuration key and the file.
    pub fn load(&self) -> Result<[u8; KEY_BYTES], String> {
        match &self.source {
            KeySource::Inline(bytes) => Ok(*bytes),
            KeySource::File(path) => {
                // The configuration key is only known at run time; check_private wants a
                // static name, so the check's message is rebuilt with ours.
                crate::config::check_private("key_file", path)
                    .map_err(|e| format!("{}: {}", self.config_key, strip_key(&e.to_string())))?;
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("{}: cannot read {}: {e}", self.config_key, path.display())
                })?;
                parse_key(&text)
                    .map_err(|m| format!("{}: {}: {m}", self.config_key, path.display()))
            }
        }
    }
}

/// A SecretError's message without its leading `key_file: `.
fn strip_key(message: &str) -> &str {
    message.strip_prefix("key_file: ").unwrap_or(message)
}

/// Parses a key written as 64 hex digits or as base64 of 32 bytes (surrounding whitespace
/// ignored).
pub fn parse_key(text: &str) -> Result<[u8; KEY_BYTES], String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the key is empty; generate one with `openssl rand -hex 32`".into());
    }
    let bytes = if text.len() == 2 * KEY_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|e| format!("not hex: {e}"))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| {
                "is neither 64 hex digits nor base64; generate a key with `openssl rand -hex 32`"
                    .to_string()
            })?
    };
    <[u8; KEY_BYTES]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "holds {} bytes; a key is {KEY_BYTES} bytes (`openssl rand -hex 32`)",
            bytes.len()
        )
    })
}

/// Whether `id` is a usable key id.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Validates `[storage.encryption]`.
pub(super) fn validate(
    ctx: &Ctx<'_>,
    raw: Option<&EncryptionConfig>,
) -> Result<Option<EncryptionSettings>, Error> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let current = key_spec(
        ctx,
        &["storage", "encryption"],
        "storage.encryption".into(),
        &raw.key_id,
        raw.key.as_deref(),
        raw.key_file.as_deref(),
    )?;
    let mut old_keys = Vec::with_capacity(raw.old_keys.len());
    for (i, old) in raw.old_keys.iter().enumerate() {
        old_keys.push(key_spec(
            ctx,
            &["storage", "encryption", "old_keys"],
            format!("storage.encryption.old_keys[{i}]"),
            &old.key_id,
            old.key.as_deref(),
            old.key_file.as_deref(),
        )?);
    }
    let mut seen = vec![current.id.as_str()];
    for old in &old_keys {
        if seen.contains(&old.id.as_str()) {
            return Err(ctx.invalid(
                &["storage", "encryption", "old_keys"],
                format!(
                    "key id {:?} is given twice; every key needs its own id (the id is how an object names the key that opens it)",
                    old.id
                ),
            ));
        }
        seen.push(&old.id);
    }
    Ok(Some(EncryptionSettings {
        current,
        old_keys,
        accept_unencrypted: raw.accept_unencrypted,
    }))
}

/// One key entry: an id and exactly one of `key` / `key_file`.
fn key_spec(
    ctx: &Ctx<'_>,
    path: &[&str],
    config_key: String,
    id: &str,
    key: Option<&str>,
    key_file: Option<&str>,
) -> Result<KeySpec, Error> {
    let at = |leaf: &'static str| {
        let mut p = path.to_vec();
        p.push(leaf);
        p
    };
    if !valid_id(id) {
        return Err(ctx.invalid(
            &at("key_id"),
            format!(
                "{id:?} is not a key id: 1 to 64 letters, digits, '.', '_' or '-' (e.g. \"2026q4\")"
            ),
        ));
    }
    let source = match (key, key_file) {
        (Some(_), Some(_)) => {
            return Err(ctx.invalid(
                &at("key"),
                format!("{config_key}: set key or key_file, not both"),
            ))
        }
        (None, None) => {
            return Err(ctx.invalid(
                &at("key_file"),
                format!(
                    "{config_key}: set key_file (a file holding the key) or key (e.g. \"${{PGVIGIL_BACKUP_KEY}}\")"
                ),
            ))
        }
        (Some(inline), None) => {
            let value = ctx.expand(&at("key"), inline)?;
            KeySource::Inline(parse_key(&value).map_err(|m| {
                ctx.invalid(&at("key"), format!("{config_key}.key (id {id:?}) {m}"))
            })?)
        }
        (None, Some(file)) => KeySource::File(PathBuf::from(ctx.expand(&at("key_file"), file)?)),
    };
    Ok(KeySpec {
        id: id.to_string(),
        config_key: match &source {
            KeySource::Inline(_) => format!("{config_key}.key"),
            KeySource::File(_) => format!("{config_key}.key_file"),
        },
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_hex_or_base64_of_32_bytes() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(parse_key(&format!(" {hex}\n")).unwrap()[31], 0xff);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(parse_key(&b64).unwrap(), [7u8; 32]);
        assert!(parse_key("").unwrap_err().contains("empty"));
        assert!(parse_key("abcd").unwrap_err().contains("bytes"));
        assert!(parse_key("not a key!").unwrap_err().contains("neither"));
    }

    #[test]
    fn key_ids_are_short_and_plain() {
        assert!(valid_id("2026q4"));
        assert!(valid_id("prod.key-1_b"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(65)));
    }
}
