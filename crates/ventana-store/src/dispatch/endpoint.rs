//! The endpoint's store traits, [`EndpointStore`](crate::EndpointStore),
//! [`GatewayStore`](crate::GatewayStore), [`WebhookStore`](crate::WebhookStore) and
//! [`ScheduleStore`](crate::ScheduleStore),
//! implemented once for every backend (see [`super`]). The units of work are in
//! [`crate::units::endpoint`], [`crate::units::gateway`] and [`crate::units::schedules`]. A
//! backend's store type invokes the macros with a field `db` offering `unit`, `read_unit` and
//! `read_unit_blocking`, and an inherent `subscribe_numbers()` (the "a number was added"
//! signal, if other nodes can add numbers).

/// `impl EndpointStore for $store`.
macro_rules! endpoint_store {
    ($store:ty) => {
        const _: () = {
            use ventana_core::{DeviceId, MessageId, PhoneNumber};
            use $crate::StoreResult;
            use $crate::endpoint::{
                AppRecord, EndpointStore, IdentityRecord, InboundCommit, InboundOutcome,
                MessageRecord, OutboundCommit, OutboxRow, SessionRecord,
            };
            use $crate::units::endpoint as units;

            #[::async_trait::async_trait]
            impl EndpointStore for $store {
                async fn identity(
                    &self,
                    owner: &PhoneNumber,
                ) -> StoreResult<Option<IdentityRecord>> {
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

                async fn save_account(
                    &self,
                    owner: &PhoneNumber,
                    account_sealed: Vec<u8>,
                ) -> StoreResult<()> {
                    let owner = owner.clone();
                    self.db
                        .unit(async move |tx| {
                            units::save_account(tx, &owner, &account_sealed).await
                        })
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
                        .read_unit(async move |tx| {
                            units::sessions(tx, &owner, &peer, peer_device).await
                        })
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
                        .read_unit(async move |tx| {
                            units::is_processed(tx, &owner, &from, &id).await
                        })
                        .await
                }

                async fn commit_inbound(
                    &self,
                    commit: InboundCommit,
                ) -> StoreResult<InboundOutcome> {
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

                async fn messages(
                    &self,
                    owner: &PhoneNumber,
                    limit: u32,
                ) -> StoreResult<Vec<MessageRecord>> {
                    let owner = owner.clone();
                    self.db
                        .read_unit(async move |tx| units::messages(tx, &owner, limit).await)
                        .await
                }

                async fn apply(
                    &self,
                    owner: &PhoneNumber,
                    records: Vec<AppRecord>,
                ) -> StoreResult<()> {
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
                            units::cache_template(tx, &owner, &business, &id, version, &definition)
                                .await
                        })
                        .await
                }
            }
        };
    };
}

pub(crate) use endpoint_store;

/// `impl GatewayStore for $store`.
macro_rules! gateway_store {
    ($store:ty) => {
        const _: () = {
            use tokio::sync::broadcast;
            use ventana_core::{IdempotencyKey, PhoneNumber, PhoneNumberId, UnixTime, WabaId};
            use $crate::StoreResult;
            use $crate::endpoint::{
                AccessTokenRecord, BusinessRecord, GatewayStore, PhoneNumberRecord,
            };
            use $crate::idempotency::{ClaimOutcome, IdempotencyRecord, NewClaim, StoredResponse};
            use $crate::units::gateway::{self as units, idempotency};

            #[::async_trait::async_trait]
            impl GatewayStore for $store {
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

                async fn phone_number(
                    &self,
                    id: &PhoneNumberId,
                ) -> StoreResult<Option<PhoneNumberRecord>> {
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
                        .read_unit(async move |tx| {
                            units::phone_number_by_address(tx, &address).await
                        })
                        .await
                }

                async fn phone_numbers(&self) -> StoreResult<Vec<PhoneNumberRecord>> {
                    self.db
                        .read_unit_blocking(async move |tx| units::phone_numbers(tx).await)
                        .await
                }

                fn number_changes(&self) -> Option<broadcast::Receiver<()>> {
                    self.subscribe_numbers()
                }

                async fn add_token(&self, t: AccessTokenRecord) -> StoreResult<()> {
                    self.db
                        .unit(async move |tx| units::add_token(tx, &t).await)
                        .await
                }

                async fn token_by_hash(
                    &self,
                    token_hash: &str,
                ) -> StoreResult<Option<AccessTokenRecord>> {
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

                async fn revoke_token(
                    &self,
                    waba: &WabaId,
                    id: &str,
                    at: UnixTime,
                ) -> StoreResult<bool> {
                    let (waba, id) = (waba.clone(), id.to_owned());
                    self.db
                        .unit(async move |tx| units::revoke_token(tx, &waba, &id, at).await)
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
                        .unit(async move |tx| {
                            units::acquire_endpoint(tx, &owner, &node, now, ttl_secs).await
                        })
                        .await
                }

                async fn release_endpoint(
                    &self,
                    owner: &PhoneNumber,
                    node: &str,
                ) -> StoreResult<()> {
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
                        .unit(async move |tx| {
                            idempotency::complete(tx, &id, &key, attempt, &response).await
                        })
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
                        .unit(async move |tx| {
                            idempotency::release(tx, &id, &key, attempt, now).await
                        })
                        .await
                }

                async fn prune_idempotency_keys(
                    &self,
                    created_before: UnixTime,
                ) -> StoreResult<u64> {
                    self.db
                        .unit(async move |tx| idempotency::prune(tx, created_before).await)
                        .await
                }
            }
        };
    };
}

pub(crate) use gateway_store;

/// `impl WebhookStore for $store`.
macro_rules! webhook_store {
    ($store:ty) => {
        const _: () = {
            use ventana_core::{MessageId, PhoneNumber, PhoneNumberId};
            use ventana_core::{UnixTime, WabaId};
            use $crate::StoreResult;
            use $crate::units::gateway::webhooks as units;
            use $crate::webhook::{
                CallbackChange, LeaseRequest, LoggedAttempt, ReplayFrom, WebhookAttempt,
                WebhookEvent, WebhookJob, WebhookOutcome, WebhookRouting, WebhookState,
                WebhookStore,
            };

            #[::async_trait::async_trait]
            impl WebhookStore for $store {
                async fn lease_webhooks(
                    &self,
                    request: LeaseRequest<'_>,
                ) -> StoreResult<Vec<WebhookJob>> {
                    let (node, skip) = (request.node.to_owned(), request.skip.to_vec());
                    let (now, lease_secs, limit) = (request.now, request.lease_secs, request.limit);
                    let per_route = request.per_route;
                    self.db
                        .unit(async move |tx| {
                            let request = LeaseRequest {
                                node: &node,
                                now,
                                lease_secs,
                                limit,
                                per_route,
                                skip: &skip,
                            };
                            units::lease_webhooks(tx, &request).await
                        })
                        .await
                }

                async fn webhook_routing(
                    &self,
                    waba: &WabaId,
                    number: Option<&PhoneNumberId>,
                ) -> StoreResult<Option<WebhookRouting>> {
                    let (waba, number) = (waba.clone(), number.cloned());
                    self.db
                        .read_unit(async move |tx| {
                            units::webhook_routing(tx, &waba, number.as_ref()).await
                        })
                        .await
                }

                async fn change_callback(
                    &self,
                    waba: &WabaId,
                    change: CallbackChange,
                ) -> StoreResult<bool> {
                    let waba = waba.clone();
                    self.db
                        .unit(async move |tx| units::change_callback(tx, &waba, &change).await)
                        .await
                }

                async fn save_callback_data(
                    &self,
                    owner: &PhoneNumber,
                    message: &MessageId,
                    data_sealed: Vec<u8>,
                    at: UnixTime,
                ) -> StoreResult<()> {
                    let (owner, message) = (owner.clone(), message.clone());
                    self.db
                        .unit(async move |tx| {
                            units::save_callback_data(tx, &owner, &message, &data_sealed, at).await
                        })
                        .await
                }

                async fn callback_data(
                    &self,
                    owner: &PhoneNumber,
                    message: &MessageId,
                ) -> StoreResult<Option<Vec<u8>>> {
                    let (owner, message) = (owner.clone(), message.clone());
                    self.db
                        .read_unit(async move |tx| units::callback_data(tx, &owner, &message).await)
                        .await
                }

                async fn release_webhooks(&self, node: &str, ids: &[String]) -> StoreResult<()> {
                    let (node, ids) = (node.to_owned(), ids.to_vec());
                    self.db
                        .unit(async move |tx| units::release_webhooks(tx, &node, &ids).await)
                        .await
                }

                async fn release_node_webhooks(&self, node: &str) -> StoreResult<u64> {
                    let node = node.to_owned();
                    self.db
                        .unit(async move |tx| units::release_node_webhooks(tx, &node).await)
                        .await
                }

                async fn settle_webhook(
                    &self,
                    attempt: WebhookAttempt,
                    attempts: u32,
                    outcome: WebhookOutcome,
                ) -> StoreResult<()> {
                    self.db
                        .unit(async move |tx| {
                            units::settle_webhook(tx, &attempt, attempts, outcome).await
                        })
                        .await
                }

                async fn next_webhook_due(
                    &self,
                    now: UnixTime,
                    skip: &[String],
                ) -> StoreResult<Option<UnixTime>> {
                    let skip = skip.to_vec();
                    self.db
                        .read_unit(async move |tx| units::next_webhook_due(tx, now, &skip).await)
                        .await
                }

                async fn webhook_log(
                    &self,
                    waba: &WabaId,
                    before: Option<i64>,
                    limit: u32,
                ) -> StoreResult<Vec<LoggedAttempt>> {
                    let waba = waba.clone();
                    self.db
                        .read_unit(async move |tx| {
                            units::webhook_log(tx, &waba, before, limit).await
                        })
                        .await
                }

                async fn webhook_events(
                    &self,
                    waba: &WabaId,
                    state: WebhookState,
                    limit: u32,
                ) -> StoreResult<Vec<WebhookEvent>> {
                    let waba = waba.clone();
                    self.db
                        .read_unit(async move |tx| {
                            units::webhook_events(tx, &waba, state, limit).await
                        })
                        .await
                }

                async fn replay_webhooks(
                    &self,
                    waba: &WabaId,
                    from: ReplayFrom,
                    now: UnixTime,
                ) -> StoreResult<Option<u64>> {
                    let waba = waba.clone();
                    self.db
                        .unit(async move |tx| units::replay_webhooks(tx, &waba, &from, now).await)
                        .await
                }

                async fn redrive_webhooks(&self, waba: &WabaId, now: UnixTime) -> StoreResult<u64> {
                    let waba = waba.clone();
                    self.db
                        .unit(async move |tx| units::redrive_webhooks(tx, &waba, now).await)
                        .await
                }

                async fn prune_webhooks(
                    &self,
                    delivered_before: UnixTime,
                    dead_before: UnixTime,
                ) -> StoreResult<u64> {
                    self.db
                        .unit(async move |tx| {
                            units::prune_webhooks(tx, delivered_before, dead_before).await
                        })
                        .await
                }
            }
        };
    };
}

pub(crate) use webhook_store;

/// `impl ScheduleStore for $store`.
macro_rules! schedule_store {
    ($store:ty) => {
        const _: () = {
            use ventana_core::{MessageId, PhoneNumber, UnixTime, WabaId};
            use $crate::StoreResult;
            use $crate::endpoint::WebhookJob;
            use $crate::schedule::{CancelOutcome, ScheduleRecord, ScheduleState, ScheduleStore};
            use $crate::units::schedules as units;

            #[::async_trait::async_trait]
            impl ScheduleStore for $store {
                async fn create_schedule(&self, r: ScheduleRecord) -> StoreResult<()> {
                    self.db
                        .unit(async move |tx| units::create(tx, &r).await)
                        .await
                }

                async fn schedule(
                    &self,
                    owner: &PhoneNumber,
                    id: &MessageId,
                ) -> StoreResult<Option<ScheduleRecord>> {
                    let (owner, id) = (owner.clone(), id.clone());
                    self.db
                        .read_unit(async move |tx| units::schedule(tx, &owner, &id).await)
                        .await
                }

                async fn list_schedules(
                    &self,
                    owner: &PhoneNumber,
                    state: Option<ScheduleState>,
                    after: Option<(UnixTime, MessageId)>,
                    limit: u32,
                ) -> StoreResult<Vec<ScheduleRecord>> {
                    let owner = owner.clone();
                    self.db
                        .read_unit(async move |tx| {
                            units::list(tx, &owner, state, after, limit).await
                        })
                        .await
                }

                async fn cancel_schedule(
                    &self,
                    owner: &PhoneNumber,
                    id: &MessageId,
                    now: UnixTime,
                ) -> StoreResult<CancelOutcome> {
                    let (owner, id) = (owner.clone(), id.clone());
                    self.db
                        .unit(async move |tx| units::cancel(tx, &owner, &id, now).await)
                        .await
                }

                async fn claim_due_schedules(
                    &self,
                    owner: &PhoneNumber,
                    due_by: UnixTime,
                    node: &str,
                    now: UnixTime,
                    stale_before: UnixTime,
                    limit: u32,
                ) -> StoreResult<Vec<ScheduleRecord>> {
                    let (owner, node) = (owner.clone(), node.to_owned());
                    self.db
                        .unit(async move |tx| {
                            units::claim_due(tx, &owner, due_by, &node, now, stale_before, limit)
                                .await
                        })
                        .await
                }

                async fn finish_schedule(
                    &self,
                    owner: &PhoneNumber,
                    id: &MessageId,
                    node: &str,
                    state: ScheduleState,
                    error: Option<String>,
                    now: UnixTime,
                ) -> StoreResult<bool> {
                    let (owner, id, node) = (owner.clone(), id.clone(), node.to_owned());
                    self.db
                        .unit(async move |tx| {
                            units::finish(tx, &owner, &id, &node, state, error.as_deref(), now)
                                .await
                        })
                        .await
                }

                async fn next_schedule_due(
                    &self,
                    owner: &PhoneNumber,
                ) -> StoreResult<Option<UnixTime>> {
                    let owner = owner.clone();
                    self.db
                        .read_unit(async move |tx| units::next_due(tx, &owner).await)
                        .await
                }

                async fn template_cursor(&self, waba: &WabaId) -> StoreResult<i64> {
                    let waba = waba.clone();
                    self.db
                        .read_unit(async move |tx| units::template_cursor(tx, &waba).await)
                        .await
                }

                async fn advance_template_cursor(
                    &self,
                    waba: &WabaId,
                    from: i64,
                    to: i64,
                    jobs: Vec<WebhookJob>,
                ) -> StoreResult<bool> {
                    let waba = waba.clone();
                    self.db
                        .unit(async move |tx| {
                            units::advance_template_cursor(tx, &waba, from, to, &jobs).await
                        })
                        .await
                }
            }
        };
    };
}

pub(crate) use schedule_store;
