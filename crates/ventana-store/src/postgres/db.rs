//! The pool every PostgreSQL store uses: connecting, migrating, and running one unit of work.
//!
//! Transactions run at READ COMMITTED. Where a decision read must not be invalidated before
//! its write, the unit takes a row lock (`Sql::locking`: `FOR UPDATE`, `FOR NO KEY UPDATE`) or
//! a transaction advisory lock (`Tx::lock`) first; `INSERT ... ON CONFLICT` and conditional
//! `UPDATE`s make the rest atomic on their own. Deadlocks and serialization failures, which
//! the locks are ordered to avoid, are still retried a few times by [`Db::unit`].

use super::tx::{self, PgTx};
use crate::sql::{TxResult, backend};
use crate::{StoreError, StoreResult, sql};
use deadpool_postgres::{
    Client, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction,
};
use std::error::Error as _;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::NoTls;
use ventana_core::UnixTime;

/// Connections per store (per node) unless the caller asks for another number.
pub(crate) const DEFAULT_POOL_SIZE: usize = 8;
/// How many times a transaction that lost a deadlock or a serialization check is run.
const MAX_ATTEMPTS: u32 = 4;

pub(crate) use crate::sql::Migration;

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
            match finish(transaction, outcome, attempt).await {
                ControlFlow::Break(result) => return result,
                ControlFlow::Continue(()) => attempt += 1,
            }
        }
    }

    /// [`Db::read_unit`]: the server does the work, so a read whose cost grows with the data
    /// blocks no thread of this process (SQLite's runs such a read on a blocking thread).
    pub(crate) async fn read_unit_blocking<T>(
        &self,
        unit: impl AsyncFnOnce(&mut PgTx<'_, Client>) -> sql::TxResult<T>,
    ) -> StoreResult<T> {
        self.read_unit(unit).await
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

/// Ends a transaction [`Db::unit`] ran: commits it if `outcome` is a success, rolls it back
/// otherwise, and says whether to run it again (`Continue`) or what to answer (`Break`).
async fn finish<T>(
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

async fn begin(client: &mut Client) -> StoreResult<Transaction<'_>> {
    client
        .transaction()
        .await
        .map_err(|e| StoreError::from(tx::error(e)))
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
    let tx = client.transaction().await.map_err(tx::error)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("ventana/migrations/{schema}")],
    )
    .await
    .map_err(tx::error)?;
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
    .await
    .map_err(tx::error)?;
    let applied = tx
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(tx::error)?;
    if applied.len() > migrations.len() {
        return Err(backend(format!(
            "schema {schema} is at version {}, newer than this build knows ({})",
            applied.len(),
            migrations.len()
        )));
    }
    // The steps recorded must be this build's first steps, in order.
    for (row, (expected, migration)) in applied.iter().zip((1_i64..).zip(migrations)) {
        let version: i64 = row.try_get(0).map_err(tx::error)?;
        let name: String = row.try_get(1).map_err(tx::error)?;
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
        .await
        .map_err(tx::error)?;
    }
    tx.commit().await.map_err(tx::error)?;
    Ok(migrations.len() - current)
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
