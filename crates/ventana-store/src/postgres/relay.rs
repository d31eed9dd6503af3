//! [`RelayStore`] on PostgreSQL. This module holds the store and the trait's dispatch; the
//! work is in `verification` (one-time codes), `directory` (business clocks, accounts,
//! devices, keys) and `envelopes` (the rules at acceptance, the queues, blocking). The
//! template registry ([`TemplateStore`](crate::TemplateStore)) is in `templates`.
//!
//! Several nodes share one database: every method is one transaction whose decisions are
//! protected by locks (see each function), and wake-ups are published with `pg_notify` in
//! the same transaction (see `wakeups`), so every node hears of every commit.

mod directory;
mod templates;
mod verification;

use super::db::{self, DEFAULT_POOL_SIZE, Db, Migration, TxResult, transaction, unit};
use super::wakeups::{self, Listener, notify};
use crate::StoreResult;
use crate::relay::{
    Accepted, AccountRecord, ClaimedPreKey, DeviceRecord, NewDevice, NewSubmission, Refusal,
    RelayStore, StoredEnvelope, VerificationOutcome, WakeReason, Wakeup,
};
use crate::units::relay::envelopes;
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
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
    /// Where this schema's wake-ups are published and listened for.
    channel: Arc<str>,
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
        let listener = Listener::start(config, channel.clone()).await?;
        Ok(Self {
            db,
            channel: channel.into(),
            listener: Arc::new(listener),
        })
    }
}

/// Publishes, in the current transaction, a wake-up of each of `devices` of `account`.
async fn wake(
    tx: &impl GenericClient,
    channel: &str,
    account: &PhoneNumber,
    devices: impl IntoIterator<Item = DeviceId>,
    reason: WakeReason,
) -> TxResult<()> {
    let wakeups = devices.into_iter().map(|device| Wakeup {
        account: account.clone(),
        device,
        reason,
    });
    notify(tx, channel, wakeups).await
}

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
        transaction!(self.db, |tx| verification::put(
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
        transaction!(self.db, |tx| verification::check(tx, phone, code, now)
            .await)
    }

    async fn peek_verification(
        &self,
        phone: &PhoneNumber,
        now: UnixTime,
    ) -> StoreResult<Option<String>> {
        self.db
            .read(async |c| verification::peek(c, phone, now).await)
            .await
    }

    async fn ensure_business(&self, waba: &WabaId, sandbox: bool) -> StoreResult<BusinessClock> {
        transaction!(self.db, |tx| directory::ensure_business(tx, waba, sandbox)
            .await)
    }

    async fn business_clock(&self, waba: &WabaId) -> StoreResult<Option<BusinessClock>> {
        self.db
            .read(async |c| directory::business_clock(c, waba).await)
            .await
    }

    async fn set_business_clock(&self, waba: &WabaId, clock: BusinessClock) -> StoreResult<()> {
        transaction!(self.db, |tx| directory::set_business_clock(tx, waba, clock)
            .await)
    }

    async fn account(&self, address: &PhoneNumber) -> StoreResult<Option<AccountRecord>> {
        self.db
            .read(async |c| directory::account(c, address).await)
            .await
    }

    async fn add_device(&self, device: NewDevice) -> StoreResult<DeviceId> {
        transaction!(self.db, |tx| directory::add_device(tx, &device).await)
    }

    async fn device_by_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<(AccountRecord, DeviceId)>> {
        self.db
            .read(async |c| directory::device_by_token(c, token_hash).await)
            .await
    }

    async fn devices(&self, account: &PhoneNumber) -> StoreResult<Vec<DeviceRecord>> {
        self.db
            .read(async |c| directory::devices(c, account).await)
            .await
    }

    async fn upload_keys(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
        one_time_keys: &[SignedKey],
        fallback_key: Option<&SignedKey>,
    ) -> StoreResult<u64> {
        transaction!(self.db, |tx| {
            directory::add_one_time_keys(tx, account, device, one_time_keys).await?;
            if let Some(key) = fallback_key {
                directory::replace_fallback_key(tx, account, device, key).await?;
            }
            directory::unclaimed_count(tx, account, device).await
        })
    }

    async fn one_time_key_count(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
    ) -> StoreResult<u64> {
        self.db
            .read(async |c| directory::unclaimed_count(c, account, device).await)
            .await
    }

    async fn claim_pre_keys(
        &self,
        account: &PhoneNumber,
        only: Option<&[DeviceId]>,
    ) -> StoreResult<Vec<ClaimedPreKey>> {
        transaction!(self.db, |tx| {
            let claimed = directory::claim_pre_keys(tx, account, only).await?;
            let devices: Vec<DeviceId> = claimed.iter().map(|c| c.device.device_id).collect();
            wake(tx, &self.channel, account, devices, WakeReason::KeysClaimed).await?;
            Ok(claimed)
        })
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
            .read(async |c| {
                db::query_one(c, "SELECT 1", &[]).await?;
                Ok(())
            })
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
