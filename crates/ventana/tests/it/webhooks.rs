//! Webhooks a helpdesk can rely on, through real nodes, against a receiver written apart from
//! Ventana (`webhook_receiver.py`, which checks both signatures with Python's own `hmac`):
//! configuration as the Cloud API does it, with the handshake; delivery through failures,
//! timeouts and slowness, statuses in order; seven days of failures on the sandbox's test
//! clock, the dead-letter queue, redrive and replay; SIGKILL with events leased.

use crate::harness::*;
use crate::serve::{ServeNode, free_port, ready};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

/// The Python receiver, its requests as it reported them.
struct PyReceiver {
    child: Child,
    url: String,
    base: String,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every event request so far, in arrival order.
    events: Vec<Value>,
    http: reqwest::Client,
}

impl PyReceiver {
    async fn start() -> PyReceiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/webhook_receiver.py");
        let mut child = Command::new("python3")
            .args([script, APP_SECRET, VERIFY_TOKEN])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the test receiver");
        let stdout = child.stdout.take().unwrap();
        let (tx, mut lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        let first = tokio::time::timeout(WAIT, lines.recv())
            .await
            .expect("the receiver starts")
            .unwrap();
        let base = format!("http://127.0.0.1:{}", first["port"]);
        PyReceiver {
            child,
            url: format!("{base}/hook"),
            base,
            lines,
            events: Vec::new(),
            http: reqwest::Client::new(),
        }
    }

    async fn control(&self, state: Value) {
        let r = self
            .http
            .post(format!("{}/control", self.base))
            .body(state.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn mode(&self, mode: &str) {
        self.control(json!({ "mode": mode })).await;
    }

    /// Reads reports until `done` holds of the events so far, or panics after `within`.
    async fn until(&mut self, what: &str, within: Duration, done: impl Fn(&[Value]) -> bool) {
        let outcome = tokio::time::timeout(within, async {
            while !done(&self.events) {
                let Some(line) = self.lines.recv().await else {
                    return;
                };
                if line["kind"] == "event" {
                    self.events.push(line);
                }
            }
        })
        .await;
        assert!(
            outcome.is_ok() && done(&self.events),
            "{what} never happened; the receiver got {:#?}",
            self.events
                .iter()
                .map(|e| (
                    e["event_id"].clone(),
                    e["status"].clone(),
                    e["mode"].clone()
                ))
                .collect::<Vec<_>>()
        );
    }

    /// The events the receiver accepted (answered 200 in time), in arrival order.
    fn accepted(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["status"] == 200 && e["mode"] != "timeout")
            .collect()
    }

    fn accepted_ids(&self) -> Vec<String> {
        self.accepted()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every event was signed right, by both signatures, as Python checks them.
fn assert_signed(events: &[Value]) {
    for e in events {
        assert_eq!(
            e["hub_ok"], true,
            "X-Hub-Signature-256 of {}",
            e["event_id"]
        );
        assert_eq!(
            e["stamped_ok"], true,
            "X-Ventana-Signature of {}",
            e["event_id"]
        );
    }
}

/// For every message, the statuses the receiver accepted never go backwards.
fn assert_statuses_in_order(accepted: &[&Value]) -> usize {
    let rank = |s: &str| match s {
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        _ => 0,
    };
    let mut last: HashMap<String, (i32, String)> = HashMap::new();
    let mut seen = 0;
    for e in accepted {
        let Some(status) = e["body"]["entry"][0]["changes"][0]["value"]["statuses"].get(0) else {
            continue;
        };
        seen += 1;
        let id = status["id"].as_str().unwrap().to_owned();
        let name = status["status"].as_str().unwrap().to_owned();
        if let Some((before, before_name)) = last.get(&id) {
            assert!(
                rank(&name) >= *before,
                "{id}: {name} arrived after {before_name}"
            );
        }
        last.insert(id, (rank(&name), name));
    }
    seen
}

async fn api(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = node
        .http
        .request(method, format!("{}{path}", node.url))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn callbacks_are_configured_as_the_cloud_api_does_with_the_handshake_and_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let mut shop = Business::create(&node, "1301", "2301", "15550001301", false).await;
    let mut py = PyReceiver::start().await;
    let token = shop.token.clone();
    let post = reqwest::Method::POST;
    let py_url = py.url.clone();
    let subscribe = |verify: &str| {
        format!(
            "/v23.0/1301/subscriptions?object=whatsapp_business_account&callback_url={py_url}&verify_token={verify}&fields=messages"
        )
    };

    // A callback that answers the handshake with another challenge, or refuses the verify
    // token, is not taken.
    py.control(json!({ "challenge": "wrong" })).await;
    let (status, refused) = api(&node, post.clone(), &subscribe(VERIFY_TOKEN), &token, None).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], 2200);
    assert!(
        refused["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("did not answer with the hub.challenge"),
        "{refused}"
    );
    py.control(json!({ "challenge": "echo" })).await;
    let (status, refused) = api(
        &node,
        post.clone(),
        &subscribe("not-the-token"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("HTTP 403")
    );
    // Events still go where they went.
    let ana = Device::register(&node, &tmp.path().join("ana"), "34600001301", "Ana").await;
    ana.send(&shop.number, "first").await;
    assert_eq!(
        shop.next_message().await["messages"][0]["text"]["body"],
        "first"
    );

    // The app's callback, with the app token `<app_id>|<app_secret>` as pywa sends it.
    let app_token = format!("1301|{APP_SECRET}");
    let (status, ok) = api(
        &node,
        post.clone(),
        &subscribe(VERIFY_TOKEN),
        &app_token,
        None,
    )
    .await;
    assert_eq!((status, ok), (200, json!({ "success": true })));
    let (status, _) = api(
        &node,
        post.clone(),
        &subscribe(VERIFY_TOKEN),
        "1301|wrong-secret",
        None,
    )
    .await;
    assert_eq!(status, 401);
    // The app secret signs every webhook, so every receiver holds it: the app token manages
    // the subscription and nothing else.
    let (status, refused) = api(&node, reqwest::Method::GET, "/v23.0/2301", &app_token, None).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (401, &json!(190)),
        "{refused}"
    );
    let no_fields = subscribe(VERIFY_TOKEN).replace("fields=messages", "fields=");
    let (status, refused) = api(&node, post.clone(), &no_fields, &token, None).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (400, &json!(100)),
        "{refused}"
    );
    let (_, listed) = api(
        &node,
        reqwest::Method::GET,
        "/v23.0/1301/subscriptions",
        &token,
        None,
    )
    .await;
    assert_eq!(listed["data"][0]["callback_url"], py.url.as_str());
    assert_eq!(listed["data"][0]["fields"][0]["name"], "messages");
    ana.send(&shop.number, "second").await;
    py.until(
        "the second message reaches the app's callback",
        WAIT,
        |events| {
            events.iter().any(|e| {
                e["body"]["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"]
                    == "second"
            })
        },
    )
    .await;

    // The WABA's override wins over the app's callback.
    let waba_override =
        json!({ "override_callback_uri": shop.receiver.url, "verify_token": VERIFY_TOKEN });
    let (status, ok) = api(
        &node,
        post.clone(),
        "/v23.0/1301/subscribed_apps",
        &token,
        Some(waba_override),
    )
    .await;
    assert_eq!((status, ok), (200, json!({ "success": true })));
    let (_, apps) = api(
        &node,
        reqwest::Method::GET,
        "/v23.0/1301/subscribed_apps",
        &token,
        None,
    )
    .await;
    assert_eq!(
        apps["data"][0]["override_callback_uri"],
        shop.receiver.url.as_str()
    );
    assert_eq!(apps["data"][0]["whatsapp_business_api_data"]["id"], "1301");
    ana.send(&shop.number, "third").await;
    assert_eq!(
        shop.next_message().await["messages"][0]["text"]["body"],
        "third"
    );

    // The number's override wins over both.
    let number_override = json!({ "webhook_configuration": { "override_callback_uri": py.url, "verify_token": VERIFY_TOKEN } });
    let (status, ok) = api(
        &node,
        post.clone(),
        "/v23.0/2301",
        &token,
        Some(number_override),
    )
    .await;
    assert_eq!((status, ok), (200, json!({ "success": true })));
    let (_, number) = api(
        &node,
        reqwest::Method::GET,
        "/v23.0/2301?fields=webhook_configuration",
        &token,
        None,
    )
    .await;
    assert_eq!(
        number["webhook_configuration"],
        json!({ "application": py.url, "whatsapp_business_account": shop.receiver.url, "phone_number": py.url })
    );
    ana.send(&shop.number, "fourth").await;
    py.until(
        "the fourth message reaches the number's callback",
        WAIT,
        |events| {
            events.iter().any(|e| {
                e["body"]["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"]
                    == "fourth"
            })
        },
    )
    .await;
    assert_signed(&py.events);

    // Unsubscribed: no WABA override listed, no app subscribed.
    let (status, _) = api(
        &node,
        reqwest::Method::DELETE,
        "/v23.0/1301/subscribed_apps",
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, apps) = api(
        &node,
        reqwest::Method::GET,
        "/v23.0/1301/subscribed_apps",
        &token,
        None,
    )
    .await;
    assert_eq!(apps["data"], json!([]));
    node.stop().await;

    // An operator who allows no private callbacks gets none, loopback included.
    let strict = Node::start_with(&tmp.path().join("strict"), None, |config| {
        config.webhooks.allow_private_callbacks = false;
    })
    .await;
    let (status, refused) = strict
        .admin(
            post.clone(),
            "/admin/v1/businesses",
            Some(json!({ "waba_id": "1302", "name": "Strict", "app_secret": APP_SECRET, "webhook_url": py.url, "verify_token": VERIFY_TOKEN })),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("private")
    );
    strict.stop().await;
}

#[tokio::test]
async fn failures_timeouts_and_slowness_lose_nothing_and_a_week_of_failures_is_dead_lettered() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("node"), None, |config| {
        config.webhooks.timeout_secs = 2;
        config.webhooks.max_backoff_secs = 2;
    })
    .await;
    let mut py = PyReceiver::start().await;
    let waba = "1303";
    let (status, created) = node
        .admin(
            reqwest::Method::POST,
            "/admin/v1/businesses",
            Some(json!({ "waba_id": waba, "name": "Sandbox", "app_secret": APP_SECRET, "webhook_url": py.url, "verify_token": VERIFY_TOKEN, "sandbox": true })),
        )
        .await;
    assert_eq!(
        (status, &created["webhook_verified"]),
        (201, &json!(true)),
        "{created}"
    );
    let (status, _) = node
        .admin(
            reqwest::Method::POST,
            &format!("/admin/v1/businesses/{waba}/phone_numbers"),
            Some(json!({ "phone_number_id": "2303", "display_phone_number": "+15550001303", "verified_name": "Sandbox" })),
        )
        .await;
    assert_eq!(status, 201);
    let (_, token) = node
        .admin(
            reqwest::Method::POST,
            &format!("/admin/v1/businesses/{waba}/tokens"),
            Some(json!({})),
        )
        .await;
    let token = token["token"].as_str().unwrap().to_owned();
    let shop: ventana_core::PhoneNumber = "15550001303".parse().unwrap();

    // The receiver fails, then times out, then is slow: the message arrives all the same.
    py.mode("fail").await;
    let bea = Device::register(&node, &tmp.path().join("bea"), "34600001303", "Bea").await;
    let first = bea.send(&shop, "are you there?").await;
    let first_event = format!("34600001303.{}", first.id);
    py.until("two failed attempts", WAIT, |e| e.len() >= 2)
        .await;
    py.mode("timeout").await;
    let before = py.events.len();
    py.until("an attempt that times out", WAIT, |e| e.len() > before)
        .await;
    py.mode("slow").await;
    py.until("the message accepted", WAIT, |e| {
        e.iter().any(|e| e["status"] == 200 && e["mode"] == "slow")
    })
    .await;
    assert_eq!(py.accepted_ids(), std::slice::from_ref(&first_event));

    // Replies while the receiver fails and comes back: every status arrives, in order.
    py.mode("fail").await;
    let mut replies = Vec::new();
    for n in 0..4 {
        let mut body = json!({ "messaging_product": "whatsapp", "to": "34600001303", "type": "text", "text": { "body": format!("reply {n}") } });
        if n == 0 {
            body["biz_opaque_callback_data"] = "order-7".into();
        }
        let (status, sent) = api(
            &node,
            reqwest::Method::POST,
            "/v23.0/2303/messages",
            &token,
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{sent}");
        replies.push(sent["messages"][0]["id"].as_str().unwrap().to_owned());
    }
    let mut bea = bea;
    for _ in 0..4 {
        let (meta, _) = bea.next_message().await;
        bea.endpoint
            .send_receipt(
                &shop,
                ventana_core::protocol::ReceiptStatus::Read,
                vec![meta.id],
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    py.mode("ok").await;
    let wanted: Vec<String> = replies
        .iter()
        .flat_map(|id| ["sent", "delivered", "read"].map(|s| format!("{id}.{s}")))
        .collect();
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let ids = py.accepted_ids();
            if wanted.iter().all(|w| ids.contains(w)) {
                return;
            }
            if let Some(line) = py.lines.recv().await
                && line["kind"] == "event"
            {
                py.events.push(line);
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "missing statuses: got {:?}",
        py.accepted_ids()
    );
    let statuses = assert_statuses_in_order(&py.accepted());
    assert!(statuses >= wanted.len());
    // The first reply's callback data comes back on each of its statuses, and no other's.
    for e in py.accepted() {
        let Some(status) = e["body"]["entry"][0]["changes"][0]["value"]["statuses"].get(0) else {
            continue;
        };
        let expected = if status["id"] == replies[0].as_str() {
            json!("order-7")
        } else {
            Value::Null
        };
        assert_eq!(status["biz_opaque_callback_data"], expected, "{status}");
    }
    assert_signed(&py.events);

    // A week of failures on the test clock: the event goes to the dead-letter queue.
    py.mode("fail").await;
    let doomed = bea.send(&shop, "anyone?").await;
    let doomed_event = format!("34600001303.{}", doomed.id);
    let failed_before = py.events.len();
    py.until("a failed attempt", WAIT, |e| {
        e[failed_before..]
            .iter()
            .any(|e| e["event_id"] == doomed_event.as_str())
    })
    .await;
    // The failure is recorded (its time on the business's clock with it) before the clock
    // moves: the week counts from there.
    let log_path = format!("/admin/v1/businesses/{waba}/webhooks/log?limit=500");
    tokio::time::timeout(WAIT, async {
        loop {
            let (_, log) = node.admin(reqwest::Method::GET, &log_path, None).await;
            if log["data"].as_array().is_some_and(|entries| {
                entries
                    .iter()
                    .any(|e| e["event_id"] == doomed_event.as_str() && e["http_status"] == 500)
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the failed attempt is recorded");
    let (status, _) = node.advance_clock(waba, 7 * 24 * 60 * 60 + 1).await;
    assert_eq!(status, 200);
    let dead_path = format!("/admin/v1/businesses/{waba}/webhooks/dead");
    let dead = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, dead) = node.admin(reqwest::Method::GET, &dead_path, None).await;
            if dead["data"].as_array().is_some_and(|d| !d.is_empty()) {
                return dead;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the event is dead-lettered");
    assert_eq!(dead["data"][0]["event_id"], doomed_event.as_str());
    assert_eq!(
        dead["data"][0]["last_error"],
        "the receiver answered HTTP 500"
    );

    // The delivery log has every attempt: the failures, the timeout, the successes.
    let (_, log) = node
        .admin(
            reqwest::Method::GET,
            &format!("/admin/v1/businesses/{waba}/webhooks/log?limit=500"),
            None,
        )
        .await;
    let log = log["data"].as_array().unwrap().clone();
    let of_first: Vec<&Value> = log
        .iter()
        .filter(|e| e["event_id"] == first_event.as_str())
        .collect();
    assert!(of_first.iter().any(|e| e["http_status"] == 500));
    assert!(of_first.iter().any(|e| e["error"] == "timed out after 2 s"));
    assert!(
        of_first
            .iter()
            .any(|e| e["http_status"] == 200 && e["error"].is_null())
    );
    assert!(
        of_first
            .iter()
            .all(|e| e["url"] == py.url.as_str() && e["latency_ms"].is_u64())
    );

    // Redriven once the receiver is back: it arrives under its own id.
    py.mode("ok").await;
    let (status, redriven) = node
        .admin(
            reqwest::Method::POST,
            &format!("/admin/v1/businesses/{waba}/webhooks/redrive"),
            Some(json!({})),
        )
        .await;
    assert_eq!((status, &redriven["redriven"]), (200, &json!(1)));
    py.until("the redriven event", WAIT, |e| {
        e.iter()
            .any(|e| e["event_id"] == doomed_event.as_str() && e["status"] == 200)
    })
    .await;

    // Replayed from the first event on: it and everything after, under their ids again.
    let accepted_before = py.accepted_ids().len();
    let (status, replayed) = node
        .admin(
            reqwest::Method::POST,
            &format!("/admin/v1/businesses/{waba}/webhooks/replay"),
            Some(json!({ "event_id": first_event })),
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    let replayed = usize::try_from(replayed["replayed"].as_u64().unwrap()).unwrap();
    // The first event and every reply's statuses at least (the redriven one too, unless its
    // delivery is still being recorded).
    assert!(replayed > wanted.len(), "{replayed}");
    let accepted = |e: &[Value]| {
        e.iter()
            .filter(|e| e["status"] == 200 && e["mode"] != "timeout")
            .count()
    };
    py.until("every replayed event", Duration::from_secs(60), |e| {
        accepted(e) >= accepted_before + replayed
    })
    .await;
    let again = py.accepted_ids();
    assert!(
        again[accepted_before..].contains(&first_event),
        "the replay starts with the first event"
    );
    assert_statuses_in_order(&py.accepted()[accepted_before..]);
    assert_signed(&py.events);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_events_in_flight_loses_none_and_takes_its_leases_back_at_restart() {
    killed_with_events_in_flight(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_killed_node_takes_its_leases_back_at_restart_while_another_runs() {
    let Some(db) = Database::create().await else {
        return;
    };
    killed_with_events_in_flight(Some(&db)).await;
}

/// SIGKILL while POSTs are in flight, and a restart under the same node name. The lease is
/// made 65 s long (a 60 s timeout): an event the dead process held arrives again well within
/// that only because the node takes its own leases back at start. On PostgreSQL a second
/// node runs throughout (and may not take them before the lease runs out).
///
/// The events in flight are read from the store: those leased to the node that is killed.
async fn killed_with_events_in_flight(db: Option<&Database>) {
    const MESSAGES: usize = 12;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("ventana.toml");
    std::fs::write(&config, "[webhooks]\ntimeout_secs = 60\n").unwrap();
    let seal_key = ventana_crypto::SealKey::generate().to_base64();
    let names: &[&'static str] = if db.is_some() { &["n1", "n2"] } else { &["n1"] };
    let mut nodes: Vec<ServeNode> = names
        .iter()
        .map(|name| {
            let mut node = ServeNode::new(name, free_port());
            node.env
                .push(("VENTANA_CONFIG", config.display().to_string()));
            node
        })
        .collect();
    let http = reqwest::Client::new();
    for node in &mut nodes {
        node.start(db, &seal_key, tmp.path());
        ready(&http, &node.url()).await;
    }
    let mut py = PyReceiver::start().await;
    py.mode("hold").await;
    let first = Node::attach(&nodes[0].url());
    let (status, created) = first
        .admin(
            reqwest::Method::POST,
            "/admin/v1/businesses",
            Some(json!({ "waba_id": "1304", "name": "Kill", "app_secret": APP_SECRET, "webhook_url": py.url, "verify_token": VERIFY_TOKEN })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, _) = first
        .admin(
            reqwest::Method::POST,
            "/admin/v1/businesses/1304/phone_numbers",
            Some(json!({ "phone_number_id": "2304", "display_phone_number": "+15550001304", "verified_name": "Kill" })),
        )
        .await;
    assert_eq!(status, 201);
    let shop: ventana_core::PhoneNumber = "15550001304".parse().unwrap();
    let cy = Device::register(&first, &tmp.path().join("cy"), "34600001304", "Cy").await;
    let mut expected = Vec::new();
    for n in 0..MESSAGES {
        let sent = cy.send(&shop, &format!("message {n}")).await;
        expected.push(format!("34600001304.{}", sent.id));
    }

    // POSTs have arrived, each to be answered only after 5 s: kill the node holding the
    // leases on them now (on PostgreSQL either node may have taken them).
    py.until("three events in flight", WAIT, |e| e.len() >= 3)
        .await;
    let mut held = Vec::new();
    for node in &nodes {
        held.push(leased_by(db, tmp.path(), node.name).await);
    }
    let victim = (0..nodes.len()).max_by_key(|n| held[*n].len()).unwrap();
    nodes[victim].kill();
    let in_flight = std::mem::take(&mut held[victim]);
    assert!(!in_flight.is_empty(), "nothing was in flight at the kill");
    py.mode("ok").await;
    nodes[victim].start(db, &seal_key, tmp.path());
    ready(&http, &nodes[victim].url()).await;

    // Within 30 s (the lease is 65 s): every event arrives, those in flight again.
    let after_kill = py.events.len();
    py.until(
        "every event, those in flight again",
        Duration::from_secs(30),
        |events| {
            let again: Vec<&str> = events[after_kill..]
                .iter()
                .filter(|e| e["status"] == 200)
                .map(|e| e["event_id"].as_str().unwrap())
                .collect();
            in_flight.iter().all(|id| again.contains(&id.as_str()))
                && expected
                    .iter()
                    .all(|id| events.iter().any(|e| e["event_id"] == id.as_str()))
        },
    )
    .await;
    assert_signed(&py.events);
    eprintln!(
        "killed with {} events in flight; {} requests in all for {MESSAGES} events",
        in_flight.len(),
        py.events.len()
    );
    // Nothing is left behind, nothing dead.
    let restarted = Node::attach(&nodes[victim].url());
    let (_, dead) = restarted
        .admin(
            reqwest::Method::GET,
            "/admin/v1/businesses/1304/webhooks/dead",
            None,
        )
        .await;
    assert_eq!(dead["data"], json!([]));
}

/// The ids of the queued webhook jobs leased to `node`, read from its store: PostgreSQL's
/// `gateway` schema, or the SQLite file in the node's data directory.
async fn leased_by(db: Option<&Database>, dir: &std::path::Path, node: &str) -> Vec<String> {
    const QUERY: &str = "SELECT id FROM webhooks WHERE state = 'queued' AND leased_by = $1";
    match db {
        Some(db) => {
            let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let query = QUERY.replace("FROM webhooks", "FROM gateway.webhooks");
            client
                .query(&query, &[&node])
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect()
        }
        None => {
            let file = rusqlite::Connection::open(dir.join(node).join("gateway.db")).unwrap();
            let mut statement = file.prepare(&QUERY.replace("$1", "?1")).unwrap();
            statement
                .query_map([node], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
    }
}
