//! The success bodies of the business API, in the exact shapes SDKs read.

use serde_json::{Value, json};
use ventana_core::{MessageId, PhoneNumber, PhoneNumberId};

/// The answer to an accepted send (`MessageResponsePayload`). pywa reads `contacts[0].input`,
/// `contacts[0].wa_id` and `messages[0].id`; Meta adds `message_status`, so do we.
pub(crate) fn sent(input: &str, wa_id: &PhoneNumber, message_id: &MessageId) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": input, "wa_id": wa_id.digits() }],
        "messages": [{ "id": message_id.as_str(), "message_status": "accepted" }],
    })
}

/// The answer of every write that returns no resource.
pub(crate) fn success() -> Value {
    json!({ "success": true })
}

/// A business phone number, as `GET /{phone_number_id}` and `GET /{waba_id}/phone_numbers`
/// return it. The quality and verification fields are constants: this server has no quality
/// scoring and its numbers are verified when an operator adds them.
pub(crate) fn phone_number(
    id: &PhoneNumberId,
    display_phone_number: &str,
    verified_name: &str,
) -> Value {
    json!({
        "id": id.as_str(),
        "display_phone_number": display_phone_number,
        "verified_name": verified_name,
        "quality_rating": "GREEN",
        "code_verification_status": "VERIFIED",
        "platform_type": "CLOUD_API",
        "throughput": { "level": "STANDARD" },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn an_accepted_send_echoes_the_input_and_names_the_wa_id_and_message_id() {
        let id: MessageId = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQz".parse().unwrap();
        let body = sent("+1 650-555-1234", &"16505551234".parse().unwrap(), &id);
        assert_eq!(
            body,
            json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": "+1 650-555-1234", "wa_id": "16505551234"}],
                "messages": [{"id": "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQz", "message_status": "accepted"}],
            })
        );
    }

    #[test]
    fn success_is_success_true() {
        assert_eq!(success(), json!({"success": true}));
    }

    #[test]
    fn a_phone_number_has_metas_constant_fields() {
        let body = phone_number(
            &"106540352242922".parse().unwrap(),
            "+1 555-078-3881",
            "Ventana Shop",
        );
        assert_eq!(
            body,
            json!({
                "id": "106540352242922",
                "display_phone_number": "+1 555-078-3881",
                "verified_name": "Ventana Shop",
                "quality_rating": "GREEN",
                "code_verification_status": "VERIFIED",
                "platform_type": "CLOUD_API",
                "throughput": {"level": "STANDARD"},
            })
        );
    }
}
