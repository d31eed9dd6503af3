//! PostgreSQL's side of [`Tx`]: statements go to the server through each connection's
//! statement cache; the hooks are an advisory lock, row-lock clauses and `pg_notify`.

use super::db::describe;
use super::wakeups;
use crate::relay::WakeReason;
use crate::sql::{self, Arg, Postgres, Row, Sql, Tx, TxError, TxResult, Value};
use crate::{ConflictKind, StoreError};
use deadpool_postgres::GenericClient;
use std::borrow::Cow;
use std::error::Error;
use std::future::Future;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use ventana_core::{DeviceId, PhoneNumber};

/// One unit of work's view of a connection (inside a transaction, or a single statement's
/// read) and the store's schema, which names its `NOTIFY` channels.
pub(crate) struct PgTx<'a, C> {
    pub(crate) client: &'a C,
    pub(crate) schema: &'a str,
}

impl<C: GenericClient + Sync> PgTx<'_, C> {
    async fn fetch(&self, sql: Sql, args: &[Arg<'_>]) -> TxResult<Vec<Row>> {
        let statement = self
            .client
            .prepare_cached(&text(sql))
            .await
            .map_err(error)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let rows = self
            .client
            .query(&statement, &params)
            .await
            .map_err(error)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|idx| row.try_get::<_, Value>(idx).map_err(error))
                    .collect::<TxResult<Vec<_>>>()
                    .map(Row)
            })
            .collect()
    }

    async fn change(&self, sql: Sql, args: &[Arg<'_>]) -> TxResult<u64> {
        let statement = self
            .client
            .prepare_cached(&text(sql))
            .await
            .map_err(error)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        self.client
            .execute(&statement, &params)
            .await
            .map_err(error)
    }
}

impl<C: GenericClient + Sync> Tx for PgTx<'_, C> {
    fn rows(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = TxResult<Vec<Row>>> + Send {
        self.fetch(sql, args)
    }

    fn changes(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = TxResult<u64>> + Send {
        self.change(sql, args)
    }

    /// A transaction advisory lock on `key` within this store's schema.
    fn lock(&mut self, key: &str) -> impl Future<Output = TxResult<()>> + Send {
        let key = key.to_owned();
        async move {
            self.change(
                Sql::new(
                    "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || $1, 0))",
                ),
                &[Arg::Text(&key)],
            )
            .await
            .map(drop)
        }
    }

    /// Queues the wake-ups on `<schema>_wakeups`; they go out if the transaction commits.
    /// PostgreSQL folds identical notifications of one transaction into one, which for
    /// wake-ups changes nothing.
    fn wake(
        &mut self,
        account: &PhoneNumber,
        devices: &[DeviceId],
        reason: WakeReason,
    ) -> impl Future<Output = TxResult<()>> + Send {
        let payloads: Vec<String> = sql::wakeups(account, devices, reason)
            .map(|w| wakeups::payload(&w))
            .collect();
        async move {
            if payloads.is_empty() {
                return Ok(());
            }
            let channel = wakeups::channel(self.schema);
            let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
            self.change(
                Sql::new("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"),
                &[Arg::Text(&channel), Arg::Texts(&payloads)],
            )
            .await
            .map(drop)
        }
    }

    /// `NOTIFY <schema>_numbers`, heard by every node's listener once this commits.
    async fn announce_numbers(&mut self) -> TxResult<()> {
        let channel = wakeups::numbers_channel(self.schema);
        self.change(Sql::new("SELECT pg_notify($1, '')"), &[Arg::Text(&channel)])
            .await
            .map(drop)
    }
}

/// The statement in PostgreSQL's words.
fn text(sql: Sql) -> Cow<'static, str> {
    match sql.postgres {
        Postgres::Same => Cow::Borrowed(sql.text),
        Postgres::Locking(clause) => Cow::Owned(format!("{} {clause}", sql.text)),
        Postgres::Own(text) => Cow::Borrowed(text),
    }
}

/// A key or unique index refusing a row is the "already exists" the traits call a conflict;
/// a transaction that lost a deadlock or a serialization check is run again; everything else
/// is the backend's failure.
pub(crate) fn error(e: tokio_postgres::Error) -> TxError {
    match e.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
            sql::conflict(ConflictKind::Exists, describe(&e))
        }
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            TxError::Transient(describe(&e))
        }
        _ => TxError::Store(StoreError::Backend(describe(&e))),
    }
}

type BoxError = Box<dyn Error + Sync + Send>;

/// Each value in the type PostgreSQL inferred for its placeholder: an integer fits a
/// `BIGINT`, `INTEGER`, `SMALLINT` or `BOOLEAN` column, a boolean a `BOOLEAN` or an integer,
/// a text a text column, a blob `BYTEA`, a list an array. Any other pairing is a mistake in a
/// statement, refused with an error naming the types rather than sent as the wrong bytes.
impl ToSql for Arg<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        let integer = matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8);
        match *self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(n) if integer || *ty == Type::BOOL => match *ty {
                Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
                Type::BOOL => (n != 0).to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
            Arg::Bool(b) if *ty == Type::BOOL => b.to_sql(ty, out),
            Arg::Bool(b) if integer => Arg::Int(i64::from(b)).to_sql(ty, out),
            Arg::Text(s) if <&str as ToSql>::accepts(ty) => s.to_sql(ty, out),
            Arg::Blob(b) if *ty == Type::BYTEA => b.to_sql(ty, out),
            Arg::Texts(t) if <&[&str] as ToSql>::accepts(ty) => t.to_sql(ty, out),
            Arg::Ints(n) if <&[i64] as ToSql>::accepts(ty) => n.to_sql(ty, out),
            other => Err(format!("cannot bind {other:?} to a placeholder of type {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Every column type the stores use, read into a [`Value`].
impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::BOOL => Value::Int(i64::from(bool::from_sql(ty, raw)?)),
            Type::INT2 => Value::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::INT4 => Value::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::BYTEA => Value::Blob(Vec::<u8>::from_sql(ty, raw)?),
            _ if <&str as FromSql>::accepts(ty) => Value::Text(String::from_sql(ty, raw)?),
            _ => return Err(format!("unsupported column type {ty}").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn bind(arg: Arg<'_>, ty: &Type) -> Result<IsNull, BoxError> {
        arg.to_sql_checked(ty, &mut bytes::BytesMut::new())
    }

    #[test]
    fn values_bind_to_the_column_types_they_fit() {
        assert!(bind(Arg::Int(7), &Type::INT8).is_ok());
        assert!(bind(Arg::Int(7), &Type::INT4).is_ok());
        assert!(bind(Arg::Int(1), &Type::BOOL).is_ok());
        assert!(bind(Arg::Bool(true), &Type::INT8).is_ok());
        assert!(bind(Arg::Text("x"), &Type::TEXT).is_ok());
        assert!(bind(Arg::Blob(b"x"), &Type::BYTEA).is_ok());
        assert!(bind(Arg::Texts(&["x"]), &Type::TEXT_ARRAY).is_ok());
        assert!(bind(Arg::Ints(&[1]), &Type::INT8_ARRAY).is_ok());
        assert!(bind(Arg::Null, &Type::TEXT).is_ok());
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error_not_wrong_bytes_or_a_panic() {
        assert!(bind(Arg::Int(7), &Type::TEXT).is_err());
        assert!(bind(Arg::Int(i64::MAX), &Type::INT4).is_err());
        assert!(bind(Arg::Text("x"), &Type::INT8).is_err());
        assert!(bind(Arg::Blob(b"x"), &Type::TEXT).is_err());
        assert!(bind(Arg::Texts(&["x"]), &Type::TEXT).is_err());
        assert!(bind(Arg::Ints(&[1]), &Type::INT8).is_err());
    }
}
