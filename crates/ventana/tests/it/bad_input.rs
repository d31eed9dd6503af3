//! Bad requests get the Cloud API's error, never a panic or a 500, and change nothing.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

fn assert_graph_error(body: &Value, code: i64) {
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("(#{code})")),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(error["error_data"]["details"].is_string(), "{body}");
    assert!(error["fbtrace_id"].is_string(), "{body}");
}

#[tokio::test]
async fn bad_requests_get_graph_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let mut shop = Business::create(&node, "1301", "2301", "15550001301", false).await;
    let other = Business::create(&node, "1302", "2302", "15550001302", false).await;
    let mut hal = Device::register(&node, &tmp.path().join("hal"), "34600000031", "Hal").await;
    hal.send(&shop.number, "hi").await;
    shop.next_message().await;

    let (status, revoked) = node
        .admin(
            reqwest::Method::POST,
            "/admin/v1/businesses/1301/tokens",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = node
        .admin(
            reqwest::Method::DELETE,
            &format!(
                "/admin/v1/businesses/1301/tokens/{}",
                revoked["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let revoked = revoked["token"].as_str().unwrap();

    let text = |body: &str| {
        json!({ "messaging_product": "whatsapp", "to": "34600000031", "type": "text", "text": { "body": body } }).to_string()
    };
    let path = "/v23.0/2301/messages";
    // (what, path, token, body, HTTP status, Graph code)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, String, u16, i64);
    let cases: Vec<Case> = vec![
        ("malformed JSON", path, Some(&shop.token), "{\"messaging_product\": \"whats".into(), 400, 100),
        ("not an object", path, Some(&shop.token), "[1, 2]".into(), 400, 100),
        ("no messaging_product", path, Some(&shop.token), json!({ "to": "34600000031", "type": "text", "text": { "body": "x" } }).to_string(), 400, 100),
        ("an unknown type", path, Some(&shop.token), json!({ "messaging_product": "whatsapp", "to": "34600000031", "type": "hologram" }).to_string(), 400, 131051),
        ("a type not supported yet", path, Some(&shop.token), json!({ "messaging_product": "whatsapp", "to": "34600000031", "type": "image", "image": { "link": "https://x/y.png" } }).to_string(), 400, 131051),
        ("a body over 4096 characters", path, Some(&shop.token), text(&"é".repeat(4097)), 400, 100),
        ("an empty body", path, Some(&shop.token), text(""), 400, 100),
        ("a malformed recipient", path, Some(&shop.token), json!({ "messaging_product": "whatsapp", "to": "call me", "type": "text", "text": { "body": "x" } }).to_string(), 400, 100),
        ("no token", path, None, text("x"), 401, 190),
        ("a garbage token", path, Some("EAAG-not-a-token"), text("x"), 401, 190),
        ("a revoked token", path, Some(revoked), text("x"), 401, 190),
        ("another business's number", "/v23.0/2302/messages", Some(&shop.token), text("x"), 404, 803),
        ("this number with another business's token", path, Some(&other.token), text("x"), 404, 803),
        ("an unknown number", "/v23.0/9999/messages", Some(&shop.token), text("x"), 404, 803),
        ("an unknown edge", "/v23.0/2301/frobnicate", Some(&shop.token), text("x"), 404, 803),
        ("an oversized request", path, Some(&shop.token), text(&"a".repeat(200_000)), 413, 100),
        ("a read receipt for an unknown message", path, Some(&shop.token), json!({ "messaging_product": "whatsapp", "status": "read", "message_id": "wamid.AAAAAAAAAAAAAAAAAAAAAA" }).to_string(), 400, 100),
    ];
    for (what, path, token, body, status, code) in cases {
        let (got, response) = node.api_raw(path, token, body).await;
        assert_eq!(got, status, "{what}: {response}");
        assert_graph_error(&response, code);
    }
    let too_long = node
        .api_raw(path, Some(&shop.token), text(&"é".repeat(4097)))
        .await
        .1;
    assert!(
        too_long["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("text.body")
    );

    // Nothing reached the user, no status event was queued, and the API still works.
    hal.expect_silence(Duration::from_millis(300)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), shop.hooks.recv())
            .await
            .is_err(),
        "no webhook from refused requests"
    );
    assert_eq!(hal.history().await.len(), 1);
    let (status, _) = shop.send_text(&node, &hal.phone, "still fine").await;
    assert_eq!(status, 200);
    assert_eq!(text_of(&hal.next_message().await.1), "still fine");
    node.stop().await;
}

#[tokio::test]
async fn sdk_forms_of_paths_and_tokens_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let shop = Business::create(&node, "1303", "2303", "15550001303", false).await;
    for path in ["/v17.0/2303", "/2303", "/v23.0/2303/"] {
        let url = format!(
            "{}{path}?fields=id,display_phone_number&access_token={}",
            node.url, shop.token
        );
        let response = node.http.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["id"], "2303");
        assert_eq!(body["display_phone_number"], "+15550001303");
        assert_eq!(body["verified_name"], "Shop 1303");
        assert_eq!(body["quality_rating"], "GREEN");
    }
    let response = node
        .http
        .get(format!("{}/v23.0/2303", node.url))
        .bearer_auth(&shop.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    node.stop().await;
}
