//! A whole conversation through the real path, and what each store holds afterwards.

use crate::harness::*;
use serde_json::json;
use ventana_core::MessageId;
use ventana_store::endpoint::Direction;

#[tokio::test]
async fn a_conversation_goes_both_ways_with_receipts_and_signed_webhooks() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    conversation(node, tmp.path()).await;
}

#[tokio::test]
async fn a_conversation_goes_both_ways_on_postgresql_too() {
    let Some(db) = Database::create().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_on(&tmp.path().join("node"), Some(&db.url)).await;
    conversation(node, tmp.path()).await;
}

async fn conversation(node: Node, tmp: &std::path::Path) {
    let mut shop = Business::create(&node, "1001", "2001", "15550001001", false).await;
    let mut ana = Device::register(&node, &tmp.join("ana"), "34600000001", "Ana Núñez").await;

    // User → business: an inbound-message webhook in the Cloud API envelope.
    let question = "¿Tienen la talla M? 👕";
    let sent = ana.send(&shop.number, question).await;
    assert!(sent.accepted_at.is_some());
    let (value, delivery) = shop.next_event().await;
    assert!(
        delivery.raw.is_ascii(),
        "webhook bodies escape every non-ASCII character"
    );
    assert!(
        std::str::from_utf8(&delivery.raw)
            .unwrap()
            .contains(r"\u00bfTienen")
    );
    assert_eq!(delivery.event["object"], "whatsapp_business_account");
    assert_eq!(delivery.event["entry"][0]["id"], "1001");
    assert_eq!(
        delivery.event["entry"][0]["changes"][0]["field"],
        "messages"
    );
    assert_eq!(delivery.event_id, Some(format!("34600000001.{}", sent.id)));
    assert_eq!(value["messaging_product"], "whatsapp");
    assert_eq!(
        value["metadata"],
        json!({ "display_phone_number": "15550001001", "phone_number_id": "2001" })
    );
    let contact = &value["contacts"][0];
    assert_eq!(contact["profile"]["name"], "Ana Núñez");
    assert_eq!(contact["wa_id"], "34600000001");
    let user_id = contact["user_id"].as_str().unwrap().to_owned();
    assert!(
        user_id.starts_with("ES.") && !user_id.contains("600000001"),
        "{user_id}"
    );
    let message = &value["messages"][0];
    assert_eq!(message["from"], "34600000001");
    assert_eq!(message["id"], sent.id.as_str());
    assert_eq!(message["type"], "text");
    assert_eq!(message["text"]["body"], question);
    assert!(
        message["timestamp"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 1_700_000_000
    );

    // The business's gateway acknowledged delivery back to the device.
    ana.wait_own_status(&sent.id, "delivered").await;

    // Business → user through the API, as a reply.
    let answer = "Sí, en azul y en rojo 🔵🔴";
    let body = json!({ "messaging_product": "whatsapp", "to": "34600000001", "type": "text", "text": { "body": answer }, "context": { "message_id": sent.id } });
    let (status, response) = node
        .api_raw("/v23.0/2001/messages", Some(&shop.token), body.to_string())
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["messaging_product"], "whatsapp");
    assert_eq!(
        response["contacts"][0],
        json!({ "input": "34600000001", "wa_id": "34600000001" })
    );
    let reply_id = response["messages"][0]["id"].as_str().unwrap().to_owned();
    assert!(reply_id.starts_with("wamid."));
    let (meta, payload) = ana.next_message().await;
    assert_eq!(meta.id.as_str(), reply_id);
    assert_eq!(text_of(&payload), answer);
    assert_eq!(payload.reply_to.as_ref(), Some(&sent.id));

    // sent, delivered and (after the user reads it) read statuses, each with contacts.
    let sent_status = shop.wait_status(&reply_id, "sent").await;
    assert_eq!(sent_status["contacts"][0]["user_id"], user_id.as_str());
    assert_eq!(sent_status["statuses"][0]["recipient_id"], "34600000001");
    assert_eq!(
        sent_status["statuses"][0]["pricing"]["pricing_model"],
        "PMP"
    );
    shop.wait_status(&reply_id, "delivered").await;
    let reply: MessageId = reply_id.parse().unwrap();
    ana.endpoint
        .send_receipt(
            &shop.number,
            ventana_core::protocol::ReceiptStatus::Read,
            vec![reply],
        )
        .await
        .unwrap();
    let read = shop.wait_status(&reply_id, "read").await;
    assert_eq!(read["contacts"][0]["profile"]["name"], "Ana Núñez");

    // The business marks the user's question as read: the device sees its message read.
    let mark = json!({ "messaging_product": "whatsapp", "status": "read", "message_id": sent.id });
    let (status, response) = node
        .api_raw("/2001/messages/", Some(&shop.token), mark.to_string())
        .await;
    assert_eq!((status, response), (200, json!({ "success": true })));
    ana.wait_own_status(&sent.id, "read").await;

    // The device's history has both messages, decrypted.
    let history = ana.history().await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].direction, Direction::Outbound);
    assert_eq!(history[1].direction, Direction::Inbound);
    assert_eq!(shop.receiver.rejected(), 0);
    ana.disconnect().await;
    node.stop().await;
}

/// Every file of the relay's store, scanned for every plaintext sent: none is there. The
/// gateway's and the device's stores seal bodies at rest, so they do not show them either.
#[tokio::test]
async fn the_relay_store_holds_no_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let node_dir = tmp.path().join("node");
    let node = Node::start(&node_dir).await;
    let mut shop = Business::create(&node, "1002", "2002", "15550001002", false).await;
    let mut ana = Device::register(&node, &tmp.path().join("ana"), "34600000002", "Ana").await;

    let mut secrets = Vec::new();
    for i in 0..5 {
        let from_user = format!("user-secret-{i}-the-parcel-code-is-8812-{i}");
        ana.send(&shop.number, &from_user).await;
        shop.next_message().await;
        let from_business = format!("business-secret-{i}-your-pin-is-4471-{i}");
        let (status, _) = shop.send_text(&node, &ana.phone, &from_business).await;
        assert_eq!(status, 200);
        ana.next_message().await;
        secrets.push(from_user);
        secrets.push(from_business);
    }
    // Leave one message undelivered so it sits in the relay's queue while we scan.
    ana.disconnect().await;
    let queued = "queued-secret-still-at-the-relay-5531";
    assert_eq!(
        shop.send_text(&node, &"34600000002".parse().unwrap(), queued)
            .await
            .0,
        200
    );
    secrets.push(queued.into());

    let scan = |prefix: &str| {
        let mut files = 0;
        for entry in std::fs::read_dir(&node_dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(prefix)
            {
                files += 1;
                let bytes = std::fs::read(&path).unwrap();
                for secret in &secrets {
                    let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                    assert!(!found, "{} contains {secret:?}", path.display());
                }
            }
        }
        files
    };
    assert!(scan("relay.db") >= 1);
    assert!(scan("gateway.db") >= 1);
    node.stop().await;
    // Once checkpointed and closed, still nothing.
    assert!(scan("relay.db") >= 1);
}

/// Every user who starts a session with a business number claims one of its one-time keys;
/// when few remain the relay says so and the gateway publishes new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_number_replenishes_its_one_time_keys_as_users_claim_them() {
    const USERS: usize = 35;
    let tmp = tempfile::tempdir().unwrap();
    let node_dir = tmp.path().join("node");
    let node = Node::start(&node_dir).await;
    let mut shop = Business::create(&node, "1003", "2003", "15550001003", false).await;
    let relay = ventana_store::sqlite::SqliteRelayStore::open(&node_dir.join("relay.db")).unwrap();
    use ventana_store::RelayStore as _;
    let number = shop.number.clone();
    let count = || relay.one_time_key_count(&number, ventana_core::DeviceId(1));
    assert_eq!(count().await.unwrap(), 50);

    for i in 0..USERS {
        let phone = format!("3460000{i:04}");
        let user = Device::register(&node, &tmp.path().join(&phone), &phone, "User").await;
        user.send(&shop.number, "hello").await;
        shop.next_message().await;
        user.disconnect().await;
    }
    // 35 claimed: 15 left, under the relay's threshold of 20, so the gateway tops back up.
    let topped_up = tokio::time::timeout(WAIT, async {
        loop {
            let n = count().await.unwrap();
            if n >= 40 {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the business number replenishes its one-time keys");
    assert!(topped_up <= 50, "{topped_up}");
    node.stop().await;
}
