//! [`EndpointStore`] on SQLite: identities, sealed Olm sessions, the outbox, dedup markers and
//! history, written once in [`crate::units::endpoint`]. The gateway's extra tables are in the
//! same file (see `gateway`).

use super::db::{Db, Migration};
use crate::StoreResult;
use crate::endpoint::{
    AppRecord, EndpointStore, IdentityRecord, InboundCommit, InboundOutcome, MessageRecord,
    OutboundCommit, OutboxRow, SessionRecord,
};
use crate::units::endpoint as units;
use async_trait::async_trait;
use std::path::Path;
use ventana_core::{DeviceId, MessageId, PhoneNumber};

const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_init",
        sql: include_str!("../../migrations/sqlite/endpoint/0001_init.sql"),
    },
    Migration {
        name: "0002_leases",
        sql: include_str!("../../migrations/sqlite/endpoint/0002_leases.sql"),
    },
    Migration {
        name: "0003_templates_schedules",
        sql: include_str!("../../migrations/sqlite/endpoint/0003_templates_schedules.sql"),
    },
    Migration {
        name: "0004_resends",
        sql: include_str!("../../migrations/sqlite/endpoint/0004_resends.sql"),
    },
    Migration {
        name: "0005_idempotency",
        sql: include_str!("../../migrations/sqlite/endpoint/0005_idempotency.sql"),
    },
];

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

#[async_trait]
impl EndpointStore for SqliteEndpointStore {
    async fn identity(&self, owner: &PhoneNumber) -> StoreResult<Option<IdentityRecord>> {
        let owner = owner.clone();
        self.db
            .read_unit(async move |tx| units::identity(tx, &owner).await)
            .await
    }

    async fn save_identity(&self, identity: IdentityRecord) -> StoreResult<()> {
        self.db
            .unit(async move |tx| units::save_identity(tx, &identity).await)
            .await
    }

    async fn save_account(&self, owner: &PhoneNumber, account_sealed: Vec<u8>) -> StoreResult<()> {
        let owner = owner.clone();
        self.db
            .unit(async move |tx| units::save_account(tx, &owner, &account_sealed).await)
            .await
    }

    async fn sessions(
        &self,
        owner: &PhoneNumber,
        peer: &PhoneNumber,
        peer_device: DeviceId,
    ) -> StoreResult<Vec<SessionRecord>> {
        let (owner, peer) = (owner.clone(), peer.clone());
        self.db
            .read_unit(async move |tx| units::sessions(tx, &owner, &peer, peer_device).await)
            .await
    }

    async fn commit_outbound(&self, commit: OutboundCommit) -> StoreResult<()> {
        self.db
            .unit(async move |tx| units::commit_outbound(tx, &commit).await)
            .await
    }

    async fn outbox(&self, owner: &PhoneNumber) -> StoreResult<Vec<OutboxRow>> {
        let owner = owner.clone();
        self.db
            .read_unit_blocking(async move |tx| units::outbox(tx, &owner).await)
            .await
    }

    async fn settle_outbox(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        records: Vec<AppRecord>,
    ) -> StoreResult<bool> {
        let (owner, id) = (owner.clone(), id.clone());
        self.db
            .unit(async move |tx| units::settle_outbox(tx, &owner, &id, &records).await)
            .await
    }

    async fn is_processed(
        &self,
        owner: &PhoneNumber,
        from: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<bool> {
        let (owner, from, id) = (owner.clone(), from.clone(), id.clone());
        self.db
            .read_unit(async move |tx| units::is_processed(tx, &owner, &from, &id).await)
            .await
    }

    async fn commit_inbound(&self, commit: InboundCommit) -> StoreResult<InboundOutcome> {
        self.db
            .unit(async move |tx| units::commit_inbound(tx, &commit).await)
            .await
    }

    async fn message(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<Option<MessageRecord>> {
        let (owner, id) = (owner.clone(), id.clone());
        self.db
            .read_unit(async move |tx| units::message(tx, &owner, &id).await)
            .await
    }

    async fn messages(&self, owner: &PhoneNumber, limit: u32) -> StoreResult<Vec<MessageRecord>> {
        let owner = owner.clone();
        self.db
            .read_unit(async move |tx| units::messages(tx, &owner, limit).await)
            .await
    }

    async fn apply(&self, owner: &PhoneNumber, records: Vec<AppRecord>) -> StoreResult<()> {
        let owner = owner.clone();
        self.db
            .unit(async move |tx| units::apply(tx, &owner, &records).await)
            .await
    }

    async fn contact(
        &self,
        owner: &PhoneNumber,
        peer: &PhoneNumber,
    ) -> StoreResult<Option<Vec<u8>>> {
        let (owner, peer) = (owner.clone(), peer.clone());
        self.db
            .read_unit(async move |tx| units::contact(tx, &owner, &peer).await)
            .await
    }

    async fn cached_template(
        &self,
        owner: &PhoneNumber,
        business: &PhoneNumber,
        id: &str,
        version: u32,
    ) -> StoreResult<Option<String>> {
        let (owner, business, id) = (owner.clone(), business.clone(), id.to_owned());
        self.db
            .read_unit(async move |tx| {
                units::cached_template(tx, &owner, &business, &id, version).await
            })
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
        let (owner, business, id) = (owner.clone(), business.clone(), id.to_owned());
        self.db
            .unit(async move |tx| {
                units::cache_template(tx, &owner, &business, &id, version, &definition).await
            })
            .await
    }
}
