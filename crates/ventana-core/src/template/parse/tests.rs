use super::*;
use crate::template::fixtures;
use serde_json::json;

/// The error a broken variant of `fixture` gets.
fn rejected(mut json: Value, edit: impl FnOnce(&mut Value)) -> DefinitionError {
    edit(&mut json);
    match TemplateDefinition::parse(&json) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e,
    }
}

pub(super) fn shipping_without(edit: impl FnOnce(&mut Value)) -> DefinitionError {
    rejected(fixtures::shipping_json(), edit)
}

pub(super) fn error(field: &str, message: &str) -> DefinitionError {
    DefinitionError {
        field: field.into(),
        message: message.into(),
    }
}

#[test]
fn the_three_sample_templates_are_valid() {
    let shipping = fixtures::shipping();
    assert_eq!(shipping.category(), Category::Utility);
    assert_eq!(shipping.parameter_format(), ParameterFormat::Positional);
    assert_eq!(
        shipping.footer().map(|f| f.text.as_str()),
        Some("Reply STOP to opt out")
    );
    assert_eq!(
        fixtures::appointment().parameter_format(),
        ParameterFormat::Named
    );
    assert_eq!(
        fixtures::ticket().header(),
        Some(&Header::Media {
            kind: MediaKind::Document,
            example: Some("4::aW1hZ2U=".into())
        })
    );
}

#[test]
fn an_authentication_template_follows_the_same_rules() {
    let json = json!({
        "name": "login_code", "language": "en", "category": "authentication",
        "components": [{"type": "BODY", "text": "{{1}} is your verification code.",
                        "example": {"body_text": [["123456"]]}}],
    });
    assert_eq!(
        TemplateDefinition::parse(&json).unwrap().category(),
        Category::Authentication
    );
}

#[test]
fn an_example_for_text_without_variables_is_dropped() {
    let json = json!({
        "name": "welcome", "language": "en", "category": "MARKETING",
        "components": [{"type": "BODY", "text": "Welcome aboard, we are glad you are here.",
                        "example": {"body_text": [["unused"]]}}],
    });
    let stored = serde_json::to_value(TemplateDefinition::parse(&json).unwrap()).unwrap();
    assert_eq!(
        stored["components"],
        json!([{"type": "BODY", "text": "Welcome aboard, we are glad you are here."}])
    );
}

#[test]
fn image_video_and_location_headers_need_no_example() {
    for format in ["IMAGE", "video", "LOCATION"] {
        let mut json = fixtures::ticket_json();
        json["components"][0] = json!({"type": "HEADER", "format": format});
        assert!(TemplateDefinition::parse(&json).is_ok(), "{format}");
    }
}

#[test]
fn name_language_category_and_format_are_checked() {
    let cases = [
        (
            "name",
            json!("Order-Shipped"),
            "a template name is 1 to 512 lowercase letters, digits and underscores",
        ),
        (
            "language",
            json!("english"),
            "a language code is 2 or 3 lowercase letters, optionally followed by `_` and a region (US) or a script (Hant)",
        ),
        (
            "category",
            json!("PROMOTION"),
            "must be UTILITY, MARKETING or AUTHENTICATION",
        ),
        (
            "parameter_format",
            json!("NUMBERED"),
            "must be POSITIONAL or NAMED",
        ),
        ("name", json!(7), "must be a string"),
    ];
    for (field, value, message) in cases {
        assert_eq!(
            shipping_without(|j| j[field] = value),
            error(field, message)
        );
    }
    assert_eq!(
        shipping_without(|j| j["name"] = Value::Null),
        error("name", "is required")
    );
    assert_eq!(
        rejected(json!([1]), |_| {}),
        error("", "must be a JSON object")
    );
}

#[test]
fn components_are_one_body_and_at_most_one_of_each_other_type() {
    assert_eq!(
        shipping_without(|j| {
            j["components"].as_array_mut().unwrap().remove(1);
        }),
        error("components", "a template needs a BODY component")
    );
    assert_eq!(
        shipping_without(|j| {
            let footer = j["components"][2].clone();
            j["components"].as_array_mut().unwrap().insert(1, footer);
        }),
        error(
            "components[3]",
            "a template has at most one FOOTER component"
        )
    );
    assert_eq!(
        shipping_without(|j| j["components"][2]["type"] = json!("CAROUSEL")),
        error(
            "components[2].type",
            "unknown component type \"CAROUSEL\"; expected HEADER, BODY, FOOTER or BUTTONS"
        )
    );
    assert_eq!(
        shipping_without(|j| j["components"] = json!({})),
        error("components", "must be an array")
    );
}

#[test]
fn a_text_header_is_short_with_at_most_one_variable_and_its_example() {
    let header = |edit: fn(&mut Value)| shipping_without(|j| edit(&mut j["components"][0]));
    assert_eq!(
        header(|h| h["format"] = json!("GIF")),
        error(
            "components[0].format",
            "unknown header format \"GIF\"; expected TEXT, IMAGE, VIDEO, DOCUMENT or LOCATION"
        )
    );
    assert_eq!(
        header(|h| h["text"] = json!("x".repeat(61))),
        error(
            "components[0].text",
            "is 61 characters long; at most 60 are allowed"
        )
    );
    assert_eq!(
        header(|h| h["text"] = json!("{{1}} and {{1}}")),
        error("components[0].text", "a header has at most one variable")
    );
    assert_eq!(
        header(|h| h["text"] = json!("Order {{2}}")),
        error("components[0].text", "a header's variable is {{1}}")
    );
    assert_eq!(
        header(|h| h["text"] = json!("   ")),
        error("components[0].text", "must not be empty")
    );
    assert_eq!(
        header(|h| h["example"] = Value::Null),
        error(
            "components[0].example",
            "text with variables needs example values in example.header_text"
        )
    );
    assert_eq!(
        header(|h| h["example"]["header_text"] = json!(["a", "b"])),
        error(
            "components[0].example.header_text",
            "must hold 1 example values, one per variable; found 2"
        )
    );
}

#[test]
fn media_and_location_headers_carry_no_text() {
    assert_eq!(
        rejected(fixtures::ticket_json(), |j| j["components"][0]["text"] =
            json!("Ticket")),
        error("components[0].text", "a media header has no text")
    );
    assert_eq!(
        rejected(fixtures::ticket_json(), |j| {
            j["components"][0] = json!({"type": "HEADER", "format": "LOCATION", "text": "x"})
        }),
        error("components[0].text", "a LOCATION header has no text")
    );
    assert_eq!(
        rejected(fixtures::ticket_json(), |j| {
            j["components"][0]["example"]["header_handle"] = json!(["a", "b"])
        }),
        error(
            "components[0].example.header_handle",
            "must hold exactly one value"
        )
    );
}

#[test]
fn body_variables_are_numbered_without_gaps_and_each_has_an_example() {
    let body = |edit: fn(&mut Value)| shipping_without(|j| edit(&mut j["components"][1]));
    assert_eq!(
        body(|b| b["text"] = json!("x".repeat(1025))),
        error(
            "components[1].text",
            "is 1025 characters long; at most 1024 are allowed"
        )
    );
    assert_eq!(
        body(|b| b["text"] = json!("Hi {{1}}, order {{3}} and {{4}} and {{1}} again")),
        error(
            "components[1].text",
            "variables are numbered from {{1}} without gaps; {{2}} is missing"
        )
    );
    assert_eq!(
        body(|b| b["text"] = json!("Hi {{first_name}}")),
        error(
            "components[1].text",
            "POSITIONAL templates number their variables {{1}}, {{2}}, …; found {{first_name}}"
        )
    );
    assert_eq!(
        body(|b| b["text"] = json!("Hi {{1}, see you")),
        error("components[1].text", "`{{` without a closing `}}`")
    );
    assert_eq!(
        body(|b| b["example"] = json!({})),
        error("components[1].example.body_text", "is required")
    );
    assert_eq!(
        body(|b| b["example"]["body_text"] = json!([["Ana", "2 books"]])),
        error(
            "components[1].example.body_text[0]",
            "must hold 3 example values, one per variable; found 2"
        )
    );
    assert_eq!(
        body(|b| b["example"]["body_text"] = json!([["Ana", "", "Friday"]])),
        error("components[1].example.body_text[0][1]", "must not be empty")
    );
    assert_eq!(
        body(|b| b["example"]["body_text"] = json!([["a", "b", "c"], ["d", "e", "f"]])),
        error(
            "components[1].example.body_text",
            "must hold one list of example values"
        )
    );
    assert_eq!(
        body(|b| b["text"] = Value::Null),
        error("components[1].text", "is required")
    );
}

#[test]
fn named_templates_use_names_and_named_examples() {
    let body = |edit: fn(&mut Value)| {
        rejected(fixtures::appointment_json(), |j| {
            edit(&mut j["components"][1])
        })
    };
    assert_eq!(
        body(|b| b["text"] = json!("Hello {{1}}")),
        error(
            "components[1].text",
            "NAMED variables are lowercase letters, digits and underscores, starting with a letter; found {{1}}"
        )
    );
    assert_eq!(
        body(|b| {
            b["example"]["body_text_named_params"]
                .as_array_mut()
                .unwrap()
                .pop();
        }),
        error(
            "components[1].example.body_text_named_params",
            "no example for {{time}}"
        )
    );
    assert_eq!(
        body(|b| {
            b["example"]["body_text_named_params"][2]["param_name"] = json!("day");
        }),
        error(
            "components[1].example.body_text_named_params[2].param_name",
            "the text has no {{day}}"
        )
    );
    assert_eq!(
        body(|b| b["example"] = json!({"body_text": [["Ana", "Dr. Ruiz", "May 3", "10:30"]]})),
        error(
            "components[1].example.body_text_named_params",
            "is required"
        )
    );
    assert_eq!(
        rejected(fixtures::appointment_json(), |j| {
            j["components"][0]["example"] = json!({"header_text": ["Ana"]})
        }),
        error(
            "components[0].example.header_text_named_params",
            "is required"
        )
    );
}

#[test]
fn a_footer_is_short_fixed_text() {
    assert_eq!(
        shipping_without(|j| j["components"][2]["text"] = json!("x".repeat(61))),
        error(
            "components[2].text",
            "is 61 characters long; at most 60 are allowed"
        )
    );
    assert_eq!(
        shipping_without(|j| j["components"][2]["text"] = json!("Sent to {{1}}")),
        error("components[2].text", "a footer has no variables")
    );
}

#[test]
fn an_edit_may_change_category_and_components_only() {
    let shipping = fixtures::shipping();
    let edited = shipping
        .edit(&json!({"category": "MARKETING",
                      "components": [{"type": "BODY", "text": "Your order is on its way."}]}))
        .unwrap();
    assert_eq!(edited.category(), Category::Marketing);
    assert_eq!(edited.name(), shipping.name());
    assert_eq!(edited.header(), None);
    assert!(edited.buttons().is_empty());

    assert_eq!(
        shipping.edit(&json!({"name": "other"})).unwrap_err(),
        error("name", "a template's name cannot be edited")
    );
    assert_eq!(
        shipping
            .edit(&json!({"parameter_format": "NAMED"}))
            .unwrap_err(),
        error(
            "parameter_format",
            "a template's parameter format cannot be edited"
        )
    );
    assert_eq!(
        shipping
            .edit(&json!({"components": [{"type": "BODY", "text": "{{2}}"}]}))
            .unwrap_err(),
        error(
            "components[0].text",
            "variables are numbered from {{1}} without gaps; {{1}} is missing"
        )
    );
}
