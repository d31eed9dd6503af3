//! Templates the tests share: one per shape the Cloud API documents.

use super::TemplateDefinition;
use serde_json::{Value, json};

/// POSITIONAL: text header with `{{1}}`, three body variables, footer, URL button with
/// `{{1}}`, quick reply. Submitted in lowercase where the Cloud API allows it.
pub(crate) fn shipping_json() -> Value {
    json!({
        "name": "shipping_confirmation",
        "language": "en_US",
        "category": "utility",
        "allow_category_change": true,
        "components": [
            {"type": "header", "format": "text", "text": "Order {{1}} has shipped",
             "example": {"header_text": ["#4821"]}},
            {"type": "BODY",
             "text": "Hi {{1}}, your order of {{2}} left our warehouse today and should arrive by {{3}}. Thanks for shopping with us!",
             "example": {"body_text": [["Ana", "2 books", "Friday"]]}},
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {"type": "BUTTONS", "buttons": [
                {"type": "url", "text": "Track order", "url": "https://shop.example/track/{{1}}",
                 "example": ["https://shop.example/track/4821"]},
                {"type": "QUICK_REPLY", "text": "Talk to us"},
            ]},
        ],
    })
}

/// NAMED: header and body variables by name, two quick replies.
pub(crate) fn appointment_json() -> Value {
    json!({
        "name": "appointment_reminder",
        "language": "en",
        "category": "UTILITY",
        "parameter_format": "NAMED",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Reminder for {{first_name}}",
             "example": {"header_text_named_params": [{"param_name": "first_name", "example": "Ana"}]}},
            {"type": "BODY",
             "text": "Hello {{first_name}}, your appointment with {{doctor}} is on {{date}} at {{time}}. Reply to confirm or change it.",
             "example": {"body_text_named_params": [
                 {"param_name": "first_name", "example": "Ana"},
                 {"param_name": "doctor", "example": "Dr. Ruiz"},
                 {"param_name": "date", "example": "May 3"},
                 {"param_name": "time", "example": "10:30"},
             ]}},
            {"type": "BUTTONS", "buttons": [
                {"type": "QUICK_REPLY", "text": "Confirm"},
                {"type": "QUICK_REPLY", "text": "Reschedule"},
            ]},
        ],
    })
}

/// DOCUMENT header (the ticket), phone number and copy-code buttons.
pub(crate) fn ticket_json() -> Value {
    json!({
        "name": "event_ticket",
        "language": "pt_BR",
        "category": "UTILITY",
        "components": [
            {"type": "HEADER", "format": "DOCUMENT", "example": {"header_handle": ["4::aW1hZ2U="]}},
            {"type": "BODY",
             "text": "Your ticket for {{1}} on {{2}} is attached. Show it at the entrance; doors open one hour before the show.",
             "example": {"body_text": [["Jazz Night", "June 5"]]}},
            {"type": "FOOTER", "text": "Ventana Hall, 1 Main St"},
            {"type": "BUTTONS", "buttons": [
                {"type": "PHONE_NUMBER", "text": "Call the box office", "phone_number": "+15550100"},
                {"type": "COPY_CODE", "example": "GATE7A"},
            ]},
        ],
    })
}

pub(crate) fn shipping() -> TemplateDefinition {
    parse(shipping_json())
}

pub(crate) fn appointment() -> TemplateDefinition {
    parse(appointment_json())
}

pub(crate) fn ticket() -> TemplateDefinition {
    parse(ticket_json())
}

pub(crate) fn parse(json: Value) -> TemplateDefinition {
    match TemplateDefinition::parse(&json) {
        Ok(definition) => definition,
        Err(e) => panic!("fixture does not parse: {e}"),
    }
}
