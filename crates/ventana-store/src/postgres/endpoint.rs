//! [`EndpointStore`] on PostgreSQL: identities, sealed Olm sessions, the outbox, dedup markers
//! and history, written once in [`crate::units::endpoint`]. The gateway's extra tables are in
//! the same schema (see `gateway`), so a webhook job commits with the message it reports.

use super::db::{self, DEFAULT_POOL_SIZE, Db, Migration, unit};
use super::wakeups::{self, Listener};
use crate::StoreResult;
use crate::endpoint::{
    AppRecord, EndpointStore, IdentityRecord, InboundCommit, InboundOutcome, MessageRecord,
    OutboundCommit, OutboxRow, SessionRecord,
};
use crate::units::endpoint as units;
use async_trait::async_trait;
use std::sync::Arc;
use ventana_core::{DeviceId, MessageId, PhoneNumber};

const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_init",
        sql: include_str!("../../migrations/postgres/endpoint/0001_init.sql"),
    },
    Migration {
        name: "0002_leases",
        sql: include_str!("../../migrations/postgres/endpoint/0002_leases.sql"),
    },
    Migration {
        name: "0003_templates_schedules",
        sql: include_str!("../../migrations/postgres/endpoint/0003_templates_schedules.sql"),
    },
    Migration {
        name: "0004_resends",
        sql: include_str!("../../migrations/postgres/endpoint/0004_resends.sql"),
    },
    Migration {
        name: "0005_idempotency",
        sql: include_str!("../../migrations/postgres/endpoint/0005_idempotency.sql"),
    },
];

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

#[async_trait]
impl EndpointStore for PgEndpointStore {
    async fn identity(&self, owner: &PhoneNumber) -> StoreResult<Option<IdentityRecord>> {
        self.db
            .read_unit(async |tx| units::identity(tx, owner).await)
            .await
    }

    async fn save_identity(&self, identity: IdentityRecord) -> StoreResult<()> {
        unit!(self.db, |tx| units::save_identity(tx, &identity).await)
    }

    async fn save_account(&self, owner: &PhoneNumber, account_sealed: Vec<u8>) -> StoreResult<()> {
        unit!(self.db, |tx| units::save_account(
            tx,
            owner,
            &account_sealed
        )
        .await)
    }

    async fn sessions(
        &self,
        owner: &PhoneNumber,
        peer: &PhoneNumber,
        peer_device: DeviceId,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.db
            .read_unit(async |tx| units::sessions(tx, owner, peer, peer_device).await)
            .await
    }

    async fn commit_outbound(&self, commit: OutboundCommit) -> StoreResult<()> {
        unit!(self.db, |tx| units::commit_outbound(tx, &commit).await)
    }

    async fn outbox(&self, owner: &PhoneNumber) -> StoreResult<Vec<OutboxRow>> {
        self.db
            .read_unit(async |tx| units::outbox(tx, owner).await)
            .await
    }

    async fn settle_outbox(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        records: Vec<AppRecord>,
    ) -> StoreResult<bool> {
        unit!(self.db, |tx| units::settle_outbox(tx, owner, id, &records)
            .await)
    }

    async fn is_processed(
        &self,
        owner: &PhoneNumber,
        from: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<bool> {
        self.db
            .read_unit(async |tx| units::is_processed(tx, owner, from, id).await)
            .await
    }

    async fn commit_inbound(&self, commit: InboundCommit) -> StoreResult<InboundOutcome> {
        unit!(self.db, |tx| units::commit_inbound(tx, &commit).await)
    }

    async fn message(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<Option<MessageRecord>> {
        self.db
            .read_unit(async |tx| units::message(tx, owner, id).await)
            .await
    }

    async fn messages(&self, owner: &PhoneNumber, limit: u32) -> StoreResult<Vec<MessageRecord>> {
        self.db
            .read_unit(async |tx| units::messages(tx, owner, limit).await)
            .await
    }

    async fn apply(&self, owner: &PhoneNumber, records: Vec<AppRecord>) -> StoreResult<()> {
        unit!(self.db, |tx| units::apply(tx, owner, &records).await)
    }

    async fn contact(
        &self,
        owner: &PhoneNumber,
        peer: &PhoneNumber,
    ) -> StoreResult<Option<Vec<u8>>> {
        self.db
            .read_unit(async |tx| units::contact(tx, owner, peer).await)
            .await
    }

    async fn cached_template(
        &self,
        owner: &PhoneNumber,
        business: &PhoneNumber,
        id: &str,
        version: u32,
    ) -> StoreResult<Option<String>> {
        self.db
            .read_unit(async |tx| units::cached_template(tx, owner, business, id, version).await)
            .await
    }

    async fn cache_template(
        &self,
        owner: &PhoneNumber,
        business: &PhoneNumber,
        id: &str,
        version: u32,
        definition: String,
    ) -> StoreResult<()> {
        unit!(self.db, |tx| units::cache_template(
            tx,
            owner,
            business,
            id,
            version,
            &definition
        )
        .await)
    }
}
