//! Named network namespaces (files under `/run/netns`, as `ip netns` keeps them), running code
//! inside one (a dedicated thread that `setns()`s, with its own current-thread tokio runtime and
//! netlink connection), and running commands inside one (`setns()` between fork and exec).

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sched::CloneFlags;
use tokio::io::AsyncWriteExt;

use super::nl::Nl;
use super::KernelError;

/// Where named network namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

/// `statfs` magic of the namespace filesystem (a bind-mounted namespace file).
const NSFS_MAGIC: i64 = 0x6e73_6673;

pub(crate) fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether `path` is a live (bind-mounted) namespace file.
pub(crate) fn is_netns(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes into the struct we own; the fd is valid while `f` lives.
    let rc = unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) };
    rc == 0 && st.f_type as i64 == NSFS_MAGIC
}

/// Opens a namespace file.
pub(crate) fn open(path: &Path) -> Result<File, KernelError> {
    File::open(path).map_err(|source| KernelError::Io {
        what: format!("opening {}", path.display()),
        source,
    })
}

/// Creates the named namespace unless it is there already; a dead leftover file (a crash
/// between creating and mounting it) is removed first.
pub(crate) async fn create(name: &str) -> Result<PathBuf, KernelError> {
    let path = path_of(name);
    if is_netns(&path) {
        return Ok(path);
    }
    if path.exists() {
        remove(name);
    }
    run("ip", &["netns", "add", name], None, None).await?;
    Ok(path)
}

/// Removes the named namespace's file (the namespace itself goes when nothing uses it).
/// Missing parts are fine.
pub(crate) fn remove(name: &str) {
    let path = path_of(name);
    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(&path);
}

/// The names under `/run/netns` that start with `prefix`.
pub(crate) fn list(prefix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    out.sort();
    out
}

/// Runs `f` on a fresh thread that has entered the network namespace `ns`.
pub(crate) async fn on_thread<T, F>(ns: File, f: F) -> Result<T, KernelError>
where
    F: FnOnce() -> Result<T, KernelError> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(move || {
            let r = nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| KernelError::Io {
                    what: "entering a network namespace".into(),
                    source: e.into(),
                })
                .and_then(|()| f());
            let _ = tx.send(r);
        })
        .map_err(|source| KernelError::Io {
            what: "starting a namespace thread".into(),
            source,
        })?;
    rx.await.map_err(|_| KernelError::Io {
        what: "namespace thread".into(),
        source: std::io::Error::other("the namespace thread panicked"),
    })?
}

/// Runs `f` with a netlink connection inside the network namespace `ns`.
pub(crate) async fn with_netlink<T, F, Fut>(ns: File, f: F) -> Result<T, KernelError>
where
    F: FnOnce(Nl) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, KernelError>>,
    T: Send + 'static,
{
    on_thread(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| KernelError::Io {
                what: "starting a namespace runtime".into(),
                source,
            })?;
        rt.block_on(async move {
            let nl = Nl::connect()?;
            f(nl).await
        })
    })
    .await
}

/// Runs a command (in namespace `ns` when given), feeding it `stdin`; fails with its standard
/// error when it exits non-zero.
pub(crate) async fn run(
    cmd: &str,
    args: &[&str],
    stdin: Option<&str>,
    ns: Option<&File>,
) -> Result<String, KernelError> {
    let mut c = tokio::process::Command::new(cmd);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(ns) = ns {
        let fd = ns.as_raw_fd();
        // SAFETY: setns is a plain system call, safe between fork and exec; the fd stays open
        // in the child until exec (it is close-on-exec).
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let line = format!("{cmd} {}", args.join(" "));
    let mut child = c.spawn().map_err(|source| KernelError::Io {
        what: format!("running {line}"),
        source,
    })?;
    if let Some(text) = stdin {
        if let Some(mut w) = child.stdin.take() {
            w.write_all(text.as_bytes())
                .await
                .map_err(|source| KernelError::Io {
                    what: format!("writing to {line}"),
                    source,
                })?;
        }
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| KernelError::Io {
            what: format!("running {line}"),
            source,
        })?;
    if !out.status.success() {
        return Err(KernelError::Command {
            cmd: line,
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
