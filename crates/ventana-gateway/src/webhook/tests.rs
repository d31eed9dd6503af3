//! The delivery worker against a real SQLite store and real receivers on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::WebhookSettings;
use super::delivery::{BusinessClock, WebhookDispatcher, app_secret_aad, webhook_body_aad};
use super::sign::{ascii_json, lower_hex, signature, timestamped_signature};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rand::RngCore;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use ventana_core::{UnixTime, WabaId};
use ventana_crypto::{SealKey, Sealer};
use ventana_store::EndpointStore;
use ventana_store::endpoint::{AppRecord, BusinessRecord};
use ventana_store::sqlite::SqliteEndpointStore;
use ventana_store::webhook::WebhookJob;

const WABA: &str = "102290129340398";
const OTHER_WABA: &str = "102290129340399";
const APP_SECRET: &[u8] = b"app secret of the business";

/// What a receiver got, in arrival order.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// How a receiver answers: after `delay`, `status`, except that the first `fail_first`
/// POSTs of an event (by `X-Ventana-Event-Id`) get 503.
#[derive(Clone)]
struct Behaviour {
    status: StatusCode,
    delay: Duration,
    fail_first_of: Option<String>,
}

impl Behaviour {
    fn answering(status: StatusCode) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            fail_first_of: None,
        }
    }
}

#[derive(Clone, Default)]
struct Receiver {
    received: Received,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    failed_once: Arc<Mutex<bool>>,
}

/// A webhook receiver on loopback answering as `behaviour` says, recording what it got
/// (only what it accepted) and how many POSTs it had at once, at most.
async fn receiver(behaviour: Behaviour) -> (String, Receiver) {
    let state = Receiver::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                move |State(seen): State<Receiver>, headers: HeaderMap, body: Bytes| {
                    let behaviour = behaviour.clone();
                    async move {
                        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.most_in_flight.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(behaviour.delay).await;
                        seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                        let event = headers["x-ventana-event-id"].to_str().unwrap().to_owned();
                        if behaviour.fail_first_of.as_deref() == Some(event.as_str()) {
                            let mut failed = seen.failed_once.lock().unwrap();
                            if !*failed {
                                *failed = true;
                                return StatusCode::SERVICE_UNAVAILABLE;
                            }
                        }
                        if behaviour.status.is_success() {
                            seen.received.lock().unwrap().push((headers, body));
                        }
                        behaviour.status
                    }
                },
            ),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// A fresh gateway store file, removed when dropped.
struct TempStore {
    path: PathBuf,
    store: Arc<SqliteEndpointStore>,
}

impl TempStore {
    fn new() -> Self {
        let mut name = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut name);
        let path = std::env::temp_dir().join(format!("ventana-webhook-{}.db", lower_hex(&name)));
        let store = Arc::new(SqliteEndpointStore::open(&path).unwrap());
        Self { path, store }
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

async fn business(store: &SqliteEndpointStore, sealer: &Sealer, waba: &str, url: Option<&str>) {
    let waba: WabaId = waba.parse().unwrap();
    store
        .create_business(BusinessRecord {
            app_secret_sealed: sealer.seal(&app_secret_aad(&waba), APP_SECRET),
            waba_id: waba,
            name: "Shop".to_owned(),
            webhook_url: url.map(str::to_owned),
            verify_token_sealed: Vec::new(),
            sandbox: false,
            created_at: UnixTime::now(),
        })
        .await
        .unwrap();
}

use ventana_store::{GatewayStore as _, WebhookStore as _};

async fn queue(store: &SqliteEndpointStore, jobs: Vec<WebhookJob>) {
    let owner = "15550783881".parse().unwrap();
    store
        .apply(&owner, jobs.into_iter().map(AppRecord::Webhook).collect())
        .await
        .unwrap();
}

/// A job of business `waba` for `event`, sealed as the gateway seals them.
fn job(
    sealer: &Sealer,
    waba: &str,
    id: &str,
    order_key: Option<&str>,
    event: &Value,
) -> WebhookJob {
    let now = UnixTime::now();
    WebhookJob {
        body_sealed: sealer.seal(&webhook_body_aad(id), &ascii_json(event)),
        id: id.to_owned(),
        waba_id: waba.parse().unwrap(),
        phone_number_id: None,
        order_key: order_key.map(str::to_owned),
        attempts: 0,
        next_attempt_at: now,
        created_at: now,
        failing_since: None,
    }
}

/// A queued job as the file holds it.
#[derive(Debug)]
struct Queued {
    id: String,
    attempts: u32,
    next_attempt_at: UnixTime,
    state: String,
}

/// The queue read straight from the file, so the worker's leases are left alone.
fn queued(temp: &TempStore) -> Vec<Queued> {
    let db = rusqlite::Connection::open(&temp.path).unwrap();
    let mut stmt = db
        .prepare("SELECT id, attempts, next_attempt_at, state FROM webhooks ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |row| {
        Ok(Queued {
            id: row.get(0)?,
            attempts: row.get(1)?,
            next_attempt_at: UnixTime(row.get(2)?),
            state: row.get(3)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wall_clock() -> BusinessClock {
    Arc::new(|_| Box::pin(async { UnixTime::now() }))
}

/// A running worker; stopping it waits for its POSTs in flight.
struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    wake: Arc<Notify>,
}

impl Worker {
    fn start(store: &Arc<SqliteEndpointStore>, sealer: &Sealer, settings: WebhookSettings) -> Self {
        let wake = Arc::new(Notify::new());
        let dispatcher = WebhookDispatcher::new(
            store.clone(),
            sealer.clone(),
            wake.clone(),
            "test-node".into(),
            settings,
            wall_clock(),
        )
        .unwrap();
        let (stop, shutdown) = watch::channel(false);
        Self {
            stop,
            task: tokio::spawn(dispatcher.run(shutdown)),
            wake,
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn a_queued_event_is_posted_signed_twice_and_kept_as_delivered() {
    let temp = TempStore::new();
    let sealer = Sealer::new(SealKey::generate());
    let (url, receiver) = receiver(Behaviour::answering(StatusCode::OK)).await;
    business(&temp.store, &sealer, WABA, Some(&url)).await;
    let worker = Worker::start(&temp.store, &sealer, WebhookSettings::default());

    let event = json!({"object": "whatsapp_business_account", "text": "olá 😀"});
    queue(&temp.store, vec![job(&sealer, WABA, "e1", None, &event)]).await;
    worker.wake.notify_one();

    eventually("the job is delivered", || async {
        queued(&temp)
            .first()
            .is_some_and(|j| j.state == "delivered")
    })
    .await;
    let (headers, body) = receiver.received.lock().unwrap()[0].clone();
    assert_eq!(body.as_ref(), ascii_json(&event).as_slice());
    assert_eq!(
        headers["x-hub-signature-256"],
        signature(APP_SECRET, &body).as_str()
    );
    // `t=<time>,v1=<HMAC of "<time>.<body>">`, made just now.
    let stamped = headers["x-ventana-signature"].to_str().unwrap();
    let at: i64 = stamped
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((UnixTime::now().0 - at).abs() <= 5);
    assert_eq!(stamped, timestamped_signature(APP_SECRET, at, &body));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["content-length"], body.len().to_string().as_str());
    assert_eq!(headers["x-ventana-event-id"], "e1");

    // The attempt is in the delivery log.
    let log = temp
        .store
        .webhook_log(&WABA.parse().unwrap(), None, 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    let entry = &log[0].attempt;
    assert_eq!(
        (
            entry.event_id.as_str(),
            entry.http_status,
            entry.error.as_deref(),
            entry.url.as_deref()
        ),
        ("e1", Some(200), None, Some(url.as_str()))
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_refused_event_is_kept_for_a_later_attempt_and_logged() {
    let temp = TempStore::new();
    let sealer = Sealer::new(SealKey::generate());
    let (url, _receiver) = receiver(Behaviour::answering(StatusCode::INTERNAL_SERVER_ERROR)).await;
    business(&temp.store, &sealer, WABA, Some(&url)).await;
    let now = UnixTime::now();
    queue(
        &temp.store,
        vec![job(&sealer, WABA, "e1", None, &json!({}))],
    )
    .await;
    let worker = Worker::start(&temp.store, &sealer, WebhookSettings::default());

    eventually("the retry is recorded", || async {
        queued(&temp).first().is_some_and(|job| job.attempts >= 1)
    })
    .await;
    let job = queued(&temp).remove(0);
    assert!(job.next_attempt_at > now, "retried at once");
    assert_eq!(job.state, "queued");
    let log = temp
        .store
        .webhook_log(&WABA.parse().unwrap(), None, 10)
        .await
        .unwrap();
    assert_eq!(log[0].attempt.http_status, Some(500));
    assert_eq!(
        log[0].attempt.error.as_deref(),
        Some("the receiver answered HTTP 500")
    );
    worker.stop().await;
}

#[tokio::test]
async fn an_event_failing_for_the_retry_period_is_dead_lettered() {
    let temp = TempStore::new();
    let sealer = Sealer::new(SealKey::generate());
    let (url, _receiver) = receiver(Behaviour::answering(StatusCode::SERVICE_UNAVAILABLE)).await;
    business(&temp.store, &sealer, WABA, Some(&url)).await;
    let settings = WebhookSettings::default();
    let failing = WebhookJob {
        attempts: 30,
        failing_since: Some(UnixTime::now().plus_secs(-settings.retry_for_secs - 1)),
        ..job(&sealer, WABA, "e1", None, &json!({}))
    };
    queue(&temp.store, vec![failing]).await;
    let worker = Worker::start(&temp.store, &sealer, settings);

    eventually("the job is dead", || async {
        queued(&temp).first().is_some_and(|j| j.state == "dead")
    })
    .await;
    assert_eq!(queued(&temp)[0].attempts, 31);
    worker.stop().await;
}

#[tokio::test]
async fn an_event_for_a_business_without_a_callback_waits_for_one() {
    let temp = TempStore::new();
    let sealer = Sealer::new(SealKey::generate());
    business(&temp.store, &sealer, WABA, None).await;
    queue(
        &temp.store,
        vec![job(&sealer, WABA, "e1", None, &json!({}))],
    )
    .await;
    let worker = Worker::start(&temp.store, &sealer, WebhookSettings::default());

    eventually("the attempt is recorded", || async {
        queued(&temp).first().is_some_and(|job| job.attempts == 1)
    })
    .await;
    let log = temp
        .store
        .webhook_log(&WABA.parse().unwrap(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        log[0].attempt.error.as_deref(),
        Some("the business has no webhook callback configured")
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_slow_receiver_delays_no_other_business_and_gets_no_more_than_its_limit() {
    let temp = TempStore::new();
    let sealer = Sealer::new(SealKey::generate());
    let slow = Behaviour {
        delay: Duration::from_secs(2),
        ..Behaviour::answering(StatusCode::OK)
    };
    let (slow_url, slow_receiver) = receiver(slow).await;
    let (fast_url, fast_receiver) = receiver(Behaviour::answering(StatusCode::OK)).await;
    business(&temp.store, &sealer, WABA, Some(&slow_url)).await;
    business(&temp.store, &sealer, OTHER_WABA, Some(&fast_url)).await;
    let settings = WebhookSettings {
        per_endpoint: 2,
        ..WebhookSettings::default()
    };
    // Six events for the slow receiver first, then one for the other business.
    let mut jobs: Vec<WebhookJob> = (0..6)
        .map(|n| job(&sealer, WABA, &format!("slow{n}"), None, &json!({ "n": n })))
        .collect();
    jobs.push(job(&sealer, OTHER_WABA, "fast", None, &json!({})));
    queue(&temp.store, jobs).await;
    let started = Instant::now();
    let worker = Worker::start(&temp.store, &sealer, settings);

    eventually("the other business's event arrives", || async {
        !fast_receiver.received.lock().unwrap().is_empty()
    })
    .await;
    let fast_after = started.elapsed();
    assert!(
        slow_receiver.received.lock().unwrap().is_empty(),
        "the other business waited for the slow receiver"
    );
    eventually("every slow event arrives", || async {
        slow_receiver.received.lock().unwrap().len() == 6
    })
    .await;
    assert_eq!(slow_receiver.most_in_flight.load(Ordering::SeqCst), 2);
    eprintln!(
        "fast receiver served after {fast_after:?}; the slow one, 6 events of 2 s at 2 at a time, after {:?}",
        started.elapsed()
    );
    worker.stop().await;
}

#[tokio::test]
async fn the_statuses_of_a_message_arrive_in_order_though_the_first_is_retried() {
    let temp = TempStore::new();
    let sealer = Sealer::new(SealKey::generate());
    let (url, receiver) = receiver(Behaviour {
        fail_first_of: Some("m.sent".into()),
        ..Behaviour::answering(StatusCode::OK)
    })
    .await;
    business(&temp.store, &sealer, WABA, Some(&url)).await;
    let statuses = ["sent", "delivered", "read"];
    let jobs = statuses
        .iter()
        .map(|s| {
            job(
                &sealer,
                WABA,
                &format!("m.{s}"),
                Some("status/m"),
                &json!({ "status": s }),
            )
        })
        .collect();
    queue(&temp.store, jobs).await;
    let worker = Worker::start(&temp.store, &sealer, WebhookSettings::default());

    eventually("every status arrives", || async {
        receiver.received.lock().unwrap().len() == 3
    })
    .await;
    let arrived: Vec<String> = receiver
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(headers, _)| headers["x-ventana-event-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(arrived, ["m.sent", "m.delivered", "m.read"]);
    assert_eq!(queued(&temp)[0].id, "m.sent");
    assert_eq!(queued(&temp)[0].attempts, 2);
    worker.stop().await;
}
