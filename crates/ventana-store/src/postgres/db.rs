//! The pool every PostgreSQL store uses: connecting, migrating, and running one unit of work.
//!
//! Transactions run at READ COMMITTED. Where a decision read must not be invalidated before
//! its write, the store takes a row lock (`FOR UPDATE`, `FOR NO KEY UPDATE`) or a transaction
//! advisory lock ([`lock`]) first; `INSERT ... ON CONFLICT` and conditional `UPDATE`s make the
//! rest atomic on their own. Deadlocks and serialization failures, which the locks are
//! ordered to avoid, are still retried a few times by [`transaction!`].

use super::tx::PgTx;
use crate::{StoreError, StoreResult, sql};
use deadpool_postgres::{
    Client, GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction,
};
use std::error::Error as _;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSqlOwned, ToSql};
use tokio_postgres::{NoTls, Row};
use ventana_core::{DeviceId, UnixTime};

/// Connections per store (per node) unless the caller asks for another number.
pub(crate) const DEFAULT_POOL_SIZE: usize = 8;
/// How many times a transaction that lost a deadlock or a serialization check is run.
const MAX_ATTEMPTS: u32 = 4;

pub(crate) use crate::sql::Migration;

/// Why a unit of work stopped: PostgreSQL failed, or the store decided to refuse (a version
/// check). Either way the transaction is rolled back.
#[derive(Debug)]
pub(crate) enum TxError {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

pub(crate) type TxResult<T> = Result<T, TxError>;

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
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
            TxError::Pg(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                StoreError::conflict(crate::ConflictKind::Exists, describe(&e))
            }
            TxError::Pg(e) => StoreError::Backend(describe(&e)),
            TxError::Store(e) => e,
        }
    }
}

pub(crate) fn conflict(kind: crate::ConflictKind, what: impl Into<String>) -> TxError {
    TxError::Store(StoreError::conflict(kind, what))
}

pub(crate) fn backend(what: impl Into<String>) -> TxError {
    TxError::Store(StoreError::Backend(what.into()))
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    TxError::Pg(e).into()
}

/// The whole story of an error: `tokio_postgres::Error`'s own message is only its kind ("db
/// error"), the server's message is in its source.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{db} (SQLSTATE {})", db.code().code());
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Lost to another transaction, through no fault of its own: running it again may succeed.
fn is_transient(e: &TxError) -> bool {
    let TxError::Pg(e) = e else { return false };
    e.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// A schema name the store can put into SQL and a `LISTEN` channel without quoting: lower
/// case ASCII, digits and `_`, not starting with a digit, short enough for
/// `<schema>_wakeups` to stay within PostgreSQL's 63-byte identifiers, and not `pg_*`.
pub(crate) fn check_schema(schema: &str) -> StoreResult<()> {
    let valid = (1..=48).contains(&schema.len())
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && !schema.starts_with("pg_");
    if valid {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "invalid schema name {schema:?}: use 1 to 48 of a-z, 0-9 and _, not starting with a digit or pg_"
        )))
    }
}

/// Parses `url` (a `postgres://` URL or `key=value` pairs) and points every connection made
/// from it at `schema`: `search_path` is a startup option, so it holds from the first
/// statement on and survives `RESET ALL`.
pub(crate) fn config_for(url: &str, schema: &str) -> StoreResult<tokio_postgres::Config> {
    check_schema(schema)?;
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {}", describe(&e))))?;
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} -c search_path={schema}"),
        _ => format!("-c search_path={schema}"),
    };
    config.options(options);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("ventana");
    }
    Ok(config)
}

/// A pool of connections to one schema of one database.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pool: Pool,
    schema: std::sync::Arc<str>,
}

impl Db {
    /// Connects, creating `schema` if missing, and brings it up to `migrations`.
    pub(crate) async fn connect(
        config: tokio_postgres::Config,
        schema: &str,
        pool_size: usize,
        migrations: &[Migration],
    ) -> StoreResult<Self> {
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // Checks that the connection is open; a broken one is replaced.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let db = Self {
            pool,
            schema: schema.into(),
        };
        let mut client = db.client().await?;
        let applied = migrate(&mut client, schema, migrations).await?;
        if applied > 0 {
            tracing::info!(schema, applied, "migrated the store's schema");
        }
        Ok(db)
    }

    /// Runs one statement's worth of reading on a pooled connection. A single statement is
    /// atomic on its own, so it needs no transaction block (and saves two round trips).
    pub(crate) async fn read<T>(
        &self,
        work: impl AsyncFnOnce(&Client) -> TxResult<T>,
    ) -> StoreResult<T> {
        let client = self.client().await?;
        Ok(work(&client).await?)
    }

    /// Runs a reading unit of work written over [`Tx`](crate::sql::Tx) on a pooled
    /// connection, outside a transaction block: each statement is atomic on its own, and a
    /// read of one statement saves the two round trips of `BEGIN` and `COMMIT`.
    pub(crate) async fn read_unit<T>(
        &self,
        unit: impl AsyncFnOnce(&mut PgTx<'_, Client>) -> sql::TxResult<T>,
    ) -> StoreResult<T> {
        let client = self.client().await?;
        let mut tx = PgTx {
            client: &client,
            schema: &self.schema,
        };
        Ok(unit(&mut tx).await?)
    }

    /// Runs a unit of work written over [`Tx`](crate::sql::Tx) in one transaction on a pooled
    /// connection: committed if it succeeds, rolled back otherwise. A transaction that lost a
    /// deadlock or a serialization check is run again from the start, so the unit must not
    /// have effects outside the transaction.
    pub(crate) async fn unit<T, F>(&self, unit: F) -> StoreResult<T>
    where
        F: AsyncFn(&mut PgTx<'_, Transaction<'_>>) -> sql::TxResult<T>,
    {
        let mut client = self.client().await?;
        let mut attempt = 1;
        loop {
            let transaction = begin(&mut client).await?;
            let outcome = {
                let mut tx = PgTx {
                    client: &transaction,
                    schema: &self.schema,
                };
                unit(&mut tx).await
            };
            match finish_unit(transaction, outcome, attempt).await {
                ControlFlow::Break(result) => return result,
                ControlFlow::Continue(()) => attempt += 1,
            }
        }
    }

    /// The schema the store lives in, which also names its `NOTIFY` channels.
    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// A pooled connection, for [`transaction!`].
    pub(crate) async fn client(&self) -> StoreResult<Client> {
        self.pool.get().await.map_err(|e| {
            let detail = match &e {
                deadpool_postgres::PoolError::Backend(e) => describe(e),
                other => other.to_string(),
            };
            StoreError::Backend(format!("no connection to PostgreSQL: {detail}"))
        })
    }
}

/// Runs `$body`, an expression of type [`TxResult<T>`] using `$tx: &Transaction`, in one
/// transaction on a connection of `$db` ([`Db`]), and evaluates to `StoreResult<T>`: committed
/// if the body succeeded, rolled back otherwise. A transaction that lost a deadlock or a
/// serialization check is run again from the start, so the body must not have effects outside
/// the transaction.
///
/// A macro rather than a method taking an async closure: the futures of `async_trait` methods
/// must be `Send`, which the compiler cannot yet prove for an async closure that borrows both
/// the transaction and the method's arguments.
macro_rules! transaction {
    ($db:expr, |$tx:ident| $body:expr) => {{
        match $db.client().await {
            Err(e) => Err(e),
            Ok(mut client) => {
                let mut attempt = 1;
                loop {
                    let transaction = match $crate::postgres::db::begin(&mut client).await {
                        Ok(transaction) => transaction,
                        Err(e) => break Err(e),
                    };
                    let outcome: $crate::postgres::db::TxResult<_> = {
                        let $tx = &transaction;
                        async { $body }.await
                    };
                    match $crate::postgres::db::finish(transaction, outcome, attempt).await {
                        ::std::ops::ControlFlow::Break(result) => break result,
                        ::std::ops::ControlFlow::Continue(()) => attempt += 1,
                    }
                }
            }
        }
    }};
}

pub(crate) use transaction;

/// Runs `$body`, an expression of type [`sql::TxResult<T>`] using `$tx: &mut PgTx` (a unit of
/// work written over [`Tx`](crate::sql::Tx)), in one transaction on a connection of `$db`
/// ([`Db`]), and evaluates to `StoreResult<T>`: committed if the body succeeded, rolled back
/// otherwise. A transaction that lost a deadlock or a serialization check is run again from
/// the start, so the body must not have effects outside the transaction.
///
/// A macro rather than a method taking an async closure: the futures of `async_trait` methods
/// must be `Send`, which the compiler cannot yet prove for an async closure that borrows both
/// the transaction and the method's arguments.
macro_rules! unit {
    ($db:expr, |$tx:ident| $body:expr) => {{
        match $db.client().await {
            Err(e) => Err(e),
            Ok(mut client) => {
                let mut attempt = 1;
                loop {
                    let transaction = match $crate::postgres::db::begin(&mut client).await {
                        Ok(transaction) => transaction,
                        Err(e) => break Err(e),
                    };
                    let outcome: $crate::sql::TxResult<_> = {
                        let $tx = &mut $crate::postgres::tx::PgTx {
                            client: &transaction,
                            schema: $db.schema(),
                        };
                        async { $body }.await
                    };
                    match $crate::postgres::db::finish_unit(transaction, outcome, attempt).await {
                        ::std::ops::ControlFlow::Break(result) => break result,
                        ::std::ops::ControlFlow::Continue(()) => attempt += 1,
                    }
                }
            }
        }
    }};
}

pub(crate) use unit;

/// Ends a transaction [`unit!`] ran: commits it if `outcome` is a success, rolls it back
/// otherwise, and says whether to run it again (`Continue`) or what to answer (`Break`).
pub(crate) async fn finish_unit<T>(
    tx: Transaction<'_>,
    outcome: sql::TxResult<T>,
    attempt: u32,
) -> ControlFlow<StoreResult<T>> {
    let outcome = match outcome {
        Ok(value) => tx.commit().await.map(|()| value).map_err(super::tx::error),
        Err(e) => {
            // A failed rollback means a broken connection: the server rolls back on its own,
            // and the pool drops the connection when it is returned.
            let _ = tx.rollback().await;
            Err(e)
        }
    };
    match outcome {
        Err(sql::TxError::Transient(e)) if attempt < MAX_ATTEMPTS => {
            tracing::debug!(attempt, error = e, "running a transaction again");
            ControlFlow::Continue(())
        }
        outcome => ControlFlow::Break(outcome.map_err(StoreError::from)),
    }
}

pub(crate) async fn begin(client: &mut Client) -> StoreResult<Transaction<'_>> {
    client.transaction().await.map_err(pg_error)
}

/// Ends a transaction [`transaction!`] ran: commits it if `outcome` is a success, rolls it back
/// otherwise, and says whether to run it again (`Continue`) or what to answer (`Break`).
pub(crate) async fn finish<T>(
    tx: Transaction<'_>,
    outcome: TxResult<T>,
    attempt: u32,
) -> ControlFlow<StoreResult<T>> {
    let outcome = match outcome {
        Ok(value) => tx.commit().await.map(|()| value).map_err(TxError::Pg),
        Err(e) => {
            // A failed rollback means a broken connection: the server rolls back on its own,
            // and the pool drops the connection when it is returned.
            let _ = tx.rollback().await;
            Err(e)
        }
    };
    match outcome {
        Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
            tracing::debug!(attempt, error = ?e, "running a transaction again");
            ControlFlow::Continue(())
        }
        outcome => ControlFlow::Break(outcome.map_err(StoreError::from)),
    }
}

/// Applies the migrations the schema does not have yet, all in one transaction, and returns
/// how many ran. The transaction first takes an advisory lock named after the schema, so of
/// several nodes starting at once one migrates and the others then find nothing to do.
pub(crate) async fn migrate(
    client: &mut Client,
    schema: &str,
    migrations: &[Migration],
) -> StoreResult<usize> {
    Ok(apply_pending(client, schema, migrations).await?)
}

async fn apply_pending(
    client: &mut Client,
    schema: &str,
    migrations: &[Migration],
) -> TxResult<usize> {
    check_schema(schema)?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("ventana/migrations/{schema}")],
    )
    .await?;
    // `schema` was checked to need no quoting.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version     BIGINT PRIMARY KEY,
             name        TEXT NOT NULL,
             applied_at  BIGINT NOT NULL
         );"
    ))
    .await?;
    let applied = tx
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    if applied.len() > migrations.len() {
        return Err(backend(format!(
            "schema {schema} is at version {}, newer than this build knows ({})",
            applied.len(),
            migrations.len()
        )));
    }
    // The steps recorded must be this build's first steps, in order.
    for (row, (expected, migration)) in applied.iter().zip((1_i64..).zip(migrations)) {
        let version: i64 = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        if version != expected || name != migration.name {
            return Err(backend(format!(
                "schema {schema} has migration {version} {name:?} where this build has \
                 {expected} {:?}",
                migration.name
            )));
        }
    }
    let current = applied.len();
    for (index, migration) in migrations.iter().enumerate().skip(current) {
        tx.batch_execute(migration.sql).await.map_err(|e| {
            backend(format!(
                "migration {} failed: {}",
                migration.name,
                describe(&e)
            ))
        })?;
        let version = i64::try_from(index + 1).map_err(|_| backend("too many migrations"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&version, &migration.name, &UnixTime::now().0],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(migrations.len() - current)
}

/// Takes a transaction-scoped advisory lock on `key` within this store's schema: until the
/// transaction ends, every other transaction asking for the same key waits. For decisions
/// about rows that may not exist yet, which a row lock cannot cover.
pub(crate) async fn lock(c: &impl GenericClient, key: &str) -> TxResult<()> {
    execute(
        c,
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || $1, 0))",
        &[&key],
    )
    .await?;
    Ok(())
}

// Statements go through each connection's statement cache: the store has a fixed set of them.

pub(crate) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> TxResult<Vec<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

pub(crate) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> TxResult<Option<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

pub(crate) async fn query_one(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> TxResult<Row> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_one(&statement, params).await?)
}

pub(crate) async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> TxResult<u64> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

// Reading columns: `try_get` everywhere, so a type mismatch is an error, not a panic.

pub(crate) fn get<T: FromSqlOwned>(row: &Row, idx: usize) -> TxResult<T> {
    Ok(row.try_get(idx)?)
}

/// A text column parsed into one of the domain's validated types.
pub(crate) fn parsed<T>(row: &Row, idx: usize) -> TxResult<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(idx)?;
    text.parse().map_err(|e| {
        backend(format!(
            "column {idx} holds {text:?}, which is invalid: {e}"
        ))
    })
}

/// A nullable text column parsed like [`parsed`].
pub(crate) fn parsed_opt<T>(row: &Row, idx: usize) -> TxResult<Option<T>>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = row.try_get(idx)?;
    text.map(|text| {
        text.parse().map_err(|e| {
            backend(format!(
                "column {idx} holds {text:?}, which is invalid: {e}"
            ))
        })
    })
    .transpose()
}

/// A text column holding one of a closed set of names (`AccountKind`, `EnvelopeKind`, ...).
pub(crate) fn named<T>(row: &Row, idx: usize, parse: fn(&str) -> Option<T>) -> TxResult<T> {
    let text: String = row.try_get(idx)?;
    parse(&text).ok_or_else(|| backend(format!("column {idx} holds unexpected value {text:?}")))
}

/// A nullable text column holding one of a closed set of names, like [`named`].
pub(crate) fn named_opt<T>(
    row: &Row,
    idx: usize,
    parse: fn(&str) -> Option<T>,
) -> TxResult<Option<T>> {
    let text: Option<String> = row.try_get(idx)?;
    text.map(|text| {
        parse(&text).ok_or_else(|| backend(format!("column {idx} holds unexpected value {text:?}")))
    })
    .transpose()
}

pub(crate) fn device_id(row: &Row, idx: usize) -> TxResult<DeviceId> {
    let id: i64 = row.try_get(idx)?;
    u32::try_from(id)
        .map(DeviceId)
        .map_err(|_| backend(format!("device id {id} is out of range")))
}

pub(crate) fn unsigned<T: TryFrom<i64>>(row: &Row, idx: usize) -> TxResult<T> {
    let n: i64 = row.try_get(idx)?;
    T::try_from(n).map_err(|_| backend(format!("column {idx} holds {n}, which is out of range")))
}

pub(crate) fn time(row: &Row, idx: usize) -> TxResult<UnixTime> {
    Ok(UnixTime(row.try_get(idx)?))
}

/// A count or sequence number from the caller, as PostgreSQL's BIGINT.
pub(crate) fn big(n: u64) -> TxResult<i64> {
    i64::try_from(n).map_err(|_| backend(format!("{n} does not fit a BIGINT")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn schema_names_need_no_quoting() {
        for good in ["relay", "gateway", "node_2", "_x"] {
            assert!(check_schema(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Relay",
            "2relay",
            "pg_temp",
            "a-b",
            "a b",
            "a;drop",
            &"x".repeat(49),
        ] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_search_path_is_added_to_the_given_options() {
        let config = config_for("postgres://u@h/db?options=-c%20work_mem%3D4MB", "relay").unwrap();
        assert_eq!(
            config.get_options(),
            Some("-c work_mem=4MB -c search_path=relay")
        );
        let config = config_for("host=h user=u dbname=db", "gateway").unwrap();
        assert_eq!(config.get_options(), Some("-c search_path=gateway"));
        assert!(config_for("postgres://u@h/db", "Bad").is_err());
    }
}
