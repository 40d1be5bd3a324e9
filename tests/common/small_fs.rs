//! A small real filesystem for tests that run a node out of disk: an ext4
//! image on a loop device, mounted in a temporary directory, plus a ballast
//! file that takes all but a chosen amount of its free space. Unmounted and
//! deleted on drop, also when the test fails.
//!
//! Mounting needs root. Without it (or without mkfs.ext4) the test is
//! skipped with a message, unless `DROVER_REQUIRE_FAULTS=1` (CI sets it), in
//! which case it fails: a fault test that silently skips proves nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Name of the ballast file inside the filesystem.
const BALLAST: &str = "ballast";

/// A mounted ext4 filesystem of a fixed size (see the module docs).
pub struct SmallFs {
    /// Holds the image file and the mount point; removed after unmounting.
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallFs {
    /// A new filesystem of `mib` MiB, or None (with the reason printed) if
    /// this machine cannot mount one and the faults are not required.
    pub fn create_or_skip(mib: u64) -> Option<SmallFs> {
        match SmallFs::create(mib) {
            Ok(fs) => Some(fs),
            Err(reason) if std::env::var("DROVER_REQUIRE_FAULTS").as_deref() != Ok("1") => {
                eprintln!("skipped: cannot mount a small filesystem ({reason}); run as root, or set DROVER_REQUIRE_FAULTS=1 to make this a failure");
                None
            }
            Err(reason) => {
                panic!("DROVER_REQUIRE_FAULTS=1 but cannot mount a small filesystem: {reason}")
            }
        }
    }

    fn create(mib: u64) -> Result<SmallFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(mib << 20).map_err(|e| e.to_string())?;
        run("mkfs.ext4", &["-q", "-F", path_str(&image)?])?;
        run(
            "mount",
            &["-o", "loop", path_str(&image)?, path_str(&mount)?],
        )?;
        Ok(SmallFs { _dir: dir, mount })
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Bytes free for an unprivileged writer (what a node sees).
    pub fn available(&self) -> u64 {
        let stat = rustix::fs::statvfs(&self.mount).expect("statvfs of the test filesystem");
        stat.f_bavail * stat.f_frsize
    }

    /// Takes all free space but `bytes` with the ballast file (replacing
    /// any earlier ballast).
    pub fn fill_leaving(&self, bytes: u64) {
        self.free_ballast();
        let take = self.available().saturating_sub(bytes);
        if take == 0 {
            return;
        }
        let ballast = self.mount.join(BALLAST);
        run(
            "fallocate",
            &[
                "-l",
                &take.to_string(),
                path_str(&ballast).expect("utf-8 path"),
            ],
        )
        .expect("fallocate the ballast");
    }

    /// Frees the ballast's space.
    pub fn free_ballast(&self) {
        match std::fs::remove_file(self.mount.join(BALLAST)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove the ballast: {e}"),
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // A process still holding files there (a node being killed) makes a
        // plain unmount fail; a lazy one detaches at once and frees the
        // loop device when the last file closes.
        let mount = self.mount.to_string_lossy().to_string();
        if run("umount", &[&mount]).is_err() {
            let _ = run("umount", &["-l", &mount]);
        }
    }
}

fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
