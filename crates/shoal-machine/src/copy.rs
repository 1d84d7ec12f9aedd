//! `machine scp`: copies between the host and machines, or between machines. A machine shares
//! the host's filesystem (only its network and hostname are its own), so a copy is a local copy
//! once each `MACHINE:path` is resolved: `~`, `~/x` and relative paths are in the machine's home
//! directory (`<machine dir>/home`), absolute paths are the same on the host and in the machine.

use std::path::{Path, PathBuf};

/// One side of `scp SRC DST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Machine { name: String, path: String },
}

/// As docker-machine reads it: `[user@]machine:path` names a machine (`localhost:path` is the
/// host), anything without a colon is a local path.
pub fn parse_location(arg: &str) -> Location {
    let Some((host, path)) = arg.split_once(':') else {
        return Location::Local(PathBuf::from(arg));
    };
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    if host == "localhost" {
        Location::Local(PathBuf::from(path))
    } else {
        Location::Machine {
            name: host.to_string(),
            path: path.to_string(),
        }
    }
}

/// A path in a machine, as a host path: `""`, `~`, `~/x` and `x` are under `home`.
pub fn machine_path(home: &Path, path: &str) -> PathBuf {
    if path.is_empty() || path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        home.join(path)
    }
}

/// A failed copy, worded as scp words it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyError {
    #[error("scp: {0}: No such file or directory")]
    Missing(String),
    #[error("scp: {0}: not a regular file")]
    NotRegular(String),
    #[error("scp: {0} and {1} are identical (not copied).")]
    Identical(String, String),
    #[error("scp: cannot copy directory {0} into itself ({1})")]
    IntoItself(String, String),
    #[error("scp: {0}: {1}")]
    Io(String, String),
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> CopyError + '_ {
    move |e| CopyError::Io(p.display().to_string(), e.to_string())
}

/// Copies `src` to `dst` as `scp [-r]` does: into `dst` when it is a directory, else as `dst`;
/// directories only with `recursive` (symbolic links inside them are copied as links).
pub fn copy(src: &Path, dst: &Path, recursive: bool) -> Result<(), CopyError> {
    let meta = std::fs::metadata(src).map_err(|_| CopyError::Missing(src.display().to_string()))?;
    if meta.is_dir() && !recursive {
        return Err(CopyError::NotRegular(src.display().to_string()));
    }
    let target = if dst.is_dir() {
        match src.file_name() {
            Some(n) => dst.join(n),
            // `.`, `..` or `/`: use the directory's own name.
            None => {
                let canon = src.canonicalize().map_err(io_err(src))?;
                dst.join(canon.file_name().unwrap_or_default())
            }
        }
    } else {
        dst.to_path_buf()
    };
    let canon_src = src.canonicalize().map_err(io_err(src))?;
    if let Ok(canon_target) = target.canonicalize() {
        if canon_target == canon_src {
            return Err(CopyError::Identical(
                src.display().to_string(),
                target.display().to_string(),
            ));
        }
    }
    if meta.is_dir() {
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let canon_parent = parent
            .canonicalize()
            .map_err(|_| CopyError::Missing(parent.display().to_string()))?;
        if canon_parent.starts_with(&canon_src) {
            return Err(CopyError::IntoItself(
                src.display().to_string(),
                target.display().to_string(),
            ));
        }
        copy_dir(src, &target)
    } else {
        copy_file(src, &target)
    }
}

fn copy_file(src: &Path, dst: &Path) -> Result<(), CopyError> {
    if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(CopyError::Missing(dst.display().to_string()));
        }
    }
    std::fs::copy(src, dst).map_err(io_err(dst))?;
    Ok(())
}

fn copy_dir(src: &Path, dst: &Path) -> Result<(), CopyError> {
    if !dst.is_dir() {
        std::fs::create_dir(dst).map_err(io_err(dst))?;
        let perms = std::fs::metadata(src).map_err(io_err(src))?.permissions();
        std::fs::set_permissions(dst, perms).map_err(io_err(dst))?;
    }
    for entry in std::fs::read_dir(src).map_err(io_err(src))? {
        let entry = entry.map_err(io_err(src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type().map_err(io_err(&from))?;
        if kind.is_symlink() {
            let link = std::fs::read_link(&from).map_err(io_err(&from))?;
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(link, &to).map_err(io_err(&to))?;
        } else if kind.is_dir() {
            copy_dir(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).map_err(io_err(&to))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_as_docker_machine_reads_them() {
        assert_eq!(
            parse_location("/tmp/x"),
            Location::Local(PathBuf::from("/tmp/x"))
        );
        assert_eq!(
            parse_location("m1:~/f"),
            Location::Machine {
                name: "m1".into(),
                path: "~/f".into()
            }
        );
        assert_eq!(
            parse_location("docker@m2:/etc/hosts"),
            Location::Machine {
                name: "m2".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(
            parse_location("localhost:rel"),
            Location::Local(PathBuf::from("rel"))
        );
    }

    #[test]
    fn machine_paths_resolve_in_the_home_directory() {
        let home = Path::new("/m/home");
        assert_eq!(machine_path(home, ""), PathBuf::from("/m/home"));
        assert_eq!(machine_path(home, "~"), PathBuf::from("/m/home"));
        assert_eq!(machine_path(home, "~/a/b"), PathBuf::from("/m/home/a/b"));
        assert_eq!(machine_path(home, "a"), PathBuf::from("/m/home/a"));
        assert_eq!(machine_path(home, "/etc/x"), PathBuf::from("/etc/x"));
    }

    #[test]
    fn files_copy_to_a_name_or_into_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a.txt");
        std::fs::write(&src, "hello").unwrap();
        copy(&src, &d.path().join("b.txt"), false).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("b.txt")).unwrap(),
            "hello"
        );
        std::fs::create_dir(d.path().join("dir")).unwrap();
        copy(&src, &d.path().join("dir"), false).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("dir/a.txt")).unwrap(),
            "hello"
        );
        assert!(matches!(
            copy(&src, &src, false),
            Err(CopyError::Identical(..))
        ));
        assert!(matches!(
            copy(&src, &d.path().join("nodir/x"), false),
            Err(CopyError::Missing(_))
        ));
        assert_eq!(
            copy(&d.path().join("none"), &d.path().join("x"), false)
                .unwrap_err()
                .to_string(),
            format!(
                "scp: {}: No such file or directory",
                d.path().join("none").display()
            )
        );
    }

    #[test]
    fn directories_need_recursive_and_copy_whole_trees() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("sub/f", tree.join("link")).unwrap();
        let e = copy(&tree, &d.path().join("out"), false).unwrap_err();
        assert!(e.to_string().ends_with("not a regular file"), "{e}");
        copy(&tree, &d.path().join("out"), true).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("out/sub/f")).unwrap(),
            "x"
        );
        assert_eq!(
            std::fs::read_link(d.path().join("out/link")).unwrap(),
            PathBuf::from("sub/f")
        );
        // Into an existing directory: under its own name.
        copy(&tree, &d.path().join("out"), true).unwrap();
        assert!(d.path().join("out/tree/sub/f").exists());
        assert!(matches!(
            copy(&tree, &tree.join("sub"), true),
            Err(CopyError::IntoItself(..))
        ));
    }
}
