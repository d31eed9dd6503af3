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
use ventana_core::time::ClockError;
use ventana_core::{BusinessClock, PhoneNumber, UnixTime, WabaId};

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
