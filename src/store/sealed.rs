//! Client-side encryption of backup and WAL objects (`[storage.encryption]`): [`Sealed`]
//! wraps a repository's store and seals every backup object, `backup.json` and WAL file
//! before it leaves the host, and opens (and authenticates) them on the way back. The
//! rest of pgvigil never sees ciphertext: callers read and write plaintext as before.
//!
//! Why this construction: XChaCha20-Poly1305 (the `chacha20poly1305` crate, RustCrypto)
//! in the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár) of the `aead` crate,
//! so a 1 GB base backup streams in bounded memory and every 64 KiB chunk is
//! authenticated before any of it is used; a truncated object fails at its end because
//! the last chunk is sealed as last. The associated data of every chunk is the object's
//! header and its full key (`<cluster>/wal/<name>.zst`), so an object swapped from another
//! name, another backup or another cluster does not open. Nothing here is cryptography of
//! our own: the key schedule is HKDF-SHA256 (`hkdf`), the nonce is 19 random bytes from the
//! OS per object (the STREAM nonce prefix of XChaCha20's 24), and the stored checksum of
//! a WAL file's content becomes an HMAC-SHA256 (`hmac`) so that the metadata reveals
//! nothing about the plaintext.
//!
//! An object is `PGVSEAL1`, a one-byte key id length, the key id, the 19-byte nonce, then
//! the chunks (64 KiB of plaintext and a 16-byte tag each; the last may be shorter). The
//! key id is how key rotation works: new objects are sealed with the current key and an
//! old object names the key that opens it, which must be the current key or one of
//! `old_keys`.
//!
//! Only protected objects (`backups/`, `wal/`, see [`is_protected`]) are sealed: `state/`
//! holds pgvigil's own records (the cluster binding, job history, leases, drill evidence),
//! which are rewritten in normal operation and hold no database content. Listings and
//! sizes are the backend's, so retention, Object Lock, residency and the off-site copy
//! (which copies ciphertext as it is, through [`ObjectStore::unsealed`]) need no key.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{OsRng, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{is_protected, ByteStream, Error, Metadata, ObjectMeta, ObjectStore, Pinned, Version};
use crate::config::{EncryptionSettings, KEY_BYTES};

/// The first bytes of every sealed object.
pub const MAGIC: &[u8; 8] = b"PGVSEAL1";
/// Plaintext bytes per chunk.
const CHUNK: usize = 64 * 1024;
/// The Poly1305 tag after every chunk.
const TAG: usize = 16;
/// The STREAM nonce prefix: XChaCha20's 24 bytes less STREAM's 5 (counter and last flag).
const NONCE: usize = 19;
/// The longest header: magic, id length, a 64-byte id, nonce.
const MAX_HEADER: usize = MAGIC.len() + 1 + 64 + NONCE;
/// Metadata key of a sealed object's keyed checksum (`<key id>:<hex HMAC>`), which
/// replaces the plain `sha256` of the content.
pub const SEALED_SHA256: &str = "sealed-sha256";
/// Metadata key naming the key that sealed an object (for operators; the header is what
/// counts).
pub const KEY_ID: &str = "key-id";

/// One key, derived for its two uses.
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
    digest: [u8; 32],
}

impl Key {
    fn derive(id: &str, secret: &[u8; KEY_BYTES]) -> Key {
        let hk = hkdf::Hkdf::<Sha256>::new(None, secret);
        let mut enc = [0u8; 32];
        let mut digest = [0u8; 32];
        // Both lengths are fixed and far below HKDF's limit: expand cannot fail.
        let _ = hk.expand(b"pgvigil seal v1 encryption", &mut enc);
        let _ = hk.expand(b"pgvigil seal v1 digest", &mut digest);
        Key {
            id: id.to_string(),
            cipher: XChaCha20Poly1305::new(&enc.into()),
            digest,
        }
    }

    /// HMAC-SHA256 of a content checksum under this key.
    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length: new_from_slice cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.digest)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }
}

/// The keys of `[storage.encryption]`, loaded.
pub struct Keyring {
    current: Key,
    old: Vec<Key>,
    accept_unencrypted: bool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("old", &self.old.iter().map(|k| &k.id).collect::<Vec<_>>())
            .field("accept_unencrypted", &self.accept_unencrypted)
            .finish()
    }
}

impl Keyring {
    /// Reads every key (key files now, so a rotated secret is used by the next command).
    pub fn load(settings: &EncryptionSettings) -> Result<Keyring, Error> {
        let load = |spec: &crate::config::KeySpec| {
            spec.load()
                .map(|secret| Key::derive(&spec.id, &secret))
                .map_err(Error::Key)
        };
        Ok(Keyring {
            current: load(&settings.current)?,
            old: settings
                .old_keys
                .iter()
                .map(load)
                .collect::<Result<_, _>>()?,
            accept_unencrypted: settings.accept_unencrypted,
        })
    }

    /// The id new objects are sealed with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    fn find(&self, id: &str) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == id)
    }

    fn ids(&self) -> String {
        std::iter::once(&self.current)
            .chain(&self.old)
            .map(|k| format!("{:?}", k.id))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Seals one object as it streams: header first, then full chunks, the rest as the last
/// chunk at [`Sealer::finish`].
struct Sealer {
    enc: Option<EncryptorBE32<XChaCha20Poly1305>>,
    aad: Vec<u8>,
    header: Option<Vec<u8>>,
    buf: Vec<u8>,
}

impl Sealer {
    fn new(key: &Key, object_key: &str) -> Sealer {
        let mut nonce = [0u8; NONCE];
        OsRng.fill_bytes(&mut nonce);
        let mut header = Vec::with_capacity(MAX_HEADER);
        header.extend_from_slice(MAGIC);
        // Ids are validated to 1..=64 bytes at config load.
        header.push(key.id.len() as u8);
        header.extend_from_slice(key.id.as_bytes());
        header.extend_from_slice(&nonce);
        let aad = [header.as_slice(), object_key.as_bytes()].concat();
        Sealer {
            enc: Some(EncryptorBE32::from_aead(
                key.cipher.clone(),
                (&nonce).into(),
            )),
            aad,
            header: Some(header),
            buf: Vec::with_capacity(2 * CHUNK),
        }
    }
}

/// A streaming transformation of an object's bytes.
trait Transform: Send + 'static {
    /// Takes more input; returns what can be given out already.
    fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, String>;
    /// The input ended; returns the rest.
    fn finish(&mut self) -> Result<Vec<u8>, String>;
}

impl Transform for Sealer {
    fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, String> {
        self.buf.extend_from_slice(data);
        let mut out = self.header.take().unwrap_or_default();
        let enc = self.enc.as_mut().ok_or("sealed past its end")?;
        // The last chunk is sealed differently, so a full chunk is held back until more
        // input (or the end) shows it is not the last.
        let mut at = 0;
        while self.buf.len() - at > CHUNK {
            let sealed = enc
                .encrypt_next(Payload {
                    msg: &self.buf[at..at + CHUNK],
                    aad: &self.aad,
                })
                .map_err(|_| "the object is too large to seal (2^32 chunks)".to_string())?;
            out.extend_from_slice(&sealed);
            at += CHUNK;
        }
        self.buf.drain(..at);
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, String> {
        let mut out = self.header.take().unwrap_or_default();
        let enc = self.enc.take().ok_or("sealed past its end")?;
        let sealed = enc
            .encrypt_last(Payload {
                msg: &self.buf,
                aad: &self.aad,
            })
            .map_err(|_| "sealing the last chunk failed".to_string())?;
        out.extend_from_slice(&sealed);
        self.buf.clear();
        Ok(out)
    }
}

/// Opens one sealed object as it streams; every chunk is authenticated before it is
/// given out.
struct Opener {
    dec: Option<DecryptorBE32<XChaCha20Poly1305>>,
    aad: Vec<u8>,
    key_id: String,
    buf: Vec<u8>,
}

/// Why a sealed object does not open, for messages.
fn auth_failed(key_id: &str) -> String {
    format!(
        "does not authenticate with key {key_id:?}: it was altered, truncated, moved from another name, or sealed with a different key under the same id; nothing unauthenticated was used"
    )
}

impl Opener {
    /// Parses the header at the start of `data`; `Ok(None)` when more bytes are needed.
    /// Returns the opener and how many bytes the header took.
    fn start(
        ring: &Keyring,
        object_key: &str,
        data: &[u8],
    ) -> Result<Option<(Opener, usize)>, String> {
        if data.len() < MAGIC.len() + 1 {
            return Ok(None);
        }
        let id_len = data[MAGIC.len()] as usize;
        let end = MAGIC.len() + 1 + id_len + NONCE;
        if data.len() < end {
            return Ok(None);
        }
        let id = std::str::from_utf8(&data[MAGIC.len() + 1..MAGIC.len() + 1 + id_len])
            .map_err(|_| "has a damaged encryption header (key id)".to_string())?;
        let key = ring.find(id).ok_or_else(|| {
            format!(
                "is sealed with key id {id:?}, which is not configured (configured: {}); add that key to storage.encryption.old_keys",
                ring.ids()
            )
        })?;
        let nonce: [u8; NONCE] = data[end - NONCE..end]
            .try_into()
            .map_err(|_| "has a damaged encryption header (nonce)".to_string())?;
        let aad = [&data[..end], object_key.as_bytes()].concat();
        Ok(Some((
            Opener {
                dec: Some(DecryptorBE32::from_aead(
                    key.cipher.clone(),
                    (&nonce).into(),
                )),
                aad,
                key_id: key.id.clone(),
                buf: Vec::with_capacity(2 * (CHUNK + TAG)),
            },
            end,
        )))
    }
}

impl Transform for Opener {
    fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, String> {
        self.buf.extend_from_slice(data);
        let dec = self.dec.as_mut().ok_or("opened past its end")?;
        let mut out = Vec::new();
        let mut at = 0;
        // As when sealing: a full chunk may be the last one until more follows.
        while self.buf.len() - at > CHUNK + TAG {
            let plain = dec
                .decrypt_next(Payload {
                    msg: &self.buf[at..at + CHUNK + TAG],
                    aad: &self.aad,
                })
                .map_err(|_| auth_failed(&self.key_id))?;
            out.extend_from_slice(&plain);
            at += CHUNK + TAG;
        }
        self.buf.drain(..at);
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, String> {
        let dec = self.dec.take().ok_or("opened past its end")?;
        if self.buf.len() < TAG {
            return Err(auth_failed(&self.key_id));
        }
        let plain = dec
            .decrypt_last(Payload {
                msg: &self.buf,
                aad: &self.aad,
            })
            .map_err(|_| auth_failed(&self.key_id))?;
        self.buf.clear();
        Ok(plain)
    }
}

/// Runs `t` over a stream; an error of `t` ends the stream with an `InvalidData` error
/// that begins with `what` (the object and store).
fn transform<T: Transform>(input: ByteStream, t: T, what: String) -> ByteStream {
    let state = (input, Some(t), what);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut input, mut t, what)| async move {
            loop {
                let tr = t.as_mut()?;
                let (out, done) = match input.next().await {
                    Some(Ok(chunk)) => (tr.push(&chunk), false),
                    Some(Err(e)) => return Some((Err(e), (input, None, what))),
                    None => (tr.finish(), true),
                };
                let out = match out {
                    Ok(out) => out,
                    Err(m) => {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{what} {m}"),
                        );
                        return Some((Err(e), (input, None, what)));
                    }
                };
                let next = if done { None } else { t };
                if !out.is_empty() {
                    return Some((Ok(Bytes::from(out)), (input, next, what)));
                }
                t = next;
            }
        },
    ))
}

/// Seals `bytes` whole.
fn seal_all(key: &Key, object_key: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = Sealer::new(key, object_key);
    let mut out = s.push(bytes)?;
    out.extend(s.finish()?);
    Ok(out)
}

/// Opens a sealed object held whole.
fn open_all(ring: &Keyring, object_key: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (mut o, at) = Opener::start(ring, object_key, bytes)?
        .ok_or_else(|| "is truncated inside its encryption header".to_string())?;
    let mut out = o.push(&bytes[at..])?;
    out.extend(o.finish()?);
    Ok(out)
}

/// A store that seals protected objects with a [`Keyring`] (or, without one, only
/// refuses to hand out sealed objects as if they were plain).
#[derive(Debug)]
pub struct Sealed {
    inner: Arc<dyn ObjectStore>,
    ring: Option<Arc<Keyring>>,
}

impl Sealed {
    /// Wraps `inner`; `ring` None when encryption is not configured.
    pub fn new(inner: Arc<dyn ObjectStore>, ring: Option<Keyring>) -> Sealed {
        Sealed {
            inner,
            ring: ring.map(Arc::new),
        }
    }

    fn error(&self, key: &str, message: String) -> Error {
        Error::Sealed {
            key: key.to_string(),
            store: self.inner.describe(),
            message,
        }
    }

    /// The metadata a sealed object is stored with: the content checksum keyed, the key
    /// id added.
    fn seal_meta(key: &Key, mut meta: Metadata) -> Metadata {
        if let Some(sha) = meta.remove("sha256") {
            let mut mac = key.mac();
            mac.update(sha.as_bytes());
            let tag = hex::encode(mac.finalize().into_bytes());
            meta.insert(SEALED_SHA256.into(), format!("{}:{tag}", key.id));
        }
        meta.insert(KEY_ID.into(), key.id.clone());
        meta
    }

    /// The keyring when `key` is to be sealed.
    fn sealing(&self, key: &str) -> Option<&Arc<Keyring>> {
        self.ring.as_ref().filter(|_| is_protected(key))
    }

    /// Conditional reads and writes are for pgvigil's own records (`state/`, never
    /// sealed), not for backup or WAL objects.
    fn state_only(&self, key: &str) -> Result<(), Error> {
        if is_protected(key) {
            return Err(self.error(
                key,
                "is a backup or WAL object: conditional writes are for state objects only".into(),
            ));
        }
        Ok(())
    }

    /// What to do with a plaintext protected object that was read.
    fn plaintext(&self, key: &str) -> Result<(), Error> {
        match &self.ring {
            Some(ring) if !ring.accept_unencrypted => Err(self.error(
                key,
                "is not encrypted, and storage.encryption requires every backup and WAL object to be; set storage.encryption.accept_unencrypted = true to read objects written before encryption was turned on".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The keyring for a sealed object that was read.
    fn opening(&self, key: &str) -> Result<&Arc<Keyring>, Error> {
        self.ring.as_ref().ok_or_else(|| {
            self.error(
                key,
                "is encrypted, but [storage.encryption] is not configured; configure the key it was sealed with".into(),
            )
        })
    }
}

#[async_trait::async_trait]
impl ObjectStore for Sealed {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put_stream(&self, key: &str, body: ByteStream, meta: Metadata) -> Result<u64, Error> {
        let Some(ring) = self.sealing(key) else {
            return self.inner.put_stream(key, body, meta).await;
        };
        let sealer = Sealer::new(&ring.current, key);
        let what = format!("sealing {key}");
        let body = transform(body, sealer, what);
        let meta = Self::seal_meta(&ring.current, meta);
        self.inner.put_stream(key, body, meta).await
    }

    async fn put_if_absent(&self, key: &str, bytes: Bytes, meta: Metadata) -> Result<bool, Error> {
        let Some(ring) = self.sealing(key) else {
            return self.inner.put_if_absent(key, bytes, meta).await;
        };
        let sealed = seal_blocking(ring.clone(), key, bytes)
            .await
            .map_err(|m| self.error(key, m))?;
        let meta = Self::seal_meta(&ring.current, meta);
        self.inner.put_if_absent(key, sealed, meta).await
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes, meta: Metadata) -> Result<(), Error> {
        let Some(ring) = self.sealing(key) else {
            return self.inner.put_bytes(key, bytes, meta).await;
        };
        let sealed = seal_blocking(ring.clone(), key, bytes)
            .await
            .map_err(|m| self.error(key, m))?;
        let meta = Self::seal_meta(&ring.current, meta);
        self.inner.put_bytes(key, sealed, meta).await
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream, Error> {
        let mut body = self.inner.get_stream(key).await?;
        if !is_protected(key) {
            return Ok(body);
        }
        // Read the header before answering, so a missing key or a plaintext object is a
        // typed error here rather than a failure somewhere inside the consumer.
        let mut head = BytesMut::new();
        let mut ended = false;
        while head.len() < MAX_HEADER {
            match body.next().await {
                Some(Ok(b)) => head.extend_from_slice(&b),
                Some(Err(source)) => {
                    return Err(Error::Io {
                        op: "reading",
                        key: key.to_string(),
                        store: self.describe(),
                        source,
                    })
                }
                None => {
                    ended = true;
                    break;
                }
            }
            if head.len() >= MAGIC.len() && !head.starts_with(MAGIC) {
                break;
            }
            if head.len() >= MAGIC.len() {
                if let Some(ring) = &self.ring {
                    if Opener::start(ring, key, &head)
                        .map_err(|m| self.error(key, m))?
                        .is_some()
                    {
                        break;
                    }
                }
            }
        }
        let rest: ByteStream = if ended {
            Box::pin(futures_util::stream::empty())
        } else {
            body
        };
        let head = head.freeze();
        if !head.starts_with(MAGIC) {
            self.plaintext(key)?;
            return Ok(Box::pin(futures_util::stream::iter([Ok(head)]).chain(rest)));
        }
        let ring = self.opening(key)?;
        let (opener, at) = Opener::start(ring, key, &head)
            .map_err(|m| self.error(key, m))?
            .ok_or_else(|| self.error(key, "is truncated inside its encryption header".into()))?;
        let rest: ByteStream =
            Box::pin(futures_util::stream::iter([Ok(head.slice(at..))]).chain(rest));
        Ok(transform(
            rest,
            opener,
            format!("{key} in {}", self.describe()),
        ))
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes, Error> {
        let bytes = self.inner.get_bytes(key).await?;
        if !is_protected(key) {
            return Ok(bytes);
        }
        if !bytes.starts_with(MAGIC) {
            self.plaintext(key)?;
            return Ok(bytes);
        }
        let ring = self.opening(key)?.clone();
        let object_key = key.to_string();
        let opened = tokio::task::spawn_blocking(move || open_all(&ring, &object_key, &bytes))
            .await
            .map_err(|e| self.error(key, format!("decryption task: {e}")))?
            .map_err(|m| self.error(key, m))?;
        Ok(Bytes::from(opened))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>, Error> {
        self.state_only(key)?;
        self.inner.get_versioned(key).await
    }

    async fn put_versioned(
        &self,
        key: &str,
        bytes: Bytes,
        expected: Option<&str>,
    ) -> Result<Option<Version>, Error> {
        self.state_only(key)?;
        self.inner.put_versioned(key, bytes, expected).await
    }

    async fn pin(&self, key: &str) -> Result<Option<Pinned>, Error> {
        self.inner.pin(key).await
    }

    fn has_own_clock(&self) -> bool {
        self.inner.has_own_clock()
    }

    async fn head(&self, key: &str) -> Result<Option<(ObjectMeta, Metadata)>, Error> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, Error> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<(String, Error)> {
        self.inner.delete_many(keys).await
    }

    async fn bucket_facts(&self, lock: bool) -> Result<Option<super::BucketFacts>, Error> {
        self.inner.bucket_facts(lock).await
    }

    fn object_lock_mode(&self) -> Option<super::LockMode> {
        self.inner.object_lock_mode()
    }

    async fn lock_until(&self, key: &str) -> Result<Option<std::time::SystemTime>, Error> {
        self.inner.lock_until(key).await
    }

    async fn extend_lock(
        &self,
        key: &str,
        written: std::time::SystemTime,
        now: std::time::SystemTime,
    ) -> Result<bool, Error> {
        self.inner.extend_lock(key, written, now).await
    }

    async fn copy_from(
        &self,
        source: &dyn ObjectStore,
        source_key: &str,
        key: &str,
    ) -> Result<bool, Error> {
        // A server-side copy moves ciphertext; the associated data binds it to its key,
        // so only copies to the same key (the off-site copy) open afterwards.
        self.inner.copy_from(source, source_key, key).await
    }

    fn digest_matches(&self, meta: &Metadata, sha256_hex: &str) -> Option<bool> {
        let Some(recorded) = meta.get(SEALED_SHA256) else {
            return meta.get("sha256").map(|v| v == sha256_hex);
        };
        let (id, tag) = recorded.split_once(':')?;
        let key = self.ring.as_ref()?.find(id)?;
        let tag = hex::decode(tag).ok()?;
        let mut mac = key.mac();
        mac.update(sha256_hex.as_bytes());
        Some(mac.verify_slice(&tag).is_ok())
    }

    fn unsealed(&self) -> Option<Arc<dyn ObjectStore>> {
        Some(self.inner.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self.inner.as_any()
    }
}

/// Seals `bytes` for `key` off the async threads (a WAL segment is up to 16 MiB).
async fn seal_blocking(ring: Arc<Keyring>, key: &str, bytes: Bytes) -> Result<Bytes, String> {
    let object_key = key.to_string();
    tokio::task::spawn_blocking(move || seal_all(&ring.current, &object_key, &bytes))
        .await
        .map_err(|e| format!("encryption task: {e}"))?
        .map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeySource, KeySpec};
    use crate::store::local::LocalStore;
    use futures_util::TryStreamExt;
    use proptest::prelude::*;

    fn spec(id: &str, byte: u8) -> KeySpec {
        KeySpec {
            id: id.into(),
            config_key: "storage.encryption".into(),
            source: KeySource::Inline([byte; KEY_BYTES]),
        }
    }

    fn ring(current: (&str, u8), old: &[(&str, u8)], accept: bool) -> Keyring {
        Keyring::load(&EncryptionSettings {
            current: spec(current.0, current.1),
            old_keys: old.iter().map(|(id, b)| spec(id, *b)).collect(),
            accept_unencrypted: accept,
        })
        .unwrap()
    }

    /// The bytes of `input` split at the given points.
    fn chunks(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([input.len()]) {
            out.push(input[at..c].to_vec());
            at = c;
        }
        out
    }

    fn run<T: Transform>(mut t: T, parts: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for p in parts {
            out.extend(t.push(p)?);
        }
        out.extend(t.finish()?);
        Ok(out)
    }

    fn open_parts(
        ring: &Keyring,
        key: &str,
        sealed: &[u8],
        cuts: &[usize],
    ) -> Result<Vec<u8>, String> {
        let (o, at) = Opener::start(ring, key, sealed)?.ok_or("short header")?;
        run(o, &chunks(&sealed[at..], cuts))
    }

    #[test]
    fn sizes_around_chunk_boundaries_round_trip() {
        let ring = ring(("k1", 1), &[], false);
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
            let input: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = seal_all(&ring.current, "c/wal/x.zst", &input).unwrap();
            assert!(sealed.starts_with(MAGIC));
            let chunks_n = size.div_ceil(CHUNK).max(1);
            assert_eq!(
                sealed.len(),
                8 + 1 + 2 + NONCE + size + chunks_n * TAG,
                "size {size}"
            );
            assert_eq!(
                open_all(&ring, "c/wal/x.zst", &sealed).unwrap(),
                input,
                "size {size}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_chunking_round_trips(size in 0usize..(3 * CHUNK + 100), seal_cuts in proptest::collection::vec(0usize..1_000_000, 0..6), open_cuts in proptest::collection::vec(0usize..1_000_000, 0..6)) {
            let ring = ring(("k1", 1), &[], false);
            let input: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let sealed = run(Sealer::new(&ring.current, "c/backups/b/base.tar.zst"), &chunks(&input, &seal_cuts)).unwrap();
            prop_assert_eq!(open_parts(&ring, "c/backups/b/base.tar.zst", &sealed, &open_cuts).unwrap(), input);
        }
    }

    #[test]
    fn a_wrong_key_an_unknown_id_a_moved_or_altered_object_do_not_open() {
        let ring1 = ring(("k1", 1), &[], false);
        let sealed = seal_all(&ring1.current, "c/wal/a.zst", b"segment").unwrap();
        // Same id, other bytes.
        let other = ring(("k1", 2), &[], false);
        let e = open_all(&other, "c/wal/a.zst", &sealed).unwrap_err();
        assert!(e.contains("does not authenticate with key \"k1\""), "{e}");
        // Unknown id: named, with what is configured.
        let rotated = ring(("k2", 2), &[("k0", 9)], false);
        let e = open_all(&rotated, "c/wal/a.zst", &sealed).unwrap_err();
        assert!(
            e.contains("key id \"k1\", which is not configured (configured: \"k2\", \"k0\")"),
            "{e}"
        );
        // Rotation: the old key opens it.
        let rotated = ring(("k2", 2), &[("k1", 1)], false);
        assert_eq!(
            open_all(&rotated, "c/wal/a.zst", &sealed).unwrap(),
            b"segment"
        );
        // Moved to another name.
        assert!(open_all(&ring1, "c/wal/b.zst", &sealed).is_err());
        // One bit flipped anywhere after the header, or the tail cut.
        let header = 8 + 1 + 2 + NONCE;
        for at in [header, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(
                open_all(&ring1, "c/wal/a.zst", &bad).is_err(),
                "flip at {at}"
            );
        }
        assert!(open_all(&ring1, "c/wal/a.zst", &sealed[..sealed.len() - 1]).is_err());
    }

    #[test]
    fn truncation_at_a_chunk_boundary_is_detected() {
        let ring = ring(("k1", 1), &[], false);
        let input = vec![7u8; 3 * CHUNK + 10];
        let sealed = seal_all(&ring.current, "c/backups/b/base.tar.zst", &input).unwrap();
        let header = 8 + 1 + 2 + NONCE;
        // Exactly two whole chunks: every byte present authenticates, the end does not.
        let cut = &sealed[..header + 2 * (CHUNK + TAG)];
        let e = open_parts(&ring, "c/backups/b/base.tar.zst", cut, &[]).unwrap_err();
        assert!(e.contains("does not authenticate"), "{e}");
    }

    fn local() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().to_path_buf()));
        (dir, store)
    }

    async fn read_stream(store: &dyn ObjectStore, key: &str) -> Result<Vec<u8>, String> {
        let s = store.get_stream(key).await.map_err(|e| e.to_string())?;
        let parts: Vec<Bytes> = s.try_collect().await.map_err(|e| e.to_string())?;
        Ok(parts.concat())
    }

    #[tokio::test]
    async fn only_protected_objects_are_sealed_and_the_checksum_is_keyed() {
        let (_dir, inner) = local();
        let sealed = Sealed::new(inner.clone(), Some(ring(("k1", 1), &[], false)));
        let meta: Metadata = [("sha256".to_string(), "ab".repeat(32))].into();
        assert!(sealed
            .put_if_absent("c/wal/1.zst", Bytes::from_static(b"wal bytes"), meta)
            .await
            .unwrap());
        sealed
            .put_bytes(
                "c/state/cluster.json",
                Bytes::from_static(b"{}"),
                Metadata::new(),
            )
            .await
            .unwrap();
        let raw = inner.get_bytes("c/wal/1.zst").await.unwrap();
        assert!(raw.starts_with(MAGIC));
        assert_eq!(
            &inner.get_bytes("c/state/cluster.json").await.unwrap()[..],
            b"{}"
        );
        assert_eq!(
            &sealed.get_bytes("c/wal/1.zst").await.unwrap()[..],
            b"wal bytes"
        );
        assert_eq!(
            read_stream(&sealed, "c/wal/1.zst").await.unwrap(),
            b"wal bytes"
        );
        let (_, m) = inner.head("c/wal/1.zst").await.unwrap().unwrap();
        assert!(!m.contains_key("sha256"));
        assert_eq!(m.get(KEY_ID).map(String::as_str), Some("k1"));
        assert_eq!(sealed.digest_matches(&m, &"ab".repeat(32)), Some(true));
        assert_eq!(sealed.digest_matches(&m, &"cd".repeat(32)), Some(false));
        // A key that is not configured cannot judge: the caller must read the object.
        let other = Sealed::new(inner.clone(), Some(ring(("k9", 9), &[], false)));
        assert_eq!(other.digest_matches(&m, &"ab".repeat(32)), None);
    }

    #[tokio::test]
    async fn plaintext_objects_are_refused_unless_accepted_and_sealed_ones_need_a_key() {
        let (_dir, inner) = local();
        inner
            .put_bytes(
                "c/wal/old.zst",
                Bytes::from_static(b"plain"),
                Metadata::new(),
            )
            .await
            .unwrap();
        let strict = Sealed::new(inner.clone(), Some(ring(("k1", 1), &[], false)));
        let e = strict
            .get_bytes("c/wal/old.zst")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c/wal/old.zst") && e.contains("accept_unencrypted"),
            "{e}"
        );
        let e = read_stream(&strict, "c/wal/old.zst").await.unwrap_err();
        assert!(e.contains("is not encrypted"), "{e}");
        let lenient = Sealed::new(inner.clone(), Some(ring(("k1", 1), &[], true)));
        assert_eq!(
            &lenient.get_bytes("c/wal/old.zst").await.unwrap()[..],
            b"plain"
        );
        assert_eq!(
            read_stream(&lenient, "c/wal/old.zst").await.unwrap(),
            b"plain"
        );

        strict
            .put_bytes(
                "c/backups/b/backup.json",
                Bytes::from_static(b"{\"id\":1}"),
                Metadata::new(),
            )
            .await
            .unwrap();
        let none = Sealed::new(inner.clone(), None);
        let e = none
            .get_bytes("c/backups/b/backup.json")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c/backups/b/backup.json") && e.contains("is encrypted"),
            "{e}"
        );
        let e = read_stream(&none, "c/backups/b/backup.json")
            .await
            .unwrap_err();
        assert!(e.contains("is encrypted"), "{e}");
        let wrong = Sealed::new(inner.clone(), Some(ring(("k2", 2), &[], false)));
        let e = read_stream(&wrong, "c/backups/b/backup.json")
            .await
            .unwrap_err();
        assert!(e.contains("key id \"k1\""), "{e}");
    }

    #[tokio::test]
    async fn a_large_streamed_object_round_trips_and_a_swapped_one_fails_naming_it() {
        let (_dir, inner) = local();
        let sealed = Sealed::new(inner.clone(), Some(ring(("k1", 1), &[], false)));
        let input: Vec<u8> = (0..(5 * CHUNK + 3)).map(|i| (i % 241) as u8).collect();
        let parts: Vec<Result<Bytes, std::io::Error>> = input
            .chunks(10_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let stored = sealed
            .put_stream(
                "c/backups/a/base.tar.zst",
                Box::pin(futures_util::stream::iter(parts)),
                Metadata::new(),
            )
            .await
            .unwrap();
        assert_eq!(
            stored,
            inner
                .head("c/backups/a/base.tar.zst")
                .await
                .unwrap()
                .unwrap()
                .0
                .size
        );
        assert_eq!(
            read_stream(&sealed, "c/backups/a/base.tar.zst")
                .await
                .unwrap(),
            input
        );
        // Someone with write access to the bucket puts backup a's tar in place of b's.
        let raw = inner.get_bytes("c/backups/a/base.tar.zst").await.unwrap();
        inner
            .put_bytes("c/backups/b/base.tar.zst", raw, Metadata::new())
            .await
            .unwrap();
        let e = read_stream(&sealed, "c/backups/b/base.tar.zst")
            .await
            .unwrap_err();
        assert!(
            e.contains("c/backups/b/base.tar.zst") && e.contains("does not authenticate"),
            "{e}"
        );
    }
}
