//! Billing through the real path: a free reply inside the window, a utility template inside
//! it, a marketing template outside it charged once however often its delivery is reported,
//! the status webhooks' `pricing` agreeing with the ledger, the month's usage, policy
//! versions, verification (and tampering caught), and what-if re-rating.

use crate::harness::*;
use crate::template_send::{approved_template, send, shipping_confirmation, shipping_send};
use reqwest::Method;
use serde_json::{Value, json};
use ventana_core::MessageId;
use ventana_core::protocol::ReceiptStatus;

/// A marketing template with one variable.
pub(crate) fn winter_sale() -> Value {
    json!({
        "name": "winter_sale",
        "language": "en_US",
        "category": "MARKETING",
        "components": [
            {"type": "BODY",
             "text": "Hello {{1}}, our winter collection is here with new coats, boots and scarves for the whole family.",
             "example": {"body_text": [["Ana"]]}}
        ]
    })
}

pub(crate) fn winter_send(to: &ventana_core::PhoneNumber) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "to": to.digits(),
        "type": "template",
        "template": {
            "name": "winter_sale",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}]
        }
    })
}

/// Every-message pricing for the what-if: marketing at 0.0300, free-form at 0.0010.
const EVERY_MESSAGE: &str = r#"
version = "what-if-every-message"
effective_from = "2030-01-01T00:00:00Z"
model = "every_message"
currency = "USD"
precision = 4

[rates.default]
marketing = "0.0300"
utility = "0.0040"
authentication = "0.0035"
service = "0.0010"
"#;

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The business's month on its clock, and the usage the admin API reports for it.
async fn month_usage(node: &Node, waba: &str) -> (ventana_core::pricing::Month, Value) {
    let (_, clock) = node
        .admin(
            Method::GET,
            &format!("/relay/v1/admin/businesses/{waba}/clock"),
            None,
        )
        .await;
    let month =
        ventana_core::pricing::Month::of(ventana_core::UnixTime(clock["now"].as_i64().unwrap()));
    let (status, usage) = node
        .admin(
            Method::GET,
            &format!("/relay/v1/admin/billing/businesses/{waba}/usage?period={month}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{usage}");
    (month, usage)
}

pub(crate) async fn upload_policy(node: &Node, text: &str) -> (u16, Value) {
    let response = node
        .http
        .post(format!("{}/relay/v1/admin/billing/policies", node.url))
        .bearer_auth(ADMIN_TOKEN)
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

fn pricing_of(status: &Value) -> Value {
    status["statuses"][0]["pricing"].clone()
}

#[tokio::test]
async fn charges_follow_the_window_and_the_category_once_per_message() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    billing(&node, tmp.path(), "7101").await;
    node.stop().await;

    // An edit of one amount in the file is caught by `verify`, at that entry.
    let relay_db = tmp.path().join("node/relay.db");
    let db = rusqlite::Connection::open(&relay_db).unwrap();
    let changed = db
        .execute(
            "UPDATE ledger SET amount = 1 WHERE waba_id = '7101' AND category = 'marketing'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let node = Node::start(&tmp.path().join("node")).await;
    let (status, verified) = node
        .admin(Method::GET, "/relay/v1/admin/billing/verify", None)
        .await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["ok"], false, "{verified}");
    let business = &verified["businesses"][0];
    assert_eq!(business["waba_id"], "7101");
    assert_eq!(business["broken_link"]["seq"], 3, "{verified}");
    assert!(
        business["broken_link"]["reason"]
            .as_str()
            .unwrap()
            .contains("changed"),
        "{verified}"
    );
    node.stop().await;
}

#[tokio::test]
async fn charges_follow_the_window_and_the_category_on_postgresql_too() {
    let Some(db) = Database::create().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_on(&tmp.path().join("node"), Some(&db.url)).await;
    billing(&node, tmp.path(), "7102").await;
    node.stop().await;
}

async fn billing(node: &Node, tmp: &std::path::Path, waba: &str) {
    let mut shop = Business::create(
        node,
        waba,
        &format!("4{waba}"),
        &format!("1555000{waba}"),
        true,
    )
    .await;
    let mut ana = Device::register(node, &tmp.join("ana"), &format!("3460000{waba}"), "Ana").await;
    approved_template(node, &shop, waba, shipping_confirmation()).await;
    approved_template(node, &shop, waba, winter_sale()).await;

    // A fresh node runs the example per-message policy.
    let (status, policies) = node
        .admin(Method::GET, "/relay/v1/admin/billing/policies", None)
        .await;
    assert_eq!(status, 200, "{policies}");
    assert_eq!(policies["in_force"], "example-per-message-2025");

    // Inside the window: a free-form reply and a utility template are free.
    ana.send(&shop.number, "Is my order on its way?").await;
    shop.next_message().await;
    let (status, reply) = shop
        .send_text(node, &ana.phone, "Yes, it ships today")
        .await;
    assert_eq!(status, 200, "{reply}");
    let reply_id = reply["messages"][0]["id"].as_str().unwrap().to_owned();
    let free_service = json!({"billable": false, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"});
    assert_eq!(
        pricing_of(&shop.wait_status(&reply_id, "sent").await),
        free_service
    );
    assert_eq!(
        pricing_of(&shop.wait_status(&reply_id, "delivered").await),
        free_service
    );
    ana.next_message().await;

    let (status, utility) = send(node, &shop, &shipping_send(&ana.phone, "A-1", "Ana")).await;
    assert_eq!(status, 200, "{utility}");
    let utility_id = utility["messages"][0]["id"].as_str().unwrap().to_owned();
    let free_utility = json!({"billable": false, "pricing_model": "PMP", "category": "utility", "type": "free_customer_service"});
    assert_eq!(
        pricing_of(&shop.wait_status(&utility_id, "delivered").await),
        free_utility
    );
    ana.next_message().await;

    // Outside the window, a marketing template is charged: 0.0250 USD on the example card.
    let (status, _) = node.advance_clock(waba, 25 * 3600).await;
    assert_eq!(status, 200);
    let (status, sent) = send(node, &shop, &winter_send(&ana.phone)).await;
    assert_eq!(status, 200, "{sent}");
    let promo_id = sent["messages"][0]["id"].as_str().unwrap().to_owned();
    let charged = json!({"billable": true, "pricing_model": "PMP", "category": "marketing", "type": "regular"});
    assert_eq!(
        pricing_of(&shop.wait_status(&promo_id, "sent").await),
        charged
    );
    assert_eq!(
        pricing_of(&shop.wait_status(&promo_id, "delivered").await),
        charged
    );
    ana.next_message().await;

    // Reported delivered again, and read: the same pricing, and still one charge.
    let promo: MessageId = promo_id.parse().unwrap();
    for receipt in [ReceiptStatus::Delivered, ReceiptStatus::Read] {
        ana.endpoint
            .send_receipt(&shop.number, receipt, vec![promo.clone()])
            .await
            .unwrap();
    }
    assert_eq!(
        pricing_of(&shop.wait_status(&promo_id, "read").await),
        charged
    );

    // Cost previews (`dry_run`): answered as the send would be, with nothing sent or written.
    let mut preview = winter_send(&ana.phone);
    preview["dry_run"] = json!(true);
    let (status, quoted) = send(node, &shop, &preview).await;
    assert_eq!(status, 200, "{quoted}");
    assert!(quoted.get("messages").is_none(), "{quoted}");
    assert_eq!(
        quoted["dry_run"],
        json!({
            "would_send": true,
            "pricing": charged,
            "model": "per_message_2025",
            "rate": "0.0250",
            "amount": "0.0250",
            "currency": "USD",
            "policy_version": "example-per-message-2025",
        })
    );
    let late_text = json!({"messaging_product": "whatsapp", "to": ana.phone.digits(), "type": "text", "text": {"body": "still there?"}, "dry_run": true});
    let (status, refused) = send(node, &shop, &late_text).await;
    assert_eq!(
        (status, refused["error"]["code"].as_i64()),
        (400, Some(131047)),
        "{refused}"
    );
    let mut missing = winter_send(&ana.phone);
    missing["template"]["name"] = json!("summer_sale");
    missing["dry_run"] = json!(true);
    let (status, refused) = send(node, &shop, &missing).await;
    assert_eq!(
        (status, refused["error"]["code"].as_i64()),
        (404, Some(132001)),
        "{refused}"
    );
    preview["dry_run"] = json!("yes");
    let (status, refused) = send(node, &shop, &preview).await;
    assert_eq!(
        (status, refused["error"]["code"].as_i64()),
        (400, Some(100)),
        "{refused}"
    );
    ana.expect_silence(std::time::Duration::from_millis(300))
        .await;

    // The month's usage: three messages, one charged.
    let (month, usage) = month_usage(node, waba).await;
    let usd = &usage["currencies"][0];
    assert_eq!(usd["currency"], "USD");
    assert_eq!(usd["messages"], 3, "{usage}");
    assert_eq!(
        (usd["total"].as_str(), usd["total_minor"].as_i64()),
        (Some("0.0250"), Some(250))
    );
    assert_eq!(
        usd["by_category"]["marketing"],
        json!({"messages": 1, "amount": "0.0250", "amount_minor": 250})
    );
    assert_eq!(usd["by_type"]["free_customer_service"]["messages"], 2);
    assert_eq!(usd["by_country"]["ES"]["messages"], 3);
    assert_eq!(
        usd["lines"],
        json!([{"category": "marketing", "country": "ES", "rate": "0.0250", "messages": 1, "amount": "0.0250", "amount_minor": 250}])
    );
    assert_eq!(usd["policy_versions"], json!(["example-per-message-2025"]));

    // The Cloud API's analytics, from the same ledger.
    let fields = format!(
        "id,pricing_analytics.start({}).end({}).granularity(MONTHLY).dimensions([\"PRICING_CATEGORY\",\"PRICING_TYPE\"])",
        month.start().0,
        month.end().0
    );
    let (status, node_info) = crate::template_send::api_get(
        node,
        &shop.token,
        &format!("/v23.0/{waba}?fields={}", urlencode(&fields)),
    )
    .await;
    assert_eq!(status, 200, "{node_info}");
    assert_eq!(node_info["id"], waba);
    let points = node_info["pricing_analytics"]["data"][0]["data_points"]
        .as_array()
        .unwrap()
        .clone();
    let point = |category: &str| {
        points
            .iter()
            .find(|p| p["pricing_category"] == category)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(point("MARKETING")["volume"], 1, "{node_info}");
    assert_eq!(point("MARKETING")["cost"], 0.025);
    assert_eq!(point("MARKETING")["pricing_type"], "REGULAR");
    assert_eq!(point("UTILITY")["pricing_type"], "FREE_CUSTOMER_SERVICE");
    assert_eq!(point("SERVICE")["cost"], 0.0);
    assert_eq!(point("MARKETING")["start"], month.start().0);
    let (status, refused) = crate::template_send::api_get(
        node,
        &shop.token,
        &format!("/v23.0/{waba}?fields=pricing_analytics.granularity(DAILY)"),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_i64()),
        (400, Some(100)),
        "{refused}"
    );

    // The chain holds and every amount recomputes.
    let (_, verified) = node
        .admin(Method::GET, "/relay/v1/admin/billing/verify", None)
        .await;
    assert_eq!(verified["ok"], true, "{verified}");

    // What if every message were charged: nothing is written, the old total stands.
    let (status, uploaded) = upload_policy(node, EVERY_MESSAGE).await;
    assert_eq!(status, 200, "{uploaded}");
    assert_eq!(uploaded["added"], true);
    let (status, again) = upload_policy(node, EVERY_MESSAGE).await;
    assert_eq!((status, &again["added"]), (200, &json!(false)));
    let (status, clash) = upload_policy(node, &EVERY_MESSAGE.replace("0.0300", "0.0301")).await;
    assert_eq!(status, 409, "{clash}");
    let (status, bad) =
        upload_policy(node, &EVERY_MESSAGE.replace("\"0.0300\"", "\"0.03001\"")).await;
    assert_eq!(status, 400, "{bad}");
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("line 9") && message.contains("rates.default.marketing"),
        "{message}"
    );

    let response = node
        .http
        .post(format!(
            "{}/relay/v1/admin/billing/businesses/{waba}/rerate?period={month}&version=what-if-every-message",
            node.url
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rerated: Value = response.json().await.unwrap();
    assert_eq!(rerated["old_total"], "0.0250", "{rerated}");
    assert_eq!(rerated["new_total"], "0.0350", "{rerated}");
    assert_eq!(
        rerated["by_category"]["service"],
        json!({"messages": 1, "old": "0.0000", "new": "0.0010"})
    );
    let (_, usage_after) = node
        .admin(
            Method::GET,
            &format!("/relay/v1/admin/billing/businesses/{waba}/usage?period={month}"),
            None,
        )
        .await;
    assert_eq!(usage_after["currencies"][0]["total_minor"], 250);
    ana.disconnect().await;
}

async fn text_with(
    node: &Node,
    shop: &Business,
    token: &str,
    to: &ventana_core::PhoneNumber,
    body: &str,
) -> (u16, Value) {
    let request = json!({ "messaging_product": "whatsapp", "to": to.digits(), "type": "text", "text": { "body": body } });
    node.api_raw(
        &format!("/v23.0/{}/messages", shop.phone_number_id),
        Some(token),
        request.to_string(),
    )
    .await
}

#[tokio::test]
async fn a_small_business_replies_by_hand_after_the_window_free_at_a_human_pace() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let waba = "7201";
    let mut shop = Business::create(&node, waba, "47201", "15550007201", true).await;
    let mut ana = Device::register(&node, &tmp.path().join("ana"), "34600007201", "Ana").await;
    let (status, issued) = node
        .admin(
            Method::POST,
            &format!("/admin/v1/businesses/{waba}/tokens"),
            Some(json!({ "label": "counter", "person": "Marta" })),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["person"], "Marta");
    let marta = issued["token"].as_str().unwrap().to_owned();

    ana.send(&shop.number, "Do you still have the blue scarf?")
        .await;
    shop.next_message().await;
    let (status, _) = node.advance_clock(waba, 25 * 3600).await;
    assert_eq!(status, 200);

    // An `api`-tier business: a person's late reply is under the window like any other.
    let (status, refused) = text_with(&node, &shop, &marta, &ana.phone, "Yes, one left").await;
    assert_eq!(
        (status, refused["error"]["code"].as_i64()),
        (400, Some(131047)),
        "{refused}"
    );

    // The operator moves it to the `app` tier, audited.
    let (status, tier) = node
        .admin(
            Method::POST,
            &format!("/relay/v1/admin/businesses/{waba}/tier"),
            Some(
                json!({ "tier": "app", "by": "test", "reason": "a corner shop answering by hand" }),
            ),
        )
        .await;
    assert_eq!(status, 200, "{tier}");
    assert_eq!(
        (tier["tier"].as_str(), tier["changed"].as_bool()),
        (Some("app"), Some(true))
    );
    let event = &tier["events"][0];
    assert_eq!(
        (
            event["previous"].as_str(),
            event["tier"].as_str(),
            event["actor"].as_str()
        ),
        (Some("api"), Some("app"), Some("operator:test"))
    );

    // The business's software still may not: the API token's late free-form send is refused.
    let (status, refused) = shop
        .send_text(&node, &ana.phone, "Automated follow-up")
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_i64()),
        (400, Some(131047)),
        "{refused}"
    );

    // Marta's reply by hand goes through, free, and is marked manual in the ledger.
    let (status, sent) =
        text_with(&node, &shop, &marta, &ana.phone, "Yes, one left in blue!").await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["messages"][0]["id"].as_str().unwrap().to_owned();
    let (meta, payload) = ana.next_message().await;
    assert_eq!(
        (meta.id.as_str(), text_of(&payload)),
        (id.as_str(), "Yes, one left in blue!")
    );
    let delivered = shop.wait_status(&id, "delivered").await;
    assert_eq!(
        delivered["statuses"][0]["pricing"],
        json!({"billable": false, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"})
    );

    // Faster than a person types: refused with the Cloud API's rate-limit code.
    let (status, burst) =
        text_with(&node, &shop, &marta, &ana.phone, "Shall I keep it for you?").await;
    assert_eq!(
        (status, burst["error"]["code"].as_i64()),
        (429, Some(130429)),
        "{burst}"
    );
    let details = burst["error"]["error_data"]["details"].as_str().unwrap();
    assert!(
        details.contains("by hand") && details.contains("retry in"),
        "{details}"
    );

    // A few seconds later (on the business's clock), the next one is fine.
    node.advance_clock(waba, 5).await;
    let (status, later) =
        text_with(&node, &shop, &marta, &ana.phone, "Shall I keep it for you?").await;
    assert_eq!(status, 200, "{later}");
    let later_id = later["messages"][0]["id"].as_str().unwrap().to_owned();
    shop.wait_status(&later_id, "delivered").await;

    let (_, usage) = month_usage(&node, waba).await;
    let usd = &usage["currencies"][0];
    assert_eq!(
        usd["by_type"]["manual"],
        json!({"messages": 2, "amount": "0.0000", "amount_minor": 0}),
        "{usage}"
    );
    assert_eq!(usd["total_minor"], 0);
    let (_, verified) = node
        .admin(Method::GET, "/relay/v1/admin/billing/verify", None)
        .await;
    assert_eq!(verified["ok"], true, "{verified}");
    ana.disconnect().await;
    node.stop().await;
}
