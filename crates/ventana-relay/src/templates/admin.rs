//! The operator's review of templates over HTTP (operator token):
//!
//! - `GET /relay/v1/admin/templates?status=&waba_id=&name=&language=&category=&after=&limit=`:
//!   `{"data": [template…], "next_after": seq | null}`, in `seq` order (`status=PENDING` is
//!   the review queue);
//! - `GET /relay/v1/admin/templates/{id}`: the template with its current components, its
//!   audit trail (`audit`) and what the configured lint rules find in it (`lint`);
//! - `POST /relay/v1/admin/templates/{id}/{approve|reject|pause|disable}` with
//!   `{"reason": "…", "by": "alice", "version": 2}` (all optional, but a rejection needs a
//!   reason; `version` refuses the move if the template was edited since it was read).

use super::current_definition;
use crate::Relay;
use crate::admin::operator;
use crate::error::HttpError;
use crate::registration::parse;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use ventana_core::protocol::{ErrorCode, ProtocolError};
use ventana_core::template::{Category, TemplateStatus, lint};
use ventana_core::{UnixTime, WabaId};
use ventana_store::StoreError;
use ventana_store::template::{TemplateEvent, TemplateFilter, TemplateRecord};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
const MAX_REASON: usize = 1024;
const MAX_REVIEWER: usize = 64;

/// A template-layer error as the admin API answers it.
fn http(error: ProtocolError) -> HttpError {
    let status = match error.code {
        ErrorCode::Internal => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::NotFound => axum::http::StatusCode::NOT_FOUND,
        ErrorCode::Conflict => axum::http::StatusCode::CONFLICT,
        _ => axum::http::StatusCode::BAD_REQUEST,
    };
    HttpError(status, error)
}

fn no_template(id: &str) -> HttpError {
    HttpError::missing(format!("no template {id}"))
}

fn template_json(record: &TemplateRecord) -> Result<Value, HttpError> {
    let components: Value = serde_json::from_str(&record.components).map_err(|e| {
        StoreError::Backend(format!(
            "template {} has unreadable components: {e}",
            record.id
        ))
    })?;
    Ok(json!({
        "id": record.id,
        "seq": record.seq,
        "waba_id": record.waba_id,
        "name": record.name,
        "language": record.language,
        "category": record.category,
        "status": record.status,
        "version": record.version,
        "parameter_format": record.parameter_format,
        "components": components,
        "reason": record.reason,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }))
}

fn audit_json(event: &TemplateEvent) -> Value {
    json!({
        "seq": event.seq,
        "from": event.from,
        "to": event.to,
        "actor": event.actor,
        "reason": event.reason,
        "at": event.at,
        "version": event.version,
    })
}

/// The listing's query string; every value is checked below, so a mistake gets a clear 400.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    waba_id: Option<String>,
    name: Option<String>,
    language: Option<String>,
    category: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// A query value parsed, empty meaning absent.
fn param<T>(
    value: Option<String>,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, HttpError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => parse(text)
            .map(Some)
            .map_err(|e| HttpError::bad_request(format!("{what}: {e}"))),
    }
}

pub(crate) async fn list(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let Query(query) = query.map_err(|e| HttpError::bad_request(e.body_text()))?;
    let number = |s: &str| s.parse::<i64>().map_err(|_| "not a number".to_owned());
    let filter = TemplateFilter {
        waba_id: param(query.waba_id, "waba_id", |s| {
            s.parse::<WabaId>().map_err(|e| e.to_string())
        })?,
        name: param(query.name, "name", |s| Ok(s.to_owned()))?,
        status: param(query.status, "status", str::parse::<TemplateStatus>)?,
        category: param(query.category, "category", str::parse::<Category>)?,
        language: param(query.language, "language", |s| Ok(s.to_owned()))?,
    };
    let after = param(query.after, "after", number)?;
    let limit = match param(query.limit, "limit", number)? {
        None | Some(0) => DEFAULT_LIMIT,
        Some(n) if n < 0 => return Err(HttpError::bad_request("limit: must not be negative")),
        Some(n) => u32::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
    };
    let mut page = relay
        .store
        .list_templates(&filter, after, None, limit + 1)
        .await?;
    let next_after = if page.len() > limit as usize {
        page.truncate(limit as usize);
        page.last().map(|t| t.seq)
    } else {
        None
    };
    let data = page
        .iter()
        .map(template_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "data": data, "next_after": next_after })))
}

pub(crate) async fn show(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let record = relay
        .store
        .template(&id)
        .await?
        .ok_or_else(|| no_template(&id))?;
    let audit = relay.store.template_audit(&id).await?;
    let findings = lint(
        &current_definition(&record).map_err(http)?,
        &relay.templates.lint,
    );
    let mut shown = template_json(&record)?;
    shown["audit"] = audit.iter().map(audit_json).collect();
    shown["lint"] = json!(findings);
    Ok(Json(shown))
}

/// What an operator sends with a review decision.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Decision {
    reason: Option<String>,
    /// Who decides, recorded as `operator:<by>`.
    by: Option<String>,
    /// The version the operator reviewed; the move is refused if the template changed since.
    version: Option<u32>,
}

/// A review action of the route, and how its outcome reads.
fn action(name: &str) -> Option<(TemplateStatus, &'static str)> {
    match name {
        "approve" => Some((TemplateStatus::Approved, "approved")),
        "reject" => Some((TemplateStatus::Rejected, "rejected")),
        "pause" => Some((TemplateStatus::Paused, "paused")),
        "disable" => Some((TemplateStatus::Disabled, "disabled")),
        _ => None,
    }
}

fn reviewer(by: Option<String>) -> Result<String, HttpError> {
    let by = by.as_deref().map(str::trim).unwrap_or_default();
    if by.is_empty() {
        return Ok("operator:operator".to_owned());
    }
    let fits = by.chars().count() <= MAX_REVIEWER
        && by
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !fits {
        return Err(HttpError::bad_request(format!(
            "by: a reviewer's name is 1 to {MAX_REVIEWER} letters, digits, '.', '_', '-' or '@'"
        )));
    }
    Ok(format!("operator:{by}"))
}

pub(crate) async fn review(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let (to, done) = action(&name).ok_or_else(|| {
        HttpError::missing(format!(
            "no review action {name:?}: use approve, reject, pause or disable"
        ))
    })?;
    let decision: Decision = if body.trim_ascii().is_empty() {
        Decision::default()
    } else {
        parse(&body)?
    };
    let actor = reviewer(decision.by)?;
    let reason = decision
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON)
    {
        return Err(HttpError::bad_request(format!(
            "reason: at most {MAX_REASON} characters"
        )));
    }
    if to == TemplateStatus::Rejected && reason.is_none() {
        return Err(HttpError::bad_request(
            "reason: a rejection tells the business why",
        ));
    }
    let record = relay
        .store
        .template(&id)
        .await?
        .ok_or_else(|| no_template(&id))?;
    if let Some(version) = decision.version
        && version != record.version
    {
        return Err(HttpError::conflict(format!(
            "template {id} is at version {}, not {version}: it changed since it was read",
            record.version
        )));
    }
    if !record.status.may_become(to) {
        return Err(HttpError::conflict(format!(
            "template {id} is {} and cannot be {done}",
            record.status
        )));
    }
    // From the status just read: if someone moved it meanwhile, the store refuses (409).
    let moved = relay
        .store
        .set_template_status(&id, record.status, to, &actor, reason, UnixTime::now())
        .await?;
    tracing::info!(%id, from = %record.status, to = %moved.status, %actor, "template reviewed");
    Ok(Json(template_json(&moved)?))
}
