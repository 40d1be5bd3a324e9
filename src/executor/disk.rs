//! What a job gets on disk: its own scratch directory, and the block
//! devices its I/O limits apply to.
//!
//! A job's root filesystem is read-only and its `/tmp` is memory, so
//! without `executor.scratch_dir` it writes nothing to disk. With it, each
//! attempt gets a fresh directory `<scratch_dir>/<container name>`, owned
//! by the user the container runs as and mounted at `/scratch`; it goes
//! with the container. `executor.policy.io_read_bps` / `io_write_bps` are
//! set on the container for every whole disk under the scratch directory
//! and under the engine's data root (the kernel's blkio throttle takes a
//! disk, not a partition).

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where a job's scratch directory appears inside its container.
pub const SCRATCH_MOUNT: &str = "/scratch";

/// The node's scratch root and the disks job I/O is throttled on.
#[derive(Debug, Clone, Default)]
pub struct JobDisk {
    scratch_dir: Option<PathBuf>,
    /// Device nodes (`/dev/vda`) of the whole disks under the scratch root
    /// and the engine's data root, without repeats.
    devices: Vec<String>,
}

impl JobDisk {
    /// Makes the scratch root if need be and finds the disks under it and
    /// under `engine_root` (the engine's data root, when it is known and on
    /// this machine). Err: the scratch root cannot be made.
    pub fn new(scratch_dir: Option<PathBuf>, engine_root: Option<&Path>) -> io::Result<JobDisk> {
        if let Some(dir) = &scratch_dir {
            if !dir.exists() {
                // Jobs' files are theirs: other users of this host do not
                // even list them (the engine, as root, still mounts them).
                std::fs::create_dir_all(dir)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        let mut devices = Vec::new();
        for path in scratch_dir.as_deref().into_iter().chain(engine_root) {
            match disk_of(path) {
                Some(device) if !devices.contains(&device) => devices.push(device),
                Some(_) => {}
                None => {
                    tracing::debug!(path = %path.display(), "no block device under this path to throttle")
                }
            }
        }
        Ok(JobDisk {
            scratch_dir,
            devices,
        })
    }

    /// The device nodes the I/O limits apply to.
    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    fn dir_for(&self, container: &str) -> Option<PathBuf> {
        // Container names are `drover-<job id>-<attempt>`: one path part.
        let valid = !container.is_empty()
            && container
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !container.starts_with('.');
        valid.then(|| self.scratch_dir.as_ref().map(|d| d.join(container)))?
    }

    /// A fresh, empty scratch directory for `container`, owned by
    /// `uid:gid`, as a bind for the engine (`host:/scratch:rw`); None when
    /// the node gives jobs no scratch. Anything left under that name (a
    /// crash between making it and removing its container) is wiped first.
    pub fn prepare(&self, container: &str, uid: u32, gid: u32) -> io::Result<Option<String>> {
        let Some(dir) = self.dir_for(container) else {
            return Ok(None);
        };
        remove_dir(&dir)?;
        std::fs::create_dir(&dir)?;
        if let Err(e) = std::os::unix::fs::chown(&dir, Some(uid), Some(gid)) {
            // Not root: the job still needs to write there. Only the
            // container (and this node's user) sees this directory.
            tracing::debug!(error = %e, "cannot chown the scratch directory; making it writable by all");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        }
        Ok(Some(format!("{}:{SCRATCH_MOUNT}:rw", dir.display())))
    }

    /// Removes `container`'s scratch directory, if any.
    pub fn release(&self, container: &str) {
        if let Some(dir) = self.dir_for(container) {
            if let Err(e) = remove_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a job's scratch directory");
            }
        }
    }

    /// Removes every scratch directory whose container is not in `live`
    /// (left by a node that died between an attempt's end and its clean-up).
    pub fn sweep(&self, live: &HashSet<String>) {
        let Some(root) = &self.scratch_dir else {
            return;
        };
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %root.display(), error = %e, "cannot list the scratch directory");
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("drover-") && !live.contains(&name) {
                self.release(&name);
            }
        }
    }
}

fn remove_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The device node of the whole disk holding `path` (`/dev/vda` for a file
/// on `/dev/vda1`), from sysfs; None for a filesystem on no block device
/// (tmpfs, overlay) or one sysfs does not show.
fn disk_of(path: &Path) -> Option<String> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    // A partition's sysfs directory sits inside its disk's.
    let disk = if sys.join("partition").exists() {
        sys.parent()?.to_path_buf()
    } else {
        sys
    };
    let uevent = std::fs::read_to_string(disk.join("uevent")).ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let node = format!("/dev/{name}");
    Path::new(&node).exists().then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_directories_come_and_go_with_their_containers() {
        let root = tempfile::tempdir().unwrap();
        let disk = JobDisk::new(Some(root.path().join("scratch")), None).unwrap();
        let mode = std::fs::metadata(root.path().join("scratch"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "a scratch root it makes is private");
        let bind = disk.prepare("drover-a-1", 4242, 4242).unwrap().unwrap();
        let dir = root.path().join("scratch/drover-a-1");
        assert_eq!(bind, format!("{}:/scratch:rw", dir.display()));
        std::fs::write(dir.join("left-over"), b"x").unwrap();
        // Prepared again (a retry of the same name): empty again.
        disk.prepare("drover-a-1", 4242, 4242).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        disk.prepare("drover-b-1", 4242, 4242).unwrap();
        disk.sweep(&HashSet::from(["drover-b-1".to_string()]));
        assert!(!dir.exists(), "an orphan is swept");
        assert!(root.path().join("scratch/drover-b-1").exists());
        disk.release("drover-b-1");
        assert!(!root.path().join("scratch/drover-b-1").exists());
        // Names that would leave the root are never paths.
        for bad in ["", "..", "../x", "a/b", ".hidden"] {
            assert_eq!(disk.prepare(bad, 1, 1).unwrap(), None, "{bad:?}");
        }
        // No scratch root: no scratch.
        let none = JobDisk::new(None, None).unwrap();
        assert_eq!(none.prepare("drover-a-1", 1, 1).unwrap(), None);
    }

    #[test]
    fn a_path_on_tmpfs_has_no_disk_to_throttle() {
        // /dev/shm is tmpfs wherever Linux runs: nothing to throttle.
        assert_eq!(disk_of(Path::new("/dev/shm")), None);
    }
}
