//! `ventana demo`: a throwaway node with a demo business and a demo user, showing a message
//! going each way, receipts, the 24-hour window on the sandbox test clock, and templates:
//! submitted, approved by the operator, sent outside the window (a shipping confirmation),
//! scheduled (an appointment reminder 24 h before the appointment, an event ticket), rendered
//! on the user's device, and a quick-reply tap coming back as a `button` webhook.

use super::screen::{indent, render, show};
use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use ventana_client::device::UserDevice;
use ventana_client::registration::{Proof, register, request_code};
use ventana_client::{Application, Inbound};
use ventana_core::payload::Content;
use ventana_core::protocol::ReceiptStatus;
use ventana_core::{PhoneNumber, UnixTime};
use ventana_crypto::{SealKey, Sealer, Token};
use ventana_node::{AdminClient, Config, Delivery, WebhookReceiver};
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
    let node = tokio::spawn(ventana_node::run(config.clone(), listener, async move {
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
    let got = decrypted(&mut live, "the reply").await?;
    println!("   Ana's device decrypted: {got:?}");
    // Ana reads it once her device has reported it delivered (the business's `delivered`
    // webhook is there): a read before the delivery report would leave nothing to move.
    let mut statuses = Vec::new();
    let mut pricing = Value::Null;
    while statuses.len() < 3 {
        let event = next_webhook(&mut hooks, "status").await?;
        let status = &value_of(&event)["statuses"][0];
        if let Some(name) = status["status"].as_str() {
            statuses.push(name.to_owned());
            if name == "delivered" {
                pricing = status["pricing"].clone();
                endpoint
                    .send_receipt(&shop, ReceiptStatus::Read, vec![reply_id.parse()?])
                    .await?;
            }
        }
    }
    println!("   status webhooks: {}", statuses.join(" → "));
    println!("   a reply inside the 24-hour window is free: \"pricing\": {pricing}");

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
    manual_reply(&admin, &http, &url, &mut hooks, &mut live).await?;

    templates(
        &admin,
        &http,
        &url,
        &token,
        &mut hooks,
        &endpoint,
        &mut live,
        device_app.as_ref(),
    )
    .await?;

    invoice(&admin).await?;

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

/// The next message Ana's device decrypts, rendered; `what` names it if none comes.
async fn decrypted(live: &mut mpsc::UnboundedReceiver<Inbound>, what: &str) -> Result<String> {
    tokio::time::timeout(Duration::from_secs(20), async {
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
    .ok_or_else(|| anyhow!("{what} did not reach Ana's device"))
}

/// A small business's late reply by hand: the operator puts the business on the `app` tier,
/// a person of its staff gets a token, and her reply goes out after the window, free.
async fn manual_reply(
    admin: &AdminClient,
    http: &reqwest::Client,
    url: &str,
    hooks: &mut mpsc::UnboundedReceiver<Delivery>,
    live: &mut mpsc::UnboundedReceiver<Inbound>,
) -> Result<()> {
    admin
        .call(
            Method::POST,
            &format!("/relay/v1/admin/businesses/{WABA}/tier"),
            Some(
                json!({ "tier": "app", "by": "demo", "reason": "a small shop answering by hand" }),
            ),
        )
        .await?;
    let issued = admin
        .call(
            Method::POST,
            &format!("/admin/v1/businesses/{WABA}/tokens"),
            Some(json!({ "label": "counter", "person": "Marta" })),
        )
        .await?;
    let person = issued["token"].as_str().context("person token")?;
    let reply = "Sorry for the wait! Size M is back in blue.";
    let sent: Value = http
        .post(format!("{url}/v23.0/{PHONE_NUMBER_ID}/messages"))
        .bearer_auth(person)
        .json(&json!({ "messaging_product": "whatsapp", "to": USER, "type": "text", "text": { "body": reply } }))
        .send()
        .await?
        .json()
        .await?;
    let id = sent["messages"][0]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the manual reply was refused: {sent}"))?
        .to_owned();
    let got = decrypted(live, "the manual reply").await?;
    let pricing = loop {
        let event = next_webhook(hooks, "status").await?;
        let status = &value_of(&event)["statuses"][0];
        if status["id"] == id.as_str() && status["status"] == "delivered" {
            break status["pricing"].clone();
        }
    };
    println!(
        "   the operator puts Demo Shop on the `app` tier (a small business answering by hand);\n   \
         Marta replies late with her own token: {reply:?}\n   Ana's device decrypted: {got:?}; \
         free, marked manual in the ledger: \"pricing\": {pricing}"
    );
    Ok(())
}

/// The month's invoice of the demo business, from the billing ledger.
async fn invoice(admin: &AdminClient) -> Result<()> {
    let clock = admin
        .call(
            Method::GET,
            &format!("/relay/v1/admin/businesses/{WABA}/clock"),
            None,
        )
        .await?;
    let month = ventana_core::pricing::Month::of(UnixTime(clock["now"].as_i64().context("clock")?));
    let usage = admin
        .get(
            &format!("/relay/v1/admin/billing/businesses/{WABA}/usage"),
            &[("period", month.to_string())],
        )
        .await?;
    println!(
        "\n5. The month's invoice (ventana billing invoice --waba-id {WABA} --period {month}):"
    );
    for currency in usage["currencies"].as_array().into_iter().flatten() {
        let code = currency["currency"].as_str().unwrap_or_default();
        for line in currency["lines"].as_array().into_iter().flatten() {
            println!(
                "   {:<10} to {}  {} × {} = {} {code}",
                line["category"].as_str().unwrap_or_default(),
                line["country"].as_str().unwrap_or_default(),
                line["messages"],
                line["rate"].as_str().unwrap_or_default(),
                line["amount"].as_str().unwrap_or_default(),
            );
        }
        let count = |kind: &str| currency["by_type"][kind]["messages"].as_u64().unwrap_or(0);
        let (free, manual) = (count("free_customer_service"), count("manual"));
        println!(
            "   total {} {code} for {} delivered messages ({free} free inside the window, {manual} late by hand, free), policy {}",
            currency["total"].as_str().unwrap_or_default(),
            currency["messages"],
            currency["policy_versions"]
        );
    }
    Ok(())
}

/// The three templates of the demo, in the Cloud API's JSON.
fn demo_templates() -> [Value; 3] {
    [
        json!({
            "name": "shipping_confirmation", "language": "en_US", "category": "UTILITY",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "Order {{1}} shipped",
                 "example": {"header_text": ["A-1001"]}},
                {"type": "BODY", "text": "Hi {{1}}, your parcel left our warehouse and should arrive by {{2}}. Thank you for your order.",
                 "example": {"body_text": [["Ana", "Friday"]]}},
                {"type": "FOOTER", "text": "Demo Shop"},
                {"type": "BUTTONS", "buttons": [
                    {"type": "QUICK_REPLY", "text": "Where is it?"},
                    {"type": "URL", "text": "Track", "url": "https://shop.example/track/{{1}}",
                     "example": ["https://shop.example/track/A-1001"]}
                ]}
            ]
        }),
        json!({
            "name": "appointment_reminder", "language": "en_US", "category": "UTILITY",
            "components": [
                {"type": "BODY", "text": "Reminder: your fitting is tomorrow, {{1}}, at our {{2}} store. See you there.",
                 "example": {"body_text": [["3 December at 10:00", "Gran Via"]]}},
                {"type": "BUTTONS", "buttons": [
                    {"type": "QUICK_REPLY", "text": "Confirm"},
                    {"type": "QUICK_REPLY", "text": "Reschedule"}
                ]}
            ]
        }),
        json!({
            "name": "event_ticket", "language": "en_US", "category": "UTILITY",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "Your ticket"},
                {"type": "BODY", "text": "Thanks {{1}}, here is your ticket for the {{2}} on {{3}}. Show this code at the door.",
                 "example": {"body_text": [["Ana", "winter sample sale", "5 December"]]}},
                {"type": "BUTTONS", "buttons": [
                    {"type": "COPY_CODE", "example": "TICKET-7781"}
                ]}
            ]
        }),
    ]
}

/// The templates part: submit, approve, send outside the window, schedule, fire, tap.
#[allow(clippy::too_many_arguments)]
async fn templates(
    admin: &AdminClient,
    http: &reqwest::Client,
    url: &str,
    token: &str,
    hooks: &mut mpsc::UnboundedReceiver<Delivery>,
    endpoint: &ventana_client::Endpoint,
    live: &mut mpsc::UnboundedReceiver<Inbound>,
    app: &dyn Application,
) -> Result<()> {
    let graph = |method: Method, path: String, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{url}/v23.0/{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let value: Value = request.send().await?.json().await?;
            if value.get("error").is_some() {
                bail!("{value}");
            }
            Ok::<Value, anyhow::Error>(value)
        }
    };

    println!(
        "\n4. Templates. Demo Shop submits three through POST /v23.0/{WABA}/message_templates:"
    );
    let mut ids = Vec::new();
    for definition in demo_templates() {
        let created = graph(
            Method::POST,
            format!("{WABA}/message_templates"),
            Some(definition.clone()),
        )
        .await?;
        println!(
            "   {} → {created}",
            definition["name"].as_str().unwrap_or_default()
        );
        ids.push(created["id"].as_str().context("template id")?.to_owned());
    }
    for id in &ids {
        admin
            .call(
                Method::POST,
                &format!("/relay/v1/admin/templates/{id}/approve"),
                Some(json!({ "by": "demo-operator" })),
            )
            .await?;
    }
    let mut approved = 0;
    while approved < ids.len() {
        let event = next_webhook(hooks, "template status").await?;
        let value = value_of(&event);
        if value["event"] == "APPROVED" {
            approved += 1;
            println!(
                "   the operator approved it; webhook message_template_status_update: {} {}",
                value["message_template_name"], value["event"]
            );
        }
    }

    // A shipping confirmation, now, although the window closed (the clock is +25 h).
    let shipping = json!({ "messaging_product": "whatsapp", "to": USER, "type": "template", "template": {
        "name": "shipping_confirmation", "language": { "code": "en_US" },
        "components": [
            { "type": "header", "parameters": [{ "type": "text", "text": "A-1001" }] },
            { "type": "body", "parameters": [{ "type": "text", "text": "Ana" },
                { "type": "date_time", "date_time": { "fallback_value": "Friday, 4 December" } }] },
            { "type": "button", "sub_type": "url", "index": "1", "parameters": [{ "type": "text", "text": "A-1001" }] }
        ] } });
    let sent = graph(
        Method::POST,
        format!("{PHONE_NUMBER_ID}/messages"),
        Some(shipping),
    )
    .await?;
    println!(
        "\n   outside the window, a template is still allowed: {}",
        sent["messages"][0]
    );
    let shipping_id = receive_and_show(endpoint, live).await?;

    // A quick-reply tap comes back to the business as a `button` message.
    let tapped = endpoint
        .tap_button(&SHOP.parse()?, &shipping_id, 0, app)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    loop {
        let event = next_webhook(hooks, "button").await?;
        let message = &value_of(&event)["messages"][0];
        if message["type"] == "button" {
            println!(
                "   Ana taps {:?}; the business gets a `button` webhook: {}",
                tapped.text, message["button"]
            );
            break;
        }
    }

    // Scheduled: the reminder 24 h before an appointment 48 h from now, and a ticket.
    let clock = admin
        .call(
            Method::GET,
            &format!("/relay/v1/admin/businesses/{WABA}/clock"),
            None,
        )
        .await?;
    let now = UnixTime(clock["now"].as_i64().context("clock")?);
    let appointment = now.plus_secs(48 * 3600);
    let reminder_at = appointment.plus_secs(-24 * 3600);
    let reminder = json!({ "messaging_product": "whatsapp", "to": USER, "type": "template",
        "schedule": { "send_at": reminder_at.to_rfc3339() },
        "template": { "name": "appointment_reminder", "language": { "code": "en_US" },
        "components": [{ "type": "body", "parameters": [
            { "type": "date_time", "date_time": { "fallback_value": spoken(appointment) } },
            { "type": "text", "text": "Gran Via" }] }] } });
    let ticket_at = now.plus_secs(30 * 3600);
    let ticket = json!({ "messaging_product": "whatsapp", "to": USER, "type": "template",
        "schedule": { "send_at": ticket_at.to_rfc3339() },
        "template": { "name": "event_ticket", "language": { "code": "en_US" },
        "components": [
            { "type": "body", "parameters": [{ "type": "text", "text": "Ana" },
                { "type": "text", "text": "winter sample sale" }, { "type": "text", "text": "5 December" }] },
            { "type": "button", "sub_type": "copy_code", "index": 0,
              "parameters": [{ "type": "coupon_code", "coupon_code": "TICKET-7781" }] }] } });
    for (what, request) in [("appointment reminder", reminder), ("event ticket", ticket)] {
        let scheduled = graph(
            Method::POST,
            format!("{PHONE_NUMBER_ID}/messages"),
            Some(request),
        )
        .await?;
        println!(
            "\n   scheduled the {what} for {}: {}",
            scheduled["schedule"]["send_at"], scheduled["messages"][0]
        );
    }
    let listed = graph(Method::GET, format!("{PHONE_NUMBER_ID}/schedules"), None).await?;
    for item in listed["data"].as_array().into_iter().flatten() {
        println!(
            "   GET /{PHONE_NUMBER_ID}/schedules: {} {} {}",
            item["send_at"], item["state"], item["template"]["name"]
        );
    }
    for hours in [24, 6] {
        admin
            .call(
                Method::POST,
                &format!("/relay/v1/admin/businesses/{WABA}/clock/advance"),
                Some(json!({ "seconds": hours * 3600 })),
            )
            .await?;
        println!("\n   test clock +{hours} h:");
        receive_and_show(endpoint, live).await?;
    }
    Ok(())
}

/// `2026-11-28 05:34 UTC`, as a date_time parameter's fallback value.
fn spoken(at: UnixTime) -> String {
    let text = at.to_rfc3339();
    match text.split_once('T') {
        Some((date, time)) => format!("{date} {} UTC", time.get(..5).unwrap_or(time)),
        None => text,
    }
}

/// Waits for the next template message on Ana's device and prints it as she sees it.
async fn receive_and_show(
    endpoint: &ventana_client::Endpoint,
    live: &mut mpsc::UnboundedReceiver<Inbound>,
) -> Result<ventana_core::MessageId> {
    let (id, payload) = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = live.recv().await {
            if let Inbound::Message { meta, payload } = event {
                return Some((meta.id, payload));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| anyhow!("the template did not reach Ana's device"))?;
    let shown = show(endpoint, &payload).await;
    println!(
        "   Ana's device renders it:\n     {}",
        indent(&shown, "     ")
    );
    Ok(id)
}
