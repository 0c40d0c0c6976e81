//! SQLite reads on the calling thread. A plain read (`Access::Read` outside a transaction) is a
//! point lookup by key in pages the operating system already caches, a few microseconds, so
//! it runs on a read-only connection of these right where it is asked, with no hand-off to
//! another thread and back (two wake-ups, which on two cores cost more than the read:
//! BENCHMARKS.md, "Where the time goes"). In WAL mode a reader sees the last commit without
//! waiting for a running write. SQLite's writer ([`crate::group`]) runs its statements with
//! the same functions.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{OpenFlags, ToSql};

use crate::{Arg, Columns, Decoder, StoreError, WAIT, sqlite_cannot_serve_now, sqlite_code};

/// Prepared statements kept per connection: every plain read the stores make, with room.
const STATEMENT_CACHE: usize = 64;
/// The names of the first values a statement binds, so a read formats none of them.
const PARAMETER_NAMES: [&str; 8] = ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8"];
/// A reader only waits for a lock while SQLite recovers a WAL another process left.
const BUSY_WAIT: Duration = Duration::from_millis(100);

/// Read-only connections to one SQLite file, each lent to one read at a time.
pub(crate) struct InlineReaders {
    free: Mutex<Free>,
    returned: Condvar,
}

/// The connections not lent out, the last returned on top (its pages are the warmest).
struct Free {
    connections: Vec<rusqlite::Connection>,
    /// Reads waiting for a connection (a return wakes one only then: a wake is a system call).
    waiting: usize,
    closed: bool,
}

impl std::fmt::Debug for InlineReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineReaders")
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
                Ok(connection)
            })
            .collect::<Result<_, rusqlite::Error>>()
            .map_err(error)?;
        let free = Free {
            connections,
            waiting: 0,
            closed: false,
        };
        Ok(Arc::new(InlineReaders {
            free: Mutex::new(free),
            returned: Condvar::new(),
        }))
    }

    /// Runs `sql` on a free connection and decodes every row.
    pub(crate) fn all<T>(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
        decode: Decoder<T>,
    ) -> Result<Vec<T>, StoreError> {
        let lent = self.take()?;
        query(lent.connection(), sql, args, decode)
    }

    /// A free connection. A read holds one for no await, so a thread holds one at most: only
    /// while more threads than connections read at once does one wait, for whichever is
    /// returned first, and for [`WAIT`] at most.
    fn take(&self) -> Result<Lent<'_>, StoreError> {
        let deadline = Instant::now() + WAIT;
        let mut free = self.lock();
        loop {
            if free.closed {
                return Err(StoreError::Unavailable(Arc::new(sqlx::Error::PoolClosed)));
            }
            if let Some(connection) = free.connections.pop() {
                return Ok(Lent {
                    readers: self,
                    connection: Some(connection),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(Arc::new(sqlx::Error::PoolTimedOut)));
            }
            free.waiting += 1;
            let waited = self.returned.wait_timeout(free, left);
            free = waited.map_or_else(|e| e.into_inner().0, |(free, _)| free);
            free.waiting -= 1;
        }
    }

    /// Closes every connection not lent out, and each lent one as it comes back; reads are
    /// refused from now on.
    pub(crate) fn close(&self) {
        let mut free = self.lock();
        free.closed = true;
        free.connections.clear();
        self.returned.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Free> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection lent to one read, returned when dropped.
pub(crate) struct Lent<'a> {
    readers: &'a InlineReaders,
    connection: Option<rusqlite::Connection>,
}

impl Lent<'_> {
    fn connection(&self) -> &rusqlite::Connection {
        match &self.connection {
            Some(connection) => connection,
            None => unreachable!("a lent connection is only taken back when dropped"),
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let mut free = self.readers.lock();
        if let Some(connection) = self.connection.take().filter(|_| !free.closed) {
            free.connections.push(connection);
            if free.waiting > 0 {
                self.readers.returned.notify_one();
            }
        }
    }
}

#[cfg(test)]
impl InlineReaders {
    /// Takes every connection, as reads in flight on every worker would.
    pub(crate) fn hold_all(&self) -> Vec<Lent<'_>> {
        std::iter::from_fn(|| self.lock().connections.pop())
            .map(|connection| Lent {
                readers: self,
                connection: Some(connection),
            })
            .collect()
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
