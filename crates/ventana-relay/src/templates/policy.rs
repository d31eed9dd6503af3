//! The operator's policy for templates: how many a business may keep, and whether lint rules
//! decide a submitted template before a person looks at it.

use serde::Deserialize;
use std::fmt;
use std::str::FromStr;
use ventana_core::template::{Finding, LintRules, TemplateDefinition, lint};

/// `[templates]` in the node's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplatePolicy {
    /// How many templates (deleted ones aside) one business may keep: 250 by default, Meta's
    /// limit for a business that is not verified.
    pub limit_per_business: u32,
    /// Who decides a template submitted or edited by a business.
    pub review: Review,
    /// The rules run when `review` is `lint` (`[templates.lint]`).
    pub lint: LintRules,
    /// With `review = "lint"`: what a finding does to the template.
    pub on_findings: OnFindings,
    /// With `review = "lint"`: a template without findings is approved at once (otherwise it
    /// waits for an operator like any other).
    pub approve_clean: bool,
}

impl Default for TemplatePolicy {
    fn default() -> Self {
        Self {
            limit_per_business: 250,
            review: Review::default(),
            lint: LintRules::default(),
            on_findings: OnFindings::default(),
            approve_clean: true,
        }
    }
}

/// Who reviews templates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Review {
    /// Every template waits, `PENDING`, for an operator.
    #[default]
    Manual,
    /// The lint rules decide first; see [`OnFindings`] and `approve_clean`.
    Lint,
}

/// What a lint finding does to a template under `review = "lint"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFindings {
    /// The template is rejected, with the first finding as the reason.
    #[default]
    Reject,
    /// The template stays `PENDING` for an operator, who sees the findings.
    Hold,
}

/// A choice spelled wrongly in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be one of: {allowed} (got {given:?})")]
pub struct UnknownChoice {
    what: &'static str,
    allowed: &'static str,
    given: String,
}

/// `Display` and `FromStr` in the configuration's spelling (`manual`, `hold`, …).
macro_rules! choice {
    ($name:ident, $what:literal, [$($variant:ident => $spelling:literal),+ $(,)?]) => {
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $spelling,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownChoice;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($spelling => Ok(Self::$variant),)+
                    _ => Err(UnknownChoice {
                        what: $what,
                        allowed: concat!($($spelling, ", "),+).trim_end_matches(", "),
                        given: s.to_owned(),
                    }),
                }
            }
        }
    };
}

choice!(Review, "templates.review", [Manual => "manual", Lint => "lint"]);
choice!(OnFindings, "templates.on_findings", [Reject => "reject", Hold => "hold"]);

/// What the policy makes of a template just submitted or edited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It stays `PENDING` for an operator.
    Wait,
    Approve,
    /// Rejected for this finding (the first one).
    Reject(Finding),
}

impl TemplatePolicy {
    pub(crate) fn verdict(&self, def: &TemplateDefinition) -> Verdict {
        if self.review == Review::Manual {
            return Verdict::Wait;
        }
        match (lint(def, &self.lint).into_iter().next(), self.on_findings) {
            (Some(finding), OnFindings::Reject) => Verdict::Reject(finding),
            (Some(_), OnFindings::Hold) => Verdict::Wait,
            (None, _) if self.approve_clean => Verdict::Approve,
            (None, _) => Verdict::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn definition(body: &str, category: &str) -> TemplateDefinition {
        TemplateDefinition::parse(&json!({
            "name": "order_update",
            "language": "en_US",
            "category": category,
            "components": [{"type": "BODY", "text": body}],
        }))
        .unwrap()
    }

    fn lint_policy() -> TemplatePolicy {
        TemplatePolicy {
            review: Review::Lint,
            ..TemplatePolicy::default()
        }
    }

    #[test]
    fn by_default_every_template_waits_for_an_operator() {
        let policy = TemplatePolicy::default();
        assert_eq!(policy.limit_per_business, 250);
        let promotional = definition("Big sale on everything this week only", "UTILITY");
        assert_eq!(policy.verdict(&promotional), Verdict::Wait);
    }

    #[test]
    fn lint_review_rejects_with_the_first_finding_and_approves_clean_templates() {
        let policy = lint_policy();
        let Verdict::Reject(finding) =
            policy.verdict(&definition("Big sale on everything this week", "UTILITY"))
        else {
            panic!("a promotional utility template is rejected");
        };
        assert_eq!(finding.rule, "category_mismatch");
        let clean = definition("Your parcel left our warehouse today", "UTILITY");
        assert_eq!(policy.verdict(&clean), Verdict::Approve);
    }

    #[test]
    fn held_findings_and_unapproved_clean_templates_wait() {
        let hold = TemplatePolicy {
            on_findings: OnFindings::Hold,
            ..lint_policy()
        };
        let promotional = definition("Big sale on everything this week", "UTILITY");
        assert_eq!(hold.verdict(&promotional), Verdict::Wait);
        let careful = TemplatePolicy {
            approve_clean: false,
            ..lint_policy()
        };
        let clean = definition("Your parcel left our warehouse today", "UTILITY");
        assert_eq!(careful.verdict(&clean), Verdict::Wait);
    }

    #[test]
    fn the_policy_reads_from_its_configuration_section() {
        let policy: TemplatePolicy = serde_json::from_value(json!({
            "review": "lint",
            "on_findings": "hold",
            "lint": {"forbidden_words": ["casino"]},
        }))
        .unwrap();
        assert_eq!(policy.review, Review::Lint);
        assert_eq!(policy.on_findings, OnFindings::Hold);
        assert!(policy.approve_clean);
        assert_eq!(policy.lint.forbidden_words, vec!["casino".to_owned()]);
        assert!(serde_json::from_value::<TemplatePolicy>(json!({"reveiw": "lint"})).is_err());
        assert_eq!("LINT".parse::<Review>(), Ok(Review::Lint));
        let wrong = "auto".parse::<Review>().unwrap_err().to_string();
        assert_eq!(
            wrong,
            "templates.review must be one of: manual, lint (got \"auto\")"
        );
    }
}
