//! Operator routes of the relay: reading a development verification code, test clocks. The
//! review of templates is in `templates::admin`.

use crate::Relay;
use crate::error::{HttpError, bearer};
use crate::registration::parse;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use ventana_core::rules::BusinessTier;
use ventana_core::time::ClockError;
use ventana_core::{BusinessClock, PhoneNumber, UnixTime, WabaId};
use ventana_store::relay::TierEvent;

pub(crate) fn operator(relay: &Relay, headers: &HeaderMap) -> Result<(), HttpError> {
    if relay.is_operator(bearer(headers)) {
        Ok(())
    } else {
        Err(HttpError::unauthorized("operator token required"))
    }
}

pub(crate) async fn peek_code(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    Path(phone): Path<String>,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let phone: PhoneNumber = phone
        .parse()
        .map_err(|e| HttpError::bad_request(format!("{e}")))?;
    match relay
        .store
        .peek_verification(&phone, UnixTime::now())
        .await?
    {
        Some(code) => Ok(Json(json!({ "phone": phone, "code": code }))),
        None => Err(HttpError::not_found(
            "no pending verification code for this number",
        )),
    }
}

#[derive(Deserialize)]
struct TierChange {
    tier: String,
    /// Who decides; audited as `operator:<by>`.
    by: Option<String>,
    reason: Option<String>,
}

async fn tier_json(relay: &Relay, waba: &WabaId) -> Result<Value, HttpError> {
    let tier = relay.store.business_tier(waba).await?.ok_or_else(|| {
        HttpError::not_found("no business with this WABA id has a number at the relay")
    })?;
    let events = relay.store.tier_events(waba).await?;
    Ok(json!({
        "waba_id": waba,
        "tier": tier.as_str(),
        "events": events.iter().map(|e| json!({
            "at": e.at.to_rfc3339(),
            "tier": e.tier.as_str(),
            "previous": e.previous.as_str(),
            "actor": e.actor,
            "reason": e.reason,
        })).collect::<Vec<_>>(),
    }))
}

/// `GET /relay/v1/admin/businesses/{waba}/tier`: the tier and its audited changes.
pub(crate) async fn tier(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    Path(waba): Path<String>,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let waba: WabaId = waba
        .parse()
        .map_err(|e| HttpError::bad_request(format!("{e}")))?;
    Ok(Json(tier_json(&relay, &waba).await?))
}

/// `POST /relay/v1/admin/businesses/{waba}/tier` `{"tier": "app"|"api", "by", "reason"}`:
/// an operator's decision, audited.
pub(crate) async fn set_tier(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    Path(waba): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let change: TierChange = parse(&body)?;
    let waba: WabaId = waba
        .parse()
        .map_err(|e| HttpError::bad_request(format!("{e}")))?;
    let tier = BusinessTier::parse(&change.tier)
        .ok_or_else(|| HttpError::bad_request("`tier` is \"api\" or \"app\""))?;
    let by = change.by.unwrap_or_else(|| "operator".into());
    if by.is_empty() || by.len() > 100 || change.reason.as_ref().is_some_and(|r| r.len() > 1000) {
        return Err(HttpError::bad_request(
            "`by` is 1 to 100 characters, `reason` at most 1000",
        ));
    }
    let event = TierEvent {
        at: UnixTime::now(),
        tier,
        previous: tier,
        actor: format!("operator:{by}"),
        reason: change.reason,
    };
    let changed = relay
        .store
        .set_business_tier(&waba, event)
        .await?
        .ok_or_else(|| {
            HttpError::not_found("no business with this WABA id has a number at the relay")
        })?;
    if changed {
        tracing::info!(%waba, tier = tier.as_str(), %by, "business tier changed");
    }
    let mut out = tier_json(&relay, &waba).await?;
    out["changed"] = changed.into();
    Ok(Json(out))
}

fn clock_json(waba: &WabaId, clock: BusinessClock) -> Value {
    json!({
        "waba_id": waba,
        "sandbox": clock.sandbox,
        "offset_seconds": clock.offset_secs,
        "now": clock.now(UnixTime::now()).0,
    })
}

async fn load_clock(relay: &Relay, waba: &str) -> Result<(WabaId, BusinessClock), HttpError> {
    let waba: WabaId = waba
        .parse()
        .map_err(|e| HttpError::bad_request(format!("{e}")))?;
    let clock = relay.store.business_clock(&waba).await?.ok_or_else(|| {
        HttpError::not_found("no business with this WABA id has a number at the relay")
    })?;
    Ok((waba, clock))
}

pub(crate) async fn clock(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    Path(waba): Path<String>,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let (waba, clock) = load_clock(&relay, &waba).await?;
    Ok(Json(clock_json(&waba, clock)))
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

pub(crate) async fn advance_clock(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    Path(waba): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let Advance { seconds } = parse(&body)?;
    let (waba, clock) = load_clock(&relay, &waba).await?;
    let advanced = clock.advanced(seconds).map_err(|e| match e {
        ClockError::NotSandbox => HttpError::conflict(e.to_string()),
        ClockError::BadStep => HttpError::bad_request(e.to_string()),
    })?;
    relay.store.set_business_clock(&waba, advanced).await?;
    tracing::info!(%waba, seconds, "test clock advanced");
    Ok(Json(clock_json(&waba, advanced)))
}
