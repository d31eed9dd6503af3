//! Contact-first, blocking, and the 24-hour window on the sandbox test clock.

use crate::harness::*;
use std::time::Duration;

#[tokio::test]
async fn a_business_cannot_message_a_user_who_never_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let shop = Business::create(&node, "1101", "2101", "15550001101", false).await;
    let mut ben = Device::register(&node, &tmp.path().join("ben"), "34600000011", "Ben").await;

    let (status, error) = shop.send_text(&node, &ben.phone, "Special offer!").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], 131026);
    assert!(
        error["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("never messaged")
    );
    assert!(error["error"]["fbtrace_id"].is_string());
    ben.expect_silence(Duration::from_millis(300)).await;

    // Once the user has written, the relationship exists.
    ben.send(&shop.number, "hi").await;
    let (status, _) = shop.send_text(&node, &ben.phone, "Hello Ben").await;
    assert_eq!(status, 200);
    assert_eq!(
        crate::harness::text_of(&ben.next_message().await.1),
        "Hello Ben"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_user_who_blocked_a_business_receives_nothing_until_unblocking() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let mut shop = Business::create(&node, "1102", "2102", "15550001102", false).await;
    let mut cai = Device::register(&node, &tmp.path().join("cai"), "34600000012", "Cai").await;
    cai.send(&shop.number, "hello").await;
    shop.next_message().await;

    cai.endpoint.set_blocked(&shop.number, true).await.unwrap();
    let (status, error) = shop.send_text(&node, &cai.phone, "are you there?").await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], 131026);
    cai.expect_silence(Duration::from_millis(300)).await;

    cai.endpoint.set_blocked(&shop.number, false).await.unwrap();
    let (status, _) = shop.send_text(&node, &cai.phone, "welcome back").await;
    assert_eq!(status, 200);
    assert_eq!(text_of(&cai.next_message().await.1), "welcome back");
    node.stop().await;
}

#[tokio::test]
async fn the_window_expires_on_the_test_clock_and_a_new_user_message_reopens_it() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let mut shop = Business::create(&node, "1103", "2103", "15550001103", true).await;
    let mut dee = Device::register(&node, &tmp.path().join("dee"), "34600000013", "Dee").await;
    dee.send(&shop.number, "my order?").await;
    let first = shop.next_message().await;
    let first_ts: i64 = first["messages"][0]["timestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // 23 hours later the window is still open.
    let (status, clock) = node.advance_clock("1103", 23 * 3600).await;
    assert_eq!(status, 200, "{clock}");
    let (status, still) = shop.send_text(&node, &dee.phone, "still here").await;
    assert_eq!(status, 200);
    dee.next_message().await;
    shop.wait_status(still["messages"][0]["id"].as_str().unwrap(), "delivered")
        .await;

    // Past 24 hours a free-form message is refused synchronously with 131047.
    node.advance_clock("1103", 3600).await;
    let (status, error) = shop.send_text(&node, &dee.phone, "too late").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], 131047);
    assert_eq!(error["error"]["message"], "(#131047) Re-engagement message");
    dee.expect_silence(Duration::from_millis(300)).await;

    // A new message from the user reopens it, stamped on the business's test clock. The
    // refusal above was the API's answer: it queued no `failed` status event.
    dee.send(&shop.number, "hello again").await;
    let (again, _) = shop.next_event().await;
    assert!(again.get("messages").is_some(), "unexpected event {again}");
    let again_ts: i64 = again["messages"][0]["timestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(again_ts >= first_ts + 24 * 3600, "{first_ts} → {again_ts}");
    assert_eq!(
        shop.send_text(&node, &dee.phone, "welcome back").await.0,
        200
    );
    assert_eq!(text_of(&dee.next_message().await.1), "welcome back");
    node.stop().await;
}

#[tokio::test]
async fn only_a_sandbox_business_has_a_test_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let _shop = Business::create(&node, "1104", "2104", "15550001104", false).await;
    let (status, error) = node.advance_clock("1104", 3600).await;
    assert_eq!(status, 409, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sandbox")
    );
    node.stop().await;
}

#[tokio::test]
async fn nobody_registers_a_number_without_its_code() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let http = reqwest::Client::new();
    let phone: ventana_core::PhoneNumber = "34600000014".parse().unwrap();
    let store =
        ventana_store::sqlite::SqliteEndpointStore::open(&tmp.path().join("eve.db")).unwrap();
    let sealer = ventana_crypto::Sealer::new(ventana_crypto::SealKey::generate());
    let attempt = |code: &str| {
        ventana_client::registration::register(
            &http,
            &node.url,
            &phone,
            "Eve",
            ventana_client::registration::Proof::Code(code.into()),
            &store,
            &sealer,
        )
    };
    let none_requested = attempt("123456").await.unwrap_err().to_string();
    assert!(none_requested.contains("401"), "{none_requested}");
    ventana_client::registration::request_code(&http, &node.url, &phone)
        .await
        .unwrap();
    let (_, code) = node
        .admin(
            reqwest::Method::GET,
            "/relay/v1/admin/verifications/34600000014",
            None,
        )
        .await;
    let right = code["code"].as_str().unwrap();
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    assert!(
        attempt(wrong)
            .await
            .unwrap_err()
            .to_string()
            .contains("wrong verification code")
    );
    attempt(right).await.unwrap();
    // A code works once.
    assert!(attempt(right).await.is_err());
    node.stop().await;
}
