//! A message accepted is never silently lost: a ciphertext whose session moved on is
//! encrypted again before it is sent, and a device that cannot decrypt asks for the message
//! again (a retry receipt) until it can, or the sender reports it failed.

use crate::harness::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use ventana_client::device::UserDevice;
use ventana_client::{Endpoint, Outgoing};
use ventana_core::payload::Content;
use ventana_core::{MessageId, PhoneNumber};
use ventana_crypto::{DeviceAccount, Sealer};
use ventana_store::EndpointStore;
use ventana_store::sqlite::SqliteEndpointStore;

fn text(body: &str) -> Content {
    Content::Text {
        body: body.into(),
        preview_url: false,
    }
}

/// The business's reply through the API, read on the device.
async fn reply(node: &Node, shop: &Business, ana: &mut Device, body: &str) -> String {
    let (status, sent) = shop.send_text(node, &ana.phone, body).await;
    assert_eq!(status, 200, "{sent}");
    let (_, payload) = ana.next_message().await;
    assert_eq!(text_of(&payload), body);
    sent["messages"][0]["id"].as_str().unwrap().to_owned()
}

/// The gateway's own record of an outbound message (its store is a file of the node's).
async fn gateway_record(
    node_dir: &std::path::Path,
    shop: &Business,
    id: &str,
) -> ventana_store::endpoint::MessageRecord {
    let store = SqliteEndpointStore::open(&node_dir.join("gateway.db")).unwrap();
    store
        .message(&shop.number, &id.parse::<MessageId>().unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id} is in the gateway's history"))
}

/// Simulates a device that lost its session state (a restored backup, a corrupted file):
/// its sessions are gone from its store, so the business's next message cannot be read.
fn forget_sessions(dir: &std::path::Path) {
    let db = rusqlite::Connection::open(dir.join("device.db")).unwrap();
    let gone = db.execute("DELETE FROM sessions", []).unwrap();
    assert!(gone > 0);
}

/// A node, a business and Ana's device, which has written first and read the reply
/// (`welcome`, whose id is returned): sessions exist both ways.
struct Setting {
    tmp: tempfile::TempDir,
    node: Node,
    shop: Business,
    ana: Device,
    welcome: String,
}

impl Setting {
    async fn start() -> Setting {
        let tmp = tempfile::tempdir().unwrap();
        let node = Node::start(&tmp.path().join("node")).await;
        let mut shop = Business::create(&node, "1001", "2001", "15550001001", false).await;
        let mut ana = Device::register(&node, &tmp.path().join("ana"), "34600000001", "Ana").await;
        ana.send(&shop.number, "hello").await;
        shop.next_message().await;
        let welcome = reply(&node, &shop, &mut ana, "welcome").await;
        Setting {
            tmp,
            node,
            shop,
            ana,
            welcome,
        }
    }

    fn node_dir(&self) -> std::path::PathBuf {
        self.tmp.path().join("node")
    }

    fn ana_dir(&self) -> std::path::PathBuf {
        self.tmp.path().join("ana")
    }
}

#[tokio::test]
async fn an_outbox_row_whose_session_moved_on_is_encrypted_again_before_it_is_sent() {
    let Setting {
        tmp,
        node,
        mut shop,
        mut ana,
        ..
    } = Setting::start().await;
    let dir = tmp.path().join("ana");

    // A second writer of Ana's sessions (as a second gateway node is of a business's): it
    // sends once, then loses its connection, and commits "late" without getting it out.
    let (store, sealer): (Arc<SqliteEndpointStore>, Sealer) = Device::local(&dir);
    let (cut, shutdown) = watch::channel(false);
    let (writer, events) = Endpoint::open(store, sealer, &ana.phone, &node.url, false, shutdown)
        .await
        .unwrap();
    tokio::spawn(Arc::clone(&writer).run(events, Arc::new(UserDevice::default())));
    let app = UserDevice::default();
    let warm = writer
        .send_message(&shop.number, text("from the other writer"), None, &app)
        .await
        .unwrap();
    assert!(warm.accepted_at.is_some());
    assert_eq!(
        shop.next_message().await["messages"][0]["text"]["body"],
        "from the other writer"
    );
    cut.send(true).unwrap();
    while writer.link().is_connected() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The send waits for a relay that does not answer; its row is committed at once.
    let late_id = MessageId::generate();
    let outgoing = Outgoing {
        id: late_id.clone(),
        to: shop.number.clone(),
        template: None,
        content: text("late"),
        reply_to: None,
        manual: false,
    };
    let stuck = tokio::spawn(async move { writer.send(outgoing, &app).await.unwrap() });
    let outbox = ana.endpoint.store().clone();
    while !outbox
        .outbox(&ana.phone)
        .await
        .unwrap()
        .iter()
        .any(|row| row.id == late_id)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Meanwhile the conversation goes on: each round turns both ratchets, so after six the
    // business's side no longer keeps the keys of the chain "late" was encrypted on.
    for round in 0..6 {
        reply(&node, &shop, &mut ana, &format!("ping {round}")).await;
        ana.send(&shop.number, &format!("pong {round}")).await;
        assert_eq!(
            shop.next_message().await["messages"][0]["text"]["body"],
            format!("pong {round}")
        );
    }

    // Ana's device retries the row (rows at least 10 s old, every 5 s): seeing its session moved on, it encrypts it again, and
    // the business reads it the first time, with no retry receipt and no resend.
    let arrived = tokio::time::timeout(Duration::from_secs(40), shop.next_message())
        .await
        .expect("the late message arrives");
    assert_eq!(arrived["messages"][0]["id"], late_id.as_str());
    assert_eq!(arrived["messages"][0]["text"]["body"], "late");
    assert!(
        stuck.await.unwrap().accepted_at.is_none(),
        "the writer never got it out"
    );
    ana.wait_own_status(&late_id, "delivered").await;
    let record = ana
        .endpoint
        .store()
        .message(&ana.phone, &late_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.resends, 0,
        "read on the first delivery, without asking again"
    );
    ana.disconnect().await;
}

#[tokio::test]
async fn a_device_that_cannot_decrypt_asks_again_and_reads_the_resend() {
    let setting = Setting::start().await;
    let (node_dir, dir) = (setting.node_dir(), setting.ana_dir());
    let Setting {
        node,
        mut shop,
        ana,
        ..
    } = setting;

    // Ana's device loses its sessions: the next message cannot be decrypted.
    ana.disconnect().await;
    forget_sessions(&dir);
    let mut ana = Device::connect(&node, &dir, &"34600000001".parse().unwrap()).await;
    let (status, sent) = shop
        .send_text(&node, &ana.phone, "your order shipped")
        .await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["messages"][0]["id"].as_str().unwrap().to_owned();

    // It asks again; the gateway starts a new session and resends under the same id.
    let (meta, payload) = ana.next_message().await;
    assert_eq!(meta.id.as_str(), id);
    assert_eq!(text_of(&payload), "your order shipped");
    shop.wait_status(&id, "delivered").await;
    assert_eq!(gateway_record(&node_dir, &shop, &id).await.resends, 1);
    let copies = ana
        .history()
        .await
        .into_iter()
        .filter(|m| m.id.as_str() == id)
        .count();
    assert_eq!(copies, 1);

    // The new session works both ways.
    ana.send(&shop.number, "thanks").await;
    assert_eq!(
        shop.next_message().await["messages"][0]["text"]["body"],
        "thanks"
    );
    reply(&node, &shop, &mut ana, "you're welcome").await;
    ana.disconnect().await;
}

#[tokio::test]
async fn a_message_no_resend_can_get_through_ends_failed_at_the_business() {
    let setting = Setting::start().await;
    let (node_dir, dir) = (setting.node_dir(), setting.ana_dir());
    let Setting {
        node,
        mut shop,
        ana,
        ..
    } = setting;
    let phone: PhoneNumber = "34600000001".parse().unwrap();

    // The device's keys are replaced by keys the relay never saw (a broken restore): no
    // session the business can start with it will ever decrypt there.
    ana.disconnect().await;
    forget_sessions(&dir);
    let (store, sealer) = Device::local(&dir);
    let stranger = DeviceAccount::new();
    store
        .save_account(
            &phone,
            stranger
                .seal(&sealer, format!("identity/{phone}").as_bytes())
                .unwrap(),
        )
        .await
        .unwrap();
    drop(store);
    let mut ana = Device::connect(&node, &dir, &phone).await;

    let (status, sent) = shop.send_text(&node, &phone, "can you read this?").await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["messages"][0]["id"].as_str().unwrap().to_owned();
    let failed = shop.wait_status(&id, "failed").await;
    let error = &failed["statuses"][0]["errors"][0];
    assert_eq!(error["code"], 131000, "{failed}");
    assert!(
        error["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("could not decrypt"),
        "{failed}"
    );
    let record = gateway_record(&node_dir, &shop, &id).await;
    assert_eq!(record.resends, 3);
    assert_eq!(record.status, ventana_core::MessageStatus::Failed);
    ana.expect_silence(Duration::from_millis(500)).await;
    ana.disconnect().await;
}

#[tokio::test]
async fn a_read_receipt_made_while_the_relay_is_away_reaches_the_business_later() {
    let setting = Setting::start().await;
    let (node_dir, dir) = (setting.node_dir(), setting.ana_dir());
    let Setting {
        node,
        mut shop,
        ana,
        welcome: id,
        ..
    } = setting;
    shop.wait_status(&id, "delivered").await;

    // Ana reads it while the platform is down: the receipt is queued on her device...
    node.stop().await;
    ana.endpoint
        .send_receipt(
            &shop.number,
            ventana_core::protocol::ReceiptStatus::Read,
            vec![id.parse().unwrap()],
        )
        .await
        .expect("queued, not lost");
    ana.disconnect().await;

    // ...and goes out when her device next reaches the relay.
    let node = Node::start(&node_dir).await;
    let ana = Device::connect(&node, &dir, &"34600000001".parse().unwrap()).await;
    shop.wait_status(&id, "read").await;
    ana.disconnect().await;
    node.stop().await;
}
