//! Disk space, for the places pgvigil writes to a local file system (a `file://`
//! repository, the audit file, a restore target, the drill directory): how much is free,
//! and whether an I/O error means the disk is full. One helper so that every "disk full"
//! message names the path and the free space the same way, and so that the next run,
//! once space is back, has nothing half-written to trip over (each writer removes its
//! partial file; see the callers).

use std::path::Path;

/// Bytes available to this process on the file system of `path` (or of its nearest
/// existing ancestor, for a path not created yet); None when it cannot be asked.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut at = Some(path);
    while let Some(p) = at {
        if let Ok(s) = nix::sys::statvfs::statvfs(p) {
            // The field types are u64 here but narrower on 32-bit targets.
            #[allow(clippy::unnecessary_cast)]
            return Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64));
        }
        at = p.parent();
    }
    None
}

/// Whether `e` says the file system (or the user's quota) is full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::errno::Errno::ENOSPC as i32 || code == nix::errno::Errno::EDQUOT as i32
    )
}

/// "`<path>` is full (12 MiB free)": the sentence every disk-full error carries.
pub fn full_message(path: &Path) -> String {
    match free_bytes(path) {
        Some(free) if free >= 1 << 20 => {
            format!("{} is full ({} MiB free)", path.display(), free >> 20)
        }
        Some(free) => format!("{} is full ({free} bytes free)", path.display()),
        None => format!("{} is full", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_is_enospc_or_a_quota() {
        assert!(is_full(&std::io::Error::from_raw_os_error(
            nix::errno::Errno::ENOSPC as i32
        )));
        assert!(is_full(&std::io::Error::from_raw_os_error(
            nix::errno::Errno::EDQUOT as i32
        )));
        assert!(!is_full(&std::io::Error::from_raw_os_error(
            nix::errno::Errno::EIO as i32
        )));
    }

    #[test]
    fn a_missing_path_is_asked_of_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not/yet/created");
        assert!(free_bytes(&missing).is_some());
        assert!(full_message(&missing).contains("free"));
    }
}
