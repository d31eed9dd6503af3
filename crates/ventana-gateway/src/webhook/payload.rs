//! The JSON of one webhook event, in the Cloud API's envelope.
//!
//! One event per POST: the envelope allows batching, but whatsapp-api-js reads only
//! `entry[0].changes[0]` and its first message or status. `contacts` is on statuses too,
//! with `user_id`, because pywa fails on either without it. Template status changes are
//! the business's, not a number's: their entry has no `metadata` and no `contacts`.

use crate::graph::error::GraphError;
use serde_json::{Map, Value, json};
use ventana_core::pricing::PricingNote;
use ventana_core::protocol::TemplateEventInfo;
use ventana_core::{CloudError, MessageId, PhoneNumber, PhoneNumberId, UnixTime, WabaId};

/// Where Meta's error codes are documented; statuses carry it in `errors[].href`.
const ERROR_CODES_HREF: &str =
    "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/";

/// The business number an event happened on: `entry[].id` and `value.metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookContext {
    pub(crate) waba_id: WabaId,
    pub(crate) phone_number_id: PhoneNumberId,
    /// As Meta writes it in `metadata`: the number's digits (`15550783881`).
    pub(crate) display_phone_number: String,
}

/// The user an event is about, as `value.contacts[0]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WebhookContact<'a> {
    pub(crate) wa_id: &'a PhoneNumber,
    /// The business-scoped user id (`US.1349…`).
    pub(crate) user_id: &'a str,
    pub(crate) profile_name: &'a str,
}

/// Where an outbound message got to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeliveryStatus<'a> {
    Sent,
    Delivered,
    Read,
    /// Refused after the send was accepted; the error is reported in `errors[]`.
    Failed(StatusError<'a>),
}

impl DeliveryStatus<'_> {
    /// The name Meta gives the status in `statuses[].status`.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed(_) => "failed",
        }
    }
}

/// Why a message failed, with the same code, title and details a synchronous refusal would
/// have had: written as the status's `errors[]` item.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusError<'a> {
    pub(crate) code: i64,
    pub(crate) title: &'a str,
    pub(crate) details: &'a str,
}

/// A refusal after the send was accepted (the relay's, told by the outbox).
impl<'a> From<&'a CloudError> for StatusError<'a> {
    fn from(error: &'a CloudError) -> Self {
        Self {
            code: i64::from(error.code()),
            title: error.title(),
            details: error.details(),
        }
    }
}

/// A scheduled send refused when it fired, as its request would have been answered then.
impl<'a> From<&'a GraphError> for StatusError<'a> {
    fn from(error: &'a GraphError) -> Self {
        Self {
            code: error.code,
            title: &error.title,
            details: &error.details,
        }
    }
}

/// What a user sent, as the Cloud API's inbound message types.
pub(crate) enum InboundContent<'a> {
    Text(&'a str),
    /// A tap on a template's quick-reply button: its label and payload.
    Button {
        text: &'a str,
        payload: &'a str,
    },
    /// A message that can never be read here (it could not be decrypted, or did not match
    /// its envelope), as the Cloud API reports content it does not support: type
    /// `unsupported` with the error in `errors[]`.
    Unreadable(StatusError<'a>),
}

/// A message from a user. `reply_to` is the replied-to message and its sender, the business
/// number's digits (`context.from`); a button tap always names its template message there.
pub(crate) fn inbound_message(
    ctx: &WebhookContext,
    from: WebhookContact<'_>,
    id: &MessageId,
    timestamp: UnixTime,
    content: InboundContent<'_>,
    reply_to: Option<(&str, &MessageId)>,
) -> Value {
    let mut message = json!({
        "from": from.wa_id.digits(),
        "from_user_id": from.user_id,
        "id": id.as_str(),
        "timestamp": timestamp.0.to_string(),
    });
    match content {
        InboundContent::Text(body) => {
            message["type"] = "text".into();
            message["text"] = json!({ "body": body });
        }
        InboundContent::Button { text, payload } => {
            message["type"] = "button".into();
            message["button"] = json!({ "payload": payload, "text": text });
        }
        InboundContent::Unreadable(error) => {
            message["type"] = "unsupported".into();
            message["unsupported"] = json!({ "type": "unknown" });
            message["errors"] = json!([{
                "code": error.code,
                "title": error.title,
                "message": error.title,
                "error_data": { "details": error.details },
            }]);
        }
    }
    if let Some((business, replied)) = reply_to {
        message["context"] = json!({ "from": business, "id": replied.as_str() });
    }
    envelope(ctx, from, "messages", message)
}

/// A status of an outbound message to `recipient`. `pricing` (as the relay decided it: on
/// `sent` as the message would be charged, on `delivered` and `read` from its ledger entry)
/// goes on every status but `failed`, which carries its error instead; under conversation
/// pricing with its `conversation`. `biz_opaque_callback_data` is echoed from the send
/// request.
pub(crate) fn status(
    ctx: &WebhookContext,
    recipient: WebhookContact<'_>,
    id: &MessageId,
    status: DeliveryStatus<'_>,
    timestamp: UnixTime,
    pricing: Option<&PricingNote>,
    biz_opaque_callback_data: Option<&str>,
) -> Value {
    let mut item = Map::new();
    item.insert("id".into(), id.as_str().into());
    item.insert("status".into(), status.as_str().into());
    item.insert("timestamp".into(), timestamp.0.to_string().into());
    item.insert("recipient_id".into(), recipient.wa_id.digits().into());
    item.insert("recipient_user_id".into(), recipient.user_id.into());
    if let Some(data) = biz_opaque_callback_data {
        item.insert("biz_opaque_callback_data".into(), data.into());
    }
    match status {
        DeliveryStatus::Failed(error) => {
            item.insert(
                "errors".into(),
                json!([{
                    "code": error.code,
                    "title": error.title,
                    "message": error.title,
                    "error_data": { "details": error.details },
                    "href": ERROR_CODES_HREF,
                }]),
            );
        }
        DeliveryStatus::Sent | DeliveryStatus::Delivered | DeliveryStatus::Read => {
            if let Some(pricing) = pricing {
                if let Some(c) = &pricing.conversation {
                    item.insert(
                        "conversation".into(),
                        json!({
                            "id": c.id,
                            "expiration_timestamp": c.expires_at.0.to_string(),
                            "origin": { "type": c.origin.as_str() },
                        }),
                    );
                }
                item.insert(
                    "pricing".into(),
                    json!({
                        "billable": pricing.billable,
                        "pricing_model": pricing.model.webhook_name(),
                        "category": pricing.category.as_str(),
                        "type": pricing.pricing_type.as_str(),
                    }),
                );
            }
        }
    }
    envelope(ctx, recipient, "statuses", Value::Object(item))
}

/// `{"object":"whatsapp_business_account","entry":[{"id","changes":[{"field":"messages",
/// "value":{…, <list>:[item]}}]}]}`.
fn envelope(ctx: &WebhookContext, contact: WebhookContact<'_>, list: &str, item: Value) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": ctx.display_phone_number,
            "phone_number_id": ctx.phone_number_id.as_str(),
        },
        "contacts": [{
            "profile": { "name": contact.profile_name },
            "wa_id": contact.wa_id.digits(),
            "user_id": contact.user_id,
        }],
    });
    value[list] = json!([item]);
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": ctx.waba_id.as_str(),
            "changes": [{ "field": "messages", "value": value }],
        }],
    })
}

/// A change of a template's status, as `message_template_status_update` reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TemplateStatusUpdate<'a> {
    /// Meta's event name (`APPROVED`, `REJECTED`, `PAUSED`, `PENDING_DELETION`, …).
    pub(crate) event: &'a str,
    /// The template's id: a numeric string, written as a number as Meta does.
    pub(crate) template_id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) language: &'a str,
    /// Why (a rejection or pause reason), if the reviewer gave one.
    pub(crate) reason: Option<&'a str>,
    /// When the change happened: the entry's `time`.
    pub(crate) at: UnixTime,
}

impl<'a> TemplateStatusUpdate<'a> {
    /// The update announcing the relay's `event` as `name`.
    pub(crate) fn of(event: &'a TemplateEventInfo, name: &'a str) -> Self {
        Self {
            event: name,
            template_id: &event.template_id,
            name: &event.name,
            language: &event.language,
            reason: event.reason.as_deref(),
            at: event.at,
        }
    }
}

/// JavaScript's `Number.MAX_SAFE_INTEGER`, 2^53 - 1.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// `{"object":"whatsapp_business_account","entry":[{"id":<waba>,"time":<unix>,"changes":
/// [{"value":{"event",…},"field":"message_template_status_update"}]}]}`. `reason` is `NONE`
/// when none was given, and `null` for a deletion, as Meta writes them.
pub(crate) fn template_status_update(waba: &WabaId, update: TemplateStatusUpdate<'_>) -> Value {
    // A number, as Meta writes it, when JavaScript can hold it exactly (every id Ventana
    // makes now); a string otherwise, so no `JSON.parse` rounds it to another template's id.
    let template_id = update
        .template_id
        .parse::<u64>()
        .ok()
        .filter(|id| *id <= MAX_SAFE_INTEGER)
        .map_or_else(|| Value::from(update.template_id), Value::from);
    let reason = match (update.event, update.reason) {
        ("PENDING_DELETION", _) => Value::Null,
        (_, Some(reason)) => reason.into(),
        (_, None) => "NONE".into(),
    };
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": waba.as_str(),
            "time": update.at.0,
            "changes": [{
                "value": {
                    "event": update.event,
                    "message_template_id": template_id,
                    "message_template_name": update.name,
                    "message_template_language": update.language,
                    "reason": reason,
                },
                "field": "message_template_status_update",
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use ventana_core::pricing::{ConversationNote, Model, PricingCategory, PricingType};

    const IN: &str = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTdC";
    const OUT: &str = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QUNG";

    fn ctx() -> WebhookContext {
        WebhookContext {
            waba_id: "102290129340398".parse().unwrap(),
            phone_number_id: "106540352242922".parse().unwrap(),
            display_phone_number: "15550783881".to_owned(),
        }
    }

    fn user() -> PhoneNumber {
        "16505551234".parse().unwrap()
    }

    fn contact(user: &PhoneNumber) -> WebhookContact<'_> {
        WebhookContact {
            wa_id: user,
            user_id: "US.1349120865530274",
            profile_name: "Sheena Nelson",
        }
    }

    /// The envelope around one `value`, with `contacts` for the test user.
    fn expected(list: &str, item: Value) -> Value {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
            "field": "messages",
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234", "user_id": "US.1349120865530274"}],
                list: [item],
            },
        }]}]})
    }

    #[test]
    fn an_inbound_text_is_one_message_in_metas_envelope() {
        let user = user();
        let event = inbound_message(
            &ctx(),
            contact(&user),
            &IN.parse().unwrap(),
            UnixTime(1749416383),
            InboundContent::Text("Another color?"),
            None,
        );
        assert_eq!(
            event,
            expected(
                "messages",
                json!({
                    "from": "16505551234",
                    "from_user_id": "US.1349120865530274",
                    "id": IN,
                    "timestamp": "1749416383",
                    "type": "text",
                    "text": {"body": "Another color?"},
                })
            )
        );
    }

    #[test]
    fn a_message_that_cannot_be_read_is_unsupported_content_with_its_error() {
        let user = user();
        let error = StatusError {
            code: 131051,
            title: "Message type unknown",
            details: "The message could not be read: bad MAC.",
        };
        let event = inbound_message(
            &ctx(),
            contact(&user),
            &IN.parse().unwrap(),
            UnixTime(1749416383),
            InboundContent::Unreadable(error),
            None,
        );
        assert_eq!(
            event,
            expected(
                "messages",
                json!({
                    "from": "16505551234",
                    "from_user_id": "US.1349120865530274",
                    "id": IN,
                    "timestamp": "1749416383",
                    "type": "unsupported",
                    "unsupported": {"type": "unknown"},
                    "errors": [{
                        "code": 131051,
                        "title": "Message type unknown",
                        "message": "Message type unknown",
                        "error_data": {"details": "The message could not be read: bad MAC."},
                    }],
                })
            )
        );
    }

    #[test]
    fn a_template_id_javascript_cannot_hold_is_written_as_a_string() {
        let update = |id: &'static str| TemplateStatusUpdate {
            event: "APPROVED",
            template_id: id,
            name: "order_update",
            language: "en_US",
            reason: None,
            at: UnixTime(1),
        };
        let id_of =
            |event: Value| event["entry"][0]["changes"][0]["value"]["message_template_id"].clone();
        let waba: WabaId = "102290129340398".parse().unwrap();
        // 2^53 - 1 is exact in JavaScript; 2^53 + 1 would be read as 2^53.
        assert_eq!(
            id_of(template_status_update(&waba, update("9007199254740991"))),
            json!(9_007_199_254_740_991_u64)
        );
        assert_eq!(
            id_of(template_status_update(&waba, update("9007199254740993"))),
            json!("9007199254740993")
        );
    }

    #[test]
    fn an_inbound_reply_carries_the_replied_message_in_context() {
        let user = user();
        let out: MessageId = OUT.parse().unwrap();
        let event = inbound_message(
            &ctx(),
            contact(&user),
            &IN.parse().unwrap(),
            UnixTime(1),
            InboundContent::Text("yes"),
            Some(("15550783881", &out)),
        );
        let message = &event["entry"][0]["changes"][0]["value"]["messages"][0];
        assert_eq!(
            message["context"],
            json!({"from": "15550783881", "id": OUT})
        );
    }

    #[test]
    fn a_quick_reply_tap_is_a_button_message_naming_the_template_message() {
        let user = user();
        let out: MessageId = OUT.parse().unwrap();
        let event = inbound_message(
            &ctx(),
            contact(&user),
            &IN.parse().unwrap(),
            UnixTime(1749416383),
            InboundContent::Button {
                text: "Reschedule",
                payload: "RESCHEDULE_42",
            },
            Some(("15550783881", &out)),
        );
        assert_eq!(
            event,
            expected(
                "messages",
                json!({
                    "from": "16505551234",
                    "from_user_id": "US.1349120865530274",
                    "id": IN,
                    "timestamp": "1749416383",
                    "type": "button",
                    "button": {"payload": "RESCHEDULE_42", "text": "Reschedule"},
                    "context": {"from": "15550783881", "id": OUT},
                })
            )
        );
    }

    fn free_service() -> PricingNote {
        PricingNote {
            billable: false,
            model: Model::PerMessage2025,
            category: PricingCategory::Service,
            pricing_type: PricingType::FreeCustomerService,
            conversation: None,
        }
    }

    #[test]
    fn a_conversation_priced_status_carries_its_conversation() {
        let user = user();
        let note = PricingNote {
            billable: true,
            model: Model::Conversation2022,
            category: PricingCategory::Marketing,
            pricing_type: PricingType::Regular,
            conversation: Some(ConversationNote {
                id: "0123456789abcdef0123456789abcdef".into(),
                origin: PricingCategory::Marketing,
                expires_at: UnixTime(1750086401),
            }),
        };
        let event = status(
            &ctx(),
            contact(&user),
            &OUT.parse().unwrap(),
            DeliveryStatus::Sent,
            UnixTime(1750000001),
            Some(&note),
            None,
        );
        let item = &event["entry"][0]["changes"][0]["value"]["statuses"][0];
        assert_eq!(
            item["pricing"],
            json!({"billable": true, "pricing_model": "CBP", "category": "marketing", "type": "regular"})
        );
        assert_eq!(
            item["conversation"],
            json!({"id": "0123456789abcdef0123456789abcdef", "expiration_timestamp": "1750086401", "origin": {"type": "marketing"}})
        );
    }

    #[test]
    fn a_delivered_status_has_pmp_pricing_and_the_callback_data() {
        let user = user();
        let event = status(
            &ctx(),
            contact(&user),
            &OUT.parse().unwrap(),
            DeliveryStatus::Delivered,
            UnixTime(1750000001),
            Some(&free_service()),
            Some("order-42"),
        );
        assert_eq!(
            event,
            expected(
                "statuses",
                json!({
                    "id": OUT,
                    "status": "delivered",
                    "timestamp": "1750000001",
                    "recipient_id": "16505551234",
                    "recipient_user_id": "US.1349120865530274",
                    "biz_opaque_callback_data": "order-42",
                    "pricing": {"billable": false, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"},
                })
            )
        );
    }

    #[test]
    fn a_failed_status_has_the_error_and_no_pricing() {
        let user = user();
        let error = StatusError {
            code: 131047,
            title: "Re-engagement message",
            details: "More than 24 hours have passed since the customer last replied.",
        };
        let event = status(
            &ctx(),
            contact(&user),
            &OUT.parse().unwrap(),
            DeliveryStatus::Failed(error),
            UnixTime(1750000002),
            Some(&free_service()),
            None,
        );
        assert_eq!(
            event,
            expected(
                "statuses",
                json!({
                    "id": OUT,
                    "status": "failed",
                    "timestamp": "1750000002",
                    "recipient_id": "16505551234",
                    "recipient_user_id": "US.1349120865530274",
                    "errors": [{
                        "code": 131047,
                        "title": "Re-engagement message",
                        "message": "Re-engagement message",
                        "error_data": {"details": "More than 24 hours have passed since the customer last replied."},
                        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
                    }],
                })
            )
        );
    }

    #[test]
    fn a_refusal_after_acceptance_reports_what_the_api_would_have_answered() {
        use ventana_core::protocol::ProtocolError;
        use ventana_core::rules::RuleViolation;
        let refusal = CloudError::of_send(&ProtocolError::refused(RuleViolation::TemplatePaused {
            name: "order_update".into(),
            language: "en_US".into(),
        }));
        let answered = GraphError::from(refusal.clone());
        let reported = StatusError::from(&refusal);
        assert_eq!(
            (reported.code, reported.title, reported.details),
            (
                answered.code,
                answered.title.as_str(),
                answered.details.as_str()
            )
        );
        let user = user();
        let event = status(
            &ctx(),
            contact(&user),
            &OUT.parse().unwrap(),
            DeliveryStatus::Failed(reported),
            UnixTime(1),
            Some(&free_service()),
            None,
        );
        let error = &event["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0];
        assert_eq!(error["code"], 132015);
        assert_eq!(error["title"], "Template is Paused");
        assert_eq!(
            error["error_data"]["details"],
            "Template order_update (en_US) is paused and cannot be sent now."
        );
    }

    #[test]
    fn sent_and_read_statuses_are_named_as_meta_names_them() {
        let user = user();
        for (delivery, name) in [
            (DeliveryStatus::Sent, "sent"),
            (DeliveryStatus::Read, "read"),
        ] {
            let event = status(
                &ctx(),
                contact(&user),
                &OUT.parse().unwrap(),
                delivery,
                UnixTime(1),
                Some(&free_service()),
                None,
            );
            let item = &event["entry"][0]["changes"][0]["value"]["statuses"][0];
            assert_eq!(item["status"], name);
            assert_eq!(item["pricing"]["pricing_model"], "PMP");
        }
    }

    fn template_event(
        from: ventana_core::template::TemplateStatus,
        to: ventana_core::template::TemplateStatus,
        reason: Option<&str>,
    ) -> TemplateEventInfo {
        TemplateEventInfo {
            seq: 57,
            template_id: "1689556908129832".into(),
            name: "order_update".into(),
            language: "en_US".into(),
            version: 1,
            from: Some(from),
            to,
            reason: reason.map(str::to_owned),
            at: UnixTime(1751247548),
        }
    }

    fn template_update(event: &TemplateEventInfo) -> Value {
        let name = crate::templates::follow::announced_as(event).unwrap();
        template_status_update(
            &"102290129340398".parse().unwrap(),
            TemplateStatusUpdate::of(event, name),
        )
    }

    #[test]
    fn a_template_approval_is_pinned_by_its_golden_file() {
        use ventana_core::template::TemplateStatus::{Approved, Pending};
        let built = template_update(&template_event(Pending, Approved, None));
        let pinned: Value = serde_json::from_str(include_str!(
            "../../tests/golden/template_status_update.json"
        ))
        .unwrap();
        assert!(
            built == pinned,
            "template_status_update.json differs.\nbuilt:\n{}\npinned:\n{}",
            serde_json::to_string_pretty(&built).unwrap(),
            serde_json::to_string_pretty(&pinned).unwrap()
        );
    }

    #[test]
    fn a_rejection_carries_its_reason_and_a_deletion_a_null_one() {
        use ventana_core::template::TemplateStatus::{Approved, Deleted, Pending, Rejected};
        let rejected = template_update(&template_event(Pending, Rejected, Some("PROMOTIONAL")));
        let value = &rejected["entry"][0]["changes"][0]["value"];
        assert_eq!(value["event"], "REJECTED");
        assert_eq!(value["reason"], "PROMOTIONAL");
        let deleted = template_update(&template_event(Approved, Deleted, None));
        let value = &deleted["entry"][0]["changes"][0]["value"];
        assert_eq!(value["event"], "PENDING_DELETION");
        assert_eq!(value["reason"], Value::Null);
    }
}
