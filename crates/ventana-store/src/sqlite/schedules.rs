//! [`ScheduleStore`] on SQLite: scheduled sends and the template cursor, in the gateway's file.
//! The units, and why each decision holds, are in [`crate::units::schedules`].

use super::endpoint::SqliteEndpointStore;
use crate::StoreResult;
use crate::endpoint::WebhookJob;
use crate::schedule::{CancelOutcome, ScheduleRecord, ScheduleState, ScheduleStore};
use crate::units::schedules as units;
use async_trait::async_trait;
use ventana_core::{MessageId, PhoneNumber, UnixTime, WabaId};

#[async_trait]
impl ScheduleStore for SqliteEndpointStore {
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
            .read_unit(async move |tx| units::list(tx, &owner, state, after, limit).await)
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
                units::claim_due(tx, &owner, due_by, &node, now, stale_before, limit).await
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
                units::finish(tx, &owner, &id, &node, state, error.as_deref(), now).await
            })
            .await
    }

    async fn next_schedule_due(&self, owner: &PhoneNumber) -> StoreResult<Option<UnixTime>> {
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
            .unit(async move |tx| units::advance_template_cursor(tx, &waba, from, to, &jobs).await)
            .await
    }
}
