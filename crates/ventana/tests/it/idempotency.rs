//! Idempotent sends (Ventana's `Idempotency-Key`): a retry gets the first answer and the user
//! gets the message once — on the same node, after a restart, and on another node sharing
//! the PostgreSQL database; a key reused for another request, or malformed, is refused.

use crate::harness::*;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::time::Duration;

/// An answer of the messages endpoint: status, headers, body.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn wamid(&self) -> &str {
        self.body["messages"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no message id in {}", self.body))
    }
}

fn text(to: &ventana_core::PhoneNumber, body: &str) -> Value {
    json!({ "messaging_product": "whatsapp", "to": format!("+{to}"), "type": "text", "text": { "body": body } })
}

/// POSTs `body` to the shop's messages endpoint with an `Idempotency-Key` header of `key`
/// (raw bytes, so malformed keys can be sent too).
async fn send(node: &Node, shop: &Business, key: Option<&[u8]>, body: &Value) -> Answer {
    let mut request = node
        .http
        .post(format!(
            "{}/v23.0/{}/messages",
            node.url, shop.phone_number_id
        ))
        .bearer_auth(&shop.token)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes(key).unwrap(),
        );
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.json().await.unwrap_or(Value::Null),
    }
}

/// A node with a business and a user who wrote to it (so the window is open).
async fn conversation(
    node: &Node,
    dir: &std::path::Path,
    waba: &str,
    sandbox: bool,
) -> (Business, Device) {
    let pnid = format!("3{waba}");
    let mut shop = Business::create(node, waba, &pnid, &format!("1555000{waba}"), sandbox).await;
    let user = Device::register(node, &dir.join("user"), &format!("3460000{waba}"), "Ana").await;
    user.send(&shop.number, "hello").await;
    shop.next_message().await;
    (shop, user)
}

#[tokio::test]
async fn the_same_key_twice_sends_once_and_answers_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let (shop, mut user) = conversation(&node, tmp.path(), "4401", false).await;

    let request = text(&user.phone, "Your order has shipped");
    let first = send(&node, &shop, Some(b"order-42-shipped"), &request).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = send(&node, &shop, Some(b"order-42-shipped"), &request).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.wamid(), first.wamid());
    assert_eq!(again.body, first.body);

    // The user's device gets it once, under that id.
    let (meta, payload) = user.next_message().await;
    assert_eq!(meta.id.as_str(), first.wamid());
    assert_eq!(text_of(&payload), "Your order has shipped");
    user.expect_silence(Duration::from_millis(700)).await;

    // The body field does what the header does, and is the same key.
    let mut with_field = request.clone();
    with_field["idempotency_key"] = "order-42-shipped".into();
    let by_field = send(&node, &shop, None, &with_field).await;
    assert_eq!((by_field.status, by_field.wamid()), (200, first.wamid()));
    // A new key is a new message.
    let other = send(&node, &shop, Some(b"order-43-shipped"), &request).await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert_ne!(other.wamid(), first.wamid());
    assert_eq!(user.next_message().await.0.id.as_str(), other.wamid());
    node.stop().await;
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused_with_422() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let (shop, mut user) = conversation(&node, tmp.path(), "4402", false).await;

    let first = send(&node, &shop, Some(b"k-1"), &text(&user.phone, "one")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let reused = send(&node, &shop, Some(b"k-1"), &text(&user.phone, "two")).await;
    assert_eq!(reused.status, 422, "{}", reused.body);
    let error = &reused.body["error"];
    assert_eq!(error["code"], 100);
    assert_eq!(error["type"], "OAuthException");
    let details = error["error_data"]["details"].as_str().unwrap();
    assert!(details.contains("different request"), "{details}");

    assert_eq!(text_of(&user.next_message().await.1), "one");
    user.expect_silence(Duration::from_millis(500)).await;
    node.stop().await;
}

#[tokio::test]
async fn a_retry_after_a_restart_gets_the_first_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let node_dir = tmp.path().join("node");
    let node = Node::start(&node_dir).await;
    let (shop, mut user) = conversation(&node, tmp.path(), "4403", false).await;
    let request = text(&user.phone, "Appointment tomorrow at 10");
    let first = send(&node, &shop, Some(b"reminder-7"), &request).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(user.next_message().await.0.id.as_str(), first.wamid());
    let phone = user.phone.clone();
    user.disconnect().await;
    node.stop().await;

    let node = Node::start(&node_dir).await;
    let again = send(&node, &shop, Some(b"reminder-7"), &request).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, first.body);
    let mut user = Device::connect(&node, &tmp.path().join("user"), &phone).await;
    user.expect_silence(Duration::from_millis(700)).await;
    node.stop().await;
}

#[tokio::test]
async fn a_key_used_on_one_node_is_answered_the_same_on_another() {
    let Some(db) = Database::create().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Node::start_on(&tmp.path().join("a"), Some(&db.url)).await;
    let b = Node::start_on(&tmp.path().join("b"), Some(&db.url)).await;
    let (shop, mut user) = conversation(&a, tmp.path(), "4404", false).await;

    let request = text(&user.phone, "Your table is ready");
    let first = send(&a, &shop, Some(b"table-12"), &request).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let on_b = send(&b, &shop, Some(b"table-12"), &request).await;
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    assert_eq!(on_b.body, first.body);
    let reused = send(&b, &shop, Some(b"table-12"), &text(&user.phone, "other")).await;
    assert_eq!(reused.status, 422, "{}", reused.body);

    assert_eq!(user.next_message().await.0.id.as_str(), first.wamid());
    user.expect_silence(Duration::from_millis(700)).await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_malformed_key_is_refused_with_code_100() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let (shop, mut user) = conversation(&node, tmp.path(), "4405", false).await;
    let request = text(&user.phone, "hi");

    let long = vec![b'k'; 300];
    for bad in [&b""[..], &long[..], "clé".as_bytes(), b"caf\xe9"] {
        let refused = send(&node, &shop, Some(bad), &request).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert_eq!(refused.body["error"]["code"], 100);
        let details = refused.body["error"]["error_data"]["details"]
            .as_str()
            .unwrap();
        assert!(details.contains("Idempotency-Key"), "{details}");
        assert!(details.contains("1 to 255 printable ASCII"), "{details}");
    }
    let mut in_body = request.clone();
    in_body["idempotency_key"] = "naïve".into();
    let refused = send(&node, &shop, None, &in_body).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], 100);
    assert!(
        refused.body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("idempotency_key")
    );
    // Header and body field naming different keys.
    in_body["idempotency_key"] = "one".into();
    let refused = send(&node, &shop, Some(b"two"), &in_body).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("differ")
    );
    // 255 characters is fine.
    let longest = vec![b'k'; 255];
    assert_eq!(
        send(&node, &shop, Some(&longest), &request).await.status,
        200
    );
    user.next_message().await;
    user.expect_silence(Duration::from_millis(300)).await;
    node.stop().await;
}

#[tokio::test]
async fn a_refused_send_is_refused_again_on_retry_even_once_the_window_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let (mut shop, mut user) = conversation(&node, tmp.path(), "4406", true).await;
    node.advance_clock("4406", 25 * 3600).await;

    let request = text(&user.phone, "are you still there?");
    let refused = send(&node, &shop, Some(b"late-1"), &request).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], 131047);

    // The user writes again: the window is open, but the key's answer stands.
    user.send(&shop.number, "yes?").await;
    shop.next_message().await;
    let again = send(&node, &shop, Some(b"late-1"), &request).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(
        again.body, refused.body,
        "the same envelope, trace id included"
    );
    user.expect_silence(Duration::from_millis(500)).await;

    // A new key is a new request, and goes through now.
    let sent = send(&node, &shop, Some(b"late-2"), &request).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(user.next_message().await.0.id.as_str(), sent.wamid());
    node.stop().await;
}

#[tokio::test]
async fn a_scheduled_send_retried_with_its_key_is_scheduled_once() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let (shop, user) = conversation(&node, tmp.path(), "4407", true).await;
    let (status, clock) = node
        .admin(
            reqwest::Method::GET,
            "/relay/v1/admin/businesses/4407/clock",
            None,
        )
        .await;
    assert_eq!(status, 200, "{clock}");
    let send_at = ventana_core::UnixTime(clock["now"].as_i64().unwrap())
        .plus_secs(3600)
        .to_rfc3339();
    let mut request = text(&user.phone, "see you in an hour");
    request["schedule"] = json!({ "send_at": send_at });

    let first = send(&node, &shop, Some(b"remind-1"), &request).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["messages"][0]["message_status"], "scheduled");
    let again = send(&node, &shop, Some(b"remind-1"), &request).await;
    assert_eq!(again.body, first.body);

    let listed: Value = node
        .http
        .get(format!(
            "{}/v23.0/{}/schedules",
            node.url, shop.phone_number_id
        ))
        .bearer_auth(&shop.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [first.wamid()],
        "scheduled once, under the answered id"
    );
    assert!(first.headers.get("retry-after").is_none());
    node.stop().await;
}

/// What the gateway fingerprints: SHA-256 of the body as canonical JSON (serde_json writes
/// object keys sorted).
fn fingerprint(body: &Value) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(body.to_string().as_bytes()).to_vec()
}

#[tokio::test]
async fn a_send_abandoned_by_a_dead_node_is_finished_under_its_id_and_a_live_one_waits() {
    use ventana_store::GatewayStore;
    use ventana_store::idempotency::NewClaim;
    let tmp = tempfile::tempdir().unwrap();
    let node_dir = tmp.path().join("node");
    let node = Node::start(&node_dir).await;
    let (shop, user) = conversation(&node, tmp.path(), "4408", false).await;
    let phone = user.phone.clone();
    user.disconnect().await;
    node.stop().await;

    // While the node is down, its store is left as a node that died mid-send leaves it: one
    // claim past its time (nothing committed), one still live.
    let abandoned = text(&phone, "your refund is on its way");
    let busy = text(&phone, "still working on it");
    let abandoned_id = ventana_core::MessageId::generate();
    let now = ventana_core::UnixTime::now();
    {
        let store =
            ventana_store::sqlite::SqliteEndpointStore::open(&node_dir.join("gateway.db")).unwrap();
        for (key, body, id, until) in [
            (
                "refund-9",
                &abandoned,
                abandoned_id.clone(),
                now.plus_secs(-1),
            ),
            (
                "busy-1",
                &busy,
                ventana_core::MessageId::generate(),
                now.plus_secs(600),
            ),
        ] {
            store
                .claim_idempotency_key(
                    NewClaim {
                        phone_number_id: shop.phone_number_id.parse().unwrap(),
                        key: key.parse().unwrap(),
                        fingerprint: fingerprint(body),
                        message_id: id,
                        claimed_until: until,
                        created_at: now.plus_secs(-40),
                    },
                    ventana_core::UnixTime(0),
                )
                .await
                .unwrap();
        }
    }

    let node = Node::start(&node_dir).await;
    let mut user = Device::connect(&node, &tmp.path().join("user"), &phone).await;
    let finished = send(&node, &shop, Some(b"refund-9"), &abandoned).await;
    assert_eq!(finished.status, 200, "{}", finished.body);
    assert_eq!(finished.wamid(), abandoned_id.as_str());
    let (meta, payload) = user.next_message().await;
    assert_eq!(meta.id, abandoned_id);
    assert_eq!(text_of(&payload), "your refund is on its way");
    let again = send(&node, &shop, Some(b"refund-9"), &abandoned).await;
    assert_eq!(again.body, finished.body);

    let waiting = send(&node, &shop, Some(b"busy-1"), &busy).await;
    assert_eq!(waiting.status, 409, "{}", waiting.body);
    assert_eq!(waiting.body["error"]["code"], 100);
    let retry_after: u64 = waiting.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    user.expect_silence(Duration::from_millis(500)).await;
    node.stop().await;
}
