//! Secrets and configs as files: the process runtime's side of a task's
//! [`MountedFile`](crate::runtime::MountedFile)s.
//!
//! ```text
//!  daemon (prepare)                                   shim (before it spawns the task)
//!  ────────────────                                   ────────────────────────────────
//!  <state_root>/files/            0700                unshare(CLONE_NEWNS), / made rprivate
//!    <task id>/                   0700                tmpfs on /run/secrets (this task only)
//!      0, 1, ...   data, with the file's mode/uid/gid bind each file on its target, read-only
//!  target outside /run/secrets missing: an empty     the host keeps its own view: it never
//!  placeholder is created (removed with the task)     sees the data at the targets
//!  remove: the task's directory and placeholders
//! ```
//!
//! Mount namespaces need root (`CAP_SYS_ADMIN`): a task with files on a daemon that is not root
//! fails at prepare with a message saying so, rather than running without its files.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::{MountedFile, RuntimeError};

/// Where secrets appear in a task's view.
pub const SECRETS_DIR: &str = "/run/secrets";

/// One file of a task as the shim mounts it (recorded in `spec.json`; holds no data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileMount {
    /// The file under `<state_root>/files/<task id>/`.
    pub source: PathBuf,
    /// Absolute path in the task's view.
    pub target: String,
    /// Prepare created an empty file at `target` on the host to mount over; removed with the
    /// task.
    #[serde(default)]
    pub placeholder: bool,
}

/// Checks a target: absolute, without `.`/`..` components, not the root.
pub(crate) fn validate_target(task_id: &str, target: &str) -> Result<(), RuntimeError> {
    let p = Path::new(target);
    let bad = !p.is_absolute()
        || p.components().count() < 2
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || target.ends_with('/');
    if bad {
        return Err(RuntimeError::InvalidSpec(format!(
            "task {task_id}: invalid file target {target:?}: it must be an absolute path to a \
             file, without \"..\""
        )));
    }
    Ok(())
}

fn under_secrets_dir(target: &str) -> bool {
    Path::new(target).starts_with(SECRETS_DIR)
}

/// The directory holding `task_id`'s files.
pub(crate) fn task_files_dir(files_root: &Path, task_id: &str) -> PathBuf {
    files_root.join(task_id)
}

/// Writes `files` for `task_id` under `files_root` (both directories 0700), each with its mode,
/// uid and gid, and creates placeholders for targets outside `/run/secrets` that do not exist.
/// Blocking.
pub(crate) fn write_task_files(
    files_root: &Path,
    task_id: &str,
    files: &[MountedFile],
) -> Result<Vec<FileMount>, RuntimeError> {
    let euid = nix::unistd::geteuid();
    if !files.is_empty() && !euid.is_root() {
        return Err(RuntimeError::InvalidSpec(format!(
            "task {task_id}: secrets and configs are mounted into the task's own mount \
             namespace, which needs root, but the daemon runs as uid {euid}; run the daemon as \
             root or remove the service's secrets and configs"
        )));
    }
    for f in files {
        validate_target(task_id, &f.target)?;
    }
    let io = |what: String| move |e| RuntimeError::io(what, e);
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder
        .create(files_root)
        .map_err(io(format!("creating {}", files_root.display())))?;
    std::fs::set_permissions(files_root, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("securing {}", files_root.display())))?;
    let dir = task_files_dir(files_root, task_id);
    builder
        .create(&dir)
        .map_err(io(format!("creating {}", dir.display())))?;
    let mut mounts = Vec::with_capacity(files.len());
    match write_each(&dir, files, &mut mounts) {
        Ok(()) => Ok(mounts),
        Err(e) => {
            // Leave nothing behind: neither data nor mount points.
            let _ = remove_task_files(files_root, task_id, &mounts);
            Err(e)
        }
    }
}

fn write_each(
    dir: &Path,
    files: &[MountedFile],
    mounts: &mut Vec<FileMount>,
) -> Result<(), RuntimeError> {
    let io = |what: String| move |e| RuntimeError::io(what, e);
    for (i, f) in files.iter().enumerate() {
        let source = dir.join(i.to_string());
        let tmp = dir.join(format!("{i}.tmp"));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(format!("creating {}", tmp.display())))?;
        out.write_all(&f.data)
            .and_then(|()| out.sync_all())
            .map_err(io(format!("writing {}", tmp.display())))?;
        drop(out);
        std::os::unix::fs::chown(&tmp, Some(f.uid), Some(f.gid)).map_err(io(format!(
            "chown {}:{} {}",
            f.uid,
            f.gid,
            tmp.display()
        )))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(io(format!("chmod {:o} {}", f.mode, tmp.display())))?;
        std::fs::rename(&tmp, &source).map_err(io(format!("renaming {}", tmp.display())))?;
        let mut placeholder = false;
        let target = Path::new(&f.target);
        if !under_secrets_dir(&f.target) && std::fs::symlink_metadata(target).is_err() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("creating {}", parent.display())))?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(target)
                .map_err(io(format!("creating the mount point {}", target.display())))?;
            placeholder = true;
        }
        mounts.push(FileMount {
            source,
            target: f.target.clone(),
            placeholder,
        });
    }
    Ok(())
}

/// Removes `task_id`'s files and the placeholders prepare created (only while they are still
/// empty regular files). Blocking; a task without files is fine.
pub(crate) fn remove_task_files(
    files_root: &Path,
    task_id: &str,
    mounts: &[FileMount],
) -> Result<(), RuntimeError> {
    for m in mounts.iter().filter(|m| m.placeholder) {
        let t = Path::new(&m.target);
        if std::fs::symlink_metadata(t).is_ok_and(|md| md.is_file() && md.len() == 0) {
            let _ = std::fs::remove_file(t);
        }
    }
    let dir = task_files_dir(files_root, task_id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io(format!("removing {}", dir.display()), e)),
    }
}

/// In the shim, before it spawns the task: moves the shim into a mount namespace of its own
/// (inherited by the task), where `/run/secrets` is a private tmpfs and each file is bound
/// read-only on its target. Nothing of this is visible outside the namespace.
pub(crate) fn enter_private_mounts(mounts: &[FileMount]) -> Result<(), String> {
    if mounts.is_empty() {
        return Ok(());
    }
    sys::unshare_mount_namespace()
        .map_err(|e| format!("creating the task's mount namespace: {e}"))?;
    sys::mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(|e| format!("making the task's mounts private: {e}"))?;
    if mounts.iter().any(|m| under_secrets_dir(&m.target)) {
        std::fs::create_dir_all(SECRETS_DIR).map_err(|e| format!("creating {SECRETS_DIR}: {e}"))?;
        sys::mount(
            Some("tmpfs"),
            SECRETS_DIR,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some("mode=0755"),
        )
        .map_err(|e| format!("mounting a tmpfs on {SECRETS_DIR}: {e}"))?;
    }
    for m in mounts {
        let target = Path::new(&m.target);
        if under_secrets_dir(&m.target) {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(target)
                .map_err(|e| format!("creating the mount point {}: {e}", target.display()))?;
        }
        let source = m.source.to_string_lossy();
        sys::mount(Some(&source), &m.target, None, libc::MS_BIND, None)
            .map_err(|e| format!("mounting {} on {}: {e}", source, m.target))?;
        sys::mount(
            None,
            &m.target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            None,
        )
        .map_err(|e| format!("making {} read-only: {e}", m.target))?;
    }
    Ok(())
}

/// The two system calls `nix` is not built with here.
#[allow(unsafe_code)]
mod sys {
    use std::ffi::CString;
    use std::io;

    fn c(s: &str) -> io::Result<CString> {
        CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
    }

    pub fn unshare_mount_namespace() -> io::Result<()> {
        // SAFETY: unshare takes no pointers; CLONE_NEWNS affects only the calling thread (the
        // shim's main thread, which then spawns the task).
        let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn mount(
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(c).transpose()?;
        let target = c(target)?;
        let fstype = fstype.map(c).transpose()?;
        let data = data.map(c).transpose()?;
        let ptr = |o: &Option<CString>| o.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        // SAFETY: every pointer is either null or a NUL-terminated string that outlives the
        // call.
        let r = unsafe {
            libc::mount(
                ptr(&source),
                target.as_ptr(),
                ptr(&fstype),
                flags,
                ptr(&data).cast(),
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn file(target: &str, data: &[u8], mode: u32) -> MountedFile {
        MountedFile {
            target: target.into(),
            data: data.to_vec(),
            uid: 0,
            gid: 0,
            mode,
        }
    }

    #[test]
    fn targets_must_be_absolute_files_without_dot_dot() {
        for ok in ["/run/secrets/pw", "/etc/app.conf", "/a"] {
            assert!(validate_target("t", ok).is_ok(), "{ok}");
        }
        for bad in ["pw", "/", "/run/secrets/../../etc/passwd", "/etc/", "./x"] {
            assert!(validate_target("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_are_written_private_with_their_modes_and_removed_with_the_task() {
        if !nix::unistd::geteuid().is_root() {
            let tmp = tempfile::tempdir().expect("tmp");
            let err = write_task_files(tmp.path(), "t1", &[file("/run/secrets/pw", b"x", 0o444)])
                .expect_err("needs root");
            assert!(err.to_string().contains("needs root"), "{err}");
            return;
        }
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("files");
        let conf = tmp.path().join("etc/app.conf");
        let conf_target = conf.to_string_lossy().to_string();
        let mut owned = file(&conf_target, b"setting=1\n", 0o640);
        owned.uid = 1234;
        owned.gid = 4321;
        let mounts = write_task_files(
            &root,
            "t1",
            &[file("/run/secrets/pw", b"hunter2", 0o400), owned],
        )
        .expect("write");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").mode() & 0o7777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("t1")), 0o700);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].target, "/run/secrets/pw");
        assert!(
            !mounts[0].placeholder,
            "/run/secrets is the task's own tmpfs"
        );
        assert_eq!(std::fs::read(&mounts[0].source).expect("read"), b"hunter2");
        assert_eq!(mode(&mounts[0].source), 0o400);
        let md = std::fs::metadata(&mounts[1].source).expect("stat");
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (1234, 4321, 0o640)
        );
        assert!(mounts[1].placeholder);
        assert_eq!(std::fs::read(&conf).expect("placeholder"), b"");

        remove_task_files(&root, "t1", &mounts).expect("remove");
        assert!(!root.join("t1").exists());
        assert!(!conf.exists(), "the placeholder goes with the task");
        assert!(root.exists(), "other tasks' files stay");
        remove_task_files(&root, "t1", &mounts).expect("removing twice is fine");
    }
}
