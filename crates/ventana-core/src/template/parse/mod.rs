//! The Cloud API's rules for a submitted template, applied while reading its JSON; the first
//! broken rule is reported with the JSON path of its field.
//!
//! Choices where Meta's rules leave room:
//! - unknown fields (`allow_category_change`, `sub_category`, …) are accepted and ignored;
//!   unknown component types, header formats and button types are errors;
//! - an `example` on text without variables is ignored (and not stored);
//! - positional variables may appear in any order and more than once, but must be exactly
//!   `{{1}}`…`{{n}}`; a URL button's variable is `{{1}}` in NAMED templates too;
//! - a COPY_CODE button's `text` is fixed ("Copy offer code"), so one sent along is ignored;
//! - AUTHENTICATION templates follow the same rules: Meta builds their bodies from presets,
//!   Ventana lets the business write them (the `category_mismatch` lint wants a variable).

mod buttons;

use super::Category;
use super::definition::{
    Body, Button, DefinitionError, Footer, Header, LanguageCode, MediaKind, NamedExample,
    ParameterFormat, TemplateDefinition, TemplateName, TextExample,
};
use super::placeholder::{self, Variable};
use super::reader::{FieldError, Node};
pub(crate) use buttons::is_web_url;
use buttons::parse_buttons;
use serde_json::Value;
use std::fmt::Display;
use std::str::FromStr;

const HEADER_TEXT_MAX: usize = 60;
const BODY_TEXT_MAX: usize = 1024;
const FOOTER_TEXT_MAX: usize = 60;

impl TemplateDefinition {
    /// Rebuilds a definition from what the registry keeps of one version: its identity and
    /// category, its parameter format's spelling and its components' JSON.
    pub fn from_parts(
        name: &str,
        language: &str,
        category: Category,
        parameter_format: &str,
        components: &Value,
    ) -> Result<Self, DefinitionError> {
        Self::parse(&serde_json::json!({
            "name": name,
            "language": language,
            "category": category,
            "parameter_format": parameter_format,
            "components": components,
        }))
    }

    /// Reads what a business posts to `/{waba_id}/message_templates`, applying every rule.
    pub fn parse(json: &Value) -> Result<Self, DefinitionError> {
        let root = Node::root(json);
        let name = parse_as::<TemplateName>(&root.require("name")?)?;
        let language = parse_as::<LanguageCode>(&root.require("language")?)?;
        let category = parse_category(&root.require("category")?)?;
        let parameter_format = match root.get("parameter_format")? {
            Some(node) => parse_parameter_format(&node)?,
            None => ParameterFormat::default(),
        };
        let parts = parse_components(&root.require("components")?, parameter_format)?;
        Ok(Self {
            name,
            language,
            category,
            parameter_format,
            header: parts.header,
            body: parts.body,
            footer: parts.footer,
            buttons: parts.buttons,
        })
    }

    /// Applies an edit (`POST /{template_id}` with `category` and/or `components`), checking
    /// the result by the same rules. Name, language and parameter format cannot change.
    pub fn edit(&self, json: &Value) -> Result<Self, DefinitionError> {
        let root = Node::root(json);
        for (key, current) in [
            ("name", self.name.as_str()),
            ("language", self.language.as_str()),
        ] {
            if let Some(node) = root.get(key)?
                && node.str()? != current
            {
                return Err(node
                    .error(format!("a template's {key} cannot be edited"))
                    .into());
            }
        }
        if let Some(node) = root.get("parameter_format")?
            && parse_parameter_format(&node)? != self.parameter_format
        {
            return Err(node
                .error("a template's parameter format cannot be edited")
                .into());
        }
        let mut edited = self.clone();
        if let Some(node) = root.get("category")? {
            edited.category = parse_category(&node)?;
        }
        if let Some(node) = root.get("components")? {
            let parts = parse_components(&node, self.parameter_format)?;
            edited.header = parts.header;
            edited.body = parts.body;
            edited.footer = parts.footer;
            edited.buttons = parts.buttons;
        }
        Ok(edited)
    }
}

fn parse_as<T: FromStr<Err: Display>>(node: &Node) -> Result<T, FieldError> {
    node.str()?
        .parse()
        .map_err(|e: T::Err| node.error(e.to_string()))
}

fn parse_category(node: &Node) -> Result<Category, FieldError> {
    node.str()?
        .parse()
        .map_err(|_| node.error("must be UTILITY, MARKETING or AUTHENTICATION"))
}

fn parse_parameter_format(node: &Node) -> Result<ParameterFormat, FieldError> {
    match node.str()?.to_ascii_uppercase().as_str() {
        "POSITIONAL" => Ok(ParameterFormat::Positional),
        "NAMED" => Ok(ParameterFormat::Named),
        _ => Err(node.error("must be POSITIONAL or NAMED")),
    }
}

struct Parts {
    header: Option<Header>,
    body: Body,
    footer: Option<Footer>,
    buttons: Vec<Button>,
}

fn parse_components(node: &Node, format: ParameterFormat) -> Result<Parts, FieldError> {
    let (mut header, mut body, mut footer, mut buttons) = (None, None, None, None);
    for item in node.items()? {
        let type_node = item.require("type")?;
        let kind = type_node.str()?.to_ascii_uppercase();
        match kind.as_str() {
            "HEADER" => set_once(&mut header, &item, &kind, || parse_header(&item, format))?,
            "BODY" => set_once(&mut body, &item, &kind, || parse_body(&item, format))?,
            "FOOTER" => set_once(&mut footer, &item, &kind, || parse_footer(&item))?,
            "BUTTONS" => set_once(&mut buttons, &item, &kind, || parse_buttons(&item))?,
            _ => {
                return Err(type_node.error(format!(
                    "unknown component type {:?}; expected HEADER, BODY, FOOTER or BUTTONS",
                    type_node.str()?
                )));
            }
        }
    }
    Ok(Parts {
        header,
        body: body.ok_or_else(|| node.error("a template needs a BODY component"))?,
        footer,
        buttons: buttons.unwrap_or_default(),
    })
}

fn set_once<T>(
    slot: &mut Option<T>,
    item: &Node,
    kind: &str,
    parse: impl FnOnce() -> Result<T, FieldError>,
) -> Result<(), FieldError> {
    if slot.is_some() {
        return Err(item.error(format!("a template has at most one {kind} component")));
    }
    *slot = Some(parse()?);
    Ok(())
}

/// The component's `text`: required, not blank, at most `max` characters.
fn text_field<'a>(component: &Node<'a>, max: usize) -> Result<(Node<'a>, &'a str), FieldError> {
    let node = component.require("text")?;
    let text = node.str()?;
    if text.trim().is_empty() {
        return Err(node.error("must not be empty"));
    }
    let length = text.chars().count();
    if length > max {
        return Err(node.error(format!(
            "is {length} characters long; at most {max} are allowed"
        )));
    }
    Ok((node, text))
}

fn non_empty_string(node: &Node) -> Result<String, FieldError> {
    let value = node.str()?;
    if value.trim().is_empty() {
        return Err(node.error("must not be empty"));
    }
    Ok(value.to_owned())
}

/// An array holding exactly one non-empty string (`header_handle`, a URL button's example).
fn single_string(node: &Node) -> Result<String, FieldError> {
    match node.items()?.as_slice() {
        [only] => non_empty_string(only),
        _ => Err(node.error("must hold exactly one value")),
    }
}

fn parse_header(item: &Node, format: ParameterFormat) -> Result<Header, FieldError> {
    let format_node = item.require("format")?;
    let kind = match format_node.str()?.to_ascii_uppercase().as_str() {
        "TEXT" => return parse_text_header(item, format),
        "IMAGE" => MediaKind::Image,
        "VIDEO" => MediaKind::Video,
        "DOCUMENT" => MediaKind::Document,
        "LOCATION" => {
            refuse_text(item, "a LOCATION header has no text")?;
            return Ok(Header::Location);
        }
        _ => {
            return Err(format_node.error(format!(
                "unknown header format {:?}; expected TEXT, IMAGE, VIDEO, DOCUMENT or LOCATION",
                format_node.str()?
            )));
        }
    };
    refuse_text(item, "a media header has no text")?;
    let handle = match item.get("example")? {
        Some(example) => example.get("header_handle")?,
        None => None,
    };
    Ok(Header::Media {
        kind,
        example: handle.map(|node| single_string(&node)).transpose()?,
    })
}

fn refuse_text(item: &Node, message: &str) -> Result<(), FieldError> {
    match item.get("text")? {
        Some(text) => Err(text.error(message)),
        None => Ok(()),
    }
}

fn parse_text_header(item: &Node, format: ParameterFormat) -> Result<Header, FieldError> {
    let (text_node, text) = text_field(item, HEADER_TEXT_MAX)?;
    let variables = placeholder::occurrences(text, format).map_err(|m| text_node.error(m))?;
    let example = match variables.as_slice() {
        [] => None,
        [Variable::Positional(n)] if *n != 1 => {
            return Err(text_node.error("a header's variable is {{1}}"));
        }
        [variable] => Some(parse_example(
            item,
            std::slice::from_ref(variable),
            &HEADER_EXAMPLES,
        )?),
        _ => return Err(text_node.error("a header has at most one variable")),
    };
    Ok(Header::Text {
        text: text.to_owned(),
        example,
    })
}

fn parse_body(item: &Node, format: ParameterFormat) -> Result<Body, FieldError> {
    let (text_node, text) = text_field(item, BODY_TEXT_MAX)?;
    placeholder::occurrences(text, format).map_err(|m| text_node.error(m))?;
    let variables = placeholder::distinct(text, format);
    if format == ParameterFormat::Positional {
        for (expected, found) in (1..).zip(&variables) {
            if *found != Variable::Positional(expected) {
                return Err(text_node.error(format!(
                    "variables are numbered from {{{{1}}}} without gaps; {} is missing",
                    Variable::Positional(expected)
                )));
            }
        }
    }
    let example = if variables.is_empty() {
        None
    } else {
        Some(parse_example(item, &variables, &BODY_EXAMPLES)?)
    };
    Ok(Body {
        text: text.to_owned(),
        example,
    })
}

fn parse_footer(item: &Node) -> Result<Footer, FieldError> {
    let (text_node, text) = text_field(item, FOOTER_TEXT_MAX)?;
    if text.contains("{{") {
        return Err(text_node.error("a footer has no variables"));
    }
    Ok(Footer {
        text: text.to_owned(),
    })
}

/// Where a component keeps the examples of its variables.
struct ExampleKeys {
    positional: &'static str,
    named: &'static str,
    /// `body_text` wraps its values in one more array: `[["…", "…"]]`.
    nested: bool,
}

const HEADER_EXAMPLES: ExampleKeys = ExampleKeys {
    positional: "header_text",
    named: "header_text_named_params",
    nested: false,
};

const BODY_EXAMPLES: ExampleKeys = ExampleKeys {
    positional: "body_text",
    named: "body_text_named_params",
    nested: true,
};

/// The examples of `variables` (distinct, in send order, never empty).
fn parse_example(
    item: &Node,
    variables: &[Variable],
    keys: &ExampleKeys,
) -> Result<TextExample, FieldError> {
    let named = matches!(variables.first(), Some(Variable::Named(_)));
    let key = if named { keys.named } else { keys.positional };
    let example = item.get("example")?.ok_or_else(|| FieldError {
        field: item.path_of("example"),
        message: format!("text with variables needs example values in example.{key}"),
        missing: true,
    })?;
    let values = example.require(key)?;
    if named {
        return parse_named_examples(&values, variables).map(TextExample::Named);
    }
    let rows;
    let row = if keys.nested {
        rows = values.items()?;
        match rows.as_slice() {
            [row] => row,
            _ => return Err(values.error("must hold one list of example values")),
        }
    } else {
        &values
    };
    let cells = row.items()?;
    if cells.len() != variables.len() {
        return Err(row.error(format!(
            "must hold {} example values, one per variable; found {}",
            variables.len(),
            cells.len()
        )));
    }
    cells
        .iter()
        .map(non_empty_string)
        .collect::<Result<_, _>>()
        .map(TextExample::Positional)
}

fn parse_named_examples(
    values: &Node,
    variables: &[Variable],
) -> Result<Vec<NamedExample>, FieldError> {
    let mut examples: Vec<NamedExample> = Vec::new();
    for entry in values.items()? {
        let name_node = entry.require("param_name")?;
        let name = name_node.str()?;
        if !variables.contains(&Variable::Named(name.to_owned())) {
            return Err(name_node.error(format!("the text has no {{{{{name}}}}}")));
        }
        if examples.iter().any(|e| e.param_name == name) {
            return Err(name_node.error(format!("{name:?} has an example already")));
        }
        examples.push(NamedExample {
            param_name: name.to_owned(),
            example: non_empty_string(&entry.require("example")?)?,
        });
    }
    let covered = |v: &&Variable| {
        examples
            .iter()
            .any(|e| Variable::Named(e.param_name.clone()) == **v)
    };
    if let Some(missing) = variables.iter().find(|v| !covered(v)) {
        return Err(values.error(format!("no example for {missing}")));
    }
    Ok(examples)
}

#[cfg(test)]
mod tests;
