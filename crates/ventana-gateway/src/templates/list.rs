//! `GET /{waba_id}/message_templates`: its query (filters, page size, cursors, `fields`) and
//! the `paging` of its answer.
//!
//! Cursors are opaque to clients, as Graph's are: the registry's `seq` of the first or last
//! template of a page, in unpadded URL-safe base64 so that they need no escaping in a URL.
//! The `previous` and `next` links repeat the request's own path and query with only the
//! cursor replaced, so filters, `limit`, `fields` (and an `access_token` given in the query)
//! carry over to the next page.

use crate::graph::error::GraphError;
use crate::graph::query::Query;
use crate::graph::response::{self, Paging};
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use ventana_core::protocol::{TemplateInfo, TemplateQuery};
use ventana_core::template::definition::LanguageCode;
use ventana_core::template::{Category, TemplateStatus};

/// Templates per page when the request names no `limit` (Graph's usual default).
const DEFAULT_LIMIT: u32 = 25;
/// The largest page; a larger `limit` is lowered to it, as Graph does, and `next` leads on.
const MAX_LIMIT: u32 = 100;

/// A parsed listing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListRequest {
    pub(crate) query: TemplateQuery,
    pub(crate) fields: Option<Vec<String>>,
}

impl ListRequest {
    /// Reads the filters; an unusable value is an invalid parameter naming it. Empty values
    /// (`name=`) count as absent, as SDKs send them for unset filters.
    pub(crate) fn parse(query: &Query<'_>) -> Result<Self, GraphError> {
        let given = |key| query.get(key).filter(|v| !v.trim().is_empty());
        let status = given("status")
            .map(|v| {
                v.trim().parse::<TemplateStatus>().map_err(|_| {
                    invalid(
                        "status",
                        &v,
                        "one of APPROVED, PENDING, REJECTED, PAUSED, DISABLED, DELETED",
                    )
                })
            })
            .transpose()?;
        let category = given("category")
            .map(|v| {
                v.trim().parse::<Category>().map_err(|_| {
                    invalid("category", &v, "one of UTILITY, MARKETING, AUTHENTICATION")
                })
            })
            .transpose()?;
        let language = given("language")
            .map(|v| {
                v.trim()
                    .parse::<LanguageCode>()
                    .map(String::from)
                    .map_err(|_| invalid("language", &v, "a language code such as en_US"))
            })
            .transpose()?;
        let limit = match given("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(0) | Err(_) => return Err(invalid("limit", &v, "a whole number from 1")),
                Ok(n) => n.min(MAX_LIMIT),
            },
        };
        Ok(Self {
            query: TemplateQuery {
                name: given("name").map(|v| v.trim().to_owned()),
                status,
                category,
                language,
                after: given("after").map(|c| seq_of("after", &c)).transpose()?,
                before: given("before").map(|c| seq_of("before", &c)).transpose()?,
                limit,
            },
            fields: fields(query),
        })
    }
}

/// The `fields=` of a request: the template fields it names that exist. Names this server
/// does not have (`quality_score`, …) are left out rather than refused: SDKs ask for them and
/// still work without.
pub(crate) fn fields(query: &Query<'_>) -> Option<Vec<String>> {
    let named = query.get("fields")?;
    let known = named
        .split(',')
        .map(str::trim)
        .filter(|f| response::TEMPLATE_FIELDS.contains(f))
        .map(str::to_owned)
        .collect();
    Some(known)
}

/// The answer to a listing: the page's templates and, unless it is empty, its `paging`.
pub(crate) fn page(
    request: &ListRequest,
    parts: &Parts,
    templates: &[TemplateInfo],
    has_before: bool,
    has_after: bool,
) -> Value {
    let data = templates
        .iter()
        .map(|t| response::template(t, request.fields.as_deref(), false))
        .collect();
    let paging = match (templates.first(), templates.last()) {
        (Some(first), Some(last)) => {
            let (before, after) = (cursor(first.seq), cursor(last.seq));
            Some(Paging {
                previous: has_before.then(|| link(parts, "before", &before)),
                next: has_after.then(|| link(parts, "after", &after)),
                before,
                after,
            })
        }
        _ => None,
    };
    response::listing(data, paging)
}

/// The opaque cursor of a registry `seq`.
pub(crate) fn cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(seq.to_string())
}

/// The `seq` a cursor names. Standard base64 (with `+`, `/`, `=`) is accepted too.
fn seq_of(parameter: &str, cursor: &str) -> Result<i64, GraphError> {
    let text = cursor.trim().trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD
        .decode(text.replace('+', "-").replace('/', "_"))
        .ok();
    bytes
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|seq| *seq >= 0)
        .ok_or_else(|| invalid(parameter, cursor, "a cursor from an earlier page's paging"))
}

fn invalid(parameter: &str, value: &str, expected: &str) -> GraphError {
    GraphError::invalid_parameter(format!(
        "{parameter}: {value:?} is not valid here; expected {expected}."
    ))
}

/// The request's own URL with `key` set to `cursor` and the other cursor dropped.
fn link(parts: &Parts, key: &str, cursor: &str) -> String {
    let query = Query::new(parts.uri.query());
    let mut pairs: Vec<String> = query
        .raw_without(&["after", "before"])
        .into_iter()
        .map(str::to_owned)
        .collect();
    pairs.push(format!("{key}={cursor}"));
    format!("{}{}?{}", origin(parts), parts.uri.path(), pairs.join("&"))
}

/// `scheme://host` of the request: from an absolute request URI, else the `Host` header with
/// the scheme a reverse proxy reports in `X-Forwarded-Proto` (plain `http` without one).
fn origin(parts: &Parts) -> String {
    if let (Some(scheme), Some(authority)) = (parts.uri.scheme_str(), parts.uri.authority()) {
        return format!("{scheme}://{authority}");
    }
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = match header("x-forwarded-proto").and_then(|v| v.split(',').next()) {
        Some(proto) if proto.trim().eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let host = header("host")
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::http::Request;

    fn parts(uri: &str) -> Parts {
        Request::builder()
            .uri(uri)
            .header("host", "api.shop.example:8080")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn parsed(query: &str) -> Result<ListRequest, GraphError> {
        ListRequest::parse(&Query::new(Some(query)))
    }

    #[test]
    fn a_cursor_reads_back_as_its_seq() {
        for seq in [0, 7, 12, 1_000_000_007] {
            assert_eq!(seq_of("after", &cursor(seq)).unwrap(), seq);
        }
        assert_eq!(cursor(12), "MTI");
        assert_eq!(seq_of("after", "MTI=").unwrap(), 12);
    }

    #[test]
    fn filters_are_read_in_any_case_and_empty_ones_ignored() {
        let request =
            parsed("name=order&status=approved&category=Utility&language=en_US&limit=2&after=MTI&fields=name,quality_score&access_token=x&before=")
                .unwrap();
        assert_eq!(
            request.query,
            TemplateQuery {
                name: Some("order".into()),
                status: Some(TemplateStatus::Approved),
                category: Some(Category::Utility),
                language: Some("en_US".into()),
                after: Some(12),
                before: None,
                limit: 2,
            }
        );
        assert_eq!(request.fields, Some(vec!["name".to_owned()]));
        assert_eq!(parsed("").unwrap().query.limit, DEFAULT_LIMIT);
        assert_eq!(parsed("limit=5000").unwrap().query.limit, MAX_LIMIT);
    }

    #[test]
    fn bad_filter_values_are_invalid_parameters_naming_the_parameter() {
        for (query, parameter) in [
            ("status=LIVE", "status"),
            ("category=OTP", "category"),
            ("language=english", "language"),
            ("limit=ten", "limit"),
            ("limit=0", "limit"),
            ("limit=-3", "limit"),
            ("after=not*a*cursor", "after"),
            ("before=bm9wZQ", "before"),
        ] {
            let error = parsed(query).unwrap_err();
            assert_eq!(error.code, 100, "{query}");
            assert!(
                error.details.starts_with(&format!("{parameter}: ")),
                "{query}: {}",
                error.details
            );
        }
    }

    #[test]
    fn paging_links_repeat_the_request_with_only_the_cursor_replaced() {
        let request = parsed("limit=1&after=MQ").unwrap();
        let parts = parts("/v23.0/102290129340398/message_templates?limit=1&after=MQ&fields=id");
        let template = |seq| TemplateInfo {
            id: "1".into(),
            seq,
            name: "n".into(),
            language: "en".into(),
            category: Category::Utility,
            status: TemplateStatus::Approved,
            version: 1,
            parameter_format: "POSITIONAL".into(),
            components: serde_json::json!([]),
            reason: None,
        };
        let body = page(&request, &parts, &[template(2)], true, true);
        let base = "http://api.shop.example:8080/v23.0/102290129340398/message_templates";
        assert_eq!(body["paging"]["cursors"]["before"], "Mg");
        assert_eq!(
            body["paging"]["next"],
            format!("{base}?limit=1&fields=id&after=Mg")
        );
        assert_eq!(
            body["paging"]["previous"],
            format!("{base}?limit=1&fields=id&before=Mg")
        );
        let last = page(&request, &parts, &[template(2)], false, false);
        assert!(last["paging"].get("next").is_none());
        assert!(last["paging"].get("previous").is_none());
        assert_eq!(
            page(&request, &parts, &[], true, false),
            serde_json::json!({"data": []})
        );
    }

    /// `order_update` as a business submits it in `language`, stored as the registry
    /// stores it: the components the platform's parser writes back.
    fn order_update(id: &str, seq: i64, language: &str, status: TemplateStatus) -> TemplateInfo {
        let (header, body, footer, stop, track) = match language {
            "es_ES" => (
                "Tu pedido va en camino",
                "Hola {{1}}, tu pedido {{2}} ya va en camino. Síguelo cuando quieras con el botón de abajo.",
                "Responde STOP para darte de baja",
                "No más avisos",
                "Seguir pedido",
            ),
            _ => (
                "Your order has shipped",
                "Hi {{1}}, your order {{2}} is on its way. Track it any time with the button below.",
                "Reply STOP to opt out",
                "Stop updates",
                "Track order",
            ),
        };
        let submitted = serde_json::json!({
            "name": "order_update",
            "language": language,
            "category": "utility",
            "components": [
                {"type": "header", "format": "text", "text": header},
                {"type": "body", "text": body, "example": {"body_text": [["Ana", "#4821"]]}},
                {"type": "footer", "text": footer},
                {"type": "buttons", "buttons": [
                    {"type": "quick_reply", "text": stop},
                    {"type": "url", "text": track, "url": "https://shop.example/track/{{1}}",
                     "example": ["https://shop.example/track/4821"]},
                ]},
            ],
        });
        let definition = ventana_core::template::TemplateDefinition::parse(&submitted)
            .expect("a valid template");
        let stored = serde_json::to_value(&definition).unwrap();
        TemplateInfo {
            id: id.into(),
            seq,
            name: "order_update".into(),
            language: language.into(),
            category: Category::Utility,
            status,
            version: 1,
            parameter_format: stored["parameter_format"].as_str().unwrap().into(),
            components: stored["components"].clone(),
            reason: None,
        }
    }

    /// Compares `built` with a golden file of `tests/golden`, printing both on a mismatch.
    fn assert_golden(built: &Value, golden: &str, file: &str) {
        let pinned: Value = serde_json::from_str(golden).unwrap();
        assert!(
            *built == pinned,
            "{file} differs.\nbuilt:\n{}\npinned:\n{}",
            serde_json::to_string_pretty(built).unwrap(),
            serde_json::to_string_pretty(&pinned).unwrap()
        );
    }

    #[test]
    fn a_listing_page_is_pinned_by_its_golden_file() {
        let uri = "/v23.0/102290129340398/message_templates?name=order&limit=2&after=NDA";
        let mut parts = parts(uri);
        parts
            .headers
            .insert("host", "api.shop.example".parse().unwrap());
        parts
            .headers
            .insert("x-forwarded-proto", "https".parse().unwrap());
        let request = ListRequest::parse(&Query::new(parts.uri.query())).unwrap();
        let templates = [
            order_update("1689556908129832", 41, "en_US", TemplateStatus::Approved),
            order_update("1689556908129833", 42, "es_ES", TemplateStatus::Pending),
        ];
        let body = page(&request, &parts, &templates, true, true);
        assert_golden(
            &body,
            include_str!("../../tests/golden/template_list.json"),
            "template_list.json",
        );
    }

    #[test]
    fn a_forwarded_https_scheme_is_kept_in_links() {
        let mut parts = parts("/message_templates");
        parts
            .headers
            .insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(origin(&parts), "https://api.shop.example:8080");
    }
}
