//! Webhook configuration as the Cloud API does it, and as the operator's admin API does it:
//!
//! - `POST`/`GET`/`DELETE /{app_id}/subscriptions` (`object`, `callback_url`,
//!   `verify_token`, `fields`): the app's callback. In Ventana every business is its own app,
//!   and its app id is its WABA id; the app token `<app_id>|<app_secret>` is accepted as well
//!   as the business's tokens.
//! - `POST`/`GET`/`DELETE /{waba_id}/subscribed_apps` (`override_callback_uri`,
//!   `verify_token`): the app subscribed to the WABA, with the WABA's override or without.
//! - `POST /{phone_number_id}` with `webhook_configuration` (`override_callback_uri`,
//!   `verify_token`; an empty URI removes it), and `GET /{phone_number_id}?fields=
//!   webhook_configuration`: a number's override.
//!
//! Parameters are read from the query string, a JSON body or a form body, as Graph does.
//! A callback is saved only after it passed Meta's handshake (see [`super::target`]).

use super::target::verify_callback;
use crate::graph::error::GraphError;
use crate::graph::query::Query;
use crate::{Gateway, Hosted};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use ventana_core::{PhoneNumberId, WabaId};
use ventana_store::webhook::CallbackChange;

/// The one `object` WhatsApp subscriptions are for.
const OBJECT: &str = "whatsapp_business_account";
/// The fields an app may subscribe to that Ventana sends.
const FIELDS: [&str; 2] = ["messages", "message_template_status_update"];
/// The parameters of these edges.
const PARAMS: [&str; 6] = [
    "object",
    "callback_url",
    "verify_token",
    "fields",
    "override_callback_uri",
    "webhook_configuration",
];
/// Longest callback URL or verify token accepted.
const MAX_PARAM: usize = 2048;

/// A request's parameters: the query's, then a JSON object body's or a form body's.
pub(crate) struct Params(Map<String, Value>);

impl Params {
    /// Parameters given as a JSON object (the admin API's); anything else is none.
    pub(crate) fn of(object: Value) -> Self {
        match object {
            Value::Object(map) => Self(map),
            _ => Self(Map::new()),
        }
    }

    pub(crate) fn read(query: Option<&str>, body: &[u8]) -> Result<Self, GraphError> {
        let mut params = Map::new();
        Self::take_form(&mut params, Query::new(query));
        let text = std::str::from_utf8(body)
            .map_err(|_| GraphError::invalid_parameter("The request body is not UTF-8."))?
            .trim();
        if text.starts_with('{') {
            match serde_json::from_str(text) {
                Ok(Value::Object(object)) => params.extend(object),
                _ => {
                    return Err(GraphError::invalid_parameter(
                        "The request body is not a valid JSON object.",
                    ));
                }
            }
        } else if !text.is_empty() {
            Self::take_form(&mut params, Query::new(Some(text)));
        }
        Ok(Self(params))
    }

    /// The parameters these edges read, from a query string or a form body.
    fn take_form(params: &mut Map<String, Value>, form: Query<'_>) {
        for key in PARAMS {
            if let Some(value) = form.get(key) {
                params.insert(key.to_owned(), Value::String(value));
            }
        }
    }

    /// A string parameter (bounded), if given.
    fn string(&self, key: &str) -> Result<Option<String>, GraphError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_PARAM => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(GraphError::invalid_parameter(format!(
                "Param {key} is longer than {MAX_PARAM} characters."
            ))),
            Some(_) => Err(GraphError::invalid_parameter(format!(
                "Param {key} must be a string."
            ))),
        }
    }

    fn required(&self, key: &str) -> Result<String, GraphError> {
        self.string(key)?.filter(|s| !s.is_empty()).ok_or_else(|| {
            GraphError::invalid_parameter(format!("The parameter {key} is required."))
        })
    }

    /// `fields`: a comma-separated string or a JSON array of names.
    fn fields(&self) -> Result<Option<Vec<String>>, GraphError> {
        let names: Vec<String> = match self.0.get("fields") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.split(',').map(|f| f.trim().to_owned()).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| GraphError::invalid_parameter("Param fields must list names."))?,
            Some(_) => {
                return Err(GraphError::invalid_parameter(
                    "Param fields must list names.",
                ));
            }
        };
        let names: Vec<String> = names.into_iter().filter(|f| !f.is_empty()).collect();
        if names.is_empty() {
            return Err(GraphError::invalid_parameter(
                "Param fields must name at least one field (leave it out for all).",
            ));
        }
        if let Some(unknown) = names.iter().find(|f| !FIELDS.contains(&f.as_str())) {
            return Err(GraphError::invalid_parameter(format!(
                "Param fields has {unknown}, which is not a field of {OBJECT} Ventana sends (it sends {}).",
                FIELDS.join(", ")
            )));
        }
        Ok(Some(names))
    }
}

/// Checks `url` may be used and performs the handshake with `verify_token`.
pub(crate) async fn verify(
    gateway: &Gateway,
    url: &str,
    verify_token: &str,
) -> Result<(), GraphError> {
    let policy = gateway.webhook_settings.policy();
    let parsed = policy
        .check(url)
        .await
        .map_err(|e| GraphError::callback_refused(e.to_string()))?;
    verify_callback(&gateway.callback_http, &parsed, verify_token)
        .await
        .map_err(|e| GraphError::callback_refused(e.to_string()))
}

fn sealed_token(gateway: &Gateway, aad: &[u8], token: &str) -> Vec<u8> {
    gateway.sealer.seal(aad, token.as_bytes())
}

/// An `override_callback_uri` with its `verify_token`, after the handshake, the token sealed
/// under `aad`; `None` when none is given (or it is empty: the override is removed).
async fn override_callback(
    gateway: &Gateway,
    params: &Params,
    aad: &[u8],
) -> Result<Option<(String, Vec<u8>)>, GraphError> {
    match params.string("override_callback_uri")? {
        Some(url) if !url.is_empty() => {
            let token = params.required("verify_token")?;
            verify(gateway, &url, &token).await?;
            Ok(Some((url, sealed_token(gateway, aad, &token))))
        }
        _ => Ok(None),
    }
}

fn waba_override_aad(waba: &WabaId) -> Vec<u8> {
    format!("business/{waba}/override_verify_token").into_bytes()
}

fn number_token_aad(number: &PhoneNumberId) -> Vec<u8> {
    format!("number/{number}/verify_token").into_bytes()
}

async fn change(
    gateway: &Gateway,
    waba: &WabaId,
    change: CallbackChange,
) -> Result<(), GraphError> {
    let found = gateway
        .store
        .change_callback(waba, change)
        .await
        .map_err(internal)?;
    if found {
        Ok(())
    } else {
        Err(GraphError::unknown_node(waba.as_str()))
    }
}

fn internal(error: impl std::fmt::Display) -> GraphError {
    tracing::error!(%error, "webhook configuration failed");
    GraphError::internal()
}

fn success() -> Value {
    json!({ "success": true })
}

/// Sets the app's callback (after its handshake): `/{app_id}/subscriptions` and the admin
/// API's `PUT …/webhook`.
pub(crate) async fn set_app_callback(
    gateway: &Gateway,
    waba: &WabaId,
    url: &str,
    verify_token: &str,
    fields: Option<Vec<String>>,
) -> Result<(), GraphError> {
    verify(gateway, url, verify_token).await?;
    let verify_token_sealed = sealed_token(gateway, &crate::aad::verify_token(waba), verify_token);
    let change_to = CallbackChange::App {
        callback: Some(url.to_owned()),
        verify_token_sealed,
        fields: fields.map(|f| f.join(",")),
    };
    change(gateway, waba, change_to).await
}

/// `/{app_id}/subscriptions`.
pub(crate) async fn app_subscriptions(
    gateway: &Arc<Gateway>,
    waba: &WabaId,
    method: &axum::http::Method,
    params: &Params,
) -> Result<Value, GraphError> {
    use axum::http::Method;
    match *method {
        Method::POST => {
            let object = params.required("object")?;
            if object != OBJECT {
                return Err(GraphError::invalid_parameter(format!(
                    "Param object must be {OBJECT}."
                )));
            }
            let url = params.required("callback_url")?;
            let token = params.required("verify_token")?;
            set_app_callback(gateway, waba, &url, &token, params.fields()?).await?;
            Ok(success())
        }
        Method::GET => {
            let routing = routing(gateway, waba, None).await?;
            let data = match routing.app_callback {
                Some(url) => {
                    let fields: Vec<Value> = routing
                        .fields
                        .as_deref()
                        .map_or_else(|| FIELDS.to_vec(), |f| f.split(',').collect())
                        .into_iter()
                        .map(|name| json!({ "name": name, "version": "v23.0" }))
                        .collect();
                    vec![json!({
                        "object": OBJECT,
                        "callback_url": url,
                        "active": routing.subscribed,
                        "fields": fields,
                    })]
                }
                None => Vec::new(),
            };
            Ok(json!({ "data": data }))
        }
        Method::DELETE => {
            // No callback, no fields: events wait for one (and die after the retry period).
            let change_to = CallbackChange::App {
                callback: None,
                verify_token_sealed: Vec::new(),
                fields: None,
            };
            change(gateway, waba, change_to).await?;
            Ok(success())
        }
        ref other => Err(GraphError::method_not_allowed(other)),
    }
}

/// `/{waba_id}/subscribed_apps`.
pub(crate) async fn subscribed_apps(
    gateway: &Arc<Gateway>,
    waba: &WabaId,
    method: &axum::http::Method,
    params: &Params,
) -> Result<Value, GraphError> {
    use axum::http::Method;
    match *method {
        Method::POST => {
            let waba_callback =
                override_callback(gateway, params, &waba_override_aad(waba)).await?;
            change(gateway, waba, CallbackChange::Subscribe { waba_callback }).await?;
            Ok(success())
        }
        Method::GET => {
            let routing = routing(gateway, waba, None).await?;
            let name = gateway
                .store
                .business(waba)
                .await
                .map_err(internal)?
                .map(|b| b.name)
                .unwrap_or_default();
            let data = if routing.subscribed {
                let mut app = json!({
                    "whatsapp_business_api_data": {
                        "id": waba.as_str(),
                        "link": "",
                        "name": name,
                    }
                });
                if let Some(url) = routing.waba_callback {
                    app["override_callback_uri"] = url.into();
                }
                vec![app]
            } else {
                Vec::new()
            };
            Ok(json!({ "data": data }))
        }
        Method::DELETE => {
            change(gateway, waba, CallbackChange::Unsubscribe).await?;
            Ok(success())
        }
        ref other => Err(GraphError::method_not_allowed(other)),
    }
}

/// `POST /{phone_number_id}` with `webhook_configuration`.
pub(crate) async fn number_configuration(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    params: &Params,
) -> Result<Value, GraphError> {
    let config = match params.0.get("webhook_configuration") {
        Some(Value::Object(config)) => config.clone(),
        // Form and query parameters carry it as JSON text.
        Some(Value::String(text)) => match serde_json::from_str(text) {
            Ok(Value::Object(config)) => config,
            _ => {
                return Err(GraphError::invalid_parameter(
                    "Param webhook_configuration must be an object.",
                ));
            }
        },
        Some(_) => {
            return Err(GraphError::invalid_parameter(
                "Param webhook_configuration must be an object.",
            ));
        }
        None => {
            return Err(GraphError::invalid_parameter(
                "The parameter webhook_configuration is required.",
            ));
        }
    };
    let inner = Params(config);
    let number = &hosted.record.id;
    let callback = override_callback(gateway, &inner, &number_token_aad(number)).await?;
    let change_to = CallbackChange::Number {
        id: number.clone(),
        callback,
    };
    change(gateway, &hosted.record.waba_id, change_to).await?;
    Ok(success())
}

/// `webhook_configuration` of `GET /{phone_number_id}`: the callback at each level, and
/// which one applies.
pub(crate) async fn number_webhook_configuration(
    gateway: &Gateway,
    hosted: &Hosted,
) -> Result<Value, GraphError> {
    let routing = routing(gateway, &hosted.record.waba_id, Some(&hosted.record.id)).await?;
    let mut config = Map::new();
    if let Some(url) = &routing.app_callback {
        config.insert("application".into(), url.clone().into());
    }
    if let Some(url) = &routing.waba_callback {
        config.insert("whatsapp_business_account".into(), url.clone().into());
    }
    if let Some(url) = &routing.number_callback {
        config.insert("phone_number".into(), url.clone().into());
    }
    Ok(Value::Object(config))
}

/// The business's routing; `unknown_node` if there is no such business.
pub(crate) async fn routing(
    gateway: &Gateway,
    waba: &WabaId,
    number: Option<&PhoneNumberId>,
) -> Result<ventana_store::webhook::WebhookRouting, GraphError> {
    gateway
        .store
        .webhook_routing(waba, number)
        .await
        .map_err(internal)?
        .ok_or_else(|| GraphError::unknown_node(waba.as_str()))
}
