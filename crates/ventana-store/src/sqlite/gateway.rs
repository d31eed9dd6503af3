//! [`GatewayStore`] on SQLite: the business side's tables, in the endpoint's own file so a
//! webhook job commits in the same transaction as the message it reports. The units are in
//! [`crate::units::gateway`].

use super::endpoint::SqliteEndpointStore;
use crate::StoreResult;
use crate::endpoint::{
    AccessTokenRecord, BusinessRecord, GatewayStore, PhoneNumberRecord, WebhookJob,
};
use crate::idempotency::{ClaimOutcome, IdempotencyRecord, NewClaim, StoredResponse};
use crate::units::gateway::{self as units, idempotency};
use async_trait::async_trait;
use tokio::sync::broadcast;
use ventana_core::{IdempotencyKey, PhoneNumber, PhoneNumberId, UnixTime, WabaId};

#[async_trait]
impl GatewayStore for SqliteEndpointStore {
    async fn create_business(&self, b: BusinessRecord) -> StoreResult<()> {
        self.db
            .unit(async move |tx| units::create_business(tx, &b).await)
            .await
    }

    async fn business(&self, waba: &WabaId) -> StoreResult<Option<BusinessRecord>> {
        let waba = waba.clone();
        self.db
            .read_unit(async move |tx| units::business(tx, &waba).await)
            .await
    }

    async fn businesses(&self) -> StoreResult<Vec<BusinessRecord>> {
        self.db
            .read_unit_blocking(async move |tx| units::businesses(tx).await)
            .await
    }

    async fn add_phone_number(&self, n: PhoneNumberRecord) -> StoreResult<()> {
        self.db
            .unit(async move |tx| units::add_phone_number(tx, &n).await)
            .await
    }

    async fn phone_number(&self, id: &PhoneNumberId) -> StoreResult<Option<PhoneNumberRecord>> {
        let id = id.clone();
        self.db
            .read_unit(async move |tx| units::phone_number(tx, &id).await)
            .await
    }

    async fn phone_number_by_address(
        &self,
        address: &PhoneNumber,
    ) -> StoreResult<Option<PhoneNumberRecord>> {
        let address = address.clone();
        self.db
            .read_unit(async move |tx| units::phone_number_by_address(tx, &address).await)
            .await
    }

    async fn phone_numbers(&self) -> StoreResult<Vec<PhoneNumberRecord>> {
        self.db
            .read_unit_blocking(async move |tx| units::phone_numbers(tx).await)
            .await
    }

    fn number_changes(&self) -> Option<broadcast::Receiver<()>> {
        // One process owns the file: every number is added through this very node.
        None
    }

    async fn add_token(&self, t: AccessTokenRecord) -> StoreResult<()> {
        self.db
            .unit(async move |tx| units::add_token(tx, &t).await)
            .await
    }

    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<AccessTokenRecord>> {
        let token_hash = token_hash.to_owned();
        self.db
            .read_unit(async move |tx| units::token_by_hash(tx, &token_hash).await)
            .await
    }

    async fn tokens(&self, waba: &WabaId) -> StoreResult<Vec<AccessTokenRecord>> {
        let waba = waba.clone();
        self.db
            .read_unit_blocking(async move |tx| units::tokens(tx, &waba).await)
            .await
    }

    async fn revoke_token(&self, waba: &WabaId, id: &str, at: UnixTime) -> StoreResult<bool> {
        let (waba, id) = (waba.clone(), id.to_owned());
        self.db
            .unit(async move |tx| units::revoke_token(tx, &waba, &id, at).await)
            .await
    }

    async fn lease_webhooks(
        &self,
        node: &str,
        now: UnixTime,
        lease_secs: i64,
        limit: u32,
    ) -> StoreResult<Vec<WebhookJob>> {
        let node = node.to_owned();
        self.db
            .unit(async move |tx| units::lease_webhooks(tx, &node, now, lease_secs, limit).await)
            .await
    }

    async fn webhook_delivered(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.db
            .unit(async move |tx| units::webhook_delivered(tx, &id).await)
            .await
    }

    async fn webhook_retry(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: UnixTime,
        last_error: &str,
    ) -> StoreResult<()> {
        let (id, last_error) = (id.to_owned(), last_error.to_owned());
        self.db
            .unit(async move |tx| {
                units::webhook_retry(tx, &id, attempts, next_attempt_at, &last_error).await
            })
            .await
    }

    async fn next_webhook_due(&self) -> StoreResult<Option<UnixTime>> {
        self.db
            .read_unit(async move |tx| units::next_webhook_due(tx).await)
            .await
    }

    async fn acquire_endpoint(
        &self,
        owner: &PhoneNumber,
        node: &str,
        now: UnixTime,
        ttl_secs: i64,
    ) -> StoreResult<bool> {
        let (owner, node) = (owner.clone(), node.to_owned());
        self.db
            .unit(async move |tx| units::acquire_endpoint(tx, &owner, &node, now, ttl_secs).await)
            .await
    }

    async fn release_endpoint(&self, owner: &PhoneNumber, node: &str) -> StoreResult<()> {
        let (owner, node) = (owner.clone(), node.to_owned());
        self.db
            .unit(async move |tx| units::release_endpoint(tx, &owner, &node).await)
            .await
    }

    async fn claim_idempotency_key(
        &self,
        c: NewClaim,
        expired_before: UnixTime,
    ) -> StoreResult<ClaimOutcome> {
        self.db
            .unit(async move |tx| idempotency::claim(tx, &c, expired_before).await)
            .await
    }

    async fn idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let (id, key) = (phone_number_id.clone(), key.clone());
        self.db
            .read_unit(async move |tx| idempotency::key(tx, &id, &key).await)
            .await
    }

    async fn take_over_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        now: UnixTime,
        claimed_until: UnixTime,
    ) -> StoreResult<bool> {
        let (id, key) = (phone_number_id.clone(), key.clone());
        self.db
            .unit(async move |tx| {
                idempotency::take_over(tx, &id, &key, attempt, now, claimed_until).await
            })
            .await
    }

    async fn complete_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        response: StoredResponse,
    ) -> StoreResult<bool> {
        let (id, key) = (phone_number_id.clone(), key.clone());
        self.db
            .unit(async move |tx| idempotency::complete(tx, &id, &key, attempt, &response).await)
            .await
    }

    async fn release_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let (id, key) = (phone_number_id.clone(), key.clone());
        self.db
            .unit(async move |tx| idempotency::release(tx, &id, &key, attempt, now).await)
            .await
    }

    async fn prune_idempotency_keys(&self, created_before: UnixTime) -> StoreResult<u64> {
        self.db
            .unit(async move |tx| idempotency::prune(tx, created_before).await)
            .await
    }
}
