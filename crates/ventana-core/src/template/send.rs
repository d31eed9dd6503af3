//! The `template` object of a send (`POST /{phone_number_id}/messages`, `type: "template"`),
//! as Cloud API SDKs write it.
//!
//! [`SendTemplate::parse`] checks only the shape (which fields, which types) and names the
//! field that is wrong; whether the values fit the template is [`bind`](fn@super::bind)'s job,
//! because the Cloud API answers those with its own codes (132000, 132012).

use super::definition::{LanguageCode, MediaKind, TemplateName};
use super::reader::{FieldError, Node};
use crate::cloud_error::CloudErrorKind;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Number, Value};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SendTemplate {
    pub name: TemplateName,
    #[serde(serialize_with = "language_object")]
    pub language: LanguageCode,
    /// Absent when the template has nothing to fill.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<SendComponent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SendComponent {
    Header {
        parameters: Vec<Parameter>,
    },
    Body {
        parameters: Vec<Parameter>,
    },
    Button {
        sub_type: ButtonSubType,
        /// The button's position in the template; SDKs send it as a string.
        #[serde(serialize_with = "as_string")]
        index: usize,
        parameters: Vec<Parameter>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonSubType {
    QuickReply,
    Url,
    CopyCode,
}

impl ButtonSubType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QuickReply => "quick_reply",
            Self::Url => "url",
            Self::CopyCode => "copy_code",
        }
    }
}

/// One parameter; `parameter_name` says which variable it fills in NAMED templates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Parameter {
    #[serde(flatten)]
    pub value: ParameterValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParameterValue {
    Text { text: String },
    Currency { currency: Currency },
    DateTime { date_time: DateTime },
    Image { image: MediaRef },
    Video { video: MediaRef },
    Document { document: MediaRef },
    Location { location: Location },
    Payload { payload: String },
    CouponCode { coupon_code: String },
}

impl ParameterValue {
    /// The parameter `type`, as the Cloud API spells it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Currency { .. } => "currency",
            Self::DateTime { .. } => "date_time",
            Self::Image { .. } => "image",
            Self::Video { .. } => "video",
            Self::Document { .. } => "document",
            Self::Location { .. } => "location",
            Self::Payload { .. } => "payload",
            Self::CouponCode { .. } => "coupon_code",
        }
    }

    pub fn media(&self) -> Option<(MediaKind, &MediaRef)> {
        match self {
            Self::Image { image } => Some((MediaKind::Image, image)),
            Self::Video { video } => Some((MediaKind::Video, video)),
            Self::Document { document } => Some((MediaKind::Document, document)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Currency {
    pub fallback_value: String,
    /// ISO 4217, checked when bound.
    pub code: String,
    /// The amount times 1000; must be an integer, checked when bound.
    pub amount_1000: Number,
}

/// Meta's richer forms (`day_of_week`, …) are accepted and ignored: devices show the
/// fallback value, as WhatsApp does today.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DateTime {
    pub fallback_value: String,
}

/// A media header's parameter: exactly one of `id` (an uploaded media id) and `link`,
/// checked when bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Documents only: the name shown to the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// A location header's parameter. Coordinates are kept as written (numbers or strings) and
/// checked when bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: String,
    pub longitude: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A send whose `template` object is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SendError {
    /// JSON path inside the `template` object, e.g. `components[1].parameters[0].text`.
    pub field: String,
    pub message: String,
    missing: bool,
}

impl SendError {
    /// The Cloud API error this is: 131008 (required parameter is missing) or 131009
    /// (parameter value is not valid).
    pub fn kind(&self) -> CloudErrorKind {
        if self.missing {
            CloudErrorKind::RequiredParameterMissing
        } else {
            CloudErrorKind::ParameterValueNotValid
        }
    }

    /// The Cloud API error code.
    pub fn code(&self) -> u32 {
        self.kind().code()
    }
}

impl From<FieldError> for SendError {
    fn from(e: FieldError) -> Self {
        Self {
            field: e.field,
            message: e.message,
            missing: e.missing,
        }
    }
}

impl SendTemplate {
    pub fn parse(json: &Value) -> Result<Self, SendError> {
        let root = Node::root(json);
        let name_node = root.require("name")?;
        let name = name_node
            .str()?
            .parse()
            .map_err(|e: super::definition::TemplateNameError| name_node.error(e.to_string()))?;
        let language = root.require("language")?;
        let code_node = language.require("code")?;
        let code = code_node
            .str()?
            .parse()
            .map_err(|e: super::definition::LanguageCodeError| code_node.error(e.to_string()))?;
        if let Some(policy) = language.get("policy")?
            && policy.str()? != "deterministic"
        {
            return Err(policy.error("the only policy is \"deterministic\"").into());
        }
        let components = match root.get("components")? {
            Some(list) => parse_components(&list)?,
            None => Vec::new(),
        };
        Ok(Self {
            name,
            language: code,
            components,
        })
    }
}

/// Deserialising checks the shape as [`SendTemplate::parse`] does.
impl<'de> Deserialize<'de> for SendTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Value::deserialize(deserializer)?;
        Self::parse(&json).map_err(serde::de::Error::custom)
    }
}

fn parse_components(list: &Node) -> Result<Vec<SendComponent>, FieldError> {
    let mut components: Vec<SendComponent> = Vec::new();
    for item in list.items()? {
        let component = parse_component(&item)?;
        let repeated = components.iter().any(|c| match (c, &component) {
            (SendComponent::Header { .. }, SendComponent::Header { .. })
            | (SendComponent::Body { .. }, SendComponent::Body { .. }) => true,
            (SendComponent::Button { index: a, .. }, SendComponent::Button { index: b, .. }) => {
                a == b
            }
            _ => false,
        });
        if repeated {
            return Err(item.error("this component is given twice"));
        }
        components.push(component);
    }
    Ok(components)
}

fn parse_component(item: &Node) -> Result<SendComponent, FieldError> {
    let type_node = item.require("type")?;
    let parameters = match item.get("parameters")? {
        Some(list) => list
            .items()?
            .iter()
            .map(parse_parameter)
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    match type_node.str()?.to_ascii_lowercase().as_str() {
        "header" => Ok(SendComponent::Header { parameters }),
        "body" => Ok(SendComponent::Body { parameters }),
        "button" => {
            let sub_type_node = item.require("sub_type")?;
            let sub_type = match sub_type_node.str()?.to_ascii_lowercase().as_str() {
                "quick_reply" => ButtonSubType::QuickReply,
                "url" => ButtonSubType::Url,
                "copy_code" => ButtonSubType::CopyCode,
                _ => {
                    return Err(sub_type_node.error("must be quick_reply, url or copy_code"));
                }
            };
            let index_node = item.require("index")?;
            let index = match index_node.value() {
                Value::Number(n) => n.as_u64(),
                Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
                _ => None,
            };
            let index = index
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| index_node.error("must be the button's position: 0, 1, …"))?;
            Ok(SendComponent::Button {
                sub_type,
                index,
                parameters,
            })
        }
        _ => Err(type_node.error("must be header, body or button")),
    }
}

fn parse_parameter(node: &Node) -> Result<Parameter, FieldError> {
    let type_node = node.require("type")?;
    let kind = type_node.str()?.to_ascii_lowercase();
    let string = |key: &str| node.require_str(key).map(str::to_owned);
    let value = match kind.as_str() {
        "text" => ParameterValue::Text {
            text: string("text")?,
        },
        "currency" => {
            let currency = node.require("currency")?;
            ParameterValue::Currency {
                currency: Currency {
                    fallback_value: currency.require_str("fallback_value")?.to_owned(),
                    code: currency.require_str("code")?.to_owned(),
                    amount_1000: currency.require("amount_1000")?.number()?.clone(),
                },
            }
        }
        "date_time" => ParameterValue::DateTime {
            date_time: DateTime {
                fallback_value: node
                    .require("date_time")?
                    .require_str("fallback_value")?
                    .to_owned(),
            },
        },
        "image" | "video" | "document" => {
            let media = node.require(&kind)?;
            let field = |key| Ok::<_, FieldError>(media.optional_str(key)?.map(str::to_owned));
            let media = MediaRef {
                id: field("id")?,
                link: field("link")?,
                filename: field("filename")?,
            };
            match kind.as_str() {
                "image" => ParameterValue::Image { image: media },
                "video" => ParameterValue::Video { video: media },
                _ => ParameterValue::Document { document: media },
            }
        }
        "location" => {
            let location = node.require("location")?;
            ParameterValue::Location {
                location: Location {
                    latitude: location.require("latitude")?.str_or_number()?,
                    longitude: location.require("longitude")?.str_or_number()?,
                    name: location.optional_str("name")?.map(str::to_owned),
                    address: location.optional_str("address")?.map(str::to_owned),
                },
            }
        }
        "payload" => ParameterValue::Payload {
            payload: string("payload")?,
        },
        "coupon_code" => ParameterValue::CouponCode {
            coupon_code: string("coupon_code")?,
        },
        _ => {
            return Err(type_node.error(
                "must be text, currency, date_time, image, video, document, location, payload or coupon_code",
            ));
        }
    };
    Ok(Parameter {
        value,
        parameter_name: node.optional_str("parameter_name")?.map(str::to_owned),
    })
}

fn language_object<S: Serializer>(code: &LanguageCode, serializer: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Language<'a> {
        code: &'a LanguageCode,
    }
    Language { code }.serialize(serializer)
}

fn as_string<S: Serializer>(index: &usize, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(value: &str) -> Parameter {
        Parameter {
            value: ParameterValue::Text { text: value.into() },
            parameter_name: None,
        }
    }

    fn rejected(json: Value) -> SendError {
        match SendTemplate::parse(&json) {
            Ok(send) => panic!("accepted: {send:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_send_reads_as_sdks_write_it() {
        let send = SendTemplate::parse(&json!({
            "name": "shipping_confirmation",
            "language": {"code": "en_US", "policy": "deterministic"},
            "components": [
                {"type": "HEADER", "parameters": [{"type": "text", "text": "#4821"}]},
                {"type": "body", "parameters": [
                    {"type": "text", "text": "Ana"},
                    {"type": "currency", "currency": {"fallback_value": "$100.99", "code": "USD", "amount_1000": 100990}},
                    {"type": "date_time", "date_time": {"fallback_value": "February 25, 1977", "day_of_month": 25}},
                ]},
                {"type": "button", "sub_type": "URL", "index": "0",
                 "parameters": [{"type": "text", "text": "4821"}]},
                {"type": "button", "sub_type": "quick_reply", "index": 1,
                 "parameters": [{"type": "payload", "payload": "talk"}]},
            ],
        }))
        .unwrap();
        assert_eq!(send.name.as_str(), "shipping_confirmation");
        assert_eq!(send.language.as_str(), "en_US");
        assert_eq!(
            send.components[0],
            SendComponent::Header {
                parameters: vec![text("#4821")]
            }
        );
        let SendComponent::Body { parameters } = &send.components[1] else {
            panic!("{:?}", send.components[1]);
        };
        assert_eq!(
            parameters[1].value,
            ParameterValue::Currency {
                currency: Currency {
                    fallback_value: "$100.99".into(),
                    code: "USD".into(),
                    amount_1000: 100990.into(),
                }
            }
        );
        assert_eq!(
            send.components[2],
            SendComponent::Button {
                sub_type: ButtonSubType::Url,
                index: 0,
                parameters: vec![text("4821")]
            }
        );
        assert_eq!(
            send.components[3],
            SendComponent::Button {
                sub_type: ButtonSubType::QuickReply,
                index: 1,
                parameters: vec![Parameter {
                    value: ParameterValue::Payload {
                        payload: "talk".into()
                    },
                    parameter_name: None,
                }]
            }
        );
    }

    #[test]
    fn named_media_and_location_parameters_keep_their_fields() {
        let send = SendTemplate::parse(&json!({
            "name": "event_ticket", "language": {"code": "pt_BR"},
            "components": [
                {"type": "header", "parameters": [
                    {"type": "document", "document": {"link": "https://t.example/1.pdf", "filename": "ticket.pdf"}}]},
                {"type": "body", "parameters": [
                    {"type": "text", "text": "Ana", "parameter_name": "first_name"},
                    {"type": "location", "location": {"latitude": 38.72, "longitude": "-9.14", "name": "Hall"}}]},
            ],
        }))
        .unwrap();
        let SendComponent::Header { parameters } = &send.components[0] else {
            panic!();
        };
        assert_eq!(
            parameters[0].value.media(),
            Some((
                MediaKind::Document,
                &MediaRef {
                    id: None,
                    link: Some("https://t.example/1.pdf".into()),
                    filename: Some("ticket.pdf".into())
                }
            ))
        );
        let SendComponent::Body { parameters } = &send.components[1] else {
            panic!();
        };
        assert_eq!(parameters[0].parameter_name.as_deref(), Some("first_name"));
        assert_eq!(
            parameters[1].value,
            ParameterValue::Location {
                location: Location {
                    latitude: "38.72".into(),
                    longitude: "-9.14".into(),
                    name: Some("Hall".into()),
                    address: None
                }
            }
        );
    }

    #[test]
    fn components_may_be_absent_and_serialise_back_as_sdks_send_them() {
        let send = SendTemplate::parse(&json!({"name": "hello_world", "language": {"code": "en"}}))
            .unwrap();
        assert!(send.components.is_empty());
        assert_eq!(
            serde_json::to_value(&send).unwrap(),
            json!({"name": "hello_world", "language": {"code": "en"}})
        );

        let button = SendTemplate {
            components: vec![SendComponent::Button {
                sub_type: ButtonSubType::CopyCode,
                index: 2,
                parameters: vec![Parameter {
                    value: ParameterValue::CouponCode {
                        coupon_code: "SAVE10".into(),
                    },
                    parameter_name: None,
                }],
            }],
            ..send
        };
        let json = serde_json::to_value(&button).unwrap();
        assert_eq!(
            json["components"],
            json!([{"type": "button", "sub_type": "copy_code", "index": "2",
                    "parameters": [{"type": "coupon_code", "coupon_code": "SAVE10"}]}])
        );
        assert_eq!(
            serde_json::from_value::<SendTemplate>(json).unwrap(),
            button
        );
    }

    #[test]
    fn a_malformed_send_names_the_field_and_its_code() {
        let base = |components: Value| json!({"name": "x", "language": {"code": "en"}, "components": components});
        let cases = [
            (
                json!({"language": {"code": "en"}}),
                "name",
                "is required",
                131008,
            ),
            (
                json!({"name": "x", "language": "en"}),
                "language",
                "must be a JSON object",
                131009,
            ),
            (
                json!({"name": "x", "language": {"code": "EN"}}),
                "language.code",
                "a language code is 2 or 3 lowercase letters, optionally followed by `_` and a region (US) or a script (Hant)",
                131009,
            ),
            (
                json!({"name": "x", "language": {"code": "en", "policy": "fallback"}}),
                "language.policy",
                "the only policy is \"deterministic\"",
                131009,
            ),
            (
                base(json!([{"type": "footer"}])),
                "components[0].type",
                "must be header, body or button",
                131009,
            ),
            (
                base(json!([{"type": "body"}, {"type": "BODY"}])),
                "components[1]",
                "this component is given twice",
                131009,
            ),
            (
                base(json!([{"type": "button", "sub_type": "flow", "index": 0}])),
                "components[0].sub_type",
                "must be quick_reply, url or copy_code",
                131009,
            ),
            (
                base(json!([{"type": "button", "sub_type": "url", "index": "first"}])),
                "components[0].index",
                "must be the button's position: 0, 1, …",
                131009,
            ),
            (
                base(json!([{"type": "button", "sub_type": "url"}])),
                "components[0].index",
                "is required",
                131008,
            ),
            (
                base(json!([{"type": "body", "parameters": [{"type": "text"}]}])),
                "components[0].parameters[0].text",
                "is required",
                131008,
            ),
            (
                base(json!([{"type": "body", "parameters": [{"type": "emoji", "emoji": "x"}]}])),
                "components[0].parameters[0].type",
                "must be text, currency, date_time, image, video, document, location, payload or coupon_code",
                131009,
            ),
            (
                base(
                    json!([{"type": "body", "parameters": [{"type": "currency", "currency":
                {"fallback_value": "$1", "code": "USD", "amount_1000": "1000"}}]}]),
                ),
                "components[0].parameters[0].currency.amount_1000",
                "must be a number",
                131009,
            ),
            (
                base(
                    json!([{"type": "header", "parameters": [{"type": "image", "image": {"link": 5}}]}]),
                ),
                "components[0].parameters[0].image.link",
                "must be a string",
                131009,
            ),
        ];
        for (json, field, message, code) in cases {
            let e = rejected(json);
            assert_eq!(
                (e.field.as_str(), e.message.as_str(), e.code()),
                (field, message, code)
            );
        }
    }
}
