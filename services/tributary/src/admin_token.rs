//! The admin token: configured (`admin_token` / `TRIBUTARY_ADMIN_TOKEN`), else read from
//! `<data_dir>/admin.token`, else generated there on first start (mode 0600). The token itself
//! is never logged; only the file's path is.

use crate::config::Settings;
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use tributary_core::auth::{new_token, ADMIN_TOKEN_PREFIX};

/// Name of the token file inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The admin token for `settings`, generating and storing one when none exists.
pub fn resolve(settings: &Settings) -> anyhow::Result<String> {
    if let Some(token) = settings
        .admin_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        tracing::info!("admin token taken from the configuration");
        return Ok(token.to_owned());
    }
    read_or_create(&settings.data_dir.join(ADMIN_TOKEN_FILE))
}

/// The token stored at `path`, or a new one written there with mode 0600.
pub fn read_or_create(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            tracing::info!(path = %path.display(), "admin token read from file");
            return Ok(text.trim().to_owned());
        }
        Ok(_) => anyhow::bail!(
            "admin token file {} is empty; delete it to generate a new token",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading admin token file {}", path.display()))
        }
    }
    let token = new_token(ADMIN_TOKEN_PREFIX);
    write_private(path, &token)?;
    tracing::info!(path = %path.display(), "generated an admin token; it is in this file (mode 0600)");
    Ok(token)
}

fn write_private(path: &Path, token: &str) -> anyhow::Result<()> {
    let dir: PathBuf = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if !dir.as_os_str().is_empty() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    // create_new: two processes starting at once must not overwrite each other's token.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!(
                "admin token file {} appeared while starting; start again",
                path.display()
            )
        }
        Err(e) => {
            return Err(e).with_context(|| format!("creating admin token file {}", path.display()))
        }
    };
    writeln!(file, "{token}")
        .with_context(|| format!("writing admin token file {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("writing admin token file {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_read_back_with_mode_0600() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("nested").join(ADMIN_TOKEN_FILE);
        let first = read_or_create(&path)?;
        assert!(first.starts_with(ADMIN_TOKEN_PREFIX));
        assert_eq!(read_or_create(&path)?, first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        Ok(())
    }

    #[test]
    fn configured_token_wins() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let settings = Settings {
            admin_token: Some("tba_configured".into()),
            data_dir: dir.path().into(),
            ..Settings::default()
        };
        assert_eq!(resolve(&settings)?, "tba_configured");
        assert!(!dir.path().join(ADMIN_TOKEN_FILE).exists());
        Ok(())
    }
}
