//! A business's webhooks, for the operator (`ventana webhooks …`):
//!
//! - `GET /admin/v1/businesses/{waba}/webhooks`: where its events go (app, WABA and number
//!   callbacks, subscribed fields) and how many dead letters it has (counted up to 500);
//! - `PUT /admin/v1/businesses/{waba}/webhooks` `{callback_url, verify_token, fields?,
//!   phone_number_id?}`: the app's callback, or a number's override, after the handshake;
//! - `GET …/webhooks/log?before=&limit=`: the delivery log, newest first;
//! - `GET …/webhooks/dead?limit=`: the dead-letter queue;
//! - `POST …/webhooks/replay` `{since}` or `{event_id}`: settled events sent again;
//! - `POST …/webhooks/redrive`: dead-lettered events sent again.
//!
//! Replayed and redriven events keep their ids (`X-Ventana-Event-Id`), so a receiver that
//! de-duplicates sees them as what they are.

use super::{AdminError, operator, parse, waba};
use crate::Gateway;
use crate::graph::error::GraphError;
use crate::graph::query::Query;
use crate::webhook::config;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use ventana_core::{PhoneNumberId, UnixTime};
use ventana_store::webhook::{ReplayFrom, WebhookState};

/// Entries of the log or the dead-letter queue in one answer, at most.
const MAX_PAGE: u32 = 500;

pub(super) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/admin/v1/businesses/{waba}/webhooks", get(show).put(set))
        .route("/admin/v1/businesses/{waba}/webhooks/log", get(log))
        .route("/admin/v1/businesses/{waba}/webhooks/dead", get(dead))
        .route("/admin/v1/businesses/{waba}/webhooks/replay", post(replay))
        .route(
            "/admin/v1/businesses/{waba}/webhooks/redrive",
            post(redrive),
        )
}

/// A Graph error as the admin API's.
fn graph(error: GraphError) -> AdminError {
    let status = error.status;
    let code = if status == StatusCode::NOT_FOUND || error.code == 803 {
        "not_found"
    } else if status.is_server_error() {
        "internal"
    } else {
        "bad_request"
    };
    let status = if error.code == 803 {
        StatusCode::NOT_FOUND
    } else {
        status
    };
    AdminError(status, code, error.details)
}

async fn show(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(waba_id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_id)?;
    let routing = config::routing(&gateway, &waba, None)
        .await
        .map_err(graph)?;
    let mut numbers = Vec::new();
    for number in gateway.store.phone_numbers().await? {
        if number.waba_id != waba {
            continue;
        }
        let of_number = config::routing(&gateway, &waba, Some(&number.id))
            .await
            .map_err(graph)?;
        numbers.push(json!({
            "phone_number_id": number.id,
            "override_callback_uri": of_number.number_callback,
            "callback": of_number.callback().ok(),
        }));
    }
    let dead = gateway
        .store
        .webhook_events(&waba, WebhookState::Dead, MAX_PAGE)
        .await?
        .len();
    let callback = routing.callback().ok().map(str::to_owned);
    Ok(Json(json!({
        "waba_id": waba,
        "subscribed": routing.subscribed,
        "app_callback": routing.app_callback,
        "fields": routing.fields.map(|f| f.split(',').map(str::to_owned).collect::<Vec<_>>()),
        "waba_override_callback_uri": routing.waba_callback,
        "callback": callback,
        "phone_numbers": numbers,
        "dead_letters": dead,
    })))
}

#[derive(Deserialize)]
struct SetCallback {
    callback_url: String,
    verify_token: String,
    #[serde(default)]
    fields: Option<Vec<String>>,
    /// A number's override instead of the app's callback.
    #[serde(default)]
    phone_number_id: Option<PhoneNumberId>,
}

async fn set(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(waba_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_id)?;
    let request: SetCallback = parse(&body)?;
    match &request.phone_number_id {
        None => {
            let mut params = json!({
                "object": "whatsapp_business_account",
                "callback_url": request.callback_url,
                "verify_token": request.verify_token,
            });
            if let Some(fields) = request.fields {
                params["fields"] = fields.into();
            }
            let params = config::Params::of(params);
            config::app_subscriptions(&gateway, &waba, &axum::http::Method::POST, &params)
                .await
                .map_err(graph)?;
        }
        Some(number) => {
            let hosted = gateway
                .hosted(number)
                .filter(|h| h.record.waba_id == waba)
                .ok_or_else(|| AdminError::not_found(format!("no number {number} of {waba}")))?;
            let params = json!({ "webhook_configuration": {
                "override_callback_uri": request.callback_url,
                "verify_token": request.verify_token,
            }});
            let params = config::Params::of(params);
            config::number_configuration(&gateway, &hosted, &params)
                .await
                .map_err(graph)?;
        }
    }
    show(State(gateway), headers, Path(waba_id)).await
}

fn limit(query: &Query<'_>) -> Result<u32, AdminError> {
    match query.get("limit") {
        None => Ok(100),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| AdminError::bad(format!("limit must be 1 to {MAX_PAGE}"))),
    }
}

async fn log(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(waba_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_id)?;
    let query = Query::new(query.as_deref());
    let before = match query.get("before") {
        None => None,
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|_| AdminError::bad("before must be an entry's seq"))?,
        ),
    };
    let entries = gateway
        .store
        .webhook_log(&waba, before, limit(&query)?)
        .await?;
    let data: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let a = &entry.attempt;
            json!({
                "seq": entry.seq,
                "at_ms": a.at_ms,
                "event_id": a.event_id,
                "node": a.node,
                "url": a.url,
                "http_status": a.http_status,
                "latency_ms": a.latency_ms,
                "error": a.error,
            })
        })
        .collect();
    Ok(Json(json!({ "data": data })))
}

async fn dead(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(waba_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_id)?;
    let query = Query::new(query.as_deref());
    let events = gateway
        .store
        .webhook_events(&waba, WebhookState::Dead, limit(&query)?)
        .await?;
    let data: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "event_id": e.id,
                "phone_number_id": e.phone_number_id,
                "attempts": e.attempts,
                "created_at": e.created_at,
                "dead_at": e.settled_at,
                "last_error": e.last_error,
            })
        })
        .collect();
    Ok(Json(json!({ "data": data })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    /// Unix seconds: every settled event that happened then or later.
    #[serde(default)]
    since: Option<i64>,
    /// This event and every settled one queued after it.
    #[serde(default)]
    event_id: Option<String>,
}

async fn replay(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(waba_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_id)?;
    let request: Replay = parse(&body)?;
    let from = match (request.since, request.event_id) {
        (Some(since), None) => ReplayFrom::Time(UnixTime(since)),
        (None, Some(id)) => ReplayFrom::Event(id),
        _ => return Err(AdminError::bad("give exactly one of since and event_id")),
    };
    let replayed = gateway
        .store
        .replay_webhooks(&waba, from, UnixTime::now())
        .await?
        .ok_or_else(|| AdminError::not_found("no such event of this business"))?;
    gateway.webhooks_due.notify_one();
    tracing::info!(%waba, replayed, "webhooks replayed");
    Ok(Json(json!({ "replayed": replayed })))
}

async fn redrive(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(waba_id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_id)?;
    let redriven = gateway
        .store
        .redrive_webhooks(&waba, UnixTime::now())
        .await?;
    gateway.webhooks_due.notify_one();
    tracing::info!(%waba, redriven, "dead-lettered webhooks redriven");
    Ok(Json(json!({ "redriven": redriven })))
}
