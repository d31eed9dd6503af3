//! The webhook queue's worker: a sliding window of POSTs, each job taken from the store as a
//! slot frees up, until its business answers 2xx or it has failed for the retry period
//! (seven days by default, as Meta's Cloud API), when it goes to the dead-letter queue.
//!
//! - **No head-of-line blocking.** Each POST is its own task: nothing waits for a round's
//!   slowest receiver, and a lease or a store write never holds up a POST in flight. A
//!   receiver (one callback URL) has at most `per_endpoint` POSTs in flight from this node;
//!   the store passes over the jobs of a receiver that has no room, so a slow or dead one
//!   delays nobody else's events, nor its own beyond its limit.
//! - **In order.** The store hands out the statuses of one message one at a time, in the
//!   order they happened (`order_key`), so a receiver never sees one go backwards.
//! - **Leases as short as a POST.** A job is leased only when it is about to be sent, for the
//!   request timeout and a margin: an event whose node died waits no longer than that, and
//!   at start a node takes back the leases a dead process left under its name.
//! - **At least once.** A crash between the POST and recording it sends the event again,
//!   under the same `X-Ventana-Event-Id`. Every attempt is logged (the delivery log).

use super::WebhookSettings;
use super::sign::{signature, timestamped_signature};
use super::target::callback_client;
use super::window::{Finished, Window};
use futures_util::future::BoxFuture;
use rand::Rng;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use ventana_core::{UnixTime, WabaId};
use ventana_crypto::Sealer;
use ventana_store::webhook::{
    LeaseRequest, WebhookAttempt, WebhookJob, WebhookOutcome, WebhookRouting, route_key,
};
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

/// A lease outlives the POST it covers (bounded by the request timeout) by this much.
const LEASE_MARGIN_SECS: i64 = 5;
/// Jobs taken from the store at once, at most: one write leases them all.
const LEASE_BATCH: usize = 64;
/// The longest the worker sleeps without looking at the queue, in case a wake was missed
/// (a job queued by another node sharing the database, say).
const MAX_IDLE: Duration = Duration::from_secs(5);
/// The shortest sleep, so a store that reports a due job it then does not hand out (one
/// leased by another node, or behind an earlier status) cannot make the worker spin.
const MIN_IDLE: Duration = Duration::from_millis(100);
/// The pause after the store failed.
const STORE_TROUBLE: Duration = Duration::from_secs(1);
/// How often settled events and log entries past their retention are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

const USER_AGENT: &str = "Ventana-Webhooks/1";
const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// A Ventana extension: the job id, stable across retries, for receivers that de-duplicate.
const EVENT_ID_HEADER: &str = "X-Ventana-Event-Id";
/// A Ventana extension: a signature over the time and the body, against replay.
const TIMESTAMPED_SIGNATURE_HEADER: &str = "X-Ventana-Signature";

/// A business's clock: the wall clock, or a sandbox's test clock.
pub(crate) type BusinessClock = Arc<dyn Fn(WabaId) -> BoxFuture<'static, UnixTime> + Send + Sync>;

/// Why one attempt failed; its text goes to the delivery log.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("the business {0} does not exist")]
    NoBusiness(WabaId),
    #[error("{0}")]
    NoCallback(&'static str),
    #[error("the {0} could not be unsealed: wrong seal key, or tampered with")]
    Unseal(&'static str),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("timed out after {0} s")]
    Timeout(u64),
    #[error("request failed: {0}")]
    Transport(reqwest::Error),
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
}

/// Delivers queued webhook events. Build one with [`WebhookDispatcher::new`] and spawn
/// [`WebhookDispatcher::run`].
pub(crate) struct WebhookDispatcher {
    inner: Arc<Inner>,
}

/// What every delivery task shares.
struct Inner {
    /// This node, as named in the leases it takes.
    node: String,
    store: Arc<dyn GatewayStore>,
    sealer: Sealer,
    http: reqwest::Client,
    wake: Arc<Notify>,
    settings: WebhookSettings,
    clock: BusinessClock,
}

/// What a look at the queue found.
enum Look {
    /// The lease was full: more may be due right now.
    More,
    /// Every due job this node can take now was taken.
    Drained,
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
        settings: WebhookSettings,
        clock: BusinessClock,
    ) -> reqwest::Result<Self> {
        let http = callback_client(
            settings.policy(),
            Duration::from_secs(settings.timeout_secs),
            USER_AGENT,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                node,
                store,
                sealer,
                http,
                wake,
                settings,
                clock,
            }),
        })
    }

    /// Delivers until `shutdown` turns true (or its sender is dropped). POSTs in flight are
    /// finished first, so none is cut off halfway; each is bounded by the timeout.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let inner = &self.inner;
        // A process that died under this node's name left leases nobody else takes until
        // they run out; this node knows they are dead.
        match inner.store.release_node_webhooks(&inner.node).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                jobs = n,
                "took back the webhook leases of this node's previous run"
            ),
            Err(error) => tracing::error!(%error, "could not take back this node's webhook leases"),
        }
        tracing::info!("webhook dispatcher started");
        let max_in_flight = inner.settings.max_in_flight;
        let per_endpoint = inner.settings.per_endpoint.max(1);
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut window = Window::default();
        // A task says here when its POST is over: its receiver's slot is free then, before
        // the outcome is written.
        let (posted, mut posts_done) = tokio::sync::mpsc::unbounded_channel();
        // Whether to look at the queue now, and when to at the latest. A lease is a write:
        // the worker looks when told of new jobs, when a finished POST may have let others
        // go (a status behind it, a receiver with room again, a free slot at the limit), and
        // when the next job falls due; not after every POST.
        let mut look = true;
        let mut look_at = Instant::now();
        let mut next_prune = Instant::now();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            if Instant::now() >= next_prune {
                // On a task of its own: a large delete must not hold up leasing.
                tokio::spawn(Arc::clone(inner).prune());
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            if (look || Instant::now() >= look_at) && tasks.len() < max_in_flight {
                look = false;
                look_at = match inner.fill(&mut tasks, &mut window, &posted).await {
                    Ok(Look::More) if tasks.len() < max_in_flight => {
                        look = true;
                        continue;
                    }
                    // At the limit: a finished POST makes room and says so.
                    Ok(Look::More) => Instant::now() + MAX_IDLE,
                    Ok(Look::Drained) => {
                        let skip = window.full_routes(per_endpoint);
                        Instant::now() + inner.idle_time(&skip).await
                    }
                    Err(error) => {
                        tracing::error!(%error, "could not lease due webhooks");
                        Instant::now() + STORE_TROUBLE
                    }
                };
            }
            tokio::select! {
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let at_limit = tasks.len() + 1 >= max_in_flight;
                    look |= window.finished(done, per_endpoint) || at_limit;
                }
                Some(id) = posts_done.recv() => look |= window.posted(id, per_endpoint),
                () = tokio::time::sleep_until(look_at.into()) => look = true,
                () = inner.wake.notified() => look = true,
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            // Everything else that is over by now, so that one lease serves it all: under
            // load, a lease per finished POST would keep the loop (and the store's writer)
            // busy and leave new jobs waiting behind it.
            while let Ok(id) = posts_done.try_recv() {
                look |= window.posted(id, per_endpoint);
            }
            let was_at_limit = tasks.len() >= max_in_flight;
            while let Some(done) = tasks.try_join_next_with_id() {
                look |= window.finished(done, per_endpoint) || was_at_limit;
            }
            if window.unrecorded {
                // An outcome could not be written: its lease stands until it runs out, and
                // the store needs a moment.
                window.unrecorded = false;
                tokio::time::sleep(STORE_TROUBLE).await;
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!("webhook dispatcher stopped");
    }
}

impl Inner {
    /// Leases as many due jobs as there is room for, and starts a task for each one whose
    /// receiver has room; gives the others back.
    async fn fill(
        self: &Arc<Self>,
        tasks: &mut JoinSet<Finished>,
        window: &mut Window,
        posted: &tokio::sync::mpsc::UnboundedSender<tokio::task::Id>,
    ) -> Result<Look, StoreError> {
        let per_endpoint = self.settings.per_endpoint.max(1);
        let limit = self
            .settings
            .max_in_flight
            .saturating_sub(tasks.len())
            .min(LEASE_BATCH);
        // A route is leased for only while its receiver has at least half its slots free
        // (`full_routes`), and for at most half of them: so what is leased can start.
        let per_route = (per_endpoint / 2).max(1);
        let skip = window.full_routes(per_endpoint);
        let jobs = self
            .store
            .lease_webhooks(LeaseRequest {
                node: &self.node,
                now: UnixTime::now(),
                lease_secs: self.lease_secs(),
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                per_route: u32::try_from(per_route).unwrap_or(u32::MAX),
                skip: &skip,
            })
            .await?;
        // More may be due: the lease was full, or a route got all it could.
        let mut per_route_taken: HashMap<String, usize> = HashMap::new();
        for job in &jobs {
            *per_route_taken
                .entry(route_key(&job.waba_id, job.phone_number_id.as_ref()))
                .or_default() += 1;
        }
        let look = if jobs.len() >= limit || per_route_taken.values().any(|n| *n >= per_route) {
            Look::More
        } else {
            Look::Drained
        };
        let mut routings: HashMap<String, Option<WebhookRouting>> = HashMap::new();
        let mut give_back = Vec::new();
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            let route = route_key(&job.waba_id, job.phone_number_id.as_ref());
            let routing = match routings.get(&route) {
                Some(routing) => routing.clone(),
                None => {
                    let routing = match self
                        .store
                        .webhook_routing(&job.waba_id, job.phone_number_id.as_ref())
                        .await
                    {
                        Ok(routing) => routing,
                        Err(error) => {
                            // The jobs not started go back at once rather than when their
                            // leases run out.
                            give_back.push(job.id);
                            give_back.extend(jobs.map(|job| job.id));
                            let _ = self.store.release_webhooks(&self.node, &give_back).await;
                            return Err(error);
                        }
                    };
                    routings.insert(route.clone(), routing.clone());
                    routing
                }
            };
            let url = routing
                .as_ref()
                .and_then(|r| r.callback().ok())
                .map(str::to_owned);
            if let Some(url) = &url {
                let busy = window.busy.entry(url.clone()).or_default();
                if *busy >= per_endpoint {
                    give_back.push(job.id);
                    window.routes.insert(route, url.clone());
                    continue;
                }
                *busy += 1;
                window.routes.insert(route, url.clone());
            }
            let inner = Arc::clone(self);
            let posted = posted.clone();
            let task = tasks.spawn(async move { inner.deliver(job, routing, posted).await });
            if let Some(url) = url {
                window.slots.insert(task.id(), url);
            }
        }
        if !give_back.is_empty() {
            self.store.release_webhooks(&self.node, &give_back).await?;
        }
        Ok(look)
    }

    fn lease_secs(&self) -> i64 {
        i64::try_from(self.settings.timeout_secs)
            .unwrap_or(i64::MAX)
            .saturating_add(LEASE_MARGIN_SECS)
    }

    /// How long to sleep before the next job falls due.
    async fn idle_time(&self, skip: &[String]) -> Duration {
        match self.store.next_webhook_due(UnixTime::now(), skip).await {
            Ok(Some(due)) => {
                // Whole seconds from a clock read in whole seconds: sleeping this long never
                // wakes before `due`.
                let secs = u64::try_from(due.0.saturating_sub(UnixTime::now().0)).unwrap_or(0);
                Duration::from_secs(secs).clamp(MIN_IDLE, MAX_IDLE)
            }
            Ok(None) => MAX_IDLE,
            Err(error) => {
                tracing::error!(%error, "could not read the next webhook due time");
                STORE_TROUBLE
            }
        }
    }

    async fn prune(self: Arc<Self>) {
        let now = UnixTime::now();
        let delivered_before = now.plus_secs(-self.settings.keep_delivered_secs);
        let dead_before = now.plus_secs(-self.settings.keep_dead_secs);
        match self
            .store
            .prune_webhooks(delivered_before, dead_before)
            .await
        {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "pruned settled webhooks and their log"),
            Err(error) => tracing::warn!(%error, "could not prune settled webhooks"),
        }
    }

    /// Attempts one job and records the outcome.
    async fn deliver(
        &self,
        job: WebhookJob,
        routing: Option<WebhookRouting>,
        posted: tokio::sync::mpsc::UnboundedSender<tokio::task::Id>,
    ) -> Finished {
        let started = Instant::now();
        let at_ms = unix_ms();
        let url = routing
            .as_ref()
            .and_then(|r| r.callback().ok())
            .map(str::to_owned);
        let result = self.attempt(&job, routing.as_ref()).await;
        // The receiver is done with it: its slot is free before the outcome is written.
        let _ = posted.send(tokio::task::id());
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let attempts = job.attempts.saturating_add(1);
        let (id, waba) = (&job.id, &job.waba_id);
        let (outcome, http_status, error) = match result {
            Ok(Sent::Delivered(status)) => {
                tracing::debug!(job = %id, %waba, attempts, "webhook delivered");
                (WebhookOutcome::Delivered, Some(status), None)
            }
            Ok(Sent::NotSubscribed(field)) => {
                let why = format!("not sent: the app is not subscribed to the field {field}");
                (WebhookOutcome::Delivered, None, Some(why))
            }
            Err(error) => {
                let status = match &error {
                    AttemptError::Status(status) => Some(*status),
                    _ => None,
                };
                let sandbox = routing.as_ref().is_some_and(|r| r.sandbox);
                let now = if sandbox {
                    (self.clock)(waba.clone()).await
                } else {
                    UnixTime::now()
                };
                let failing_for = now.0.saturating_sub(job.failing_since.unwrap_or(now).0);
                if failing_for >= self.settings.retry_for_secs {
                    tracing::warn!(job = %id, %waba, attempts, %error, "webhook failing for the whole retry period: dead-lettered");
                    (WebhookOutcome::Dead, status, Some(error.to_string()))
                } else {
                    let delay = backoff(job.attempts, self.settings.max_backoff_secs);
                    let delay_secs =
                        i64::try_from(delay.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
                    if matches!(error, AttemptError::Unseal(_) | AttemptError::Store(_)) {
                        // Our fault, not the receiver's: an operator has to look.
                        tracing::error!(job = %id, %waba, attempts, %error, "webhook not sent");
                    } else {
                        tracing::warn!(job = %id, %waba, attempts, retry_in_secs = delay_secs, %error, "webhook not delivered");
                    }
                    let next = UnixTime::now().plus_secs(delay_secs);
                    (
                        WebhookOutcome::Retry { next, now },
                        status,
                        Some(error.to_string()),
                    )
                }
            }
        };
        let attempt = WebhookAttempt {
            event_id: job.id.clone(),
            waba_id: job.waba_id.clone(),
            node: self.node.clone(),
            at_ms,
            url,
            http_status,
            latency_ms,
            error,
        };
        let in_order = job.order_key.is_some() && !matches!(outcome, WebhookOutcome::Retry { .. });
        let recorded = match self.store.settle_webhook(attempt, attempts, outcome).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(job = %id, %error, "could not record a webhook outcome");
                false
            }
        };
        Finished {
            recorded,
            settled_in_order: recorded && in_order,
        }
    }

    /// One POST of a job's exact bytes, signed with its business's app secret.
    async fn attempt(
        &self,
        job: &WebhookJob,
        routing: Option<&WebhookRouting>,
    ) -> Result<Sent, AttemptError> {
        // A missing business or callback may be fixed by an operator later (and an
        // unsealing failure usually means a misconfigured seal key), so every failure here
        // is retried like a failed POST rather than dropping the event at once.
        let routing = routing.ok_or_else(|| AttemptError::NoBusiness(job.waba_id.clone()))?;
        let url = routing.callback().map_err(AttemptError::NoCallback)?;
        if !self.settings.policy().allows_literal(url) {
            return Err(AttemptError::NoCallback(
                "the callback is a private address, which this Ventana does not allow",
            ));
        }
        let body = self
            .sealer
            .open(&webhook_body_aad(&job.id), &job.body_sealed)
            .map_err(|_| AttemptError::Unseal("event body"))?;
        if let Some(fields) = &routing.fields
            && let Some(field) = event_field(&body)
            && !fields.split(',').any(|f| f.trim() == field)
        {
            return Ok(Sent::NotSubscribed(field));
        }
        let secret = self
            .sealer
            .open(&app_secret_aad(&job.waba_id), &routing.app_secret_sealed)
            .map_err(|_| AttemptError::Unseal("app secret"))?;
        let now = UnixTime::now().0;
        let response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&secret, &body))
            .header(
                TIMESTAMPED_SIGNATURE_HEADER,
                timestamped_signature(&secret, now, &body),
            )
            .header(EVENT_ID_HEADER, job.id.as_str())
            // A `Vec` body gets a `Content-Length`, which whatsapp-api-js requires.
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    AttemptError::Timeout(self.settings.timeout_secs)
                } else {
                    AttemptError::Transport(e)
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(Sent::Delivered(status.as_u16()))
        } else {
            Err(AttemptError::Status(status.as_u16()))
        }
    }
}

/// A successful attempt.
enum Sent {
    /// The receiver answered with this 2xx.
    Delivered(u16),
    /// Not sent: the app did not subscribe to the event's field.
    NotSubscribed(String),
}

/// The `field` of an event (`messages`, `message_template_status_update`, …).
fn event_field(body: &[u8]) -> Option<String> {
    let event: Value = serde_json::from_slice(body).ok()?;
    event["entry"][0]["changes"][0]["field"]
        .as_str()
        .map(str::to_owned)
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The upper bound of the wait after the `attempts`-th failed attempt: 1 s, 2 s, 4 s, …,
/// doubling up to `max_secs`.
fn backoff_ceiling(attempts: u32, max_secs: u64) -> Duration {
    // 2^40 s is far beyond any sensible ceiling; the `min` keeps the shift in range.
    Duration::from_secs((1u64 << attempts.min(40)).min(max_secs.max(1)))
}

/// The wait before the next attempt after `attempts` failed ones (0 for the first failure):
/// the ceiling less up to a quarter of it at random, so receivers that come back after an
/// outage are not hit by every queued event in the same second.
fn backoff(attempts: u32, max_secs: u64) -> Duration {
    let ceiling = backoff_ceiling(attempts, max_secs);
    ceiling.mul_f64(1.0 - rand::thread_rng().gen_range(0.0..0.25))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::collections::HashSet;

    const HOUR: u64 = 60 * 60;

    #[test]
    fn backoff_doubles_from_one_second() {
        assert_eq!(backoff_ceiling(0, HOUR), Duration::from_secs(1));
        assert_eq!(backoff_ceiling(1, HOUR), Duration::from_secs(2));
        assert_eq!(backoff_ceiling(2, HOUR), Duration::from_secs(4));
        assert_eq!(backoff_ceiling(10, HOUR), Duration::from_secs(1024));
    }

    #[test]
    fn backoff_is_capped_at_one_hour_however_many_attempts() {
        assert_eq!(backoff_ceiling(11, HOUR), Duration::from_secs(2048));
        assert_eq!(backoff_ceiling(12, HOUR), Duration::from_secs(HOUR));
        assert_eq!(backoff_ceiling(63, HOUR), Duration::from_secs(HOUR));
        assert_eq!(backoff_ceiling(u32::MAX, HOUR), Duration::from_secs(HOUR));
        assert_eq!(backoff_ceiling(3, 5), Duration::from_secs(5));
    }

    #[test]
    fn backoff_jitters_within_the_top_quarter_below_the_ceiling() {
        for attempts in [0, 1, 5, 12, 40] {
            let ceiling = backoff_ceiling(attempts, HOUR);
            let waits: HashSet<Duration> = (0..200).map(|_| backoff(attempts, HOUR)).collect();
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
}
