//! Rendering a template message on the device: the public definition plus the decrypted
//! [`BoundTemplate`] give the text and buttons the user sees.
//!
//! The bound values come from the other end of the wire, so nothing here trusts them: values
//! that do not fit the definition are a [`RenderError`], never a panic, and values are
//! substituted once (a value containing `{{1}}` stays as it is).

use super::bind::{BoundHeader, BoundMedia, BoundTemplate, ButtonValue, MediaSource};
use super::definition::{
    Button, Header, HeaderParameter, ParameterFormat, TemplateDefinition, Variable,
};
use super::placeholder::{self, Piece};
use super::send::Location;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub header: Option<RenderedHeader>,
    pub body: String,
    pub footer: Option<String>,
    pub buttons: Vec<RenderedButton>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderedHeader {
    Text(String),
    Media(BoundMedia),
    Location(Location),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedButton {
    /// The button's position in the template; a tap is reported with it.
    pub index: usize,
    pub kind: RenderedButtonKind,
    /// The label.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderedButtonKind {
    /// `payload` is what a tap sends back; without one WhatsApp sends the label.
    QuickReply {
        payload: Option<String>,
    },
    Url {
        url: String,
    },
    PhoneNumber {
        phone: String,
    },
    CopyCode {
        code: String,
    },
}

/// A bound template that does not fit its definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the header value does not fit the template's header")]
    Header,
    #[error("the template's body has {expected} variables, the message carries {got} values")]
    BodyCount { expected: usize, got: usize },
    #[error("button {index}: {reason}")]
    Button { index: usize, reason: &'static str },
}

/// Fills `def` with `bound`'s values; any mismatch between the two is an error.
pub fn render(def: &TemplateDefinition, bound: &BoundTemplate) -> Result<Rendered, RenderError> {
    let spec = def.parameters();
    let format = def.parameter_format();
    let header = match (def.header(), &spec.header, &bound.header) {
        (None, None, None) => None,
        (Some(Header::Text { text, .. }), None, None) => Some(RenderedHeader::Text(text.clone())),
        (
            Some(Header::Text { text, .. }),
            Some(HeaderParameter::Text(variable)),
            Some(BoundHeader::Text(value)),
        ) => {
            let values = [(variable, value.as_str())];
            Some(RenderedHeader::Text(substitute(text, format, &values)))
        }
        (Some(Header::Media { kind, .. }), _, Some(BoundHeader::Media(media)))
            if media.kind == *kind =>
        {
            Some(RenderedHeader::Media(media.clone()))
        }
        (Some(Header::Location), _, Some(BoundHeader::Location(location))) => {
            Some(RenderedHeader::Location(location.clone()))
        }
        _ => return Err(RenderError::Header),
    };

    if bound.body.len() != spec.body.len() {
        return Err(RenderError::BodyCount {
            expected: spec.body.len(),
            got: bound.body.len(),
        });
    }
    let values: Vec<(&Variable, &str)> = spec
        .body
        .iter()
        .zip(bound.body.iter().map(String::as_str))
        .collect();
    let body = substitute(&def.body().text, format, &values);

    Ok(Rendered {
        header,
        body,
        footer: def.footer().map(|f| f.text.clone()),
        buttons: render_buttons(def.buttons(), bound)?,
    })
}

/// `text` with each variable replaced by its value, in a single pass.
fn substitute(text: &str, format: ParameterFormat, values: &[(&Variable, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in placeholder::pieces(text) {
        match piece {
            Piece::Text(fixed) => out.push_str(fixed),
            Piece::Variable(inner) => {
                let value = Variable::parse(inner, format)
                    .ok()
                    .and_then(|v| values.iter().find(|(known, _)| **known == v))
                    .map(|(_, value)| *value);
                match value {
                    Some(value) => out.push_str(value),
                    // A parsed definition has no such variable; show it rather than panic.
                    None => {
                        out.push_str("{{");
                        out.push_str(inner);
                        out.push_str("}}");
                    }
                }
            }
        }
    }
    out
}

fn render_buttons(
    buttons: &[Button],
    bound: &BoundTemplate,
) -> Result<Vec<RenderedButton>, RenderError> {
    for (i, given) in bound.buttons.iter().enumerate() {
        let repeated = bound.buttons[..i].iter().any(|b| b.index == given.index);
        let fits = match (buttons.get(given.index), &given.value) {
            (Some(Button::QuickReply { .. }), ButtonValue::Payload(_))
            | (Some(Button::CopyCode { .. }), ButtonValue::CouponCode(_)) => true,
            (Some(button @ Button::Url { .. }), ButtonValue::UrlSuffix(_)) => {
                button.url_prefix().is_some()
            }
            _ => false,
        };
        if repeated || !fits {
            return Err(RenderError::Button {
                index: given.index,
                reason: "the value does not fit the template's button",
            });
        }
    }
    buttons
        .iter()
        .enumerate()
        .map(|(index, button)| {
            let value = bound
                .buttons
                .iter()
                .find(|b| b.index == index)
                .map(|b| b.value.as_str().to_owned());
            let missing = RenderError::Button {
                index,
                reason: "the message carries no value for it",
            };
            let kind = match button {
                Button::QuickReply { .. } => RenderedButtonKind::QuickReply { payload: value },
                Button::Url { url, .. } => match (button.url_prefix(), value) {
                    (Some(prefix), Some(suffix)) => RenderedButtonKind::Url {
                        url: format!("{prefix}{suffix}"),
                    },
                    (Some(_), None) => return Err(missing),
                    (None, _) => RenderedButtonKind::Url { url: url.clone() },
                },
                Button::PhoneNumber { phone_number, .. } => RenderedButtonKind::PhoneNumber {
                    phone: phone_number.clone(),
                },
                Button::CopyCode { .. } => RenderedButtonKind::CopyCode {
                    code: value.ok_or(missing)?,
                },
            };
            Ok(RenderedButton {
                index,
                kind,
                text: button.text().to_owned(),
            })
        })
        .collect()
}

impl Rendered {
    /// The message for a terminal: header, body, footer and buttons as paragraphs, each
    /// button a `[Label → target]` line.
    pub fn to_plain_text(&self) -> String {
        let mut blocks = Vec::with_capacity(4);
        if let Some(header) = &self.header {
            blocks.push(header.to_plain_text());
        }
        blocks.push(self.body.clone());
        blocks.extend(self.footer.clone());
        if !self.buttons.is_empty() {
            let lines: Vec<String> = self
                .buttons
                .iter()
                .map(RenderedButton::to_plain_text)
                .collect();
            blocks.push(lines.join("\n"));
        }
        blocks.join("\n\n")
    }
}

impl RenderedHeader {
    fn to_plain_text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Media(media) => {
                let shown = match (&media.filename, &media.source) {
                    (Some(filename), _) => filename.clone(),
                    (None, MediaSource::Link(link)) => link.clone(),
                    (None, MediaSource::Id(id)) => format!("media {id}"),
                };
                format!("[{}: {shown}]", media.kind.as_str())
            }
            Self::Location(location) => {
                let place: Vec<&str> = [&location.name, &location.address]
                    .into_iter()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                let at = format!("{}, {}", location.latitude, location.longitude);
                if place.is_empty() {
                    format!("[location: {at}]")
                } else {
                    format!("[location: {} ({at})]", place.join(", "))
                }
            }
        }
    }
}

impl RenderedButton {
    fn to_plain_text(&self) -> String {
        match &self.kind {
            RenderedButtonKind::QuickReply { .. } => format!("[{}]", self.text),
            RenderedButtonKind::Url { url } => format!("[{} → {url}]", self.text),
            RenderedButtonKind::PhoneNumber { phone } => format!("[{} → {phone}]", self.text),
            RenderedButtonKind::CopyCode { code } => format!("[{} → {code}]", self.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::bind::BoundButton;
    use crate::template::definition::MediaKind;
    use crate::template::fixtures;
    use serde_json::json;

    fn shipping_values() -> BoundTemplate {
        BoundTemplate {
            header: Some(BoundHeader::Text("#4821".into())),
            body: vec!["Ana".into(), "2 books".into(), "Friday".into()],
            buttons: vec![BoundButton {
                index: 0,
                value: ButtonValue::UrlSuffix("4821".into()),
            }],
        }
    }

    fn ticket_values() -> BoundTemplate {
        BoundTemplate {
            header: Some(BoundHeader::Media(BoundMedia {
                kind: MediaKind::Document,
                source: MediaSource::Link("https://tickets.example/7.pdf".into()),
                filename: Some("ticket.pdf".into()),
            })),
            body: vec!["Jazz Night".into(), "June 5".into()],
            buttons: vec![BoundButton {
                index: 1,
                value: ButtonValue::CouponCode("GATE7A".into()),
            }],
        }
    }

    #[test]
    fn a_shipping_confirmation_renders_with_its_values() {
        let rendered = render(&fixtures::shipping(), &shipping_values()).unwrap();
        assert_eq!(
            rendered,
            Rendered {
                header: Some(RenderedHeader::Text("Order #4821 has shipped".into())),
                body: "Hi Ana, your order of 2 books left our warehouse today and should arrive by Friday. Thanks for shopping with us!".into(),
                footer: Some("Reply STOP to opt out".into()),
                buttons: vec![
                    RenderedButton {
                        index: 0,
                        kind: RenderedButtonKind::Url {
                            url: "https://shop.example/track/4821".into()
                        },
                        text: "Track order".into(),
                    },
                    RenderedButton {
                        index: 1,
                        kind: RenderedButtonKind::QuickReply { payload: None },
                        text: "Talk to us".into(),
                    },
                ],
            }
        );
        assert_eq!(
            rendered.to_plain_text(),
            "Order #4821 has shipped\n\n\
             Hi Ana, your order of 2 books left our warehouse today and should arrive by Friday. Thanks for shopping with us!\n\n\
             Reply STOP to opt out\n\n\
             [Track order → https://shop.example/track/4821]\n\
             [Talk to us]"
        );
    }

    #[test]
    fn named_variables_are_substituted_wherever_they_appear() {
        let bound = BoundTemplate {
            header: Some(BoundHeader::Text("Ana".into())),
            body: vec![
                "Ana".into(),
                "Dr. Ruiz".into(),
                "May 3".into(),
                "10:30".into(),
            ],
            buttons: vec![BoundButton {
                index: 1,
                value: ButtonValue::Payload("RESCHEDULE-17".into()),
            }],
        };
        let rendered = render(&fixtures::appointment(), &bound).unwrap();
        assert_eq!(
            rendered.to_plain_text(),
            "Reminder for Ana\n\n\
             Hello Ana, your appointment with Dr. Ruiz is on May 3 at 10:30. Reply to confirm or change it.\n\n\
             [Confirm]\n\
             [Reschedule]"
        );
        assert_eq!(
            rendered.buttons[1].kind,
            RenderedButtonKind::QuickReply {
                payload: Some("RESCHEDULE-17".into())
            }
        );
    }

    #[test]
    fn a_ticket_shows_its_document_phone_and_code() {
        let rendered = render(&fixtures::ticket(), &ticket_values()).unwrap();
        assert_eq!(
            rendered.to_plain_text(),
            "[document: ticket.pdf]\n\n\
             Your ticket for Jazz Night on June 5 is attached. Show it at the entrance; doors open one hour before the show.\n\n\
             Ventana Hall, 1 Main St\n\n\
             [Call the box office → +15550100]\n\
             [Copy offer code → GATE7A]"
        );
    }

    #[test]
    fn media_without_filename_and_locations_have_plain_forms() {
        let image = RenderedHeader::Media(BoundMedia {
            kind: MediaKind::Image,
            source: MediaSource::Id("1045".into()),
            filename: None,
        });
        assert_eq!(image.to_plain_text(), "[image: media 1045]");
        let mut place = Location {
            latitude: "38.72".into(),
            longitude: "-9.14".into(),
            name: Some("Ventana Hall".into()),
            address: Some("1 Main St".into()),
        };
        assert_eq!(
            RenderedHeader::Location(place.clone()).to_plain_text(),
            "[location: Ventana Hall, 1 Main St (38.72, -9.14)]"
        );
        place.name = None;
        place.address = None;
        assert_eq!(
            RenderedHeader::Location(place).to_plain_text(),
            "[location: 38.72, -9.14]"
        );
    }

    #[test]
    fn values_are_substituted_once() {
        let mut bound = shipping_values();
        bound.body[0] = "{{2}}".into();
        let rendered = render(&fixtures::shipping(), &bound).unwrap();
        assert!(rendered.body.starts_with("Hi {{2}}, your order of 2 books"));
    }

    #[test]
    fn values_that_do_not_fit_the_definition_are_errors() {
        let shipping = fixtures::shipping();
        let with = |edit: fn(&mut BoundTemplate)| {
            let mut bound = shipping_values();
            edit(&mut bound);
            render(&shipping, &bound)
        };
        assert_eq!(
            with(|b| {
                b.body.pop();
            }),
            Err(RenderError::BodyCount {
                expected: 3,
                got: 2
            })
        );
        assert_eq!(with(|b| b.header = None), Err(RenderError::Header));
        assert_eq!(
            with(|b| b.header = ticket_values().header),
            Err(RenderError::Header)
        );
        let button = |index, reason| Err(RenderError::Button { index, reason });
        assert_eq!(
            with(|b| b.buttons.clear()),
            button(0, "the message carries no value for it")
        );
        assert_eq!(
            with(|b| b.buttons.push(b.buttons[0].clone())),
            button(0, "the value does not fit the template's button")
        );
        assert_eq!(
            with(|b| b.buttons[0].index = 9),
            button(9, "the value does not fit the template's button")
        );
        assert_eq!(
            with(|b| b.buttons[0].value = ButtonValue::CouponCode("X".into())),
            button(0, "the value does not fit the template's button")
        );
        assert_eq!(
            render(
                &fixtures::ticket(),
                &BoundTemplate {
                    buttons: vec![],
                    ..ticket_values()
                }
            ),
            button(1, "the message carries no value for it")
        );
        assert_eq!(
            render(
                &fixtures::ticket(),
                &BoundTemplate {
                    buttons: vec![BoundButton {
                        index: 0,
                        value: ButtonValue::Payload("x".into())
                    }],
                    ..ticket_values()
                }
            ),
            button(0, "the value does not fit the template's button")
        );
    }

    #[test]
    fn any_bound_values_render_or_fail_without_panicking() {
        let location = fixtures::parse(json!({
            "name": "venue", "language": "en", "category": "UTILITY",
            "components": [{"type": "HEADER", "format": "LOCATION"},
                           {"type": "BODY", "text": "Meet {{1}} here at {{2}}, see you there.",
                            "example": {"body_text": [["Ana", "noon"]]}}],
        }));
        let definitions = [
            fixtures::shipping(),
            fixtures::appointment(),
            fixtures::ticket(),
            location,
        ];
        let headers = [
            None,
            Some(BoundHeader::Text("x".into())),
            ticket_values().header,
            Some(BoundHeader::Location(Location {
                latitude: "1".into(),
                longitude: "2".into(),
                name: None,
                address: None,
            })),
        ];
        let button_sets = [
            vec![],
            vec![BoundButton {
                index: 0,
                value: ButtonValue::UrlSuffix("a".into()),
            }],
            vec![BoundButton {
                index: 1,
                value: ButtonValue::CouponCode("b".into()),
            }],
            vec![BoundButton {
                index: usize::MAX,
                value: ButtonValue::Payload("c".into()),
            }],
        ];
        let mut rendered = 0;
        for def in &definitions {
            for header in &headers {
                for values in 0..6 {
                    for buttons in &button_sets {
                        let bound = BoundTemplate {
                            header: header.clone(),
                            body: vec!["v".into(); values],
                            buttons: buttons.clone(),
                        };
                        if let Ok(message) = render(def, &bound) {
                            assert!(!message.body.contains("{{"), "{message:?}");
                            rendered += 1;
                        }
                    }
                }
            }
        }
        // Exactly the one fitting combination per template renders.
        assert_eq!(rendered, 4);
    }
}
