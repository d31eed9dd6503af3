//! The units of work, written once for every backend over [`crate::sql::Tx`]. Each backend's
//! store calls them inside its own transaction (SQLite's writer thread, PostgreSQL's pool).
//!
//! - `relay`: the relay's store: accounts, devices and keys, envelopes under the rules.

pub(crate) mod relay;
