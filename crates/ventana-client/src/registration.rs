//! Registering a device with the relay and keeping its identity, sealed, in the local store.

use crate::ClientError;
use ventana_core::protocol::{
    BusinessNumber, DeviceKeys, DeviceRegistration, Registered, VerificationRequest,
};
use ventana_core::{DeviceId, PhoneNumber};
use ventana_crypto::{DeviceAccount, Sealer, TARGET_ONE_TIME_KEYS};
use ventana_store::EndpointStore;
use ventana_store::endpoint::IdentityRecord;

/// How a device proves it may speak for a number.
pub enum Proof {
    /// The one-time code the relay's verifier delivered to the number.
    Code(String),
    /// The operator registers a business number (its token stands in for the proof).
    Operator {
        token: String,
        business: BusinessNumber,
    },
}

pub(crate) fn identity_aad(owner: &PhoneNumber) -> Vec<u8> {
    format!("identity/{owner}").into_bytes()
}

pub(crate) fn token_aad(owner: &PhoneNumber) -> Vec<u8> {
    format!("relay-token/{owner}").into_bytes()
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("no details")
        .to_owned();
    Err(ClientError::Http(format!("{status}: {message}")))
}

/// Asks the relay to send a verification code to `phone`.
pub async fn request_code(
    http: &reqwest::Client,
    relay_url: &str,
    phone: &PhoneNumber,
) -> Result<(), ClientError> {
    let url = format!("{}/relay/v1/verifications", relay_url.trim_end_matches('/'));
    let response = http
        .post(url)
        .json(&VerificationRequest {
            phone: phone.clone(),
        })
        .send()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    check(response).await.map(|_| ())
}

/// Creates the device's keys, registers it, and stores its sealed identity.
pub async fn register(
    http: &reqwest::Client,
    relay_url: &str,
    phone: &PhoneNumber,
    display_name: &str,
    proof: Proof,
    store: &dyn EndpointStore,
    sealer: &Sealer,
) -> Result<DeviceId, ClientError> {
    let mut account = DeviceAccount::new();
    let (one_time_keys, fallback_key) = account.unpublished_keys(TARGET_ONE_TIME_KEYS, true);
    let (code, business, operator) = match proof {
        Proof::Code(code) => (Some(code), None, None),
        Proof::Operator { token, business } => (None, Some(business), Some(token)),
    };
    let registration = DeviceRegistration {
        phone: phone.clone(),
        code,
        business,
        keys: DeviceKeys {
            curve25519: account.curve25519(),
            ed25519: account.ed25519(),
            one_time_keys,
            fallback_key,
        },
    };
    let url = format!("{}/relay/v1/devices", relay_url.trim_end_matches('/'));
    let mut request = http.post(url).json(&registration);
    if let Some(token) = operator {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let registered: Registered = check(response)
        .await?
        .json()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    account.mark_published();
    store
        .save_identity(IdentityRecord {
            owner: phone.clone(),
            device_id: registered.device_id,
            relay_token_sealed: sealer.seal(&token_aad(phone), registered.token.as_bytes()),
            account_sealed: account.seal(sealer, &identity_aad(phone))?,
            display_name: display_name.to_owned(),
        })
        .await?;
    Ok(registered.device_id)
}
