//! The template registry as devices see it: a business submits, edits, lists and deletes its
//! templates; any device fetches an approved version to render a message; a template
//! envelope is checked against the registry before the store's rules see it.
//!
//! - `policy`: the operator's [`TemplatePolicy`] (limit per business, automatic review).
//! - `admin`: the operator's review routes (`/relay/v1/admin/templates…`).
//!
//! Template text is public to the platform, so nothing here is encrypted; a business only
//! ever sees its own templates, and another business's template id is answered as absent.

pub(crate) mod admin;
mod policy;

use crate::Relay;
use crate::ops::{bad, internal};
use policy::Verdict;
pub use policy::{OnFindings, Review, TemplatePolicy, UnknownChoice};
use rand::Rng;
use serde_json::Value;
use ventana_core::protocol::{
    ErrorCode, ProtocolError, Reply, TemplateEventInfo, TemplateInfo, TemplateQuery,
    TemplateVersionInfo,
};
use ventana_core::rules::{AccountKind, RuleViolation};
use ventana_core::template::{Category, TemplateDefinition, TemplateHeader, TemplateStatus};
use ventana_core::{PhoneNumber, UnixTime, WabaId};
use ventana_store::template::{
    CreateRefusal, NewTemplate, TemplateEdit, TemplateEvent, TemplateFilter, TemplateRecord,
};
use ventana_store::{ConflictKind, StoreError};

/// Who the audit trail names for what a business does through its devices.
const BUSINESS_ACTOR: &str = "business";
/// A page of templates when the query asks for `limit: 0`, and the most a page holds.
const DEFAULT_PAGE: u32 = 25;
const MAX_PAGE: u32 = 1000;
/// Events per answer when asked for `limit: 0`, and the most one answer holds.
const DEFAULT_EVENTS: u32 = 100;
const MAX_EVENTS: u32 = 500;

fn not_found(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::NotFound, message)
}

fn no_template(id: &str) -> ProtocolError {
    not_found(format!("no template {id} in this business"))
}

/// The largest integer a JavaScript number holds exactly (2^53 - 1): ids are kept at or
/// below it, so a Node webhook handler's `JSON.parse` does not round them.
pub(crate) const MAX_SAFE_ID: u64 = (1 << 53) - 1;

/// A new template id: 16 random digits, like the Cloud API's numeric ids, exact in
/// JavaScript.
fn new_id() -> String {
    rand::rngs::OsRng
        .gen_range(1_000_000_000_000_000u64..=MAX_SAFE_ID)
        .to_string()
}

/// Rebuilds the definition of one stored version from what the registry keeps of it. The
/// registry only holds definitions that passed these rules, so a failure is the store's.
pub(crate) fn stored_definition(
    name: &str,
    language: &str,
    category: Category,
    parameter_format: &str,
    components: &str,
) -> Result<TemplateDefinition, ProtocolError> {
    let components: Value = serde_json::from_str(components).map_err(|e| {
        internal(StoreError::Backend(format!(
            "template {name} ({language}) has unreadable components: {e}"
        )))
    })?;
    TemplateDefinition::from_parts(name, language, category, parameter_format, &components).map_err(
        |e| {
            internal(StoreError::Backend(format!(
                "stored template {name} ({language}) no longer passes the rules: {e}"
            )))
        },
    )
}

/// The current version of a stored template as a definition.
pub(crate) fn current_definition(
    record: &TemplateRecord,
) -> Result<TemplateDefinition, ProtocolError> {
    stored_definition(
        &record.name,
        &record.language,
        record.category,
        &record.parameter_format,
        &record.components,
    )
}

/// Components as stored: the Cloud API's JSON array, exactly as the definition writes it.
fn components_text(def: &TemplateDefinition) -> Result<String, ProtocolError> {
    serde_json::to_string(&def.components())
        .map_err(|e| internal(StoreError::Backend(format!("writing components: {e}"))))
}

fn components_value(record: &TemplateRecord) -> Result<Value, ProtocolError> {
    serde_json::from_str(&record.components).map_err(|e| {
        internal(StoreError::Backend(format!(
            "template {} has unreadable components: {e}",
            record.id
        )))
    })
}

/// The reason a business is shown: why its template was last rejected, paused or disabled
/// (an approval's note stays in the audit trail).
fn shown_reason(record: &TemplateRecord) -> Option<String> {
    match record.status {
        TemplateStatus::Rejected | TemplateStatus::Paused | TemplateStatus::Disabled => {
            record.reason.clone()
        }
        _ => None,
    }
}

pub(crate) fn info(record: TemplateRecord) -> Result<TemplateInfo, ProtocolError> {
    Ok(TemplateInfo {
        components: components_value(&record)?,
        reason: shown_reason(&record),
        id: record.id,
        seq: record.seq,
        name: record.name,
        language: record.language,
        category: record.category,
        status: record.status,
        version: record.version,
        parameter_format: record.parameter_format,
    })
}

fn template_reply(record: TemplateRecord) -> Result<Reply, ProtocolError> {
    Ok(Reply::Template {
        template: info(record)?,
    })
}

/// The business's template with that id: another business's is answered as absent.
async fn own_template(
    relay: &Relay,
    waba: &WabaId,
    id: &str,
) -> Result<TemplateRecord, ProtocolError> {
    match relay.store.template(id).await.map_err(internal)? {
        Some(record) if record.waba_id == *waba => Ok(record),
        _ => Err(no_template(id)),
    }
}

/// Applies the operator's automatic review to a template just created or edited (status
/// `PENDING`, `record` as the store returned it) and answers it as it then stands.
async fn auto_review(
    relay: &Relay,
    record: TemplateRecord,
    def: &TemplateDefinition,
) -> Result<TemplateRecord, ProtocolError> {
    let (to, actor, reason) = match relay.templates.verdict(def) {
        Verdict::Wait => return Ok(record),
        Verdict::Approve => (
            TemplateStatus::Approved,
            "rule:lint".to_owned(),
            "no lint findings".to_owned(),
        ),
        Verdict::Reject(finding) => (
            TemplateStatus::Rejected,
            format!("rule:{}", finding.rule),
            format!("{}: {}", finding.field, finding.reason),
        ),
    };
    let moved = relay
        .store
        .set_template_status(
            &record.id,
            TemplateStatus::Pending,
            to,
            &actor,
            Some(reason),
            UnixTime::now(),
        )
        .await;
    match moved {
        Ok(reviewed) => {
            tracing::info!(id = %reviewed.id, status = %reviewed.status, %actor, "template reviewed by rule");
            Ok(reviewed)
        }
        // Someone (an operator, an edit) moved it first: theirs stands.
        Err(StoreError::Conflict(_)) => relay
            .store
            .template(&record.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| no_template(&record.id)),
        Err(e) => Err(internal(e)),
    }
}

pub(crate) async fn create(
    relay: &Relay,
    waba: &WabaId,
    definition: &Value,
) -> Result<Reply, ProtocolError> {
    let def = TemplateDefinition::parse(definition).map_err(|e| bad(e.to_string()))?;
    let components = components_text(&def)?;
    let limit = relay.templates.limit_per_business;
    // A fresh id is taken only by a one-in-10^15 accident; try another then.
    let mut attempts = 0;
    let created = loop {
        attempts += 1;
        let new = NewTemplate {
            id: new_id(),
            waba_id: waba.clone(),
            name: def.name().to_string(),
            language: def.language().to_string(),
            category: def.category(),
            parameter_format: def.parameter_format().as_str().to_owned(),
            components: components.clone(),
            actor: BUSINESS_ACTOR.to_owned(),
            now: UnixTime::now(),
        };
        match relay.store.create_template(new, limit).await {
            Err(StoreError::Conflict(c)) if c.kind == ConflictKind::Exists && attempts < 3 => {
                continue;
            }
            other => break other.map_err(internal)?,
        }
    };
    let record = match created {
        Ok(record) => record,
        Err(CreateRefusal::Exists) => {
            return Err(ProtocolError::new(
                ErrorCode::Conflict,
                format!(
                    "a template named {} already exists in language {}",
                    def.name(),
                    def.language()
                ),
            ));
        }
        Err(CreateRefusal::LimitReached) => {
            return Err(ProtocolError::new(
                ErrorCode::LimitReached,
                format!(
                    "this business already has {limit} templates, as many as it may; delete one first"
                ),
            ));
        }
    };
    tracing::info!(id = %record.id, %waba, name = %record.name, language = %record.language, "template submitted");
    template_reply(auto_review(relay, record, &def).await?)
}

pub(crate) async fn edit(
    relay: &Relay,
    waba: &WabaId,
    id: &str,
    edit: &Value,
) -> Result<Reply, ProtocolError> {
    let record = own_template(relay, waba, id).await?;
    let edited = current_definition(&record)?
        .edit(edit)
        .map_err(|e| bad(e.to_string()))?;
    let content = TemplateEdit {
        category: edited.category(),
        parameter_format: edited.parameter_format().as_str().to_owned(),
        components: components_text(&edited)?,
    };
    let record = relay
        .store
        .edit_template(id, record.version, content, BUSINESS_ACTOR, UnixTime::now())
        .await
        .map_err(internal)?;
    template_reply(auto_review(relay, record, &edited).await?)
}

pub(crate) async fn get(relay: &Relay, waba: &WabaId, id: &str) -> Result<Reply, ProtocolError> {
    template_reply(own_template(relay, waba, id).await?)
}

pub(crate) async fn list(
    relay: &Relay,
    waba: &WabaId,
    query: TemplateQuery,
) -> Result<Reply, ProtocolError> {
    let limit = match query.limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let filter = TemplateFilter {
        waba_id: Some(waba.clone()),
        name: query.name,
        status: query.status,
        category: query.category,
        language: query.language,
    };
    let store = &relay.store;
    // Whether anything matching lies at or below `seq` / at or above it, outside the page
    // (at the ends of the range, no bound is the same bound).
    let any_up_to = async |seq: i64| -> Result<bool, ProtocolError> {
        let found = store.list_templates(&filter, None, seq.checked_add(1), 1);
        Ok(!found.await.map_err(internal)?.is_empty())
    };
    let any_from = async |seq: i64| -> Result<bool, ProtocolError> {
        let found = store.list_templates(&filter, seq.checked_sub(1), None, 1);
        Ok(!found.await.map_err(internal)?.is_empty())
    };
    // One more than the page: whether it came says if more lie in the paging direction.
    let mut page = store
        .list_templates(&filter, query.after, query.before, limit + 1)
        .await
        .map_err(internal)?;
    let more = page.len() > limit as usize;
    let (has_before, has_after) = match query.before {
        // Backwards: the last ones before `before`; the extra one is the oldest.
        Some(before) => {
            if more {
                page.remove(0);
            }
            let earlier = match query.after {
                Some(after) if !more => any_up_to(after).await?,
                _ => more,
            };
            (earlier, any_from(before).await?)
        }
        None => {
            page.truncate(limit as usize);
            let earlier = match query.after {
                Some(after) => any_up_to(after).await?,
                None => false,
            };
            (earlier, more)
        }
    };
    let templates = page.into_iter().map(info).collect::<Result<_, _>>()?;
    Ok(Reply::Templates {
        templates,
        has_before,
        has_after,
    })
}

pub(crate) async fn delete(
    relay: &Relay,
    waba: &WabaId,
    name: &str,
    id: Option<&str>,
) -> Result<Reply, ProtocolError> {
    let deleted = relay
        .store
        .delete_templates(waba, name, id, BUSINESS_ACTOR, UnixTime::now())
        .await
        .map_err(internal)?;
    if deleted.is_empty() {
        return Err(not_found(match id {
            Some(id) => format!("no template {id} named {name} in this business"),
            None => format!("no template named {name} in this business"),
        }));
    }
    tracing::info!(%waba, %name, count = deleted.len(), "templates deleted");
    let templates = deleted.into_iter().map(info).collect::<Result<_, _>>()?;
    Ok(Reply::Templates {
        templates,
        has_before: false,
        has_after: false,
    })
}

fn event_info(event: TemplateEvent) -> TemplateEventInfo {
    TemplateEventInfo {
        seq: event.seq,
        template_id: event.template_id,
        name: event.name,
        language: event.language,
        version: event.version,
        from: event.from,
        to: event.to,
        reason: event.reason,
        at: event.at,
    }
}

pub(crate) async fn events(
    relay: &Relay,
    waba: &WabaId,
    after: i64,
    limit: u32,
) -> Result<Reply, ProtocolError> {
    let limit = match limit {
        0 => DEFAULT_EVENTS,
        n => n.min(MAX_EVENTS),
    };
    let events = relay
        .store
        .template_events(Some(waba), after, limit)
        .await
        .map_err(internal)?;
    Ok(Reply::TemplateEvents {
        events: events.into_iter().map(event_info).collect(),
    })
}

/// An approved version of `business`'s template, for any device to render a message with.
/// Versions never approved are not public, and are answered as absent.
pub(crate) async fn version(
    relay: &Relay,
    business: &PhoneNumber,
    id: &str,
    version: u32,
) -> Result<Reply, ProtocolError> {
    let absent = || {
        not_found(format!(
            "{business} has no approved version {version} of template {id}"
        ))
    };
    let waba = match relay.store.account(business).await.map_err(internal)? {
        Some(account) if account.kind == AccountKind::Business => account.waba_id,
        _ => None,
    }
    .ok_or_else(absent)?;
    let record = match relay.store.template(id).await.map_err(internal)? {
        Some(record) if record.waba_id == waba => record,
        _ => return Err(absent()),
    };
    let stored = match relay
        .store
        .template_version(id, version)
        .await
        .map_err(internal)?
    {
        Some(stored) if stored.approved => stored,
        _ => return Err(absent()),
    };
    let components = serde_json::from_str(&stored.components).map_err(|e| {
        internal(StoreError::Backend(format!(
            "template {id} version {version} has unreadable components: {e}"
        )))
    })?;
    Ok(Reply::TemplateVersion {
        template: TemplateVersionInfo {
            id: record.id,
            name: record.name,
            language: record.language,
            version: stored.version,
            category: stored.category,
            parameter_format: stored.parameter_format,
            components,
        },
    })
}

/// Whether a template envelope of `waba`'s may go out: its header must name the current,
/// approved version of one of the business's templates, as the registry holds it now.
pub(crate) async fn check_header(
    relay: &Relay,
    waba: &WabaId,
    header: &TemplateHeader,
) -> Result<Result<(), RuleViolation>, ProtocolError> {
    let (name, language) = (header.name.clone(), header.language.clone());
    let record = relay.store.template(&header.id).await.map_err(internal)?;
    let verdict = match record {
        Some(r) if r.waba_id == *waba && r.name == header.name && r.language == header.language => {
            match r.status {
                TemplateStatus::Approved
                    if r.version == header.version && r.category == header.category =>
                {
                    Ok(())
                }
                TemplateStatus::Paused => Err(RuleViolation::TemplatePaused { name, language }),
                TemplateStatus::Disabled => Err(RuleViolation::TemplateDisabled { name, language }),
                _ => Err(RuleViolation::TemplateUnavailable { name, language }),
            }
        }
        _ => Err(RuleViolation::TemplateUnavailable { name, language }),
    };
    Ok(verdict)
}
