//! `ventana demo`: a throwaway node with a demo business and a demo user, showing a message
//! going each way, receipts, and the 24-hour window on the sandbox test clock.

use super::admin::AdminClient;
use crate::config::Config;
use crate::receiver::{Delivery, WebhookReceiver};
use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use ventana_client::device::{UserDevice, render};
use ventana_client::registration::{Proof, register, request_code};
use ventana_client::{Application, Inbound};
use ventana_core::PhoneNumber;
use ventana_core::payload::Content;
use ventana_core::protocol::ReceiptStatus;
use ventana_crypto::{SealKey, Sealer, Token};
use ventana_store::sqlite::SqliteEndpointStore;

const WABA: &str = "100000000000001";
const PHONE_NUMBER_ID: &str = "200000000000001";
const SHOP: &str = "15550100001";
const USER: &str = "34600000001";
const APP_SECRET: &str = "demo-app-secret-0123456789";
const VERIFY_TOKEN: &str = "demo-verify-token";

async fn next_webhook(hooks: &mut mpsc::UnboundedReceiver<Delivery>, what: &str) -> Result<Value> {
    tokio::time::timeout(Duration::from_secs(20), hooks.recv())
        .await
        .map_err(|_| anyhow!("no {what} webhook within 20 s"))?
        .map(|d| d.event)
        .ok_or_else(|| anyhow!("the webhook receiver stopped"))
}

fn value_of(event: &Value) -> &Value {
    &event["entry"][0]["changes"][0]["value"]
}

pub(crate) async fn run(keep: bool) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("ventana-demo-").tempdir()?;
    let (receiver, mut hooks) = WebhookReceiver::start(APP_SECRET, VERIFY_TOKEN).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let admin_token = Token::generate("vop").expose().to_owned();
    let mut config = Config::default();
    config.server.listen = listener.local_addr()?;
    config.storage.data_dir = dir.path().join("node");
    config.security.admin_token = Some(admin_token.clone());
    let (stop, mut stopped) = watch::channel(false);
    let node = tokio::spawn(crate::node::run(config.clone(), listener, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));

    println!(
        "Ventana demo — a node at {url}, data in {}",
        dir.path().display()
    );
    let admin = AdminClient::new(url.clone(), admin_token.clone());
    for _ in 0..100 {
        if reqwest::get(format!("{url}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = admin
        .call(
            Method::POST,
            "/admin/v1/businesses",
            Some(json!({ "waba_id": WABA, "name": "Demo Shop", "app_secret": APP_SECRET, "webhook_url": receiver.url, "verify_token": VERIFY_TOKEN, "sandbox": true })),
        )
        .await?;
    admin
        .call(
            Method::POST,
            &format!("/admin/v1/businesses/{WABA}/phone_numbers"),
            Some(json!({ "phone_number_id": PHONE_NUMBER_ID, "display_phone_number": format!("+{SHOP}"), "verified_name": "Demo Shop" })),
        )
        .await?;
    let token = admin
        .call(
            Method::POST,
            &format!("/admin/v1/businesses/{WABA}/tokens"),
            Some(json!({ "label": "demo" })),
        )
        .await?;
    let token = token["token"].as_str().context("token")?.to_owned();
    println!(
        "• business \"Demo Shop\" (WABA {WABA}, sandbox), number +{SHOP} (id {PHONE_NUMBER_ID}); webhook verified: {}",
        created["webhook_verified"]
    );

    // The user's device: proves the number with the development verifier's code.
    let http = reqwest::Client::new();
    let user: PhoneNumber = USER.parse()?;
    let user_dir = dir.path().join("user");
    std::fs::create_dir_all(&user_dir)?;
    request_code(&http, &url, &user).await?;
    let code = admin
        .call(
            Method::GET,
            &format!("/relay/v1/admin/verifications/{USER}"),
            None,
        )
        .await?;
    let code = code["code"].as_str().context("code")?.to_owned();
    let sealer = Sealer::new(SealKey::generate());
    let store = Arc::new(SqliteEndpointStore::open(&user_dir.join("device.db"))?);
    register(
        &http,
        &url,
        &user,
        "Ana",
        Proof::Code(code),
        store.as_ref(),
        &sealer,
    )
    .await?;
    println!("• user Ana registered +{USER} with a one-time code; her keys never leave her device");

    let (device_app, mut live) = UserDevice::with_live_events();
    let device_app: Arc<dyn Application> = Arc::new(device_app);
    let (endpoint, events) =
        ventana_client::Endpoint::open(store, sealer, &user, &url, true, watch::channel(false).1)
            .await?;
    tokio::spawn(Arc::clone(&endpoint).run(events, Arc::clone(&device_app)));

    // 1. user → business
    let shop: PhoneNumber = SHOP.parse()?;
    let text = "¡Hola! Is my order on its way?";
    endpoint
        .send_message(
            &shop,
            Content::Text {
                body: text.into(),
                preview_url: false,
            },
            None,
            device_app.as_ref(),
        )
        .await?;
    println!("\n1. Ana → Demo Shop: {text:?}  (encrypted on her device, relayed as ciphertext)");
    let event = next_webhook(&mut hooks, "inbound message").await?;
    let message = &value_of(&event)["messages"][0];
    let inbound_id = message["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "   webhook → business (signature verified): from {} ({}), user_id {}, text {:?}",
        message["from"],
        value_of(&event)["contacts"][0]["profile"]["name"],
        value_of(&event)["contacts"][0]["user_id"],
        message["text"]["body"]
    );

    // 2. business → user, through the Cloud API
    let reply = "Yes! It ships today 📦";
    let sent: Value = http
        .post(format!("{url}/v23.0/{PHONE_NUMBER_ID}/messages"))
        .bearer_auth(&token)
        .json(&json!({ "messaging_product": "whatsapp", "to": USER, "type": "text", "text": { "body": reply }, "context": { "message_id": inbound_id } }))
        .send()
        .await?
        .json()
        .await?;
    let reply_id = sent["messages"][0]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("send failed: {sent}"))?
        .to_owned();
    println!(
        "\n2. Demo Shop → Ana via POST /v23.0/{PHONE_NUMBER_ID}/messages: {reply:?}\n   API answered {sent}"
    );
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = live.recv().await {
            if let Inbound::Message { payload, .. } = event {
                return Some(render(&payload));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| anyhow!("the reply did not reach Ana's device"))?;
    println!("   Ana's device decrypted: {got:?}");
    endpoint
        .send_receipt(&shop, ReceiptStatus::Read, vec![reply_id.parse()?])
        .await?;
    let mut statuses = Vec::new();
    while statuses.len() < 3 {
        let event = next_webhook(&mut hooks, "status").await?;
        if let Some(status) = value_of(&event)["statuses"][0]["status"].as_str() {
            statuses.push(status.to_owned());
        }
    }
    println!("   status webhooks: {}", statuses.join(" → "));

    // 3. The 24-hour window, on the sandbox test clock.
    admin
        .call(
            Method::POST,
            &format!("/relay/v1/admin/businesses/{WABA}/clock/advance"),
            Some(json!({ "seconds": 25 * 3600 })),
        )
        .await?;
    let late: Value = http
        .post(format!("{url}/v23.0/{PHONE_NUMBER_ID}/messages"))
        .bearer_auth(&token)
        .json(&json!({ "messaging_product": "whatsapp", "to": USER, "type": "text", "text": { "body": "Anything else?" } }))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "\n3. test clock +25 h; a free-form message now gets: {}",
        late["error"]["message"]
    );

    if keep {
        println!(
            "\nThe node keeps running. Try the API:\n  curl -s {url}/v23.0/{PHONE_NUMBER_ID}/messages -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n    -d '{{\"messaging_product\":\"whatsapp\",\"to\":\"{USER}\",\"type\":\"text\",\"text\":{{\"body\":\"hi\"}}}}'\nAdmin token: {admin_token}\nCtrl-C to stop."
        );
        super::shutdown_signal().await;
    }
    let _ = stop.send(true);
    match tokio::time::timeout(Duration::from_secs(15), node).await {
        Ok(joined) => joined.map_err(|e| anyhow!("{e}"))??,
        Err(_) => bail!("the node did not stop in time"),
    }
    println!(
        "\ndone: messages went both ways end-to-end encrypted; the relay stored only ciphertext."
    );
    Ok(())
}
