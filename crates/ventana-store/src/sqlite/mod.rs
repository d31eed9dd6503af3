//! SQLite implementations: one file per store, its schema from `migrations/sqlite/<store>/`.
//!
//! - `db`: the shared connection, PRAGMAs, the migration runner, one transaction per method.
//! - [`SqliteRelayStore`] (`relay`, with `relay/envelopes` and `relay/templates`): the
//!   relay's store, and its template registry.
//! - [`SqliteEndpointStore`] (`endpoint`, and `gateway` for the business tables): an
//!   endpoint's store; a user device's file simply leaves the gateway tables empty. Its
//!   scheduled sends and template cursor are in `schedules`.

mod bulk;
mod db;
mod endpoint;
mod relay;
mod tx;

pub use bulk::{IMPORT_ROWS_PER_TX, ProcessedMarker, SubmissionRecord};
pub use endpoint::SqliteEndpointStore;
pub use relay::SqliteRelayStore;
