//! [`RelayStore`] on SQLite: the file, its schema, and the trait's dispatch to the units of
//! work in [`crate::units::relay`]. The template registry
//! ([`TemplateStore`](crate::TemplateStore)) is in [`templates`].

mod templates;

use super::db::{Db, Migration};
use crate::StoreResult;
use crate::relay::Wakeup;
use crate::sql::migrations;
use std::path::Path;
use tokio::sync::broadcast;

const MIGRATIONS: &[Migration] = migrations!(
    "sqlite/relay",
    "0001_init",
    "0002_templates",
    "0003_template_envelopes",
    "0004_resends",
    "0005_user_address",
    "0006_unclaimed_index",
    "0007_ledger",
    "0008_billing",
);

/// The relay's store in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteRelayStore {
    db: Db,
}

impl SqliteRelayStore {
    /// Opens the file, creating it if missing, and brings its schema up to date.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            db: Db::open(path, MIGRATIONS)?,
        })
    }
}

impl SqliteRelayStore {
    fn subscribe(&self) -> broadcast::Receiver<Wakeup> {
        self.db.wakeups()
    }
}

crate::dispatch::relay::relay_store!(SqliteRelayStore);
crate::dispatch::relay::ledger_store!(SqliteRelayStore);
