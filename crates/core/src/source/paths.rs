//! Which local files an `ndjson` source may read: only files under the directories an operator
//! configured (`ingest.allowed_dirs`; none by default, so file paths are refused). A path is
//! checked when a source is created or updated (absolute, no `..`, under an allowed directory,
//! and, if it exists already, still under one once symlinks are resolved), and again by the
//! engine before every read, on the canonical path, so a symlink or `..` planted later cannot
//! lead outside.

use crate::{Error, Result};
use std::path::{Component, Path, PathBuf};

/// The directories `ndjson` sources may read files under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedDirs(Vec<PathBuf>);

impl AllowedDirs {
    /// Files under `dirs` (and their subdirectories) may be read.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self(dirs)
    }

    /// The configured directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.0
    }

    /// Checks a source's `path` setting; the violation names `field` and says why.
    pub fn check_setting(&self, field: &str, path: &str) -> Result<()> {
        let invalid = |why: String| Err(Error::invalid(field, why));
        if self.0.is_empty() {
            return invalid(
                "reading local files is disabled on this server (ingest.allowed_dirs is empty); \
                 use a url, or ask the operator to allow a directory"
                    .into(),
            );
        }
        let p = Path::new(path);
        if !p.is_absolute() {
            return invalid("must be an absolute path".into());
        }
        if p.components().any(|c| c == Component::ParentDir) {
            return invalid("must not contain `..`".into());
        }
        if !self.0.iter().any(|dir| p.starts_with(dir)) {
            return invalid(format!(
                "is not under an allowed directory ({})",
                self.list()
            ));
        }
        // Where the file exists already, a symlink must not lead out either.
        if let Ok(real) = std::fs::canonicalize(p) {
            if !self.contains_canonical(&real) {
                return invalid(format!(
                    "resolves (through a symlink) to {}, which is not under an allowed \
                     directory ({})",
                    real.display(),
                    self.list()
                ));
            }
        }
        Ok(())
    }

    /// The canonical form of `path` (symlinks and `..` resolved), if it is under an allowed
    /// directory; else why not. For the engine, just before it opens the file.
    pub fn resolve(&self, path: &str) -> std::result::Result<PathBuf, String> {
        if self.0.is_empty() {
            return Err(format!(
                "{path}: reading local files is disabled (ingest.allowed_dirs is empty)"
            ));
        }
        let real = std::fs::canonicalize(path).map_err(|e| format!("opening {path}: {e}"))?;
        if self.contains_canonical(&real) {
            Ok(real)
        } else {
            Err(format!(
                "{path} resolves to {}, which is not under an allowed directory ({})",
                real.display(),
                self.list()
            ))
        }
    }

    /// Whether the canonical `real` is under one of the directories, themselves canonicalised
    /// (a directory that does not exist allows nothing).
    pub fn contains_canonical(&self, real: &Path) -> bool {
        self.0.iter().any(|dir| {
            std::fs::canonicalize(dir)
                .map(|dir| real.starts_with(dir))
                .unwrap_or(false)
        })
    }

    fn list(&self) -> String {
        self.0
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_error(r: Result<()>) -> String {
        match r {
            Err(Error::InvalidArgument(v)) => v[0].description.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_paths_are_refused_unless_under_an_allowed_directory() {
        let base = std::env::temp_dir().join(format!("tributary-paths-{}", std::process::id()));
        let allowed = base.join("allowed");
        std::fs::create_dir_all(&allowed).expect("dir");
        std::fs::write(base.join("secret"), "x").expect("write");
        let none = AllowedDirs::default();
        assert!(field_error(none.check_setting("p", "/etc/passwd")).contains("disabled"));
        let dirs = AllowedDirs::new(vec![allowed.clone()]);
        let inside = allowed.join("items.ndjson");
        assert!(dirs
            .check_setting("p", &inside.display().to_string())
            .is_ok());
        assert!(field_error(dirs.check_setting("p", "items.ndjson")).contains("absolute"));
        let dotdot = format!("{}/../secret", allowed.display());
        assert!(field_error(dirs.check_setting("p", &dotdot)).contains(".."));
        assert!(field_error(dirs.check_setting("p", "/etc/passwd")).contains("not under"));
        #[cfg(unix)]
        {
            let link = allowed.join("link");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(base.join("secret"), &link).expect("symlink");
            let link = link.display().to_string();
            assert!(field_error(dirs.check_setting("p", &link)).contains("symlink"));
            assert!(dirs.resolve(&link).is_err());
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
