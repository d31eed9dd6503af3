//! The rules of business messaging, as pure functions over envelope metadata.
//!
//! The relay calls [`decide`] inside the same transaction that stores an envelope, so a
//! decision and its effects (a new contact, a refreshed window) are atomic on every backend.

use crate::time::UnixTime;
use serde::{Deserialize, Serialize};

/// The customer-service window: 24 hours from the user's last message.
pub const WINDOW_SECS: i64 = 24 * 60 * 60;

/// Whether an account is an end user or a business phone number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    User,
    Business,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Business => "business",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "business" => Some(Self::Business),
            _ => None,
        }
    }
}

/// What an envelope carries, as far as the relay may know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeKind {
    /// A free-form message (text today; media, interactive and others later).
    Message,
    /// An approved template, filled with parameters: the only message a business may send
    /// outside the window. Its clear header names the template version.
    Template,
    /// A delivery or read receipt for earlier messages.
    Receipt,
}

impl EnvelopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Template => "template",
            Self::Receipt => "receipt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "message" => Some(Self::Message),
            "template" => Some(Self::Template),
            "receipt" => Some(Self::Receipt),
            _ => None,
        }
    }
}

/// The customer-service window of one (business number, user) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceWindow {
    pub last_inbound: UnixTime,
}

impl ServiceWindow {
    pub fn is_open(&self, now: UnixTime) -> bool {
        now.0 < self.closes_at().0
    }

    pub fn closes_at(&self) -> UnixTime {
        self.last_inbound.plus_secs(WINDOW_SECS)
    }
}

/// How a contact between a user and a business came to exist (consent provenance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactOrigin {
    /// The user wrote to the business first.
    UserMessage,
}

impl ContactOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserMessage => "user_message",
        }
    }
}

/// A business's tier, set by the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusinessTier {
    /// The Business API: the business's software sends; free-form messages only inside the
    /// 24-hour window.
    Api,
    /// The 2018 article's small businesses (the WhatsApp Business app's users): a person's
    /// individual replies by hand may also be sent after the window, free, at a human pace.
    App,
}

impl BusinessTier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::App => "app",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Api, Self::App].into_iter().find(|t| t.as_str() == s)
    }
}

/// What exists between one user and one business number: consent, blocking, the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationship {
    pub first_contact_at: UnixTime,
    pub origin: ContactOrigin,
    pub window: ServiceWindow,
    pub blocked: bool,
}

/// Why the relay refuses an envelope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum RuleViolation {
    #[error(
        "the user has never contacted this business; businesses may only reply to users who wrote first"
    )]
    NoContact,
    #[error("the user has blocked this business")]
    Blocked,
    #[error(
        "more than 24 hours have passed since the user last wrote (window closed at {closed_at:?}); only a template may be sent"
    )]
    WindowClosed { closed_at: UnixTime },
    #[error("Ventana carries messages between users and businesses only")]
    NotBusinessMessaging,
    /// No approved template of that name, language and version (Cloud API 132001).
    #[error("template {name} ({language}) does not exist or is not approved in that version")]
    TemplateUnavailable { name: String, language: String },
    /// The template is paused (Cloud API 132015).
    #[error("template {name} ({language}) is paused")]
    TemplatePaused { name: String, language: String },
    /// The template is disabled (Cloud API 132016).
    #[error("template {name} ({language}) is disabled")]
    TemplateDisabled { name: String, language: String },
    /// Replies by hand come at a human pace: this one came too soon after the last ones.
    #[error(
        "replies by hand are limited to {per_minute} a minute and one every {min_gap_secs} s; retry in {retry_after_secs} s"
    )]
    ManualTooFast {
        per_minute: u32,
        min_gap_secs: u32,
        retry_after_secs: u32,
    },
}

/// What storing an allowed envelope does to the relationship.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendDecision {
    /// Deliver; nothing about the relationship changes.
    Deliver,
    /// Deliver and record this relationship (a new contact, or a refreshed window).
    DeliverAndRecord(Relationship),
}

/// The rules for one envelope from `sender` to `recipient`, given what exists between them and
/// the business's clock.
pub fn decide(
    sender: AccountKind,
    recipient: AccountKind,
    kind: EnvelopeKind,
    existing: Option<&Relationship>,
    now: UnixTime,
) -> Result<SendDecision, RuleViolation> {
    match (sender, recipient) {
        (AccountKind::User, AccountKind::Business) => match (kind, existing) {
            (EnvelopeKind::Message, Some(rel)) => {
                Ok(SendDecision::DeliverAndRecord(Relationship {
                    window: ServiceWindow { last_inbound: now },
                    ..rel.clone()
                }))
            }
            (EnvelopeKind::Message, None) => Ok(SendDecision::DeliverAndRecord(Relationship {
                first_contact_at: now,
                origin: ContactOrigin::UserMessage,
                window: ServiceWindow { last_inbound: now },
                blocked: false,
            })),
            // Receipts never open a window or create a contact.
            (EnvelopeKind::Receipt, _) => Ok(SendDecision::Deliver),
            // Templates are the business's; a user never sends one.
            (EnvelopeKind::Template, _) => Err(RuleViolation::NotBusinessMessaging),
        },
        (AccountKind::Business, AccountKind::User) => {
            let rel = existing.ok_or(RuleViolation::NoContact)?;
            if rel.blocked {
                return Err(RuleViolation::Blocked);
            }
            match kind {
                EnvelopeKind::Message if !rel.window.is_open(now) => {
                    Err(RuleViolation::WindowClosed {
                        closed_at: rel.window.closes_at(),
                    })
                }
                // Templates (checked against the registry before) pass a closed window.
                _ => Ok(SendDecision::Deliver),
            }
        }
        _ => Err(RuleViolation::NotBusinessMessaging),
    }
}

/// The rules for a small business's free-form reply written by a person (an `app`-tier
/// business's manual reply): contact-first and blocking hold as for any business message;
/// the 24-hour window does not.
pub fn decide_manual_reply(existing: Option<&Relationship>) -> Result<SendDecision, RuleViolation> {
    let rel = existing.ok_or(RuleViolation::NoContact)?;
    if rel.blocked {
        return Err(RuleViolation::Blocked);
    }
    Ok(SendDecision::Deliver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccountKind::{Business, User};
    use EnvelopeKind::{Message, Receipt, Template};

    fn contact_at(t: i64) -> Relationship {
        Relationship {
            first_contact_at: UnixTime(t),
            origin: ContactOrigin::UserMessage,
            window: ServiceWindow {
                last_inbound: UnixTime(t),
            },
            blocked: false,
        }
    }

    #[test]
    fn a_reply_by_hand_passes_a_closed_window_but_not_contact_first_or_a_block() {
        let long_ago = contact_at(0);
        assert_eq!(
            decide_manual_reply(Some(&long_ago)),
            Ok(SendDecision::Deliver)
        );
        assert_eq!(decide_manual_reply(None), Err(RuleViolation::NoContact));
        let blocked = Relationship {
            blocked: true,
            ..contact_at(0)
        };
        assert_eq!(
            decide_manual_reply(Some(&blocked)),
            Err(RuleViolation::Blocked)
        );
        assert_eq!(BusinessTier::parse("app"), Some(BusinessTier::App));
        assert_eq!(BusinessTier::parse("free"), None);
    }

    #[test]
    fn a_business_cannot_write_first() {
        assert_eq!(
            decide(Business, User, Message, None, UnixTime(0)),
            Err(RuleViolation::NoContact)
        );
    }

    #[test]
    fn a_user_message_creates_the_contact_and_opens_the_window() {
        let Ok(SendDecision::DeliverAndRecord(rel)) =
            decide(User, Business, Message, None, UnixTime(50))
        else {
            panic!("expected a recorded contact");
        };
        assert_eq!(rel, contact_at(50));
    }

    #[test]
    fn free_form_reply_is_allowed_inside_the_window_and_refused_after_it() {
        let rel = contact_at(1000);
        let last_second = UnixTime(1000 + WINDOW_SECS - 1);
        assert_eq!(
            decide(Business, User, Message, Some(&rel), last_second),
            Ok(SendDecision::Deliver)
        );
        let closed = UnixTime(1000 + WINDOW_SECS);
        assert_eq!(
            decide(Business, User, Message, Some(&rel), closed),
            Err(RuleViolation::WindowClosed { closed_at: closed })
        );
        // Templates and receipts still flow once the window has closed.
        assert_eq!(
            decide(Business, User, Template, Some(&rel), closed),
            Ok(SendDecision::Deliver)
        );
        assert_eq!(
            decide(Business, User, Receipt, Some(&rel), closed),
            Ok(SendDecision::Deliver)
        );
    }

    #[test]
    fn a_new_user_message_refreshes_the_window_but_keeps_provenance() {
        let rel = contact_at(10);
        let Ok(SendDecision::DeliverAndRecord(new)) =
            decide(User, Business, Message, Some(&rel), UnixTime(99_999))
        else {
            panic!("expected a refreshed window");
        };
        assert_eq!(new.first_contact_at, UnixTime(10));
        assert_eq!(new.window.last_inbound, UnixTime(99_999));
    }

    #[test]
    fn a_blocked_business_reaches_nobody() {
        let rel = Relationship {
            blocked: true,
            ..contact_at(0)
        };
        assert_eq!(
            decide(Business, User, Message, Some(&rel), UnixTime(1)),
            Err(RuleViolation::Blocked)
        );
        assert_eq!(
            decide(Business, User, Receipt, Some(&rel), UnixTime(1)),
            Err(RuleViolation::Blocked)
        );
    }

    #[test]
    fn templates_still_need_contact_first_and_no_block() {
        assert_eq!(
            decide(Business, User, Template, None, UnixTime(0)),
            Err(RuleViolation::NoContact)
        );
        let blocked = Relationship {
            blocked: true,
            ..contact_at(0)
        };
        assert_eq!(
            decide(Business, User, Template, Some(&blocked), UnixTime(1)),
            Err(RuleViolation::Blocked)
        );
        assert_eq!(
            decide(User, Business, Template, Some(&contact_at(0)), UnixTime(1)),
            Err(RuleViolation::NotBusinessMessaging)
        );
    }

    #[test]
    fn users_do_not_message_users() {
        assert_eq!(
            decide(User, User, Message, None, UnixTime(0)),
            Err(RuleViolation::NotBusinessMessaging)
        );
    }
}
