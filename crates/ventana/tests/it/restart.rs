//! A node restart with messages queued for an offline device and webhook events queued for
//! a receiver that is down: nothing is lost, nothing reaches the application twice.

use crate::harness::*;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn a_restart_loses_nothing_queued_and_duplicates_nothing() {
    restart(None).await;
}

#[tokio::test]
async fn a_restart_on_postgresql_loses_nothing_queued_and_duplicates_nothing() {
    let Some(db) = Database::create().await else {
        return;
    };
    restart(Some(&db.url)).await;
}

async fn restart(database_url: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let node_dir = tmp.path().join("node");
    let node = Node::start_on(&node_dir, database_url).await;
    let mut shop = Business::create(&node, "1201", "2201", "15550001201", false).await;
    let fay = Device::register(&node, &tmp.path().join("fay"), "34600000021", "Fay").await;
    let question = fay.send(&shop.number, "where is my parcel?").await;
    shop.next_message().await;
    let phone = fay.phone.clone();
    fay.disconnect().await;

    // The receiver goes down; the device is offline; the business keeps sending.
    shop.receiver.fail_next(u32::MAX);
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, response) = shop.send_text(&node, &phone, &format!("update {i}")).await;
        assert_eq!(status, 200, "{response}");
        ids.push(response["messages"][0]["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.stop().await;

    // Restart on the same store; the receiver comes back; the device reconnects.
    let node = Node::start_on(&node_dir, database_url).await;
    shop.receiver.fail_next(0);
    let mut fay = Device::connect(&node, &tmp.path().join("fay"), &phone).await;
    for (i, id) in ids.iter().enumerate() {
        let (meta, payload) = fay.next_message().await;
        assert_eq!(meta.id.as_str(), id);
        assert_eq!(text_of(&payload), format!("update {i}"));
    }
    fay.expect_silence(Duration::from_millis(500)).await;
    let inbound = fay
        .history()
        .await
        .iter()
        .filter(|m| m.direction == ventana_store::endpoint::Direction::Inbound)
        .count();
    assert_eq!(inbound, 3, "each message is in the device's history once");

    // Every queued event arrives, each under its stable id: `sent` for the three (queued
    // while the receiver was down) and `delivered` once the device got them.
    let mut seen: HashMap<String, u32> = HashMap::new();
    let expected: Vec<String> = ids
        .iter()
        .flat_map(|id| [format!("{id}.sent"), format!("{id}.delivered")])
        .collect();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !expected.iter().all(|e| seen.contains_key(e)) {
            let (_, delivery) = shop.next_event().await;
            *seen.entry(delivery.event_id.unwrap()).or_default() += 1;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("missing events; got {seen:?}"));
    assert!(
        seen.values().all(|n| *n == 1),
        "an event was delivered twice: {seen:?}"
    );
    assert!(
        !seen.contains_key(question.id.as_str()),
        "the first inbound event was already delivered before"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_webhook_is_retried_until_the_receiver_accepts_it_under_the_same_id() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let mut shop = Business::create(&node, "1202", "2202", "15550001202", false).await;
    shop.receiver.fail_next(2);
    let gil = Device::register(&node, &tmp.path().join("gil"), "34600000022", "Gil").await;
    let sent = gil.send(&shop.number, "hello?").await;
    let (value, delivery) = shop.next_event().await;
    assert_eq!(value["messages"][0]["id"], sent.id.as_str());
    assert_eq!(delivery.event_id, Some(format!("34600000022.{}", sent.id)));
    node.stop().await;
}

/// More envelopes queued than any buffer between relay and device holds, for a device that
/// must look its peer up (a request to the relay) while working through them: the relay's
/// flow-control window keeps the link readable, and every message arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backlog_arrives_whole_and_once() {
    const MESSAGES: usize = 1500;
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let mut shop = Business::create(&node, "1203", "2203", "15550001203", false).await;
    let phone_a = Device::register(&node, &tmp.path().join("jo-phone"), "34600000023", "Jo").await;
    phone_a.send(&shop.number, "send me everything").await;
    shop.next_message().await;
    // Jo's second device, offline: the shop's first message to it starts a new session, and
    // opening it needs a device lookup at the relay in the middle of the backlog.
    let laptop_dir = tmp.path().join("jo-laptop");
    let laptop = Device::register(&node, &laptop_dir, "34600000023", "Jo").await;
    let phone = laptop.phone.clone();
    laptop.disconnect().await;
    phone_a.disconnect().await;

    let shop = std::sync::Arc::new(shop);
    let node = std::sync::Arc::new(node);
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(50) {
        let sends = chunk.iter().map(|i| {
            let (shop, node, phone, i) = (shop.clone(), node.clone(), phone.clone(), *i);
            tokio::spawn(async move { shop.send_text(&node, &phone, &format!("n{i}")).await })
        });
        for joined in futures_util::future::join_all(sends).await {
            let (status, body) = joined.unwrap();
            assert_eq!(status, 200, "{body}");
        }
    }
    let mut laptop = Device::connect(&node, &laptop_dir, &phone).await;
    let mut texts = std::collections::HashSet::new();
    for _ in 0..MESSAGES {
        let (_, payload) = laptop.next_message().await;
        assert!(
            texts.insert(text_of(&payload).to_owned()),
            "duplicate {}",
            text_of(&payload)
        );
    }
    laptop.expect_silence(Duration::from_millis(300)).await;
}
