//! Reading a folder tree whole: every regular file under a root, by its path
//! relative to the root, with its full content. Shared by the Syncthing
//! fixture (to compare device folders) and the simulated copier.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Every regular file under `root` (recursively), keyed by its path relative
/// to `root`, with its whole content. Entries for which `skip(relative)`
/// holds are left out (a skipped directory is not entered). A file that
/// vanishes between listing and reading (another process renamed or deleted
/// it) is left out as well; symbolic links are neither followed nor listed.
pub(crate) fn read_tree(
    root: &Path,
    skip: &dyn Fn(&Path) -> bool,
) -> io::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(root.join(&dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.as_os_str().is_empty() => {
                continue
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let relative = dir.join(entry.file_name());
            if skip(&relative) {
                continue;
            }
            let kind = match entry.file_type() {
                Ok(kind) => kind,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if kind.is_dir() {
                pending.push(relative);
            } else if kind.is_file() {
                match std::fs::read(root.join(&relative)) {
                    Ok(content) => {
                        files.insert(relative, content);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(files)
}
