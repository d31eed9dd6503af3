//! [`EndpointStore`] on SQLite: identities, sealed Olm sessions, the outbox, dedup markers and
//! history, written once in [`crate::units::endpoint`]. The gateway's extra tables are in the
//! same file (see `gateway`).

use super::db::{Db, Migration};
use crate::StoreResult;
use crate::sql::migrations;
use std::path::Path;
use tokio::sync::broadcast;

const MIGRATIONS: &[Migration] = migrations!(
    "sqlite/endpoint",
    "0001_init",
    "0002_leases",
    "0003_templates_schedules",
    "0004_resends",
    "0005_idempotency",
    "0006_person_tokens",
    "0007_webhook_delivery",
);

/// An endpoint's store (a user device, or a gateway with its business tables) in one file.
#[derive(Clone, Debug)]
pub struct SqliteEndpointStore {
    pub(super) db: Db,
}

impl SqliteEndpointStore {
    /// Opens the file, creating it if missing, and brings its schema up to date.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            db: Db::open(path, MIGRATIONS)?,
        })
    }
}

impl SqliteEndpointStore {
    /// One process owns the file: every number is added through this very node.
    fn subscribe_numbers(&self) -> Option<broadcast::Receiver<()>> {
        None
    }
}

crate::dispatch::endpoint::endpoint_store!(SqliteEndpointStore);
crate::dispatch::endpoint::gateway_store!(SqliteEndpointStore);
crate::dispatch::endpoint::webhook_store!(SqliteEndpointStore);
crate::dispatch::endpoint::schedule_store!(SqliteEndpointStore);
