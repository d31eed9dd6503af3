//! [`RelayStore`] on PostgreSQL: the schema, the listener for wake-ups, and the trait's
//! dispatch to the units of work in [`crate::units::relay`]. The template registry
//! ([`TemplateStore`](crate::TemplateStore)) is in `templates`.
//!
//! Several nodes share one database: every method is one transaction whose decisions are
//! protected by locks (see each unit), and wake-ups are published with `pg_notify` in the
//! same transaction (see `wakeups`), so every node hears of every commit.

mod templates;

use super::db::{self, DEFAULT_POOL_SIZE, Db, Migration, unit};
use super::wakeups::{self, Listener};
use crate::StoreResult;
use crate::relay::{
    Accepted, AccountRecord, ClaimedPreKey, DeviceRecord, NewDevice, NewSubmission, Refusal,
    RelayStore, StoredEnvelope, VerificationOutcome, Wakeup,
};
use crate::units::relay::{directory, envelopes, verification};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::broadcast;
use ventana_core::protocol::SignedKey;
use ventana_core::{
    BusinessClock, DeviceId, MessageId, PhoneNumber, Relationship, UnixTime, WabaId,
};

const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_init",
        sql: include_str!("../../migrations/postgres/relay/0001_init.sql"),
    },
    Migration {
        name: "0002_templates",
        sql: include_str!("../../migrations/postgres/relay/0002_templates.sql"),
    },
    Migration {
        name: "0003_template_envelopes",
        sql: include_str!("../../migrations/postgres/relay/0003_template_envelopes.sql"),
    },
    Migration {
        name: "0004_resends",
        sql: include_str!("../../migrations/postgres/relay/0004_resends.sql"),
    },
];

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

// Each method runs its unit of work in one transaction (`unit!`), or, for a read of one
// statement, on a pooled connection (`read_unit`).
#[async_trait]
impl RelayStore for PgRelayStore {
    fn wakeups(&self) -> broadcast::Receiver<Wakeup> {
        self.listener.subscribe()
    }

    async fn put_verification(
        &self,
        phone: &PhoneNumber,
        code: &str,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> StoreResult<bool> {
        unit!(self.db, |tx| verification::put(
            tx, phone, code, now, expires_at
        )
        .await)
    }

    async fn check_verification(
        &self,
        phone: &PhoneNumber,
        code: &str,
        now: UnixTime,
    ) -> StoreResult<VerificationOutcome> {
        unit!(self.db, |tx| verification::check(tx, phone, code, now)
            .await)
    }

    async fn peek_verification(
        &self,
        phone: &PhoneNumber,
        now: UnixTime,
    ) -> StoreResult<Option<String>> {
        self.db
            .read_unit(async |tx| verification::peek(tx, phone, now).await)
            .await
    }

    async fn ensure_business(&self, waba: &WabaId, sandbox: bool) -> StoreResult<BusinessClock> {
        unit!(self.db, |tx| directory::ensure_business(tx, waba, sandbox)
            .await)
    }

    async fn business_clock(&self, waba: &WabaId) -> StoreResult<Option<BusinessClock>> {
        self.db
            .read_unit(async |tx| directory::business_clock(tx, waba).await)
            .await
    }

    async fn set_business_clock(&self, waba: &WabaId, clock: BusinessClock) -> StoreResult<()> {
        unit!(self.db, |tx| directory::set_business_clock(tx, waba, clock)
            .await)
    }

    async fn account(&self, address: &PhoneNumber) -> StoreResult<Option<AccountRecord>> {
        self.db
            .read_unit(async |tx| directory::account(tx, address).await)
            .await
    }

    async fn add_device(&self, device: NewDevice) -> StoreResult<DeviceId> {
        unit!(self.db, |tx| directory::add_device(tx, &device).await)
    }

    async fn device_by_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<(AccountRecord, DeviceId)>> {
        self.db
            .read_unit(async |tx| directory::device_by_token(tx, token_hash).await)
            .await
    }

    async fn devices(&self, account: &PhoneNumber) -> StoreResult<Vec<DeviceRecord>> {
        self.db
            .read_unit(async |tx| directory::devices(tx, account).await)
            .await
    }

    async fn upload_keys(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
        one_time_keys: &[SignedKey],
        fallback_key: Option<&SignedKey>,
    ) -> StoreResult<u64> {
        unit!(self.db, |tx| directory::upload_keys(
            tx,
            account,
            device,
            one_time_keys,
            fallback_key
        )
        .await)
    }

    async fn one_time_key_count(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
    ) -> StoreResult<u64> {
        self.db
            .read_unit(async |tx| directory::unclaimed_count(tx, account, device).await)
            .await
    }

    async fn claim_pre_keys(
        &self,
        account: &PhoneNumber,
        only: Option<&[DeviceId]>,
    ) -> StoreResult<Vec<ClaimedPreKey>> {
        unit!(self.db, |tx| directory::claim_pre_keys(tx, account, only)
            .await)
    }

    async fn accept(&self, submission: NewSubmission) -> StoreResult<Result<Accepted, Refusal>> {
        unit!(self.db, |tx| envelopes::accept(tx, &submission).await)
    }

    async fn submitted(&self, sender: &PhoneNumber, id: &MessageId) -> StoreResult<bool> {
        self.db
            .read_unit(async |tx| envelopes::submitted(tx, sender, id).await)
            .await
    }

    async fn pending(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEnvelope>> {
        self.db
            .read_unit(async |tx| envelopes::pending(tx, account, device, after_seq, limit).await)
            .await
    }

    async fn ack(&self, account: &PhoneNumber, device: DeviceId, seqs: &[u64]) -> StoreResult<u64> {
        unit!(self.db, |tx| envelopes::ack(tx, account, device, seqs)
            .await)
    }

    async fn relationship(
        &self,
        business: &PhoneNumber,
        user: &PhoneNumber,
    ) -> StoreResult<Option<Relationship>> {
        self.db
            .read_unit(async |tx| envelopes::relationship_between(tx, business, user).await)
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db
            .read_unit(async |tx| directory::ping(tx).await)
            .await
    }

    async fn set_blocked(
        &self,
        user: &PhoneNumber,
        business: &PhoneNumber,
        blocked: bool,
        at: UnixTime,
    ) -> StoreResult<()> {
        unit!(self.db, |tx| envelopes::set_blocked(
            tx, user, business, blocked, at
        )
        .await)
    }
}
