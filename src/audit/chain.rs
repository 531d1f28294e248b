//! The hash chain that links every audit line to the one before it, per sink.
//!
//! A line is sealed by appending three members to its JSON object: `seq` (1, 2, 3, … per
//! sink), `prev` (the previous line's `hash`, or 64 zeros for the first line of a chain)
//! and `hash`. `hash` is the SHA-256 (lowercase hex) of the exact bytes of the line with
//! its `,"hash":"…"` member removed, i.e. of the object that ends in `"prev":"…"}`. The
//! canonical content is therefore the bytes as written, not a re-serialization: a verifier
//! in any language only has to cut the last member, e.g.
//! `sed 's/,"hash":"[0-9a-f]*"}$/}/' | sha256sum`.
//!
//! Invariants: sealing never parses or reorders the caller's JSON; `hash` is always the last
//! member and `prev`/`seq` precede it, so the cut is unambiguous. `verify` reports the first
//! broken link with its 1-based line number.

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `prev` of the first line of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_MEMBER: &[u8] = b",\"hash\":\"";

/// Where a chain stands: the last line's `seq` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// `seq` of the last sealed line (0 before the first).
    pub seq: u64,
    /// `hash` of the last sealed line (hex), or [`GENESIS`].
    pub prev: String,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            seq: 0,
            prev: GENESIS.to_string(),
        }
    }
}

impl Chain {
    /// Seals one serialized JSON object (no trailing newline) and appends the sealed line
    /// plus `\n` to `out`. Input that is not an object (`{…}`) is skipped: callers only
    /// pass objects they serialized themselves.
    pub fn seal_into(&mut self, object: &[u8], out: &mut Vec<u8>) {
        let object = trim_ascii(object);
        if object.len() < 2 || object[0] != b'{' || object[object.len() - 1] != b'}' {
            return;
        }
        self.seq += 1;
        let start = out.len();
        out.extend_from_slice(&object[..object.len() - 1]);
        if object.len() > 2 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.seq).as_bytes());
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(self.prev.as_bytes());
        out.extend_from_slice(b"\"}");
        let hash = lower_hex(&Sha256::digest(&out[start..]));
        out.pop(); // the closing brace: `hash` goes inside the object
        out.extend_from_slice(HASH_MEMBER);
        out.extend_from_slice(&hash);
        out.extend_from_slice(b"\"}\n");
        // Hex digits are ASCII; the previous hash's string is reused, not reallocated.
        self.prev.clear();
        self.prev
            .push_str(std::str::from_utf8(&hash).unwrap_or_default());
    }
}

/// A SHA-256 digest in lowercase hex (`hex::encode` goes through a char iterator, which
/// showed at the proxy's rate of access lines).
fn lower_hex(digest: &[u8]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'0'; 64];
    for (i, b) in digest.iter().take(32).enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// Why a line does not fit the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("not a sealed audit line (no trailing \"hash\" member)")]
    NotSealed,
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("\"seq\" or \"prev\" missing or of the wrong type")]
    Fields,
    #[error(
        "hash mismatch: the line's content was changed (stored {stored}, computed {computed})"
    )]
    Hash { stored: String, computed: String },
    #[error("\"prev\" is {found} but the previous line's hash is {expected} (a line was removed, inserted or changed)")]
    Prev { expected: String, found: String },
    #[error("\"seq\" is {found}, expected {expected} (a line was removed or inserted)")]
    Seq { expected: u64, found: u64 },
}

/// The parts of a sealed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
}

/// Checks one line against its own hash and returns its chain fields.
pub fn check_line(line: &[u8]) -> Result<Sealed, LinkError> {
    let line = trim_ascii(line);
    // `,"hash":"<64 hex>"}` is the end of every sealed line.
    let suffix_len = HASH_MEMBER.len() + 64 + 2;
    if line.len() < suffix_len + 2 || !line.ends_with(b"\"}") {
        return Err(LinkError::NotSealed);
    }
    let cut = line.len() - suffix_len;
    if &line[cut..cut + HASH_MEMBER.len()] != HASH_MEMBER {
        return Err(LinkError::NotSealed);
    }
    let stored =
        String::from_utf8_lossy(&line[cut + HASH_MEMBER.len()..line.len() - 2]).into_owned();
    let mut hasher = Sha256::new();
    hasher.update(&line[..cut]);
    hasher.update(b"}");
    let computed = hex::encode(hasher.finalize());
    if computed != stored {
        return Err(LinkError::Hash { stored, computed });
    }
    #[derive(serde::Deserialize)]
    struct Fields {
        seq: u64,
        prev: String,
    }
    let f: Fields = serde_json::from_slice(line).map_err(|e| {
        if e.is_data() {
            LinkError::Fields
        } else {
            LinkError::Json(e.to_string())
        }
    })?;
    Ok(Sealed {
        seq: f.seq,
        prev: f.prev,
        hash: stored,
    })
}

/// Why a file could not be verified, or where its chain breaks.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: broken chain: {source}", path.display())]
    Broken {
        path: PathBuf,
        /// 1-based line number of the first line that does not fit.
        line: u64,
        #[source]
        source: LinkError,
    },
}

/// What a verified file holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    pub lines: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub last_hash: Option<String>,
}

/// Verifies a whole file: every line's own hash, and that each `prev` is the previous
/// line's `hash` and each `seq` the previous one plus one. The first line may continue a
/// chain whose beginning was rotated away, unless its `seq` is 1 (then `prev` must be
/// [`GENESIS`]). Blank lines are not allowed.
pub fn verify_file(path: &Path) -> Result<Verified, VerifyError> {
    let read_err = |source| VerifyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::with_capacity(1024);
    let mut n = 0u64;
    let mut last: Option<Sealed> = None;
    let mut first_seq = None;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
            break;
        }
        n += 1;
        let broken = |source| VerifyError::Broken {
            path: path.to_path_buf(),
            line: n,
            source,
        };
        let s = check_line(&buf).map_err(broken)?;
        match &last {
            None if s.seq == 1 && s.prev != GENESIS => {
                return Err(broken(LinkError::Prev {
                    expected: GENESIS.into(),
                    found: s.prev,
                }))
            }
            None => first_seq = Some(s.seq),
            Some(p) => {
                if s.prev != p.hash {
                    return Err(broken(LinkError::Prev {
                        expected: p.hash.clone(),
                        found: s.prev,
                    }));
                }
                if s.seq != p.seq + 1 {
                    return Err(broken(LinkError::Seq {
                        expected: p.seq + 1,
                        found: s.seq,
                    }));
                }
            }
        }
        last = Some(s);
    }
    Ok(Verified {
        lines: n,
        first_seq,
        last_seq: last.as_ref().map(|s| s.seq),
        last_hash: last.map(|s| s.hash),
    })
}

/// How far back from the end of a file [`read_tail`] looks for lines.
pub const TAIL_WINDOW: u64 = 64 << 20;

/// Reads the complete lines at the end of an open file, newest first, within `window`
/// bytes, and returns them with the length of the file's complete part (a crash in the
/// middle of a write can leave a partial last line, which is excluded).
pub fn read_tail(file: &mut std::fs::File, window: u64) -> std::io::Result<(Vec<Vec<u8>>, u64)> {
    let len = file.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(window);
    file.seek(SeekFrom::Start(start))?;
    let mut data = Vec::with_capacity((len - start) as usize);
    file.take(len - start).read_to_end(&mut data)?;
    // Complete part: up to and including the last newline.
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut lines: Vec<Vec<u8>> = data[..complete]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    // A window that starts mid-line cuts the oldest line: drop it.
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    lines.reverse();
    Ok((lines, start + complete as u64))
}

/// The last complete line of an open file, however long, and the length of the file's
/// complete part (see [`read_tail`]).
pub fn last_line(file: &mut std::fs::File) -> std::io::Result<(Option<Vec<u8>>, u64)> {
    let len = file.metadata()?.len();
    let mut window = 1u64 << 20;
    loop {
        let (mut lines, complete) = read_tail(file, window)?;
        if !lines.is_empty() || window >= len {
            return Ok((
                if lines.is_empty() {
                    None
                } else {
                    Some(lines.swap_remove(0))
                },
                complete,
            ));
        }
        window = window.saturating_mul(8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_all(objects: &[&str]) -> Vec<u8> {
        let mut chain = Chain::default();
        let mut out = Vec::new();
        for o in objects {
            chain.seal_into(o.as_bytes(), &mut out);
        }
        out
    }

    #[test]
    fn the_hex_of_a_digest_is_what_hex_encode_gives() {
        let d = Sha256::digest(b"pgvigil");
        assert_eq!(lower_hex(&d).as_slice(), hex::encode(d).as_bytes());
    }

    #[test]
    fn sealed_lines_are_json_and_chain() {
        let out = seal_all(&[r#"{"a":1}"#, r#"{"b":"x"}"#, "{}"]);
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 3);
        let s: Vec<Sealed> = lines.iter().map(|l| check_line(l).unwrap()).collect();
        assert_eq!(s[0].prev, GENESIS);
        assert_eq!(s[1].prev, s[0].hash);
        assert_eq!(s[2].prev, s[1].hash);
        assert_eq!((s[0].seq, s[1].seq, s[2].seq), (1, 2, 3));
        let v: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["seq"], 1);
        // The hash is over the line without its hash member.
        let cut = std::str::from_utf8(lines[1]).unwrap();
        let body = format!("{}}}", &cut[..cut.find(",\"hash\"").unwrap()]);
        assert_eq!(hex::encode(Sha256::digest(body.as_bytes())), s[1].hash);
        let empty: serde_json::Value = serde_json::from_slice(lines[2]).unwrap();
        assert_eq!(empty["seq"], 3);
    }

    #[test]
    fn not_objects_are_skipped() {
        assert!(seal_all(&["", "[1]", "x"]).is_empty());
    }

    #[test]
    fn a_changed_byte_breaks_the_hash() {
        let out = seal_all(&[r#"{"a":1}"#]);
        let mut changed = out.clone();
        changed[5] = b'2';
        assert!(matches!(check_line(&changed), Err(LinkError::Hash { .. })));
        assert!(check_line(&out).is_ok());
        assert_eq!(check_line(br#"{"a":1}"#), Err(LinkError::NotSealed));
    }

    #[test]
    fn verify_names_the_first_broken_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let objects: Vec<String> = (0..10).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
        let refs: Vec<&str> = objects.iter().map(String::as_str).collect();
        let out = seal_all(&refs);
        std::fs::write(&path, &out).unwrap();
        let v = verify_file(&path).unwrap();
        assert_eq!(v.lines, 10);
        assert_eq!(v.last_seq, Some(10));

        // Remove line 5: line 5 (the old 6th) no longer links.
        let text = String::from_utf8(out.clone()).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(4);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        match verify_file(&path) {
            Err(VerifyError::Broken { line, source, .. }) => {
                assert_eq!(line, 5);
                assert!(matches!(source, LinkError::Prev { .. }), "{source}");
            }
            other => panic!("{other:?}"),
        }
        // Rewriting a line and its hash still breaks the next line's prev.
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut c = Chain {
            seq: 2,
            prev: check_line(lines[1].as_bytes()).unwrap().hash,
        };
        let mut forged = Vec::new();
        c.seal_into(br#"{"i":99}"#, &mut forged);
        lines[2] = String::from_utf8(forged).unwrap().trim_end().to_string();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        match verify_file(&path) {
            Err(VerifyError::Broken { line, .. }) => assert_eq!(line, 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tail_skips_a_partial_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, b"one\ntwo\nthr").unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let (lines, complete) = read_tail(&mut f, 1 << 20).unwrap();
        assert_eq!(lines, vec![b"two".to_vec(), b"one".to_vec()]);
        assert_eq!(complete, 8);
        let (lines, _) = read_tail(&mut f, 9).unwrap();
        assert_eq!(lines, vec![b"two".to_vec()]);
    }
}
