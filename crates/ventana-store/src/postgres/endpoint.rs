//! [`EndpointStore`] on PostgreSQL: identities, sealed Olm sessions, the outbox, dedup markers
//! and history, written once in [`crate::units::endpoint`]. The gateway's extra tables are in
//! the same schema (see `gateway`), so a webhook job commits with the message it reports.

use super::db::{self, DEFAULT_POOL_SIZE, Db, Migration};
use super::wakeups::{self, Listener};
use crate::StoreResult;
use crate::sql::migrations;
use std::sync::Arc;
use tokio::sync::broadcast;

const MIGRATIONS: &[Migration] = migrations!(
    "postgres/endpoint",
    "0001_init",
    "0002_leases",
    "0003_templates_schedules",
    "0004_resends",
    "0005_idempotency",
    "0006_person_tokens",
    "0007_webhook_delivery",
);

/// An endpoint's store (in practice a gateway's, with its business tables) in one schema of
/// a PostgreSQL database, shared by every gateway node.
#[derive(Clone, Debug)]
pub struct PgEndpointStore {
    pub(super) db: Db,
    /// Where "a number was added" (said by `Tx::announce_numbers` on commit) is heard, so
    /// every node hosts it.
    pub(super) numbers: Arc<Listener<()>>,
}

impl PgEndpointStore {
    /// Connects to the database at `url` (`postgres://user@host/db`, or `key=value` pairs),
    /// creates `schema` if missing and brings it up to date. The schema name is a plain
    /// lower-case identifier (`gateway`), another than the relay's.
    pub async fn connect(url: &str, schema: &str) -> StoreResult<Self> {
        Self::connect_with_pool_size(url, schema, DEFAULT_POOL_SIZE).await
    }

    /// [`connect`](Self::connect) with `pool_size` pooled connections (8 by default).
    pub async fn connect_with_pool_size(
        url: &str,
        schema: &str,
        pool_size: usize,
    ) -> StoreResult<Self> {
        let config = db::config_for(url, schema)?;
        let db = Db::connect(config.clone(), schema, pool_size, MIGRATIONS).await?;
        let channel = wakeups::numbers_channel(schema);
        let numbers = Listener::start_with(config, channel, wakeups::signal).await?;
        Ok(Self {
            db,
            numbers: Arc::new(numbers),
        })
    }
}

impl PgEndpointStore {
    fn subscribe_numbers(&self) -> Option<broadcast::Receiver<()>> {
        Some(self.numbers.subscribe())
    }
}

crate::dispatch::endpoint::endpoint_store!(PgEndpointStore);
crate::dispatch::endpoint::gateway_store!(PgEndpointStore);
crate::dispatch::endpoint::webhook_store!(PgEndpointStore);
crate::dispatch::endpoint::schedule_store!(PgEndpointStore);
