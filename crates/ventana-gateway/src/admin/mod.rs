//! Operator routes of the gateway: businesses, their numbers, and their access tokens;
//! their webhooks in `webhooks`. Authenticated with the operator token; errors as
//! `{"error":{"code","message"}}`.

mod webhooks;

use crate::webhook::target::verify_callback;
use crate::{Gateway, GatewayError, aad};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use ventana_client::registration::{Proof, register};
use ventana_core::protocol::BusinessNumber;
use ventana_core::{PhoneNumber, PhoneNumberId, UnixTime, WabaId};
use ventana_crypto::Token;
use ventana_store::StoreError;
use ventana_store::endpoint::{AccessTokenRecord, BusinessRecord, PhoneNumberRecord};

pub(crate) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route(
            "/admin/v1/businesses",
            get(list_businesses).post(create_business),
        )
        .route(
            "/admin/v1/businesses/{waba}/phone_numbers",
            get(list_numbers).post(add_number),
        )
        .route(
            "/admin/v1/businesses/{waba}/tokens",
            get(list_tokens).post(issue_token),
        )
        .route(
            "/admin/v1/businesses/{waba}/tokens/{id}",
            delete(revoke_token),
        )
        .merge(webhooks::routes())
}

pub(crate) struct AdminError(
    pub(crate) StatusCode,
    pub(crate) &'static str,
    pub(crate) String,
);

impl AdminError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, "bad_request", message.into())
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, "not_found", message.into())
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self(StatusCode::CONFLICT, "conflict", what.detail),
            StoreError::Backend(what) => {
                tracing::error!(%what, "gateway store failed");
                Self(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".into(),
                )
            }
        }
    }
}

impl From<GatewayError> for AdminError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Store(e) => e.into(),
            GatewayError::Client(e) => Self(StatusCode::BAD_GATEWAY, "relay", e.to_string()),
            GatewayError::Http(e) => Self(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({ "error": { "code": self.1, "message": self.2 } })),
        )
            .into_response()
    }
}

pub(crate) fn operator(gateway: &Gateway, headers: &HeaderMap) -> Result<(), AdminError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if Token::from_presented(t.trim()).hash() == gateway.operator => Ok(()),
        _ => Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "operator token required".into(),
        )),
    }
}

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|e| AdminError::bad(format!("invalid request body: {e}")))
}

pub(crate) fn waba(text: &str) -> Result<WabaId, AdminError> {
    text.parse().map_err(|e| AdminError::bad(format!("{e}")))
}

#[derive(Deserialize)]
pub struct NewBusiness {
    pub waba_id: WabaId,
    pub name: String,
    pub app_secret: String,
    #[serde(default)]
    pub webhook_url: Option<String>,
    pub verify_token: String,
    #[serde(default)]
    pub sandbox: bool,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct BusinessCreated {
    pub waba_id: WabaId,
    pub name: String,
    pub sandbox: bool,
    pub webhook_url: Option<String>,
    /// Whether the webhook answered Meta's `hub.challenge` verification (None: no URL).
    pub webhook_verified: Option<bool>,
}

async fn create_business(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<BusinessCreated>), AdminError> {
    operator(&gateway, &headers)?;
    let new: NewBusiness = parse(&body)?;
    if new.name.trim().is_empty() || new.app_secret.len() < 16 || new.verify_token.is_empty() {
        return Err(AdminError::bad(
            "name, an app_secret of at least 16 characters and a verify_token are required",
        ));
    }
    let policy = gateway.webhook_settings.policy();
    let checked_url = match &new.webhook_url {
        Some(url) => Some(
            policy
                .check(url)
                .await
                .map_err(|e| AdminError::bad(format!("webhook_url: {e}")))?,
        ),
        None => None,
    };
    gateway
        .store
        .create_business(BusinessRecord {
            waba_id: new.waba_id.clone(),
            name: new.name.clone(),
            app_secret_sealed: gateway
                .sealer
                .seal(&aad::app_secret(&new.waba_id), new.app_secret.as_bytes()),
            webhook_url: new.webhook_url.clone(),
            verify_token_sealed: gateway.sealer.seal(
                &aad::verify_token(&new.waba_id),
                new.verify_token.as_bytes(),
            ),
            sandbox: new.sandbox,
            created_at: UnixTime::now(),
        })
        .await?;
    // Created either way (the operator may start the receiver later); the answer says
    // whether it passed the handshake. Through the Cloud API a callback that fails it is
    // refused (`/{app_id}/subscriptions`).
    let webhook_verified = match &checked_url {
        Some(url) => Some(
            verify_callback(&gateway.callback_http, url, &new.verify_token)
                .await
                .is_ok(),
        ),
        None => None,
    };
    tracing::info!(waba = %new.waba_id, sandbox = new.sandbox, "business created");
    Ok((
        StatusCode::CREATED,
        Json(BusinessCreated {
            waba_id: new.waba_id,
            name: new.name,
            sandbox: new.sandbox,
            webhook_url: new.webhook_url,
            webhook_verified,
        }),
    ))
}

async fn list_businesses(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<Json<Value>, AdminError> {
    operator(&gateway, &headers)?;
    let list: Vec<Value> = gateway
        .store
        .businesses()
        .await?
        .into_iter()
        .map(|b| json!({ "waba_id": b.waba_id, "name": b.name, "sandbox": b.sandbox, "webhook_url": b.webhook_url, "created_at": b.created_at }))
        .collect();
    Ok(Json(json!({ "data": list })))
}

#[derive(Deserialize)]
pub struct NewPhoneNumber {
    pub phone_number_id: PhoneNumberId,
    pub display_phone_number: String,
    pub verified_name: String,
}

fn number_json(n: &PhoneNumberRecord) -> Value {
    json!({
        "id": n.id,
        "waba_id": n.waba_id,
        "display_phone_number": n.display_phone_number,
        "verified_name": n.verified_name,
        "wa_id": n.address,
    })
}

async fn add_number(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(waba_text): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_text)?;
    let new: NewPhoneNumber = parse(&body)?;
    let business = gateway
        .store
        .business(&waba)
        .await?
        .ok_or_else(|| AdminError::not_found("no such business"))?;
    let address: PhoneNumber = new
        .display_phone_number
        .parse()
        .map_err(|e| AdminError::bad(format!("display_phone_number: {e}")))?;
    if new.verified_name.trim().is_empty() {
        return Err(AdminError::bad("verified_name is required"));
    }
    if gateway
        .store
        .phone_number(&new.phone_number_id)
        .await?
        .is_some()
        || gateway
            .store
            .phone_number_by_address(&address)
            .await?
            .is_some()
    {
        return Err(AdminError(
            StatusCode::CONFLICT,
            "conflict",
            "this phone number id or number is already hosted".into(),
        ));
    }
    let proof = Proof::Operator {
        token: gateway.relay.operator_token.clone(),
        business: BusinessNumber {
            waba_id: waba.clone(),
            verified_name: new.verified_name.clone(),
            sandbox: business.sandbox,
        },
    };
    let device_id = register(
        &gateway.http,
        &gateway.relay.url,
        &address,
        &new.verified_name,
        proof,
        gateway.store.as_ref(),
        &gateway.sealer,
    )
    .await
    .map_err(GatewayError::from)?;
    let record = PhoneNumberRecord {
        id: new.phone_number_id,
        waba_id: waba,
        address,
        display_phone_number: new.display_phone_number,
        verified_name: new.verified_name,
        created_at: UnixTime::now(),
    };
    gateway.store.add_phone_number(record.clone()).await?;
    gateway.host(record.clone()).await?;
    let mut body = number_json(&record);
    body["device_id"] = json!(device_id);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list_numbers(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(waba_text): Path<String>,
) -> Result<Json<Value>, AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_text)?;
    let list: Vec<Value> = gateway
        .store
        .phone_numbers()
        .await?
        .iter()
        .filter(|n| n.waba_id == waba)
        .map(number_json)
        .collect();
    Ok(Json(json!({ "data": list })))
}

#[derive(Deserialize, Default)]
struct NewToken {
    #[serde(default)]
    label: Option<String>,
    /// A token for this person (who answers by hand) instead of for software.
    #[serde(default)]
    person: Option<String>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct TokenIssued {
    pub id: String,
    /// Shown once; only its hash is stored.
    pub token: String,
    pub label: String,
    pub waba_id: WabaId,
    /// Set for a person's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

async fn issue_token(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(waba_text): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<TokenIssued>), AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_text)?;
    let new: NewToken = if body.is_empty() {
        NewToken::default()
    } else {
        parse(&body)?
    };
    gateway
        .store
        .business(&waba)
        .await?
        .ok_or_else(|| AdminError::not_found("no such business"))?;
    let token = Token::generate("vat");
    let id = Token::generate("tok").expose()[4..16].to_owned();
    let label = new.label.unwrap_or_else(|| "default".into());
    let person = new.person.map(|p| p.trim().to_owned());
    if person
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.chars().count() > 100)
    {
        return Err(AdminError::bad("`person` is a name of 1 to 100 characters"));
    }
    gateway
        .store
        .add_token(AccessTokenRecord {
            id: id.clone(),
            waba_id: waba.clone(),
            token_hash: token.hash().0,
            label: label.clone(),
            created_at: UnixTime::now(),
            revoked_at: None,
            person: person.clone(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenIssued {
            id,
            token: token.expose().to_owned(),
            label,
            waba_id: waba,
            person,
        }),
    ))
}

async fn list_tokens(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(waba_text): Path<String>,
) -> Result<Json<Value>, AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_text)?;
    let list: Vec<Value> = gateway
        .store
        .tokens(&waba)
        .await?
        .into_iter()
        .map(|t| json!({ "id": t.id, "label": t.label, "person": t.person, "created_at": t.created_at, "revoked_at": t.revoked_at }))
        .collect();
    Ok(Json(json!({ "data": list })))
}

async fn revoke_token(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((waba_text, id)): Path<(String, String)>,
) -> Result<Json<Value>, AdminError> {
    operator(&gateway, &headers)?;
    let waba = waba(&waba_text)?;
    if gateway
        .store
        .revoke_token(&waba, &id, UnixTime::now())
        .await?
    {
        Ok(Json(json!({ "id": id, "revoked": true })))
    } else {
        Err(AdminError::not_found(
            "no live token with this id for this business",
        ))
    }
}
