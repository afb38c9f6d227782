//! The data directory at rest: private permissions (0700 for folders, 0600 for files: the
//! database holds TOTP secrets, labels and lab values), the lock that keeps a second server off
//! a SQLite data directory, and the master key's check value.

use std::fs::{File, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use kura_store::envelope::MasterKey;

use crate::state::StartResult;

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "kura.lock";

/// Creates the data directory (0700) or narrows an existing one to 0700.
pub fn create_private_dir(dir: &Path) -> StartResult<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make the data directory {} private: {e}", dir.display()))
}

/// An exclusive lock on the data directory, held for the process's life (the operating system
/// releases it when the process ends, however it ends).
pub struct DataDirLock {
    file: Mutex<Option<File>>,
}

impl DataDirLock {
    /// Takes the lock, or explains that another server holds it.
    pub fn acquire(dir: &Path) -> StartResult<Self> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { file: Mutex::new(Some(file)) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "another Kura server is running on the data directory {}; stop it first (one server per \
                 SQLite data directory: a second one would serve rows the first has changed)",
                dir.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
        }
    }

    /// No lock (PostgreSQL: several servers may share a database).
    pub fn none() -> Self {
        Self { file: Mutex::new(None) }
    }

    /// Releases the lock now (closing the app).
    pub fn release(&self) {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(file);
    }
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates the SQLite file 0600 before SQLite opens it: SQLite gives its WAL and shared-memory
/// files the database file's permissions.
pub fn prepare_private_database_file(file: &Path) -> StartResult<()> {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        create_private_dir(parent)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(file)
        .map_err(|e| format!("cannot create the database file {}: {e}", file.display()))?;
    make_database_files_private(file)
}

/// Narrows the database file and its WAL and shared-memory files to 0600 (files of an older
/// version were created 0644).
pub fn make_database_files_private(file: &Path) -> StartResult<()> {
    for path in [file.to_path_buf(), sibling(file, "-wal"), sibling(file, "-shm")] {
        match std::fs::set_permissions(&path, Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot make {} private: {e}", path.display())),
        }
    }
    Ok(())
}

/// The value stored at a database's first start to recognise its master key later: an
/// HMAC-SHA256 of a constant under a key derived from the master key for this purpose only. It
/// reveals nothing about the master key or the keys derived for other purposes.
pub fn master_key_check_value(master: &MasterKey) -> String {
    let key = master.derive("master-key-check");
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(b"kura master key check v1");
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn one_lock_per_data_directory_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let refused = DataDirLock::acquire(dir.path()).err().unwrap();
        assert!(refused.contains("another Kura server is running"), "{refused}");
        first.release();
        let again = DataDirLock::acquire(dir.path()).unwrap();
        drop(again);
        // Dropping (the process ending) releases it too.
        DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join(LOCK_FILE)), 0o600);
    }

    #[test]
    fn an_old_world_readable_data_directory_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        let db = data.join("kura.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::write(sibling(&db, "-wal"), b"").unwrap();
        std::fs::set_permissions(&db, Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(sibling(&db, "-wal"), Permissions::from_mode(0o644)).unwrap();
        create_private_dir(&data).unwrap();
        prepare_private_database_file(&db).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&sibling(&db, "-wal")), 0o600);
    }

    #[test]
    fn the_check_value_tells_master_keys_apart() {
        let one = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let same = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let other = MasterKey::from_hex(&"22".repeat(32)).unwrap();
        assert_eq!(master_key_check_value(&one), master_key_check_value(&same));
        assert_ne!(master_key_check_value(&one), master_key_check_value(&other));
    }
}
