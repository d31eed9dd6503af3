//! [`RelayStore`] on SQLite: the file, its schema, and the trait's dispatch to the units of
//! work in [`crate::units::relay`]. The template registry
//! ([`TemplateStore`](crate::TemplateStore)) is in [`templates`].

mod templates;

use super::db::{Db, Migration};
use crate::StoreResult;
use crate::relay::Wakeup;
use std::path::Path;
use tokio::sync::broadcast;

const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_init",
        sql: include_str!("../../migrations/sqlite/relay/0001_init.sql"),
    },
    Migration {
        name: "0002_templates",
        sql: include_str!("../../migrations/sqlite/relay/0002_templates.sql"),
    },
    Migration {
        name: "0003_template_envelopes",
        sql: include_str!("../../migrations/sqlite/relay/0003_template_envelopes.sql"),
    },
    Migration {
        name: "0004_resends",
        sql: include_str!("../../migrations/sqlite/relay/0004_resends.sql"),
    },
    Migration {
        name: "0005_user_address",
        sql: include_str!("../../migrations/sqlite/relay/0005_user_address.sql"),
    },
];

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
