//! The gateway's scheduled sends, and how far it has followed each business's template events.
//!
//! A business may ask for a message to go out later. The gateway answers at once with the
//! message id the send will use, keeps the request (sealed: it holds the template's
//! parameters) until `send_at` on the business's clock, then one node claims it, sends it, and
//! records the outcome. A node that claimed a send and died leaves it `Firing`; once its claim
//! is old enough another node takes it over, and the first node's late answer is ignored.
//! Firing twice cannot deliver twice: both attempts carry the same message id.
//!
//! Beside them, the template cursor: the last template event (by the relay's `seq`) the
//! gateway has turned into `message_template_status_update` webhooks, moved forward together
//! with the webhook jobs it queued, so an event is reported once even with several nodes.

use crate::endpoint::WebhookJob;
use crate::{ConflictKind, StoreError, StoreResult};
use async_trait::async_trait;
use ventana_core::{MessageId, PhoneNumber, UnixTime, WabaId};

/// Where a scheduled send stands: `Scheduled` -> `Firing` -> `Sent` or `Failed`, or
/// `Scheduled` -> `Cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleState {
    /// Waiting for its time.
    Scheduled,
    /// Claimed by a node that is sending it.
    Firing,
    Sent,
    /// The send was refused; the record's `error` says why.
    Failed,
    /// Cancelled by the business before it fired.
    Cancelled,
}

impl ScheduleState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Firing => "firing",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(Self::Scheduled),
            "firing" => Some(Self::Firing),
            "sent" => Some(Self::Sent),
            "failed" => Some(Self::Failed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// A message a business scheduled ahead of time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// The message id the send will use; unique in the store.
    pub id: MessageId,
    /// The business number that sends.
    pub owner: PhoneNumber,
    pub waba_id: WabaId,
    pub recipient: PhoneNumber,
    /// On the business's clock (a sandbox's test clock included).
    pub send_at: UnixTime,
    /// The send request, sealed; opaque to the store.
    pub request_sealed: Vec<u8>,
    pub state: ScheduleState,
    /// For `Failed`: the Cloud API error, as JSON text.
    pub error: Option<String>,
    /// The node that claimed it last (it stays after the send, saying who sent it).
    pub claimed_by: Option<String>,
    pub claimed_at: Option<UnixTime>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// What [`ScheduleStore::cancel_schedule`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was `Scheduled` and is `Cancelled` now: the record as cancelled.
    Cancelled(ScheduleRecord),
    /// The owner has no schedule with that id.
    NotFound,
    /// It is firing or done already: the record as it stands.
    NotCancellable(ScheduleRecord),
}

#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Stores a new schedule in state `Scheduled`, whatever `record.state` says, with no
    /// claim and no error; the other fields as given. A taken id (of any owner) is
    /// `StoreError::Conflict`.
    async fn create_schedule(&self, record: ScheduleRecord) -> StoreResult<()>;

    async fn schedule(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<Option<ScheduleRecord>>;

    /// The owner's schedules in (`send_at`, `id`) order: only those in `state` if given, only
    /// those after the cursor `after` (exclusive: the last record of the previous page), at
    /// most `limit`.
    async fn list_schedules(
        &self,
        owner: &PhoneNumber,
        state: Option<ScheduleState>,
        after: Option<(UnixTime, MessageId)>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRecord>>;

    /// `Scheduled` -> `Cancelled` (`updated_at = now`), compare-and-swap: a schedule being
    /// fired or done is `NotCancellable`, and of a cancel racing a claim exactly one wins.
    async fn cancel_schedule(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        now: UnixTime,
    ) -> StoreResult<CancelOutcome>;

    /// Claims up to `limit` of the owner's schedules that are due: `Scheduled` with
    /// `send_at <= due_by`, or `Firing` with `claimed_at <= stale_before` (their node died).
    /// They become `Firing` with `claimed_by = node`, `claimed_at = now`, and are returned in
    /// (`send_at`, `id`) order.
    ///
    /// Concurrent callers (tasks on one node, or other nodes sharing a PostgreSQL database)
    /// never claim the same row: each due row goes to exactly one of them. `stale_before`
    /// must be earlier than every claimer's `now`, or a row just claimed would count as stale.
    async fn claim_due_schedules(
        &self,
        owner: &PhoneNumber,
        due_by: UnixTime,
        node: &str,
        now: UnixTime,
        stale_before: UnixTime,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRecord>>;

    /// `Firing` -> `state` (`Sent`, or `Failed` with `error`; `error` is stored as given),
    /// only if the schedule is still claimed by `node`. False if it is not: another node took
    /// it over (or it was finished already), and nothing is written. Any `state` other than
    /// `Sent` or `Failed` is a `StoreError::Conflict`.
    async fn finish_schedule(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        node: &str,
        state: ScheduleState,
        error: Option<String>,
        now: UnixTime,
    ) -> StoreResult<bool>;

    /// The earliest `send_at` among the owner's `Scheduled` rows, to sleep until then. Rows
    /// left `Firing` by a dead node are not counted: they are found by claiming again once
    /// their claim is stale.
    async fn next_schedule_due(&self, owner: &PhoneNumber) -> StoreResult<Option<UnixTime>>;

    /// The `seq` of the last template event of the business turned into webhooks (0 when
    /// none was).
    async fn template_cursor(&self, waba: &WabaId) -> StoreResult<i64>;

    /// Compare-and-swap: if the business's cursor is still `from`, sets it to `to` and queues
    /// `jobs` (as `AppRecord::Webhook` records are queued: a job whose id is queued already is
    /// left as it is), all in one transaction. False, with nothing written, if the cursor is
    /// no longer `from` (another caller advanced it first).
    async fn advance_template_cursor(
        &self,
        waba: &WabaId,
        from: i64,
        to: i64,
        jobs: Vec<WebhookJob>,
    ) -> StoreResult<bool>;
}

/// What both backends check before finishing a schedule: the new state is a final one that
/// a send ends in.
pub(crate) fn check_finish(id: &MessageId, state: ScheduleState) -> Result<(), StoreError> {
    match state {
        ScheduleState::Sent | ScheduleState::Failed => Ok(()),
        other => Err(StoreError::conflict(
            ConflictKind::State,
            format!(
                "schedule {} cannot be finished as {}: only sent or failed end a send",
                id.as_str(),
                other.as_str()
            ),
        )),
    }
}

/// The cursor [`ScheduleStore::list_schedules`] starts from when given none: before every
/// schedule (no message id is empty).
pub(crate) fn listing_start(after: Option<(UnixTime, MessageId)>) -> (i64, String) {
    after.map_or((i64::MIN, String::new()), |(send_at, id)| {
        (send_at.0, id.as_str().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_name() {
        use ScheduleState::*;
        for state in [Scheduled, Firing, Sent, Failed, Cancelled] {
            assert_eq!(ScheduleState::parse(state.as_str()), Some(state));
        }
        assert_eq!(ScheduleState::parse("Scheduled"), None);
    }
}
