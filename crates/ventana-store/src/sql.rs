//! What every unit of work is written against, whichever database runs it.
//!
//! A unit of work (accept a submission, claim a key, lease a webhook, …) is one `async fn`
//! in [`crate::units`] taking `tx: &mut impl Tx`. It reads and writes through a handful of
//! primitives: statements ([`Tx::query`], [`Tx::execute`]) in the SQL both dialects share,
//! and hooks for what only one backend needs:
//!
//! - [`Tx::lock`]: PostgreSQL takes a transaction advisory lock (several nodes may run the
//!   same unit at once); SQLite does nothing, since its one writer thread already runs units
//!   one after another.
//! - Row locks: a statement built with [`Sql::locking`] carries a `FOR UPDATE`-style clause
//!   that PostgreSQL appends and SQLite, with nothing to lock, leaves out.
//! - [`Tx::wake`] and [`Tx::announce_numbers`]: PostgreSQL queues a `NOTIFY` in the
//!   transaction, so every node hears it on commit; SQLite (one node per file) hands it to
//!   this process's subscribers once the commit is durable.
//!
//! SQLite's [`Tx`] answers every statement at once (its futures are always ready), so its
//! writer thread runs a unit to completion in one poll, inside its group commit; PostgreSQL's
//! awaits the server. Everything else (the decisions, the order of statements, the comments
//! saying why) exists once.
//!
//! Statements use PostgreSQL's numbered placeholders (`$1`, `$2`, …); SQLite's backend reads
//! them as its own `?1`, `?2`. Values cross as [`Arg`] (in) and [`Value`] in a [`Row`] (out),
//! converted by each backend to and from its column types (a PostgreSQL `BOOLEAN` or
//! `INTEGER` column takes an [`Arg::Int`], a `BYTEA` an [`Arg::Blob`]).

use crate::relay::{WakeReason, Wakeup};
use crate::{ConflictKind, StoreError};
use std::future::Future;
use std::str::FromStr;
use ventana_core::{DeviceId, PhoneNumber, UnixTime};

/// Why a unit of work stopped; either way its transaction is rolled back.
#[derive(Debug)]
pub(crate) enum TxError {
    /// The store refused or failed; reported to the caller as it is.
    Store(StoreError),
    /// Lost to a concurrent transaction (a deadlock, a serialization check) through no fault
    /// of its own: the backend runs the unit again from the start.
    Transient(String),
}

pub(crate) type TxResult<T> = Result<T, TxError>;

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<TxError> for StoreError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Store(e) => e,
            TxError::Transient(what) => StoreError::Backend(what),
        }
    }
}

/// A refusal the caller decides about (see [`ConflictKind`]).
pub(crate) fn conflict(kind: ConflictKind, what: impl Into<String>) -> TxError {
    TxError::Store(StoreError::conflict(kind, what))
}

/// A failure that is nobody's decision: bad data in a column, a broken invariant.
pub(crate) fn backend(what: impl Into<String>) -> TxError {
    TxError::Store(StoreError::Backend(what.into()))
}

/// One schema step: a plain SQL file under `migrations/<backend>/<store>/`. Its version is
/// its position in the store's list, starting at 1; each backend records which it applied.
pub(crate) struct Migration {
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// The steps of one store on one backend, in order:
/// `migrations!("sqlite/relay", "0001_init", "0002_templates")` reads
/// `migrations/sqlite/relay/0001_init.sql` and the rest into the binary.
macro_rules! migrations {
    ($dir:literal, $($name:literal),+ $(,)?) => {
        &[$($crate::sql::Migration {
            name: $name,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"), "/migrations/", $dir, "/", $name, ".sql"
            )),
        }),+]
    };
}

pub(crate) use migrations;

/// One statement, in the SQL both backends share, or with PostgreSQL's own variant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sql {
    /// The statement (SQLite's; PostgreSQL's too unless `postgres` says otherwise).
    pub(crate) text: &'static str,
    pub(crate) postgres: Postgres,
}

/// How PostgreSQL's statement differs from [`Sql::text`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Postgres {
    Same,
    /// The same statement with a row-lock clause after it (`FOR NO KEY UPDATE`, `FOR UPDATE
    /// SKIP LOCKED`): rows a decision reads stay as read until the commit.
    Locking(&'static str),
    /// A statement of its own, where the dialects differ (a function only one of them has).
    Own(&'static str),
}

impl Sql {
    /// A statement both backends run as written.
    pub(crate) const fn new(text: &'static str) -> Self {
        Self {
            text,
            postgres: Postgres::Same,
        }
    }

    /// A `SELECT` whose rows PostgreSQL locks with `clause` until the commit. SQLite's single
    /// writer needs no row locks: nothing else writes while a unit runs.
    pub(crate) const fn locking(text: &'static str, clause: &'static str) -> Self {
        Self {
            text,
            postgres: Postgres::Locking(clause),
        }
    }

    /// Different statements for SQLite and PostgreSQL, doing the same thing.
    pub(crate) const fn dialects(sqlite: &'static str, postgres: &'static str) -> Self {
        Self {
            text: sqlite,
            postgres: Postgres::Own(postgres),
        }
    }
}

/// A value bound to a statement's placeholder.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    Null,
    Int(i64),
    Bool(bool),
    Text(&'a str),
    Blob(&'a [u8]),
    /// A list, for PostgreSQL's `= ANY ($n)`; SQLite gets it as a JSON array, for
    /// `IN (SELECT value FROM json_each($n))`.
    Texts(&'a [&'a str]),
    Ints(&'a [i64]),
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl From<u32> for Arg<'_> {
    fn from(n: u32) -> Self {
        Self::Int(i64::from(n))
    }
}

impl From<i32> for Arg<'_> {
    fn from(n: i32) -> Self {
        Self::Int(i64::from(n))
    }
}

impl From<u16> for Arg<'_> {
    fn from(n: u16) -> Self {
        Self::Int(i64::from(n))
    }
}

impl From<bool> for Arg<'_> {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<UnixTime> for Arg<'_> {
    fn from(t: UnixTime) -> Self {
        Self::Int(t.0)
    }
}

impl From<DeviceId> for Arg<'_> {
    fn from(d: DeviceId) -> Self {
        Self::Int(i64::from(d.0))
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Self::Text(s)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Self::Text(s)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(b: &'a [u8]) -> Self {
        Self::Blob(b)
    }
}

impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        Self::Blob(b)
    }
}

impl<'a> From<&'a [i64]> for Arg<'a> {
    fn from(ints: &'a [i64]) -> Self {
        Self::Ints(ints)
    }
}

impl<'a> From<&'a [&'a str]> for Arg<'a> {
    fn from(texts: &'a [&'a str]) -> Self {
        Self::Texts(texts)
    }
}

impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

/// A count or sequence number from the caller, which both databases keep as a signed 64-bit
/// integer.
pub(crate) fn big(n: u64) -> TxResult<i64> {
    i64::try_from(n).map_err(|_| backend(format!("{n} does not fit a 64-bit integer column")))
}

/// The placeholders' values: `args![a, b, c]` is `&[Arg::from(a), Arg::from(b), …]`.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$($crate::sql::Arg::from($arg)),*]
    };
}

pub(crate) use args;

/// A column's value as read: integers (and PostgreSQL's booleans) as [`Value::Int`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }
}

/// One row of a result, read by column position. A column of the wrong type is an error,
/// never a panic.
#[derive(Clone, Debug)]
pub(crate) struct Row(pub(crate) Vec<Value>);

impl Row {
    fn value(&self, idx: usize) -> TxResult<&Value> {
        self.0
            .get(idx)
            .ok_or_else(|| backend(format!("the row has no column {idx}")))
    }

    fn mismatch(&self, idx: usize, wanted: &str) -> TxError {
        let found = self.0.get(idx).map_or("nothing", Value::kind);
        backend(format!("column {idx} holds {found}, not {wanted}"))
    }

    pub(crate) fn is_null(&self, idx: usize) -> TxResult<bool> {
        Ok(matches!(self.value(idx)?, Value::Null))
    }

    pub(crate) fn int(&self, idx: usize) -> TxResult<i64> {
        match self.value(idx)? {
            Value::Int(n) => Ok(*n),
            _ => Err(self.mismatch(idx, "an integer")),
        }
    }

    pub(crate) fn int_opt(&self, idx: usize) -> TxResult<Option<i64>> {
        match self.value(idx)? {
            Value::Null => Ok(None),
            _ => self.int(idx).map(Some),
        }
    }

    /// A boolean: PostgreSQL's `BOOLEAN`, SQLite's 0 or 1.
    pub(crate) fn bool(&self, idx: usize) -> TxResult<bool> {
        self.int(idx).map(|n| n != 0)
    }

    pub(crate) fn text(&self, idx: usize) -> TxResult<&str> {
        match self.value(idx)? {
            Value::Text(s) => Ok(s),
            _ => Err(self.mismatch(idx, "text")),
        }
    }

    pub(crate) fn string(&self, idx: usize) -> TxResult<String> {
        self.text(idx).map(str::to_owned)
    }

    pub(crate) fn string_opt(&self, idx: usize) -> TxResult<Option<String>> {
        match self.value(idx)? {
            Value::Null => Ok(None),
            _ => self.string(idx).map(Some),
        }
    }

    pub(crate) fn blob(&self, idx: usize) -> TxResult<Vec<u8>> {
        match self.value(idx)? {
            Value::Blob(b) => Ok(b.clone()),
            _ => Err(self.mismatch(idx, "a blob")),
        }
    }

    /// A blob moved out of the row (it is left `NULL`), for large bodies read once.
    pub(crate) fn take_blob(&mut self, idx: usize) -> TxResult<Vec<u8>> {
        match self.0.get_mut(idx) {
            Some(Value::Blob(b)) => Ok(std::mem::take(b)),
            _ => Err(self.mismatch(idx, "a blob")),
        }
    }

    pub(crate) fn time(&self, idx: usize) -> TxResult<UnixTime> {
        self.int(idx).map(UnixTime)
    }

    pub(crate) fn time_opt(&self, idx: usize) -> TxResult<Option<UnixTime>> {
        Ok(self.int_opt(idx)?.map(UnixTime))
    }

    /// A non-negative integer in the caller's type (a count, a sequence number, a version).
    pub(crate) fn unsigned<T: TryFrom<i64>>(&self, idx: usize) -> TxResult<T> {
        let n = self.int(idx)?;
        T::try_from(n)
            .map_err(|_| backend(format!("column {idx} holds {n}, which is out of range")))
    }

    pub(crate) fn device_id(&self, idx: usize) -> TxResult<DeviceId> {
        self.unsigned(idx).map(DeviceId)
    }

    /// A text column parsed into one of the domain's validated types.
    pub(crate) fn parsed<T>(&self, idx: usize) -> TxResult<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let text = self.text(idx)?;
        text.parse().map_err(|e| {
            backend(format!(
                "column {idx} holds {text:?}, which is invalid: {e}"
            ))
        })
    }

    /// A nullable text column parsed like [`Row::parsed`].
    pub(crate) fn parsed_opt<T>(&self, idx: usize) -> TxResult<Option<T>>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.value(idx)? {
            Value::Null => Ok(None),
            _ => self.parsed(idx).map(Some),
        }
    }

    /// A text column holding one of a closed set of names (`AccountKind`, `EnvelopeKind`, …).
    pub(crate) fn named<T>(&self, idx: usize, parse: fn(&str) -> Option<T>) -> TxResult<T> {
        let text = self.text(idx)?;
        parse(text).ok_or_else(|| backend(format!("column {idx} holds unexpected value {text:?}")))
    }

    /// A nullable text column holding one of a closed set of names, like [`Row::named`].
    pub(crate) fn named_opt<T>(
        &self,
        idx: usize,
        parse: fn(&str) -> Option<T>,
    ) -> TxResult<Option<T>> {
        match self.value(idx)? {
            Value::Null => Ok(None),
            _ => self.named(idx, parse).map(Some),
        }
    }
}

/// One transaction of a store, as a unit of work sees it. See the module's documentation for
/// what each backend does behind each method.
///
/// Statements are given as `&'static str` in the shared dialect ([`Tx::query`],
/// [`Tx::execute`], …) or as an [`Sql`] where PostgreSQL's differs ([`Tx::rows`],
/// [`Tx::changes`], [`Tx::row_opt`]). Not one method taking `impl Into<Sql>`: that bound,
/// proven for `&'static str`, trips the compiler's check that the units' futures are `Send`.
pub(crate) trait Tx {
    /// Runs a statement and returns its rows.
    fn rows(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = TxResult<Vec<Row>>> + Send;

    /// Runs a statement and returns how many rows it changed.
    fn changes(&mut self, sql: Sql, args: &[Arg<'_>])
    -> impl Future<Output = TxResult<u64>> + Send;

    /// Makes every other transaction asking for the same `key` wait until this one ends: for
    /// decisions about rows that may not exist yet, which a row lock cannot cover.
    fn lock(&mut self, key: &str) -> impl Future<Output = TxResult<()>> + Send;

    /// Tells `account`'s `devices` (connected to any node) that there is something for them
    /// once, and only if, this transaction commits.
    fn wake(
        &mut self,
        account: &PhoneNumber,
        devices: &[DeviceId],
        reason: WakeReason,
    ) -> impl Future<Output = TxResult<()>> + Send;

    /// Tells every node sharing the store that the hosted business numbers changed, once this
    /// transaction commits.
    fn announce_numbers(&mut self) -> impl Future<Output = TxResult<()>> + Send;

    /// The first row of a statement's result, if any.
    fn row_opt(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = TxResult<Option<Row>>> + Send {
        let rows = self.rows(sql, args);
        async move { Ok(rows.await?.into_iter().next()) }
    }

    /// [`Tx::rows`] of a statement both dialects share.
    fn query(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = TxResult<Vec<Row>>> + Send {
        self.rows(Sql::new(sql), args)
    }

    /// [`Tx::row_opt`] of a statement both dialects share.
    fn query_opt(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = TxResult<Option<Row>>> + Send {
        self.row_opt(Sql::new(sql), args)
    }

    /// The row of a statement that always returns one (`RETURNING`, an aggregate).
    fn query_one(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = TxResult<Row>> + Send {
        let rows = self.rows(Sql::new(sql), args);
        async move {
            rows.await?
                .into_iter()
                .next()
                .ok_or_else(|| backend("a statement that returns a row returned none"))
        }
    }

    /// [`Tx::changes`] of a statement both dialects share.
    fn execute(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = TxResult<u64>> + Send {
        self.changes(Sql::new(sql), args)
    }
}

/// The wake-ups of one [`Tx::wake`] call.
pub(crate) fn wakeups(
    account: &PhoneNumber,
    devices: &[DeviceId],
    reason: WakeReason,
) -> impl Iterator<Item = Wakeup> {
    devices.iter().map(move |&device| Wakeup {
        account: account.clone(),
        device,
        reason,
    })
}
