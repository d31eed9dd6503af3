//! The `ventana` binary itself: `serve` as a process, the operator and user commands with
//! `--json`, and a graceful stop on SIGTERM.

use crate::harness::{APP_SECRET, VERIFY_TOKEN, WAIT};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use ventana_node::WebhookReceiver;

struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn ventana(data_dir: &Path, url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ventana"));
    command
        .env("VENTANA_DATA_DIR", data_dir)
        .env("VENTANA_URL", url)
        .env_remove("VENTANA_ADMIN_TOKEN");
    command
}

/// Runs a command and parses its `--json` output; panics with its stderr if it fails.
async fn run(mut command: Command) -> Value {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "command failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

async fn serve(data_dir: &Path) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_ventana"))
        .arg("serve")
        .env("VENTANA_LISTEN", format!("127.0.0.1:{port}"))
        .env("VENTANA_DATA_DIR", data_dir)
        .env_remove("VENTANA_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served { child, url };
    let http = reqwest::Client::new();
    tokio::time::timeout(WAIT, async {
        loop {
            if http
                .get(format!("{}/readyz", served.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the node becomes ready");
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_and_user_commands_drive_a_served_node() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let mut served = serve(&data).await;
    let url = served.url.clone();
    let (receiver, mut hooks) = WebhookReceiver::start(APP_SECRET, VERIFY_TOKEN)
        .await
        .unwrap();
    let admin = |args: &[&str]| {
        let mut c = ventana(&data, &url);
        c.arg("admin").args(args).arg("--json");
        c
    };
    let user_dir = tmp.path().join("ivy");
    let user = |args: &[&str]| {
        let mut c = ventana(&data, &url);
        c.arg("user")
            .arg("--dir")
            .arg(&user_dir)
            .args(args)
            .arg("--json");
        c
    };

    let created = run(admin(&[
        "create-business",
        "--waba-id",
        "1401",
        "--name",
        "Ivy's Florist",
        "--app-secret",
        APP_SECRET,
        "--webhook-url",
        &receiver.url,
        "--verify-token",
        VERIFY_TOKEN,
    ]))
    .await;
    assert_eq!(created["webhook_verified"], true);
    let number = run(admin(&[
        "add-number",
        "--waba-id",
        "1401",
        "--phone-number-id",
        "2401",
        "--display-phone-number",
        "+1 555 000 1401",
        "--verified-name",
        "Florist",
    ]))
    .await;
    assert_eq!(number["wa_id"], "15550001401");
    let token = run(admin(&[
        "issue-token",
        "--waba-id",
        "1401",
        "--label",
        "ci",
    ]))
    .await;
    let token_id = token["id"].as_str().unwrap().to_owned();
    let token = token["token"].as_str().unwrap().to_owned();
    let listed = run(admin(&["list-tokens", "--waba-id", "1401"])).await;
    assert_eq!(listed["data"][0]["id"], token_id.as_str());
    assert!(
        listed.to_string().find(&token).is_none(),
        "a listed token never shows its secret"
    );

    run(user(&["request-code", "--phone", "+34 600 000 041"])).await;
    let code = run(admin(&["verification-code", "--phone", "34600000041"])).await;
    let code = code["code"].as_str().unwrap().to_owned();
    run(user(&[
        "register",
        "--phone",
        "34600000041",
        "--code",
        &code,
        "--name",
        "Ivy",
    ]))
    .await;
    let sent = run(user(&[
        "send",
        "--to",
        "15550001401",
        "--text",
        "Roses for Friday?",
    ]))
    .await;
    assert_eq!(sent["queued"], false);
    let delivery = tokio::time::timeout(WAIT, hooks.recv())
        .await
        .unwrap()
        .unwrap();
    let value = &delivery.event["entry"][0]["changes"][0]["value"];
    assert_eq!(value["messages"][0]["text"]["body"], "Roses for Friday?");
    assert_eq!(value["messages"][0]["id"], sent["id"]);

    // The business's webhooks, as the operator sees them: where they go, the delivery log,
    // a replay under the same event id, and an empty dead-letter queue.
    let webhooks = |args: &[&str]| {
        let mut c = ventana(&data, &url);
        c.arg("webhooks")
            .args(args)
            .args(["--waba-id", "1401", "--json"]);
        c
    };
    let shown = run(webhooks(&["show"])).await;
    assert_eq!(shown["callback"], receiver.url.as_str());
    assert_eq!(shown["dead_letters"], 0);
    // Set again, after the handshake, with the fields it subscribes to.
    let set = run(webhooks(&[
        "set",
        "--callback-url",
        &receiver.url,
        "--verify-token",
        VERIFY_TOKEN,
        "--fields",
        "messages,message_template_status_update",
    ]))
    .await;
    assert_eq!(
        set["fields"],
        json!(["messages", "message_template_status_update"])
    );
    assert_eq!(set["app_callback"], receiver.url.as_str());
    let event_id = delivery.event_id.clone().unwrap();
    let log = tokio::time::timeout(WAIT, async {
        loop {
            let log = run(webhooks(&["log"])).await;
            if log["data"].as_array().is_some_and(|d| !d.is_empty()) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the delivery is logged");
    assert_eq!(log["data"][0]["event_id"], event_id.as_str());
    assert_eq!(log["data"][0]["http_status"], 200);
    let replayed = run(webhooks(&["replay", "--event-id", &event_id])).await;
    assert!(replayed["replayed"].as_u64().unwrap() >= 1, "{replayed}");
    let again = tokio::time::timeout(WAIT, async {
        loop {
            let delivery = hooks.recv().await.unwrap();
            if delivery.event_id.as_deref() == Some(event_id.as_str()) {
                return delivery;
            }
        }
    })
    .await
    .expect("the replayed event arrives");
    assert_eq!(again.raw, delivery.raw, "a replay sends the same bytes");
    assert_eq!(run(webhooks(&["dead"])).await["data"], json!([]));
    assert_eq!(run(webhooks(&["redrive"])).await["redriven"], 0);

    let http = reqwest::Client::new();
    let reply = json!({ "messaging_product": "whatsapp", "to": "34600000041", "type": "text", "text": { "body": "Yes, a dozen red ones." } });
    let response: Value = http
        .post(format!("{url}/v21.0/2401/messages"))
        .bearer_auth(&token)
        .json(&reply)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reply_id = response["messages"][0]["id"].as_str().unwrap().to_owned();
    let inbox = run(user(&["inbox", "--wait", "10"])).await;
    let messages = inbox["messages"].as_array().unwrap();
    let received = messages
        .iter()
        .find(|m| m["id"] == reply_id.as_str())
        .expect("the reply is in the inbox");
    assert_eq!(received["text"], "Yes, a dozen red ones.");
    assert_eq!(received["direction"], "in");
    assert_eq!(run(user(&["read", &reply_id])).await["read"], true);

    run(user(&["block", "15550001401"])).await;
    let refused = http
        .post(format!("{url}/v21.0/2401/messages"))
        .bearer_auth(&token)
        .json(&reply)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    run(user(&["unblock", "15550001401"])).await;

    run(admin(&[
        "revoke-token",
        "--waba-id",
        "1401",
        "--id",
        &token_id,
    ]))
    .await;
    let denied = http
        .get(format!("{url}/v21.0/2401"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);

    // SIGTERM: the node drains and exits cleanly.
    let pid = served.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(status) = served.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the node exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}
