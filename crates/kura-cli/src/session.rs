//! The session file `kura login` writes and the client commands read: the server a person
//! logged in to and their bearer token, at `$KURA_SESSION` or `~/.kura/session.json`.
//!
//! The file is created with mode 0600 (its folder 0700) because the token is a credential; the
//! token never appears in `Debug` output.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::secrets::Secret;

/// What a login leaves behind.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub server: String,
    token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl Session {
    pub fn new(server: &str, token: &Secret, username: Option<String>, expires_at: Option<String>) -> Self {
        Self { server: normalise_server(server), token: token.expose().to_owned(), username, expires_at }
    }

    pub fn token(&self) -> Secret {
        Secret::new(self.token.clone())
    }

    /// Whether this session was made with `server` (trailing slashes do not matter).
    pub fn is_for(&self, server: &str) -> bool {
        normalise_server(&self.server) == normalise_server(server)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A server URL compared and stored the same way however it was typed: with a scheme
/// (`http://` when none was given) and without trailing slashes.
pub fn normalise_server(server: &str) -> String {
    let server = server.trim().trim_end_matches('/');
    if server.contains("://") { server.to_owned() } else { format!("http://{server}") }
}

/// `$KURA_SESSION`, else `~/.kura/session.json`.
pub fn default_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("KURA_SESSION").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("cannot find the session file: set KURA_SESSION or HOME")?;
    Ok(PathBuf::from(home).join(".kura").join("session.json"))
}

/// The saved session, or `None` when there is no file.
pub fn load(path: &Path) -> Result<Option<Session>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read the session file {}", path.display())),
    };
    let session = serde_json::from_str(&text).with_context(|| {
        format!("the session file {} is damaged; run `kura logout` and log in again", path.display())
    })?;
    Ok(Some(session))
}

/// Writes the session, readable by its owner only. The new file replaces the old one in one
/// step, so a failed write never leaves half a session behind.
pub fn save(path: &Path, session: &Session) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    let text = serde_json::to_string_pretty(session)?;
    let temporary = path.with_extension("json.tmp");
    {
        let mut file = private_file(&temporary)
            .with_context(|| format!("cannot write the session file {}", temporary.display()))?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path).with_context(|| format!("cannot write the session file {}", path.display()))?;
    Ok(())
}

/// Deletes the session file; false when there was none.
pub fn remove(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove the session file {}", path.display())),
    }
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // An existing file keeps its old mode on open; tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_session_loads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("session.json");
        assert!(load(&path).unwrap().is_none());

        let token = Secret::new("header.payload.signature");
        let session = Session::new("http://127.0.0.1:8080/", &token, Some("alice".into()), None);
        save(&path, &session).unwrap();
        let loaded = load(&path).unwrap().expect("the session was saved");
        assert_eq!(loaded.server, "http://127.0.0.1:8080");
        assert_eq!(loaded.token(), token);
        assert_eq!(loaded.username.as_deref(), Some("alice"));
        assert!(loaded.is_for("http://127.0.0.1:8080"));
        assert!(loaded.is_for("http://127.0.0.1:8080/"));
        assert!(loaded.is_for("127.0.0.1:8080"));
        assert!(!loaded.is_for("http://127.0.0.1:9090"));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }

        // Saving again replaces the file.
        let other = Session::new("http://kura.example", &Secret::new("t2"), None, Some("2030-01-01T00:00:00Z".into()));
        save(&path, &other).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.server, "http://kura.example");
        assert_eq!(loaded.token().expose(), "t2");

        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        assert!(load(&path).unwrap().is_none());
    }

    #[test]
    fn a_damaged_session_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        std::fs::write(&path, "{not json").unwrap();
        let message = format!("{:#}", load(&path).unwrap_err());
        assert!(message.contains("damaged"), "{message}");
    }

    #[test]
    fn debug_hides_the_token() {
        let session = Session::new("http://x", &Secret::new("very-secret-token"), None, None);
        let debug = format!("{session:?}");
        assert!(!debug.contains("very-secret-token"), "{debug}");
    }
}
