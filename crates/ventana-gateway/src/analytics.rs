//! `GET /{waba_id}?fields=…`: the business account node as SDKs read it: `id`, `name`, and
//! the Cloud API's `pricing_analytics` and `conversation_analytics`, fed by the relay's
//! billing ledger (the same entries invoices are made of).
//!
//! ```text
//! GET /v23.0/{waba_id}?fields=pricing_analytics.start(1764547200).end(1767225600)
//!     .granularity(DAILY).dimensions(["PRICING_CATEGORY","PRICING_TYPE","COUNTRY"])
//! → {"pricing_analytics":{"data":[{"data_points":[{"start":…,"end":…,"volume":3,
//!    "cost":0.025,"pricing_category":"MARKETING","pricing_type":"REGULAR","country":"ES"}]}]},
//!    "id":"…"}
//! ```
//!
//! `cost` is a JSON number in the card's currency, as Meta's is, written from the ledger's
//! exact integer amounts (a card's amounts have at most 6 decimals, so the number is the
//! exact decimal). The `PHONE` dimension and `phone_numbers` filter are refused: the ledger
//! is kept per business, not per number.

use crate::Gateway;
use crate::graph::error::GraphError;
use crate::graph::query::Query;
use crate::templates::{ask, through, unexpected};
use axum::Json;
use axum::http::request::Parts;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use ventana_core::pricing::Amount;
use ventana_core::pricing::report::{AnalyticsPoint, Granularity};
use ventana_core::protocol::{Op, Reply};
use ventana_core::{CloudError, CloudErrorKind, UnixTime, WabaId};

/// One requested field: its name and its modifiers (`start(…)`, `dimensions([…])`, …).
#[derive(Debug, PartialEq, Eq)]
struct Field {
    name: String,
    modifiers: BTreeMap<String, Vec<String>>,
}

/// Splits `text` at `sep` outside parentheses and brackets.
fn split_top(text: &str, sep: char) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0_i32, 0, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// Reads `fields=a,b.start(1).dimensions(["X","Y"])`.
fn parse_fields(text: &str) -> Result<Vec<Field>, GraphError> {
    let mut fields = Vec::new();
    for part in split_top(text, ',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let mut pieces = split_top(part, '.').into_iter();
        let name = pieces.next().unwrap_or_default().trim().to_owned();
        let mut modifiers = BTreeMap::new();
        for modifier in pieces {
            let (key, rest) = modifier.split_once('(').ok_or_else(|| {
                GraphError::invalid_parameter(format!("`{modifier}` in fields is not key(value)"))
            })?;
            let inner = rest.strip_suffix(')').ok_or_else(|| {
                GraphError::invalid_parameter(format!("`{modifier}` in fields lacks its `)`"))
            })?;
            let inner = inner.trim().trim_start_matches('[').trim_end_matches(']');
            let values = inner
                .split(',')
                .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
                .filter(|v| !v.is_empty())
                .collect();
            modifiers.insert(key.trim().to_owned(), values);
        }
        fields.push(Field { name, modifiers });
    }
    Ok(fields)
}

/// `GET /{waba_id}`: the requested fields of the business account (`id` always).
pub(crate) async fn waba_node(
    gateway: &Gateway,
    waba: &WabaId,
    parts: &Parts,
) -> Result<Json<Value>, GraphError> {
    let query = Query::new(parts.uri.query());
    let requested = query.get("fields").unwrap_or_else(|| "id,name".into());
    let mut out = Map::new();
    for field in parse_fields(&requested)? {
        match field.name.as_str() {
            "id" => {}
            "name" => {
                let name = gateway
                    .store
                    .business(waba)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "business API failed");
                        GraphError::internal()
                    })?
                    .map(|b| b.name)
                    .unwrap_or_default();
                out.insert("name".into(), name.into());
            }
            "pricing_analytics" | "conversation_analytics" => {
                let conversations = field.name == "conversation_analytics";
                let value = analytics(gateway, waba, &field, conversations).await?;
                out.insert(field.name.clone(), value);
            }
            other => {
                return Err(GraphError::invalid_parameter(format!(
                    "Tried accessing nonexisting field ({other}) on node type (WhatsAppBusinessAccount)"
                )));
            }
        }
    }
    out.insert("id".into(), waba.as_str().into());
    Ok(Json(Value::Object(out)))
}

fn one(field: &Field, key: &str) -> Option<String> {
    field.modifiers.get(key).and_then(|v| v.first().cloned())
}

fn time_of(field: &Field, key: &str) -> Result<UnixTime, GraphError> {
    one(field, key)
        .and_then(|v| v.parse::<i64>().ok())
        .map(UnixTime)
        .ok_or_else(|| {
            GraphError::invalid_parameter(format!("{} needs {key}(<unix seconds>)", field.name))
        })
}

/// The data points of one analytics field, grouped by the requested dimensions.
async fn analytics(
    gateway: &Gateway,
    waba: &WabaId,
    field: &Field,
    conversations: bool,
) -> Result<Value, GraphError> {
    let (from, until) = (time_of(field, "start")?, time_of(field, "end")?);
    let granularity = one(field, "granularity")
        .as_deref()
        .and_then(Granularity::parse)
        .ok_or_else(|| {
            GraphError::invalid_parameter(format!(
                "{} needs granularity(HALF_HOUR|DAILY|MONTHLY)",
                field.name
            ))
        })?;
    let (category_dim, type_dim, count_metric) = if conversations {
        ("CONVERSATION_CATEGORY", "CONVERSATION_TYPE", "CONVERSATION")
    } else {
        ("PRICING_CATEGORY", "PRICING_TYPE", "VOLUME")
    };
    let dimensions = field
        .modifiers
        .get("dimensions")
        .cloned()
        .unwrap_or_default();
    for d in &dimensions {
        if ![category_dim, type_dim, "COUNTRY"].contains(&d.as_str()) {
            return Err(GraphError::invalid_parameter(format!(
                "{} does not offer the dimension {d} here (the ledger is per business, not per number); use {category_dim}, {type_dim} or COUNTRY",
                field.name
            )));
        }
    }
    if field
        .modifiers
        .get("phone_numbers")
        .is_some_and(|v| !v.is_empty())
    {
        return Err(GraphError::invalid_parameter(
            "phone_numbers: the ledger is per business, not per number",
        ));
    }
    let metrics = field
        .modifiers
        .get("metric_types")
        .cloned()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["COST".into(), count_metric.into()]);
    let countries = field
        .modifiers
        .get("country_codes")
        .cloned()
        .unwrap_or_default();

    let via =
        through(gateway, waba).ok_or_else(|| GraphError::no_business_number(waba.as_str()))?;
    let op = Op::Analytics {
        from,
        until,
        granularity,
    };
    let points = match ask(&via, op, |e| {
        GraphError::from(CloudError::new(CloudErrorKind::InvalidParameter, e.message))
    })
    .await?
    {
        Reply::Analytics { points } => points,
        other => return Err(unexpected(&other)),
    };

    let has = |d: &str| dimensions.iter().any(|x| x == d);
    let mut groups: BTreeMap<Vec<String>, (AnalyticsPoint, Map<String, Value>)> = BTreeMap::new();
    for p in points {
        if !countries.is_empty() && !countries.contains(&p.country) {
            continue;
        }
        if conversations && p.conversation_type.is_none() {
            continue;
        }
        let mut labels = Map::new();
        if has(category_dim) {
            labels.insert(
                category_dim.to_lowercase(),
                p.category.as_str().to_uppercase().into(),
            );
        }
        if has(type_dim) {
            let kind = if conversations {
                p.conversation_type.clone().unwrap_or_default()
            } else {
                p.pricing_type.as_str().to_uppercase()
            };
            labels.insert(type_dim.to_lowercase(), kind.into());
        }
        if has("COUNTRY") {
            labels.insert("country".into(), p.country.clone().into());
        }
        let mut key = vec![
            p.start.0.to_string(),
            p.currency.clone(),
            p.precision.to_string(),
        ];
        key.extend(labels.values().map(|v| v.to_string()));
        let entry = groups.entry(key).or_insert_with(|| {
            let mut zero = p.clone();
            zero.volume = 0;
            zero.conversations = 0;
            zero.cost = 0;
            (zero, labels)
        });
        entry.0.volume += p.volume;
        entry.0.conversations += p.conversations;
        entry.0.cost += p.cost;
    }
    let data_points: Vec<Value> = groups
        .into_values()
        .map(|(p, labels)| {
            let mut point = Map::new();
            point.insert("start".into(), p.start.0.into());
            point.insert("end".into(), p.end.0.into());
            if metrics.iter().any(|m| m == count_metric) {
                let count = if conversations {
                    p.conversations
                } else {
                    p.volume
                };
                point.insert(count_metric.to_lowercase(), count.into());
            }
            if metrics.iter().any(|m| m == "COST") {
                point.insert("cost".into(), cost(p.cost, p.precision));
                point.insert("currency".into(), p.currency.clone().into());
            }
            point.extend(labels);
            Value::Object(point)
        })
        .collect();
    Ok(json!({ "data": [{ "data_points": data_points }] }))
}

/// An exact integer amount as the JSON number Meta's `cost` is.
fn cost(minor: i64, precision: u8) -> Value {
    let text = Amount(minor).display(precision);
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn fields_with_modifiers_read_as_sdks_write_them() {
        let fields = parse_fields(
            "id,pricing_analytics.start(1764547200).end(1767225600).granularity(DAILY).dimensions([\"PRICING_CATEGORY\",\"COUNTRY\"]),name",
        )
        .unwrap();
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[1].name, "pricing_analytics");
        assert_eq!(fields[1].modifiers["start"], ["1764547200"]);
        assert_eq!(
            fields[1].modifiers["dimensions"],
            ["PRICING_CATEGORY", "COUNTRY"]
        );
        let bare =
            parse_fields("conversation_analytics.dimensions(CONVERSATION_TYPE,COUNTRY)").unwrap();
        assert_eq!(
            bare[0].modifiers["dimensions"],
            ["CONVERSATION_TYPE", "COUNTRY"]
        );
        assert!(parse_fields("pricing_analytics.start").is_err());
        assert!(parse_fields("pricing_analytics.start(1").is_err());
    }

    #[test]
    fn a_cost_is_the_exact_decimal_of_the_integer_amount() {
        assert_eq!(cost(250, 4).to_string(), "0.025");
        assert_eq!(cost(1_234_567_890_123, 4).to_string(), "123456789.0123");
        assert_eq!(cost(0, 4).to_string(), "0.0");
    }
}
