//! The connection every SQLite store shares: opening, migrating, and running one unit of work.

use super::tx::{SqliteTx, error, finish_now};
use crate::relay::Wakeup;
use crate::{StoreError, StoreResult, sql};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;
use tokio::sync::broadcast;

pub(crate) use crate::sql::Migration;

use crate::sql::{TxResult, backend};

/// A store's file: one writer thread with group commit, and a few read connections.
///
/// Writes are units of work sent to the writer thread, which takes every unit waiting, runs
/// each in its own `SAVEPOINT` inside one `BEGIN IMMEDIATE … COMMIT`, and answers each unit
/// only after that commit. With `synchronous=FULL` one fsync then makes a whole batch durable
/// (a failing unit is rolled back to its savepoint alone), so concurrent writers share the
/// cost of the fsync instead of queueing for one each. Reads run on their own connections:
/// WAL lets them proceed beside the writer and see every answered write.
///
/// Every statement a store runs is a constant (or one of a few fixed variants), so each
/// connection keeps them prepared ([`STATEMENT_CACHE`]): SQL is parsed once per connection,
/// not once per call. That includes the transaction control around units and reads.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    writer: Arc<Writer>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    /// One file has one node: wake-ups go to this process's subscribers after each commit.
    wakeups: broadcast::Sender<Wakeup>,
}

/// Wake-ups a slow subscriber may fall behind by before it is told it lagged.
const WAKEUP_BUFFER: usize = 4096;

/// The writer thread and the way to it. Dropped with the last handle to the store: the
/// thread finishes what it was given, closes the file (checkpointing the WAL), and is joined,
/// so a stopped node has really let go of its files.
#[derive(Debug)]
struct Writer {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Units one commit may carry; bounded so a burst cannot make one transaction unbounded.
const MAX_BATCH: usize = 256;

/// Prepared statements kept per connection. It must hold every distinct statement a store
/// runs, or the LRU cache evicts and re-parses on the hot path. Today the endpoint file (with
/// the gateway tables and scheduled sends) runs 57 distinct statements and the relay's 42,
/// counting the 7 of transaction control in this file; 128 leaves room to grow. A cached
/// statement costs a few kilobytes, on a handful of connections.
const STATEMENT_CACHE: usize = 128;

/// Read connections: one per core the runtime may read from at once (clamped). A read holds
/// its connection only for the microseconds of an inline read (see [`Db::read`]), so this is
/// sized for the number of threads that can be reading at the same instant, not for how long
/// reads take; past it a read waits on a blocking thread rather than failing.
fn reader_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .clamp(2, 8)
}

/// A unit of work for the writer thread: run it on the connection (inside its savepoint) and
/// get back whether it succeeded and what to do once the batch's commit is known.
struct Job {
    /// Given the connection it runs on it; given an error (the batch could not start), it
    /// does not run and reports that error.
    run: Run,
}

type Run = Box<dyn FnOnce(Result<&Connection, String>) -> (bool, Finish) + Send>;

/// Delivers a unit's answer once the commit is known (`Some` if the commit failed).
type Finish = Box<dyn FnOnce(Option<String>) + Send>;

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Db {
    /// Opens (creating if missing) the file and brings its schema up to `migrations`.
    pub(crate) fn open(path: &Path, migrations: &[Migration]) -> StoreResult<Self> {
        let mut conn = Connection::open(path).map_err(sql_error)?;
        configure(&conn).map_err(sql_error)?;
        let applied = migrate(&mut conn, migrations)?;
        if applied > 0 {
            tracing::info!(path = %path.display(), applied, "migrated the store's schema");
        }
        let count = reader_count();
        let mut readers = Vec::with_capacity(count);
        for _ in 0..count {
            let reader = Connection::open(path).map_err(sql_error)?;
            configure(&reader).map_err(sql_error)?;
            readers.push(Mutex::new(reader));
        }
        let (sender, jobs) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ventana-sqlite-writer".into())
            .spawn(move || write_loop(conn, jobs))
            .map_err(|e| StoreError::Backend(format!("could not start the writer thread: {e}")))?;
        Ok(Self {
            writer: Arc::new(Writer {
                jobs: Some(sender),
                thread: Some(thread),
            }),
            readers: Arc::new(readers),
            next_reader: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            wakeups: broadcast::channel(WAKEUP_BUFFER).0,
        })
    }

    /// The wake-ups of units run by [`Db::unit`], each after its commit.
    pub(crate) fn wakeups(&self) -> broadcast::Receiver<Wakeup> {
        self.wakeups.subscribe()
    }

    /// Runs a unit of work written over [`Tx`] on the writer thread, in one poll (SQLite's
    /// statements are answered at once), as one unit of a group commit; once it is durable,
    /// publishes the wake-ups it asked for.
    pub(crate) async fn unit<T, F>(&self, unit: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: AsyncFnOnce(&mut SqliteTx<'_>) -> sql::TxResult<T> + Send + 'static,
    {
        let (value, wakeups) = self
            .write(move |conn| {
                let mut tx = SqliteTx::new(conn);
                let value = finish_now(unit(&mut tx))?;
                Ok((value, tx.wakeups))
            })
            .await?;
        for wakeup in wakeups {
            // No subscriber is fine: nobody is connected.
            let _ = self.wakeups.send(wakeup);
        }
        Ok(value)
    }

    /// Runs a reading unit of work written over [`Tx`] like [`Db::read`].
    pub(crate) async fn read_unit<T, F>(&self, unit: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: AsyncFnOnce(&mut SqliteTx<'_>) -> sql::TxResult<T> + Send + 'static,
    {
        self.read(move |conn| finish_now(unit(&mut SqliteTx::new(conn))))
            .await
    }

    /// Like [`Db::read_unit`], on a blocking thread (see [`Db::read_blocking`]).
    pub(crate) async fn read_unit_blocking<T, F>(&self, unit: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: AsyncFnOnce(&mut SqliteTx<'_>) -> sql::TxResult<T> + Send + 'static,
    {
        self.read_blocking(move |conn| finish_now(unit(&mut SqliteTx::new(conn))))
            .await
    }

    /// Runs `work` in one deferred (read) transaction on a read connection, on the calling
    /// thread if a read connection is free, else on a blocking thread.
    ///
    /// Running SQLite on an async worker is acceptable only because every read a store does
    /// through this is bounded and indexed: a point lookup by key or unique index, a `LIMIT`ed
    /// page, or a range of one key prefix that stays small (a peer device's sessions, an
    /// account's devices, a count over a partial index). Such a read touches a few pages, read
    /// from SQLite's or the OS's page cache in microseconds, which is less than handing it to
    /// a blocking thread and waking the task again. It would be wrong for a read whose cost
    /// grows with the data (a scan, an unbounded listing, large blobs): that one stalls every
    /// task on the worker, so it goes through [`Db::read_blocking`]. It also leans on WAL,
    /// where readers never wait for the writer; a file left in another journal mode, or locked
    /// by another process, could make a read wait here up to the busy timeout.
    pub(crate) async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> TxResult<T> + Send + 'static,
    {
        // The lowest free connection, so the fewest connections' caches are kept warm.
        for reader in self.readers.iter() {
            match reader.try_lock() {
                Ok(conn) => return read_tx(&conn, work),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Poisoned(_)) => return Err(poisoned_reader()),
            }
        }
        self.read_blocking(work).await
    }

    /// Runs `work` like [`Db::read`], always on a blocking thread: for reads whose cost grows
    /// with the data (unbounded listings), which must not run on an async worker.
    pub(crate) async fn read_blocking<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> TxResult<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let slot = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[slot].lock().map_err(|_| poisoned_reader())?;
            read_tx(&conn, work)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("a storage task failed: {e}")))?
    }

    /// Runs `work` as one unit of a group-committed write transaction: it sees and changes the
    /// file as if alone (SQLite has one writer, and units run one after another), and its
    /// answer comes only once it is durable.
    pub(crate) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> TxResult<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<StoreResult<T>>();
        let run = move |conn: Result<&Connection, String>| -> (bool, Finish) {
            let result = match conn {
                Ok(conn) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
                    .unwrap_or_else(|_| Err(backend("a unit of work panicked"))),
                Err(e) => Err(backend(format!("the write could not start: {e}"))),
            };
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |commit_error| {
                let _ = reply.send(match (result, commit_error) {
                    (Ok(value), None) => Ok(value),
                    (Ok(_), Some(e)) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                    (Err(e), _) => Err(e.into()),
                });
            });
            (ok, finish)
        };
        self.writer
            .jobs
            .as_ref()
            .ok_or_else(|| StoreError::Backend("the store is closing".into()))?
            .send(Job { run: Box::new(run) })
            .map_err(|_| StoreError::Backend("the writer thread is gone".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the writer thread dropped a unit of work".into()))?
    }
}

/// The writer thread: batch, run each unit in a savepoint, commit once, answer.
fn write_loop(conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = run(&conn, "BEGIN IMMEDIATE") {
            for job in batch {
                let (_, finish) = (job.run)(Err(e.to_string()));
                finish(None);
            }
            continue;
        }
        let mut finishes = Vec::with_capacity(batch.len());
        for job in batch {
            if let Err(e) = run(&conn, "SAVEPOINT unit") {
                let (_, finish) = (job.run)(Err(e.to_string()));
                finishes.push((finish, None));
                continue;
            }
            let (ok, finish) = (job.run)(Ok(&conn));
            let end = if ok {
                run(&conn, "RELEASE unit")
            } else {
                run(&conn, "ROLLBACK TO unit").and_then(|()| run(&conn, "RELEASE unit"))
            };
            let failed = end.err().map(|e| e.to_string());
            finishes.push((finish, failed));
        }
        let commit = run(&conn, "COMMIT").err().map(|e| e.to_string());
        if commit.is_some() {
            let _ = run(&conn, "ROLLBACK");
        }
        for (finish, own) in finishes {
            finish(commit.clone().or(own));
        }
    }
}

/// Runs one statement without parameters or rows (transaction control) from the cache.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// One deferred transaction around `work`: committed if it succeeds, rolled back if it fails
/// or panics (a panic is reported as an error and leaves the connection usable).
fn read_tx<T>(conn: &Connection, work: impl FnOnce(&Connection) -> TxResult<T>) -> StoreResult<T> {
    run(conn, "BEGIN").map_err(sql_error)?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|_| Err(backend("a read panicked")))
        .and_then(|value| run(conn, "COMMIT").map(|()| value).map_err(error));
    if result.is_err() && !conn.is_autocommit() {
        let _ = run(conn, "ROLLBACK");
    }
    Ok(result?)
}

fn poisoned_reader() -> StoreError {
    StoreError::Backend("a read connection's lock is poisoned".into())
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    error(e).into()
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL lets readers proceed while one writer commits.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "the store could not switch to WAL journaling");
    }
    // In WAL mode `NORMAL` may lose the last commits on power loss. These files hold Olm
    // ratchet state and queued envelopes: a ratchet rolled back after its message went out can
    // no longer decrypt the replies, and a lost envelope was already acknowledged to its
    // sender. So every commit is fsynced before it is reported.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Another process (an operator's sqlite3 shell, a backup) may hold the lock briefly.
    conn.busy_timeout(Duration::from_millis(5000))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Applies the migrations the file does not have yet, all in one transaction, and returns
/// how many ran. The version is read inside the write lock so two processes opening the same
/// new file cannot both apply the same step.
pub(crate) fn migrate(conn: &mut Connection, migrations: &[Migration]) -> StoreResult<usize> {
    Ok(apply_pending(conn, migrations)?)
}

fn apply_pending(conn: &mut Connection, migrations: &[Migration]) -> TxResult<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let current = usize::try_from(current).map_err(|_| backend("negative schema version"))?;
    if current > migrations.len() {
        return Err(backend(format!(
            "the file's schema is version {current}, newer than this build knows ({})",
            migrations.len()
        )));
    }
    for (version, migration) in migrations.iter().enumerate().skip(current) {
        tx.execute_batch(migration.sql)
            .map_err(|e| backend(format!("migration {} failed: {e}", migration.name)))?;
        tx.pragma_update(None, "user_version", version + 1)?;
    }
    tx.commit()?;
    Ok(migrations.len() - current)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const STEPS: &[Migration] = &[
        Migration {
            name: "one",
            sql: "CREATE TABLE a (x INTEGER);",
        },
        Migration {
            name: "two",
            sql: "CREATE TABLE b (y INTEGER);",
        },
    ];

    #[test]
    fn migrations_apply_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(migrate(&mut conn, &STEPS[..1]).unwrap(), 1);
        assert_eq!(migrate(&mut conn, STEPS).unwrap(), 1);
        assert_eq!(migrate(&mut conn, STEPS).unwrap(), 0);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2);
    }

    #[test]
    fn a_file_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("m.sqlite")).unwrap();
        migrate(&mut conn, STEPS).unwrap();
        assert!(matches!(
            migrate(&mut conn, &STEPS[..1]),
            Err(StoreError::Backend(_))
        ));
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn the_writer_is_durable_and_enforces_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("m.sqlite"), STEPS).unwrap();
        let pragmas = runtime().block_on(db.write(|conn| {
            let pragma = |name: &str| -> rusqlite::Result<String> {
                conn.query_row(&format!("SELECT * FROM pragma_{name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| format!("{v:?}"))
            };
            Ok([
                pragma("journal_mode")?,
                pragma("synchronous")?,
                pragma("foreign_keys")?,
                pragma("busy_timeout")?,
            ])
        }));
        // synchronous 2 is FULL.
        assert_eq!(
            pragmas.unwrap(),
            [
                r#"Text("wal")"#,
                "Integer(2)",
                "Integer(1)",
                "Integer(5000)"
            ]
        );
    }

    #[test]
    fn a_failing_unit_in_a_batch_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("m.sqlite"), STEPS).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            db.write(|c| Ok(c.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")?))
                .await
                .unwrap();
            // Many concurrent units, so they share commits; every third one fails after writing.
            let units = (0..60).map(|n| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.write(move |c| {
                        c.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                        if n % 3 == 0 {
                            Err(crate::sql::conflict(crate::ConflictKind::State, "refused"))
                        } else {
                            Ok(())
                        }
                    })
                    .await
                })
            });
            let results: Vec<_> = futures_util::future::join_all(units)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            for (n, result) in results.iter().enumerate() {
                assert_eq!(result.is_ok(), n % 3 != 0, "unit {n}");
            }
            let stored: Vec<i64> = db
                .read(|c| {
                    let mut stmt = c.prepare("SELECT n FROM t ORDER BY n")?;
                    let rows = stmt
                        .query_map([], |r| r.get(0))?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(rows)
                })
                .await
                .unwrap();
            assert_eq!(stored, (0..60).filter(|n| n % 3 != 0).collect::<Vec<i64>>());
        });
    }

    #[test]
    fn a_failing_or_panicking_read_leaves_its_connection_usable() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("m.sqlite"), STEPS).unwrap();
        let rt = runtime();
        rt.block_on(db.write(|c| Ok(c.execute_batch("INSERT INTO a (x) VALUES (7)")?)))
            .unwrap();
        let refused =
            rt.block_on(db.read(|_| {
                Err::<(), _>(crate::sql::conflict(crate::ConflictKind::State, "refused"))
            }));
        assert!(matches!(refused, Err(StoreError::Conflict(_))));
        let panicked = rt.block_on(db.read(|_| -> TxResult<()> { panic!("a bug") }));
        assert!(matches!(panicked, Err(StoreError::Backend(_))));
        // Inline reads take the first free connection, so these ran on the same one.
        let x: i64 = rt
            .block_on(db.read(|c| Ok(c.query_row("SELECT x FROM a", [], |r| r.get(0))?)))
            .unwrap();
        assert_eq!(x, 7);
    }

    #[test]
    fn a_read_waits_on_a_blocking_thread_when_every_connection_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("m.sqlite"), STEPS).unwrap();
        let held: Vec<_> = db.readers.iter().map(|r| r.lock().unwrap()).collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let read = rt.spawn({
            let db = db.clone();
            async move {
                db.read(|c| Ok(c.query_row("SELECT count(*) FROM a", [], |r| r.get::<_, i64>(0))?))
                    .await
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!read.is_finished());
        drop(held);
        assert_eq!(rt.block_on(read).unwrap().unwrap(), 0);
    }

    #[test]
    fn a_failed_migration_leaves_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("m.sqlite")).unwrap();
        let broken = [
            Migration {
                name: "one",
                sql: "CREATE TABLE a (x INTEGER);",
            },
            Migration {
                name: "bad",
                sql: "CREATE TABLE a (x INTEGER);",
            },
        ];
        assert!(migrate(&mut conn, &broken).is_err());
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 0);
        assert_eq!(migrate(&mut conn, STEPS).unwrap(), 2);
    }
}
