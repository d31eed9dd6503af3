//! Registering devices. A user device proves its number with a one-time code; a business
//! number's device is registered by the operator (whose token stands in for the proof).

use crate::error::{HttpError, bearer};
use crate::{CODE_TTL_SECS, Relay};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use rand::Rng;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;
use ventana_core::UnixTime;
use ventana_core::protocol::{DeviceRegistration, Registered, SignedKey, VerificationRequest};
use ventana_core::rules::AccountKind;
use ventana_crypto::Token;
use ventana_store::relay::{AccountRecord, NewDevice, VerificationOutcome};

/// At most this many one-time keys per upload.
pub(crate) const MAX_KEYS_PER_UPLOAD: usize = 200;

pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("invalid request body: {e}")))
}

pub(crate) async fn request_code(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), HttpError> {
    let request: VerificationRequest = parse(&body)?;
    // Each code is an SMS the platform pays for: one client may not send them to every number.
    if !relay.code_requests.allow(peer.ip()) {
        return Err(HttpError::too_many(
            "too many codes were requested from this address; try again later",
        ));
    }
    let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
    let now = UnixTime::now();
    let issued = relay
        .store
        .put_verification(&request.phone, &code, now, now.plus_secs(CODE_TTL_SECS))
        .await?;
    if !issued {
        return Err(HttpError::too_many(
            "too many codes were requested for this number; try again in an hour",
        ));
    }
    relay
        .verifier
        .deliver(&request.phone, &code)
        .await
        .map_err(|e| {
            HttpError(
                StatusCode::BAD_GATEWAY,
                ventana_core::protocol::ProtocolError::new(
                    ventana_core::protocol::ErrorCode::Internal,
                    e.to_string(),
                ),
            )
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "sent": true, "expires_in": CODE_TTL_SECS })),
    ))
}

/// Checks an upload of pre-keys against the device's identity keys: sizes, well-formed keys,
/// valid signatures.
pub(crate) fn check_keys(
    curve25519: &str,
    ed25519: &str,
    otks: &[SignedKey],
    fallback: Option<&SignedKey>,
) -> Result<(), HttpError> {
    if otks.len() > MAX_KEYS_PER_UPLOAD {
        return Err(HttpError::bad_request(format!(
            "at most {MAX_KEYS_PER_UPLOAD} one-time keys per upload"
        )));
    }
    for key in otks.iter().chain(fallback) {
        let ok = |s: &str| !s.is_empty() && s.len() <= 128;
        if !ok(&key.key_id) || !ok(&key.key) || !ok(&key.signature) {
            return Err(HttpError::bad_request(
                "every key needs key_id, key and signature (at most 128 characters each)",
            ));
        }
    }
    let keys: Vec<&SignedKey> = otks.iter().chain(fallback).collect();
    ventana_crypto::verify_device_keys(curve25519, ed25519, &keys)
        .map_err(|e| HttpError::bad_request(format!("invalid device keys: {e}")))
}

pub(crate) async fn register_device(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Registered>, HttpError> {
    let request: DeviceRegistration = parse(&body)?;
    let now = UnixTime::now();
    check_keys(
        &request.keys.curve25519,
        &request.keys.ed25519,
        &request.keys.one_time_keys,
        request.keys.fallback_key.as_ref(),
    )?;
    let keys = request.keys.one_time_keys.len() as u64;
    if keys > relay.limits.one_time_keys_per_device {
        return Err(HttpError::bad_request(format!(
            "{keys} one-time keys; a device may keep {}",
            relay.limits.one_time_keys_per_device
        )));
    }
    let account = match &request.business {
        Some(business) => {
            if !relay.is_operator(bearer(&headers)) {
                return Err(HttpError::unauthorized(
                    "business numbers are registered by the operator",
                ));
            }
            relay
                .store
                .ensure_business(&business.waba_id, business.sandbox)
                .await?;
            AccountRecord {
                address: request.phone.clone(),
                kind: AccountKind::Business,
                waba_id: Some(business.waba_id.clone()),
                verified_name: Some(business.verified_name.clone()),
                created_at: now,
            }
        }
        None => {
            let code = request.code.as_deref().ok_or_else(|| {
                HttpError::bad_request("a user device registers with the code sent to its number")
            })?;
            // Five wrong guesses burn a number's code; this bounds the guesses one client
            // spreads over many numbers.
            if !relay.registrations.allow(peer.ip()) {
                return Err(HttpError::too_many(
                    "too many registration attempts from this address; try again later",
                ));
            }
            // Before the code is spent: a full number should not cost its owner a code. The
            // store counts again when it adds the device, which is what holds.
            let max = relay.limits.devices_per_number;
            if relay.store.devices(&request.phone).await?.len() as u64 >= max {
                return Err(HttpError::limit_reached(format!(
                    "{} has {max} devices registered, as many as a number may",
                    request.phone
                )));
            }
            match relay
                .store
                .check_verification(&request.phone, code, now)
                .await?
            {
                VerificationOutcome::Verified => {}
                VerificationOutcome::WrongCode => {
                    return Err(HttpError::unauthorized("wrong verification code"));
                }
                VerificationOutcome::Expired => {
                    return Err(HttpError::unauthorized(
                        "the verification code expired; request a new one",
                    ));
                }
                VerificationOutcome::NoneRequested => {
                    return Err(HttpError::unauthorized(
                        "no verification code was requested for this number",
                    ));
                }
                VerificationOutcome::TooManyAttempts => {
                    return Err(HttpError::unauthorized(
                        "too many wrong codes; request a new one",
                    ));
                }
            }
            AccountRecord {
                address: request.phone.clone(),
                kind: AccountKind::User,
                waba_id: None,
                verified_name: None,
                created_at: now,
            }
        }
    };
    let max_devices =
        (account.kind == AccountKind::User).then_some(relay.limits.devices_per_number);
    let token = Token::generate("vdt");
    let device_id = relay
        .store
        .add_device(NewDevice {
            account,
            token_hash: token.hash().0,
            curve25519: request.keys.curve25519,
            ed25519: request.keys.ed25519,
            one_time_keys: request.keys.one_time_keys,
            fallback_key: request.keys.fallback_key,
            max_devices,
        })
        .await?;
    tracing::info!(account = %request.phone, %device_id, "device registered");
    Ok(Json(Registered {
        account: request.phone,
        device_id,
        token: token.expose().to_owned(),
    }))
}
