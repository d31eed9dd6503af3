//! Scheduled sends, Ventana's extension of the messages endpoint: a send request with
//! `"schedule": {"send_at": "<RFC 3339>"}` is checked now (shape, template, parameters) and
//! kept, sealed, until that time on the business's clock (a sandbox's test clock included).
//!
//! - The message id is chosen when the send is scheduled and returned to the business; the
//!   send uses it when it fires, so the business can match the status webhooks, and firing
//!   twice cannot deliver twice (the relay accepts an id once; a retry finds the message in
//!   the history and the outbox finishes it).
//! - Firing: the node that receives for a number claims its due schedules in the shared store
//!   (one claimer per row), checks the rules again and sends. A template paused meanwhile, a
//!   user who blocked the business, a closed window for a text: the schedule is `failed` and
//!   the business gets a `failed` status webhook with the Cloud API error. A node that died
//!   while firing leaves a claim that another takes over once it is [`STALE_CLAIM_SECS`] old.
//! - `GET /{phone_number_id}/schedules` lists them, `DELETE …/schedules?id=<wamid>` cancels one
//!   that has not fired.

use crate::graph::error::GraphError;
use crate::graph::query::Query;
use crate::graph::send::SendRequest;
use crate::webhook::payload::{DeliveryStatus, StatusError};
use crate::{Gateway, Hosted, outbound, read};
use axum::Json;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use ventana_core::{MessageId, UnixTime};
use ventana_store::endpoint::Direction;
use ventana_store::schedule::{CancelOutcome, ScheduleRecord, ScheduleState};

/// How long a claim stands before another node may take the schedule over.
pub(crate) const STALE_CLAIM_SECS: i64 = 120;
/// How far ahead a send may be scheduled.
const MAX_AHEAD_SECS: i64 = 366 * 24 * 60 * 60;
/// How often each number's due schedules are looked for, besides when one is added.
const POLL: Duration = Duration::from_secs(1);
/// Schedules fired per number per round.
const CLAIM_BATCH: u32 = 20;
const DEFAULT_PAGE: u32 = 25;
const MAX_PAGE: u32 = 100;

fn request_aad(id: &MessageId) -> Vec<u8> {
    format!("schedule/{id}/request").into_bytes()
}

fn internal(error: impl std::fmt::Display) -> GraphError {
    tracing::error!(%error, "scheduled sends failed");
    GraphError::internal()
}

/// Keeps `body` (an already checked send request) to be sent at `send_at` under `id`.
pub(crate) async fn create(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    request: &SendRequest,
    body: &[u8],
    send_at: UnixTime,
    id: MessageId,
) -> Result<ScheduleRecord, GraphError> {
    let to = match request {
        SendRequest::Text { to, .. } | SendRequest::Template { to, .. } => to.clone(),
        SendRequest::MarkRead { .. } => {
            return Err(GraphError::invalid_parameter(
                "Only messages can be scheduled, not read receipts.",
            ));
        }
    };
    let now = outbound::business_now(hosted).await?;
    if send_at <= now {
        return Err(GraphError::invalid_parameter(format!(
            "Param schedule.send_at must lie ahead of the business's clock, now {}.",
            now.to_rfc3339()
        )));
    }
    if send_at > now.plus_secs(MAX_AHEAD_SECS) {
        return Err(GraphError::invalid_parameter(
            "Param schedule.send_at may lie at most 366 days ahead.",
        ));
    }
    let wall = UnixTime::now();
    let record = ScheduleRecord {
        request_sealed: gateway.sealer.seal(&request_aad(&id), body),
        id,
        owner: hosted.record.address.clone(),
        waba_id: hosted.record.waba_id.clone(),
        recipient: to,
        send_at,
        state: ScheduleState::Scheduled,
        error: None,
        claimed_by: None,
        claimed_at: None,
        created_at: wall,
        updated_at: wall,
    };
    gateway
        .store
        .create_schedule(record.clone())
        .await
        .map_err(internal)?;
    gateway.schedules_due.notify_one();
    Ok(record)
}

/// `GET /{phone_number_id}/schedules?state=&limit=&after=`, in send order.
pub(crate) async fn list(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    query: Option<&str>,
) -> Result<Json<Value>, GraphError> {
    let query = Query::new(query);
    let state = match query.get("state") {
        None => None,
        Some(text) => Some(ScheduleState::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
            GraphError::invalid_parameter(format!(
                "Param state must be one of scheduled, firing, sent, failed, cancelled; got '{text}'."
            ))
        })?),
    };
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                GraphError::invalid_parameter(format!(
                    "Param limit must be a number from 1 to {MAX_PAGE}."
                ))
            })?,
    };
    let after = match query.get("after") {
        None => None,
        Some(cursor) => Some(
            decode_cursor(&cursor)
                .ok_or_else(|| GraphError::invalid_parameter("Param after is not a cursor."))?,
        ),
    };
    let owner = &hosted.record.address;
    let mut rows = gateway
        .store
        .list_schedules(owner, state, after, limit + 1)
        .await
        .map_err(internal)?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let data: Vec<Value> = rows.iter().map(|r| describe(gateway, r)).collect();
    // Graph's paging: a cursor to the next page when there is one.
    let paging = match rows.last() {
        Some(last) if more => {
            json!({ "cursors": { "after": encode_cursor(last.send_at, &last.id) } })
        }
        _ => json!({}),
    };
    Ok(Json(json!({ "data": data, "paging": paging })))
}

/// `DELETE /{phone_number_id}/schedules?id=<wamid>`: cancels a schedule that has not fired.
pub(crate) async fn cancel(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    query: Option<&str>,
) -> Result<Json<Value>, GraphError> {
    let id = Query::new(query)
        .get("id")
        .ok_or_else(|| GraphError::invalid_parameter("The parameter id is required."))?;
    let id: MessageId = id.parse().map_err(|e| {
        GraphError::invalid_parameter(format!("Param id is not a valid message id: {e}."))
    })?;
    match gateway
        .store
        .cancel_schedule(&hosted.record.address, &id, UnixTime::now())
        .await
        .map_err(internal)?
    {
        CancelOutcome::Cancelled(_) => Ok(Json(json!({ "success": true }))),
        CancelOutcome::NotFound => Err(GraphError::invalid_parameter(format!(
            "No message {id} is scheduled on this number."
        ))),
        CancelOutcome::NotCancellable(record) => Err(GraphError::invalid_parameter(format!(
            "Message {id} is {} and can no longer be cancelled.",
            record.state.as_str()
        ))),
    }
}

/// One schedule as listed: what it sends to whom and when, and what became of it.
fn describe(gateway: &Gateway, record: &ScheduleRecord) -> Value {
    let request = gateway
        .sealer
        .open(&request_aad(&record.id), &record.request_sealed)
        .ok()
        .and_then(|body| SendRequest::parse(&body).ok());
    let mut item = json!({
        "id": record.id.as_str(),
        "to": record.recipient.digits(),
        "send_at": record.send_at.to_rfc3339(),
        "state": record.state.as_str(),
        "created_at": record.created_at.to_rfc3339(),
    });
    match &request {
        Some(SendRequest::Template { template, .. }) => {
            item["type"] = "template".into();
            item["template"] = json!({
                "name": template.name.as_str(),
                "language": template.language.as_str(),
            });
        }
        Some(_) => item["type"] = "text".into(),
        None => {}
    }
    if let Some(error) = record
        .error
        .as_deref()
        .and_then(|e| serde_json::from_str::<Value>(e).ok())
    {
        item["error"] = error;
    }
    item
}

fn encode_cursor(send_at: UnixTime, id: &MessageId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", send_at.0))
}

fn decode_cursor(cursor: &str) -> Option<(UnixTime, MessageId)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (at, id) = text.split_once(':')?;
    Some((UnixTime(at.parse().ok()?), id.parse().ok()?))
}

/// Fires due schedules of the numbers this node receives for, until `shutdown`.
pub(crate) async fn run(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let hosted: Vec<Hosted> = read(&gateway.numbers).values().cloned().collect();
        for number in hosted {
            if number.endpoint.link().is_receiving() {
                fire_due(&gateway, &number).await;
            }
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = gateway.schedules_due.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn fire_due(gateway: &Arc<Gateway>, hosted: &Hosted) {
    let owner = &hosted.record.address;
    let next = match gateway.store.next_schedule_due(owner).await {
        Ok(next) => next,
        Err(e) => {
            tracing::warn!(%owner, error = %e, "could not read schedules");
            return;
        }
    };
    // The business's clock is asked only when something waits; otherwise only claims of
    // dead nodes are taken over.
    let due_by = match next {
        Some(_) => match outbound::business_now(hosted).await {
            Ok(now) => now,
            Err(_) => return,
        },
        None => UnixTime(i64::MIN),
    };
    let wall = UnixTime::now();
    let claimed = match gateway
        .store
        .claim_due_schedules(
            owner,
            due_by,
            &gateway.node,
            wall,
            wall.plus_secs(-STALE_CLAIM_SECS),
            CLAIM_BATCH,
        )
        .await
    {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::warn!(%owner, error = %e, "could not claim due schedules");
            return;
        }
    };
    for record in claimed {
        fire(gateway, hosted, record).await;
    }
}

/// Sends one claimed schedule and records what became of it.
async fn fire(gateway: &Arc<Gateway>, hosted: &Hosted, record: ScheduleRecord) {
    let owner = &hosted.record.address;
    let outcome = attempt(gateway, hosted, &record).await;
    let (state, error) = match outcome {
        Ok(()) => (ScheduleState::Sent, None),
        // The platform could not be reached: the claim stands and is taken over (by this
        // node or another) once stale, by when the relay may be back.
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
            tracing::warn!(id = %record.id, error = %e, "scheduled send postponed");
            return;
        }
        Err(e) => {
            let failed = DeliveryStatus::Failed(StatusError::from(&e));
            let job = gateway
                .status_job(
                    hosted,
                    &record.recipient,
                    &record.id,
                    failed,
                    UnixTime::now(),
                    None,
                )
                .await;
            if let Err(store) = gateway.store.apply(owner, vec![job]).await {
                tracing::warn!(id = %record.id, error = %store, "failed webhook not queued; will retry");
                return;
            }
            gateway.webhooks_due.notify_one();
            let error = json!({ "code": e.code, "title": e.title, "details": e.details });
            (ScheduleState::Failed, Some(error.to_string()))
        }
    };
    match gateway
        .store
        .finish_schedule(
            owner,
            &record.id,
            &gateway.node,
            state,
            error,
            UnixTime::now(),
        )
        .await
    {
        Ok(true) => tracing::info!(id = %record.id, state = state.as_str(), "scheduled send fired"),
        Ok(false) => tracing::warn!(id = %record.id, "another node took this schedule over"),
        Err(e) => tracing::warn!(id = %record.id, error = %e, "schedule outcome not recorded"),
    }
}

async fn attempt(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    record: &ScheduleRecord,
) -> Result<(), GraphError> {
    // Committed by an earlier attempt (its node died after): the outbox delivers it.
    let existing = gateway
        .store
        .message(&hosted.record.address, &record.id)
        .await
        .map_err(|e| GraphError::unavailable(e.to_string()))?;
    if existing.is_some_and(|m| m.direction == Direction::Outbound) {
        return Ok(());
    }
    let body = gateway
        .sealer
        .open(&request_aad(&record.id), &record.request_sealed)
        .map_err(|_| {
            tracing::error!(id = %record.id, "a scheduled request does not open");
            GraphError::internal()
        })?;
    let request = SendRequest::parse(&body)?;
    // A scheduled send is the business's software's, whoever scheduled it.
    let message = outbound::prepare(hosted, &request, record.id.clone(), false).await?;
    outbound::send(gateway, hosted, message, request.callback_data()).await?;
    Ok(())
}
