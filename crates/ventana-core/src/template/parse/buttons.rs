//! The rules for a template's BUTTONS component: each button by its type, then the counts
//! and grouping Meta requires of the list.

use super::{FieldError, Node, non_empty_string, single_string, text_field};
use crate::template::definition::Button;

const BUTTONS_MAX: usize = 10;
const BUTTON_TEXT_MAX: usize = 25;
const URL_MAX: usize = 2000;
const COUPON_CODE_MAX: usize = 15;

pub(super) fn parse_buttons(item: &Node) -> Result<Vec<Button>, FieldError> {
    let list = item.require("buttons")?;
    let nodes = list.items()?;
    if nodes.is_empty() {
        return Err(list.error("must hold at least one button"));
    }
    if nodes.len() > BUTTONS_MAX {
        return Err(list.error(format!(
            "holds {} buttons; at most {BUTTONS_MAX} are allowed",
            nodes.len()
        )));
    }
    let mut buttons: Vec<Button> = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let button = parse_button(node)?;
        let same_type = buttons
            .iter()
            .filter(|b| b.type_name() == button.type_name())
            .count();
        let limit = match button {
            Button::Url { .. } => 2,
            Button::PhoneNumber { .. } | Button::CopyCode { .. } => 1,
            Button::QuickReply { .. } => BUTTONS_MAX,
        };
        if same_type >= limit {
            let plural = if limit == 1 { "" } else { "s" };
            return Err(node.error(format!(
                "a template has at most {limit} {} button{plural}",
                button.type_name()
            )));
        }
        let is_quick_reply = |b: &Button| matches!(b, Button::QuickReply { .. });
        if is_quick_reply(&button)
            && buttons.iter().any(is_quick_reply)
            && !buttons.last().is_some_and(is_quick_reply)
        {
            return Err(node.error("quick reply buttons must be grouped together"));
        }
        buttons.push(button);
    }
    Ok(buttons)
}

fn parse_button(node: &Node) -> Result<Button, FieldError> {
    let type_node = node.require("type")?;
    match type_node.str()?.to_ascii_uppercase().as_str() {
        "QUICK_REPLY" => Ok(Button::QuickReply {
            text: button_text(node)?,
        }),
        "URL" => parse_url_button(node, button_text(node)?),
        "PHONE_NUMBER" => {
            let text = button_text(node)?;
            let phone_node = node.require("phone_number")?;
            let phone_number = phone_node.str()?;
            let well_formed = phone_number.strip_prefix('+').is_some_and(|digits| {
                (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            });
            if !well_formed {
                return Err(phone_node.error("must be '+' and 7 to 15 digits, like +15550100"));
            }
            Ok(Button::PhoneNumber {
                text,
                phone_number: phone_number.to_owned(),
            })
        }
        "COPY_CODE" => {
            let example_node = node.require("example")?;
            let example = non_empty_string(&example_node)?;
            if example.chars().count() > COUPON_CODE_MAX {
                return Err(example_node.error(format!(
                    "a coupon code is at most {COUPON_CODE_MAX} characters"
                )));
            }
            Ok(Button::CopyCode { example })
        }
        _ => Err(type_node.error(format!(
            "unknown button type {:?}; expected QUICK_REPLY, URL, PHONE_NUMBER or COPY_CODE",
            type_node.str()?
        ))),
    }
}

fn button_text(node: &Node) -> Result<String, FieldError> {
    let (text_node, text) = text_field(node, BUTTON_TEXT_MAX)?;
    if text.contains("{{") {
        return Err(text_node.error("a button's text has no variables"));
    }
    Ok(text.to_owned())
}

fn parse_url_button(node: &Node, text: String) -> Result<Button, FieldError> {
    let url_node = node.require("url")?;
    let url = url_node.str()?;
    let length = url.chars().count();
    if length > URL_MAX {
        return Err(url_node.error(format!(
            "is {length} characters long; at most {URL_MAX} are allowed"
        )));
    }
    let fixed = url.strip_suffix("{{1}}");
    let prefix = fixed.unwrap_or(url);
    if prefix.contains("{{") {
        return Err(url_node.error("a url has at most one variable, {{1}}, at its very end"));
    }
    if !is_web_url(prefix) {
        return Err(url_node.error("must start with https:// or http:// and a host"));
    }
    let example = match fixed {
        None => None,
        Some(prefix) => {
            let example_node = node.get("example")?.ok_or_else(|| FieldError {
                field: node.path_of("example"),
                message: "a url with {{1}} needs an example: the full url".to_owned(),
                missing: true,
            })?;
            let full = single_string(&example_node)?;
            if !(full.len() > prefix.len() && full.starts_with(prefix)) {
                return Err(example_node.error("must be the url with {{1}} filled in"));
            }
            Some(full)
        }
    };
    Ok(Button::Url {
        text,
        url: url.to_owned(),
        example,
    })
}

/// `https://` or `http://`, a host, and no whitespace.
pub(crate) fn is_web_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !host.is_empty() && !url.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error, shipping_without};
    use crate::template::TemplateDefinition;
    use crate::template::definition::DefinitionError;
    use crate::template::fixtures;
    use serde_json::{Value, json};

    fn button_error(edit: impl FnOnce(&mut Value)) -> DefinitionError {
        shipping_without(|j| edit(&mut j["components"][3]["buttons"]))
    }

    #[test]
    fn each_button_is_checked_by_its_type() {
        assert_eq!(
            button_error(|b| b[1]["type"] = json!("FLOW")),
            error(
                "components[3].buttons[1].type",
                "unknown button type \"FLOW\"; expected QUICK_REPLY, URL, PHONE_NUMBER or COPY_CODE"
            )
        );
        assert_eq!(
            button_error(|b| b[1]["text"] = json!("")),
            error("components[3].buttons[1].text", "must not be empty")
        );
        assert_eq!(
            button_error(|b| b[1]["text"] = json!("x".repeat(26))),
            error(
                "components[3].buttons[1].text",
                "is 26 characters long; at most 25 are allowed"
            )
        );
        assert_eq!(
            button_error(|b| b[1]["text"] = json!("Hi {{1}}")),
            error(
                "components[3].buttons[1].text",
                "a button's text has no variables"
            )
        );
        assert_eq!(
            button_error(|b| b[1] =
                json!({"type": "PHONE_NUMBER", "text": "Call", "phone_number": "555-0100"})),
            error(
                "components[3].buttons[1].phone_number",
                "must be '+' and 7 to 15 digits, like +15550100"
            )
        );
        assert_eq!(
            button_error(|b| b[1] = json!({"type": "COPY_CODE", "example": "SUMMER2025SAVE20"})),
            error(
                "components[3].buttons[1].example",
                "a coupon code is at most 15 characters"
            )
        );
    }

    #[test]
    fn a_url_has_at_most_one_variable_at_its_end_and_then_an_example() {
        let url = |value: &str| button_error(|b| b[0]["url"] = json!(value));
        let at_end = error(
            "components[3].buttons[0].url",
            "a url has at most one variable, {{1}}, at its very end",
        );
        assert_eq!(url("https://shop.example/{{1}}/track"), at_end);
        assert_eq!(url("https://shop.example/{{1}}/{{1}}"), at_end);
        assert_eq!(url("https://shop.example/{{2}}"), at_end);
        let not_web = error(
            "components[3].buttons[0].url",
            "must start with https:// or http:// and a host",
        );
        assert_eq!(url("ftp://shop.example/{{1}}"), not_web);
        assert_eq!(url("https://{{1}}"), not_web);
        assert_eq!(
            url(&format!("https://shop.example/{}", "a".repeat(1990))),
            error(
                "components[3].buttons[0].url",
                "is 2011 characters long; at most 2000 are allowed"
            )
        );
        assert_eq!(
            button_error(|b| b[0]["example"] = Value::Null),
            error(
                "components[3].buttons[0].example",
                "a url with {{1}} needs an example: the full url"
            )
        );
        assert_eq!(
            button_error(|b| b[0]["example"] = json!(["https://other.example/4821"])),
            error(
                "components[3].buttons[0].example",
                "must be the url with {{1}} filled in"
            )
        );
    }

    #[test]
    fn button_counts_and_grouping_follow_the_cloud_api() {
        let url = json!({"type": "URL", "text": "Site", "url": "https://shop.example"});
        let phone = json!({"type": "PHONE_NUMBER", "text": "Call", "phone_number": "+15550100"});
        let code = json!({"type": "COPY_CODE", "example": "SAVE10"});
        let reply = json!({"type": "QUICK_REPLY", "text": "Yes"});
        let cases = [
            (
                json!([]),
                "components[3].buttons",
                "must hold at least one button",
            ),
            (
                json!(vec![reply.clone(); 11]),
                "components[3].buttons",
                "holds 11 buttons; at most 10 are allowed",
            ),
            (
                json!([url, url, url]),
                "components[3].buttons[2]",
                "a template has at most 2 URL buttons",
            ),
            (
                json!([phone, phone]),
                "components[3].buttons[1]",
                "a template has at most 1 PHONE_NUMBER button",
            ),
            (
                json!([code, code]),
                "components[3].buttons[1]",
                "a template has at most 1 COPY_CODE button",
            ),
            (
                json!([reply, url, reply]),
                "components[3].buttons[2]",
                "quick reply buttons must be grouped together",
            ),
        ];
        for (buttons, field, message) in cases {
            assert_eq!(button_error(|b| *b = buttons), error(field, message));
        }
        let grouped = json!([url, phone, reply, reply, code]);
        let mut json = fixtures::shipping_json();
        json["components"][3]["buttons"] = grouped;
        assert_eq!(TemplateDefinition::parse(&json).unwrap().buttons().len(), 5);
    }
}
