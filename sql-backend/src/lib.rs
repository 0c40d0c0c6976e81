//! The SQL layer under both services' stores: each store writes a statement once, with `$N`
//! placeholders (sqlx's SQLite driver reads them too) in SQL both engines parse (`CASE`,
//! `CAST`, `RETURNING`, `ON CONFLICT`, bit operators), and runs it through [`Pools`] or a
//! [`Session`]. What really differs between SQLite and PostgreSQL is in [`Backend`], and only:
//!
//! - **Pool topology.** SQLite gets one writer connection, so write transactions run in turn and
//!   never meet `SQLITE_BUSY`, beside read-only connections; PostgreSQL one pool of concurrent
//!   connections.
//! - **Ordered reads and row locks.** A read that must not see a snapshot from before a running
//!   write goes through SQLite's writer (busy until that write commits); on PostgreSQL it takes
//!   `FOR SHARE`, or `FOR UPDATE` when its transaction then writes the rows. [`Backend::ROW_LOCKS`]
//!   also tells a store to take its own `FOR UPDATE` locks, which SQLite neither has nor needs.
//! - **Key locks.** PostgreSQL serialises transactions on a key with an advisory lock; SQLite's
//!   one writer already runs them in turn.
//! - **Migrations**, since column types differ: each store keeps a set per engine.
//! - **Files.** An SQLite database is a file of ours, holding personal data: it is made 0600
//!   in a 0700 directory before SQLite opens it. PostgreSQL's files are its server's.
//!
//! Unique violations are no difference: sqlx classifies both engines' codes (SQLite 2067 and
//! 1555, PostgreSQL 23505) as `is_unique_violation`, read in one place ([`StoreError`]'s `From`).
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use miniprogram_token::{ScopeSet, Timestamp};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Pool, Row, Type};

pub use sqlx::{Postgres, Sqlite};

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
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(Arc::new(e))
            }
            _ => StoreError::Internal(Arc::new(e)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Internal(Arc::new(e.into()))
    }
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

impl<R: Row> Columns for R
where
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
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
        fn $name(row: &impl $crate::Columns) -> Result<$record, sqlx::Error> {
            Ok($record { $($field: row.$kind(stringify!($field))?),+ })
        }
    )+};
}

/// The two calls that run a statement with [`Arg`]s on one connection, the same text for both
/// engines: written once, expanded in each [`Backend`] impl.
macro_rules! queries {
    () => {
        type Record = <Self as Database>::Row;

        async fn fetch_all<'a>(
            conn: &'a mut Self::Connection,
            sql: Cow<'static, str>,
            args: &'a [Arg<'a>],
        ) -> Result<Vec<Self::Record>, sqlx::Error> {
            bind(query(sql), args).fetch_all(conn).await
        }

        async fn execute<'a>(
            conn: &'a mut Self::Connection,
            sql: Cow<'static, str>,
            args: &'a [Arg<'a>],
        ) -> Result<u64, sqlx::Error> {
            let done = bind(query(sql), args).execute(conn).await?;
            Ok(done.rows_affected())
        }
    };
}

/// A statement for sqlx: a constant as it is (no copy per call); one built at run time (a
/// constant with `FOR SHARE` added) as its own text. Statement text comes only from the
/// stores' constants: values are bound, never spliced.
fn query<DB: Database>(sql: Cow<'static, str>) -> sqlx::query::Query<'static, DB, DB::Arguments> {
    match sql {
        Cow::Borrowed(sql) => sqlx::query(sql),
        Cow::Owned(sql) => sqlx::query(AssertSqlSafe(sql)),
    }
}

/// Binds `args` to the placeholders in turn.
fn bind<'q, DB>(
    query: sqlx::query::Query<'q, DB, DB::Arguments>,
    args: &[Arg<'_>],
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
{
    args.iter().fold(query, |query, arg| match *arg {
        Arg::Int(v) => query.bind(v),
        Arg::Text(v) => query.bind(v),
        Arg::Bytes(v) => query.bind(v),
    })
}

/// What differs between the engines; the module doc says why each item does.
pub trait Backend: Database {
    type Record: Columns + Send;
    /// Writers run concurrently and lock rows: reads in order take `FOR SHARE`, and stores take
    /// their own `FOR UPDATE` locks where two writers must queue in one order.
    const ROW_LOCKS: bool;
    /// A statement taking a transaction-scoped lock on the i64 key `$1`, where transactions can
    /// overlap.
    const KEY_LOCK: Option<&'static str>;

    /// Opens `url` (creating an SQLite file if missing) and applies `migrator`; SQLite gets
    /// `readers` read-only connections beside its writer.
    fn open(
        url: &str,
        migrator: &'static Migrator,
        readers: u32,
    ) -> impl Future<Output = StoreResult<Pools<Self>>> + Send;

    /// Runs a statement on `conn`: the rows it returns.
    fn fetch_all<'a>(
        conn: &'a mut Self::Connection,
        sql: Cow<'static, str>,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<Vec<Self::Record>, sqlx::Error>> + Send + 'a;

    /// Runs a statement on `conn`: the rows it changed.
    fn execute<'a>(
        conn: &'a mut Self::Connection,
        sql: Cow<'static, str>,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a;
}

/// How long a caller waits for a connection, or SQLite for a lock held by another process.
const WAIT: Duration = Duration::from_secs(5);
/// PostgreSQL connections per pool.
const PG_CONNECTIONS: u32 = 16;

impl Backend for Sqlite {
    queries!();
    const ROW_LOCKS: bool = false;
    const KEY_LOCK: Option<&'static str> = None;

    async fn open(
        url: &str,
        migrator: &'static Migrator,
        readers: u32,
    ) -> StoreResult<Pools<Self>> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(WAIT)
            .foreign_keys(true);
        service_runtime::private_files::prepare_sqlite_database(url, options.get_filename())
            .map_err(sqlx::Error::Io)?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        migrator.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Pools { writer, reader })
    }
}

impl Backend for Postgres {
    queries!();
    const ROW_LOCKS: bool = true;
    const KEY_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock($1)");

    async fn open(
        url: &str,
        migrator: &'static Migrator,
        _readers: u32,
    ) -> StoreResult<Pools<Self>> {
        let pool = PgPoolOptions::new()
            .max_connections(PG_CONNECTIONS)
            .acquire_timeout(WAIT)
            .connect_with(url.parse()?)
            .await?;
        migrator.run(&pool).await?;
        Ok(Pools {
            writer: pool.clone(),
            reader: pool,
        })
    }
}

/// What a statement needs of its connection, which picks the connection outside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A read that may see a snapshot from before a running write.
    Read,
    /// A read that waits for running writes to the rows it reads.
    InOrder,
    /// A read in a transaction that then writes what it read: holds the rows until the
    /// transaction ends.
    Hold,
    Write,
}

fn statement<B: Backend>(sql: &'static str, access: Access) -> Cow<'static, str> {
    match access {
        Access::InOrder if B::ROW_LOCKS => Cow::Owned(format!("{sql} FOR SHARE")),
        Access::Hold if B::ROW_LOCKS => Cow::Owned(format!("{sql} FOR UPDATE")),
        _ => Cow::Borrowed(sql),
    }
}

/// A store's connections: the writer (also for reads in order) and the readers.
#[derive(Debug)]
pub struct Pools<B: Database> {
    writer: Pool<B>,
    reader: Pool<B>,
}

impl<B: Database> Clone for Pools<B> {
    fn clone(&self) -> Self {
        Pools {
            writer: self.writer.clone(),
            reader: self.reader.clone(),
        }
    }
}

impl<B: Backend> Pools<B> {
    /// A session whose statements each run on a pooled connection of their own.
    pub fn session(&self) -> Session<B> {
        Session::Pooled(self.clone())
    }

    /// A session whose statements all run in one transaction on the writer.
    pub async fn begin(&self) -> StoreResult<Session<B>> {
        Ok(Session::Transaction(self.writer.begin().await?))
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Statements run one by one on pooled connections, or together in one transaction, rolled
/// back if the session is dropped before [`Session::commit`].
pub enum Session<B: Database> {
    Pooled(Pools<B>),
    Transaction(sqlx::Transaction<'static, B>),
}

/// Decodes one row into what a store returns.
pub type Decoder<B, T> = fn(&<B as Backend>::Record) -> Result<T, sqlx::Error>;

impl<B: Backend> Session<B> {
    async fn rows(
        &mut self,
        access: Access,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<B::Record>, sqlx::Error> {
        let sql = statement::<B>(sql, access);
        match self {
            Session::Pooled(pools) if access == Access::Read => {
                B::fetch_all(&mut *pools.reader.acquire().await?, sql, args).await
            }
            Session::Pooled(pools) => {
                B::fetch_all(&mut *pools.writer.acquire().await?, sql, args).await
            }
            Session::Transaction(tx) => B::fetch_all(tx, sql, args).await,
        }
    }

    /// Every row the statement returns, decoded.
    pub async fn all<T>(
        &mut self,
        access: Access,
        sql: &'static str,
        args: &[Arg<'_>],
        decode: Decoder<B, T>,
    ) -> StoreResult<Vec<T>> {
        let rows = self.rows(access, sql, args).await?;
        Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
    }

    /// The first row the statement returns, decoded, or none.
    pub async fn first<T>(
        &mut self,
        access: Access,
        sql: &'static str,
        args: &[Arg<'_>],
        decode: Decoder<B, T>,
    ) -> StoreResult<Option<T>> {
        let rows = self.rows(access, sql, args).await?;
        Ok(rows.first().map(decode).transpose()?)
    }

    /// Runs a write; rows changed.
    pub async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        Ok(match self {
            Session::Pooled(pools) => {
                B::execute(
                    &mut *pools.writer.acquire().await?,
                    Cow::Borrowed(sql),
                    args,
                )
                .await?
            }
            Session::Transaction(tx) => B::execute(tx, Cow::Borrowed(sql), args).await?,
        })
    }

    /// Takes the lock on `key` until the transaction ends, so transactions under one key run
    /// their statements after it in turn. Only a transaction holds a lock: in a pooled session
    /// this is an error.
    pub async fn lock(&mut self, key: i64) -> StoreResult<()> {
        match (self, B::KEY_LOCK) {
            (Session::Transaction(tx), Some(lock)) => {
                B::execute(tx, Cow::Borrowed(lock), args![key]).await?;
                Ok(())
            }
            (Session::Transaction(_), None) => Ok(()),
            (Session::Pooled(_), _) => Err(StoreError::Internal(Arc::new(sqlx::Error::Protocol(
                "a lock is taken in a transaction".into(),
            )))),
        }
    }

    /// Keeps what a transaction wrote; nothing to do for a pooled session.
    pub async fn commit(self) -> StoreResult<()> {
        if let Session::Transaction(tx) = self {
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Test support: the stores' conformance harness. SQLite runs in a temporary file; PostgreSQL
/// in a fresh schema of the database named by `TEST_DATABASE_URL`.
#[cfg(feature = "testing")]
pub mod testing {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Engine, StoreResult};

    /// Set (by CI) to make a missing `TEST_DATABASE_URL` a failure instead of a skip.
    pub const REQUIRE_ENV: &str = "REQUIRE_POSTGRES";
    pub const URL_ENV: &str = "TEST_DATABASE_URL";

    /// `conformance!(open; case, ..)`: a `#[tokio::test]` per case and engine, each on a fresh
    /// store from the async fn `open(url)`, within a minute.
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
                async fn $case() {
                    let engine = $crate::Engine::Postgres;
                    $crate::testing::run_case(engine, $open, super::$case).await;
                }
            )+}
        };
    }

    /// Runs `case` on a fresh store of `engine` opened by `open`, within a minute; on
    /// PostgreSQL, nothing when no test database is configured.
    pub async fn run_case<S: ?Sized, F: Future<Output = ()>>(
        engine: Engine,
        open: impl AsyncFnOnce(&str) -> StoreResult<Arc<S>>,
        case: impl FnOnce(Arc<S>) -> F,
    ) {
        let run = async {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = match engine {
                Engine::Sqlite => sqlite_url(&dir),
                Engine::Postgres => match fresh_schema_url("test").await {
                    Some(url) => url,
                    None => return,
                },
            };
            case(open(&url).await.expect("open the store")).await;
        };
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the case finishes within a minute");
    }

    /// The databases a test runs on: SQLite in a temporary directory (kept by the guard) and,
    /// when a test database is configured, a fresh PostgreSQL schema.
    ///
    /// # Panics
    /// When `REQUIRE_POSTGRES` is set but the database is missing or unreachable.
    pub async fn urls() -> (Vec<(Engine, String)>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut urls = vec![(Engine::Sqlite, sqlite_url(&dir))];
        let postgres = fresh_schema_url("test").await;
        urls.extend(postgres.map(|url| (Engine::Postgres, url)));
        (urls, dir)
    }

    fn sqlite_url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("store.db").display())
    }

    /// A database URL whose connections use a new, empty schema; `None` when no test database
    /// is configured.
    ///
    /// # Panics
    /// When `REQUIRE_POSTGRES` is set but the database is missing or unreachable.
    pub async fn fresh_schema_url(prefix: &str) -> Option<String> {
        let Ok(url) = std::env::var(URL_ENV) else {
            assert!(
                std::env::var_os(REQUIRE_ENV).is_none(),
                "{REQUIRE_ENV} is set but {URL_ENV} is not"
            );
            return None;
        };
        let admin = sqlx::PgPool::connect(&url)
            .await
            .expect("connect to TEST_DATABASE_URL");
        let random = miniprogram_token::random_bytes().expect("random");
        let schema = format!("{prefix}_{}", hex::encode(&random[..6]));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("create schema");
        admin.close().await;
        let separator = if url.contains('?') { '&' } else { '?' };
        Some(format!(
            "{url}{separator}options=-c%20search_path%3D{schema}"
        ))
    }
}
