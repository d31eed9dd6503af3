//! Sending approved templates through the Cloud API: outside the window, with the Cloud API's
//! refusals, still under contact-first and blocking, and with only the parameters encrypted.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;
use ventana_core::PhoneNumber;
use ventana_core::payload::Content;
use ventana_core::rules::EnvelopeKind;
use ventana_core::template::Category;

/// A shipping confirmation: a text header with one variable, a body with two, a footer, a
/// quick reply and a URL button with a suffix.
pub(crate) fn shipping_confirmation() -> Value {
    json!({
        "name": "shipping_confirmation",
        "language": "en_US",
        "category": "UTILITY",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Order {{1}} shipped",
             "example": {"header_text": ["A-1001"]}},
            {"type": "BODY",
             "text": "Hi {{1}}, your order is on its way and should arrive by {{2}}. Thank you for shopping with us.",
             "example": {"body_text": [["Ana", "Friday"]]}},
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {"type": "BUTTONS", "buttons": [
                {"type": "QUICK_REPLY", "text": "Track order"},
                {"type": "URL", "text": "Details", "url": "https://shop.example/orders/{{1}}",
                 "example": ["https://shop.example/orders/A-1001"]}
            ]}
        ]
    })
}

/// A send of [`shipping_confirmation`] to `to`, as the official SDKs write it.
pub(crate) fn shipping_send(to: &PhoneNumber, order: &str, name: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": format!("+{to}"),
        "type": "template",
        "template": {
            "name": "shipping_confirmation",
            "language": {"code": "en_US", "policy": "deterministic"},
            "components": [
                {"type": "header", "parameters": [{"type": "text", "text": order}]},
                {"type": "body", "parameters": [
                    {"type": "text", "text": name},
                    {"type": "date_time", "date_time": {"fallback_value": "Friday, 4 December"}}
                ]},
                {"type": "button", "sub_type": "quick_reply", "index": "0",
                 "parameters": [{"type": "payload", "payload": format!("TRACK-{order}")}]},
                {"type": "button", "sub_type": "url", "index": 1,
                 "parameters": [{"type": "text", "text": order}]}
            ]
        }
    })
}

/// A GET on the Cloud API with the business's token.
pub(crate) async fn api_get(node: &Node, token: &str, path: &str) -> (u16, Value) {
    let response = node
        .http
        .get(format!("{}{path}", node.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Submits `definition` for `waba` and has the operator approve it; returns its id.
pub(crate) async fn approved_template(
    node: &Node,
    shop: &Business,
    waba: &str,
    definition: Value,
) -> String {
    let (status, created) = node
        .api_raw(
            &format!("/v23.0/{waba}/message_templates"),
            Some(&shop.token),
            definition.to_string(),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["status"], "PENDING", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    review(node, &id, "approve", None).await;
    id
}

/// An operator's review decision through the relay's admin API.
pub(crate) async fn review(node: &Node, id: &str, action: &str, reason: Option<&str>) {
    let (status, body) = node
        .admin(
            reqwest::Method::POST,
            &format!("/relay/v1/admin/templates/{id}/{action}"),
            Some(json!({ "reason": reason, "by": "test" })),
        )
        .await;
    assert_eq!(status, 200, "{action} {id}: {body}");
}

pub(crate) async fn send(node: &Node, shop: &Business, request: &Value) -> (u16, Value) {
    node.api_raw(
        &format!("/v23.0/{}/messages", shop.phone_number_id),
        Some(&shop.token),
        request.to_string(),
    )
    .await
}

fn error_code(body: &Value) -> i64 {
    body["error"]["code"].as_i64().unwrap_or_default()
}

#[tokio::test]
async fn an_approved_template_reaches_the_user_outside_the_window_with_its_header_in_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let node_dir = tmp.path().join("node");
    let node = Node::start(&node_dir).await;
    outside_the_window(&node, tmp.path(), "3101").await;
    node.stop().await;

    // The relay keeps the template's name in clear, never its parameters.
    let bytes: Vec<u8> = std::fs::read_dir(&node_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("relay.db")
        })
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("shipping_confirmation"));
    assert!(
        !contains("ORD-77311"),
        "a parameter reached the relay's store"
    );
    assert!(
        !contains("Dolores"),
        "a parameter reached the relay's store"
    );
}

#[tokio::test]
async fn an_approved_template_reaches_the_user_outside_the_window_on_postgresql_too() {
    let Some(db) = Database::create().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_on(&tmp.path().join("node"), Some(&db.url)).await;
    outside_the_window(&node, tmp.path(), "3102").await;
    node.stop().await;
}

async fn outside_the_window(node: &Node, tmp: &std::path::Path, waba: &str) {
    let phone_number_id = format!("4{waba}");
    let mut shop = Business::create(
        node,
        waba,
        &phone_number_id,
        &format!("1555000{waba}"),
        true,
    )
    .await;
    let mut dolores = Device::register(
        node,
        &tmp.join("dolores"),
        &format!("3460000{waba}"),
        "Dolores",
    )
    .await;
    let template_id = approved_template(node, &shop, waba, shipping_confirmation()).await;

    dolores.send(&shop.number, "where is my order?").await;
    shop.next_message().await;
    let (status, _) = node.advance_clock(waba, 25 * 3600).await;
    assert_eq!(status, 200);
    let (status, refused) = shop
        .send_text(node, &dolores.phone, "It ships tomorrow")
        .await;
    assert_eq!((status, error_code(&refused)), (400, 131047), "{refused}");

    let (status, sent) = send(
        node,
        &shop,
        &shipping_send(&dolores.phone, "ORD-77311", "Dolores"),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["messages"][0]["message_status"], "accepted");
    let id = sent["messages"][0]["id"].as_str().unwrap().to_owned();

    let (meta, payload) = dolores.next_message().await;
    assert_eq!(meta.id.as_str(), id);
    assert_eq!(meta.kind, EnvelopeKind::Template);
    let header = meta.template.clone().expect("a clear template header");
    assert_eq!(header.id, template_id);
    assert_eq!(
        (
            header.name.as_str(),
            header.language.as_str(),
            header.version,
            header.category
        ),
        ("shipping_confirmation", "en_US", 1, Category::Utility)
    );
    assert_eq!(payload.header.template.as_ref(), Some(&header));
    let Content::Template { values } = &payload.content else {
        panic!("expected a template, got {:?}", payload.content);
    };
    assert_eq!(values.body, ["Dolores", "Friday, 4 December"]);
    let values = serde_json::to_value(values).unwrap();
    assert_eq!(values["header"]["text"], "ORD-77311");
    assert_eq!(values["buttons"][0]["payload"], "TRACK-ORD-77311");
    assert_eq!(values["buttons"][1]["url_suffix"], "ORD-77311");

    shop.wait_status(&id, "sent").await;
    shop.wait_status(&id, "delivered").await;

    // A tap on the quick reply comes back to the business as the Cloud API's `button` message.
    let tapped = dolores
        .endpoint
        .tap_button(
            &shop.number,
            &meta.id,
            0,
            &ventana_client::device::UserDevice::default(),
        )
        .await
        .unwrap();
    let value = shop.next_message().await;
    let message = &value["messages"][0];
    assert_eq!(message["id"], tapped.sent.id.as_str());
    assert_eq!(message["type"], "button");
    assert_eq!(
        message["button"],
        json!({"payload": "TRACK-ORD-77311", "text": "Track order"})
    );
    assert_eq!(message["context"]["id"], id.as_str());
}

#[tokio::test]
async fn template_sends_are_refused_with_the_cloud_api_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let waba = "3103";
    let shop = Business::create(&node, waba, "43103", "15550003103", true).await;
    let eva = Device::register(&node, &tmp.path().join("eva"), "34600003103", "Eva").await;
    eva.send(&shop.number, "hello").await;
    let to = eva.phone.clone();

    // Not yet approved, or not at all: 132001 with HTTP 404.
    let (status, created) = node
        .api_raw(
            &format!("/v23.0/{waba}/message_templates"),
            Some(&shop.token),
            shipping_confirmation().to_string(),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, body) = send(&node, &shop, &shipping_send(&to, "A-1", "Eva")).await;
    assert_eq!((status, error_code(&body)), (404, 132001), "{body}");
    let mut other_language = shipping_send(&to, "A-1", "Eva");
    review(&node, &id, "approve", None).await;
    other_language["template"]["language"]["code"] = "es_ES".into();
    let (status, body) = send(&node, &shop, &other_language).await;
    assert_eq!((status, error_code(&body)), (404, 132001), "{body}");
    let mut unknown = shipping_send(&to, "A-1", "Eva");
    unknown["template"]["name"] = "no_such_template".into();
    let (status, body) = send(&node, &shop, &unknown).await;
    assert_eq!((status, error_code(&body)), (404, 132001), "{body}");

    // Parameters that do not fit: 132000 (count), 132012 (format), 131008 (missing field).
    let mut short = shipping_send(&to, "A-1", "Eva");
    short["template"]["components"][1]["parameters"]
        .as_array_mut()
        .unwrap()
        .pop();
    let (status, body) = send(&node, &shop, &short).await;
    assert_eq!((status, error_code(&body)), (400, 132000), "{body}");
    let mut media_for_text = shipping_send(&to, "A-1", "Eva");
    media_for_text["template"]["components"][0]["parameters"] =
        json!([{"type": "image", "image": {"link": "https://shop.example/a.png"}}]);
    let (status, body) = send(&node, &shop, &media_for_text).await;
    assert_eq!((status, error_code(&body)), (400, 132012), "{body}");
    let mut no_language = shipping_send(&to, "A-1", "Eva");
    no_language["template"]
        .as_object_mut()
        .unwrap()
        .remove("language");
    let (status, body) = send(&node, &shop, &no_language).await;
    assert_eq!((status, error_code(&body)), (400, 131008), "{body}");
    assert!(
        body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("language")
    );

    // Component types in capitals and button indexes as numbers, as some SDKs send them.
    let mut capitals = shipping_send(&to, "A-2", "Eva");
    for component in capitals["template"]["components"].as_array_mut().unwrap() {
        let kind = component["type"].as_str().unwrap().to_uppercase();
        component["type"] = kind.into();
    }
    capitals["template"]["components"][2]["index"] = 0.into();
    let (status, body) = send(&node, &shop, &capitals).await;
    assert_eq!(status, 200, "{body}");

    // Paused: 132015; reinstated, it sends; disabled: 132016.
    review(&node, &id, "pause", Some("quality")).await;
    let (status, body) = send(&node, &shop, &shipping_send(&to, "A-3", "Eva")).await;
    assert_eq!((status, error_code(&body)), (400, 132015), "{body}");
    review(&node, &id, "approve", None).await;
    let (status, body) = send(&node, &shop, &shipping_send(&to, "A-4", "Eva")).await;
    assert_eq!(status, 200, "{body}");
    review(&node, &id, "disable", Some("policy")).await;
    let (status, body) = send(&node, &shop, &shipping_send(&to, "A-5", "Eva")).await;
    assert_eq!((status, error_code(&body)), (400, 132016), "{body}");
    node.stop().await;
}

#[tokio::test]
async fn templates_still_obey_contact_first_and_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let waba = "3104";
    let shop = Business::create(&node, waba, "43104", "15550003104", true).await;
    approved_template(&node, &shop, waba, shipping_confirmation()).await;
    let mut fede = Device::register(&node, &tmp.path().join("fede"), "34600003104", "Fede").await;

    let (status, body) = send(&node, &shop, &shipping_send(&fede.phone, "B-1", "Fede")).await;
    assert_eq!((status, error_code(&body)), (400, 131026), "{body}");
    fede.expect_silence(Duration::from_millis(300)).await;

    fede.send(&shop.number, "hi").await;
    fede.endpoint.set_blocked(&shop.number, true).await.unwrap();
    let (status, body) = send(&node, &shop, &shipping_send(&fede.phone, "B-2", "Fede")).await;
    assert_eq!((status, error_code(&body)), (400, 131026), "{body}");
    fede.expect_silence(Duration::from_millis(300)).await;

    fede.endpoint
        .set_blocked(&shop.number, false)
        .await
        .unwrap();
    let (status, body) = send(&node, &shop, &shipping_send(&fede.phone, "B-3", "Fede")).await;
    assert_eq!(status, 200, "{body}");
    let (meta, _) = fede.next_message().await;
    assert_eq!(meta.kind, EnvelopeKind::Template);
    node.stop().await;
}

#[tokio::test]
async fn an_edit_is_a_new_version_and_each_message_names_the_version_it_was_sent_with() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let waba = "3105";
    let shop = Business::create(&node, waba, "43105", "15550003105", true).await;
    let mut mia = Device::register(&node, &tmp.path().join("mia"), "34600003105", "Mia").await;
    let id = approved_template(&node, &shop, waba, shipping_confirmation()).await;
    mia.send(&shop.number, "hi").await;

    let (status, body) = send(&node, &shop, &shipping_send(&mia.phone, "H-1", "Mia")).await;
    assert_eq!(status, 200, "{body}");
    let (first, _) = mia.next_message().await;
    assert_eq!(first.template.as_ref().unwrap().version, 1);

    let mut edit = shipping_confirmation();
    edit["components"][2]["text"] = "Questions? Just reply".into();
    let edit = json!({ "components": edit["components"] });
    let (status, body) = node
        .api_raw(&format!("/v23.0/{id}"), Some(&shop.token), edit.to_string())
        .await;
    assert_eq!((status, &body), (200, &json!({"success": true})));
    // The new version waits for review, and the template with it.
    let (status, body) = send(&node, &shop, &shipping_send(&mia.phone, "H-2", "Mia")).await;
    assert_eq!((status, error_code(&body)), (404, 132001), "{body}");
    review(&node, &id, "approve", None).await;
    let (status, body) = send(&node, &shop, &shipping_send(&mia.phone, "H-3", "Mia")).await;
    assert_eq!(status, 200, "{body}");
    let (second, _) = mia.next_message().await;
    let header = second.template.unwrap();
    assert_eq!((header.id.as_str(), header.version), (id.as_str(), 2));
    node.stop().await;
}
