//! The SQL layer under both services' stores: each store writes a statement once, with `$N`
//! placeholders in SQL both engines parse (`CASE`, `CAST`, `RETURNING`, `ON CONFLICT`, bit
//! operators), and runs it through a [`Session`] of its [`Pools`]. SQLite runs on rusqlite
//! connections of ours: one writer whose transactions commit in groups ([`group`]) and
//! read-only connections that read on the calling thread ([`inline`]). PostgreSQL runs on
//! sqlx's pool. sqlx also creates and migrates an SQLite file. What differs between the
//! engines, and why, is in the README's "Storage".
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use miniprogram_token::{ScopeSet, Timestamp};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};

use crate::group::GroupWriter;
use crate::inline::InlineReaders;

mod group;
mod inline;

pub use group::Member;

/// What a store call returns.
pub type StoreResult<T> = Result<T, StoreError>;

/// Storage failures a caller can act on, plus one bucket for everything else.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    AlreadyExists,
    #[error("unsupported database URL (expected sqlite:... or postgres://...)")]
    UnsupportedUrl,
    #[error("the database is unavailable: {0}")]
    Unavailable(Arc<sqlx::Error>),
    #[error("unexpected database error: {0}")]
    Internal(Arc<sqlx::Error>),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
            sqlx::Error::Database(db) if cannot_serve_now(db.as_ref()) => {
                StoreError::Unavailable(Arc::new(e))
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Arc::new(e)),
            _ => StoreError::Internal(Arc::new(e)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Internal(Arc::new(e.into()))
    }
}

/// PostgreSQL SQLSTATE classes and codes that say the server cannot serve now (it went away,
/// is shutting down or starting up, or ran out of disk, memory or connections), not that a
/// statement was wrong: `faults/`'s PostgreSQL restart test sees the first three.
mod sqlstate {
    pub const CONNECTION_EXCEPTION_CLASS: &str = "08";
    pub const INSUFFICIENT_RESOURCES_CLASS: &str = "53";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CRASH_SHUTDOWN: &str = "57P02";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
}

/// SQLite primary result codes (the low byte of an extended code) that say the same of the
/// file: the disk is full or failing (`faults/`'s disk-full test), or another process held
/// the lock past the busy timeout.
mod sqlite_code {
    pub const BUSY: i64 = 5;
    pub const IOERR: i64 = 10;
    pub const FULL: i64 = 13;
    /// `SQLITE_CONSTRAINT_UNIQUE` and `SQLITE_CONSTRAINT_PRIMARYKEY`, as sqlx reads them too.
    pub const UNIQUE_VIOLATIONS: [i64; 2] = [2067, 1555];
}

/// Whether a database error means the database cannot serve now, so the call may be retried
/// (`SERVICE_UNAVAILABLE`) rather than having failed for good (`INTERNAL`).
fn cannot_serve_now(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = pg.code();
        return code.starts_with(sqlstate::CONNECTION_EXCEPTION_CLASS)
            || code.starts_with(sqlstate::INSUFFICIENT_RESOURCES_CLASS)
            || [
                sqlstate::ADMIN_SHUTDOWN,
                sqlstate::CRASH_SHUTDOWN,
                sqlstate::CANNOT_CONNECT_NOW,
            ]
            .contains(&code);
    }
    let code = db.code().and_then(|c| c.parse::<i64>().ok());
    code.is_some_and(sqlite_cannot_serve_now)
}

/// The same for an SQLite (extended) result code.
fn sqlite_cannot_serve_now(code: i64) -> bool {
    [sqlite_code::BUSY, sqlite_code::IOERR, sqlite_code::FULL].contains(&(code & 0xff))
}

/// The engine a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn of(url: &str) -> StoreResult<Engine> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

/// A store's migrations: one set per engine, since column types differ.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

/// A value bound to a `$N` placeholder. Times are stored as i64 nanoseconds, scope sets as
/// i64 bit sets, hashes as bytes, in every table of both engines.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Bytes(&'a [u8]),
}

/// `args![a, b]`: the values for `$1`, `$2`, each converted with `Arg::from`.
#[macro_export]
macro_rules! args {
    ($($value:expr),* $(,)?) => { &[$($crate::Arg::from($value)),*] };
}

macro_rules! arg_from {
    ($($value:ident: $from:ty => $arg:expr;)+) => {$(
        impl<'a> From<$from> for Arg<'a> {
            fn from($value: $from) -> Self {
                $arg
            }
        }
    )+};
}

arg_from! {
    v: i64 => Arg::Int(Some(v));
    v: u32 => Arg::Int(Some(i64::from(v)));
    v: bool => Arg::Int(Some(i64::from(v)));
    t: Timestamp => Arg::Int(Some(t.unix_nanos()));
    t: Option<Timestamp> => Arg::Int(t.map(Timestamp::unix_nanos));
    s: ScopeSet => Arg::Int(Some(i64::from(s.bits())));
    s: &'a str => Arg::Text(Some(s));
    s: &'a String => Arg::Text(Some(s));
    s: Option<&'a str> => Arg::Text(s);
    s: &'a Option<String> => Arg::Text(s.as_deref());
    b: &'a [u8; 32] => Arg::Bytes(b);
}

/// A row's columns by name, read the same on both engines.
pub trait Columns {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error>;

    fn time(&self, col: &str) -> Result<Timestamp, sqlx::Error> {
        Ok(Timestamp::from_unix_nanos(self.int(col)?))
    }

    fn opt_time(&self, col: &str) -> Result<Option<Timestamp>, sqlx::Error> {
        Ok(self.opt_int(col)?.map(Timestamp::from_unix_nanos))
    }

    fn scopes(&self, col: &str) -> Result<ScopeSet, sqlx::Error> {
        Ok(ScopeSet::from_bits(self.int(col)? as u8))
    }

    fn flag(&self, col: &str) -> Result<bool, sqlx::Error> {
        Ok(self.int(col)? != 0)
    }

    fn uint(&self, col: &str) -> Result<u64, sqlx::Error> {
        Ok(self.int(col)? as u64)
    }

    /// A SHA-256 digest.
    fn digest(&self, col: &str) -> Result<[u8; 32], sqlx::Error> {
        self.bytes(col)?
            .try_into()
            .map_err(|_| sqlx::Error::ColumnDecode {
                index: col.to_owned(),
                source: "not 32 bytes".into(),
            })
    }
}

impl Columns for PgRow {
    fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        self.try_get(col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(col)
    }
    fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
        self.try_get(col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(col)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(col)
    }
}

/// `decoders! { name -> Record { field: kind, .. } .. }`: a `fn name(row) -> Record` per
/// record, each field read from the column of its name with the [`Columns`] method `kind`.
#[macro_export]
macro_rules! decoders {
    ($($name:ident -> $record:ident { $($field:ident: $kind:ident),+ $(,)? })+) => {$(
        fn $name(row: &dyn $crate::Columns) -> Result<$record, sqlx::Error> {
            Ok($record { $($field: row.$kind(stringify!($field))?),+ })
        }
    )+};
}

/// Decodes one row, of either engine, into what a store returns.
pub type Decoder<T> = fn(&dyn Columns) -> Result<T, sqlx::Error>;

/// What a statement needs of its connection, which picks the connection outside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A read that may see a snapshot from before a running write.
    Read,
    /// A read that waits for running writes to the rows it reads: on SQLite it reads on the
    /// writer, on PostgreSQL it takes `FOR SHARE`.
    InOrder,
    /// A read in a transaction that then writes what it read: holds the rows until the
    /// transaction ends (`FOR UPDATE` on PostgreSQL; SQLite's one writer holds everything).
    Hold,
    Write,
}

/// SQLite syncs the WAL to disk at every commit, before the call that wrote it answers: an
/// acknowledged withdrawal, spent code or rotated refresh token (and a deleted profile)
/// survives a power cut (README, "Durability").
const SYNCHRONOUS: &str = "FULL";
/// Each SQLite connection's page cache, in KiB (negative: SQLite's unit for a size): a quarter
/// of SQLite's default 2 MiB. Reads look up single rows by key, and the operating system's page
/// cache holds the file for every connection.
const CACHE_SIZE: &str = "-512";
/// How long a caller waits for a connection, or SQLite for a lock held by another process.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// PostgreSQL connections per pool.
const PG_CONNECTIONS: u32 = 16;

/// How far [`Pools::scrub`] goes on PostgreSQL; SQLite zeroes freed bytes either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vacuum {
    /// `VACUUM`: dead tuples are freed for reuse, not zeroed; writes go on meanwhile.
    #[default]
    Plain,
    /// `VACUUM FULL`: each table and its indexes are copied into new files without the dead
    /// tuples and the old files are removed; the table is locked (ACCESS EXCLUSIVE, reads
    /// included) while it runs.
    Full,
}

/// A store's connections.
#[derive(Debug, Clone)]
pub struct Pools(Connections);

#[derive(Debug, Clone)]
enum Connections {
    Sqlite(Arc<GroupWriter>, Arc<InlineReaders>),
    Postgres(PgPool, Arc<LockTurns>),
}

/// Turns at a key in this process, for [`Pools::begin_in_turn`] on PostgreSQL: one queue per
/// key, kept only while a call holds or awaits its turn, so one key's queue never delays
/// another key and the memory grows only with the calls holding or awaiting a turn.
#[derive(Debug, Default)]
struct LockTurns {
    keys: std::sync::Mutex<std::collections::HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl LockTurns {
    /// `key`'s turn, held until the [`Turn`] is dropped. A call dropped while it waits (its
    /// caller gone, its deadline passed), even one the turn was just handed to, leaves no
    /// queue behind: its [`Turn`] exists from the start, and is dropped after the wait.
    async fn take(self: &Arc<Self>, key: i64) -> Turn {
        let queue = {
            let mut keys = self
                .keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            keys.entry(key).or_default().clone()
        };
        let mut turn = Turn {
            held: None,
            turns: self.clone(),
            key,
        };
        turn.held = Some(queue.lock_owned().await);
        turn
    }
}

/// A key's turn: given to the next in its queue when dropped, and the queue forgotten once
/// nobody holds or awaits it.
#[derive(Debug)]
pub struct Turn {
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
    turns: Arc<LockTurns>,
    key: i64,
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut keys = (self.turns.keys.lock()).unwrap_or_else(std::sync::PoisonError::into_inner);
        if keys
            .get(&self.key)
            .is_some_and(|queue| Arc::strong_count(queue) == 1)
        {
            keys.remove(&self.key);
        }
    }
}

impl Pools {
    /// The engine the pools connect to, for the few statements whose text differs.
    pub fn engine(&self) -> Engine {
        match self.0 {
            Connections::Sqlite(..) => Engine::Sqlite,
            Connections::Postgres(..) => Engine::Postgres,
        }
    }

    /// Opens `url` (creating an SQLite file if missing) and applies its engine's migrations;
    /// SQLite gets a read-only connection per core beside its writer.
    pub async fn open(url: &str, migrations: Migrations) -> StoreResult<Pools> {
        match Engine::of(url)? {
            Engine::Sqlite => open_sqlite(url, migrations.sqlite).await,
            Engine::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(PG_CONNECTIONS)
                    .acquire_timeout(WAIT)
                    .connect_with(url.parse()?)
                    .await?;
                migrations.postgres.run(&pool).await?;
                Ok(Pools(Connections::Postgres(
                    pool,
                    Arc::new(LockTurns::default()),
                )))
            }
        }
    }

    /// A session whose statements each run on a connection of their own.
    pub fn session(&self) -> Session {
        Session::Pooled(self.clone())
    }

    /// A session whose statements all run in one transaction on the writer.
    pub async fn begin(&self) -> StoreResult<Session> {
        Ok(match &self.0 {
            Connections::Postgres(pool, _) => Session::Transaction(pool.begin().await?, None),
            Connections::Sqlite(writer, _) => Session::Member(writer.begin().await?),
        })
    }

    /// A transaction that holds `key`'s turn in this process until it ends. On PostgreSQL it
    /// waits for the turn before it takes a connection, so this process's transactions that
    /// would wait on one lock or one row hold one pooled connection between them, not one
    /// each while they wait. SQLite's transactions wait for its one writer, holding nothing
    /// else, and take no turn.
    pub async fn begin_in_turn(&self, key: i64) -> StoreResult<Session> {
        Ok(match &self.0 {
            Connections::Postgres(pool, turns) => {
                let turn = turns.take(key).await;
                Session::Transaction(pool.begin().await?, Some(turn))
            }
            Connections::Sqlite(..) => self.begin().await?,
        })
    }

    /// A transaction holding the lock on `key` ([`Session::lock`]) from its start, in `key`'s
    /// turn ([`Pools::begin_in_turn`]).
    pub async fn begin_locked(&self, key: i64) -> StoreResult<Session> {
        let mut session = self.begin_in_turn(key).await?;
        session.lock(key).await?;
        Ok(session)
    }

    /// After rows of `tables` were deleted, drops what the engine keeps of them in its files, as
    /// far as it can (README, "Erasure"). SQLite connections run with `secure_delete`, so the
    /// freed bytes are zeroed; this commits the open group, copies the WAL into the file and
    /// truncates it. PostgreSQL runs `VACUUM` on each table (or `VACUUM FULL`), outside a
    /// transaction. Table names come from the stores' constants, never from a request.
    pub async fn scrub(&self, tables: &[&'static str], vacuum: Vacuum) -> StoreResult<()> {
        let pool = match &self.0 {
            Connections::Sqlite(writer, _) => return writer.checkpoint().await,
            Connections::Postgres(pool, _) => pool,
        };
        let command = match vacuum {
            Vacuum::Plain => "VACUUM",
            Vacuum::Full => "VACUUM FULL",
        };
        let mut conn = pool.acquire().await?;
        for table in tables {
            let vacuum = sqlx::raw_sql(AssertSqlSafe(format!("{command} {table}")));
            sqlx::Executor::execute(&mut *conn, vacuum).await?;
        }
        Ok(())
    }

    /// Refuses every statement from now on and closes the connections (SQLite's writer last,
    /// so that it removes the WAL).
    pub async fn close(&self) {
        match &self.0 {
            Connections::Postgres(pool, _) => pool.close().await,
            Connections::Sqlite(writer, readers) => {
                readers.close();
                writer.close().await;
            }
        }
    }
}

/// Opens an SQLite file, again while it is busy for another process (one starting on the same
/// file can hold it while it converts it to WAL or migrates it; SQLite reports some of those
/// locks at once, without waiting), for up to [`WAIT`].
async fn open_sqlite(url: &str, migrator: &Migrator) -> StoreResult<Pools> {
    let started = std::time::Instant::now();
    loop {
        match try_open_sqlite(url, migrator).await {
            Err(StoreError::Unavailable(_)) if started.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            opened => return opened,
        }
    }
}

/// sqlx creates the file (0600 in a 0700 directory, as it holds personal data), turns it to
/// WAL mode and migrates it; then the writer and the readers open it.
async fn try_open_sqlite(url: &str, migrator: &Migrator) -> StoreResult<Pools> {
    let writing = [
        ("synchronous", SYNCHRONOUS),
        ("foreign_keys", "ON"),
        ("secure_delete", "ON"),
    ];
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(WAIT);
    // Migrations delete rows too (old revocation rules, retired keys): as the writer does.
    let options = writing.iter().fold(options, |options, (name, value)| {
        options.pragma(*name, *value)
    });
    let path = options.get_filename().to_owned();
    service_runtime::private_files::prepare_sqlite_database(url, &path).map_err(sqlx::Error::Io)?;
    let migrating = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    // The writer opens before the migrating connection closes: the last connection to
    // close removes the WAL, which read-only connections cannot create again.
    let writer_pragmas = [writing.as_slice(), &[("cache_size", CACHE_SIZE)]].concat();
    let opened = match migrate_sqlite(&migrating, migrator).await {
        Ok(()) => GroupWriter::open(&path, &writer_pragmas),
        Err(e) => Err(e),
    };
    migrating.close().await;
    let writer = opened?;
    match InlineReaders::open(&path, CACHE_SIZE) {
        Ok(readers) => Ok(Pools(Connections::Sqlite(writer, readers))),
        Err(e) => {
            writer.close().await;
            Err(e)
        }
    }
}

/// Applies `migrator` to an SQLite file that other processes may be migrating at once (two
/// replicas, or an old and a new process, starting on one file). sqlx takes no lock across
/// processes on SQLite, so the loser of a race fails on a table the winner just made, with
/// nothing of its attempt kept (each migration runs in one transaction). While the failures
/// come with another process's progress (more migrations applied than before the attempt), it
/// reads the applied set again and carries on; any other failure is returned.
/// (`processes_starting_at_once_on_one_sqlite_file_migrate_it_once` in faults/.)
async fn migrate_sqlite(writer: &SqlitePool, migrator: &Migrator) -> StoreResult<()> {
    async fn applied(writer: &SqlitePool) -> i64 {
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations");
        count.fetch_one(writer).await.unwrap_or(0)
    }
    let mut races_lost = 0;
    loop {
        let before = applied(writer).await;
        match migrator.run(writer).await {
            Ok(()) => return Ok(()),
            Err(_)
                if races_lost < 2 * migrator.migrations.len() && applied(writer).await > before =>
            {
                races_lost += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Statements run one by one, or together in one transaction, rolled back if the session is
/// dropped before [`Session::commit`].
pub enum Session {
    Pooled(Pools),
    /// A transaction on PostgreSQL.
    Transaction(sqlx::Transaction<'static, sqlx::Postgres>, Option<Turn>),
    /// A transaction on SQLite's writer.
    Member(Member),
}

impl Session {
    /// Every row the statement returns, decoded.
    pub async fn all<T>(
        &mut self,
        access: Access,
        sql: &'static str,
        args: &[Arg<'_>],
        decode: Decoder<T>,
    ) -> StoreResult<Vec<T>> {
        self.read(access, sql, args, decode, usize::MAX).await
    }

    /// The first row the statement returns, decoded, or none.
    pub async fn first<T>(
        &mut self,
        access: Access,
        sql: &'static str,
        args: &[Arg<'_>],
        decode: Decoder<T>,
    ) -> StoreResult<Option<T>> {
        let rows = self.read(access, sql, args, decode, 1).await?;
        Ok(rows.into_iter().next())
    }

    /// The rows the statement returns, decoded: all of them on SQLite, the first `decoded` of
    /// those PostgreSQL returns.
    async fn read<T>(
        &mut self,
        access: Access,
        sql: &'static str,
        args: &[Arg<'_>],
        decode: Decoder<T>,
        decoded: usize,
    ) -> StoreResult<Vec<T>> {
        let locking = || match access {
            Access::InOrder => Cow::Owned(format!("{sql} FOR SHARE")),
            Access::Hold => Cow::Owned(format!("{sql} FOR UPDATE")),
            Access::Read | Access::Write => Cow::Borrowed(sql),
        };
        let rows = match self {
            Session::Member(member) => return member.all(sql, args, decode),
            Session::Transaction(tx, _) => pg_query(locking(), args).fetch_all(&mut **tx).await?,
            Session::Pooled(Pools(Connections::Postgres(pool, _))) => {
                pg_query(locking(), args).fetch_all(&*pool).await?
            }
            Session::Pooled(Pools(Connections::Sqlite(writer, readers))) => {
                return match access {
                    Access::Read => readers.all(sql, args, decode),
                    Access::InOrder => writer.read_in_order(sql, args, decode).await,
                    Access::Hold | Access::Write => {
                        writer.alone(|member| member.all(sql, args, decode)).await
                    }
                };
            }
        };
        let rows = rows.iter().take(decoded);
        Ok(rows.map(|row| decode(row)).collect::<Result<_, _>>()?)
    }

    /// Runs a write; rows changed.
    pub async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        let query = || pg_query(Cow::Borrowed(sql), args);
        Ok(match self {
            Session::Member(member) => member.execute(sql, args)?,
            Session::Transaction(tx, _) => query().execute(&mut **tx).await?.rows_affected(),
            Session::Pooled(Pools(Connections::Postgres(pool, _))) => {
                query().execute(&*pool).await?.rows_affected()
            }
            Session::Pooled(Pools(Connections::Sqlite(writer, _))) => {
                writer.alone(|member| member.execute(sql, args)).await?
            }
        })
    }

    /// Runs `sql`, a `SELECT ... FOR UPDATE`, where writers run at once and lock rows
    /// (PostgreSQL), so that two transactions that take the same rows queue in one order.
    /// SQLite's one writer already runs them in turn.
    pub async fn lock_rows(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<()> {
        match self {
            Session::Member(_) | Session::Pooled(Pools(Connections::Sqlite(..))) => Ok(()),
            _ => self.execute(sql, args).await.map(drop),
        }
    }

    /// Takes the lock on `key` until the transaction ends, so transactions under one key run
    /// their statements after it in turn: an advisory lock on PostgreSQL, nothing on SQLite,
    /// whose one writer runs them in turn already. In a pooled session this is an error.
    pub async fn lock(&mut self, key: i64) -> StoreResult<()> {
        self.advisory("SELECT pg_advisory_xact_lock($1)", key).await
    }

    /// [`Session::lock`] shared with other shared holders of `key`: they run at once, and an
    /// exclusive holder waits for them all. PostgreSQL queues locks in order, so a shared
    /// request waits behind an exclusive one already waiting: a stream of shared holders
    /// cannot keep an exclusive one waiting forever.
    pub async fn lock_shared(&mut self, key: i64) -> StoreResult<()> {
        self.advisory("SELECT pg_advisory_xact_lock_shared($1)", key)
            .await
    }

    async fn advisory(&mut self, lock: &'static str, key: i64) -> StoreResult<()> {
        match self {
            Session::Transaction(..) => self.execute(lock, args![key]).await.map(drop),
            Session::Member(_) => Ok(()),
            Session::Pooled(_) => Err(StoreError::Internal(Arc::new(sqlx::Error::Protocol(
                "a lock is taken in a transaction".into(),
            )))),
        }
    }

    /// Keeps what a transaction wrote; nothing to do for a pooled session.
    pub async fn commit(self) -> StoreResult<()> {
        match self {
            Session::Transaction(tx, _turn) => tx.commit().await?,
            Session::Member(member) => member.commit().await?,
            Session::Pooled(_) => {}
        }
        Ok(())
    }
}

/// A PostgreSQL statement with `args` bound to its placeholders in turn. A constant is used as
/// it is; one built at run time (a constant with `FOR SHARE` or `FOR UPDATE` added) as its own
/// text. Statement
/// text comes only from the stores' constants: values are bound, never spliced.
fn pg_query<'q>(
    sql: Cow<'static, str>,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let query = match sql {
        Cow::Borrowed(sql) => sqlx::query(sql),
        Cow::Owned(sql) => sqlx::query(AssertSqlSafe(sql)),
    };
    args.iter().fold(query, |query, arg| match *arg {
        Arg::Int(v) => query.bind(v),
        Arg::Text(v) => query.bind(v),
        Arg::Bytes(v) => query.bind(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the per-key queues of [`LockTurns`]: while one key's turn is held (one app's
    /// flood of revocations), the turns of 1,000 other keys are each given at once, a second
    /// taker of the held key waits, and once every turn is dropped no queue is left. With 256
    /// shared stripes, about 4 of those keys waited behind the held one.
    #[tokio::test]
    async fn one_keys_turn_delays_no_other_key_and_is_forgotten() {
        let turns = Arc::new(LockTurns::default());
        let held = turns.take(0).await;
        for key in 1..=1000 {
            let turn = tokio::time::timeout(Duration::from_secs(1), turns.take(key)).await;
            assert!(turn.is_ok(), "key {key} waited behind key 0");
        }
        let second = tokio::time::timeout(Duration::from_millis(50), turns.take(0)).await;
        assert!(second.is_err(), "a key's turns are taken one at a time");
        drop(held);
        drop(turns.take(0).await);
        let left = turns.keys.lock().unwrap().len();
        assert_eq!(left, 0, "queues left behind");
    }

    /// Guards the order in `LockTurns::take` (the [`Turn`] made before the wait): a call
    /// dropped while it waits, just after the holder handed it the turn and before it ran
    /// again (its caller gone), leaves no queue behind. When the [`Turn`] was made only once
    /// the wait ended, that queue stayed in the map for good.
    #[tokio::test]
    async fn a_waiter_dropped_after_the_handoff_leaves_no_queue() {
        let turns = Arc::new(LockTurns::default());
        let held = turns.take(7).await;
        let mut waiting = Box::pin(turns.take(7));
        tokio::select! {
            biased;
            _ = &mut waiting => panic!("the turn is held"),
            () = std::future::ready(()) => {}
        }
        drop(held);
        drop(waiting);
        let left = turns.keys.lock().unwrap().len();
        assert_eq!(left, 0, "queues left behind");
    }

    /// Guards [`SYNCHRONOUS`]: the connection that commits every write runs with
    /// `synchronous=FULL` (2), so a commit is on disk before the call answers.
    #[tokio::test]
    async fn sqlite_commits_are_synced_to_disk_before_they_are_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let pools = Pools::open(&url, NO_MIGRATIONS).await.unwrap();
        let level = |r: &dyn Columns| r.int("synchronous");
        let mut writer = pools.begin().await.unwrap();
        let synced = writer.first(Access::Write, "PRAGMA synchronous", args![], level);
        assert_eq!(
            synced.await.unwrap(),
            Some(2),
            "synchronous=FULL on the writer"
        );
        writer.commit().await.unwrap();
        pools.close().await;
    }

    /// Guards `secure_delete` among the migrating connection's pragmas in `try_open_sqlite`:
    /// rows a migration deletes (auth 0002 and 0003 delete old rules and sealed keys) leave no
    /// byte of theirs in the database file, while the rows kept are there to be found.
    #[tokio::test]
    async fn rows_a_migration_deletes_leave_no_bytes_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("migrations");
        std::fs::create_dir(&source).unwrap();
        let (kept, deleted) = (
            "a-row-the-migrations-keep",
            "a-sealed-key-a-migration-deletes",
        );
        let seed = format!(
            "CREATE TABLE k (v TEXT NOT NULL); INSERT INTO k VALUES ('{kept}'), ('{deleted}');"
        );
        std::fs::write(source.join("1_seed.sql"), seed).unwrap();
        let forget = format!("DELETE FROM k WHERE v = '{deleted}';");
        std::fs::write(source.join("2_forget.sql"), forget).unwrap();
        let migrator = Migrator::new(source.as_path()).await.unwrap();
        let migrator: &'static Migrator = Box::leak(Box::new(migrator));
        let migrations = Migrations {
            sqlite: migrator,
            postgres: migrator,
        };
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let pools = Pools::open(&url, migrations).await.unwrap();
        pools.scrub(&[], Vacuum::Plain).await.unwrap();
        let file = std::fs::read(dir.path().join("store.db")).unwrap();
        pools.close().await;
        let holds = |text: &str| file.windows(text.len()).any(|w| w == text.as_bytes());
        assert!(holds(kept), "the search finds a row that is kept");
        assert!(
            !holds(deleted),
            "the deleted row's bytes are still in the file"
        );
    }

    static NO_MIGRATION: Migrator = Migrator::DEFAULT;
    const NO_MIGRATIONS: Migrations = Migrations {
        sqlite: &NO_MIGRATION,
        postgres: &NO_MIGRATION,
    };

    async fn pools_with_one_table(dir: &tempfile::TempDir) -> Pools {
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let pools = Pools::open(&url, NO_MIGRATIONS).await.unwrap();
        let mut session = pools.session();
        let create = "CREATE TABLE t (a INTEGER NOT NULL, b TEXT NOT NULL)";
        session.execute(create, args![]).await.unwrap();
        pools
    }

    /// Guards the binding by name in `inline::prepare`: a plain read served inline binds `$2`
    /// to the second value even where it appears before `$1` in the text (SQLite numbers
    /// named parameters in order of appearance), and it sees what the writer committed just
    /// before.
    #[tokio::test]
    async fn an_inline_read_binds_values_by_their_number_and_sees_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let pools = pools_with_one_table(&dir).await;
        let mut session = pools.session();
        let insert = "INSERT INTO t (a, b) VALUES ($1, $2)";
        session
            .execute(insert, args![7_i64, "seven"])
            .await
            .unwrap();
        session
            .execute(insert, args![8_i64, "eight"])
            .await
            .unwrap();
        let read = "SELECT a FROM t WHERE b = $2 AND a >= $1";
        let decode = |r: &dyn Columns| r.int("a");
        let found = readers(&pools).all(read, args![7_i64, "eight"], decode);
        assert_eq!(found.unwrap(), vec![8]);
        let found = session
            .first(Access::Read, read, args![9_i64, "eight"], decode)
            .await;
        assert_eq!(found.unwrap(), None);
        pools.close().await;
    }

    /// Guards the writer held by a read in order in `GroupWriter::read_in_order`: while a write
    /// transaction is under way the read waits, and once it commits the read sees its row,
    /// never the snapshot from before it.
    #[tokio::test]
    async fn an_inline_read_in_order_waits_for_the_running_write_and_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let pools = pools_with_one_table(&dir).await;
        let mut tx = pools.begin().await.unwrap();
        let insert = "INSERT INTO t (a, b) VALUES ($1, $2)";
        tx.execute(insert, args![1_i64, "one"]).await.unwrap();
        let reader = pools.clone();
        let read = tokio::spawn(async move {
            let decode = |r: &dyn Columns| r.text("b");
            let read = "SELECT b FROM t WHERE a = $1";
            let mut session = reader.session();
            let found = session
                .first(Access::InOrder, read, args![1_i64], decode)
                .await;
            found.unwrap()
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !read.is_finished(),
            "read in order before the write committed"
        );
        tx.commit().await.unwrap();
        let found = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
        assert_eq!(found.unwrap().unwrap().as_deref(), Some("one"));
        pools.close().await;
    }

    fn group(pools: &Pools) -> &GroupWriter {
        match &pools.0 {
            Connections::Sqlite(writer, _) => writer,
            Connections::Postgres(..) => panic!("an SQLite store"),
        }
    }

    fn readers(pools: &Pools) -> &Arc<InlineReaders> {
        match &pools.0 {
            Connections::Sqlite(_, readers) => readers,
            Connections::Postgres(..) => panic!("an SQLite store"),
        }
    }

    const INSERT: &str = "INSERT INTO t (a, b) VALUES ($1, $2)";
    const COUNT: &str = "SELECT COUNT(*) AS n FROM t";

    /// Guards the grouping in `group` (members release into the open group, the committer
    /// commits it): twenty transactions that queue behind a running one commit with it in one
    /// or two groups, not twenty-one commits, and every row is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transactions_queued_behind_a_running_one_commit_with_it_in_one_group() {
        let dir = tempfile::tempdir().unwrap();
        let pools = pools_with_one_table(&dir).await;
        let before = group(&pools).groups_committed().await;
        let mut running = pools.begin().await.unwrap();
        let queued: Vec<_> = (0..20_i64)
            .map(|i| {
                let pools = pools.clone();
                tokio::spawn(async move {
                    let mut tx = pools.begin().await?;
                    tx.execute(INSERT, args![i, "queued"]).await?;
                    tx.commit().await
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        running
            .execute(INSERT, args![20_i64, "running"])
            .await
            .unwrap();
        let all = async {
            running.commit().await.unwrap();
            for tx in queued {
                tx.await.unwrap().unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), all)
            .await
            .expect("every transaction commits within 10 s");
        let groups = group(&pools).groups_committed().await - before;
        assert!(groups <= 2, "21 transactions took {groups} commits");
        let count = |r: &dyn Columns| r.int("n");
        let mut session = pools.session();
        let rows = session.first(Access::Read, COUNT, args![], count).await;
        assert_eq!(rows.unwrap(), Some(21));
        pools.close().await;
    }

    /// Guards the rollback to the savepoint in `Member`'s `Drop`: of three transactions in one
    /// group, the one dropped without its commit leaves nothing, and the ones before and after
    /// it are kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_dropped_in_a_group_is_undone_alone() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let pools = pools_with_one_table(&dir).await;
        let before = group(&pools).groups_committed().await;
        let mut first = pools.begin().await.unwrap();
        first.execute(INSERT, args![1_i64, "kept"]).await.unwrap();
        let writer = pools.clone();
        let dropped = tokio::spawn(async move {
            let mut dropped = writer.begin().await.unwrap();
            dropped
                .execute(INSERT, args![2_i64, "dropped"])
                .await
                .unwrap();
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let writer = pools.clone();
        let last = tokio::spawn(async move {
            let mut last = writer.begin().await.unwrap();
            last.execute(INSERT, args![3_i64, "kept"]).await.unwrap();
            last.commit().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let done = async {
            first.commit().await.unwrap();
            dropped.await.unwrap();
            last.await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .expect("commits within 10 s");
        let groups = group(&pools).groups_committed().await - before;
        assert_eq!(groups, 1, "the three transactions were one group");
        let kept = |r: &dyn Columns| r.int("a");
        let read = "SELECT a FROM t ORDER BY a";
        let mut session = pools.session();
        let rows = session.all(Access::Read, read, args![], kept).await;
        assert_eq!(rows.unwrap(), vec![1, 3]);
        pools.close().await;
    }

    /// Guards the wait in `GroupWriter::read_in_order`: a read in order that saw a row of the
    /// open group answers only once that group is committed, so a plain read on another
    /// connection right after sees the row too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_in_order_answers_only_once_what_it_saw_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let pools = pools_with_one_table(&dir).await;
        let found = |r: &dyn Columns| r.text("b");
        let read = "SELECT b FROM t WHERE a = $1";
        for i in 0..30_i64 {
            let mut tx = pools.begin().await.unwrap();
            tx.execute(INSERT, args![i, "row"]).await.unwrap();
            let reader = pools.clone();
            let in_order = tokio::spawn(async move {
                let mut session = reader.session();
                let seen = session.first(Access::InOrder, read, args![i], found).await;
                let after = session.first(Access::Read, read, args![i], found).await;
                (seen.unwrap(), after.unwrap())
            });
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            tx.commit().await.unwrap();
            let (seen, after) = tokio::time::timeout(std::time::Duration::from_secs(5), in_order)
                .await
                .expect("the read answers within 5 s")
                .unwrap();
            if seen.is_some() {
                assert_eq!(after.as_deref(), Some("row"), "round {i}");
            }
        }
        pools.close().await;
    }

    /// Guards the group marked open where `BEGIN IMMEDIATE` succeeded, in `begin_group`'s
    /// blocking wait: a transaction cancelled while it waited for another process's write lock
    /// leaves the writer able to run the next one (the group it opened is committed empty).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_cancelled_while_another_process_writes_leaves_the_writer_working() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let pools = pools_with_one_table(&dir).await;
        let other = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let waiting = pools.clone();
        let cancelled = tokio::spawn(async move { waiting.begin().await.map(drop) });
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancelled.abort();
        let _ = cancelled.await;
        other.execute_batch("COMMIT").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let next = async {
            let mut tx = pools.begin().await?;
            tx.execute(INSERT, args![1_i64, "next"]).await?;
            tx.commit().await
        };
        let done = tokio::time::timeout(Duration::from_secs(10), next).await;
        done.expect("the next transaction within 10 s").unwrap();
        pools.close().await;
    }

    /// Guards the bounded wait in `GroupWriter::hold`: while a transaction keeps the writer,
    /// a write queued behind it gives up after [`WAIT`] with `Unavailable` instead of waiting
    /// for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_behind_a_transaction_that_never_ends_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let pools = pools_with_one_table(&dir).await;
        let _kept = pools.begin().await.unwrap();
        let mut session = pools.session();
        let args = args![1_i64, "queued"];
        let waited = tokio::time::timeout(WAIT * 2, session.execute(INSERT, args)).await;
        let refused = waited.expect("the write gives up within twice its wait");
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "{refused:?}"
        );
    }

    /// Guards the wait in `InlineReaders::take` and the wake in `Lent`'s drop: while every
    /// read-only connection is lent (more threads reading at once than connections), a plain
    /// read waits, and answers as soon as any one connection comes back, instead of failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plain_read_waits_while_every_reader_is_busy_and_then_answers() {
        let dir = tempfile::tempdir().unwrap();
        let pools = pools_with_one_table(&dir).await;
        let mut session = pools.session();
        session.execute(INSERT, args![1_i64, "one"]).await.unwrap();
        let mut held = readers(&pools).hold_all();
        let reading = tokio::task::spawn_blocking(move || {
            let decode = |r: &dyn Columns| r.text("b");
            let read = "SELECT b FROM t WHERE a = $1";
            let runtime = tokio::runtime::Handle::current();
            runtime.block_on(session.first(Access::Read, read, args![1_i64], decode))
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !reading.is_finished(),
            "answered while every reader was busy"
        );
        drop(held.pop());
        let found = tokio::time::timeout(std::time::Duration::from_secs(2), reading).await;
        let found = found.expect("answers within 2 s once one reader is free");
        assert_eq!(found.unwrap().unwrap().as_deref(), Some("one"));
        drop(held);
        pools.close().await;
    }

    /// Guards `InlineReaders::close`: after the store is closed a plain read is refused as
    /// closed, as every other statement is.
    #[tokio::test]
    async fn a_plain_read_after_close_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pools = pools_with_one_table(&dir).await;
        pools.close().await;
        let decode = |r: &dyn Columns| r.int("a");
        let mut session = pools.session();
        let read = session.first(Access::Read, "SELECT a FROM t", args![], decode);
        let refused = read.await.unwrap_err();
        assert!(
            matches!(&refused, StoreError::Unavailable(e) if matches!(**e, sqlx::Error::PoolClosed)),
            "{refused:?}"
        );
    }
}

/// Test support: the stores' conformance harness. SQLite runs in a temporary file; PostgreSQL
/// in a fresh schema of the database named by `TEST_DATABASE_URL`. PostgreSQL cases are
/// `#[ignore]`d (a plain `cargo test` lists them as ignored, saying what it did not test) and
/// their names contain `postgres`: `cargo test -- --ignored postgres` runs them, and fails
/// them if no server is configured.
#[cfg(feature = "testing")]
pub mod testing {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Engine, StoreResult};

    pub const URL_ENV: &str = "TEST_DATABASE_URL";

    /// `conformance!(open; case, ..)`: a `#[tokio::test]` per case and engine (`sqlite::case`,
    /// and `postgres::case`, ignored unless asked for), each on a fresh store from the async fn
    /// `open(url)`, within a minute.
    #[macro_export]
    macro_rules! conformance {
        ($open:path; $($case:ident),+ $(,)?) => {
            mod sqlite {$(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let engine = $crate::Engine::Sqlite;
                    $crate::testing::run_case(engine, $open, super::$case).await;
                }
            )+}
            mod postgres {$(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
                async fn $case() {
                    let engine = $crate::Engine::Postgres;
                    $crate::testing::run_case(engine, $open, super::$case).await;
                }
            )+}
        };
    }

    /// `on_each_engine!(case, ..)`: for each `async fn case(engine: Engine, url: String)`, a
    /// module `case` with the tests `sqlite` and `postgres` (ignored unless asked for), each
    /// given a fresh database of its engine, within a minute.
    #[macro_export]
    macro_rules! on_each_engine {
        ($($case:ident),+ $(,)?) => {$(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::testing::run_on($crate::Engine::Sqlite, super::$case).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
                async fn postgres() {
                    $crate::testing::run_on($crate::Engine::Postgres, super::$case).await;
                }
            }
        )+};
    }

    /// Runs `case` on a fresh store of `engine` opened by `open`, within a minute.
    pub async fn run_case<S: ?Sized, F: Future<Output = ()>>(
        engine: Engine,
        open: impl AsyncFnOnce(&str) -> StoreResult<Arc<S>>,
        case: impl FnOnce(Arc<S>) -> F,
    ) {
        run_on(engine, async |_, url| {
            case(open(&url).await.expect("open the store")).await;
        })
        .await;
    }

    /// Runs `case` with a fresh database of `engine` (its URL), within a minute.
    ///
    /// # Panics
    /// On PostgreSQL, when no test database is configured or it is unreachable.
    pub async fn run_on(engine: Engine, case: impl AsyncFnOnce(Engine, String)) {
        let run = async {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = match engine {
                Engine::Sqlite => format!("sqlite://{}", dir.path().join("store.db").display()),
                Engine::Postgres => fresh_schema_url("test").await,
            };
            case(engine, url).await;
        };
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the case finishes within a minute");
    }

    /// A database URL whose connections use a new, empty schema of the database named by
    /// `TEST_DATABASE_URL`.
    ///
    /// # Panics
    /// When no test database is configured or it is unreachable: a PostgreSQL test that was
    /// asked to run must not pass without a server.
    pub async fn fresh_schema_url(prefix: &str) -> String {
        let url = std::env::var(URL_ENV).unwrap_or_else(|_| {
            panic!(
                "{URL_ENV} is not set: this PostgreSQL test needs a server \
                 (`eval \"$(.ci/start-postgres.sh)\"` starts one)"
            )
        });
        let admin = tokio::time::timeout(Duration::from_secs(10), sqlx::PgPool::connect(&url))
            .await
            .expect("TEST_DATABASE_URL answers within 10 s")
            .expect("connect to TEST_DATABASE_URL");
        let random = miniprogram_token::random_bytes().expect("random");
        let schema = format!("{prefix}_{}", hex::encode(&random[..6]));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("create schema");
        admin.close().await;
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options=-c%20search_path%3D{schema}")
    }
}
