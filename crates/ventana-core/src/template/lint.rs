//! Review rules an operator may enable so that templates are decided without a person. Each
//! [`Finding`] names its rule (the [`LintRules`] field that enabled it) and the field it is
//! about; whether findings reject a template or only flag it is the relay's policy.
//!
//! Words are matched case-insensitively and whole (`sale` does not match `wholesale`), in
//! the fixed text only: variables are never read as words.

use super::Category;
use super::definition::{Button, Component, Header, HeaderParameter, TemplateDefinition};
use super::placeholder::{self, Piece};
use serde::{Deserialize, Serialize};

/// Which rules run; read from the operator's config (`[templates.lint]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LintRules {
    /// The body starts or ends with a variable (leading and trailing whitespace and
    /// punctuation aside), which Meta rejects.
    pub variable_at_edge: bool,
    /// The body has fewer than [`WORDS_PER_VARIABLE`] words of fixed text per variable
    /// occurrence (a word is a whitespace-separated run holding a letter or digit).
    pub variable_density: bool,
    /// A UTILITY or AUTHENTICATION template uses promotional words ([`PROMOTIONAL_WORDS`]),
    /// or an AUTHENTICATION template has no variable to carry its code.
    pub category_mismatch: bool,
    /// Words refused anywhere in header, body, footer and button text; empty means off.
    pub forbidden_words: Vec<String>,
}

impl Default for LintRules {
    fn default() -> Self {
        Self {
            variable_at_edge: true,
            variable_density: true,
            category_mismatch: true,
            forbidden_words: Vec::new(),
        }
    }
}

pub const WORDS_PER_VARIABLE: usize = 3;

pub const PROMOTIONAL_WORDS: &[&str] = &[
    "sale",
    "sales",
    "discount",
    "discounts",
    "% off",
    "offer",
    "offers",
    "coupon",
    "coupons",
    "promo",
    "promos",
    "promotion",
    "deal",
    "deals",
    "buy now",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    /// JSON path in the stored definition, e.g. `components[1].text`.
    pub field: String,
    pub reason: String,
}

pub fn lint(def: &TemplateDefinition, rules: &LintRules) -> Vec<Finding> {
    let texts = texts(def);
    let body_field = texts
        .iter()
        .find(|t| t.is_body)
        .map(|t| t.field.clone())
        .unwrap_or_default();
    let body = def.body().text.as_str();
    let mut findings = Vec::new();
    let mut found = |rule, field: &str, reason: String| {
        findings.push(Finding {
            rule,
            field: field.to_owned(),
            reason,
        })
    };

    if rules.variable_at_edge {
        let edges = variables_at_edges(body);
        for (at_edge, edge) in [(edges.0, "starts"), (edges.1, "ends")] {
            if at_edge {
                found(
                    "variable_at_edge",
                    &body_field,
                    format!("the body {edge} with a variable"),
                );
            }
        }
    }

    if rules.variable_density {
        let variables = placeholder::pieces(body)
            .filter(|p| matches!(p, Piece::Variable(_)))
            .count();
        let words = fixed_text(body)
            .split_whitespace()
            .filter(|w| w.contains(char::is_alphanumeric))
            .count();
        if words < WORDS_PER_VARIABLE * variables {
            found(
                "variable_density",
                &body_field,
                format!(
                    "{variables} variables but {words} words of fixed text; at least {WORDS_PER_VARIABLE} words per variable are needed"
                ),
            );
        }
    }

    if rules.category_mismatch {
        let category = def.category();
        if matches!(category, Category::Utility | Category::Authentication) {
            for text in &texts {
                if let Some(word) = PROMOTIONAL_WORDS
                    .iter()
                    .find(|w| contains_word(&text.fixed, w))
                {
                    found(
                        "category_mismatch",
                        &text.field,
                        format!("{category} templates are not promotional, but this says {word:?}"),
                    );
                }
            }
        }
        let spec = def.parameters();
        let carries_a_code = !spec.body.is_empty()
            || matches!(spec.header, Some(HeaderParameter::Text(_)))
            || spec.buttons.iter().any(|b| b.kind.required());
        if category == Category::Authentication && !carries_a_code {
            found(
                "category_mismatch",
                &body_field,
                "an AUTHENTICATION template carries a code, but this one has no variable".into(),
            );
        }
    }

    for word in rules
        .forbidden_words
        .iter()
        .filter(|w| !w.trim().is_empty())
    {
        for text in texts.iter().filter(|t| contains_word(&t.fixed, word)) {
            found(
                "forbidden_words",
                &text.field,
                format!("contains the forbidden word {word:?}"),
            );
        }
    }
    findings
}

/// A piece of text the business wrote, where it is, and its fixed words.
struct Text {
    field: String,
    fixed: String,
    is_body: bool,
}

fn texts(def: &TemplateDefinition) -> Vec<Text> {
    let mut texts = Vec::new();
    let mut add = |field: String, text: &str, is_body| {
        texts.push(Text {
            field,
            fixed: fixed_text(text),
            is_body,
        })
    };
    for (i, component) in def.components().into_iter().enumerate() {
        match component {
            Component::Header(Header::Text { text, .. }) => {
                add(format!("components[{i}].text"), text, false)
            }
            Component::Header(_) => {}
            Component::Body(body) => add(format!("components[{i}].text"), &body.text, true),
            Component::Footer(footer) => add(format!("components[{i}].text"), &footer.text, false),
            Component::Buttons(buttons) => {
                for (j, button) in buttons.iter().enumerate() {
                    // COPY_CODE's label is WhatsApp's, not the business's.
                    if !matches!(button, Button::CopyCode { .. }) {
                        add(
                            format!("components[{i}].buttons[{j}].text"),
                            button.text(),
                            false,
                        );
                    }
                }
            }
        }
    }
    texts
}

/// `text` with each variable replaced by a space.
fn fixed_text(text: &str) -> String {
    placeholder::pieces(text)
        .map(|piece| match piece {
            Piece::Text(fixed) => fixed,
            Piece::Variable(_) => " ",
        })
        .collect()
}

/// Whether the first and the last meaningful pieces of `text` are variables.
fn variables_at_edges(text: &str) -> (bool, bool) {
    let filler = |t: &str| {
        t.chars()
            .all(|c| c.is_whitespace() || c.is_ascii_punctuation() || "¡¿…«»“”‘’–—".contains(c))
    };
    let meaningful: Vec<Piece> = placeholder::pieces(text)
        .filter(|p| !matches!(p, Piece::Text(t) if filler(t)))
        .collect();
    let is_variable = |p: Option<&Piece>| matches!(p, Some(Piece::Variable(_)));
    (
        is_variable(meaningful.first()),
        is_variable(meaningful.last()),
    )
}

/// Case-insensitive whole-word search; a phrase edge that is not a letter or digit (`% off`)
/// needs no boundary.
fn contains_word(text: &str, word: &str) -> bool {
    let (text, word) = (text.to_lowercase(), word.trim().to_lowercase());
    if word.is_empty() {
        return false;
    }
    let bounded_left = word.starts_with(char::is_alphanumeric);
    let bounded_right = word.ends_with(char::is_alphanumeric);
    text.match_indices(&word).any(|(at, _)| {
        let before = text.get(..at).and_then(|s| s.chars().next_back());
        let after = text.get(at + word.len()..).and_then(|s| s.chars().next());
        let glued_left = bounded_left && before.is_some_and(char::is_alphanumeric);
        let glued_right = bounded_right && after.is_some_and(char::is_alphanumeric);
        !(glued_left || glued_right)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::fixtures;
    use serde_json::json;

    fn with_body(text: &str, category: &str) -> TemplateDefinition {
        let variables = text.matches("{{").count();
        let example: Vec<String> = (1..=variables).map(|n| format!("v{n}")).collect();
        let mut body = json!({"type": "BODY", "text": text});
        if variables > 0 {
            body["example"] = json!({"body_text": [example]});
        }
        fixtures::parse(json!({
            "name": "t", "language": "en", "category": category, "components": [body],
        }))
    }

    fn rules_of(findings: &[Finding]) -> Vec<(&'static str, &str)> {
        findings
            .iter()
            .map(|f| (f.rule, f.field.as_str()))
            .collect()
    }

    #[test]
    fn the_sample_templates_pass_the_default_rules() {
        for def in [
            fixtures::shipping(),
            fixtures::appointment(),
            fixtures::ticket(),
        ] {
            assert_eq!(lint(&def, &LintRules::default()), [], "{}", def.name());
        }
    }

    #[test]
    fn a_body_may_not_start_or_end_with_a_variable() {
        let findings = lint(
            &with_body(
                "{{1}}, your order of books has shipped to {{2}}!",
                "UTILITY",
            ),
            &LintRules::default(),
        );
        assert_eq!(
            findings,
            [
                Finding {
                    rule: "variable_at_edge",
                    field: "components[0].text".into(),
                    reason: "the body starts with a variable".into()
                },
                Finding {
                    rule: "variable_at_edge",
                    field: "components[0].text".into(),
                    reason: "the body ends with a variable".into()
                },
            ]
        );
        let inside = with_body("Hello {{1}}, your books have shipped to you.", "UTILITY");
        assert_eq!(lint(&inside, &LintRules::default()), []);
    }

    #[test]
    fn three_words_of_fixed_text_are_needed_per_variable() {
        let sparse = with_body("Hi {{1}} and {{2}} ok {{3}} now.", "UTILITY");
        let findings = lint(&sparse, &LintRules::default());
        assert_eq!(
            findings,
            [Finding {
                rule: "variable_density",
                field: "components[0].text".into(),
                reason: "3 variables but 4 words of fixed text; at least 3 words per variable are needed"
                    .into()
            }]
        );
        let enough = with_body("Hi {{1}}, here is the one thing we need.", "UTILITY");
        assert_eq!(lint(&enough, &LintRules::default()), []);
    }

    #[test]
    fn utility_and_authentication_templates_are_not_promotional() {
        let mut json = fixtures::shipping_json();
        json["components"][2]["text"] = json!("Get 20% OFF your next order");
        json["components"][3]["buttons"][1]["text"] = json!("See the Deal");
        let findings = lint(&fixtures::parse(json.clone()), &LintRules::default());
        assert_eq!(
            rules_of(&findings),
            [
                ("category_mismatch", "components[2].text"),
                ("category_mismatch", "components[3].buttons[1].text")
            ]
        );
        assert_eq!(
            findings[0].reason,
            "UTILITY templates are not promotional, but this says \"% off\""
        );

        json["category"] = json!("MARKETING");
        assert_eq!(lint(&fixtures::parse(json), &LintRules::default()), []);
    }

    #[test]
    fn promotional_words_match_whole_words_only_and_never_variables() {
        assert!(contains_word("Our SALE starts now", "sale"));
        assert!(contains_word("Buy now, pay later", "buy now"));
        assert!(!contains_word("wholesale prices", "sale"));
        assert!(!contains_word("an offering", "offer"));
        let named = fixtures::parse(json!({
            "name": "t", "language": "en", "category": "UTILITY", "parameter_format": "NAMED",
            "components": [{"type": "BODY", "text": "Hello, your order ships on {{sale_date}} from our depot.",
                            "example": {"body_text_named_params": [{"param_name": "sale_date", "example": "May 3"}]}}],
        }));
        assert_eq!(lint(&named, &LintRules::default()), []);
    }

    #[test]
    fn an_authentication_template_needs_a_variable_for_its_code() {
        let no_code = with_body(
            "Your login was confirmed, welcome back to the app.",
            "AUTHENTICATION",
        );
        assert_eq!(
            lint(&no_code, &LintRules::default()),
            [Finding {
                rule: "category_mismatch",
                field: "components[0].text".into(),
                reason: "an AUTHENTICATION template carries a code, but this one has no variable"
                    .into()
            }]
        );
        let code = with_body(
            "Use the code {{1}} to finish signing in to your account.",
            "AUTHENTICATION",
        );
        assert_eq!(lint(&code, &LintRules::default()), []);
    }

    #[test]
    fn forbidden_words_are_found_in_every_text_the_business_wrote() {
        let rules = LintRules {
            forbidden_words: vec!["Shopping".into(), "ORDER".into(), " ".into()],
            ..LintRules::default()
        };
        assert_eq!(
            rules_of(&lint(&fixtures::shipping(), &rules)),
            [
                ("forbidden_words", "components[1].text"),
                ("forbidden_words", "components[0].text"),
                ("forbidden_words", "components[1].text"),
                ("forbidden_words", "components[3].buttons[0].text"),
            ]
        );
    }

    #[test]
    fn disabled_rules_find_nothing() {
        let bad = with_body("{{1}} sale {{2}}", "AUTHENTICATION");
        let off = LintRules {
            variable_at_edge: false,
            variable_density: false,
            category_mismatch: false,
            forbidden_words: vec![],
        };
        assert_eq!(lint(&bad, &off), []);
        assert_eq!(lint(&bad, &LintRules::default()).len(), 4);
    }

    #[test]
    fn rules_read_from_config_default_to_the_first_three() {
        let rules: LintRules = serde_json::from_value(
            json!({"variable_density": false, "forbidden_words": ["crypto"]}),
        )
        .unwrap();
        assert_eq!(
            rules,
            LintRules {
                variable_density: false,
                forbidden_words: vec!["crypto".into()],
                ..LintRules::default()
            }
        );
        let typo: Result<LintRules, _> = serde_json::from_value(json!({"variable_at_edges": true}));
        assert!(typo.is_err());
    }
}
