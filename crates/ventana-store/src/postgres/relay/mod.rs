//! [`RelayStore`] on PostgreSQL: the schema, the listener for wake-ups, and the trait's
//! dispatch to the units of work in [`crate::units::relay`]. The template registry
//! ([`TemplateStore`](crate::TemplateStore)) is in `templates`.
//!
//! Several nodes share one database: every method is one transaction whose decisions are
//! protected by locks (see each unit), and wake-ups are published with `pg_notify` in the
//! same transaction (see `wakeups`), so every node hears of every commit.

mod templates;

use super::db::{self, DEFAULT_POOL_SIZE, Db, Migration};
use super::wakeups::{self, Listener};
use crate::StoreResult;
use crate::relay::Wakeup;
use crate::sql::migrations;
use std::sync::Arc;
use tokio::sync::broadcast;

const MIGRATIONS: &[Migration] = migrations!(
    "postgres/relay",
    "0001_init",
    "0002_templates",
    "0003_template_envelopes",
    "0004_resends",
    "0005_ledger",
    "0006_billing",
);

/// The relay's store in one schema of a PostgreSQL database, shared by every relay node.
#[derive(Clone, Debug)]
pub struct PgRelayStore {
    db: Db,
    listener: Arc<Listener>,
}

impl PgRelayStore {
    /// Connects to the database at `url` (`postgres://user@host/db`, or `key=value` pairs),
    /// creates `schema` if missing and brings it up to date, and starts listening for
    /// wake-ups. The schema name is a plain lower-case identifier (`relay`).
    pub async fn connect(url: &str, schema: &str) -> StoreResult<Self> {
        Self::connect_with_pool_size(url, schema, DEFAULT_POOL_SIZE).await
    }

    /// [`connect`](Self::connect) with `pool_size` pooled connections (8 by default), plus
    /// the one that listens for wake-ups.
    pub async fn connect_with_pool_size(
        url: &str,
        schema: &str,
        pool_size: usize,
    ) -> StoreResult<Self> {
        let config = db::config_for(url, schema)?;
        let db = Db::connect(config.clone(), schema, pool_size, MIGRATIONS).await?;
        let channel = wakeups::channel(schema);
        let listener = Listener::start(config, channel).await?;
        Ok(Self {
            db,
            listener: Arc::new(listener),
        })
    }
}

impl PgRelayStore {
    fn subscribe(&self) -> broadcast::Receiver<Wakeup> {
        self.listener.subscribe()
    }
}

crate::dispatch::relay::relay_store!(PgRelayStore);
crate::dispatch::relay::ledger_store!(PgRelayStore);
