//! A template as a business submits it (`POST /{waba_id}/message_templates`) and as
//! `GET …/message_templates` returns it.
//!
//! [`TemplateDefinition`] can only be built by [`TemplateDefinition::parse`] (or serde, which
//! calls it), so holding one means it passed every Cloud API rule; the rules are in `parse`.
//! It serialises to the Cloud API's JSON with uppercase `type`s, ready to store and return
//! unchanged. [`TemplateDefinition::parameters`] says what a send must supply.

use super::Category;
use super::placeholder;
pub use super::placeholder::Variable;
use crate::ids::checked_string;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a template name is 1 to 512 lowercase letters, digits and underscores")]
pub struct TemplateNameError;

checked_string!(
    /// `[a-z0-9_]`, 1 to 512 characters.
    TemplateName,
    TemplateNameError,
    |s| {
        let valid = (1..=512).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        valid.then_some(()).ok_or(TemplateNameError)
    }
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a language code is 2 or 3 lowercase letters, optionally followed by `_` and a region (US) or a script (Hant)"
)]
pub struct LanguageCodeError;

checked_string!(
    /// A template language as the Cloud API spells it: `en`, `en_US`, `pt_BR`, `zh_Hant`.
    LanguageCode,
    LanguageCodeError,
    |s| {
        let (language, rest) = match s.split_once('_') {
            Some((language, rest)) => (language, Some(rest)),
            None => (s, None),
        };
        let language_ok =
            (2..=3).contains(&language.len()) && language.bytes().all(|b| b.is_ascii_lowercase());
        let rest_ok = rest.is_none_or(|r| {
            let region = r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase());
            let script = r.len() == 4
                && r.bytes().enumerate().all(|(i, b)| {
                    if i == 0 {
                        b.is_ascii_uppercase()
                    } else {
                        b.is_ascii_lowercase()
                    }
                });
            region || script
        });
        (language_ok && rest_ok).then_some(()).ok_or(LanguageCodeError)
    }
);

/// How the template's text spells variables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParameterFormat {
    /// `{{1}}`, `{{2}}`, …
    #[default]
    Positional,
    /// `{{first_name}}`, …
    Named,
}

impl ParameterFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Positional => "POSITIONAL",
            Self::Named => "NAMED",
        }
    }
}

/// The media a header (and the parameter filling it) carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Video,
    Document,
}

impl MediaKind {
    /// The header `format` spelling (`IMAGE`, …); sends and bound values use lowercase.
    pub fn format(self) -> &'static str {
        match self {
            Self::Image => "IMAGE",
            Self::Video => "VIDEO",
            Self::Document => "DOCUMENT",
        }
    }

    /// The send-side parameter `type` (`image`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Document => "document",
        }
    }
}

/// Sample values shown to reviewers, one per variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextExample {
    /// `header_text: ["…"]` or `body_text: [["…", …]]`, in variable order.
    Positional(Vec<String>),
    /// `header_text_named_params` or `body_text_named_params`.
    Named(Vec<NamedExample>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamedExample {
    pub param_name: String,
    pub example: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Header {
    /// At most 60 characters and one variable.
    Text {
        text: String,
        example: Option<TextExample>,
    },
    /// The media itself is a parameter of each send; `example` is the `header_handle` a
    /// reviewer looks at.
    Media {
        kind: MediaKind,
        example: Option<String>,
    },
    /// The location is a parameter of each send.
    Location,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    pub text: String,
    pub example: Option<TextExample>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Button {
    QuickReply {
        text: String,
    },
    /// `url` may end with `{{1}}`, filled by each send; `example` is then the full URL.
    Url {
        text: String,
        url: String,
        #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_list")]
        example: Option<String>,
    },
    PhoneNumber {
        text: String,
        phone_number: String,
    },
    /// Copies a coupon code given by each send; `example` is a sample code.
    CopyCode {
        example: String,
    },
}

/// The text WhatsApp shows on every COPY_CODE button.
pub const COPY_CODE_TEXT: &str = "Copy offer code";

impl Button {
    /// The label on the button.
    pub fn text(&self) -> &str {
        match self {
            Self::QuickReply { text } | Self::Url { text, .. } | Self::PhoneNumber { text, .. } => {
                text
            }
            Self::CopyCode { .. } => COPY_CODE_TEXT,
        }
    }

    /// The Cloud API `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::QuickReply { .. } => "QUICK_REPLY",
            Self::Url { .. } => "URL",
            Self::PhoneNumber { .. } => "PHONE_NUMBER",
            Self::CopyCode { .. } => "COPY_CODE",
        }
    }

    /// For a URL button whose url ends with `{{1}}`, the fixed part before it.
    pub fn url_prefix(&self) -> Option<&str> {
        match self {
            Self::Url { url, .. } => url.strip_suffix("{{1}}"),
            _ => None,
        }
    }
}

fn as_list<S: Serializer>(example: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    example.as_slice().serialize(serializer)
}

/// A validated template. Components are kept in the Cloud API's order (header, body, footer,
/// buttons) whatever order they were submitted in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateDefinition {
    pub(crate) name: TemplateName,
    pub(crate) language: LanguageCode,
    pub(crate) category: Category,
    pub(crate) parameter_format: ParameterFormat,
    pub(crate) header: Option<Header>,
    pub(crate) body: Body,
    pub(crate) footer: Option<Footer>,
    pub(crate) buttons: Vec<Button>,
}

/// One component of a definition, borrowed; [`TemplateDefinition::components`] lists them
/// as `components[i]` of the JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component<'a> {
    Header(&'a Header),
    Body(&'a Body),
    Footer(&'a Footer),
    Buttons(&'a [Button]),
}

/// A submitted definition that breaks a rule: the first one found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// JSON path of the offending field, e.g. `components[1].buttons[0].text` or `name`;
    /// empty when the document itself is wrong.
    pub field: String,
    pub message: String,
}

impl std::error::Error for DefinitionError {}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl From<super::reader::FieldError> for DefinitionError {
    fn from(e: super::reader::FieldError) -> Self {
        Self {
            field: e.field,
            message: e.message,
        }
    }
}

impl TemplateDefinition {
    pub fn name(&self) -> &TemplateName {
        &self.name
    }

    pub fn language(&self) -> &LanguageCode {
        &self.language
    }

    pub fn category(&self) -> Category {
        self.category
    }

    pub fn parameter_format(&self) -> ParameterFormat {
        self.parameter_format
    }

    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    pub fn body(&self) -> &Body {
        &self.body
    }

    pub fn footer(&self) -> Option<&Footer> {
        self.footer.as_ref()
    }

    pub fn buttons(&self) -> &[Button] {
        &self.buttons
    }

    pub fn components(&self) -> Vec<Component<'_>> {
        let mut components = Vec::with_capacity(4);
        components.extend(self.header.as_ref().map(Component::Header));
        components.push(Component::Body(&self.body));
        components.extend(self.footer.as_ref().map(Component::Footer));
        if !self.buttons.is_empty() {
            components.push(Component::Buttons(&self.buttons));
        }
        components
    }

    /// What a send must supply to fill this template.
    pub fn parameters(&self) -> ParameterSpec {
        let format = self.parameter_format;
        let header = self.header.as_ref().and_then(|header| match header {
            Header::Text { text, .. } => placeholder::distinct(text, format)
                .into_iter()
                .next()
                .map(HeaderParameter::Text),
            Header::Media { kind, .. } => Some(HeaderParameter::Media(*kind)),
            Header::Location => Some(HeaderParameter::Location),
        });
        let buttons = self
            .buttons
            .iter()
            .enumerate()
            .filter_map(|(index, button)| {
                let kind = match button {
                    Button::QuickReply { .. } => ButtonParameterKind::Payload,
                    Button::Url { .. } if button.url_prefix().is_some() => {
                        ButtonParameterKind::UrlSuffix
                    }
                    Button::CopyCode { .. } => ButtonParameterKind::CouponCode,
                    Button::Url { .. } | Button::PhoneNumber { .. } => return None,
                };
                Some(ButtonParameter { index, kind })
            })
            .collect();
        ParameterSpec {
            header,
            body: placeholder::distinct(&self.body.text, format),
            buttons,
        }
    }
}

/// What a send must supply, derived from a definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterSpec {
    pub header: Option<HeaderParameter>,
    /// The body's variables, in the order a POSITIONAL send gives their values.
    pub body: Vec<Variable>,
    /// Buttons that take a parameter, by index; the others take none.
    pub buttons: Vec<ButtonParameter>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderParameter {
    /// The text header's one variable.
    Text(Variable),
    Media(MediaKind),
    Location,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ButtonParameter {
    pub index: usize,
    pub kind: ButtonParameterKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ButtonParameterKind {
    /// QUICK_REPLY: an optional `payload` echoed back when tapped.
    Payload,
    /// URL ending in `{{1}}`: a required `text` appended to the url.
    UrlSuffix,
    /// COPY_CODE: a required `coupon_code`.
    CouponCode,
}

impl ButtonParameterKind {
    pub fn required(self) -> bool {
        !matches!(self, Self::Payload)
    }

    /// The send-side parameter `type` that fills it.
    pub fn parameter_type(self) -> &'static str {
        match self {
            Self::Payload => "payload",
            Self::UrlSuffix => "text",
            Self::CouponCode => "coupon_code",
        }
    }
}

impl Serialize for TemplateDefinition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("language", &self.language)?;
        map.serialize_entry("category", &self.category)?;
        map.serialize_entry("parameter_format", &self.parameter_format)?;
        map.serialize_entry("components", &self.components())?;
        map.end()
    }
}

/// Deserialising runs every rule of [`TemplateDefinition::parse`].
impl<'de> Deserialize<'de> for TemplateDefinition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = serde_json::Value::deserialize(deserializer)?;
        Self::parse(&json).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize)]
enum HeaderExample<'a> {
    #[serde(rename = "header_text")]
    Positional(&'a [String]),
    #[serde(rename = "header_text_named_params")]
    Named(&'a [NamedExample]),
    #[serde(rename = "header_handle")]
    Handle([&'a str; 1]),
}

#[derive(Serialize)]
enum BodyExample<'a> {
    #[serde(rename = "body_text")]
    Positional([&'a [String]; 1]),
    #[serde(rename = "body_text_named_params")]
    Named(&'a [NamedExample]),
}

impl Serialize for Component<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match *self {
            Component::Header(header) => {
                map.serialize_entry("type", "HEADER")?;
                match header {
                    Header::Text { text, example } => {
                        map.serialize_entry("format", "TEXT")?;
                        map.serialize_entry("text", text)?;
                        match example {
                            Some(TextExample::Positional(values)) => {
                                map.serialize_entry("example", &HeaderExample::Positional(values))?
                            }
                            Some(TextExample::Named(values)) => {
                                map.serialize_entry("example", &HeaderExample::Named(values))?
                            }
                            None => {}
                        }
                    }
                    Header::Media { kind, example } => {
                        map.serialize_entry("format", kind.format())?;
                        if let Some(handle) = example {
                            map.serialize_entry("example", &HeaderExample::Handle([handle]))?;
                        }
                    }
                    Header::Location => map.serialize_entry("format", "LOCATION")?,
                }
            }
            Component::Body(body) => {
                map.serialize_entry("type", "BODY")?;
                map.serialize_entry("text", &body.text)?;
                match &body.example {
                    Some(TextExample::Positional(values)) => {
                        map.serialize_entry("example", &BodyExample::Positional([values]))?
                    }
                    Some(TextExample::Named(values)) => {
                        map.serialize_entry("example", &BodyExample::Named(values))?
                    }
                    None => {}
                }
            }
            Component::Footer(footer) => {
                map.serialize_entry("type", "FOOTER")?;
                map.serialize_entry("text", &footer.text)?;
            }
            Component::Buttons(buttons) => {
                map.serialize_entry("type", "BUTTONS")?;
                map.serialize_entry("buttons", buttons)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::fixtures;
    use serde_json::json;

    #[test]
    fn names_are_snake_case_up_to_512_characters() {
        assert!("order_shipped_2".parse::<TemplateName>().is_ok());
        assert!("a".repeat(512).parse::<TemplateName>().is_ok());
        for bad in [
            "",
            "Order",
            "order-shipped",
            "order shipped",
            &"a".repeat(513),
        ] {
            assert_eq!(
                bad.parse::<TemplateName>(),
                Err(TemplateNameError),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn language_codes_have_the_cloud_api_shape() {
        for good in ["en", "fil", "en_US", "pt_BR", "es_MX", "zh_CN", "zh_Hant"] {
            assert!(good.parse::<LanguageCode>().is_ok(), "{good:?}");
        }
        for bad in [
            "", "e", "english", "EN", "en_us", "en-US", "en_", "en_USA", "zh_hant",
        ] {
            assert_eq!(
                bad.parse::<LanguageCode>(),
                Err(LanguageCodeError),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_definition_serialises_as_the_cloud_api_returns_it() {
        let submitted = fixtures::shipping_json();
        let stored = serde_json::to_value(fixtures::shipping()).unwrap();
        assert_eq!(
            stored,
            json!({
                "name": "shipping_confirmation",
                "language": "en_US",
                "category": "UTILITY",
                "parameter_format": "POSITIONAL",
                "components": [
                    {"type": "HEADER", "format": "TEXT", "text": "Order {{1}} has shipped",
                     "example": {"header_text": ["#4821"]}},
                    {"type": "BODY", "text": submitted["components"][1]["text"],
                     "example": {"body_text": [["Ana", "2 books", "Friday"]]}},
                    {"type": "FOOTER", "text": "Reply STOP to opt out"},
                    {"type": "BUTTONS", "buttons": [
                        {"type": "URL", "text": "Track order",
                         "url": "https://shop.example/track/{{1}}",
                         "example": ["https://shop.example/track/4821"]},
                        {"type": "QUICK_REPLY", "text": "Talk to us"},
                    ]},
                ],
            })
        );
    }

    #[test]
    fn named_and_media_examples_keep_their_cloud_api_keys() {
        let appointment = serde_json::to_value(fixtures::appointment()).unwrap();
        assert_eq!(appointment["parameter_format"], "NAMED");
        assert_eq!(
            appointment["components"][0]["example"],
            json!({"header_text_named_params": [{"param_name": "first_name", "example": "Ana"}]})
        );
        assert_eq!(
            appointment["components"][1]["example"]["body_text_named_params"][1],
            json!({"param_name": "doctor", "example": "Dr. Ruiz"})
        );

        let ticket = serde_json::to_value(fixtures::ticket()).unwrap();
        assert_eq!(
            ticket["components"][0],
            json!({"type": "HEADER", "format": "DOCUMENT", "example": {"header_handle": ["4::aW1hZ2U="]}})
        );
        assert_eq!(
            ticket["components"][3]["buttons"],
            json!([
                {"type": "PHONE_NUMBER", "text": "Call the box office", "phone_number": "+15550100"},
                {"type": "COPY_CODE", "example": "GATE7A"},
            ])
        );
    }

    #[test]
    fn a_stored_definition_reads_back_equal() {
        for definition in [
            fixtures::shipping(),
            fixtures::appointment(),
            fixtures::ticket(),
        ] {
            let stored = serde_json::to_string(&definition).unwrap();
            let loaded: TemplateDefinition = serde_json::from_str(&stored).unwrap();
            assert_eq!(loaded, definition);
        }
    }

    #[test]
    fn deserialising_runs_the_rules() {
        let mut json = fixtures::shipping_json();
        json["name"] = json!("Shipping");
        let err = serde_json::from_value::<TemplateDefinition>(json).unwrap_err();
        assert!(err.to_string().starts_with("name: "), "{err}");
    }

    #[test]
    fn components_list_in_cloud_api_order_even_when_submitted_otherwise() {
        let mut json = fixtures::shipping_json();
        json["components"].as_array_mut().unwrap().reverse();
        let definition = TemplateDefinition::parse(&json).unwrap();
        assert_eq!(definition, fixtures::shipping());
        assert!(matches!(definition.components()[0], Component::Header(_)));
    }

    #[test]
    fn shipping_needs_a_header_value_three_body_values_and_a_url_suffix() {
        let spec = fixtures::shipping().parameters();
        assert_eq!(
            spec,
            ParameterSpec {
                header: Some(HeaderParameter::Text(Variable::Positional(1))),
                body: vec![
                    Variable::Positional(1),
                    Variable::Positional(2),
                    Variable::Positional(3)
                ],
                buttons: vec![
                    ButtonParameter {
                        index: 0,
                        kind: ButtonParameterKind::UrlSuffix
                    },
                    ButtonParameter {
                        index: 1,
                        kind: ButtonParameterKind::Payload
                    },
                ],
            }
        );
        assert!(spec.buttons[0].kind.required());
        assert!(!spec.buttons[1].kind.required());
    }

    #[test]
    fn named_body_variables_are_listed_by_first_appearance() {
        let spec = fixtures::appointment().parameters();
        let named = |n: &str| Variable::Named(n.into());
        assert_eq!(
            spec.header,
            Some(HeaderParameter::Text(named("first_name")))
        );
        assert_eq!(
            spec.body,
            [
                named("first_name"),
                named("doctor"),
                named("date"),
                named("time")
            ]
        );
    }

    #[test]
    fn a_document_header_and_copy_code_are_parameters_a_phone_button_is_not() {
        let spec = fixtures::ticket().parameters();
        assert_eq!(
            spec.header,
            Some(HeaderParameter::Media(MediaKind::Document))
        );
        assert_eq!(
            spec.buttons,
            [ButtonParameter {
                index: 1,
                kind: ButtonParameterKind::CouponCode
            }]
        );
        assert_eq!(fixtures::ticket().buttons()[1].text(), "Copy offer code");
    }
}
