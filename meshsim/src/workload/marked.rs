//! A directory meshsim makes for a run and marks as its own with a file inside (the
//! homeservers' run directory, the node commands' directories), made and removed so that
//! meshsim killed at any moment leaves it recognisable: with its marker, or empty. The
//! marker is written right after the directory is made, and removed last, after everything
//! else in it; an empty directory holds nothing of anyone's, so it counts as ours too.

use std::{io, path::Path};

/// Whether `dir` exists and is meshsim's: it holds `marker`, or nothing.
pub fn is_ours(dir: &Path, marker: &str) -> bool {
    dir.join(marker).is_file()
        || std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// Makes `dir` (with its parents) and marks it with `marker`, saying `text`.
pub fn make(dir: &Path, marker: &str, text: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(marker), text)
}

/// Removes `dir`: everything in it but `marker`, then `marker`, then the directory. A
/// directory that does not exist is not an error.
pub fn remove(dir: &Path, marker: &str) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name() == marker {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    match std::fs::remove_file(dir.join(marker)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("meshsim-marked-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_marked_or_empty_directory_is_ours_and_goes_whole() {
        let dir = scratch("ours");
        assert!(!is_ours(&dir, ".m"), "a missing directory is nobody's");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            is_ours(&dir, ".m"),
            "an empty one (killed before the marker)"
        );
        make(&dir, ".m", "x").unwrap();
        std::fs::create_dir_all(dir.join("n1/sub")).unwrap();
        std::fs::write(dir.join("n1/sub/f"), "data").unwrap();
        std::fs::write(dir.join("a"), "data").unwrap();
        assert!(is_ours(&dir, ".m"));
        remove(&dir, ".m").unwrap();
        assert!(!dir.exists());
        remove(&dir, ".m").unwrap();
    }

    #[test]
    fn an_unmarked_directory_with_files_is_not_ours() {
        let dir = scratch("foreign");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("theirs"), "data").unwrap();
        assert!(!is_ours(&dir, ".m"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
