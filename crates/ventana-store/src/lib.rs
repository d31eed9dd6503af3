//! Storage behind traits.
//!
//! - [`relay`]: [`RelayStore`], the platform's store: accounts, devices, the key directory,
//!   envelopes (ciphertext and metadata only), relationships, blocks and test clocks.
//! - [`template`]: [`TemplateStore`], the relay's registry of message templates per business:
//!   every version kept immutable, review as compare-and-swap on the status, and an audit
//!   trail of events the gateway follows for status webhooks. The relay's stores implement it
//!   in the same file or schema.
//! - [`endpoint`]: [`EndpointStore`], an end-to-end endpoint's store (a user device, or one
//!   business number in a gateway): sealed Olm state, outbox, dedup markers, history; and
//!   [`GatewayStore`], the business side's extra tables (businesses, numbers, tokens, webhooks).
//! - [`schedule`]: [`ScheduleStore`], part of every [`GatewayStore`]: messages a business
//!   scheduled ahead of time, claimed when due by exactly one node and taken over from a node
//!   that died; and the cursor over the relay's template events, moved forward together with
//!   the webhooks it queued.
//! - [`webhook`]: [`WebhookStore`], part of every [`GatewayStore`]: the webhook queue (jobs
//!   leased to one node at a time, the statuses of one message in order), the delivery log,
//!   replay of settled events and the dead-letter queue.
//! - [`ledger`]: [`LedgerStore`], part of every relay store: the pricing policy versions,
//!   metering a delivered business message (rated under the version in force, charged once
//!   per message, with the usage it moves), and the billing ledger, hash-chained per
//!   business.
//! - [`idempotency`]: part of every [`GatewayStore`]: the idempotency keys of sends, claimed
//!   with the message id the send will carry, completed with the answer to replay, taken over
//!   from a node that died, pruned after a retention period.
//! - `sql`: what every unit of work is written against, whichever database runs it: the
//!   `Tx` trait (statements in the shared dialect, rows, and the hooks only one backend
//!   needs: PostgreSQL's locks and `NOTIFY`), `Sql` statements with PostgreSQL's variant.
//! - `units`: the units of work, each written once as an `async fn` over `Tx` (accept a
//!   submission, claim a key, lease a webhook, commit an inbound message, …).
//! - `dispatch`: the store traits implemented once, as macros each backend's store type
//!   invokes: a method moves its arguments into its unit and hands it to the backend.
//! - [`sqlite`]: the embedded default. Each store is its own file, so the relay's can be
//!   inspected for plaintext independently of the gateway's:
//!   [`SqliteRelayStore`](sqlite::SqliteRelayStore) and
//!   [`SqliteEndpointStore`](sqlite::SqliteEndpointStore) (which is also the [`GatewayStore`]).
//!   One writer thread runs units in group commits. Schemas are plain SQL under
//!   `migrations/sqlite/<store>/`, applied in order and tracked in `PRAGMA user_version`.
//! - [`postgres`]: for several nodes sharing one database. Each store is its own schema of it
//!   (the relay's, e.g. `relay`, apart from the gateway's, e.g. `gateway`):
//!   [`PgRelayStore`](postgres::PgRelayStore) and
//!   [`PgEndpointStore`](postgres::PgEndpointStore) (also the [`GatewayStore`]). A unit runs
//!   in a transaction on a pooled connection, again after a deadlock. Schemas are plain SQL
//!   under `migrations/postgres/<store>/`, tracked in `<schema>.schema_migrations`. Wake-ups
//!   travel through `NOTIFY`, so every node receives every one.
//!
//! `tests/it` is a conformance suite: every case takes a `&dyn` store, so each backend runs
//! the same cases against its own fresh store (PostgreSQL's when `VENTANA_TEST_POSTGRES` names
//! a server; see the crate's README).
//!
//! Methods are units of work: each one is a single transaction, so callers never hold a
//! transaction across an await and never see half-written state.

mod dispatch;
pub mod endpoint;
pub mod idempotency;
pub mod ledger;
pub mod postgres;
pub mod relay;
pub mod schedule;
mod sql;
pub mod sqlite;
pub mod template;
mod units;
pub mod webhook;

pub use endpoint::{EndpointStore, GatewayStore};
pub use ledger::LedgerStore;
pub use relay::RelayStore;
pub use schedule::ScheduleStore;
pub use template::TemplateStore;
pub use webhook::WebhookStore;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store refused the change; [`Conflict::kind`] says why, so the caller can decide
    /// whether to read again and retry, report it, or treat it as done.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// The database itself failed (I/O, corruption, a bug in a query).
    #[error("storage backend: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn conflict(kind: ConflictKind, detail: impl Into<String>) -> Self {
        Self::Conflict(Conflict {
            kind,
            detail: detail.into(),
        })
    }

    /// The conflict's kind, if this is one.
    pub fn conflict_kind(&self) -> Option<ConflictKind> {
        match self {
            Self::Conflict(c) => Some(c.kind),
            Self::Backend(_) => None,
        }
    }
}

/// A change the store refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Conflict {
    pub kind: ConflictKind,
    /// For people: what was refused.
    pub detail: String,
}

/// Why the store refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictKind {
    /// A key or unique index already holds the row (a taken id, number or device).
    Exists,
    /// The row changed since the caller read it (a version check failed): reading it again
    /// and retrying may succeed.
    Changed,
    /// The row is missing, or its state does not allow the change (a template that is not
    /// pending review, a schedule already sent): retrying will not help.
    State,
    /// The owner holds as many of these as it may (devices on a number, one-time keys on a
    /// device): one must go before another can come.
    Limit,
}

pub type StoreResult<T> = Result<T, StoreError>;
