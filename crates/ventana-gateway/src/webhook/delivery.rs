//! The webhook queue's worker: takes due jobs from the store, POSTs each to its business,
//! and records the outcome, until the business answers 2xx or the event is seven days old
//! (Meta's Cloud API retries for as long).
//!
//! Jobs are rows, not tasks, so a restart loses nothing; the worker holds no state between
//! rounds. Delivery is at least once: a crash between the POST and recording it resends the
//! event, with the same `X-Ventana-Event-Id`.

use super::sign::signature;
use futures_util::future::join_all;
use rand::Rng;
use reqwest::header::CONTENT_TYPE;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use ventana_core::{UnixTime, WabaId};
use ventana_crypto::Sealer;
use ventana_store::endpoint::WebhookJob;
use ventana_store::{GatewayStore, StoreError};

/// The associated data a job's body is sealed with is this prefix and the job id:
/// `webhook/<job id>`, so a body cannot be moved to another job.
pub(crate) const WEBHOOK_BODY_AAD_PREFIX: &str = "webhook/";

/// A business's app secret (the webhook signing key) is sealed with the associated data
/// `business/<waba id>/app_secret`: this prefix, the WABA id, and [`APP_SECRET_AAD_SUFFIX`].
pub(crate) const APP_SECRET_AAD_PREFIX: &str = "business/";
/// See [`APP_SECRET_AAD_PREFIX`].
pub(crate) const APP_SECRET_AAD_SUFFIX: &str = "/app_secret";

/// `webhook/<job id>`: the associated data of a job's sealed body.
pub(crate) fn webhook_body_aad(job_id: &str) -> Vec<u8> {
    format!("{WEBHOOK_BODY_AAD_PREFIX}{job_id}").into_bytes()
}

/// `business/<waba id>/app_secret`: the associated data of a business's sealed app secret.
pub(crate) fn app_secret_aad(waba: &WabaId) -> Vec<u8> {
    format!("{APP_SECRET_AAD_PREFIX}{waba}{APP_SECRET_AAD_SUFFIX}").into_bytes()
}

/// How long a node holds the jobs it took: long enough for one round of deliveries (each is
/// bounded by the request timeout); if the node dies, another takes them over after this.
const LEASE_SECS: i64 = 30;
/// Jobs taken from the store per round, and so at most this many POSTs in flight.
const BATCH: u32 = 32;
/// A receiver that has not answered by then is counted as failed; Meta asks for far less.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the worker sleeps without looking at the queue, in case a wake was missed
/// (a job queued by another process sharing the database, say).
const MAX_IDLE: Duration = Duration::from_secs(30);
/// The shortest sleep, so a store that reports a due job it then does not hand out cannot
/// make the worker spin.
const MIN_IDLE: Duration = Duration::from_millis(100);
/// The longest wait between two attempts at one event.
const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// How long an event is retried before it is dropped, as Meta does.
const MAX_AGE_SECS: i64 = 7 * 24 * 60 * 60;

const USER_AGENT: &str = "Ventana-Webhooks/1";
const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// A Ventana extension: the job id, stable across retries, for receivers that de-duplicate.
const EVENT_ID_HEADER: &str = "X-Ventana-Event-Id";

/// Why one attempt failed; its text is kept as the job's `last_error`.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("the business {0} does not exist")]
    NoBusiness(WabaId),
    #[error("the business has no webhook URL configured")]
    NoWebhookUrl,
    #[error("the {0} could not be unsealed: wrong seal key, or tampered with")]
    Unseal(&'static str),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("the receiver answered HTTP {0}")]
    Status(reqwest::StatusCode),
}

/// Delivers queued webhook events. Build one with [`WebhookDispatcher::new`] and spawn
/// [`WebhookDispatcher::run`].
pub(crate) struct WebhookDispatcher {
    /// This node, as named in the leases it takes on jobs.
    node: String,
    store: Arc<dyn GatewayStore>,
    sealer: Sealer,
    http: reqwest::Client,
    wake: Arc<Notify>,
}

impl WebhookDispatcher {
    /// `wake` is shared with the code that queues jobs: it calls `wake.notify_one()` after
    /// committing one (`notify_one` keeps the wake-up if the worker is busy, unlike
    /// `notify_waiters`). Fails only if the HTTP client's TLS backend cannot start.
    pub(crate) fn new(
        store: Arc<dyn GatewayStore>,
        sealer: Sealer,
        wake: Arc<Notify>,
        node: String,
    ) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect is not a 200: following one would send the signed event somewhere
            // the business did not configure.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Self {
            store,
            sealer,
            http,
            wake,
            node,
        })
    }

    /// Delivers until `shutdown` turns true (or its sender is dropped). A round in progress
    /// is finished first, so no POST is cut off halfway; each is bounded by the timeout.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!("webhook dispatcher started");
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let round = self.round().await;
            if round == Round::Full {
                // More may be due right now: go on without sleeping.
                continue;
            }
            let idle = match round {
                Round::StoreTrouble => MAX_IDLE,
                _ => self.idle_time().await,
            };
            tokio::select! {
                () = tokio::time::sleep(idle) => {}
                () = self.wake.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        tracing::info!("webhook dispatcher stopped");
    }

    /// One round: deliver the jobs due now, concurrently so one slow business does not hold
    /// up the others for longer than the request timeout. Jobs of one business may then
    /// arrive out of order, as they may from Meta.
    async fn round(&self) -> Round {
        let jobs = match self
            .store
            .lease_webhooks(&self.node, UnixTime::now(), LEASE_SECS, BATCH)
            .await
        {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::error!(%error, "could not read due webhooks");
                return Round::StoreTrouble;
            }
        };
        let full = jobs.len() == BATCH as usize;
        // One POST per job id at a time, even if the store were to hand one out twice.
        let mut seen = HashSet::new();
        let jobs = jobs.into_iter().filter(|job| seen.insert(job.id.clone()));
        let recorded = join_all(jobs.map(|job| self.deliver(job))).await;
        if recorded.contains(&false) {
            // Outcomes that were not recorded would be due again at once: pause instead.
            Round::StoreTrouble
        } else if full {
            Round::Full
        } else {
            Round::Partial
        }
    }

    /// How long to sleep before the next job falls due.
    async fn idle_time(&self) -> Duration {
        match self.store.next_webhook_due().await {
            Ok(Some(due)) => {
                // Whole seconds from a clock read in whole seconds: sleeping this long never
                // wakes before `due`.
                let secs = u64::try_from(due.0.saturating_sub(UnixTime::now().0)).unwrap_or(0);
                Duration::from_secs(secs).clamp(MIN_IDLE, MAX_IDLE)
            }
            Ok(None) => MAX_IDLE,
            Err(error) => {
                tracing::error!(%error, "could not read the next webhook due time");
                MAX_IDLE
            }
        }
    }

    /// Attempts one job and records the outcome; false if the outcome could not be recorded.
    async fn deliver(&self, job: WebhookJob) -> bool {
        let (id, waba, attempt) = (&job.id, &job.waba_id, job.attempts.saturating_add(1));
        let recorded = match self.attempt(&job).await {
            Ok(()) => {
                tracing::debug!(job = %id, %waba, attempt, "webhook delivered");
                self.store.webhook_delivered(id).await
            }
            Err(error) if UnixTime::now().0.saturating_sub(job.created_at.0) >= MAX_AGE_SECS => {
                // Seven days of failures: the business has had every chance Meta would give
                // it. Deleting the job (the store's "delivered") keeps the queue from growing
                // without bound; the event is lost to the business, so say so loudly.
                tracing::warn!(job = %id, %waba, attempt, %error, "webhook failing for 7 days, dropped");
                self.store.webhook_delivered(id).await
            }
            Err(error) => {
                let delay = backoff(job.attempts);
                let delay_secs =
                    i64::try_from(delay.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
                if matches!(error, AttemptError::Unseal(_) | AttemptError::Store(_)) {
                    // Our fault, not the receiver's: an operator has to look.
                    tracing::error!(job = %id, %waba, attempt, %error, "webhook not sent");
                } else {
                    tracing::warn!(job = %id, %waba, attempt, retry_in_secs = delay_secs, %error, "webhook not delivered");
                }
                let next = UnixTime::now().plus_secs(delay_secs);
                self.store
                    .webhook_retry(id, attempt, next, &error.to_string())
                    .await
            }
        };
        if let Err(error) = &recorded {
            tracing::error!(job = %id, %error, "could not record a webhook outcome");
        }
        recorded.is_ok()
    }

    /// One POST of a job's exact bytes, signed with its business's app secret.
    async fn attempt(&self, job: &WebhookJob) -> Result<(), AttemptError> {
        // A missing business, URL or secret may be fixed by an operator later (and an
        // unsealing failure usually means a misconfigured seal key), so every failure here
        // is retried like a failed POST rather than dropping the event at once.
        let business = self
            .store
            .business(&job.waba_id)
            .await?
            .ok_or_else(|| AttemptError::NoBusiness(job.waba_id.clone()))?;
        let url = business
            .webhook_url
            .as_deref()
            .ok_or(AttemptError::NoWebhookUrl)?;
        let body = self
            .sealer
            .open(&webhook_body_aad(&job.id), &job.body_sealed)
            .map_err(|_| AttemptError::Unseal("event body"))?;
        let secret = self
            .sealer
            .open(&app_secret_aad(&job.waba_id), &business.app_secret_sealed)
            .map_err(|_| AttemptError::Unseal("app secret"))?;
        let response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&secret, &body))
            .header(EVENT_ID_HEADER, job.id.as_str())
            // A `Vec` body gets a `Content-Length`, which whatsapp-api-js requires.
            .body(body.to_vec())
            .send()
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(AttemptError::Status(response.status()))
        }
    }
}

/// What a round found, to decide how long to wait before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The batch was full: more jobs may be due.
    Full,
    /// Every due job was handled.
    Partial,
    /// The store failed; wait before trying again.
    StoreTrouble,
}

/// The upper bound of the wait after the `attempts`-th failed attempt: 1 s, 2 s, 4 s, …,
/// doubling up to one hour.
fn backoff_ceiling(attempts: u32) -> Duration {
    // 2^12 s already exceeds an hour; the `min` keeps the shift in range.
    Duration::from_secs(1u64 << attempts.min(12)).min(MAX_BACKOFF)
}

/// The wait before the next attempt after `attempts` failed ones (0 for the first failure):
/// the ceiling less up to a quarter of it at random, so receivers that come back after an
/// outage are not hit by every queued event in the same second.
fn backoff(attempts: u32) -> Duration {
    let ceiling = backoff_ceiling(attempts);
    ceiling.mul_f64(1.0 - rand::thread_rng().gen_range(0.0..0.25))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn backoff_doubles_from_one_second() {
        assert_eq!(backoff_ceiling(0), Duration::from_secs(1));
        assert_eq!(backoff_ceiling(1), Duration::from_secs(2));
        assert_eq!(backoff_ceiling(2), Duration::from_secs(4));
        assert_eq!(backoff_ceiling(10), Duration::from_secs(1024));
    }

    #[test]
    fn backoff_is_capped_at_one_hour_however_many_attempts() {
        assert_eq!(backoff_ceiling(11), Duration::from_secs(2048));
        assert_eq!(backoff_ceiling(12), MAX_BACKOFF);
        assert_eq!(backoff_ceiling(63), MAX_BACKOFF);
        assert_eq!(backoff_ceiling(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn backoff_jitters_within_the_top_quarter_below_the_ceiling() {
        for attempts in [0, 1, 5, 12, 40] {
            let ceiling = backoff_ceiling(attempts);
            let waits: HashSet<Duration> = (0..200).map(|_| backoff(attempts)).collect();
            assert!(
                waits
                    .iter()
                    .all(|wait| *wait <= ceiling && *wait >= ceiling.mul_f64(0.75)),
                "{attempts}"
            );
            assert!(waits.len() > 1, "no jitter at {attempts}");
        }
    }

    #[test]
    fn the_associated_data_names_the_row() {
        assert_eq!(webhook_body_aad("abc"), b"webhook/abc");
        assert_eq!(
            app_secret_aad(&"102290129340398".parse().unwrap()),
            b"business/102290129340398/app_secret"
        );
    }

    /// The worker against a real SQLite store and a real receiver on loopback.
    mod worker {
        use super::*;
        use crate::webhook::sign::{ascii_json, lower_hex};
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::post;
        use rand::RngCore;
        use serde_json::{Value, json};
        use std::path::PathBuf;
        use std::sync::Mutex;
        use std::time::Instant;
        use ventana_crypto::SealKey;
        use ventana_store::EndpointStore;
        use ventana_store::endpoint::{AppRecord, BusinessRecord};
        use ventana_store::sqlite::SqliteEndpointStore;

        const WABA: &str = "102290129340398";
        const APP_SECRET: &[u8] = b"app secret of the business";

        type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

        /// A webhook receiver answering every POST with `status`, recording what it got.
        async fn receiver(status: StatusCode) -> (String, Received) {
            let received = Received::default();
            let app = axum::Router::new()
                .route(
                    "/hook",
                    post(move |State(seen): State<Received>, headers: HeaderMap, body: Bytes| async move {
                        seen.lock().unwrap().push((headers, body));
                        status
                    }),
                )
                .with_state(received.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/hook", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (url, received)
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
                let path =
                    std::env::temp_dir().join(format!("ventana-webhook-{}.db", lower_hex(&name)));
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

        async fn business(store: &SqliteEndpointStore, sealer: &Sealer, url: Option<&str>) {
            let waba: WabaId = WABA.parse().unwrap();
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

        async fn queue(store: &SqliteEndpointStore, job: WebhookJob) {
            let owner = "15550783881".parse().unwrap();
            store
                .apply(&owner, vec![AppRecord::Webhook(job)])
                .await
                .unwrap();
        }

        /// A job for `event`, sealed as the gateway seals them, first due at `created_at`.
        fn job(sealer: &Sealer, event: &Value, created_at: UnixTime) -> WebhookJob {
            let mut id = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut id);
            let id = lower_hex(&id);
            WebhookJob {
                body_sealed: sealer.seal(&webhook_body_aad(&id), &ascii_json(event)),
                id,
                waba_id: WABA.parse().unwrap(),
                attempts: 0,
                next_attempt_at: created_at,
                created_at,
            }
        }

        /// A queued job as the file holds it.
        struct Queued {
            attempts: u32,
            next_attempt_at: UnixTime,
        }

        /// The queue read straight from the file, so the worker's leases are left alone.
        fn queued(temp: &TempStore) -> Vec<Queued> {
            let db = rusqlite::Connection::open(&temp.path).unwrap();
            let mut stmt = db
                .prepare("SELECT attempts, next_attempt_at FROM webhooks ORDER BY created_at")
                .unwrap();
            stmt.query_map([], |row| {
                Ok(Queued {
                    attempts: row.get(0)?,
                    next_attempt_at: UnixTime(row.get(1)?),
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
                    start.elapsed() < Duration::from_secs(10),
                    "timed out waiting until {what}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        /// Starts the worker; dropping the returned sender stops it.
        fn start(
            store: &Arc<SqliteEndpointStore>,
            sealer: &Sealer,
        ) -> (
            watch::Sender<bool>,
            tokio::task::JoinHandle<()>,
            Arc<Notify>,
        ) {
            let wake = Arc::new(Notify::new());
            let dispatcher = WebhookDispatcher::new(
                store.clone(),
                sealer.clone(),
                wake.clone(),
                "test-node".into(),
            )
            .unwrap();
            let (stop, shutdown) = watch::channel(false);
            (stop, tokio::spawn(dispatcher.run(shutdown)), wake)
        }

        #[tokio::test]
        async fn a_queued_event_is_posted_as_signed_ascii_json_and_then_removed() {
            let temp = TempStore::new();
            let sealer = Sealer::new(SealKey::generate());
            let (url, received) = receiver(StatusCode::OK).await;
            business(&temp.store, &sealer, Some(&url)).await;
            let (stop, worker, wake) = start(&temp.store, &sealer);

            let event = json!({"object": "whatsapp_business_account", "text": "olá 😀"});
            let job = job(&sealer, &event, UnixTime::now());
            let id = job.id.clone();
            queue(&temp.store, job).await;
            wake.notify_one();

            eventually("the event is received", || async {
                !received.lock().unwrap().is_empty()
            })
            .await;
            eventually("the job is removed", || async { queued(&temp).is_empty() }).await;
            let (headers, body) = received.lock().unwrap()[0].clone();
            assert_eq!(body.as_ref(), ascii_json(&event).as_slice());
            assert_eq!(
                headers["x-hub-signature-256"],
                signature(APP_SECRET, &body).as_str()
            );
            assert_eq!(headers["content-type"], "application/json");
            assert_eq!(headers["content-length"], body.len().to_string().as_str());
            assert_eq!(headers["user-agent"], USER_AGENT);
            assert_eq!(headers["x-ventana-event-id"], id.as_str());

            stop.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(5), worker)
                .await
                .unwrap()
                .unwrap();
        }

        #[tokio::test]
        async fn a_refused_event_is_kept_for_a_later_attempt() {
            let temp = TempStore::new();
            let sealer = Sealer::new(SealKey::generate());
            let (url, received) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
            business(&temp.store, &sealer, Some(&url)).await;
            let now = UnixTime::now();
            queue(&temp.store, job(&sealer, &json!({}), now)).await;
            let (stop, worker, _wake) = start(&temp.store, &sealer);

            eventually("the first attempt", || async {
                !received.lock().unwrap().is_empty()
            })
            .await;
            eventually("the retry is recorded", || async {
                queued(&temp).first().is_some_and(|job| job.attempts >= 1)
            })
            .await;
            let job = queued(&temp).remove(0);
            assert!(job.next_attempt_at > now, "retried at once");

            drop(stop);
            tokio::time::timeout(Duration::from_secs(5), worker)
                .await
                .unwrap()
                .unwrap();
        }

        #[tokio::test]
        async fn an_event_failing_for_seven_days_is_dropped() {
            let temp = TempStore::new();
            let sealer = Sealer::new(SealKey::generate());
            let (url, received) = receiver(StatusCode::SERVICE_UNAVAILABLE).await;
            business(&temp.store, &sealer, Some(&url)).await;
            let week_ago = UnixTime::now().plus_secs(-MAX_AGE_SECS - 1);
            queue(&temp.store, job(&sealer, &json!({}), week_ago)).await;
            let (stop, worker, _wake) = start(&temp.store, &sealer);

            eventually("the last attempt", || async {
                !received.lock().unwrap().is_empty()
            })
            .await;
            eventually("the job is dropped", || async { queued(&temp).is_empty() }).await;

            stop.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(5), worker)
                .await
                .unwrap()
                .unwrap();
        }

        #[tokio::test]
        async fn an_event_for_a_business_without_a_url_waits_for_one() {
            let temp = TempStore::new();
            let sealer = Sealer::new(SealKey::generate());
            business(&temp.store, &sealer, None).await;
            queue(&temp.store, job(&sealer, &json!({}), UnixTime::now())).await;
            let (stop, worker, _wake) = start(&temp.store, &sealer);

            eventually("the attempt is recorded", || async {
                queued(&temp).first().is_some_and(|job| job.attempts == 1)
            })
            .await;

            stop.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(5), worker)
                .await
                .unwrap()
                .unwrap();
        }
    }
}
