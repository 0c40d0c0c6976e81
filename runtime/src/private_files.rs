//! Files that hold personal data or secrets (SQLite databases, dev credentials): created
//! readable by their owner only, whatever the process umask.

use std::io;
use std::path::{Path, PathBuf};

/// Mode of a private directory: owner only.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// Mode of a private file: owner read/write only.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700 (set explicitly, so the umask can't
/// widen it). A directory that already exists is left as it is, since it may be shared
/// (`/tmp`, a home directory), with a warning when others may list or enter it.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        warn_if_open_to_others(dir);
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Readies a SQLite database file before SQLite opens it: its directory exists (created
/// private if missing), and the file exists with mode 0600, as do its `-wal` and `-shm` files
/// if a previous run left them. SQLite creates `-wal` and `-shm` with the mode of the
/// database file, so they are 0600 too when it makes them later.
pub fn prepare_private_database(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let file = options.open(path)?;
    make_private(&file)?;
    for suffix in ["-wal", "-shm"] {
        let mut companion = PathBuf::from(path).into_os_string();
        companion.push(suffix);
        match std::fs::OpenOptions::new().read(true).open(&companion) {
            Ok(file) => make_private(&file)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// [`prepare_private_database`] for the file `path` that the `sqlite:` `url` names; nothing
/// for an in-memory database (`sqlite::memory:`, `mode=memory`), which has no file.
pub fn prepare_sqlite_database(url: &str, path: &Path) -> io::Result<()> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(());
    }
    prepare_private_database(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot make {} private to this user: {e}", path.display()),
        )
    })
}

/// Sets an open file's mode to 0600 unless it already is.
fn make_private(file: &std::fs::File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o777 != FILE_MODE {
            file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

fn warn_if_open_to_others(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                dir = %dir.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "this directory holds private data but others may list it; consider `chmod 700`"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Guards `make_private` on files an earlier version left world-readable.
    #[test]
    fn an_existing_database_and_its_companions_are_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data").join("auth.db");
        std::fs::create_dir(db.parent().unwrap()).unwrap();
        for name in ["auth.db", "auth.db-wal", "auth.db-shm"] {
            let path = db.parent().unwrap().join(name);
            std::fs::write(&path, b"").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        prepare_private_database(&db).unwrap();
        for name in ["auth.db", "auth.db-wal", "auth.db-shm"] {
            assert_eq!(mode(&db.parent().unwrap().join(name)), 0o600, "{name}");
        }
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a").join("b").join("userinfo.db");
        prepare_private_database(&db).unwrap();
        assert_eq!(mode(db.parent().unwrap()), 0o700);
        assert_eq!(mode(&db), 0o600);
    }
}
