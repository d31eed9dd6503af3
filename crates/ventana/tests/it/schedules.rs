//! Scheduled sends on the sandbox test clock: fired once, listed, cancelled, kept across a
//! restart, and checked against the rules when they fire.

use crate::harness::*;
use crate::template_send::{
    api_get, approved_template, review, send, shipping_confirmation, shipping_send,
};
use serde_json::{Value, json};
use std::time::Duration;

/// `send_at` for `hours` after the business's current (test) clock.
async fn hours_ahead(node: &Node, waba: &str, hours: i64) -> String {
    let (status, clock) = node
        .admin(
            reqwest::Method::GET,
            &format!("/relay/v1/admin/businesses/{waba}/clock"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{clock}");
    ventana_core::UnixTime(clock["now"].as_i64().unwrap())
        .plus_secs(hours * 3600)
        .to_rfc3339()
}

fn scheduled(mut request: Value, send_at: &str) -> Value {
    request["schedule"] = json!({ "send_at": send_at });
    request
}

async fn schedules(node: &Node, shop: &Business, query: &str) -> Vec<Value> {
    let (status, body) = api_get(
        node,
        &shop.token,
        &format!("/v23.0/{}/schedules{query}", shop.phone_number_id),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

async fn cancel(node: &Node, shop: &Business, id: &str) -> (u16, Value) {
    let response = node
        .http
        .delete(format!(
            "{}/v23.0/{}/schedules?id={id}",
            node.url, shop.phone_number_id
        ))
        .bearer_auth(&shop.token)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_scheduled_template_fires_once_at_its_time_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let node_dir = tmp.path().join("node");
    let node = Node::start(&node_dir).await;
    fires_once(node, &node_dir, None, tmp.path(), "3201").await;
}

#[tokio::test]
async fn a_scheduled_template_fires_once_on_postgresql_too() {
    let Some(db) = Database::create().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node_dir = tmp.path().join("node");
    let node = Node::start_on(&node_dir, Some(&db.url)).await;
    fires_once(node, &node_dir, Some(&db.url), tmp.path(), "3202").await;
}

async fn fires_once(
    node: Node,
    node_dir: &std::path::Path,
    database_url: Option<&str>,
    tmp: &std::path::Path,
    waba: &str,
) {
    let mut shop = Business::create(
        &node,
        waba,
        &format!("4{waba}"),
        &format!("1555000{waba}"),
        true,
    )
    .await;
    let mut gil = Device::register(&node, &tmp.join("gil"), &format!("3460000{waba}"), "Gil").await;
    approved_template(&node, &shop, waba, shipping_confirmation()).await;
    gil.send(&shop.number, "please tell me when it ships").await;
    shop.next_message().await;

    let send_at = hours_ahead(&node, waba, 30).await;
    let request = scheduled(shipping_send(&gil.phone, "C-9", "Gil"), &send_at);
    let (status, body) = send(&node, &shop, &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["message_status"], "scheduled");
    let id = body["messages"][0]["id"].as_str().unwrap().to_owned();
    let listed = schedules(&node, &shop, "").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["state"], "scheduled");
    assert_eq!(listed[0]["send_at"], send_at.as_str());
    assert_eq!(listed[0]["template"]["name"], "shipping_confirmation");
    gil.expect_silence(Duration::from_millis(1500)).await;

    // Durable: a restart keeps it.
    let phone = gil.phone.clone();
    gil.disconnect().await;
    node.stop().await;
    let node = Node::start_on(node_dir, database_url).await;
    let mut gil = Device::connect(&node, &tmp.join("gil"), &phone).await;

    // Past the window and past send_at, on the test clock: it fires, under its id, once.
    node.advance_clock(waba, 29 * 3600).await;
    gil.expect_silence(Duration::from_millis(1500)).await;
    node.advance_clock(waba, 3600).await;
    let (meta, _) = gil.next_message().await;
    assert_eq!(meta.id.as_str(), id);
    shop.wait_status(&id, "sent").await;
    gil.expect_silence(Duration::from_millis(2500)).await;
    let listed = schedules(&node, &shop, "?state=sent").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    node.stop().await;
}

#[tokio::test]
async fn a_cancelled_schedule_never_fires() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let waba = "3203";
    let shop = Business::create(&node, waba, "43203", "15550003203", true).await;
    let mut hana = Device::register(&node, &tmp.path().join("hana"), "34600003203", "Hana").await;
    approved_template(&node, &shop, waba, shipping_confirmation()).await;
    hana.send(&shop.number, "hi").await;

    let send_at = hours_ahead(&node, waba, 2).await;
    let (status, body) = send(
        &node,
        &shop,
        &scheduled(shipping_send(&hana.phone, "D-1", "Hana"), &send_at),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["messages"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = cancel(&node, &shop, &id).await;
    assert_eq!((status, &body), (200, &json!({"success": true})));
    let (status, body) = cancel(&node, &shop, &id).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    let listed = schedules(&node, &shop, "?state=cancelled").await;
    assert_eq!(listed.len(), 1);

    node.advance_clock(waba, 3 * 3600).await;
    hana.expect_silence(Duration::from_millis(2500)).await;
    node.stop().await;
}

#[tokio::test]
async fn a_schedule_checked_at_firing_fails_with_a_status_webhook() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let waba = "3204";
    let mut shop = Business::create(&node, waba, "43204", "15550003204", true).await;
    let mut ines = Device::register(&node, &tmp.path().join("ines"), "34600003204", "Ines").await;
    let mut jon = Device::register(&node, &tmp.path().join("jon"), "34600013204", "Jon").await;
    let template = approved_template(&node, &shop, waba, shipping_confirmation()).await;
    ines.send(&shop.number, "hi").await;
    jon.send(&shop.number, "hi").await;

    let send_at = hours_ahead(&node, waba, 1).await;
    let (_, paused) = send(
        &node,
        &shop,
        &scheduled(shipping_send(&ines.phone, "E-1", "Ines"), &send_at),
    )
    .await;
    let paused = paused["messages"][0]["id"].as_str().unwrap().to_owned();
    let send_at = hours_ahead(&node, waba, 2).await;
    let (_, blocked) = send(
        &node,
        &shop,
        &scheduled(shipping_send(&jon.phone, "E-2", "Jon"), &send_at),
    )
    .await;
    let blocked = blocked["messages"][0]["id"].as_str().unwrap().to_owned();

    review(&node, &template, "pause", Some("low quality")).await;
    node.advance_clock(waba, 3600).await;
    let failed = shop.wait_status(&paused, "failed").await;
    assert_eq!(
        failed["statuses"][0]["errors"][0]["code"], 132015,
        "{failed}"
    );

    review(&node, &template, "approve", None).await;
    jon.endpoint.set_blocked(&shop.number, true).await.unwrap();
    node.advance_clock(waba, 3600).await;
    let failed = shop.wait_status(&blocked, "failed").await;
    assert_eq!(
        failed["statuses"][0]["errors"][0]["code"], 131026,
        "{failed}"
    );

    ines.expect_silence(Duration::from_millis(300)).await;
    jon.expect_silence(Duration::from_millis(300)).await;
    let failed = schedules(&node, &shop, "?state=failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    node.stop().await;
}

#[tokio::test]
async fn a_bad_schedule_is_refused_when_it_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let waba = "3205";
    let shop = Business::create(&node, waba, "43205", "15550003205", true).await;
    let kim = Device::register(&node, &tmp.path().join("kim"), "34600003205", "Kim").await;
    kim.send(&shop.number, "hi").await;
    approved_template(&node, &shop, waba, shipping_confirmation()).await;

    let past = hours_ahead(&node, waba, -1).await;
    let (status, body) = send(
        &node,
        &shop,
        &scheduled(shipping_send(&kim.phone, "F-1", "Kim"), &past),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(100)),
        "{body}"
    );
    let (status, body) = send(
        &node,
        &shop,
        &scheduled(shipping_send(&kim.phone, "F-1", "Kim"), "next tuesday"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(100)),
        "{body}"
    );
    assert!(
        body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("schedule.send_at")
    );
    let mut unknown = shipping_send(&kim.phone, "F-1", "Kim");
    unknown["template"]["name"] = "nothing_like_it".into();
    let later = hours_ahead(&node, waba, 1).await;
    let (status, body) = send(&node, &shop, &scheduled(unknown, &later)).await;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (404, Some(132001)),
        "{body}"
    );
    assert!(schedules(&node, &shop, "").await.is_empty());
    node.stop().await;
}

/// Two nodes on one database: schedules made through either node fire once, from the node
/// that receives for the number, and after that node stops, from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_once_across_two_nodes_and_a_handover() {
    let Some(db) = Database::create().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::start_on(&tmp.path().join("a"), Some(&db.url)).await;
    let second = Node::start_on(&tmp.path().join("b"), Some(&db.url)).await;
    let waba = "3206";
    let mut shop = Business::create(&first, waba, "43206", "15550003206", true).await;
    let mut lia = Device::register(&first, &tmp.path().join("lia"), "34600003206", "Lia").await;
    approved_template(&first, &shop, waba, shipping_confirmation()).await;
    lia.send(&shop.number, "hi").await;
    shop.next_message().await;
    // The second node learns of the number and serves its API.
    tokio::time::timeout(WAIT, async {
        while api_get(&second, &shop.token, "/v23.0/43206").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the second node serves the number");

    let mut ids = Vec::new();
    for (i, node) in [&first, &second, &first, &second].into_iter().enumerate() {
        let send_at = hours_ahead(node, waba, 1 + (i as i64 % 2)).await;
        let request = scheduled(
            shipping_send(&lia.phone, &format!("G-{i}"), "Lia"),
            &send_at,
        );
        let (status, body) = send(node, &shop, &request).await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["messages"][0]["id"].as_str().unwrap().to_owned());
    }
    first.advance_clock(waba, 3600).await;
    let mut arrived = Vec::new();
    for _ in 0..2 {
        arrived.push(lia.next_message().await.0.id.as_str().to_owned());
    }
    lia.expect_silence(Duration::from_millis(2000)).await;

    // The node that received stops; the other takes the number over and fires the rest.
    // (Lia's device was connected to the first node; it reconnects to the second.)
    let phone = lia.phone.clone();
    lia.disconnect().await;
    first.stop().await;
    let mut lia = Device::connect(&second, &tmp.path().join("lia"), &phone).await;
    second.advance_clock(waba, 3600).await;
    // The takeover waits for the second node's ownership round (and, under load, longer).
    for _ in 0..2 {
        let (meta, _) = lia.next_message_within(WAIT * 3).await;
        arrived.push(meta.id.as_str().to_owned());
    }
    lia.expect_silence(Duration::from_millis(2500)).await;
    arrived.sort();
    ids.sort();
    assert_eq!(arrived, ids, "each schedule fired exactly once");
    second.stop().await;
}
