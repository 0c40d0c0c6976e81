//! SQLite reads on the calling thread. A plain read (`Access::Read` outside a transaction) is a
//! point lookup by key in pages the operating system already caches, a few microseconds, so
//! it runs on a read-only connection of these right where it is asked, with no hand-off to
//! another thread and back (two wake-ups, which on two cores cost more than the read:
//! BENCHMARKS.md, "Where the time goes"). A read waits for no lock: in WAL mode a reader sees
//! the last commit without waiting for a running write. SQLite's writer ([`crate::group`])
//! runs its statements with the same functions.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{OpenFlags, ToSql};

use crate::{Arg, Columns, Decoder, StoreError, sqlite_cannot_serve_now, sqlite_code};

/// Prepared statements kept per connection: every plain read the stores make, with room.
const STATEMENT_CACHE: usize = 64;
/// The names of the first values a statement binds, so a read formats none of them.
const PARAMETER_NAMES: [&str; 8] = ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8"];
/// A reader only waits for a lock while SQLite recovers a WAL another process left.
const BUSY_WAIT: Duration = Duration::from_millis(100);

/// Read-only connections to one SQLite file, each taken by one read at a time.
pub(crate) struct InlineReaders {
    connections: Vec<Mutex<rusqlite::Connection>>,
}

impl std::fmt::Debug for InlineReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineReaders")
            .field("connections", &self.connections.len())
            .finish()
    }
}

impl InlineReaders {
    /// A read-only connection per core to the file at `path`, each with a page cache of
    /// `cache_size` (SQLite's `cache_size` value). More connections would only fill more
    /// caches: a tokio worker holds one at a time (BENCHMARKS.md, "SQLite on our connections
    /// only").
    pub(crate) fn open(path: &Path, cache_size: &str) -> Result<Arc<Self>, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let connections = (0..cores)
            .map(|_| {
                let connection = rusqlite::Connection::open_with_flags(path, flags)?;
                connection.busy_timeout(BUSY_WAIT)?;
                connection.pragma_update(None, "cache_size", cache_size)?;
                connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                Ok(Mutex::new(connection))
            })
            .collect::<Result<_, rusqlite::Error>>()
            .map_err(error)?;
        Ok(Arc::new(InlineReaders { connections }))
    }

    /// Runs `sql` on the first free connection and decodes every row. A read holds its
    /// connection for no await, so a thread holds one at most: only while more threads than
    /// connections read at once does one wait, for the first connection.
    pub(crate) fn all<T>(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
        decode: Decoder<T>,
    ) -> Result<Vec<T>, StoreError> {
        for connection in &self.connections {
            match connection.try_lock() {
                Ok(connection) => return query(&connection, sql, args, decode),
                Err(TryLockError::Poisoned(poisoned)) => {
                    return query(&poisoned.into_inner(), sql, args, decode);
                }
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let first = self.connections[0].lock();
        let first = first.unwrap_or_else(PoisonError::into_inner);
        query(&first, sql, args, decode)
    }
}

#[cfg(test)]
impl InlineReaders {
    /// Takes every connection, as reads in flight on every worker would.
    pub(crate) fn hold_all(&self) -> Vec<std::sync::MutexGuard<'_, rusqlite::Connection>> {
        let held = self.connections.iter().map(|c| c.lock());
        held.map(|c| c.unwrap_or_else(|e| e.into_inner())).collect()
    }
}

/// Runs `sql` on `connection` with `args` bound, and decodes every row it returns.
pub(crate) fn query<T>(
    connection: &rusqlite::Connection,
    sql: &'static str,
    args: &[Arg<'_>],
    decode: Decoder<T>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = prepare(connection, sql, args)?;
    let mut rows = statement.raw_query();
    let mut decoded = Vec::new();
    while let Some(row) = rows.next().map_err(error)? {
        decoded.push(decode(&InlineRow(row))?);
    }
    Ok(decoded)
}

/// Runs `sql` on `connection` with `args` bound: the rows it changed.
pub(crate) fn execute(
    connection: &rusqlite::Connection,
    sql: &'static str,
    args: &[Arg<'_>],
) -> Result<u64, StoreError> {
    let mut statement = prepare(connection, sql, args)?;
    let changed = statement.raw_execute().map_err(error)?;
    Ok(changed as u64)
}

fn prepare<'c>(
    connection: &'c rusqlite::Connection,
    sql: &'static str,
    args: &[Arg<'_>],
) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(error)?;
    // Statements name their values `$1`, `$2`...: SQLite numbers named parameters in order of
    // first appearance, so each is bound by its name, whatever that order.
    for (n, arg) in args.iter().enumerate() {
        let name = match PARAMETER_NAMES.get(n) {
            Some(name) => std::borrow::Cow::Borrowed(*name),
            None => std::borrow::Cow::Owned(format!("${}", n + 1)),
        };
        if let Some(index) = statement.parameter_index(&name).map_err(error)? {
            statement.raw_bind_parameter(index, arg).map_err(error)?;
        }
    }
    Ok(statement)
}

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Arg::Int(Some(v)) => ToSqlOutput::Owned(Value::Integer(v)),
            Arg::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Arg::Bytes(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Arg::Int(None) | Arg::Text(None) => ToSqlOutput::Owned(Value::Null),
        })
    }
}

/// A rusqlite failure as sqlx's are classified (`StoreError`'s `From`): a unique violation is
/// `AlreadyExists`, a file that cannot serve now (busy, I/O, full) `Unavailable`, anything
/// else `Internal`.
pub(crate) fn error(e: rusqlite::Error) -> StoreError {
    let code = match &e {
        rusqlite::Error::SqliteFailure(failure, _) => Some(i64::from(failure.extended_code)),
        _ => None,
    };
    if code.is_some_and(|code| sqlite_code::UNIQUE_VIOLATIONS.contains(&code)) {
        return StoreError::AlreadyExists;
    }
    let e = Arc::new(sqlx::Error::Protocol(format!("SQLite: {e}")));
    if code.is_some_and(sqlite_cannot_serve_now) {
        StoreError::Unavailable(e)
    } else {
        StoreError::Internal(e)
    }
}

/// A column the row does not have, or of another type, as sqlx reports it.
fn column_error(col: &str, e: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: Box::new(e),
    }
}

/// A row of an inline read, read by column name as sqlx's rows are.
struct InlineRow<'a, 'r>(&'a rusqlite::Row<'r>);

impl Columns for InlineRow<'_, '_> {
    fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        self.0.get(col).map_err(|e| column_error(col, e))
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
        self.0.get(col).map_err(|e| column_error(col, e))
    }
    fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
        self.0.get(col).map_err(|e| column_error(col, e))
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
        self.0.get(col).map_err(|e| column_error(col, e))
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.0.get(col).map_err(|e| column_error(col, e))
    }
}
