//! Three `ventana serve` processes on one PostgreSQL database act as one platform, and carry
//! on when one of them is killed with SIGKILL mid-stream.
//!
//! Runs when `VENTANA_TEST_POSTGRES` names a server (as `scripts/test` sets it when one
//! answers); it creates a database of its own and drops it afterwards.

use crate::harness::{
    ADMIN_TOKEN as ADMIN, APP_SECRET, Database, Device, VERIFY_TOKEN, WAIT, text_of,
};
use crate::serve::{Sent, ServeNode, WebhookLog, free_port, ready};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::time::Duration;
use ventana_client::Inbound;
use ventana_node::WebhookReceiver;

const WABA: &str = "7001";
const PNID: &str = "8001";
const SHOP: &str = "15550007001";
const USERS: usize = 6;
const ROUNDS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_database_act_as_one_platform_and_survive_a_kill() {
    let Some(db) = Database::create().await else {
        eprintln!("cluster test skipped: VENTANA_TEST_POSTGRES is not set");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let seal_key = ventana_crypto::SealKey::generate().to_base64();
    let http = reqwest::Client::new();
    let mut nodes: Vec<ServeNode> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|name| ServeNode::new(name, free_port()))
        .collect();
    for node in &mut nodes {
        node.start(Some(&db), &seal_key, tmp.path());
    }
    for node in &nodes {
        ready(&http, &node.url()).await;
    }
    let urls: Vec<String> = nodes.iter().map(ServeNode::url).collect();

    // The business, through node 1's admin API: node 1 receives for its number first.
    let (receiver, mut hooks) = WebhookReceiver::start(APP_SECRET, VERIFY_TOKEN)
        .await
        .unwrap();
    let admin = |method: reqwest::Method, path: String, body: Value| {
        http.request(method, format!("{}{path}", urls[0]))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let created = admin(reqwest::Method::POST, "/admin/v1/businesses".into(), json!({ "waba_id": WABA, "name": "Cluster Shop", "app_secret": APP_SECRET, "webhook_url": receiver.url, "verify_token": VERIFY_TOKEN })).await.unwrap();
    assert_eq!(created.status(), 201);
    let added = admin(reqwest::Method::POST, format!("/admin/v1/businesses/{WABA}/phone_numbers"), json!({ "phone_number_id": PNID, "display_phone_number": format!("+{SHOP}"), "verified_name": "Cluster Shop" })).await.unwrap();
    assert_eq!(added.status(), 201);
    let token: Value = admin(
        reqwest::Method::POST,
        format!("/admin/v1/businesses/{WABA}/tokens"),
        json!({}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    // Every node learns of the number (and serves it through its API).
    for url in &urls {
        tokio::time::timeout(WAIT, async {
            while http
                .get(format!("{url}/v23.0/{PNID}"))
                .bearer_auth(&token)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
                != 200
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("every node hosts the number");
    }

    // Users spread over the three nodes; each writes first.
    let shop: ventana_core::PhoneNumber = SHOP.parse().unwrap();
    let mut users = Vec::new();
    for u in 0..USERS {
        let node = crate::harness::Node::attach(&urls[u % 3]);
        let phone = format!("3461000{u:04}");
        let device = Device::register(
            &node,
            &tmp.path().join(&phone),
            &phone,
            &format!("user {u}"),
        )
        .await;
        device.send(&shop, "hello").await;
        users.push((u % 3, device));
    }

    // The stream: every round, the business writes to every user through node (round+u)%3
    // (concurrently), and every user writes back. Node 1 — which receives for the number —
    // is killed with SIGKILL while a round's requests are in flight.
    let mut accepted: HashMap<usize, HashSet<String>> = HashMap::new();
    let (mut refused, mut in_doubt) = (0, 0);
    let mut user_sent: HashSet<String> = HashSet::new();
    let mut hook_log = WebhookLog::default();
    let mut killed = false;
    let send_to = |url: String, to: String, text: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let body = json!({ "messaging_product": "whatsapp", "to": to, "type": "text", "text": { "body": text } });
            match http
                .post(format!("{url}/v23.0/{PNID}/messages"))
                .bearer_auth(&token)
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => Sent::Accepted(
                    r.json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["messages"][0]["id"].as_str().map(str::to_owned)),
                ),
                Err(e) if e.is_connect() => Sent::Refused,
                _ => Sent::InDoubt,
            }
        }
    };
    for round in 0..ROUNDS {
        let kill_now = round == ROUNDS / 3;
        let pid = nodes[0].child.as_ref().map(Child::id);
        let sends = users.iter().enumerate().map(|(u, (_, device))| {
            send_to(
                urls[(round + u) % 3].clone(),
                device.phone.to_string(),
                format!("b-{u}-{round}"),
            )
        });
        let killer = async {
            if let (true, Some(pid)) = (kill_now, pid) {
                tokio::time::sleep(Duration::from_millis(3)).await;
                assert!(
                    Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status()
                        .unwrap()
                        .success()
                );
            }
        };
        let (results, ()) = tokio::join!(futures_util::future::join_all(sends), killer);
        if kill_now {
            nodes[0].reap();
            killed = true;
        }
        for (u, result) in results.into_iter().enumerate() {
            match result {
                Sent::Accepted(Some(id)) => {
                    accepted.entry(u).or_default().insert(id);
                }
                Sent::Accepted(None) | Sent::InDoubt => in_doubt += 1,
                Sent::Refused => refused += 1,
            }
        }
        for (u, (home, device)) in users.iter().enumerate() {
            if killed && *home == 0 {
                continue; // its node is down; the device waits for it to come back
            }
            let sent = device.send(&shop, &format!("u-{u}-{round}")).await;
            user_sent.insert(sent.id.to_string());
        }
        if round == 2 * ROUNDS / 3 - 1 {
            // Before node 1 comes back, the survivors must have taken its number over: every
            // user message so far reaches the business without it.
            let started = std::time::Instant::now();
            hook_log
                .wait_for(&mut hooks, &user_sent, Duration::from_secs(60))
                .await;
            eprintln!(
                "survivors took the number over; all user messages arrived {:?} after the last was sent",
                started.elapsed()
            );
            nodes[0].start(Some(&db), &seal_key, tmp.path());
            ready(&http, &urls[0]).await;
            killed = false;
        }
    }

    // Every accepted message reaches its user's application exactly once.
    let accepted_all: HashSet<String> = accepted.values().flatten().cloned().collect();
    let business_sent = accepted_all.len();
    let mut delivered = 0;
    let mut device_duplicates = 0;
    for (u, (_, device)) in users.iter_mut().enumerate() {
        let expected = accepted.remove(&u).unwrap_or_default();
        let mut seen: HashSet<String> = HashSet::new();
        tokio::time::timeout(Duration::from_secs(90), async {
            while !expected.iter().all(|id| seen.contains(id)) {
                match device.live.recv().await {
                    Some(Inbound::Message { meta, payload }) => {
                        assert!(text_of(&payload).starts_with(&format!("b-{u}-")));
                        if !seen.insert(meta.id.to_string()) {
                            device_duplicates += 1;
                        }
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "user {u} is missing {:?}",
                expected.difference(&seen).collect::<Vec<_>>()
            )
        });
        delivered += expected.len();
    }

    // Every user message reaches the business as a webhook, at least once, under a stable id,
    // and so does the `sent` status of every message the business had accepted.
    hook_log
        .wait_for(&mut hooks, &user_sent, Duration::from_secs(120))
        .await;
    hook_log
        .until(
            &mut hooks,
            Duration::from_secs(90),
            "a sent status for every accepted message",
            |log| {
                accepted_all
                    .iter()
                    .all(|id| log.status_ids.contains(&format!("{id}.sent")))
            },
        )
        .await;
    assert_eq!(receiver.rejected(), 0, "every webhook was signed");
    assert_eq!(device_duplicates, 0, "no application saw a message twice");
    eprintln!(
        "cluster figures: business→users accepted {business_sent}, delivered {delivered}, refused (node down) {refused}, \
         in doubt (cut mid-request) {in_doubt}, duplicates at devices {device_duplicates}; users→business sent {}, \
         webhook message events {}, status events {}, webhook redeliveries {}",
        user_sent.len(),
        hook_log.messages.len(),
        hook_log.statuses,
        hook_log.redeliveries
    );
}
