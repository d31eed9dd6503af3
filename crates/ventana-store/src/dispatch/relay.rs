//! The relay's store traits, [`RelayStore`](crate::RelayStore),
//! [`TemplateStore`](crate::TemplateStore) and [`LedgerStore`](crate::LedgerStore),
//! implemented once for every backend.
//!
//! Each method hands its unit of work (from [`crate::units::relay`]) to the backend's `Db`:
//! `unit` runs it as one transaction (SQLite: on the writer thread, inside a group commit;
//! PostgreSQL: on a pooled connection, again from the start after a deadlock), `read_unit`
//! as a read. Its arguments are moved into the unit, which SQLite runs on another thread.
//! A backend's store type invokes the macros with a field `db` offering those methods and an
//! inherent `subscribe()` for wake-ups.

/// `impl RelayStore for $store`.
macro_rules! relay_store {
    ($store:ty) => {
        const _: () = {
            use ventana_core::protocol::SignedKey;
            use ventana_core::{
                BusinessClock, DeviceId, MessageId, PhoneNumber, Relationship, UnixTime, WabaId,
            };
            use $crate::StoreResult;
            use $crate::relay::{
                Accepted, AccountRecord, ClaimedPreKey, DeviceRecord, NewDevice, NewSubmission,
                Refusal, RelayStore, StoredEnvelope, VerificationOutcome, Wakeup,
            };
            use $crate::units::relay::{directory, envelopes, verification};

            #[::async_trait::async_trait]
            impl RelayStore for $store {
                fn wakeups(&self) -> ::tokio::sync::broadcast::Receiver<Wakeup> {
                    self.subscribe()
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
                        .unit(async move |tx| {
                            verification::put(tx, &phone, &code, now, expires_at).await
                        })
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

                async fn ensure_business(
                    &self,
                    waba: &WabaId,
                    sandbox: bool,
                ) -> StoreResult<BusinessClock> {
                    let waba = waba.clone();
                    self.db
                        .unit(async move |tx| directory::ensure_business(tx, &waba, sandbox).await)
                        .await
                }

                async fn business_clock(
                    &self,
                    waba: &WabaId,
                ) -> StoreResult<Option<BusinessClock>> {
                    let waba = waba.clone();
                    self.db
                        .read_unit(async move |tx| directory::business_clock(tx, &waba).await)
                        .await
                }

                async fn business_tier(
                    &self,
                    waba: &WabaId,
                ) -> StoreResult<Option<ventana_core::rules::BusinessTier>> {
                    let waba = waba.clone();
                    self.db
                        .read_unit(async move |tx| directory::business_tier(tx, &waba).await)
                        .await
                }

                async fn set_business_tier(
                    &self,
                    waba: &WabaId,
                    change: $crate::relay::TierEvent,
                ) -> StoreResult<Option<bool>> {
                    let waba = waba.clone();
                    self.db
                        .unit(async move |tx| {
                            directory::set_business_tier(tx, &waba, &change).await
                        })
                        .await
                }

                async fn tier_events(
                    &self,
                    waba: &WabaId,
                ) -> StoreResult<Vec<$crate::relay::TierEvent>> {
                    let waba = waba.clone();
                    self.db
                        .read_unit(async move |tx| directory::tier_events(tx, &waba).await)
                        .await
                }

                async fn preview(
                    &self,
                    proposed: $crate::relay::Proposed,
                ) -> StoreResult<
                    Result<Option<ventana_core::pricing::PriceQuote>, $crate::relay::Refusal>,
                > {
                    self.db
                        .unit(async move |tx| envelopes::quote(tx, &proposed).await)
                        .await
                }

                async fn set_business_clock(
                    &self,
                    waba: &WabaId,
                    clock: BusinessClock,
                ) -> StoreResult<()> {
                    let waba = waba.clone();
                    self.db
                        .unit(async move |tx| directory::set_business_clock(tx, &waba, clock).await)
                        .await
                }

                async fn account(
                    &self,
                    address: &PhoneNumber,
                ) -> StoreResult<Option<AccountRecord>> {
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
                        .read_unit(async move |tx| {
                            directory::device_by_token(tx, &token_hash).await
                        })
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
                    max_unclaimed: u64,
                ) -> StoreResult<u64> {
                    let account = account.clone();
                    let (one_time_keys, fallback_key) =
                        (one_time_keys.to_vec(), fallback_key.cloned());
                    self.db
                        .unit(async move |tx| {
                            let fallback_key = fallback_key.as_ref();
                            directory::upload_keys(
                                tx,
                                &account,
                                device,
                                &one_time_keys,
                                fallback_key,
                                max_unclaimed,
                            )
                            .await
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
                        .read_unit(async move |tx| {
                            directory::unclaimed_count(tx, &account, device).await
                        })
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
                        .unit(async move |tx| {
                            directory::claim_pre_keys(tx, &account, only.as_deref()).await
                        })
                        .await
                }

                async fn accept(
                    &self,
                    submission: NewSubmission,
                ) -> StoreResult<Result<Accepted, Refusal>> {
                    self.db
                        .unit(async move |tx| envelopes::accept(tx, &submission).await)
                        .await
                }

                async fn submitted(
                    &self,
                    sender: &PhoneNumber,
                    id: &MessageId,
                ) -> StoreResult<bool> {
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

                async fn ack(
                    &self,
                    account: &PhoneNumber,
                    device: DeviceId,
                    seqs: &[u64],
                ) -> StoreResult<u64> {
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
                ) -> StoreResult<Option<Relationship>> {
                    let (business, user) = (business.clone(), user.clone());
                    self.db
                        .read_unit(async move |tx| {
                            envelopes::relationship_between(tx, &business, &user).await
                        })
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
                        .unit(async move |tx| {
                            envelopes::set_blocked(tx, &user, &business, blocked, at).await
                        })
                        .await
                }
            }
        };
    };
}

pub(crate) use relay_store;

/// `impl TemplateStore for $store`.
macro_rules! template_store {
    ($store:ty) => {
        const _: () = {
            use ventana_core::template::TemplateStatus;
            use ventana_core::{UnixTime, WabaId};
            use $crate::StoreResult;
            use $crate::template::{
                CreateRefusal, NewTemplate, TemplateEdit, TemplateEvent, TemplateFilter,
                TemplateRecord, TemplateStore, TemplateVersion,
            };
            use $crate::units::relay::templates;

            #[::async_trait::async_trait]
            impl TemplateStore for $store {
                async fn create_template(
                    &self,
                    new: NewTemplate,
                    limit: u32,
                ) -> StoreResult<Result<TemplateRecord, CreateRefusal>> {
                    self.db
                        .unit(async move |tx| templates::create(tx, &new, limit).await)
                        .await
                }

                async fn template(&self, id: &str) -> StoreResult<Option<TemplateRecord>> {
                    let id = id.to_owned();
                    self.db
                        .read_unit(async move |tx| templates::template(tx, &id).await)
                        .await
                }

                async fn find_template(
                    &self,
                    waba: &WabaId,
                    name: &str,
                    language: &str,
                ) -> StoreResult<Option<TemplateRecord>> {
                    let (waba, name, language) =
                        (waba.clone(), name.to_owned(), language.to_owned());
                    self.db
                        .read_unit(async move |tx| {
                            templates::find(tx, &waba, &name, &language).await
                        })
                        .await
                }

                async fn template_version(
                    &self,
                    id: &str,
                    version: u32,
                ) -> StoreResult<Option<TemplateVersion>> {
                    let id = id.to_owned();
                    self.db
                        .read_unit(async move |tx| templates::version(tx, &id, version).await)
                        .await
                }

                async fn list_templates(
                    &self,
                    filter: &TemplateFilter,
                    after: Option<i64>,
                    before: Option<i64>,
                    limit: u32,
                ) -> StoreResult<Vec<TemplateRecord>> {
                    let filter = filter.clone();
                    self.db
                        .read_unit(async move |tx| {
                            templates::list(tx, &filter, after, before, limit).await
                        })
                        .await
                }

                async fn edit_template(
                    &self,
                    id: &str,
                    expected_version: u32,
                    edit: TemplateEdit,
                    actor: &str,
                    now: UnixTime,
                ) -> StoreResult<TemplateRecord> {
                    let (id, actor) = (id.to_owned(), actor.to_owned());
                    self.db
                        .unit(async move |tx| {
                            templates::edit(tx, &id, expected_version, &edit, &actor, now).await
                        })
                        .await
                }

                async fn set_template_status(
                    &self,
                    id: &str,
                    expected: TemplateStatus,
                    to: TemplateStatus,
                    actor: &str,
                    reason: Option<String>,
                    now: UnixTime,
                ) -> StoreResult<TemplateRecord> {
                    let (id, actor) = (id.to_owned(), actor.to_owned());
                    self.db
                        .unit(async move |tx| {
                            let reason = reason.as_deref();
                            templates::set_status(tx, &id, expected, to, &actor, reason, now).await
                        })
                        .await
                }

                async fn delete_templates(
                    &self,
                    waba: &WabaId,
                    name: &str,
                    id: Option<&str>,
                    actor: &str,
                    now: UnixTime,
                ) -> StoreResult<Vec<TemplateRecord>> {
                    let (waba, name, actor) = (waba.clone(), name.to_owned(), actor.to_owned());
                    let id = id.map(str::to_owned);
                    self.db
                        .unit(async move |tx| {
                            templates::delete(tx, &waba, &name, id.as_deref(), &actor, now).await
                        })
                        .await
                }

                async fn template_events(
                    &self,
                    waba: Option<&WabaId>,
                    after_seq: i64,
                    limit: u32,
                ) -> StoreResult<Vec<TemplateEvent>> {
                    let waba = waba.cloned();
                    self.db
                        .read_unit(async move |tx| {
                            templates::events(tx, waba.as_ref(), after_seq, limit).await
                        })
                        .await
                }

                async fn template_audit(
                    &self,
                    template_id: &str,
                ) -> StoreResult<Vec<TemplateEvent>> {
                    let template_id = template_id.to_owned();
                    self.db
                        .read_unit(async move |tx| templates::audit(tx, &template_id).await)
                        .await
                }
            }
        };
    };
}

pub(crate) use template_store;

/// `impl LedgerStore for $store`.
macro_rules! ledger_store {
    ($store:ty) => {
        const _: () = {
            use ventana_core::pricing::{Charge, LedgerEntry};
            use ventana_core::protocol::PricedMessage;
            use ventana_core::{MessageId, PhoneNumber, UnixTime, WabaId};
            use $crate::StoreResult;
            use $crate::ledger::{Appended, LedgerStore, PolicyAdded, PolicyVersion};
            use $crate::units::relay::{billing, ledger};

            #[::async_trait::async_trait]
            impl LedgerStore for $store {
                async fn append_charge(&self, charge: Charge) -> StoreResult<Appended> {
                    self.db
                        .unit(async move |tx| ledger::append_charge(tx, &charge).await)
                        .await
                }

                async fn add_policy(&self, text: &str, at: UnixTime) -> StoreResult<PolicyAdded> {
                    let text = text.to_owned();
                    self.db
                        .unit(async move |tx| billing::add_policy(tx, &text, at).await)
                        .await
                }

                async fn policy_versions(&self) -> StoreResult<Vec<PolicyVersion>> {
                    self.db
                        .read_unit(async move |tx| billing::policies(tx).await)
                        .await
                }

                async fn meter_delivery(
                    &self,
                    business: &PhoneNumber,
                    user: &PhoneNumber,
                    ids: &[MessageId],
                    wall: UnixTime,
                ) -> StoreResult<Vec<PricedMessage>> {
                    let (business, user, ids) = (business.clone(), user.clone(), ids.to_vec());
                    self.db
                        .unit(async move |tx| {
                            billing::meter(tx, &business, &user, &ids, wall).await
                        })
                        .await
                }

                async fn ledger_between(
                    &self,
                    waba: &WabaId,
                    from: UnixTime,
                    until: UnixTime,
                ) -> StoreResult<Vec<LedgerEntry>> {
                    let waba = waba.clone();
                    self.db
                        .read_unit(async move |tx| {
                            ledger::delivered_between(tx, &waba, from, until).await
                        })
                        .await
                }

                async fn ledger_businesses(&self) -> StoreResult<Vec<WabaId>> {
                    self.db
                        .read_unit(async move |tx| ledger::businesses(tx).await)
                        .await
                }

                async fn ledger_entries(
                    &self,
                    waba: &WabaId,
                    after_seq: u64,
                    limit: u32,
                ) -> StoreResult<Vec<LedgerEntry>> {
                    let waba = waba.clone();
                    self.db
                        .read_unit(async move |tx| {
                            ledger::entries(tx, &waba, after_seq, limit).await
                        })
                        .await
                }
            }
        };
    };
}

pub(crate) use ledger_store;
