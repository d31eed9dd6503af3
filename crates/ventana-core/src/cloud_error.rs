//! Refusals in the Cloud API's terms: the error code SDKs key on (pywa maps codes to
//! exception classes), its fixed title, and details saying what was wrong this time.
//!
//! The relay refuses in its own protocol (a [`ProtocolError`], often naming the
//! [`RuleViolation`]); what that means to a business is decided here, once. The gateway
//! writes a [`CloudError`] either as the Graph error of the API's answer (a send refused at
//! once) or as the `errors[]` item of a `failed` status webhook (one refused after the send
//! was accepted), so the two cannot tell a business different things.

use crate::protocol::{ErrorCode, ProtocolError};
use crate::rules::RuleViolation;

/// A Cloud API error code with its fixed title. Several share code 100, told apart by
/// title, as Meta's are.
///
/// Deliberately exhaustive: the gateway chooses an HTTP status for each, and a new code
/// should make it choose rather than fall into a default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloudErrorKind {
    /// 100: a field is missing, misspelled or has a bad value.
    InvalidParameter,
    /// 100: the business already has a template of this name in this language.
    TemplateExists,
    /// 100: the business has as many templates as the platform allows.
    TemplateLimitReached,
    /// 100: the request names no template of this business.
    TemplateNotFound,
    /// 100: the template changed while the request was handled, or its status does not
    /// allow the change.
    TemplateChanged,
    /// 131000: a failure on our side, or one the business can do nothing about.
    SomethingWentWrong,
    /// 131008: the `template` object lacks a required field.
    RequiredParameterMissing,
    /// 131009: a field of the `template` object has a bad value.
    ParameterValueNotValid,
    /// 131026: the recipient cannot receive this message (no account, blocked, never wrote).
    Undeliverable,
    /// 131047: more than 24 hours since the user last wrote; only a template may be sent.
    OutsideWindow,
    /// 132000: a component has another number of parameters than its template.
    ParameterCountMismatch,
    /// 132001: no template of that name is approved in that language (and version).
    TemplateUnavailable,
    /// 132012: a parameter does not fit its placeholder.
    ParameterFormatMismatch,
    /// 132015: the template is paused; it may be reinstated.
    TemplatePaused,
    /// 132016: the template is disabled for good.
    TemplateDisabled,
    /// 130429: sent faster than allowed (here: replies by hand faster than a person types).
    RateLimited,
}

impl CloudErrorKind {
    /// The Cloud API's `code`.
    pub fn code(self) -> u32 {
        match self {
            Self::InvalidParameter
            | Self::TemplateExists
            | Self::TemplateLimitReached
            | Self::TemplateNotFound
            | Self::TemplateChanged => 100,
            Self::SomethingWentWrong => 131000,
            Self::RequiredParameterMissing => 131008,
            Self::ParameterValueNotValid => 131009,
            Self::Undeliverable => 131026,
            Self::OutsideWindow => 131047,
            Self::ParameterCountMismatch => 132000,
            Self::TemplateUnavailable => 132001,
            Self::ParameterFormatMismatch => 132012,
            Self::TemplatePaused => 132015,
            Self::TemplateDisabled => 132016,
            Self::RateLimited => 130429,
        }
    }

    /// The short, fixed title Meta gives the code (`"(#<code>) <title>"` in a Graph error's
    /// `message`, `title` and `message` in a status's `errors[]`).
    pub fn title(self) -> &'static str {
        match self {
            Self::InvalidParameter => "Invalid parameter",
            // Meta shows its user this title for a duplicate.
            Self::TemplateExists => "Content in this language already exists",
            Self::TemplateLimitReached => "Message template limit reached",
            Self::TemplateNotFound => "Message template not found",
            Self::TemplateChanged => "Message template changed",
            Self::SomethingWentWrong => "Something went wrong",
            Self::RequiredParameterMissing => "Required parameter is missing",
            Self::ParameterValueNotValid => "Parameter value is not valid",
            Self::Undeliverable => "Message undeliverable",
            Self::OutsideWindow => "Re-engagement message",
            Self::ParameterCountMismatch => {
                "Number of parameters does not match the expected number of params"
            }
            Self::TemplateUnavailable => "Template name does not exist in the translation",
            Self::ParameterFormatMismatch => {
                "Parameter format does not match format in the created template"
            }
            Self::TemplatePaused => "Template is Paused",
            Self::TemplateDisabled => "Template is Disabled",
            Self::RateLimited => "Rate limit hit",
        }
    }
}

/// One refusal as the Cloud API reports it: a [`CloudErrorKind`] and the details of this
/// time, for the developer reading `error_data.details`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("(#{}) {}: {details}", kind.code(), kind.title())]
pub struct CloudError {
    kind: CloudErrorKind,
    details: String,
}

impl CloudError {
    pub fn new(kind: CloudErrorKind, details: impl Into<String>) -> Self {
        Self {
            kind,
            details: details.into(),
        }
    }

    pub fn kind(&self) -> CloudErrorKind {
        self.kind
    }

    pub fn code(&self) -> u32 {
        self.kind.code()
    }

    pub fn title(&self) -> &'static str {
        self.kind.title()
    }

    pub fn details(&self) -> &str {
        &self.details
    }

    pub fn into_details(self) -> String {
        self.details
    }

    /// What a refused message send means to the business that sent it: the relay's rule,
    /// or the recipient being unknown, in the Cloud API's codes. A malformed request (a
    /// business messaging its own number) is an invalid parameter, with the relay's words;
    /// anything else the business can do nothing about is 131000.
    pub fn of_send(error: &ProtocolError) -> Self {
        match (error.code, &error.rule) {
            (ErrorCode::Refused, Some(rule)) => Self::from(rule),
            (ErrorCode::Refused, None) => Self::new(
                CloudErrorKind::Undeliverable,
                "The recipient cannot receive messages from this business.",
            ),
            (ErrorCode::UnknownAccount, _) => Self::new(
                CloudErrorKind::Undeliverable,
                "The recipient is not on Ventana.",
            ),
            (ErrorCode::BadRequest, _) => {
                Self::new(CloudErrorKind::InvalidParameter, error.message.clone())
            }
            (ErrorCode::RateLimited, _) => {
                Self::new(CloudErrorKind::RateLimited, error.message.clone())
            }
            (ErrorCode::Undecryptable, _) => Self::new(
                CloudErrorKind::SomethingWentWrong,
                "The recipient's device could not decrypt the message, even after it was sent again on new sessions.",
            ),
            (
                ErrorCode::Unauthorized
                | ErrorCode::StaleDevices
                | ErrorCode::Conflict
                | ErrorCode::NotFound
                | ErrorCode::LimitReached
                | ErrorCode::Internal,
                _,
            ) => Self::new(
                CloudErrorKind::SomethingWentWrong,
                "The message could not be handed to the platform.",
            ),
        }
    }

    /// What a refused template request (create, list, read, edit, delete) means to the
    /// business, where the request has nothing more precise to say (a create's conflict is
    /// [`CloudErrorKind::TemplateExists`], say). The relay's message names the offending
    /// field or template, so it is the details.
    pub fn of_template_request(error: &ProtocolError) -> Self {
        let kind = match error.code {
            ErrorCode::BadRequest => CloudErrorKind::InvalidParameter,
            ErrorCode::Conflict => CloudErrorKind::TemplateChanged,
            ErrorCode::NotFound => CloudErrorKind::TemplateNotFound,
            ErrorCode::LimitReached => CloudErrorKind::TemplateLimitReached,
            ErrorCode::RateLimited => CloudErrorKind::RateLimited,
            ErrorCode::Unauthorized
            | ErrorCode::UnknownAccount
            | ErrorCode::Refused
            | ErrorCode::StaleDevices
            | ErrorCode::Internal
            | ErrorCode::Undecryptable => {
                return Self::new(
                    CloudErrorKind::SomethingWentWrong,
                    "The template request could not be handled by the platform.",
                );
            }
        };
        Self::new(kind, error.message.clone())
    }
}

/// The rule the relay applied, as the business hears of it.
impl From<&RuleViolation> for CloudError {
    fn from(rule: &RuleViolation) -> Self {
        match rule {
            RuleViolation::WindowClosed { .. } => Self::new(
                CloudErrorKind::OutsideWindow,
                "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
            ),
            RuleViolation::NoContact => Self::new(
                CloudErrorKind::Undeliverable,
                "The recipient has never messaged this business number; businesses may only contact users who wrote first.",
            ),
            // Neither a block nor a user-to-user message is said as such: Meta does not tell
            // a business it was blocked either.
            RuleViolation::Blocked | RuleViolation::NotBusinessMessaging => Self::new(
                CloudErrorKind::Undeliverable,
                "The recipient cannot receive messages from this business.",
            ),
            RuleViolation::TemplateUnavailable { name, language } => Self::new(
                CloudErrorKind::TemplateUnavailable,
                format!(
                    "No template named {name} is approved in language {language} in the version sent."
                ),
            ),
            RuleViolation::TemplatePaused { name, language } => Self::new(
                CloudErrorKind::TemplatePaused,
                format!("Template {name} ({language}) is paused and cannot be sent now."),
            ),
            RuleViolation::TemplateDisabled { name, language } => Self::new(
                CloudErrorKind::TemplateDisabled,
                format!("Template {name} ({language}) is disabled and can no longer be sent."),
            ),
            RuleViolation::ManualTooFast {
                per_minute,
                min_gap_secs,
                retry_after_secs,
            } => Self::new(
                CloudErrorKind::RateLimited,
                format!(
                    "Replies by hand are limited to {per_minute} a minute and one every {min_gap_secs} seconds from a business number; retry in {retry_after_secs} seconds."
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UnixTime;

    fn refused(rule: RuleViolation) -> CloudError {
        CloudError::of_send(&ProtocolError::refused(rule))
    }

    fn template(name: &str) -> (String, String) {
        (name.to_owned(), "en_US".to_owned())
    }

    #[test]
    fn a_free_form_send_outside_the_window_is_131047() {
        let error = refused(RuleViolation::WindowClosed {
            closed_at: UnixTime(1),
        });
        assert_eq!(
            (error.code(), error.title()),
            (131047, "Re-engagement message")
        );
        assert!(error.details().contains("24 hours"));
    }

    #[test]
    fn a_user_who_never_wrote_is_131026_and_says_so() {
        let error = refused(RuleViolation::NoContact);
        assert_eq!(
            (error.code(), error.title()),
            (131026, "Message undeliverable")
        );
        assert!(error.details().contains("never messaged"));
    }

    #[test]
    fn a_block_is_131026_without_saying_it_was_a_block() {
        for rule in [RuleViolation::Blocked, RuleViolation::NotBusinessMessaging] {
            let error = refused(rule);
            assert_eq!(error.kind(), CloudErrorKind::Undeliverable);
            assert!(!error.details().contains("block"), "{error}");
        }
        let unruled = CloudError::of_send(&ProtocolError::new(ErrorCode::Refused, "no"));
        assert_eq!(unruled.code(), 131026);
    }

    #[test]
    fn template_refusals_are_132001_132015_and_132016_naming_the_template() {
        let (name, language) = template("order_update");
        for (rule, code, title) in [
            (
                RuleViolation::TemplateUnavailable {
                    name: name.clone(),
                    language: language.clone(),
                },
                132001,
                "Template name does not exist in the translation",
            ),
            (
                RuleViolation::TemplatePaused {
                    name: name.clone(),
                    language: language.clone(),
                },
                132015,
                "Template is Paused",
            ),
            (
                RuleViolation::TemplateDisabled {
                    name: name.clone(),
                    language: language.clone(),
                },
                132016,
                "Template is Disabled",
            ),
        ] {
            let error = refused(rule);
            assert_eq!((error.code(), error.title()), (code, title));
            assert!(error.details().contains("order_update"), "{error}");
        }
    }

    #[test]
    fn an_unknown_recipient_is_131026() {
        let error = CloudError::of_send(&ProtocolError::new(ErrorCode::UnknownAccount, "gone"));
        assert_eq!(error.code(), 131026);
        assert_eq!(error.details(), "The recipient is not on Ventana.");
    }

    #[test]
    fn a_malformed_send_is_an_invalid_parameter_in_the_relays_words() {
        let error = CloudError::of_send(&ProtocolError::new(
            ErrorCode::BadRequest,
            "an account cannot message itself",
        ));
        assert_eq!((error.code(), error.title()), (100, "Invalid parameter"));
        assert_eq!(error.details(), "an account cannot message itself");
    }

    #[test]
    fn a_message_no_resend_could_decrypt_is_131000_and_says_why() {
        let error = CloudError::of_send(&ProtocolError::new(ErrorCode::Undecryptable, "x"));
        assert_eq!(
            (error.code(), error.title()),
            (131000, "Something went wrong")
        );
        assert!(error.details().contains("could not decrypt"));
    }

    #[test]
    fn every_other_send_refusal_is_131000_without_the_relays_words() {
        for code in [
            ErrorCode::Unauthorized,
            ErrorCode::StaleDevices,
            ErrorCode::Conflict,
            ErrorCode::NotFound,
            ErrorCode::LimitReached,
            ErrorCode::Internal,
        ] {
            let error = CloudError::of_send(&ProtocolError::new(code, "relay internals"));
            assert_eq!(error.kind(), CloudErrorKind::SomethingWentWrong, "{code:?}");
            assert_eq!(
                error.details(),
                "The message could not be handed to the platform."
            );
        }
    }

    #[test]
    fn template_request_refusals_are_code_100_in_the_relays_words() {
        for (code, kind, title) in [
            (
                ErrorCode::BadRequest,
                CloudErrorKind::InvalidParameter,
                "Invalid parameter",
            ),
            (
                ErrorCode::Conflict,
                CloudErrorKind::TemplateChanged,
                "Message template changed",
            ),
            (
                ErrorCode::NotFound,
                CloudErrorKind::TemplateNotFound,
                "Message template not found",
            ),
            (
                ErrorCode::LimitReached,
                CloudErrorKind::TemplateLimitReached,
                "Message template limit reached",
            ),
        ] {
            let error = CloudError::of_template_request(&ProtocolError::new(
                code,
                "components[1].text: too long",
            ));
            assert_eq!(
                (error.kind(), error.code(), error.title()),
                (kind, 100, title)
            );
            assert_eq!(error.details(), "components[1].text: too long");
        }
        let failed = CloudError::of_template_request(&ProtocolError::new(
            ErrorCode::Internal,
            "relay internals",
        ));
        assert_eq!(failed.code(), 131000);
        assert!(!failed.details().contains("relay internals"));
    }

    #[test]
    fn every_kind_has_the_code_of_metas_table() {
        use CloudErrorKind::*;
        let table = [
            (InvalidParameter, 100),
            (TemplateExists, 100),
            (TemplateLimitReached, 100),
            (TemplateNotFound, 100),
            (TemplateChanged, 100),
            (SomethingWentWrong, 131000),
            (RequiredParameterMissing, 131008),
            (ParameterValueNotValid, 131009),
            (Undeliverable, 131026),
            (OutsideWindow, 131047),
            (ParameterCountMismatch, 132000),
            (TemplateUnavailable, 132001),
            (ParameterFormatMismatch, 132012),
            (TemplatePaused, 132015),
            (TemplateDisabled, 132016),
        ];
        for (kind, code) in table {
            assert_eq!(kind.code(), code, "{kind:?}");
            assert!(!kind.title().is_empty());
        }
        // Kinds sharing a code are told apart by their titles.
        let titles: std::collections::HashSet<_> = table.iter().map(|(k, _)| k.title()).collect();
        assert_eq!(titles.len(), table.len());
    }

    #[test]
    fn it_displays_as_a_graph_message_with_its_details() {
        let error = CloudError::new(CloudErrorKind::OutsideWindow, "late");
        assert_eq!(error.to_string(), "(#131047) Re-engagement message: late");
    }
}
