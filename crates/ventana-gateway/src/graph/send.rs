//! The body of `POST /{phone_number_id}/messages`, parsed into what this server can do.
//!
//! The same endpoint sends every message type and also marks messages read, so the body is
//! read field by field rather than through one serde shape: each refusal then names the
//! field at fault, the way Graph's `error_data.details` does. Unknown extra fields are
//! tolerated, since SDKs add their own.

use super::error::GraphError;
use serde_json::{Map, Value};
use ventana_core::payload::MAX_TEXT_CHARS;
use ventana_core::template::SendTemplate;
use ventana_core::{CloudError, CloudErrorKind, MessageId, PhoneNumber, UnixTime};

/// Message types of the Cloud API this server does not send yet. Anything else that is not
/// `text` is not a Cloud API type at all; both are refused with 131051.
const NOT_YET_SUPPORTED: &[&str] = &[
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
];

/// Meta's limit on `biz_opaque_callback_data`, in characters.
const MAX_CALLBACK_DATA_CHARS: usize = 512;

/// A well-formed request to the messages endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendRequest {
    /// Send a text message.
    Text {
        to: PhoneNumber,
        /// `to` exactly as given: the response echoes it as `contacts[0].input`.
        input: String,
        body: String,
        /// Whether the client should render a preview of the first URL in `body`.
        preview_url: bool,
        /// The message this one replies to (`context.message_id`).
        reply_to: Option<MessageId>,
        /// Opaque data of the business, echoed in this message's status webhooks.
        biz_opaque_callback_data: Option<String>,
        /// Ventana's extension: send later, at this time on the business's clock.
        schedule: Option<UnixTime>,
    },
    /// Send an approved template with its parameters.
    Template {
        to: PhoneNumber,
        input: String,
        template: SendTemplate,
        reply_to: Option<MessageId>,
        biz_opaque_callback_data: Option<String>,
        schedule: Option<UnixTime>,
    },
    /// Mark a received message (and those before it) as read.
    MarkRead {
        message_id: MessageId,
        /// Whether to show "typing…" to the user as well (`typing_indicator: {"type":"text"}`).
        typing_indicator: bool,
    },
}

/// Ventana's `dry_run` extension: `true` asks what the send would do without doing it. Old
/// clients never send it; anything but a boolean is refused.
pub(crate) fn dry_run(value: &Value) -> Result<bool, GraphError> {
    match value.get("dry_run") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(GraphError::invalid_parameter(
            "dry_run must be true or false.",
        )),
    }
}

/// A raw request body as JSON, or the error that says it is not.
pub(crate) fn json(body: &[u8]) -> Result<Value, GraphError> {
    serde_json::from_slice(body).map_err(|error| {
        GraphError::invalid_parameter(format!("The request body is not valid JSON: {error}."))
    })
}

impl SendRequest {
    /// The send's `biz_opaque_callback_data`, echoed on its statuses.
    pub(crate) fn callback_data(&self) -> Option<&str> {
        match self {
            Self::Text {
                biz_opaque_callback_data,
                ..
            }
            | Self::Template {
                biz_opaque_callback_data,
                ..
            } => biz_opaque_callback_data.as_deref(),
            _ => None,
        }
    }

    /// Parses a raw request body.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, GraphError> {
        Self::from_json(&json(body)?)
    }

    /// Reads a request body already parsed as JSON.
    pub(crate) fn from_json(value: &Value) -> Result<Self, GraphError> {
        let Value::Object(request) = value else {
            return Err(GraphError::invalid_parameter(
                "The request body must be a JSON object.",
            ));
        };

        match string(request, "messaging_product", "messaging_product")? {
            Some("whatsapp") => {}
            Some(other) => {
                return Err(GraphError::invalid_parameter(format!(
                    "Param messaging_product must be 'whatsapp', got '{other}'."
                )));
            }
            None => return Err(required("messaging_product")),
        }

        match string(request, "status", "status")? {
            Some("read") => return mark_read(request),
            Some(other) => {
                return Err(GraphError::invalid_parameter(format!(
                    "Param status must be 'read', got '{other}'."
                )));
            }
            None => {}
        }

        match string(request, "recipient_type", "recipient_type")? {
            None | Some("individual") => {}
            Some(other) => {
                return Err(GraphError::invalid_parameter(format!(
                    "Param recipient_type must be 'individual', got '{other}': this server does not support groups."
                )));
            }
        }

        let (to, input) = recipient(request)?;

        let reply_to = match object(request, "context", "context")? {
            None => None,
            Some(context) => {
                let id = string(context, "message_id", "context.message_id")?
                    .ok_or_else(|| required("context.message_id"))?;
                Some(message_id(id, "context.message_id")?)
            }
        };

        let biz_opaque_callback_data = string(
            request,
            "biz_opaque_callback_data",
            "biz_opaque_callback_data",
        )?;
        if biz_opaque_callback_data
            .is_some_and(|data| data.chars().count() > MAX_CALLBACK_DATA_CHARS)
        {
            return Err(GraphError::invalid_parameter(format!(
                "Param biz_opaque_callback_data must be at most {MAX_CALLBACK_DATA_CHARS} characters long."
            )));
        }
        let biz_opaque_callback_data = biz_opaque_callback_data.map(str::to_owned);
        let schedule = schedule(request)?;

        // Meta treats a body without `type` as text, and some SDKs rely on it.
        match string(request, "type", "type")?.unwrap_or("text") {
            "text" => {}
            "template" => {
                let template = field(request, "template").ok_or_else(|| {
                    GraphError::from(CloudError::new(
                        CloudErrorKind::RequiredParameterMissing,
                        "The parameter template is required.",
                    ))
                })?;
                let template = SendTemplate::parse(template).map_err(|e| {
                    GraphError::from(CloudError::new(e.kind(), format!("template.{e}")))
                })?;
                return Ok(Self::Template {
                    to,
                    input,
                    template,
                    reply_to,
                    biz_opaque_callback_data,
                    schedule,
                });
            }
            known if NOT_YET_SUPPORTED.contains(&known) => {
                return Err(GraphError::unsupported_type(format!(
                    "Message type '{known}' is not supported by this server yet; only 'text' and 'template' messages can be sent."
                )));
            }
            unknown => {
                return Err(GraphError::unsupported_type(format!(
                    "Param type '{unknown}' is not a known message type; only 'text' and 'template' messages can be sent."
                )));
            }
        }

        let text = object(request, "text", "text")?.ok_or_else(|| required("text.body"))?;
        let body = string(text, "body", "text.body")?.ok_or_else(|| required("text.body"))?;
        if body.is_empty() {
            return Err(GraphError::invalid_parameter(
                "Param text.body must not be empty.",
            ));
        }
        let chars = body.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(GraphError::invalid_parameter(format!(
                "Param text.body must be at most {MAX_TEXT_CHARS} characters long, got {chars}."
            )));
        }

        // `text.preview_url` today; older API versions had it at the top level.
        let preview_url = match boolean(text, "preview_url", "text.preview_url")? {
            Some(flag) => flag,
            None => boolean(request, "preview_url", "preview_url")?.unwrap_or(false),
        };

        Ok(Self::Text {
            to,
            input,
            body: body.to_owned(),
            preview_url,
            reply_to,
            biz_opaque_callback_data,
            schedule,
        })
    }
}

/// Ventana's extension `"schedule": {"send_at": "<RFC 3339>"}`: when to send, on the
/// business's clock. Old clients never send it; whether the time lies ahead is checked
/// against that clock by the caller.
fn schedule(request: &Map<String, Value>) -> Result<Option<UnixTime>, GraphError> {
    let Some(schedule) = object(request, "schedule", "schedule")? else {
        return Ok(None);
    };
    let send_at = string(schedule, "send_at", "schedule.send_at")?
        .ok_or_else(|| required("schedule.send_at"))?;
    UnixTime::parse_rfc3339(send_at)
        .map(Some)
        .map_err(|e| GraphError::invalid_parameter(format!("Param schedule.send_at: {e}.")))
}

/// `{"status":"read","message_id":…,"typing_indicator"?:{"type":"text"}}`.
fn mark_read(request: &Map<String, Value>) -> Result<SendRequest, GraphError> {
    let id = string(request, "message_id", "message_id")?.ok_or_else(|| required("message_id"))?;
    let message_id = message_id(id, "message_id")?;
    let typing_indicator = match object(request, "typing_indicator", "typing_indicator")? {
        None => false,
        Some(indicator) => match string(indicator, "type", "typing_indicator.type")? {
            Some("text") => true,
            _ => {
                return Err(GraphError::invalid_parameter(
                    "Param typing_indicator.type must be 'text'.",
                ));
            }
        },
    };
    Ok(SendRequest::MarkRead {
        message_id,
        typing_indicator,
    })
}

/// `to` as a phone number, and as given. A JSON number is accepted too: Graph coerces
/// parameter types, and a number is how some callers write digits.
fn recipient(request: &Map<String, Value>) -> Result<(PhoneNumber, String), GraphError> {
    let input = match field(request, "to") {
        Some(Value::String(to)) => to.clone(),
        Some(Value::Number(to)) if to.is_u64() => to.to_string(),
        Some(_) => return Err(GraphError::invalid_parameter("Param to must be a string.")),
        None if field(request, "recipient").is_some() => {
            return Err(GraphError::invalid_parameter(
                "Param recipient (a business-scoped user id) is not supported by this server; send to a phone number in 'to'.",
            ));
        }
        None => return Err(required("to")),
    };
    let to = input.parse::<PhoneNumber>().map_err(|error| {
        GraphError::invalid_parameter(format!("Param to is not a valid phone number: {error}."))
    })?;
    Ok((to, input))
}

fn message_id(id: &str, name: &str) -> Result<MessageId, GraphError> {
    id.parse().map_err(|error| {
        GraphError::invalid_parameter(format!("Param {name} is not a valid message id: {error}."))
    })
}

fn required(name: &str) -> GraphError {
    GraphError::invalid_parameter(format!("The parameter {name} is required."))
}

/// A field's value; `null` counts as absent, since some SDKs write unset options as null.
fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

// The typed getters below take the field's full dotted `name` (e.g. `text.body`) for the
// error, since `key` alone would not tell the developer where it is.

fn string<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    name: &str,
) -> Result<Option<&'a str>, GraphError> {
    match field(object, key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(GraphError::invalid_parameter(format!(
            "Param {name} must be a string."
        ))),
    }
}

fn boolean(object: &Map<String, Value>, key: &str, name: &str) -> Result<Option<bool>, GraphError> {
    match field(object, key) {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(_) => Err(GraphError::invalid_parameter(format!(
            "Param {name} must be a boolean."
        ))),
    }
}

fn object<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, GraphError> {
    match field(object, key) {
        None => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(GraphError::invalid_parameter(format!(
            "Param {name} must be an object."
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    const WAMID: &str = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTdCNUI4";

    fn parse(body: Value) -> SendRequest {
        SendRequest::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    /// The refusal of `body`, checked to be `code` and to name `field` in its details.
    fn refused(body: Value, code: i64, field: &str) -> GraphError {
        let error = SendRequest::parse(&serde_json::to_vec(&body).unwrap()).unwrap_err();
        assert_eq!(error.code, code, "{error}");
        assert!(
            error.details.contains(field),
            "details {:?} do not name {field}",
            error.details
        );
        error
    }

    fn text(body: &str) -> Value {
        json!({"messaging_product": "whatsapp", "to": "+1 650-555-1234", "type": "text", "text": {"body": body}})
    }

    #[test]
    fn a_text_message_parses_with_the_recipient_as_given_and_as_digits() {
        let request = parse(text("hi"));
        assert_eq!(
            request,
            SendRequest::Text {
                to: "16505551234".parse().unwrap(),
                input: "+1 650-555-1234".to_owned(),
                body: "hi".to_owned(),
                preview_url: false,
                reply_to: None,
                biz_opaque_callback_data: None,
                schedule: None,
            }
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_with_100() {
        let error = SendRequest::parse(b"{not json").unwrap_err();
        assert_eq!(error.code, 100);
        assert!(error.details.contains("JSON"));
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused_with_100() {
        refused(json!(["messaging_product"]), 100, "JSON object");
    }

    #[test]
    fn a_missing_messaging_product_is_refused_with_100() {
        let mut body = text("hi");
        body.as_object_mut().unwrap().remove("messaging_product");
        refused(body, 100, "messaging_product");
    }

    #[test]
    fn a_messaging_product_other_than_whatsapp_is_refused_with_100() {
        let mut body = text("hi");
        body["messaging_product"] = "instagram".into();
        refused(body, 100, "messaging_product");
    }

    #[test]
    fn status_read_is_a_mark_read_request() {
        let request =
            parse(json!({"messaging_product": "whatsapp", "status": "read", "message_id": WAMID}));
        assert_eq!(
            request,
            SendRequest::MarkRead {
                message_id: WAMID.parse().unwrap(),
                typing_indicator: false
            }
        );
    }

    #[test]
    fn mark_read_with_a_typing_indicator_asks_for_it() {
        let request = parse(json!({
            "messaging_product": "whatsapp", "status": "read", "message_id": WAMID,
            "typing_indicator": {"type": "text"},
        }));
        assert!(matches!(
            request,
            SendRequest::MarkRead {
                typing_indicator: true,
                ..
            }
        ));
    }

    #[test]
    fn mark_read_without_a_valid_message_id_is_refused_with_100() {
        refused(
            json!({"messaging_product": "whatsapp", "status": "read"}),
            100,
            "message_id",
        );
        refused(
            json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.x"}),
            100,
            "message_id",
        );
    }

    #[test]
    fn a_status_other_than_read_is_refused_with_100() {
        refused(
            json!({"messaging_product": "whatsapp", "status": "delivered", "message_id": WAMID}),
            100,
            "status",
        );
    }

    #[test]
    fn a_recipient_type_other_than_individual_is_refused_with_100() {
        let mut body = text("hi");
        body["recipient_type"] = "group".into();
        refused(body, 100, "recipient_type");
        let mut individual = text("hi");
        individual["recipient_type"] = "individual".into();
        assert!(matches!(parse(individual), SendRequest::Text { .. }));
    }

    #[test]
    fn a_missing_recipient_is_refused_with_100() {
        let mut body = text("hi");
        body.as_object_mut().unwrap().remove("to");
        refused(body, 100, "to");
    }

    #[test]
    fn a_recipient_that_is_not_a_phone_number_is_refused_with_100() {
        let mut body = text("hi");
        body["to"] = "call me maybe".into();
        refused(body.clone(), 100, "Param to");
        body["to"] = json!({"wa_id": "16505551234"});
        refused(body, 100, "Param to");
    }

    #[test]
    fn a_business_scoped_recipient_is_refused_naming_recipient() {
        let mut body = text("hi");
        body.as_object_mut().unwrap().remove("to");
        body["recipient"] = "US.13491208655302741918".into();
        refused(body, 100, "recipient");
    }

    #[test]
    fn a_recipient_written_as_a_json_number_is_accepted() {
        let mut body = text("hi");
        body["to"] = json!(16505551234_u64);
        assert!(matches!(parse(body), SendRequest::Text { input, .. } if input == "16505551234"));
    }

    #[test]
    fn a_missing_type_means_text() {
        let mut body = text("hi");
        body.as_object_mut().unwrap().remove("type");
        assert!(matches!(parse(body), SendRequest::Text { body, .. } if body == "hi"));
    }

    #[test]
    fn every_other_cloud_api_type_is_refused_with_131051_as_not_supported_yet() {
        for kind in NOT_YET_SUPPORTED {
            let mut body =
                json!({"messaging_product": "whatsapp", "to": "16505551234", "type": kind});
            body[*kind] = json!({});
            let error = refused(body, 131051, kind);
            assert!(
                error.details.contains("not supported by this server yet"),
                "{error}"
            );
        }
    }

    #[test]
    fn an_unknown_type_is_refused_with_131051() {
        let mut body = text("hi");
        body["type"] = "hologram".into();
        refused(body, 131051, "hologram");
    }

    #[test]
    fn a_missing_or_empty_text_body_is_refused_with_100() {
        let mut body = text("hi");
        body.as_object_mut().unwrap().remove("text");
        refused(body, 100, "text.body");
        refused(text(""), 100, "text.body");
        let mut not_a_string = text("hi");
        not_a_string["text"]["body"] = json!(42);
        refused(not_a_string, 100, "text.body");
    }

    #[test]
    fn a_text_body_longer_than_the_limit_in_characters_is_refused_naming_the_limit() {
        let error = refused(text(&"a".repeat(MAX_TEXT_CHARS + 1)), 100, "text.body");
        assert!(error.details.contains(&MAX_TEXT_CHARS.to_string()));
    }

    #[test]
    fn the_text_limit_counts_characters_not_bytes() {
        // 4096 two-byte characters are 8192 bytes and still fit.
        let request = parse(text(&"é".repeat(MAX_TEXT_CHARS)));
        assert!(
            matches!(request, SendRequest::Text { body, .. } if body.chars().count() == MAX_TEXT_CHARS)
        );
    }

    #[test]
    fn a_reply_carries_the_context_message_id() {
        let mut body = text("hi");
        body["context"] = json!({"message_id": WAMID});
        assert!(
            matches!(parse(body), SendRequest::Text { reply_to: Some(id), .. } if id.as_str() == WAMID)
        );
    }

    #[test]
    fn a_context_without_a_valid_message_id_is_refused_with_100() {
        let mut body = text("hi");
        body["context"] = json!({"message_id": "not-a-wamid"});
        refused(body.clone(), 100, "context.message_id");
        body["context"] = json!({});
        refused(body.clone(), 100, "context.message_id");
        body["context"] = json!("wamid.x");
        refused(body, 100, "context");
    }

    #[test]
    fn preview_url_defaults_to_false_and_is_read_from_text_or_the_top_level() {
        let mut body = text("see https://example.org");
        assert!(matches!(
            parse(body.clone()),
            SendRequest::Text {
                preview_url: false,
                ..
            }
        ));
        body["text"]["preview_url"] = true.into();
        assert!(matches!(
            parse(body),
            SendRequest::Text {
                preview_url: true,
                ..
            }
        ));
        let mut legacy = text("see https://example.org");
        legacy["preview_url"] = true.into();
        assert!(matches!(
            parse(legacy),
            SendRequest::Text {
                preview_url: true,
                ..
            }
        ));
    }

    #[test]
    fn a_preview_url_that_is_not_a_boolean_is_refused_with_100() {
        let mut body = text("hi");
        body["text"]["preview_url"] = "yes".into();
        refused(body, 100, "text.preview_url");
    }

    #[test]
    fn unknown_top_level_fields_are_tolerated_and_callback_data_is_kept() {
        let mut body = text("hi");
        body["biz_opaque_callback_data"] = "order-42".into();
        body["some_sdk_extension"] = json!({"x": 1});
        assert!(matches!(
            parse(body),
            SendRequest::Text { biz_opaque_callback_data: Some(data), .. } if data == "order-42"
        ));
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let mut body = text("hi");
        body["context"] = Value::Null;
        body["recipient_type"] = Value::Null;
        body["biz_opaque_callback_data"] = Value::Null;
        assert!(matches!(
            parse(body),
            SendRequest::Text { reply_to: None, .. }
        ));
    }

    /// The send forms SDKs use (tests/golden/template_send_forms.json) all read as the same
    /// template send, pinned there as `expected`.
    #[test]
    fn every_sdk_form_of_a_template_send_reads_the_same() {
        let golden: Value =
            serde_json::from_str(include_str!("../../tests/golden/template_send_forms.json"))
                .unwrap();
        for (name, form) in golden["forms"].as_object().unwrap() {
            let SendRequest::Template { to, template, .. } = parse(form.clone()) else {
                panic!("{name} is not a template send");
            };
            assert_eq!(to.digits(), "16505551234", "{name}");
            let read = serde_json::to_value(&template).unwrap();
            assert_eq!(
                read,
                golden["expected"],
                "{name} reads as\n{}\nnot as pinned",
                serde_json::to_string_pretty(&read).unwrap()
            );
        }
    }
}
