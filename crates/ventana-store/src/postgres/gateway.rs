//! [`GatewayStore`] on PostgreSQL: the business side's tables, in the endpoint's own schema so
//! a webhook job commits in the same transaction as the message it reports. The units, with
//! the locks their decisions need, are in [`crate::units::gateway`].

use super::db::unit;
use super::endpoint::PgEndpointStore;
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
impl GatewayStore for PgEndpointStore {
    async fn create_business(&self, b: BusinessRecord) -> StoreResult<()> {
        unit!(self.db, |tx| units::create_business(tx, &b).await)
    }

    async fn business(&self, waba: &WabaId) -> StoreResult<Option<BusinessRecord>> {
        self.db
            .read_unit(async |tx| units::business(tx, waba).await)
            .await
    }

    async fn businesses(&self) -> StoreResult<Vec<BusinessRecord>> {
        self.db
            .read_unit(async |tx| units::businesses(tx).await)
            .await
    }

    async fn add_phone_number(&self, n: PhoneNumberRecord) -> StoreResult<()> {
        unit!(self.db, |tx| units::add_phone_number(tx, &n).await)
    }

    async fn phone_number(&self, id: &PhoneNumberId) -> StoreResult<Option<PhoneNumberRecord>> {
        self.db
            .read_unit(async |tx| units::phone_number(tx, id).await)
            .await
    }

    async fn phone_number_by_address(
        &self,
        address: &PhoneNumber,
    ) -> StoreResult<Option<PhoneNumberRecord>> {
        self.db
            .read_unit(async |tx| units::phone_number_by_address(tx, address).await)
            .await
    }

    async fn phone_numbers(&self) -> StoreResult<Vec<PhoneNumberRecord>> {
        self.db
            .read_unit(async |tx| units::phone_numbers(tx).await)
            .await
    }

    fn number_changes(&self) -> Option<broadcast::Receiver<()>> {
        Some(self.numbers.subscribe())
    }

    async fn add_token(&self, t: AccessTokenRecord) -> StoreResult<()> {
        unit!(self.db, |tx| units::add_token(tx, &t).await)
    }

    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<AccessTokenRecord>> {
        self.db
            .read_unit(async |tx| units::token_by_hash(tx, token_hash).await)
            .await
    }

    async fn tokens(&self, waba: &WabaId) -> StoreResult<Vec<AccessTokenRecord>> {
        self.db
            .read_unit(async |tx| units::tokens(tx, waba).await)
            .await
    }

    async fn revoke_token(&self, waba: &WabaId, id: &str, at: UnixTime) -> StoreResult<bool> {
        unit!(self.db, |tx| units::revoke_token(tx, waba, id, at).await)
    }

    async fn lease_webhooks(
        &self,
        node: &str,
        now: UnixTime,
        lease_secs: i64,
        limit: u32,
    ) -> StoreResult<Vec<WebhookJob>> {
        unit!(self.db, |tx| units::lease_webhooks(
            tx, node, now, lease_secs, limit
        )
        .await)
    }

    async fn webhook_delivered(&self, id: &str) -> StoreResult<()> {
        unit!(self.db, |tx| units::webhook_delivered(tx, id).await)
    }

    async fn webhook_retry(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: UnixTime,
        last_error: &str,
    ) -> StoreResult<()> {
        unit!(self.db, |tx| units::webhook_retry(
            tx,
            id,
            attempts,
            next_attempt_at,
            last_error
        )
        .await)
    }

    async fn next_webhook_due(&self) -> StoreResult<Option<UnixTime>> {
        self.db
            .read_unit(async |tx| units::next_webhook_due(tx).await)
            .await
    }

    async fn acquire_endpoint(
        &self,
        owner: &PhoneNumber,
        node: &str,
        now: UnixTime,
        ttl_secs: i64,
    ) -> StoreResult<bool> {
        unit!(self.db, |tx| units::acquire_endpoint(
            tx, owner, node, now, ttl_secs
        )
        .await)
    }

    async fn release_endpoint(&self, owner: &PhoneNumber, node: &str) -> StoreResult<()> {
        unit!(self.db, |tx| units::release_endpoint(tx, owner, node).await)
    }

    async fn claim_idempotency_key(
        &self,
        c: NewClaim,
        expired_before: UnixTime,
    ) -> StoreResult<ClaimOutcome> {
        unit!(self.db, |tx| idempotency::claim(tx, &c, expired_before)
            .await)
    }

    async fn idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        self.db
            .read_unit(async |tx| idempotency::key(tx, phone_number_id, key).await)
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
        unit!(self.db, |tx| idempotency::take_over(
            tx,
            phone_number_id,
            key,
            attempt,
            now,
            claimed_until
        )
        .await)
    }

    async fn complete_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        response: StoredResponse,
    ) -> StoreResult<bool> {
        unit!(self.db, |tx| idempotency::complete(
            tx,
            phone_number_id,
            key,
            attempt,
            &response
        )
        .await)
    }

    async fn release_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        now: UnixTime,
    ) -> StoreResult<bool> {
        unit!(self.db, |tx| idempotency::release(
            tx,
            phone_number_id,
            key,
            attempt,
            now
        )
        .await)
    }

    async fn prune_idempotency_keys(&self, created_before: UnixTime) -> StoreResult<u64> {
        unit!(self.db, |tx| idempotency::prune(tx, created_before).await)
    }
}
