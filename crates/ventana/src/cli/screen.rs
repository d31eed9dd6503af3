//! How a device's messages look on a terminal, for `ventana user`, `ventana chat` and the
//! demo. The device library gives the data (a payload, or a template rendered with its
//! approved text by [`Endpoint::render_template`]); this lays it out as lines of text.
//!
//! [`render`] needs nothing but the payload (a template shows as a placeholder naming it);
//! [`show`] renders templates with their approved text, fetched through the endpoint, and
//! says why when one cannot be shown.

use ventana_client::{Endpoint, TemplateRenderError};
use ventana_core::payload::{Content, Payload};
use ventana_core::template::render::{RenderedButton, RenderedButtonKind};
use ventana_core::template::{Rendered, TemplateHeader};
use ventana_store::endpoint::{Direction, MessageRecord};

/// The text a person sees for a message's content.
pub fn render(payload: &Payload) -> String {
    match &payload.content {
        Content::Text { body, .. } => body.clone(),
        Content::Template { .. } => match &payload.header.template {
            Some(t) => format!("(template {} {} v{})", t.name, t.language, t.version),
            None => "(template)".into(),
        },
        Content::Button { text, .. } => format!("[{text}]"),
    }
}

/// What a person sees for a message: its text, a template filled in with its approved text
/// (see [`Endpoint::render_template`]), or a placeholder saying why the template cannot be
/// shown. Several lines for a template: header, body, footer, then numbered buttons.
pub async fn show(endpoint: &Endpoint, payload: &Payload) -> String {
    if !matches!(payload.content, Content::Template { .. }) {
        return render(payload);
    }
    let rendering = endpoint.render_template(payload).await;
    show_rendering(payload.header.template.as_ref(), &rendering)
}

/// A message in the history as it is shown (`None`: its body cannot be opened): direction,
/// peer, the text's first line and the status; a several-line text (a template) continues
/// on the lines below, indented.
pub fn message_line(record: &MessageRecord, text: Option<&str>) -> String {
    let arrow = match record.direction {
        Direction::Inbound => "←",
        Direction::Outbound => "→",
    };
    let text = text.unwrap_or("(unreadable)");
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let line = format!("{arrow} {}  {first}  [{}]", record.peer, record.status);
    if rest.is_empty() {
        line
    } else {
        format!("{line}\n{}", indent_all(rest, "    "))
    }
}

/// A template message as [`show`] shows it, from [`Endpoint::render_template`]'s answer for it.
pub fn show_rendering(
    template: Option<&TemplateHeader>,
    rendering: &Result<Rendered, TemplateRenderError>,
) -> String {
    match rendering {
        Ok(rendered) => show_rendered(rendered),
        Err(e) => unshowable(template, e),
    }
}

/// A rendered template for a terminal: header, body and footer as paragraphs, then one line
/// per button, numbered from 1 (`[1] Reschedule (quick reply)`, `[2] Track: https://…`).
pub fn show_rendered(rendered: &Rendered) -> String {
    let text = Rendered {
        buttons: Vec::new(),
        ..rendered.clone()
    }
    .to_plain_text();
    if rendered.buttons.is_empty() {
        return text;
    }
    let buttons: Vec<String> = rendered
        .buttons
        .iter()
        .enumerate()
        .map(|(n, button)| format!("[{}] {}", n + 1, show_button(button)))
        .collect();
    format!("{text}\n\n{}", buttons.join("\n"))
}

fn show_button(button: &RenderedButton) -> String {
    let label = &button.text;
    match &button.kind {
        RenderedButtonKind::QuickReply { .. } => format!("{label} (quick reply)"),
        RenderedButtonKind::Url { url } => format!("{label}: {url}"),
        RenderedButtonKind::PhoneNumber { phone } => format!("{label}: {phone}"),
        RenderedButtonKind::CopyCode { code } => format!("{label}: {code}"),
    }
}

/// The placeholder for a template message that cannot be shown, and why.
pub fn unshowable(template: Option<&TemplateHeader>, error: &TemplateRenderError) -> String {
    let name = template
        .map(|t| {
            format!(
                "template {} ({}, version {})",
                t.name, t.language, t.version
            )
        })
        .unwrap_or_else(|| "template".into());
    if error.is_transient() {
        format!("({name} cannot be shown yet: {error}; it will show once its text can be fetched)")
    } else {
        format!("({name} cannot be shown: {error})")
    }
}

/// Every line after the first of `text` prefixed with `prefix` (blank lines stay blank), to
/// show a several-line message under a label.
pub fn indent(text: &str, prefix: &str) -> String {
    match text.split_once('\n') {
        Some((first, rest)) => format!("{first}\n{}", indent_all(rest, prefix)),
        None => text.to_owned(),
    }
}

fn indent_all(text: &str, prefix: &str) -> String {
    text.split('\n')
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{prefix}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ventana_core::template::render::RenderedHeader;

    fn button(index: usize, text: &str, kind: RenderedButtonKind) -> RenderedButton {
        RenderedButton {
            index,
            kind,
            text: text.into(),
        }
    }

    #[test]
    fn a_template_shows_its_header_body_footer_and_numbered_buttons() {
        let rendered = Rendered {
            header: Some(RenderedHeader::Text("Order #4821".into())),
            body: "Hi Ana, your order is on its way.".into(),
            footer: Some("Reply STOP to opt out".into()),
            buttons: vec![
                button(
                    0,
                    "Reschedule",
                    RenderedButtonKind::QuickReply { payload: None },
                ),
                button(
                    1,
                    "Track",
                    RenderedButtonKind::Url {
                        url: "https://shop.example/t/4821".into(),
                    },
                ),
                button(
                    2,
                    "Call us",
                    RenderedButtonKind::PhoneNumber {
                        phone: "+15550100".into(),
                    },
                ),
                button(
                    3,
                    "Copy offer code",
                    RenderedButtonKind::CopyCode {
                        code: "ABC123".into(),
                    },
                ),
            ],
        };
        assert_eq!(
            show_rendered(&rendered),
            "Order #4821\n\n\
             Hi Ana, your order is on its way.\n\n\
             Reply STOP to opt out\n\n\
             [1] Reschedule (quick reply)\n\
             [2] Track: https://shop.example/t/4821\n\
             [3] Call us: +15550100\n\
             [4] Copy offer code: ABC123"
        );
        let plain = Rendered {
            header: None,
            footer: None,
            buttons: Vec::new(),
            ..rendered
        };
        assert_eq!(show_rendered(&plain), "Hi Ana, your order is on its way.");
    }

    #[test]
    fn a_template_that_cannot_be_shown_says_why_and_whether_it_will() {
        let header = TemplateHeader {
            id: "7".into(),
            name: "order_update".into(),
            language: "en".into(),
            version: 3,
            category: ventana_core::template::Category::Utility,
        };
        let later = unshowable(
            Some(&header),
            &TemplateRenderError::Unavailable("not connected to the relay".into()),
        );
        assert!(later.starts_with("(template order_update (en, version 3) cannot be shown yet: "));
        assert!(later.contains("not connected to the relay"));
        let never = unshowable(Some(&header), &TemplateRenderError::Mismatch("name"));
        assert_eq!(
            never,
            "(template order_update (en, version 3) cannot be shown: the template's name differs from what the message names)"
        );
    }

    #[test]
    fn continuation_lines_are_indented_and_blank_lines_stay_blank() {
        assert_eq!(indent("a\n\nb\nc", "  "), "a\n\n  b\n  c");
        assert_eq!(indent("one line", "  "), "one line");
    }
}
