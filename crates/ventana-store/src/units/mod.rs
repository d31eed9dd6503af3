//! The units of work, written once for every backend over [`crate::sql::Tx`]. Each backend's
//! store calls them inside its own transaction (SQLite's writer thread, PostgreSQL's pool).
//!
//! - `relay`: the relay's store: accounts, devices and keys, envelopes under the rules.
//! - `endpoint`: an endpoint's store: identities, sealed sessions, the outbox, dedup markers,
//!   history and application records.
//! - `gateway`: the business side beside it: businesses, numbers, tokens, webhook jobs and
//!   leases, and (`gateway/idempotency`) the idempotency keys of sends.
//! - `schedules`: the gateway's scheduled sends and its template cursor.

pub(crate) mod endpoint;
pub(crate) mod gateway;
pub(crate) mod relay;
pub(crate) mod schedules;
