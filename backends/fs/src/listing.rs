//! Listing a vault folder without letting one odd file hide the others.
//!
//! `LocalFileSystem`'s listing ends the whole stream at the first file whose
//! name is not valid UTF-8, so a single such file (a sync tool's leftover, a
//! file copied from another OS) would hide every log slot after it in
//! directory order. This walker skips and reports such names and lists
//! everything else. Like `LocalFileSystem`, it follows symlinks and hides its
//! staging files (`name#<digits>`).

use chrono::{DateTime, Utc};
use object_store::path::{Path, PathPart};
use object_store::ObjectMeta;
use std::path::PathBuf;

/// Every file under `root/<prefix>` (recursively) whose location is after
/// `offset`, in no particular order.
pub(crate) fn walk(
    root: PathBuf,
    prefix: Path,
    offset: Option<Path>,
) -> Vec<object_store::Result<ObjectMeta>> {
    let mut start = root;
    for part in prefix.parts() {
        start.push(part.as_ref());
    }
    let mut found = Vec::new();
    let mut pending = vec![(start, prefix)];
    while let Some((dir, location)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                found.push(Err(io_error(e)));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    found.push(Err(io_error(e)));
                    continue;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!(dir = %dir.display(), name = ?name, "ignoring a file whose name is not UTF-8");
                continue;
            };
            if is_staging(name) {
                continue;
            }
            let Ok(part) = PathPart::parse(name) else {
                tracing::warn!(dir = %dir.display(), name, "ignoring a file whose name is not a valid object name");
                continue;
            };
            let child = location.child(part);
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            // Symlinks are followed; a broken one is skipped.
            let is_dir = if file_type.is_symlink() {
                match std::fs::metadata(entry.path()) {
                    Ok(meta) => meta.is_dir(),
                    Err(_) => continue,
                }
            } else {
                file_type.is_dir()
            };
            if is_dir {
                pending.push((entry.path(), child));
                continue;
            }
            // Filter before `stat`: an idle poll of a long log then costs one
            // directory read and no per-file system call.
            if offset.as_ref().is_some_and(|offset| &child <= offset) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            let last_modified = meta
                .modified()
                .map(DateTime::<Utc>::from)
                .unwrap_or_else(|_| DateTime::<Utc>::from(std::time::SystemTime::UNIX_EPOCH));
            found.push(Ok(ObjectMeta {
                location: child,
                last_modified,
                size: meta.len(),
                e_tag: None,
                version: None,
            }));
        }
    }
    found
}

/// `LocalFileSystem` stages writes as `name#<digits>` before moving them in.
fn is_staging(name: &str) -> bool {
    matches!(name.rsplit_once('#'), Some((_, suffix)) if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
}

fn io_error(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_files_are_recognised() {
        assert!(is_staging("00000000000000000001#1"));
        assert!(is_staging("x#23"));
        assert!(!is_staging("x#"));
        assert!(!is_staging("x#a1"));
        assert!(!is_staging("00000000000000000001"));
    }

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_hides_nothing() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        std::fs::create_dir_all(&log).expect("mkdir");
        std::fs::write(log.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"x").expect("write");
        for slot in [
            "00000000000000000001",
            "00000000000000000002",
            "00000000000000000003",
        ] {
            std::fs::write(log.join(slot), b"x").expect("write");
        }
        std::fs::write(log.join("00000000000000000004#1"), b"x").expect("write");
        let mut names: Vec<String> = walk(
            dir.path().to_path_buf(),
            Path::from("log"),
            Some(Path::from("log/00000000000000000001")),
        )
        .into_iter()
        .map(|r| r.expect("listed").location.to_string())
        .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["log/00000000000000000002", "log/00000000000000000003"]
        );
    }
}
