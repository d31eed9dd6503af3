//! The gateway's webhook queue: events waiting for their business, what became of them, the
//! log of every attempt, replay of past events and the dead-letter queue.
//!
//! An event is queued in the transaction of the state change it reports (see
//! [`AppRecord::Webhook`](crate::endpoint::AppRecord)) and then moves through
//! [`WebhookState`]: `queued` until its business answers 2xx (`delivered`) or it has failed
//! for too long (`dead`). Settled events stay for a while, so a business can have them
//! replayed; dead ones can be redriven. Events sharing an `order_key` (the statuses of one
//! message) are handed out one at a time, in the order they were queued.

use crate::StoreResult;
use async_trait::async_trait;
use ventana_core::{MessageId, PhoneNumber, PhoneNumberId, UnixTime, WabaId};

/// A webhook event in the queue. `id` is stable across retries, replays and redrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookJob {
    pub id: String,
    pub waba_id: WabaId,
    /// The number the event is about, whose callback override applies; `None` for an event
    /// of the whole business (a template status change).
    pub phone_number_id: Option<PhoneNumberId>,
    /// Jobs with one key are delivered one at a time, in the order they were queued.
    pub order_key: Option<String>,
    /// The exact, signed-as-is JSON bytes, sealed.
    pub body_sealed: Vec<u8>,
    pub attempts: u32,
    pub next_attempt_at: UnixTime,
    /// When the event happened.
    pub created_at: UnixTime,
    /// When the first of the attempts failing in a row since it (last) entered the queue
    /// was made, on its business's clock; `None` if none failed. The gateway gives up on
    /// an event that has failed for long enough.
    pub failing_since: Option<UnixTime>,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookState {
    /// Waiting for (another) attempt.
    Queued,
    /// Its business answered 2xx.
    Delivered,
    /// Failed for longer than the gateway retries: the dead-letter queue.
    Dead,
}

impl WebhookState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// What an attempt leaves the job as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    Delivered,
    /// Due again at `next`; `failing_since` is kept if set, else set to `now` (on the
    /// business's clock).
    Retry {
        next: UnixTime,
        now: UnixTime,
    },
    Dead,
}

/// One attempt at delivering an event, as the delivery log keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookAttempt {
    pub event_id: String,
    pub waba_id: WabaId,
    /// The node that made it.
    pub node: String,
    /// When it started, in milliseconds since the epoch.
    pub at_ms: i64,
    /// Where it went; `None` when no callback was configured.
    pub url: Option<String>,
    /// The receiver's answer; `None` if there was none (refused, timed out, not sent).
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    /// Why it failed; `None` if it was delivered.
    pub error: Option<String>,
}

/// An entry of the delivery log: an attempt and its place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedAttempt {
    /// Increasing with time; pages go by it.
    pub seq: i64,
    pub attempt: WebhookAttempt,
}

/// A queued or settled event, as listed for an operator (no body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    pub id: String,
    pub waba_id: WabaId,
    pub phone_number_id: Option<PhoneNumberId>,
    pub state: WebhookState,
    pub attempts: u32,
    pub created_at: UnixTime,
    pub settled_at: Option<UnixTime>,
    pub last_error: Option<String>,
}

/// Where a replay starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayFrom {
    /// Every settled event of the business that happened at or after this time.
    Time(UnixTime),
    /// This event and every settled one of the business queued after it.
    Event(String),
}

/// A lease request: up to `limit` due jobs to `node` until `now + lease_secs`, at most
/// `per_route` of any one route, passing over the jobs of the routes in `skip` (`<waba
/// id>/<phone number id>`, or `<waba id>/` for a business's own events), whose receivers have
/// no room.
#[derive(Clone, Debug)]
pub struct LeaseRequest<'a> {
    pub node: &'a str,
    pub now: UnixTime,
    pub lease_secs: i64,
    pub limit: u32,
    pub per_route: u32,
    pub skip: &'a [String],
}

/// Where the events of one business (about one of its numbers, or none) go, as configured
/// through the Cloud API: the app's subscription, the WABA's override and the number's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRouting {
    /// False once the business's app was unsubscribed from its WABA.
    pub subscribed: bool,
    /// The app's callback (`/{app_id}/subscriptions`, or the admin API's `webhook_url`).
    pub app_callback: Option<String>,
    /// The fields the app subscribed to, comma-separated; `None`: every field.
    pub fields: Option<String>,
    /// The WABA's `override_callback_uri`.
    pub waba_callback: Option<String>,
    /// The number's `webhook_configuration.override_callback_uri`.
    pub number_callback: Option<String>,
    /// The signing key, sealed.
    pub app_secret_sealed: Vec<u8>,
    /// A sandbox business lives on its test clock.
    pub sandbox: bool,
}

impl WebhookRouting {
    /// The callback by the Cloud API's precedence (number, then WABA, then app), or why
    /// there is none.
    pub fn callback(&self) -> Result<&str, &'static str> {
        if !self.subscribed {
            return Err("the business's app is not subscribed to its WABA");
        }
        self.number_callback
            .as_deref()
            .or(self.waba_callback.as_deref())
            .or(self.app_callback.as_deref())
            .ok_or("the business has no webhook callback configured")
    }
}

/// A change to where a business's events go. Verify tokens are sealed by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackChange {
    /// The app's subscription: its callback (`None` removes it), verify token and fields.
    App {
        callback: Option<String>,
        verify_token_sealed: Vec<u8>,
        fields: Option<String>,
    },
    /// The app subscribed to the WABA (again), with an override or without one.
    Subscribe {
        waba_callback: Option<(String, Vec<u8>)>,
    },
    /// The app unsubscribed from the WABA: no events until it subscribes again.
    Unsubscribe,
    /// A number's override, or none.
    Number {
        id: PhoneNumberId,
        callback: Option<(String, Vec<u8>)>,
    },
}

/// The route of a job, as [`LeaseRequest::skip`] names it.
pub fn route_key(waba: &WabaId, number: Option<&PhoneNumberId>) -> String {
    format!("{waba}/{}", number.map(PhoneNumberId::as_str).unwrap_or(""))
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Leases due jobs, oldest first, each the first queued of its `order_key`: a job leased
    /// to one node is not handed to another until the lease runs out (the node died) or the
    /// job is settled or released.
    async fn lease_webhooks(&self, request: LeaseRequest<'_>) -> StoreResult<Vec<WebhookJob>>;
    /// Where the events of `waba` (about `number`) go; `None` if no such business.
    async fn webhook_routing(
        &self,
        waba: &WabaId,
        number: Option<&PhoneNumberId>,
    ) -> StoreResult<Option<WebhookRouting>>;
    /// Changes where a business's events go; false if no such business (or number of it).
    async fn change_callback(&self, waba: &WabaId, change: CallbackChange) -> StoreResult<bool>;
    /// Keeps a send's `biz_opaque_callback_data` (sealed) for its statuses; the first kept
    /// for a message stays.
    async fn save_callback_data(
        &self,
        owner: &PhoneNumber,
        message: &MessageId,
        data_sealed: Vec<u8>,
        at: UnixTime,
    ) -> StoreResult<()>;
    /// A message's `biz_opaque_callback_data`, sealed, if its send had one.
    async fn callback_data(
        &self,
        owner: &PhoneNumber,
        message: &MessageId,
    ) -> StoreResult<Option<Vec<u8>>>;
    /// Gives back jobs `node` leased but will not attempt now.
    async fn release_webhooks(&self, node: &str, ids: &[String]) -> StoreResult<()>;
    /// Gives back every job leased to `node`: at start, the leases of a process that died
    /// under the same node name. Returns how many.
    async fn release_node_webhooks(&self, node: &str) -> StoreResult<u64>;
    /// Records an attempt in the log and moves its job on, in one transaction. A job
    /// settled meanwhile by another node is left as it is, and a failure does not end
    /// another node's lease. A job that dies passes its failing time to the statuses queued
    /// behind it.
    async fn settle_webhook(
        &self,
        attempt: WebhookAttempt,
        attempts: u32,
        outcome: WebhookOutcome,
    ) -> StoreResult<()>;
    /// When a queued job may next be leased, as of `now`, if any: the due time of the first
    /// of each key, or the end of a lease another node holds; the routes in `skip` aside.
    async fn next_webhook_due(
        &self,
        now: UnixTime,
        skip: &[String],
    ) -> StoreResult<Option<UnixTime>>;
    /// A business's delivery log, newest first, before `before` (a [`LoggedAttempt::seq`]).
    async fn webhook_log(
        &self,
        waba: &WabaId,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<LoggedAttempt>>;
    /// A business's events in `state`, newest first.
    async fn webhook_events(
        &self,
        waba: &WabaId,
        state: WebhookState,
        limit: u32,
    ) -> StoreResult<Vec<WebhookEvent>>;
    /// Queues a business's settled events again from `from`, under their ids, due at `now`.
    /// `None` if `from` names no event of the business; otherwise how many.
    async fn replay_webhooks(
        &self,
        waba: &WabaId,
        from: ReplayFrom,
        now: UnixTime,
    ) -> StoreResult<Option<u64>>;
    /// Queues a business's dead events again, due at `now`, but not a status whose message
    /// had a later one delivered since (it would go backwards). Returns how many.
    async fn redrive_webhooks(&self, waba: &WabaId, now: UnixTime) -> StoreResult<u64>;
    /// Forgets delivered events and log entries settled or made before `delivered_before`,
    /// and dead events and callback data settled or kept before `dead_before`. Returns how
    /// many rows went.
    async fn prune_webhooks(
        &self,
        delivered_before: UnixTime,
        dead_before: UnixTime,
    ) -> StoreResult<u64>;
}
