//! Billing at the relay: loading the operator's pricing policy (at start, on SIGHUP, from the
//! admin API) and the operator's billing routes: policy versions, a business's usage and
//! invoice for a month, verifying every ledger, what-if re-rating.
//!
//! Rating itself happens in the store (`meter_delivery`) when a user's device reports a
//! business message delivered: the relay is the one party that sees every delivery, the
//! category and the window, whoever runs the business's gateway.

use crate::Relay;
use crate::admin::operator;
use crate::error::HttpError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use ventana_core::pricing::ledger::verify;
use ventana_core::pricing::report::{recompute, rerate, statement};
use ventana_core::pricing::{
    Amount, CONVERSATION_SECS, EXAMPLE_POLICY, LedgerEntry, Month, Policy, PolicyError,
};
use ventana_core::{UnixTime, WabaId};
use ventana_store::StoreError;
use ventana_store::ledger::{PolicyAdded, PolicyVersion};
use ventana_store::relay::ManualLimit;

/// The operator's billing settings: where the pricing policy comes from (a file, or the
/// built-in example), and the human pace of an `app`-tier business's replies by hand.
#[derive(Clone, Debug, Default)]
pub struct BillingSettings {
    pub policy_file: Option<PathBuf>,
    pub manual_limit: ManualLimit,
}

/// Why a policy was not loaded. The versions loaded before stay in force.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("reading {path}: {error}")]
    Read { path: String, error: String },
    #[error("{source_name}: {error}")]
    Invalid {
        source_name: String,
        error: PolicyError,
    },
    #[error("{0}")]
    Refused(String),
    #[error("the store failed: {0}")]
    Store(String),
}

/// Entries read per page when walking a chain.
const PAGE: u32 = 1000;

impl Relay {
    /// Reads the policy file (or the example), checks it and adds it as a version if it is
    /// new. Every node does this at start; only the first adds it. A file that does not read
    /// is refused with its line and field, and the versions loaded before stay in force.
    pub async fn load_policy(&self) -> Result<PolicyAdded, PolicyLoadError> {
        let (name, text) = match &self.billing.policy_file {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|e| PolicyLoadError::Read {
                    path: path.display().to_string(),
                    error: e.to_string(),
                })?,
            ),
            None => ("the example policy".to_owned(), EXAMPLE_POLICY.to_owned()),
        };
        let added = self.add_policy(&name, &text).await?;
        let now = UnixTime::now();
        let versions = self
            .store
            .policy_versions()
            .await
            .map_err(|e| PolicyLoadError::Store(e.to_string()))?;
        if !versions.iter().any(|v| v.effective_from <= now) {
            return Err(PolicyLoadError::Refused(format!(
                "no pricing policy is in force now: {name} takes effect at {} and no earlier \
                 version is loaded",
                policy_of(&added).effective_from.to_rfc3339()
            )));
        }
        Ok(added)
    }

    async fn add_policy(&self, name: &str, text: &str) -> Result<PolicyAdded, PolicyLoadError> {
        Policy::parse(text).map_err(|error| PolicyLoadError::Invalid {
            source_name: name.to_owned(),
            error,
        })?;
        let added = self
            .store
            .add_policy(text, UnixTime::now())
            .await
            .map_err(|e| match e {
                StoreError::Conflict(c) => PolicyLoadError::Refused(c.detail),
                StoreError::Backend(b) => PolicyLoadError::Store(b),
            })?;
        match &added {
            PolicyAdded::Added(v) => tracing::info!(
                version = %v.version,
                effective_from = %v.effective_from.to_rfc3339(),
                source = name,
                "pricing policy version loaded"
            ),
            PolicyAdded::Unchanged(v) => {
                tracing::info!(version = %v.version, source = name, "pricing policy unchanged");
            }
        }
        Ok(added)
    }
}

fn policy_of(added: &PolicyAdded) -> &PolicyVersion {
    match added {
        PolicyAdded::Added(v) | PolicyAdded::Unchanged(v) => v,
    }
}

fn version_json(v: &PolicyVersion) -> Value {
    json!({
        "version": v.version,
        "effective_from": v.effective_from.to_rfc3339(),
        "loaded_at": v.loaded_at.to_rfc3339(),
        "digest": v.digest,
    })
}

fn load_error(e: PolicyLoadError) -> HttpError {
    match e {
        PolicyLoadError::Store(what) => HttpError::from(StoreError::Backend(what)),
        PolicyLoadError::Refused(what) => HttpError::conflict(what),
        other => HttpError::bad_request(other.to_string()),
    }
}

fn added_json(added: &PolicyAdded) -> Value {
    let (v, loaded) = match added {
        PolicyAdded::Added(v) => (v, true),
        PolicyAdded::Unchanged(v) => (v, false),
    };
    let mut out = version_json(v);
    out["added"] = loaded.into();
    out
}

/// `GET /relay/v1/admin/billing/policies`: every version, in the order loaded.
pub(crate) async fn policies(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let versions = relay.store.policy_versions().await?;
    let now = UnixTime::now();
    let in_force = versions
        .iter()
        .filter(|v| v.effective_from <= now)
        .max_by_key(|v| v.effective_from)
        .map(|v| v.version.clone());
    Ok(Json(json!({
        "data": versions.iter().map(version_json).collect::<Vec<_>>(),
        "in_force": in_force,
    })))
}

/// `POST /relay/v1/admin/billing/policies/reload`: reads the policy file again, as SIGHUP.
pub(crate) async fn reload(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let added = relay.load_policy().await.map_err(load_error)?;
    Ok(Json(added_json(&added)))
}

/// `POST /relay/v1/admin/billing/policies`: a policy file in the body (TOML).
pub(crate) async fn upload(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| HttpError::bad_request("a policy file is UTF-8 TOML"))?;
    let added = relay
        .add_policy("the uploaded policy", text)
        .await
        .map_err(load_error)?;
    Ok(Json(added_json(&added)))
}

#[derive(Deserialize)]
pub(crate) struct PeriodQuery {
    period: Option<String>,
}

fn business(waba: &str) -> Result<WabaId, HttpError> {
    waba.parse()
        .map_err(|e| HttpError::bad_request(format!("{e}")))
}

fn period(query: Option<&str>) -> Result<Month, HttpError> {
    match query {
        None => Ok(Month::of(UnixTime::now())),
        Some(text) => Month::parse(text).map_err(HttpError::bad_request),
    }
}

fn money(amount: i64, precision: u8) -> String {
    Amount(amount).display(precision)
}

/// `GET /relay/v1/admin/billing/businesses/{waba}/usage?period=2026-11`: the month's
/// totals by category, country and type, its invoice lines, and the policy versions used,
/// per currency. Amounts are exact decimal strings, with the integer minor units beside.
pub(crate) async fn usage(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    Path(waba): Path<String>,
    Query(query): Query<PeriodQuery>,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let waba = business(&waba)?;
    let month = period(query.period.as_deref())?;
    let entries = relay
        .store
        .ledger_between(&waba, month.start(), month.end())
        .await?;
    let statements = statement(month, &entries);
    let currencies: Vec<Value> = statements
        .iter()
        .map(|(currency, s)| {
            let p = currency.precision;
            let tallies = |map: &BTreeMap<String, ventana_core::pricing::report::Tally>| {
                map.iter()
                    .map(|(k, t)| {
                        (
                            k.clone(),
                            json!({"messages": t.messages, "amount": money(t.amount, p), "amount_minor": t.amount}),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
            };
            json!({
                "currency": currency.code,
                "precision": p,
                "messages": s.total.messages,
                "total": money(s.total.amount, p),
                "total_minor": s.total.amount,
                "by_category": tallies(&s.by_category),
                "by_country": tallies(&s.by_country),
                "by_type": tallies(&s.by_type),
                "lines": s.lines.iter().map(|l| json!({
                    "category": l.category,
                    "country": l.country,
                    "rate": money(l.rate, p),
                    "messages": l.messages,
                    "amount": money(l.amount, p),
                    "amount_minor": l.amount,
                })).collect::<Vec<_>>(),
                "policy_versions": s.policy_versions,
            })
        })
        .collect();
    Ok(Json(json!({
        "waba_id": waba,
        "period": month.to_string(),
        "from": month.start().to_rfc3339(),
        "until": month.end().to_rfc3339(),
        "currencies": currencies,
    })))
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn entry_json(e: &LedgerEntry) -> Value {
    let c = &e.charge;
    let p = c.precision;
    json!({
        "seq": e.seq,
        "message_id": c.message_id,
        "destination": c.destination.digits(),
        "delivered_at": c.delivered_at.0,
        "policy_version": c.policy_version,
        "model": c.model.as_str(),
        "category": c.category.as_str(),
        "template": c.template,
        "window": c.window.as_str(),
        "pricing_type": c.pricing_type.as_str(),
        "manual": c.manual,
        "rate": money(c.rate.0, p),
        "amount": money(c.amount.0, p),
        "amount_minor": c.amount.0,
        "currency": c.currency,
        "conversation_id": c.conversation_id,
        "prev_hash": hex(&e.prev_hash),
        "hash": hex(&e.hash),
    })
}

/// `GET /relay/v1/admin/billing/businesses/{waba}/ledger?after=&limit=`: the business's
/// entries in chain order, every field and both hashes, a page at a time (at most 1000).
pub(crate) async fn ledger(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    Path(waba): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let waba = business(&waba)?;
    let limit = query.limit.unwrap_or(100).clamp(1, PAGE);
    let entries = relay
        .store
        .ledger_entries(&waba, query.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(json!({
        "data": entries.iter().map(entry_json).collect::<Vec<_>>(),
        "next_after": entries.last().map(|e| e.seq),
    })))
}

/// Every policy version, parsed, by name.
async fn parsed_policies(relay: &Relay) -> Result<BTreeMap<String, Policy>, HttpError> {
    let mut out = BTreeMap::new();
    for v in relay.store.policy_versions().await? {
        match Policy::parse(&v.text) {
            Ok(p) => {
                out.insert(v.version, p);
            }
            Err(e) => {
                tracing::error!(version = %v.version, error = %e, "a stored policy no longer reads")
            }
        }
    }
    Ok(out)
}

/// A business's whole chain, in order.
async fn chain(relay: &Relay, waba: &WabaId) -> Result<Vec<LedgerEntry>, HttpError> {
    let mut entries = Vec::new();
    loop {
        let after = entries.last().map_or(0, |e: &LedgerEntry| e.seq);
        let page = relay.store.ledger_entries(waba, after, PAGE).await?;
        let done = page.len() < PAGE as usize;
        entries.extend(page);
        if done {
            return Ok(entries);
        }
    }
}

/// `GET /relay/v1/admin/billing/verify`: walks every business's hash chain and reports the
/// first broken link, then rates every entry again from its stored inputs under the policy
/// version it names and reports each amount (or type, or conversation) that differs.
pub(crate) async fn verify_all(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let policies = parsed_policies(&relay).await?;
    let mut businesses = Vec::new();
    let mut ok = true;
    for waba in relay.store.ledger_businesses().await? {
        let entries = chain(&relay, &waba).await?;
        let broken = verify(&waba, &entries).err();
        let mismatches = recompute(&entries, |v| policies.get(v));
        ok &= broken.is_none() && mismatches.is_empty();
        businesses.push(json!({
            "waba_id": waba,
            "entries": entries.len(),
            "broken_link": broken.map(|b| json!({"seq": b.seq, "reason": b.reason})),
            "mismatches": mismatches,
        }));
    }
    Ok(Json(json!({ "ok": ok, "businesses": businesses })))
}

#[derive(Deserialize)]
pub(crate) struct RerateQuery {
    period: Option<String>,
    /// A loaded version, unless the body carries a policy file.
    version: Option<String>,
}

/// `POST /relay/v1/admin/billing/businesses/{waba}/rerate?period=…[&version=…]`, or a
/// policy file (TOML) in the body: what the month would have cost under that policy, next to
/// what was charged, by category. Writes nothing.
pub(crate) async fn rerate_period(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    Path(waba): Path<String>,
    Query(query): Query<RerateQuery>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    operator(&relay, &headers)?;
    let waba = business(&waba)?;
    let month = period(query.period.as_deref())?;
    let policy = match (&query.version, body.is_empty()) {
        (Some(version), true) => {
            parsed_policies(&relay)
                .await?
                .remove(version)
                .ok_or_else(|| {
                    HttpError::missing(format!("no policy version {version:?} is loaded"))
                })?
        }
        (None, false) => {
            let text = std::str::from_utf8(&body)
                .map_err(|_| HttpError::bad_request("a policy file is UTF-8 TOML"))?;
            Policy::parse(text).map_err(|e| HttpError::bad_request(format!("the policy: {e}")))?
        }
        _ => {
            return Err(HttpError::bad_request(
                "name a loaded `version`, or send a policy file as the body (not both)",
            ));
        }
    };
    let entries = relay
        .store
        .ledger_between(
            &waba,
            month.start().plus_secs(-CONVERSATION_SECS),
            month.end(),
        )
        .await?;
    let rows = rerate(month, &entries, &policy).map_err(HttpError::conflict)?;
    let p = policy.precision;
    let (mut old, mut new, mut messages) = (0, 0, 0);
    let categories: serde_json::Map<_, _> = rows
        .iter()
        .map(|(category, r)| {
            old += r.old_amount;
            new += r.new_amount;
            messages += r.messages;
            (
                category.clone(),
                json!({
                    "messages": r.messages,
                    "old": money(r.old_amount, p),
                    "new": money(r.new_amount, p),
                }),
            )
        })
        .collect();
    Ok(Json(json!({
        "waba_id": waba,
        "period": month.to_string(),
        "policy": policy.version,
        "model": policy.model.as_str(),
        "currency": policy.currency,
        "messages": messages,
        "by_category": categories,
        "old_total": money(old, p),
        "new_total": money(new, p),
    })))
}
