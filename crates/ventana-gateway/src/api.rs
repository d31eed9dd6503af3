//! The Cloud-API-compatible REST API: Graph-style paths under any `vN.M` prefix (or none).
//!
//! - `POST /{phone_number_id}/messages`: text and template messages (now, or later with
//!   Ventana's `schedule` extension, see `schedules`) and mark-as-read, each answered once
//!   per `Idempotency-Key` (see `idempotency`).
//! - `GET`/`DELETE /{phone_number_id}/schedules`: list and cancel scheduled sends.
//! - `GET /{phone_number_id}`: the phone number (with `fields=webhook_configuration`, its
//!   callbacks); `POST /{phone_number_id}` with `webhook_configuration`: its override.
//! - `/{app_id}/subscriptions` and `/{waba_id}/subscribed_apps`: webhook configuration (see
//!   `webhook::config`).
//! - `GET`/`POST`/`DELETE /{waba_id}/message_templates` and `GET`/`POST /{template_id}`:
//!   message templates (see `templates`).

use crate::graph::auth::presented_token;
use crate::graph::error::GraphError;
use crate::graph::path::GraphPath;
use crate::graph::query::Query;
use crate::graph::response;
use crate::graph::send::{self, SendRequest};
use crate::idempotency::{self, Answer};
use crate::webhook::config::{self, Params};
use crate::{Gateway, Hosted, aad, outbound, schedules, templates};
use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use ventana_client::SendError;
use ventana_core::protocol::ReceiptStatus;
use ventana_core::{MessageId, PhoneNumberId};
use ventana_crypto::Token;
use ventana_store::endpoint::{AppRecord, Direction};

/// Largest request body the message endpoint reads.
const MAX_BODY: usize = 64 * 1024;

pub(crate) fn routes() -> Router<Arc<Gateway>> {
    Router::new().fallback(graph)
}

async fn graph(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
) -> Result<Response, GraphError> {
    let (parts, body) = request.into_parts();
    let path = GraphPath::parse(parts.uri.path())
        .ok_or_else(|| GraphError::unknown_node(parts.uri.path()))?;
    let token = presented_token(&parts.headers, parts.uri.query()).ok_or_else(|| {
        GraphError::bad_token("An access token is required to request this resource.")
    })?;
    let record = authenticate(&gateway, &token).await?;
    if record.app
        && !(path.node == record.waba_id.as_str()
            && matches!(
                path.edge.as_deref(),
                Some("subscriptions" | "subscribed_apps")
            ))
    {
        return Err(GraphError::bad_token(
            "An app access token can only manage the app's webhook subscriptions.",
        ));
    }
    // A number of another business is indistinguishable from one that does not exist; a
    // node that is no number of the business may be its WABA or one of its templates.
    let hosted = match path.node.parse::<PhoneNumberId>() {
        Ok(id) => hosted(&gateway, &id, &record.waba_id).await?,
        Err(_) => None,
    };
    let Some(hosted) = hosted else {
        if path.node == record.waba_id.as_str()
            && let Some(edge @ ("subscriptions" | "subscribed_apps")) = path.edge.as_deref()
        {
            let bytes = axum::body::to_bytes(body, MAX_BODY)
                .await
                .map_err(|_| GraphError::payload_too_large(MAX_BODY))?;
            let params = Params::read(parts.uri.query(), &bytes)?;
            let answer = if edge == "subscriptions" {
                config::app_subscriptions(&gateway, &record.waba_id, &parts.method, &params).await
            } else {
                config::subscribed_apps(&gateway, &record.waba_id, &parts.method, &params).await
            };
            return answer.map(|value| Json(value).into_response());
        }
        return templates::route(&gateway, &record.waba_id, &path, &parts, body)
            .await
            .map(IntoResponse::into_response);
    };
    match (parts.method.clone(), path.edge.as_deref()) {
        (Method::GET, None) => {
            let mut number = response::phone_number(
                &hosted.record.id,
                &hosted.record.display_phone_number,
                &hosted.record.verified_name,
            );
            let asked = Query::new(parts.uri.query()).get("fields");
            if asked.is_some_and(|f| f.split(',').any(|f| f.trim() == "webhook_configuration")) {
                number["webhook_configuration"] =
                    config::number_webhook_configuration(&gateway, &hosted).await?;
            }
            Ok(Json(number).into_response())
        }
        (Method::POST, None) => {
            let bytes = axum::body::to_bytes(body, MAX_BODY)
                .await
                .map_err(|_| GraphError::payload_too_large(MAX_BODY))?;
            let params = Params::read(parts.uri.query(), &bytes)?;
            config::number_configuration(&gateway, &hosted, &params)
                .await
                .map(|value| Json(value).into_response())
        }
        (Method::POST, Some("messages")) => {
            let bytes = axum::body::to_bytes(body, MAX_BODY)
                .await
                .map_err(|_| GraphError::payload_too_large(MAX_BODY))?;
            let by_person = record.person.is_some();
            messages(&gateway, &hosted, &parts.headers, &bytes, by_person).await
        }
        (Method::GET, Some("schedules")) => schedules::list(&gateway, &hosted, parts.uri.query())
            .await
            .map(IntoResponse::into_response),
        (Method::DELETE, Some("schedules")) => {
            schedules::cancel(&gateway, &hosted, parts.uri.query())
                .await
                .map(IntoResponse::into_response)
        }
        (method, Some("messages" | "schedules")) | (method, None) => {
            Err(GraphError::method_not_allowed(&method))
        }
        (_, Some(_)) => Err(GraphError::unknown_node(&path.node)),
    }
}

/// Who presents `token`: one of a business's access tokens, or its app token
/// `<app_id>|<app_secret>` (a business's app id is its WABA id), which Graph asks for on
/// `/{app_id}/subscriptions`.
async fn authenticate(gateway: &Gateway, token: &str) -> Result<Caller, GraphError> {
    let bad = || GraphError::bad_token("Invalid OAuth access token - Cannot parse access token");
    if let Some((app_id, secret)) = token.split_once('|') {
        let waba: ventana_core::WabaId = app_id.parse().map_err(|_| bad())?;
        let business = gateway
            .store
            .business(&waba)
            .await
            .map_err(internal)?
            .ok_or_else(bad)?;
        let expected = gateway
            .sealer
            .open(&aad::app_secret(&waba), &business.app_secret_sealed)
            .map_err(|_| {
                tracing::error!(%waba, "a business's app secret does not open: wrong seal key?");
                bad()
            })?;
        return if same_secret(&expected, secret.as_bytes()) {
            Ok(Caller {
                waba_id: waba,
                person: None,
                app: true,
            })
        } else {
            Err(bad())
        };
    }
    let record = gateway
        .store
        .token_by_hash(&Token::from_presented(token).hash().0)
        .await
        .map_err(internal)?
        .filter(|t| t.revoked_at.is_none())
        .ok_or_else(bad)?;
    Ok(Caller {
        waba_id: record.waba_id,
        person: record.person,
        app: false,
    })
}

/// Compares two secrets through their SHA-256 digests, so how long the comparison takes
/// says nothing about how much of the secret was guessed.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(a) == Sha256::digest(b)
}

/// Whom a request is from: a business, through its software or one of its people.
struct Caller {
    waba_id: ventana_core::WabaId,
    /// Set for a token issued to a person: free-form sends with it are replies by hand.
    person: Option<String>,
    /// The app token `<app_id>|<app_secret>`: good for the app's webhook subscription only.
    /// The app secret also signs the webhooks, so every receiver holds it; it must not send
    /// messages or change templates.
    app: bool,
}

fn internal(error: impl std::fmt::Display) -> GraphError {
    tracing::error!(%error, "business API failed");
    GraphError::internal()
}

/// The number `id` of business `waba` as this node hosts it. One added through another node
/// moments ago is hosted here on the spot, so only a number that does not exist (for this
/// business) is unknown; another business's number is never touched.
async fn hosted(
    gateway: &Arc<Gateway>,
    id: &PhoneNumberId,
    waba: &ventana_core::WabaId,
) -> Result<Option<Hosted>, GraphError> {
    if let Some(hosted) = gateway.hosted(id) {
        return Ok(Some(hosted).filter(|h| &h.record.waba_id == waba));
    }
    let Some(record) = gateway
        .store
        .phone_number(id)
        .await
        .map_err(internal)?
        .filter(|r| &r.waba_id == waba)
    else {
        return Ok(None);
    };
    gateway.host(record).await.map_err(|e| {
        tracing::warn!(number = %id, error = %e, "could not host a number added elsewhere");
        GraphError::unavailable("The platform is temporarily unavailable; retry later.")
    })?;
    Ok(gateway.hosted(id))
}

/// `POST /{phone_number_id}/messages`: once per `Idempotency-Key` if the request has one.
async fn messages(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    headers: &HeaderMap,
    body: &[u8],
    by_person: bool,
) -> Result<Response, GraphError> {
    let json = send::json(body)?;
    let request = SendRequest::from_json(&json)?;
    if send::dry_run(&json)? {
        return dry_run(hosted, &request, by_person).await;
    }
    let key = idempotency::key_of(headers, &json)?;
    let Some(key) = key else {
        let answer = handle(
            gateway,
            hosted,
            &request,
            body,
            MessageId::generate(),
            by_person,
        )
        .await?;
        return Ok(answer.into_response());
    };
    let answer = idempotency::once(
        gateway,
        hosted,
        key,
        idempotency::fingerprint(&json),
        |id| committed(gateway, hosted, &request, id),
        |id| handle(gateway, hosted, &request, body, id, by_person),
    )
    .await?;
    Ok(answer.into_response())
}

/// Ventana's `"dry_run": true`: what the send would do (refused as it would be, or priced as
/// it would be were it delivered now), with nothing sent, scheduled or written.
async fn dry_run(
    hosted: &Hosted,
    request: &SendRequest,
    by_person: bool,
) -> Result<Response, GraphError> {
    let (to, input) = match request {
        SendRequest::Text {
            to,
            input,
            schedule: None,
            ..
        }
        | SendRequest::Template {
            to,
            input,
            schedule: None,
            ..
        } => (to, input),
        SendRequest::Text { .. } | SendRequest::Template { .. } => {
            return Err(GraphError::invalid_parameter(
                "dry_run previews a send now; it does not combine with schedule.",
            ));
        }
        SendRequest::MarkRead { .. } => {
            return Err(GraphError::invalid_parameter(
                "dry_run applies to sending a message, not to marking one read.",
            ));
        }
    };
    let message = outbound::prepare(hosted, request, MessageId::generate(), by_person).await?;
    let quote = outbound::preview(hosted, &message).await?;
    Ok(Json(response::dry_run(input, to, quote.as_ref())).into_response())
}

/// What to answer for a send whose earlier attempt committed message `id` and lost its
/// answer: the answer that attempt would have given. `None` if no attempt committed it.
async fn committed(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    request: &SendRequest,
    id: MessageId,
) -> Result<Option<Answer>, GraphError> {
    let owner = hosted.endpoint.owner();
    match request {
        SendRequest::Text {
            to,
            input,
            schedule,
            ..
        }
        | SendRequest::Template {
            to,
            input,
            schedule,
            ..
        } => {
            if schedule.is_some() {
                let scheduled = gateway.store.schedule(owner, &id).await.map_err(internal)?;
                return Ok(scheduled.map(|s| Answer::ok(response::scheduled(input, to, &s))));
            }
            let message = gateway.store.message(owner, &id).await.map_err(internal)?;
            Ok(message
                .filter(|m| m.direction == Direction::Outbound)
                .map(|_| Answer::ok(response::sent(input, to, &id))))
        }
        // A read receipt sent again is harmless: nothing to look for.
        SendRequest::MarkRead { .. } => Ok(None),
    }
}

/// Handles a parsed request; a send goes out (or is scheduled) under `id`. `by_person`: made
/// with a person's token (a reply by hand, unless scheduled).
async fn handle(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    request: &SendRequest,
    body: &[u8],
    id: MessageId,
    by_person: bool,
) -> Result<Answer, GraphError> {
    match request {
        SendRequest::Text {
            to,
            input,
            schedule,
            ..
        }
        | SendRequest::Template {
            to,
            input,
            schedule,
            ..
        } => {
            let manual = by_person && schedule.is_none();
            let message = outbound::prepare(hosted, request, id.clone(), manual).await?;
            if let Some(send_at) = schedule {
                let scheduled =
                    schedules::create(gateway, hosted, request, body, *send_at, id).await?;
                return Ok(Answer::ok(response::scheduled(input, to, &scheduled)));
            }
            let sent = outbound::send(gateway, hosted, message, request.callback_data()).await?;
            Ok(Answer::ok(response::sent(input, to, &sent.id)))
        }
        SendRequest::MarkRead { message_id, .. } => {
            let message_id = message_id.clone();
            let owner = hosted.endpoint.owner();
            let message = gateway
                .store
                .message(owner, &message_id)
                .await
                .map_err(internal)?
                .filter(|m| m.direction == Direction::Inbound)
                .ok_or_else(|| {
                    GraphError::invalid_parameter(format!(
                        "message_id {message_id} is not a message this number received"
                    ))
                })?;
            hosted
                .endpoint
                .send_receipt(&message.peer, ReceiptStatus::Read, vec![message_id.clone()])
                .await
                .map_err(|e| match e {
                    SendError::Refused(error) => outbound::refused(&error),
                    other => {
                        tracing::warn!(error = %other, "read receipt not sent");
                        GraphError::unavailable(
                            "The platform is temporarily unavailable; retry later.",
                        )
                    }
                })?;
            gateway
                .store
                .apply(
                    owner,
                    vec![AppRecord::Status {
                        id: message_id,
                        status: ventana_core::MessageStatus::Read,
                        announce: None,
                    }],
                )
                .await
                .map_err(internal)?;
            Ok(Answer::ok(response::success()))
        }
    }
}
