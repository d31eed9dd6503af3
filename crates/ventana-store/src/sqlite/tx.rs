//! SQLite's side of [`Tx`]: statements run at once on the writer's (or a reader's) connection,
//! so every future is ready when it is made, and the writer thread finishes a unit of work in
//! one poll, inside its group commit ([`finish_now`]).

use crate::relay::{WakeReason, Wakeup};
use crate::sql::{self, Arg, Row, Sql, Tx, TxError, TxResult, Value};
use crate::{ConflictKind, StoreError};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ffi};
use std::collections::HashMap;
use std::future::{Future, ready};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use ventana_core::{DeviceId, PhoneNumber};

/// One unit of work's transaction on a connection, and what it asked to announce once its
/// commit is durable.
pub(crate) struct SqliteTx<'c> {
    conn: &'c Connection,
    pub(crate) wakeups: Vec<Wakeup>,
}

impl<'c> SqliteTx<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            wakeups: Vec::new(),
        }
    }

    fn fetch(&self, sql: Sql, args: &[Arg<'_>]) -> TxResult<Vec<Row>> {
        let mut statement = self.conn.prepare_cached(text(sql)).map_err(error)?;
        let columns = statement.column_count();
        let mut rows = statement
            .query(rusqlite::params_from_iter(args))
            .map_err(error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(error)? {
            let mut values = Vec::with_capacity(columns);
            for idx in 0..columns {
                values.push(value(row.get_ref(idx).map_err(error)?)?);
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn change(&self, sql: Sql, args: &[Arg<'_>]) -> TxResult<u64> {
        let mut statement = self.conn.prepare_cached(text(sql)).map_err(error)?;
        let changed = statement
            .execute(rusqlite::params_from_iter(args))
            .map_err(error)?;
        Ok(changed as u64)
    }
}

impl Tx for SqliteTx<'_> {
    fn rows(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = TxResult<Vec<Row>>> + Send {
        ready(self.fetch(sql, args))
    }

    fn changes(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = TxResult<u64>> + Send {
        ready(self.change(sql, args))
    }

    /// Nothing to take: units run one after another on the writer thread.
    fn lock(&mut self, _key: &str) -> impl Future<Output = TxResult<()>> + Send {
        ready(Ok(()))
    }

    fn wake(
        &mut self,
        account: &PhoneNumber,
        devices: &[DeviceId],
        reason: WakeReason,
    ) -> impl Future<Output = TxResult<()>> + Send {
        self.wakeups.extend(sql::wakeups(account, devices, reason));
        ready(Ok(()))
    }

    /// Nobody to tell: one node uses a file, and it hosts the numbers it adds itself.
    fn announce_numbers(&mut self) -> impl Future<Output = TxResult<()>> + Send {
        ready(Ok(()))
    }
}

/// Runs a unit of work made of SQLite's always-ready futures to its end, here and now.
pub(crate) fn finish_now<T>(unit: impl Future<Output = TxResult<T>>) -> TxResult<T> {
    let mut unit = std::pin::pin!(unit);
    match unit.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(sql::backend(
            "a unit of work waited for something other than SQLite",
        )),
    }
}

/// The statement in SQLite's words: PostgreSQL's `$n` placeholders become `?n`. Statements
/// are constants, so each is translated once per process and kept (a fixed set, so the
/// cache stays small whichever threads run them).
fn text(sql: Sql) -> &'static str {
    static TRANSLATED: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let source = sql.text;
    if !source.contains('$') {
        return source;
    }
    let cache = TRANSLATED.get_or_init(Mutex::default);
    // A poisoned lock only means another thread panicked while inserting; the map is whole.
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .entry(source)
        // Leaked on purpose: one copy of each of a fixed set of statements.
        .or_insert_with(|| Box::leak(source.replace('$', "?").into_boxed_str()))
}

fn value(v: ValueRef<'_>) -> TxResult<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|e| sql::backend(format!("a text column is not UTF-8: {e}")))?
                .to_owned(),
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(r) => return Err(sql::backend(format!("unexpected real value {r}"))),
    })
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Arg::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Arg::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(n)),
            Arg::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(b))),
            Arg::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            // A list as the JSON array `json_each` reads.
            Arg::Texts(list) => ToSqlOutput::from(
                serde_json::to_string(list)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?,
            ),
            Arg::Ints(list) => ToSqlOutput::from(
                serde_json::to_string(list)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?,
            ),
        })
    }
}

/// A key or unique index refusing a row is the "already exists" the traits call a conflict;
/// every other failure (a foreign key, a check, I/O) is the backend's.
pub(crate) fn error(e: rusqlite::Error) -> TxError {
    let unique = e.sqlite_error().is_some_and(|e| {
        matches!(
            e.extended_code,
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    });
    if unique {
        sql::conflict(ConflictKind::Exists, e.to_string())
    } else {
        TxError::Store(StoreError::Backend(e.to_string()))
    }
}

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_read_as_sqlite_numbered_parameters_once() {
        const STATEMENT: Sql = Sql::new("SELECT $2 WHERE x = $1 AND y = $10");
        let translated = text(STATEMENT);
        assert_eq!(translated, "SELECT ?2 WHERE x = ?1 AND y = ?10");
        // The same statement again is the same kept copy.
        assert!(std::ptr::eq(translated, text(STATEMENT)));
        assert_eq!(text(Sql::new("SELECT 1")), "SELECT 1");
    }
}
