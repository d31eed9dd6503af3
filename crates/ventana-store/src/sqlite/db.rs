//! The connection every SQLite store shares: opening, migrating, and running one unit of work.

use crate::{StoreError, StoreResult};
use rusqlite::types::Type;
use rusqlite::{Connection, Row, Transaction, TransactionBehavior, ffi};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One schema step: a plain SQL file kept beside the other backends' under `migrations/`.
/// Its version is its position in the list, starting at 1, tracked in `PRAGMA user_version`.
pub(crate) struct Migration {
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Why a unit of work stopped: SQLite failed, or the store decided to refuse (a version check).
/// Either way the transaction is rolled back.
#[derive(Debug)]
pub(crate) enum TxError {
    Sql(rusqlite::Error),
    Store(StoreError),
}

pub(crate) type TxResult<T> = Result<T, TxError>;

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<TxError> for StoreError {
    fn from(e: TxError) -> Self {
        match e {
            // A key or unique index refusing a row is the "already exists" the traits call a
            // conflict; every other constraint (foreign key, check) is a bug and stays Backend.
            TxError::Sql(e) if is_uniqueness_violation(&e) => StoreError::Conflict(e.to_string()),
            TxError::Sql(e) => StoreError::Backend(e.to_string()),
            TxError::Store(e) => e,
        }
    }
}

fn is_uniqueness_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error().is_some_and(|e| {
        matches!(
            e.extended_code,
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    })
}

pub(crate) fn conflict(what: impl Into<String>) -> TxError {
    TxError::Store(StoreError::Conflict(what.into()))
}

pub(crate) fn backend(what: impl Into<String>) -> TxError {
    TxError::Store(StoreError::Backend(what.into()))
}

/// The one connection to a store's file. SQLite serialises writers anyway, so one connection
/// behind a mutex costs little and keeps every method's transaction strictly ordered.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
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
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `work` in one deferred (read) transaction on the blocking pool.
    pub(crate) async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> TxResult<T> + Send + 'static,
    {
        self.run(TransactionBehavior::Deferred, work).await
    }

    /// Runs `work` in one immediate transaction: the write lock is taken up front, so a read
    /// that decides a later write in the same transaction cannot be invalidated in between.
    pub(crate) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> TxResult<T> + Send + 'static,
    {
        self.run(TransactionBehavior::Immediate, work).await
    }

    async fn run<T, F>(&self, behavior: TransactionBehavior, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> TxResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| StoreError::Backend("the connection's lock is poisoned".into()))?;
            let tx = conn
                .transaction_with_behavior(behavior)
                .map_err(sql_error)?;
            // On error the transaction is dropped, which rolls it back.
            let value = work(&tx)?;
            tx.commit().map_err(sql_error)?;
            Ok(value)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("a storage task failed: {e}")))?
    }
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    TxError::Sql(e).into()
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

/// A text column parsed into one of the domain's validated types.
pub(crate) fn parsed<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.get(idx)?;
    text.parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

/// A nullable text column parsed like [`parsed`].
pub(crate) fn parsed_opt<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match row.get_ref(idx)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => parsed(row, idx).map(Some),
    }
}

/// A text column holding one of a closed set of names (`AccountKind`, `EnvelopeKind`, ...).
pub(crate) fn named<T>(
    row: &Row<'_>,
    idx: usize,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Text,
            format!("unexpected value {text:?}").into(),
        )
    })
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

    #[test]
    fn the_connection_is_durable_and_enforces_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("m.sqlite"), STEPS).unwrap();
        let conn = db.conn.lock().unwrap();
        let pragma = |name: &str| -> String {
            conn.query_row(&format!("SELECT * FROM pragma_{name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .unwrap()
        };
        assert_eq!(pragma("journal_mode"), r#"Text("wal")"#);
        // 2 is FULL.
        assert_eq!(pragma("synchronous"), "Integer(2)");
        assert_eq!(pragma("foreign_keys"), "Integer(1)");
        assert_eq!(pragma("busy_timeout"), "Integer(5000)");
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
