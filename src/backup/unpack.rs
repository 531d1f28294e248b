//! Unpacking a backup's tar stream, which is hostile until its checksum matched: anyone who
//! can write to the bucket can plant entries in it. The tar crate's own `unpack` strips `..`
//! and absolute paths but creates symlinks to anywhere, hard links and device nodes, and
//! writes through a symlink an earlier entry planted. So entries are judged here, one by one:
//!
//! - only regular files, directories and symlinks are accepted; hard links, devices, FIFOs
//!   and sparse files are refused, naming the entry;
//! - a path must stay inside the target (no absolute paths, no `..`), and no entry may be
//!   listed twice;
//! - a symlink's target must be relative and free of `..`, so it resolves inside the target
//!   whatever other links it passes through; symlinks are created after every file and
//!   directory, so no entry is ever written through one;
//! - files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` and set-id bits are dropped.
//!
//! The caller unpacks into a staging directory and moves its content into place only after
//! the stream's SHA-256 matched ([`super::restore`]). Files pgvigil itself writes into a
//! restored directory go through [`append_no_follow`] and [`replace_no_follow`].

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// Why an entry was refused, or the I/O error that stopped the unpack.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the backup archive holds {entry:?}, {why}: refused (a backup holds only files, directories and links inside the data directory)")]
    Refused { entry: String, why: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<UnpackError> for std::io::Error {
    fn from(e: UnpackError) -> Self {
        match e {
            UnpackError::Io(e) => e,
            refused => std::io::Error::new(std::io::ErrorKind::InvalidData, refused.to_string()),
        }
    }
}

fn refused(entry: &Path, why: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        entry: entry.display().to_string(),
        why: why.into(),
    }
}

/// The entry's path relative to the target, with `.` components removed; None for the
/// archive's root (`./`).
fn relative(raw: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(refused(raw, "a path with `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(raw, "an absolute path"))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Unpacks a (decompressed) tar stream into `to`, an empty directory, judging every entry
/// as the module docs say.
pub fn unpack_tar(reader: impl Read, to: &Path) -> Result<(), UnpackError> {
    let unpacker = Unpacker::new(to);
    unpacker.entries(reader)?;
    unpacker.finish()
}

/// Unpacks one backup whose entries come in several tar streams (unpacked in parallel, one
/// thread each): the rules hold across all of them, as if they were one stream. An entry
/// listed in two streams is refused, and the symlinks of every stream are created only by
/// [`Unpacker::finish`], after every stream's files were written.
pub struct Unpacker {
    to: PathBuf,
    seen: Mutex<HashSet<PathBuf>>,
    links: Mutex<Vec<(PathBuf, PathBuf)>>,
    /// Directories known to exist: a file's parent is made once, not asked for (a mkdir
    /// and a stat) before every one of a cluster's ~25,000 files.
    made: Mutex<HashSet<PathBuf>>,
}

impl Unpacker {
    /// An unpacker into `to`, an empty directory.
    pub fn new(to: &Path) -> Unpacker {
        Unpacker {
            to: to.to_path_buf(),
            seen: Mutex::default(),
            links: Mutex::default(),
            made: Mutex::default(),
        }
    }

    /// Makes `dir` and its missing parents unless this unpacker already made or saw it.
    fn ensure_dir(&self, dir: &Path) -> std::io::Result<()> {
        if self.made.lock().is_ok_and(|made| made.contains(dir)) {
            return Ok(());
        }
        make_dirs(dir)?;
        if let Ok(mut made) = self.made.lock() {
            made.insert(dir.to_path_buf());
        }
        Ok(())
    }

    /// Whether `rel` is listed for the first time in any stream.
    fn first_listing(&self, rel: &Path) -> bool {
        self.seen
            .lock()
            .map(|mut seen| seen.insert(rel.to_path_buf()))
            .unwrap_or(false)
    }

    /// Unpacks the files and directories of one stream and records its symlinks; returns
    /// the bytes of file content written.
    pub fn entries(&self, reader: impl Read) -> Result<u64, UnpackError> {
        let to = &self.to;
        let mut archive = tar::Archive::new(reader);
        let mut written = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path()?.into_owned();
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() {
                continue;
            }
            let Some(rel) = relative(&raw)? else {
                continue; // "./": the target itself
            };
            if !self.first_listing(&rel) {
                return Err(refused(&raw, "listed twice"));
            }
            let dest = to.join(&rel);
            let mode = entry.header().mode().unwrap_or(0o600) & 0o777;
            if kind.is_dir() {
                if let Some(parent) = dest.parent() {
                    self.ensure_dir(parent)?;
                }
                match std::fs::DirBuilder::new().mode(mode | 0o700).create(&dest) {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {}
                    other => other?,
                }
                if let Ok(mut made) = self.made.lock() {
                    made.insert(dest.clone());
                }
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                if let Some(parent) = dest.parent() {
                    self.ensure_dir(parent)?;
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode | 0o600)
                    .custom_flags(libc_o_nofollow())
                    .open(&dest)?;
                loop {
                    let n = entry.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n])?;
                    written += n as u64;
                }
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| refused(&raw, "a symlink without a target"))?
                    .into_owned();
                let escapes = target.components().any(|c| {
                    matches!(
                        c,
                        Component::ParentDir | Component::RootDir | Component::Prefix(_)
                    )
                });
                if escapes || target.as_os_str().is_empty() {
                    return Err(refused(
                        &raw,
                        format!(
                            "a symlink to {:?}, which may point outside the data directory",
                            target.display().to_string()
                        ),
                    ));
                }
                if let Ok(mut links) = self.links.lock() {
                    links.push((rel, target));
                }
            } else {
                let what = if kind.is_hard_link() {
                    "a hard link"
                } else if kind.is_character_special() || kind.is_block_special() {
                    "a device node"
                } else if kind.is_fifo() {
                    "a FIFO"
                } else if kind.is_gnu_sparse() {
                    "a sparse file"
                } else {
                    "an entry of an unknown type"
                };
                return Err(refused(&raw, what));
            }
        }
        Ok(written)
    }

    /// Creates the symlinks of every stream, once all of them were unpacked: no file or
    /// directory was written through one. A link below another link would be created
    /// through it, so that is refused too.
    pub fn finish(self) -> Result<(), UnpackError> {
        let links = self.links.into_inner().unwrap_or_default();
        let link_paths: HashSet<&PathBuf> = links.iter().map(|(p, _)| p).collect();
        for (rel, target) in &links {
            if rel
                .ancestors()
                .skip(1)
                .any(|a| link_paths.contains(&a.to_path_buf()))
            {
                return Err(refused(rel, "a path below another symlink"));
            }
            if let Some(parent) = self.to.join(rel).parent() {
                make_dirs(parent)?;
            }
            std::os::unix::fs::symlink(target, self.to.join(rel))?;
        }
        Ok(())
    }
}

/// Creates `dir` and its missing parents (0700); no symlink exists in the target while
/// files are written, so this cannot leave it.
fn make_dirs(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

fn symlink_refusal(path: &Path, e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
        std::io::Error::new(
            e.kind(),
            format!(
                "{} is a symlink: pgvigil does not write through links in a restored directory",
                path.display()
            ),
        )
    } else {
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    }
}

/// Appends `text` to `path` (created 0600 if missing), refusing to follow a symlink there.
pub fn append_no_follow(path: &Path, text: &[u8]) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .and_then(|mut f| f.write_all(text))
        .map_err(|e| symlink_refusal(path, e))
}

/// Replaces `path` with a new file holding `text`: whatever was there (a file or a link)
/// is removed first, and the new file is created exclusively, never through a link.
pub fn replace_no_follow(path: &Path, text: &[u8]) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(std::io::Error::other(format!(
                "{} is a directory",
                path.display()
            )))
        }
        Ok(_) => std::fs::remove_file(path).map_err(|e| symlink_refusal(path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(symlink_refusal(path, e)),
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .and_then(|mut f| f.write_all(text))
        .map_err(|e| symlink_refusal(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap_or_else(|e| panic!("{e}"))
    }

    fn header(kind: tar::EntryType, path: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o600);
        h.set_size(size);
        // set_path refuses `..`; write the name bytes directly, as a hostile tool would.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let h = header(tar::EntryType::Regular, path, data.len() as u64);
        b.append(&h, data).unwrap_or_else(|e| panic!("{e}"));
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = header(kind, path, 0);
        h.set_link_name(target).unwrap_or_else(|e| panic!("{e}"));
        h.set_cksum();
        b.append(&h, std::io::empty())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn unpack(data: &[u8]) -> (tempfile::TempDir, Result<(), UnpackError>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let to = dir.path().join("data");
        std::fs::create_dir(&to).unwrap_or_else(|e| panic!("{e}"));
        let r = unpack_tar(data, &to);
        (dir, r)
    }

    #[test]
    fn files_directories_and_inside_links_unpack() {
        let data = archive(|b| {
            file(b, "PG_VERSION", b"17\n");
            file(b, "base/1/1259", b"page");
            link(b, tar::EntryType::Symlink, "conf", "base/1/1259");
        });
        let (dir, r) = unpack(&data);
        r.unwrap_or_else(|e| panic!("{e}"));
        let to = dir.path().join("data");
        assert_eq!(
            std::fs::read(to.join("PG_VERSION")).ok(),
            Some(b"17\n".to_vec())
        );
        assert_eq!(std::fs::read(to.join("conf")).ok(), Some(b"page".to_vec()));
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                archive(|b| link(b, tar::EntryType::Symlink, "pg_hba.conf", "/etc/passwd")),
                "\"pg_hba.conf\", a symlink to \"/etc/passwd\"",
            ),
            (
                archive(|b| link(b, tar::EntryType::Symlink, "x", "a/../../up")),
                "a symlink to \"a/../../up\"",
            ),
            (
                archive(|b| link(b, tar::EntryType::Link, "hard", "/etc/shadow")),
                "\"hard\", a hard link",
            ),
            (
                archive(|b| {
                    b.append(&header(tar::EntryType::Fifo, "fifo", 0), std::io::empty())
                        .unwrap_or_else(|e| panic!("{e}"))
                }),
                "\"fifo\", a FIFO",
            ),
            (
                archive(|b| {
                    b.append(&header(tar::EntryType::Char, "null", 0), std::io::empty())
                        .unwrap_or_else(|e| panic!("{e}"))
                }),
                "\"null\", a device node",
            ),
            (
                archive(|b| file(b, "../escape", b"x")),
                "\"../escape\", a path with `..`",
            ),
            (
                archive(|b| {
                    file(b, "f", b"1");
                    file(b, "f", b"2");
                }),
                "\"f\", listed twice",
            ),
            (
                archive(|b| {
                    link(b, tar::EntryType::Symlink, "d", "sub");
                    link(b, tar::EntryType::Symlink, "d/e", "x");
                }),
                "a path below another symlink",
            ),
        ];
        for (data, expected) in cases {
            let (dir, r) = unpack(&data);
            let e = match r {
                Err(e) => e.to_string(),
                Ok(()) => panic!("accepted; expected {expected}"),
            };
            assert!(e.contains(expected), "{e}\nexpected: {expected}");
            let beside: Vec<_> = std::fs::read_dir(dir.path())
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert_eq!(beside, vec![std::ffi::OsString::from("data")]);
        }
    }

    #[test]
    fn a_file_is_never_written_through_a_planted_link() {
        // The link comes first in the stream; the file with its name then fails (EEXIST is
        // impossible: links are made last), and nothing outside is touched.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap_or_else(|e| panic!("{e}"));
        let data = archive(|b| {
            link(b, tar::EntryType::Symlink, "postgresql.auto.conf", "target");
            file(b, "target", b"inside");
        });
        let to = dir.path().join("data");
        std::fs::create_dir(&to).unwrap_or_else(|e| panic!("{e}"));
        unpack_tar(&data[..], &to).unwrap_or_else(|e| panic!("{e}"));
        // pgvigil's own writes refuse the link.
        let e = append_no_follow(&to.join("postgresql.auto.conf"), b"x").unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");
        replace_no_follow(&to.join("postgresql.auto.conf"), b"new")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(to.join("target")).ok(),
            Some(b"inside".to_vec())
        );
        assert_eq!(std::fs::read(&outside).ok(), Some(b"keep".to_vec()));
    }

    #[test]
    fn streams_are_judged_together_and_links_come_after_every_stream() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("t");
        std::fs::create_dir(&to).unwrap();
        let file = |path: &str| {
            archive(|b| {
                let h = header(tar::EntryType::Regular, path, 3);
                b.append(&h, &b"abc"[..]).unwrap();
            })
        };
        // Listed in two streams: refused as in one.
        let u = Unpacker::new(&to);
        u.entries(&file("base/1/1")[..]).unwrap();
        let e = u.entries(&file("base/1/1")[..]).unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");

        // A link in one stream over a directory another stream writes into: the files are
        // written first, into a real directory, and the link is refused at the end.
        let to = dir.path().join("u");
        std::fs::create_dir(&to).unwrap();
        let link = archive(|b| {
            let mut h = header(tar::EntryType::Symlink, "pg_wal", 0);
            h.set_link_name("base").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        });
        let u = Unpacker::new(&to);
        u.entries(&link[..]).unwrap();
        u.entries(&file("pg_wal/x")[..]).unwrap();
        assert!(to.join("pg_wal").is_dir() && !to.join("pg_wal").is_symlink());
        assert!(u.finish().is_err());
        assert!(
            !to.join("base").exists(),
            "nothing written through the link"
        );
    }
}
