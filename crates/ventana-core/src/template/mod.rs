//! Message templates: what a business may send outside the 24-hour window.
//!
//! Template text is public to the platform (the relay keeps the registry and devices fetch
//! approved versions from it); only the parameters of a sent template travel encrypted.
//!
//! - this module: a template's identity, [`TemplateStatus`] and its review transitions,
//!   [`Category`].
//! - [`definition`]: what a business submits and the registry stores, in the Cloud API's
//!   JSON ([`TemplateDefinition`]), and what a send must supply ([`ParameterSpec`]).
//! - `parse`: Meta's rules for a submitted definition, with the JSON path of the first
//!   broken one ([`TemplateDefinition::parse`], [`TemplateDefinition::edit`]).
//! - [`send`]: the `template` object of a send request ([`SendTemplate`]).
//! - [`bind`](mod@bind): checking a send against its definition (Cloud API 132000, 132012) into the
//!   values that travel encrypted ([`BoundTemplate`]).
//! - [`render`](mod@render): definition plus values into what the device shows ([`Rendered`]).
//! - [`lint`](mod@lint): review rules an operator may enable ([`LintRules`]).
//! - `placeholder`: the one `{{…}}` scanner the others read template text with; `reader`:
//!   JSON walking that keeps the path for errors.

pub mod bind;
pub mod definition;
pub mod lint;
mod parse;
mod placeholder;
mod reader;
pub mod render;
pub mod send;

#[cfg(test)]
mod fixtures;

pub use bind::{BindError, BoundTemplate, bind};
pub use definition::{DefinitionError, ParameterSpec, TemplateDefinition};
pub use lint::{Finding, LintRules, lint};
pub use render::{RenderError, Rendered, render};
pub use send::{SendError, SendTemplate};

use serde::{Deserialize, Serialize};

/// `Display` and `FromStr` for an enum spelled as the Cloud API does (`as_str`, `ALL`);
/// parsing ignores case.
macro_rules! spelled {
    ($name:ident, $what:literal) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s))
                    .ok_or_else(|| format!(concat!("unknown ", $what, " {:?}"), s))
            }
        }
    };
}

/// Where a template is in review. Only `Approved` may be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemplateStatus {
    /// Submitted or edited, waiting for the operator (or a rule).
    Pending,
    Approved,
    Rejected,
    /// Temporarily not sendable (Cloud API error 132015); the operator may reinstate it.
    Paused,
    /// Permanently not sendable (Cloud API error 132016).
    Disabled,
    /// Deleted by the business; kept so messages sent with it still render.
    Deleted,
}

impl TemplateStatus {
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Approved,
        Self::Rejected,
        Self::Paused,
        Self::Disabled,
        Self::Deleted,
    ];

    /// The Cloud API spelling (`APPROVED`, …), as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
            Self::Paused => "PAUSED",
            Self::Disabled => "DISABLED",
            Self::Deleted => "DELETED",
        }
    }

    /// Whether review may move a template from `self` to `to` (an operator or a rule). Edits
    /// (back to `Pending`) and deletions are the business's and are not review transitions.
    pub fn may_become(self, to: Self) -> bool {
        use TemplateStatus::*;
        matches!(
            (self, to),
            (Pending, Approved)
                | (Pending, Rejected)
                | (Approved, Paused)
                | (Approved, Disabled)
                | (Paused, Approved)
                | (Paused, Disabled)
                | (Rejected, Approved)
        )
    }

    /// The `event` of a `message_template_status_update` webhook for a move to this status.
    pub fn event(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
            Self::Paused => "PAUSED",
            Self::Disabled => "DISABLED",
            Self::Deleted => "PENDING_DELETION",
        }
    }
}

spelled!(TemplateStatus, "template status");

/// What a template is for; it decides pricing and which rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    Utility,
    Marketing,
    Authentication,
}

impl Category {
    pub const ALL: [Self; 3] = [Self::Utility, Self::Marketing, Self::Authentication];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Utility => "UTILITY",
            Self::Marketing => "MARKETING",
            Self::Authentication => "AUTHENTICATION",
        }
    }
}

spelled!(Category, "template category");

/// The clear part of a template message, in the envelope for the relay and inside the
/// ciphertext for the device: which approved version the parameters fill. The relay checks it
/// against the registry; the device fetches that version and renders it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateHeader {
    /// The template's id in the registry.
    pub id: String,
    pub name: String,
    pub language: String,
    pub version: u32,
    pub category: Category,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_moves_only_forward_or_back_to_approved() {
        use TemplateStatus::*;
        assert!(Pending.may_become(Approved));
        assert!(Paused.may_become(Approved));
        assert!(!Disabled.may_become(Approved));
        assert!(!Deleted.may_become(Approved));
        assert!(!Approved.may_become(Pending));
        assert!(!Pending.may_become(Paused));
    }

    #[test]
    fn statuses_and_categories_round_trip_as_the_cloud_api_spells_them() {
        for status in TemplateStatus::ALL {
            assert_eq!(status.as_str().parse::<TemplateStatus>(), Ok(status));
        }
        assert_eq!("utility".parse::<Category>(), Ok(Category::Utility));
        assert!("OTP".parse::<Category>().is_err());
    }
}
