//! [`ScheduleStore`] on PostgreSQL: scheduled sends and the template cursor, in the gateway's
//! schema, shared by every gateway node. The units, and why each decision holds with several
//! nodes (row locks, `SKIP LOCKED`, conditional updates), are in [`crate::units::schedules`].

use super::db::unit;
use super::endpoint::PgEndpointStore;
use crate::StoreResult;
use crate::endpoint::WebhookJob;
use crate::schedule::{CancelOutcome, ScheduleRecord, ScheduleState, ScheduleStore};
use crate::units::schedules as units;
use async_trait::async_trait;
use ventana_core::{MessageId, PhoneNumber, UnixTime, WabaId};

#[async_trait]
impl ScheduleStore for PgEndpointStore {
    async fn create_schedule(&self, r: ScheduleRecord) -> StoreResult<()> {
        unit!(self.db, |tx| units::create(tx, &r).await)
    }

    async fn schedule(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<Option<ScheduleRecord>> {
        self.db
            .read_unit(async |tx| units::schedule(tx, owner, id).await)
            .await
    }

    async fn list_schedules(
        &self,
        owner: &PhoneNumber,
        state: Option<ScheduleState>,
        after: Option<(UnixTime, MessageId)>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRecord>> {
        self.db
            .read_unit(async |tx| units::list(tx, owner, state, after, limit).await)
            .await
    }

    async fn cancel_schedule(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        now: UnixTime,
    ) -> StoreResult<CancelOutcome> {
        unit!(self.db, |tx| units::cancel(tx, owner, id, now).await)
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
        unit!(self.db, |tx| units::claim_due(
            tx,
            owner,
            due_by,
            node,
            now,
            stale_before,
            limit
        )
        .await)
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
        unit!(self.db, |tx| units::finish(
            tx,
            owner,
            id,
            node,
            state,
            error.as_deref(),
            now
        )
        .await)
    }

    async fn next_schedule_due(&self, owner: &PhoneNumber) -> StoreResult<Option<UnixTime>> {
        self.db
            .read_unit(async |tx| units::next_due(tx, owner).await)
            .await
    }

    async fn template_cursor(&self, waba: &WabaId) -> StoreResult<i64> {
        self.db
            .read_unit(async |tx| units::template_cursor(tx, waba).await)
            .await
    }

    async fn advance_template_cursor(
        &self,
        waba: &WabaId,
        from: i64,
        to: i64,
        jobs: Vec<WebhookJob>,
    ) -> StoreResult<bool> {
        unit!(self.db, |tx| units::advance_template_cursor(
            tx, waba, from, to, &jobs
        )
        .await)
    }
}
