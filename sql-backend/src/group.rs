//! SQLite's writer: one connection, run on the calling thread, whose transactions commit in
//! groups (README, "Durability"). A transaction is a savepoint inside a group transaction
//! (`BEGIN IMMEDIATE`) that stays open while transactions queue for the writer; its
//! [`Member::commit`] releases the savepoint and waits, and the committer commits the group,
//! one fsync for all its members, on a blocking thread. The writer is a fair lock, so the
//! committer takes it after the transactions already queued: a group holds what queued
//! meanwhile. What a caller sees does not change, and the tests below `lib.rs` pin it:
//! - no commit returns before its group's `COMMIT` did; if that fails, every member hears so
//!   and nothing of the group is kept;
//! - a member dropped before its commit is rolled back to its savepoint alone; if SQLite rolls
//!   the whole group back (a full disk, an I/O error), no statement runs outside a group;
//! - a caller gone after its release is committed with its group without hearing so, as on
//!   PostgreSQL;
//! - a read in order reads on the writer and, while a group is open, answers once it is on
//!   disk, so it never answers with what a failed commit took back.
//!
//! Another process writing the file holds SQLite's write lock between our groups; a group
//! then waits for it off the async workers, up to the busy timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot};

use crate::inline::{self, error};
use crate::{Arg, Decoder, StoreError, StoreResult};

/// What a waiting member hears of its group's commit.
type Outcome = oneshot::Sender<StoreResult<()>>;

/// The writer connection and the committer that commits its groups.
pub(crate) struct GroupWriter {
    state: Arc<Mutex<WriterState>>,
    flush: Arc<Notify>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupWriter")
    }
}

struct WriterState {
    connection: rusqlite::Connection,
    /// A group transaction is open on the connection.
    group_open: bool,
    /// Members (and reads in order) of the open group, waiting for its commit.
    waiting: Vec<Outcome>,
    closed: bool,
    /// Groups committed so far (tests count them).
    groups_committed: u64,
}

/// The writer, held by one caller; released while a group is open, it asks for its commit.
struct Held {
    state: OwnedMutexGuard<WriterState>,
    flush: Arc<Notify>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.state.group_open {
            self.flush.notify_one();
        }
    }
}

/// Prepared statements kept on the writer: every statement the stores write, with room.
const STATEMENT_CACHE: usize = 128;

impl GroupWriter {
    /// Opens the SQLite file at `path` (migrated, in WAL mode) for writing, with `pragmas`
    /// (name, value) set on the connection, and starts its committer.
    pub(crate) fn open(
        path: &std::path::Path,
        pragmas: &[(&str, &str)],
    ) -> Result<Arc<Self>, StoreError> {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = rusqlite::Connection::open_with_flags(path, flags).map_err(error)?;
        for (name, value) in pragmas {
            connection.pragma_update(None, name, value).map_err(error)?;
        }
        connection.busy_timeout(Duration::ZERO).map_err(error)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let writer = Arc::new(GroupWriter {
            state: Arc::new(Mutex::new(WriterState {
                connection,
                group_open: false,
                waiting: Vec::new(),
                closed: false,
                groups_committed: 0,
            })),
            flush: Arc::new(Notify::new()),
        });
        tokio::spawn(commit_groups(writer.state.clone(), writer.flush.clone()));
        Ok(writer)
    }

    /// Takes the writer, waiting at most [`BUSY_WAIT`] (as long as for a pooled connection).
    async fn hold(&self) -> StoreResult<Held> {
        let waiting = tokio::time::timeout(BUSY_WAIT, self.state.clone().lock_owned());
        let state = waiting
            .await
            .map_err(|_| StoreError::Unavailable(Arc::new(sqlx::Error::PoolTimedOut)))?;
        if state.closed {
            return Err(closed());
        }
        Ok(Held {
            state,
            flush: self.flush.clone(),
        })
    }

    /// A transaction: a savepoint in the open group, or in a new one.
    pub(crate) async fn begin(&self) -> StoreResult<Member> {
        let mut held = self.hold().await?;
        if held.state.group_open && held.state.connection.is_autocommit() {
            let _ = held.state.ensure_group();
        }
        if !held.state.group_open {
            held = begin_group(held).await?;
        }
        held.state.ensure_group()?;
        let savepoint = held.state.connection.execute_batch("SAVEPOINT member");
        savepoint.map_err(error)?;
        Ok(Member { held: Some(held) })
    }

    /// Runs `statement` as a transaction of its own.
    pub(crate) async fn alone<T>(
        &self,
        statement: impl FnOnce(&mut Member) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut member = self.begin().await?;
        let done = statement(&mut member)?;
        member.commit().await?;
        Ok(done)
    }

    /// Reads on the writer, after every transaction that ran before; while a group is open,
    /// answers once it is committed.
    pub(crate) async fn read_in_order<T>(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
        decode: Decoder<T>,
    ) -> StoreResult<Vec<T>> {
        let held = self.hold().await?;
        let rows = inline::query(&held.state.connection, sql, args, decode)?;
        if held.state.group_open {
            wait_for_commit(held).await?;
        }
        Ok(rows)
    }

    /// Commits the open group, then copies the WAL into the database file and truncates it
    /// (`Pools::scrub`).
    pub(crate) async fn checkpoint(&self) -> StoreResult<()> {
        let held = self.hold().await?;
        let done = tokio::task::spawn_blocking(move || {
            let mut held = held;
            held.state.commit_group();
            let connection = &held.state.connection;
            connection.busy_timeout(BUSY_WAIT).map_err(error)?;
            let sql = "PRAGMA wal_checkpoint(TRUNCATE)";
            let busy = connection.query_row(sql, [], |row| row.get::<_, i64>(0));
            connection.busy_timeout(Duration::ZERO).map_err(error)?;
            busy.map_err(error)
        });
        let busy = done.await.map_err(crashed)??;
        if busy != 0 {
            return Err(StoreError::Unavailable(Arc::new(sqlx::Error::Protocol(
                "a reader kept the WAL checkpoint from finishing".into(),
            ))));
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) async fn groups_committed(&self) -> u64 {
        self.state.lock().await.groups_committed
    }

    /// Commits the open group and refuses every transaction after.
    pub(crate) async fn close(&self) {
        let mut state = self.state.clone().lock_owned().await;
        state.closed = true;
        if state.group_open {
            let committing = Committing(state);
            let _ = tokio::task::spawn_blocking(move || committing.commit()).await;
        }
        self.flush.notify_one();
    }
}

/// How long a group waits for another process's write lock, and a checkpoint for readers.
const BUSY_WAIT: Duration = crate::WAIT;

/// Opens a group: `BEGIN IMMEDIATE` takes SQLite's write lock at once, on this thread when it
/// is free, else on a blocking thread that waits for it up to [`BUSY_WAIT`].
async fn begin_group(mut held: Held) -> StoreResult<Held> {
    const BEGIN: &str = "BEGIN IMMEDIATE";
    match held.state.connection.execute_batch(BEGIN).map_err(error) {
        Ok(()) => {}
        Err(StoreError::Unavailable(_)) => {
            // Marked open on that thread: if this caller is gone by then, the held writer's
            // drop still asks the committer to end the group.
            let waited = tokio::task::spawn_blocking(move || {
                let state = &mut held.state;
                let begun = state
                    .connection
                    .busy_timeout(BUSY_WAIT)
                    .and_then(|()| state.connection.execute_batch(BEGIN));
                state.group_open = begun.is_ok();
                let reset = state.connection.busy_timeout(Duration::ZERO);
                begun.and(reset).map_err(error).map(|()| held)
            });
            return waited.await.map_err(crashed)?;
        }
        Err(e) => return Err(e),
    }
    held.state.group_open = true;
    Ok(held)
}

/// Releases the writer and waits for the open group's commit.
async fn wait_for_commit(mut held: Held) -> StoreResult<()> {
    let (outcome, committed) = oneshot::channel();
    held.state.waiting.push(outcome);
    drop(held);
    committed.await.unwrap_or_else(|_| Err(closed()))
}

/// The committer: each time a group is left open, takes the writer (after the transactions
/// queued for it) and commits the group on a blocking thread.
async fn commit_groups(state: Arc<Mutex<WriterState>>, flush: Arc<Notify>) {
    loop {
        flush.notified().await;
        let held = state.clone().lock_owned().await;
        if held.closed {
            return;
        }
        if held.group_open {
            let committing = Committing(held);
            let _ = tokio::task::spawn_blocking(move || committing.commit()).await;
        }
    }
}

/// The writer, taken to commit the open group on a blocking thread. Dropped with the group
/// still open (the commit panicked, or its thread never ran it), it rolls the group back, and
/// every member waiting hears so.
struct Committing(OwnedMutexGuard<WriterState>);

impl Committing {
    fn commit(mut self) {
        self.0.commit_group();
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        if self.0.group_open {
            self.0.abandon_group("the group's commit did not run");
        }
    }
}

impl WriterState {
    /// Commits the open group (one fsync) and answers its members; on failure nothing of it is
    /// kept, and each member hears why.
    fn commit_group(&mut self) {
        if !self.group_open {
            return;
        }
        let committed = self.connection.execute_batch("COMMIT").map_err(error);
        if committed.is_err() && !self.connection.is_autocommit() {
            let _ = self.connection.execute_batch("ROLLBACK");
        }
        self.groups_committed += u64::from(committed.is_ok());
        self.end_group(committed);
    }

    /// Rolls the open group back (what SQLite has not already), and tells its members why.
    fn abandon_group(&mut self, why: &str) {
        if !self.connection.is_autocommit() {
            let _ = self.connection.execute_batch("ROLLBACK");
        }
        let lost = StoreError::Unavailable(Arc::new(sqlx::Error::Protocol(why.into())));
        self.end_group(Err(lost));
    }

    fn end_group(&mut self, outcome: StoreResult<()>) {
        self.group_open = false;
        for member in self.waiting.drain(..) {
            let _ = member.send(outcome.clone());
        }
    }

    /// Fails when SQLite has rolled back the group's transaction on an error of its own (every
    /// waiting member then hears so), so that no statement runs outside a group.
    fn ensure_group(&mut self) -> StoreResult<()> {
        if self.group_open && !self.connection.is_autocommit() {
            return Ok(());
        }
        let why = "SQLite rolled back the group transaction";
        self.abandon_group(why);
        Err(StoreError::Unavailable(Arc::new(sqlx::Error::Protocol(
            why.into(),
        ))))
    }
}

/// A write transaction on SQLite: a savepoint in the writer's open group. Dropped before
/// [`Member::commit`], it is rolled back.
pub struct Member {
    held: Option<Held>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Member")
    }
}

impl Member {
    fn state(&mut self) -> StoreResult<&mut WriterState> {
        let held = self.held.as_mut().ok_or_else(closed)?;
        held.state.ensure_group()?;
        Ok(&mut held.state)
    }

    /// Every row the statement returns, decoded.
    pub(crate) fn all<T>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
        decode: Decoder<T>,
    ) -> StoreResult<Vec<T>> {
        inline::query(&self.state()?.connection, sql, args, decode)
    }

    /// Runs a write; rows changed.
    pub(crate) fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        inline::execute(&self.state()?.connection, sql, args)
    }

    /// Keeps what the transaction wrote: returns once its group is on disk.
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        let released = self.state()?.connection.execute_batch("RELEASE member");
        released.map_err(error)?;
        let held = self.held.take().ok_or_else(closed)?;
        wait_for_commit(held).await
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(held) = self.held.as_mut() {
            let state = &mut held.state;
            let undone = state
                .connection
                .execute_batch("ROLLBACK TO member; RELEASE member");
            if undone.is_err() {
                state.abandon_group("a transaction could not be rolled back alone");
            } else if state.connection.is_autocommit() {
                let _ = state.ensure_group();
            }
        }
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable(Arc::new(sqlx::Error::PoolClosed))
}

fn crashed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Internal(Arc::new(sqlx::Error::Protocol(format!(
        "SQLite writer thread: {e}"
    ))))
}
