//! A small tmpfs mounted on a test's own directory, for disk-full tests: mounted with a
//! size and an owner, grown (or shrunk) in place with a remount that keeps its files, and
//! unmounted when dropped, also when the test panics. Needs root (the tests run as root
//! in CI); a failed mount is a hard failure naming that.

use std::path::{Path, PathBuf};

/// A mounted tmpfs.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` ("6m", "256k") on `path` (created if missing), owned by the
    /// user pgvigil writes as: the server user when the tests run as root.
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (uid, gid) = match pgvigil::pg::binaries::server_user() {
            Ok(Some(ids)) => ids,
            _ => (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ),
        };
        let options = format!("size={size},mode=0700,uid={uid},gid={gid}");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(
            out.status.success(),
            "mounting a tmpfs on {} (the test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Changes the size in place; the files stay ("space is back").
    pub fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .output()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(
            out.status.success(),
            "remounting {}: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}
