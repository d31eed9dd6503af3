//! [`RelayStore`] on SQLite: the file, its schema, and the trait's dispatch to the units of
//! work in [`crate::units::relay`]. The template registry
//! ([`TemplateStore`](crate::TemplateStore)) is in [`templates`].

mod templates;

use super::db::{Db, Migration};
use crate::StoreResult;
use crate::relay::{
    Accepted, AccountRecord, ClaimedPreKey, DeviceRecord, NewDevice, NewSubmission, Refusal,
    RelayStore, StoredEnvelope, VerificationOutcome, Wakeup,
};
use crate::units::relay::{directory, envelopes, verification};
use async_trait::async_trait;
use std::path::Path;
use tokio::sync::broadcast;
use ventana_core::protocol::SignedKey;
use ventana_core::{BusinessClock, DeviceId, MessageId, PhoneNumber, UnixTime, WabaId};

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

// Each method runs its unit of work on the writer thread (`unit`) or a read connection
// (`read_unit`); what it needs is moved into the closure, which runs on another thread.
#[async_trait]
impl RelayStore for SqliteRelayStore {
    fn wakeups(&self) -> broadcast::Receiver<Wakeup> {
        self.db.wakeups()
    }

    async fn put_verification(
        &self,
        phone: &PhoneNumber,
        code: &str,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> StoreResult<bool> {
        let (phone, code) = (phone.clone(), code.to_owned());
        self.db
            .unit(async move |tx| verification::put(tx, &phone, &code, now, expires_at).await)
            .await
    }

    async fn check_verification(
        &self,
        phone: &PhoneNumber,
        code: &str,
        now: UnixTime,
    ) -> StoreResult<VerificationOutcome> {
        let (phone, code) = (phone.clone(), code.to_owned());
        self.db
            .unit(async move |tx| verification::check(tx, &phone, &code, now).await)
            .await
    }

    async fn peek_verification(
        &self,
        phone: &PhoneNumber,
        now: UnixTime,
    ) -> StoreResult<Option<String>> {
        let phone = phone.clone();
        self.db
            .read_unit(async move |tx| verification::peek(tx, &phone, now).await)
            .await
    }

    async fn ensure_business(&self, waba: &WabaId, sandbox: bool) -> StoreResult<BusinessClock> {
        let waba = waba.clone();
        self.db
            .unit(async move |tx| directory::ensure_business(tx, &waba, sandbox).await)
            .await
    }

    async fn business_clock(&self, waba: &WabaId) -> StoreResult<Option<BusinessClock>> {
        let waba = waba.clone();
        self.db
            .read_unit(async move |tx| directory::business_clock(tx, &waba).await)
            .await
    }

    async fn set_business_clock(&self, waba: &WabaId, clock: BusinessClock) -> StoreResult<()> {
        let waba = waba.clone();
        self.db
            .unit(async move |tx| directory::set_business_clock(tx, &waba, clock).await)
            .await
    }

    async fn account(&self, address: &PhoneNumber) -> StoreResult<Option<AccountRecord>> {
        let address = address.clone();
        self.db
            .read_unit(async move |tx| directory::account(tx, &address).await)
            .await
    }

    async fn add_device(&self, device: NewDevice) -> StoreResult<DeviceId> {
        self.db
            .unit(async move |tx| directory::add_device(tx, &device).await)
            .await
    }

    async fn device_by_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<(AccountRecord, DeviceId)>> {
        let token_hash = token_hash.to_owned();
        self.db
            .read_unit(async move |tx| directory::device_by_token(tx, &token_hash).await)
            .await
    }

    async fn devices(&self, account: &PhoneNumber) -> StoreResult<Vec<DeviceRecord>> {
        let account = account.clone();
        self.db
            .read_unit(async move |tx| directory::devices(tx, &account).await)
            .await
    }

    async fn upload_keys(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
        one_time_keys: &[SignedKey],
        fallback_key: Option<&SignedKey>,
    ) -> StoreResult<u64> {
        let account = account.clone();
        let (one_time_keys, fallback_key) = (one_time_keys.to_vec(), fallback_key.cloned());
        self.db
            .unit(async move |tx| {
                let fallback_key = fallback_key.as_ref();
                directory::upload_keys(tx, &account, device, &one_time_keys, fallback_key).await
            })
            .await
    }

    async fn one_time_key_count(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
    ) -> StoreResult<u64> {
        let account = account.clone();
        self.db
            .read_unit(async move |tx| directory::unclaimed_count(tx, &account, device).await)
            .await
    }

    async fn claim_pre_keys(
        &self,
        account: &PhoneNumber,
        only: Option<&[DeviceId]>,
    ) -> StoreResult<Vec<ClaimedPreKey>> {
        let account = account.clone();
        let only = only.map(<[DeviceId]>::to_vec);
        self.db
            .unit(async move |tx| directory::claim_pre_keys(tx, &account, only.as_deref()).await)
            .await
    }

    async fn accept(&self, submission: NewSubmission) -> StoreResult<Result<Accepted, Refusal>> {
        self.db
            .unit(async move |tx| envelopes::accept(tx, &submission).await)
            .await
    }

    async fn submitted(&self, sender: &PhoneNumber, id: &MessageId) -> StoreResult<bool> {
        let (sender, id) = (sender.clone(), id.clone());
        self.db
            .read_unit(async move |tx| envelopes::submitted(tx, &sender, &id).await)
            .await
    }

    async fn pending(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEnvelope>> {
        let account = account.clone();
        self.db
            .read_unit(async move |tx| {
                envelopes::pending(tx, &account, device, after_seq, limit).await
            })
            .await
    }

    async fn ack(&self, account: &PhoneNumber, device: DeviceId, seqs: &[u64]) -> StoreResult<u64> {
        let account = account.clone();
        let seqs = seqs.to_vec();
        self.db
            .unit(async move |tx| envelopes::ack(tx, &account, device, &seqs).await)
            .await
    }

    async fn relationship(
        &self,
        business: &PhoneNumber,
        user: &PhoneNumber,
    ) -> StoreResult<Option<ventana_core::Relationship>> {
        let (business, user) = (business.clone(), user.clone());
        self.db
            .read_unit(async move |tx| envelopes::relationship_between(tx, &business, &user).await)
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
        let (user, business) = (user.clone(), business.clone());
        self.db
            .unit(async move |tx| envelopes::set_blocked(tx, &user, &business, blocked, at).await)
            .await
    }
}
