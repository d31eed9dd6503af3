//! The success bodies of the business API, in the exact shapes SDKs read.

use serde_json::{Map, Value, json};
use ventana_core::protocol::TemplateInfo;
use ventana_core::template::TemplateStatus;
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

/// The answer to a send with Ventana's `dry_run` extension that would go through: the send's
/// `contacts`, no `messages` (nothing was sent), and `dry_run`: how the message would be
/// priced were it delivered now, with the rate and amount as exact decimals (`null` pricing
/// when nothing prices it).
pub(crate) fn dry_run(
    input: &str,
    wa_id: &PhoneNumber,
    quote: Option<&ventana_core::pricing::PriceQuote>,
) -> Value {
    let priced = quote.map(|q| {
        let money = |minor: i64| ventana_core::pricing::Amount(minor).display(q.precision);
        let mut pricing = json!({
            "billable": q.pricing.billable,
            "pricing_model": q.pricing.model.webhook_name(),
            "category": q.pricing.category.as_str(),
            "type": q.pricing.pricing_type.as_str(),
        });
        if let Some(c) = &q.pricing.conversation {
            pricing["conversation"] = json!({
                "id": c.id,
                "origin": { "type": c.origin.as_str() },
                "expiration_timestamp": c.expires_at.0.to_string(),
            });
        }
        json!({
            "pricing": pricing,
            "model": q.pricing.model.as_str(),
            "rate": money(q.rate),
            "amount": money(q.amount),
            "currency": q.currency,
            "policy_version": q.policy_version,
        })
    });
    let mut dry_run = json!({ "would_send": true });
    if let Some(Value::Object(priced)) = priced {
        if let Value::Object(out) = &mut dry_run {
            out.extend(priced);
        }
    } else {
        dry_run["pricing"] = Value::Null;
    }
    json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": input, "wa_id": wa_id.digits() }],
        "dry_run": dry_run,
    })
}

/// The answer to a send with Ventana's `schedule` extension: the send's usual shape, with
/// `message_status: "scheduled"` and the id the message will carry, plus the schedule.
pub(crate) fn scheduled(
    input: &str,
    wa_id: &PhoneNumber,
    schedule: &ventana_store::schedule::ScheduleRecord,
) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": input, "wa_id": wa_id.digits() }],
        "messages": [{ "id": schedule.id.as_str(), "message_status": "scheduled" }],
        "schedule": { "id": schedule.id.as_str(), "send_at": schedule.send_at.to_rfc3339() },
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

/// The answer to `POST /{waba_id}/message_templates`: the new template's id, and its status
/// and category as they stand after the platform's automatic review.
pub(crate) fn template_created(template: &TemplateInfo) -> Value {
    json!({
        "id": template.id,
        "status": template.status.as_str(),
        "category": template.category.as_str(),
    })
}

/// The fields of a template a request may name in `fields=`. `id` is always returned.
pub(crate) const TEMPLATE_FIELDS: [&str; 8] = [
    "id",
    "name",
    "language",
    "status",
    "category",
    "parameter_format",
    "components",
    "rejected_reason",
];

/// What `GET /{waba_id}/message_templates` returns of each template without `fields=`.
const LISTED_FIELDS: [&str; 7] = [
    "name",
    "parameter_format",
    "components",
    "language",
    "status",
    "category",
    "id",
];

/// A template as Graph returns it: the fields named in `fields` (and `id`), or by default
/// those a listing shows, plus `rejected_reason` when `single` (`GET /{template_id}`) and the
/// template is rejected. `rejected_reason` is `NONE` for a template that is not rejected, as
/// Meta writes it.
pub(crate) fn template(template: &TemplateInfo, fields: Option<&[String]>, single: bool) -> Value {
    let rejected = template.status == TemplateStatus::Rejected;
    let wanted = |field: &str| match fields {
        Some(named) => field == "id" || named.iter().any(|n| n == field),
        None => {
            LISTED_FIELDS.contains(&field) || (field == "rejected_reason" && single && rejected)
        }
    };
    let mut object = Map::new();
    for field in TEMPLATE_FIELDS.into_iter().filter(|f| wanted(f)) {
        let value: Value = match field {
            "id" => template.id.as_str().into(),
            "name" => template.name.as_str().into(),
            "language" => template.language.as_str().into(),
            "status" => template.status.as_str().into(),
            "category" => template.category.as_str().into(),
            "parameter_format" => template.parameter_format.as_str().into(),
            "components" => template.components.clone(),
            _ => match (&template.reason, rejected) {
                (Some(reason), true) => reason.as_str().into(),
                _ => "NONE".into(),
            },
        };
        object.insert(field.to_owned(), value);
    }
    Value::Object(object)
}

/// Where a page of a listing lies: Graph's `paging`. The cursors name the first and last
/// item of the page; `previous` and `next` are full URLs, present only when more lies that
/// way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paging {
    pub(crate) before: String,
    pub(crate) after: String,
    pub(crate) previous: Option<String>,
    pub(crate) next: Option<String>,
}

/// A page of a Graph listing: `{"data":[…],"paging":{…}}`. An empty page has no `paging`,
/// as Graph writes it.
pub(crate) fn listing(data: Vec<Value>, paging: Option<Paging>) -> Value {
    let mut body = json!({ "data": data });
    if let Some(paging) = paging {
        let mut links = json!({
            "cursors": { "before": paging.before, "after": paging.after },
        });
        if let Some(previous) = paging.previous {
            links["previous"] = previous.into();
        }
        if let Some(next) = paging.next {
            links["next"] = next.into();
        }
        body["paging"] = links;
    }
    body
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

    fn rejected() -> TemplateInfo {
        TemplateInfo {
            id: "1689556908129832".into(),
            seq: 3,
            name: "order_update".into(),
            language: "en_US".into(),
            category: ventana_core::template::Category::Marketing,
            status: TemplateStatus::Rejected,
            version: 2,
            parameter_format: "POSITIONAL".into(),
            components: json!([{"type": "BODY", "text": "Big sale!"}]),
            reason: Some("PROMOTIONAL".into()),
        }
    }

    #[test]
    fn a_created_template_answers_its_id_status_and_category() {
        assert_eq!(
            template_created(&rejected()),
            json!({"id": "1689556908129832", "status": "REJECTED", "category": "MARKETING"})
        );
    }

    #[test]
    fn one_template_adds_the_rejected_reason_that_a_listing_leaves_out() {
        let single = template(&rejected(), None, true);
        assert_eq!(single["rejected_reason"], "PROMOTIONAL");
        assert_eq!(single["components"][0]["text"], "Big sale!");
        let listed = template(&rejected(), None, false);
        assert!(listed.get("rejected_reason").is_none());
        assert_eq!(listed.as_object().unwrap().len(), 7);
        let approved = TemplateInfo {
            status: TemplateStatus::Approved,
            reason: None,
            ..rejected()
        };
        assert!(
            template(&approved, None, true)
                .get("rejected_reason")
                .is_none()
        );
    }

    #[test]
    fn fields_restrict_a_template_to_those_named_and_its_id() {
        let fields = ["status".to_owned(), "rejected_reason".to_owned()];
        assert_eq!(
            template(&rejected(), Some(&fields), false),
            json!({"id": "1689556908129832", "status": "REJECTED", "rejected_reason": "PROMOTIONAL"})
        );
        let approved = TemplateInfo {
            status: TemplateStatus::Approved,
            ..rejected()
        };
        assert_eq!(
            template(&approved, Some(&fields), false)["rejected_reason"],
            "NONE"
        );
    }
}
