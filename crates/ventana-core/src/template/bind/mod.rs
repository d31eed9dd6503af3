//! Binding a send's parameters to the template they fill.
//!
//! [`bind`] makes the checks the Cloud API answers with 132000 (wrong number of parameters)
//! and 132012 (a parameter that does not fit), and returns a [`BoundTemplate`]: just the
//! values, in the template's order, which travel inside the ciphertext and are rendered on
//! the device with the public definition.

use super::definition::{
    Button, ButtonParameter, ButtonParameterKind, HeaderParameter, MediaKind, ParameterFormat,
    TemplateDefinition, Variable,
};
use super::parse::is_web_url;
use super::send::{
    ButtonSubType, Location, MediaRef, Parameter, ParameterValue, SendComponent, SendTemplate,
};
use crate::cloud_error::{CloudError, CloudErrorKind};
use serde::{Deserialize, Serialize};

/// The values of one template message. Empty parts are left out of its JSON, and the body's
/// values are a plain list in variable order, because it is sent inside every ciphertext.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<BoundHeader>,
    /// Display strings: text as is, currency and date_time as their fallback value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<String>,
    /// Only buttons given a value, by increasing index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<BoundButton>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundHeader {
    /// The value of the text header's variable (not the whole header).
    Text(String),
    Media(BoundMedia),
    Location(Location),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundMedia {
    pub kind: MediaKind,
    #[serde(flatten)]
    pub source: MediaSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSource {
    /// A media id uploaded through the gateway.
    Id(String),
    Link(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundButton {
    pub index: usize,
    #[serde(flatten)]
    pub value: ButtonValue,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonValue {
    /// QUICK_REPLY: echoed back to the business when tapped.
    Payload(String),
    /// URL: appended to the url in place of `{{1}}`.
    UrlSuffix(String),
    /// COPY_CODE: the code copied.
    CouponCode(String),
}

impl ButtonValue {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Payload(value) | Self::UrlSuffix(value) | Self::CouponCode(value) => value,
        }
    }
}

/// Why a send's parameters do not fit its template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The send names another template or language than the definition given.
    #[error("the send is for {name} ({language}), not this template")]
    WrongTemplate { name: String, language: String },
    /// `component` is `header`, `body` or `button 2`.
    #[error("{component}: expected {expected} parameters, got {got}")]
    ParameterCount {
        component: String,
        expected: usize,
        got: usize,
    },
    /// `field` is the parameter's path in the send, e.g. `components[1].parameters[0]`.
    #[error("{field}: {reason}")]
    ParameterFormat { field: String, reason: String },
}

impl BindError {
    /// The Cloud API error this is.
    pub fn kind(&self) -> CloudErrorKind {
        match self {
            Self::WrongTemplate { .. } => CloudErrorKind::TemplateUnavailable,
            Self::ParameterCount { .. } => CloudErrorKind::ParameterCountMismatch,
            Self::ParameterFormat { .. } => CloudErrorKind::ParameterFormatMismatch,
        }
    }

    /// The Cloud API error code.
    pub fn code(&self) -> u32 {
        self.kind().code()
    }

    /// The Cloud API error message for [`code`](Self::code); `Display` gives the details.
    pub fn title(&self) -> &'static str {
        self.kind().title()
    }
}

/// The details are what `Display` says: the component or field, and what is wrong with it.
impl From<&BindError> for CloudError {
    fn from(error: &BindError) -> Self {
        Self::new(error.kind(), error.to_string())
    }
}

fn count(component: impl Into<String>, expected: usize, got: usize) -> BindError {
    BindError::ParameterCount {
        component: component.into(),
        expected,
        got,
    }
}

fn mismatch(field: impl Into<String>, reason: impl Into<String>) -> BindError {
    BindError::ParameterFormat {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One component of the send: its path and parameters.
struct Given<'a> {
    path: String,
    parameters: &'a [Parameter],
}

impl Given<'_> {
    fn parameter_path(&self, i: usize) -> String {
        format!("{}.parameters[{i}]", self.path)
    }
}

/// Checks `send` against `def` and collects its values in the template's order.
pub fn bind(def: &TemplateDefinition, send: &SendTemplate) -> Result<BoundTemplate, BindError> {
    if send.name != *def.name() || send.language != *def.language() {
        return Err(BindError::WrongTemplate {
            name: send.name.to_string(),
            language: send.language.to_string(),
        });
    }
    let (mut header, mut body, mut buttons) = (None, None, Vec::new());
    for (i, component) in send.components.iter().enumerate() {
        let path = format!("components[{i}]");
        match component {
            SendComponent::Header { parameters } => header = Some(Given { path, parameters }),
            SendComponent::Body { parameters } => body = Some(Given { path, parameters }),
            SendComponent::Button {
                sub_type,
                index,
                parameters,
            } => buttons.push((*sub_type, *index, Given { path, parameters })),
        }
    }
    let spec = def.parameters();
    let format = def.parameter_format();
    Ok(BoundTemplate {
        header: bind_header(spec.header.as_ref(), header, format)?,
        body: bind_body(&spec.body, body, format)?,
        buttons: bind_buttons(def.buttons(), &spec.buttons, &buttons)?,
    })
}

fn bind_header(
    expected: Option<&HeaderParameter>,
    given: Option<Given>,
    format: ParameterFormat,
) -> Result<Option<BoundHeader>, BindError> {
    let parameters = given.as_ref().map_or(&[][..], |g| g.parameters);
    let Some(expected) = expected else {
        return match parameters.len() {
            0 => Ok(None),
            got => Err(count("header", 0, got)),
        };
    };
    let (Some(given), [parameter]) = (&given, parameters) else {
        return Err(count("header", 1, parameters.len()));
    };
    let path = given.parameter_path(0);
    match expected {
        HeaderParameter::Text(variable) => {
            slot(parameter, 0, std::slice::from_ref(variable), format, &path)?;
            Ok(Some(BoundHeader::Text(display_value(parameter, &path)?)))
        }
        HeaderParameter::Media(kind) => match parameter.value.media() {
            Some((given_kind, media)) if given_kind == *kind => {
                Ok(Some(BoundHeader::Media(bind_media(*kind, media, &path)?)))
            }
            _ => Err(mismatch(
                path,
                format!(
                    "the header is {}: the parameter's type must be {}, not {}",
                    kind.format(),
                    kind.as_str(),
                    parameter.value.type_name()
                ),
            )),
        },
        HeaderParameter::Location => match &parameter.value {
            ParameterValue::Location { location } => {
                check_coordinates(location, &path)?;
                Ok(Some(BoundHeader::Location(location.clone())))
            }
            other => Err(mismatch(
                path,
                format!(
                    "the header is LOCATION: the parameter's type must be location, not {}",
                    other.type_name()
                ),
            )),
        },
    }
}

fn bind_body(
    expected: &[Variable],
    given: Option<Given>,
    format: ParameterFormat,
) -> Result<Vec<String>, BindError> {
    // No body component means no parameters (and no path is ever needed).
    let given = given.unwrap_or(Given {
        path: String::new(),
        parameters: &[],
    });
    if given.parameters.len() != expected.len() {
        return Err(count("body", expected.len(), given.parameters.len()));
    }
    let mut values: Vec<Option<String>> = vec![None; expected.len()];
    for (i, parameter) in given.parameters.iter().enumerate() {
        let path = given.parameter_path(i);
        let slot = slot(parameter, i, expected, format, &path)?;
        let value = display_value(parameter, &path)?;
        match values.get_mut(slot) {
            Some(free @ None) => *free = Some(value),
            _ => {
                let name = parameter.parameter_name.as_deref().unwrap_or_default();
                return Err(mismatch(path, format!("{name:?} is given twice")));
            }
        }
    }
    // Counts are equal and no variable was given twice, so every slot is filled.
    Ok(values.into_iter().flatten().collect())
}

/// Which of `expected` the `i`th parameter fills: its position, or its `parameter_name`.
fn slot(
    parameter: &Parameter,
    i: usize,
    expected: &[Variable],
    format: ParameterFormat,
    path: &str,
) -> Result<usize, BindError> {
    match (format, &parameter.parameter_name) {
        (ParameterFormat::Positional, None) => Ok(i),
        (ParameterFormat::Positional, Some(_)) => Err(mismatch(
            path,
            "a POSITIONAL template takes its parameters in order, without parameter_name",
        )),
        (ParameterFormat::Named, None) => Err(mismatch(
            path,
            "a NAMED template needs parameter_name on each parameter",
        )),
        (ParameterFormat::Named, Some(name)) => expected
            .iter()
            .position(|v| matches!(v, Variable::Named(n) if n == name))
            .ok_or_else(|| {
                mismatch(
                    path,
                    format!("the template has no parameter named {name:?}"),
                )
            }),
    }
}

/// A header or body variable's value as the user will read it.
fn display_value(parameter: &Parameter, path: &str) -> Result<String, BindError> {
    let value = match &parameter.value {
        ParameterValue::Text { text } => text,
        ParameterValue::DateTime { date_time } => &date_time.fallback_value,
        ParameterValue::Currency { currency } => {
            let code = &currency.code;
            if !(code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())) {
                return Err(mismatch(
                    format!("{path}.currency.code"),
                    "must be an ISO 4217 code of 3 uppercase letters",
                ));
            }
            if !(currency.amount_1000.is_i64() || currency.amount_1000.is_u64()) {
                return Err(mismatch(
                    format!("{path}.currency.amount_1000"),
                    "must be an integer",
                ));
            }
            &currency.fallback_value
        }
        other => {
            return Err(mismatch(
                path,
                format!(
                    "expected a text, currency or date_time parameter, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    if value.trim().is_empty() {
        return Err(mismatch(path, "the value must not be empty"));
    }
    // Meta's rule for variable text: one line, no runs of spaces used as layout.
    if value.contains(['\n', '\r', '\t']) {
        return Err(mismatch(path, "the value cannot contain new lines or tabs"));
    }
    if value.contains("     ") {
        return Err(mismatch(
            path,
            "the value cannot contain more than 4 consecutive spaces",
        ));
    }
    Ok(value.clone())
}

fn bind_media(kind: MediaKind, media: &MediaRef, path: &str) -> Result<BoundMedia, BindError> {
    let path = format!("{path}.{}", kind.as_str());
    let source = match (&media.id, &media.link) {
        (Some(id), None) if !id.trim().is_empty() => MediaSource::Id(id.clone()),
        (None, Some(link)) if is_web_url(link) => MediaSource::Link(link.clone()),
        (None, Some(_)) => {
            return Err(mismatch(
                format!("{path}.link"),
                "must be an https:// or http:// link",
            ));
        }
        _ => return Err(mismatch(path, "needs exactly one of id and link")),
    };
    Ok(BoundMedia {
        kind,
        source,
        filename: media
            .filename
            .clone()
            .filter(|_| kind == MediaKind::Document),
    })
}

fn check_coordinates(location: &Location, path: &str) -> Result<(), BindError> {
    for (key, value, limit) in [
        ("latitude", &location.latitude, 90.0),
        ("longitude", &location.longitude, 180.0),
    ] {
        let within = value
            .parse::<f64>()
            .is_ok_and(|v: f64| v.is_finite() && v.abs() <= limit);
        if !within {
            return Err(mismatch(
                format!("{path}.location.{key}"),
                format!("must be a number from -{limit} to {limit}"),
            ));
        }
    }
    Ok(())
}

fn bind_buttons(
    buttons: &[Button],
    spec: &[ButtonParameter],
    given: &[(ButtonSubType, usize, Given)],
) -> Result<Vec<BoundButton>, BindError> {
    let mut bound = Vec::new();
    for (sub_type, index, given) in given {
        let fits = matches!(
            (buttons.get(*index), sub_type),
            (Some(Button::QuickReply { .. }), ButtonSubType::QuickReply)
                | (Some(Button::Url { .. }), ButtonSubType::Url)
                | (Some(Button::CopyCode { .. }), ButtonSubType::CopyCode)
        );
        if !fits {
            return Err(mismatch(
                format!("{}.index", given.path),
                format!(
                    "the template has no {} button at index {index}",
                    sub_type.as_str()
                ),
            ));
        }
        let component = format!("button {index}");
        let kind = spec.iter().find(|b| b.index == *index).map(|b| b.kind);
        let value = match (kind, given.parameters) {
            (None, []) | (Some(ButtonParameterKind::Payload), []) => continue,
            (None, parameters) => return Err(count(component, 0, parameters.len())),
            (Some(kind), [parameter]) => button_value(kind, parameter, &given.parameter_path(0))?,
            (Some(_), parameters) => return Err(count(component, 1, parameters.len())),
        };
        bound.push(BoundButton {
            index: *index,
            value,
        });
    }
    if let Some(missing) = spec
        .iter()
        .find(|b| b.kind.required() && !bound.iter().any(|given| given.index == b.index))
    {
        return Err(count(format!("button {}", missing.index), 1, 0));
    }
    bound.sort_by_key(|b| b.index);
    Ok(bound)
}

fn button_value(
    kind: ButtonParameterKind,
    parameter: &Parameter,
    path: &str,
) -> Result<ButtonValue, BindError> {
    let expected = kind.parameter_type();
    let value = match (kind, &parameter.value) {
        (ButtonParameterKind::Payload, ParameterValue::Payload { payload: value })
        | (ButtonParameterKind::UrlSuffix, ParameterValue::Text { text: value })
        | (ButtonParameterKind::CouponCode, ParameterValue::CouponCode { coupon_code: value }) => {
            value.clone()
        }
        (_, other) => {
            return Err(mismatch(
                path,
                format!("expected a {expected} parameter, got {}", other.type_name()),
            ));
        }
    };
    let path = format!("{path}.{expected}");
    if value.trim().is_empty() {
        return Err(mismatch(path, "must not be empty"));
    }
    Ok(match kind {
        ButtonParameterKind::Payload => ButtonValue::Payload(value),
        ButtonParameterKind::UrlSuffix if value.contains(char::is_whitespace) => {
            return Err(mismatch(path, "a url suffix cannot contain whitespace"));
        }
        ButtonParameterKind::UrlSuffix => ButtonValue::UrlSuffix(value),
        ButtonParameterKind::CouponCode if value.chars().count() > 15 => {
            return Err(mismatch(path, "a coupon code is at most 15 characters"));
        }
        ButtonParameterKind::CouponCode => ButtonValue::CouponCode(value),
    })
}

#[cfg(test)]
mod tests;
