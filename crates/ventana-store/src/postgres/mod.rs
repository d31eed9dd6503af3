//! PostgreSQL implementations: each store in its own schema of one shared database (the relay
//! in e.g. `relay`, the gateway in `gateway`), its schema from `migrations/postgres/<store>/`.
//! Several nodes may share the database; every method stays one transaction, with the locks
//! its decision needs.
//!
//! - `db`: the pool (`search_path` set per connection), the migration runner (one
//!   transaction under an advisory lock, tracked in `<schema>.schema_migrations`), one
//!   transaction per method with retries of deadlocks and serialization failures.
//! - `wakeups`: the relay's wake-ups, published with `pg_notify` in the committing
//!   transaction and received by every node through a dedicated `LISTEN` connection.
//! - [`PgRelayStore`] (`relay`, with `relay/verification`, `relay/directory`,
//!   `relay/envelopes` and `relay/templates`): the relay's store, and its template registry.
//! - [`PgEndpointStore`] (`endpoint`, and `gateway` for the business tables): a gateway's
//!   endpoints' store. Its scheduled sends and template cursor are in `schedules`.

mod db;
mod endpoint;
mod relay;
mod tx;
mod wakeups;

pub use endpoint::PgEndpointStore;
pub use relay::PgRelayStore;
