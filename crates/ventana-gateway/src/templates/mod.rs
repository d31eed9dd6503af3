//! Message templates on the Graph API, and their status webhooks.
//!
//! - this module: the routes, answered by the relay, which keeps each business's templates
//!   and reviews them:
//!   - `GET|POST|DELETE /{waba_id}/message_templates`: list, create, delete by name (or
//!     `hsm_id`);
//!   - `GET|POST /{template_id}`: read one, edit it (a new version, back to review).
//! - [`list`]: the listing's query, cursors and paging links.
//! - [`follow`]: the background task turning the relay's template events into
//!   `message_template_status_update` webhooks.
//!
//! The gateway asks the relay as one of the business's own numbers: the relay answers a
//! business device for its own WABA only, so a template of another business is not found,
//! and the API reports it exactly like a node that does not exist.

pub(crate) mod follow;
pub(crate) mod list;

use crate::Gateway;
use crate::graph::error::GraphError;
use crate::graph::path::GraphPath;
use crate::graph::query::Query;
use crate::graph::response;
use axum::Json;
use axum::body::Body;
use axum::http::Method;
use axum::http::request::Parts;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use ventana_client::{Endpoint, LinkError};
use ventana_core::protocol::{ErrorCode, Op, ProtocolError, Reply, TemplateInfo};
use ventana_core::{CloudError, CloudErrorKind, WabaId};

/// The WABA's edge that holds its templates.
const MESSAGE_TEMPLATES: &str = "message_templates";
/// Largest template definition or edit read; Meta's own limits keep one far below this.
const MAX_BODY: usize = 64 * 1024;
/// How long a request waits for the relay before answering "unavailable".
const RELAY_WAIT: Duration = Duration::from_secs(10);

/// Routes a request whose node is not one of the business's phone numbers: its WABA's
/// `message_templates`, one of its templates, or nothing it may see.
pub(crate) async fn route(
    gateway: &Arc<Gateway>,
    waba: &WabaId,
    path: &GraphPath,
    parts: &Parts,
    body: Body,
) -> Result<Json<Value>, GraphError> {
    if path.node == waba.as_str() {
        return match (path.edge.as_deref(), &parts.method) {
            (Some(MESSAGE_TEMPLATES), &Method::GET) => list(gateway, waba, parts).await,
            (Some(MESSAGE_TEMPLATES), &Method::POST) => create(gateway, waba, body).await,
            (Some(MESSAGE_TEMPLATES), &Method::DELETE) => delete(gateway, waba, parts).await,
            (Some(MESSAGE_TEMPLATES), method) => Err(GraphError::method_not_allowed(method)),
            (None, &Method::GET) => crate::analytics::waba_node(gateway, waba, parts).await,
            _ => Err(GraphError::unknown_node(&path.node)),
        };
    }
    let unknown = || GraphError::unknown_node(&path.node);
    if path.edge.is_some() || !is_template_id(&path.node) {
        return Err(unknown());
    }
    // Without a number the business can have no templates to find.
    let via = through(gateway, waba).ok_or_else(unknown)?;
    let op = Op::TemplateGet {
        id: path.node.clone(),
    };
    let template = match ask(&via, op, |e| match e.code {
        ErrorCode::NotFound | ErrorCode::BadRequest => unknown(),
        _ => refusal(e),
    })
    .await?
    {
        Reply::Template { template } => template,
        other => return Err(unexpected(&other)),
    };
    match parts.method {
        Method::GET => {
            let fields = list::fields(&Query::new(parts.uri.query()));
            Ok(Json(response::template(&template, fields.as_deref(), true)))
        }
        Method::POST => edit(gateway, &via, template, body).await,
        ref method => Err(GraphError::method_not_allowed(method)),
    }
}

/// `POST /{waba_id}/message_templates`: submits a template in the Cloud API's JSON.
async fn create(
    gateway: &Arc<Gateway>,
    waba: &WabaId,
    body: Body,
) -> Result<Json<Value>, GraphError> {
    let via =
        through(gateway, waba).ok_or_else(|| GraphError::no_business_number(waba.as_str()))?;
    let definition = json_object(
        body,
        "the template's name, language, category and components",
    )
    .await?;
    let op = Op::TemplateCreate { definition };
    let reply = ask(&via, op, |e| match e.code {
        // The relay names the name and language that exist.
        ErrorCode::Conflict => GraphError::template_exists(e.message),
        _ => refusal(e),
    })
    .await?;
    let Reply::Template { template } = reply else {
        return Err(unexpected(&reply));
    };
    gateway.template_events_due.notify_one();
    Ok(Json(response::template_created(&template)))
}

/// `GET /{waba_id}/message_templates`: a page of the business's templates.
async fn list(
    gateway: &Arc<Gateway>,
    waba: &WabaId,
    parts: &Parts,
) -> Result<Json<Value>, GraphError> {
    let request = list::ListRequest::parse(&Query::new(parts.uri.query()))?;
    let via =
        through(gateway, waba).ok_or_else(|| GraphError::no_business_number(waba.as_str()))?;
    let op = Op::TemplateList {
        query: request.query.clone(),
    };
    match ask(&via, op, refusal).await? {
        Reply::Templates {
            templates,
            has_before,
            has_after,
        } => Ok(Json(list::page(
            &request, parts, &templates, has_before, has_after,
        ))),
        other => Err(unexpected(&other)),
    }
}

/// `DELETE /{waba_id}/message_templates?name=X[&hsm_id=ID]`: every language of `name`, or
/// only the template `hsm_id` (which must be named `name`).
async fn delete(
    gateway: &Arc<Gateway>,
    waba: &WabaId,
    parts: &Parts,
) -> Result<Json<Value>, GraphError> {
    let query = Query::new(parts.uri.query());
    let name = query
        .get("name")
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            GraphError::invalid_parameter("name: the name of the template to delete is required.")
        })?;
    let id = query
        .get("hsm_id")
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty());
    if let Some(id) = id.as_deref().filter(|id| !is_template_id(id)) {
        return Err(GraphError::invalid_parameter(format!(
            "hsm_id: {id:?} is not a template id."
        )));
    }
    let via =
        through(gateway, waba).ok_or_else(|| GraphError::no_business_number(waba.as_str()))?;
    let nothing = || {
        GraphError::template_not_found(match &id {
            Some(id) => format!("No message template {id} named {name} exists in this account."),
            None => format!("No message template named {name} exists in this account."),
        })
    };
    let op = Op::TemplateDelete {
        name: name.clone(),
        id: id.clone(),
    };
    let reply = ask(&via, op, |e| match e.code {
        ErrorCode::NotFound => nothing(),
        _ => refusal(e),
    })
    .await?;
    match reply {
        Reply::Templates { templates, .. } if templates.is_empty() => return Err(nothing()),
        Reply::Done | Reply::Template { .. } | Reply::Templates { .. } => {}
        other => return Err(unexpected(&other)),
    }
    gateway.template_events_due.notify_one();
    Ok(Json(response::success()))
}

/// `POST /{template_id}` with `{"category"?, "components"?}`: a new version, pending review.
async fn edit(
    gateway: &Arc<Gateway>,
    via: &Endpoint,
    template: TemplateInfo,
    body: Body,
) -> Result<Json<Value>, GraphError> {
    let edit = json_object(body, "the template's new category and/or components").await?;
    let op = Op::TemplateEdit {
        id: template.id.clone(),
        edit,
    };
    let reply = ask(via, op, |e| match e.code {
        ErrorCode::NotFound => GraphError::unknown_node(&template.id),
        ErrorCode::Conflict => GraphError::template_changed(format!(
            "The template {} cannot be edited now: {}",
            template.id, e.message
        )),
        _ => refusal(e),
    })
    .await?;
    match reply {
        Reply::Done | Reply::Template { .. } => {}
        other => return Err(unexpected(&other)),
    }
    gateway.template_events_due.notify_one();
    Ok(Json(response::success()))
}

/// The endpoint of one of the WABA's numbers to ask the relay through: a connected one if
/// any (a request through another waits for it to connect, up to [`RELAY_WAIT`]).
pub(crate) fn through(gateway: &Gateway, waba: &WabaId) -> Option<Arc<Endpoint>> {
    let numbers = crate::read(&gateway.numbers);
    let mut candidates = numbers
        .values()
        .filter(|h| h.record.waba_id == *waba)
        .map(|h| &h.endpoint);
    let first = candidates.next()?;
    let connected = std::iter::once(first)
        .chain(candidates)
        .find(|e| e.link().is_connected());
    Some(Arc::clone(connected.unwrap_or(first)))
}

/// Sends one op to the relay and waits for its answer. A refusal is turned into the caller's
/// Graph error by `refused`; a relay that fails or does not answer is "unavailable".
pub(crate) async fn ask(
    via: &Endpoint,
    op: Op,
    refused: impl FnOnce(ProtocolError) -> GraphError,
) -> Result<Reply, GraphError> {
    match via.link().request(op, RELAY_WAIT).await {
        Ok(reply) => Ok(reply),
        Err(LinkError::Refused(error)) if error.code == ErrorCode::Internal => {
            tracing::warn!(%error, "the relay failed a request");
            Err(unavailable())
        }
        Err(LinkError::Refused(error)) => Err(refused(error)),
        Err(error) => {
            tracing::warn!(%error, number = %via.owner(), "relay request not answered");
            Err(unavailable())
        }
    }
}

/// The Graph error of a refusal every template op may meet.
fn refusal(error: ProtocolError) -> GraphError {
    let refusal = CloudError::of_template_request(&error);
    if refusal.kind() == CloudErrorKind::SomethingWentWrong {
        tracing::error!(%error, "the relay refused a template request unexpectedly");
    }
    refusal.into()
}

pub(crate) fn unexpected(reply: &Reply) -> GraphError {
    tracing::error!(?reply, "the relay answered a request with the wrong reply");
    GraphError::internal()
}

fn unavailable() -> GraphError {
    GraphError::unavailable("The platform is temporarily unavailable; retry later.")
}

/// A request body that must be one JSON object; `what` says what it should hold.
async fn json_object(body: Body, what: &str) -> Result<Value, GraphError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| GraphError::payload_too_large(MAX_BODY))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        GraphError::invalid_parameter(format!("The request body is not valid JSON: {e}."))
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(GraphError::invalid_parameter(format!(
            "The request body must be a JSON object with {what}."
        )))
    }
}

/// Template ids are numeric strings, as Meta's are (1 to 32 digits here).
fn is_template_id(node: &str) -> bool {
    (1..=32).contains(&node.len()) && node.bytes().all(|b| b.is_ascii_digit())
}
