//! The HTTP load generator every throughput scenario and the baseline share: K connections
//! sending as fast as they are answered (closed loop), or requests started on a fixed
//! schedule (open loop) with their latency counted from when they were due, so a slow server
//! cannot hide its queueing by slowing the generator down.

use axum::body::Bytes;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// When a phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this many requests.
    Count(u64),
    /// After this long (requests under way then are finished and counted).
    After(Duration),
}

/// How a scenario loads the node's HTTP API.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Concurrent HTTP connections (keep-alive, HTTP/1.1).
    pub connections: usize,
    pub stop: Stop,
    /// Load before the measured phase, discarded.
    pub warmup: Duration,
    /// Offered load in requests per second (open loop); `None`: as fast as answered.
    pub rate: Option<f64>,
}

impl LoadOptions {
    pub fn describe(&self) -> String {
        let stop = match self.stop {
            Stop::Count(n) => format!("{n} requests"),
            Stop::After(d) => format!("{} s", d.as_secs_f64()),
        };
        match self.rate {
            Some(rate) => format!(
                "{stop} offered at {rate} req/s (open loop) over ≤{} connections",
                self.connections
            ),
            None => format!(
                "{stop} as fast as answered (closed loop) over {} connections",
                self.connections
            ),
        }
    }
}

/// One request of a phase.
#[derive(Debug, Clone)]
pub struct Sample {
    pub seq: u64,
    /// When it started; in open loop, when it was due.
    pub start: Instant,
    /// From `start` to the answer.
    pub latency: Duration,
    /// `Ok(id)` when the server accepted it (the id it answered, if any).
    pub outcome: Result<String, String>,
}

/// What a phase did.
#[derive(Debug)]
pub struct Phase {
    pub samples: Vec<Sample>,
    pub began: Instant,
    pub ended: Instant,
}

impl Phase {
    pub fn accepted(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(|s| s.outcome.is_ok())
    }

    /// How many requests failed, and the first failure's reason.
    pub fn failures(&self) -> (usize, Option<String>) {
        let mut failed = self.samples.iter().filter_map(|s| s.outcome.as_ref().err());
        let first = failed.next().cloned();
        (first.as_ref().map_or(0, |_| 1 + failed.count()), first)
    }
}

/// Counters the progress line reads while a phase runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub failed: AtomicU64,
}

/// The HTTP client of the load: one pool, at most `connections` idle connections kept, and
/// no more than that in use because no more requests than that are ever in flight.
pub fn http_client(connections: usize) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
}

/// POSTs `body` as JSON and returns the answer's body, or why it was not a 2xx.
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: String,
) -> Result<Bytes, String> {
    let mut request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(bytes)
    } else {
        Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))
    }
}

/// Runs one phase of load: `send(seq)` per request, sequence numbers taken from `next_seq`
/// (shared across phases, so they never repeat within a run).
pub async fn run_phase<F, Fut>(
    send: Arc<F>,
    options: &LoadOptions,
    stop: Stop,
    next_seq: &Arc<AtomicU64>,
    counters: &Arc<Counters>,
) -> Phase
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    match options.rate {
        Some(rate) if rate > 0.0 => {
            open_loop(send, options.connections, rate, stop, next_seq, counters).await
        }
        _ => closed_loop(send, options.connections, stop, next_seq, counters).await,
    }
}

fn record(counters: &Counters, outcome: &Result<String, String>) {
    let counter = match outcome {
        Ok(_) => &counters.accepted,
        Err(_) => &counters.failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn closed_loop<F, Fut>(
    send: Arc<F>,
    connections: usize,
    stop: Stop,
    next_seq: &Arc<AtomicU64>,
    counters: &Arc<Counters>,
) -> Phase
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    let began = Instant::now();
    let taken = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (send, taken, next_seq, counters) = (
            Arc::clone(&send),
            Arc::clone(&taken),
            Arc::clone(next_seq),
            Arc::clone(counters),
        );
        workers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let more = match stop {
                    Stop::Count(n) => taken.fetch_add(1, Ordering::Relaxed) < n,
                    Stop::After(d) => began.elapsed() < d,
                };
                if !more {
                    return samples;
                }
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                let outcome = send(seq).await;
                record(&counters, &outcome);
                samples.push(Sample {
                    seq,
                    start,
                    latency: start.elapsed(),
                    outcome,
                });
            }
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        // A worker that panicked loses its samples; the counts then show fewer requests.
        if let Ok(mut some) = done {
            samples.append(&mut some);
        }
    }
    Phase {
        samples,
        began,
        ended: Instant::now(),
    }
}

async fn open_loop<F, Fut>(
    send: Arc<F>,
    connections: usize,
    rate: f64,
    stop: Stop,
    next_seq: &Arc<AtomicU64>,
    counters: &Arc<Counters>,
) -> Phase
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    let began = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let slots = connections.max(1);
    let in_flight = Arc::new(Semaphore::new(slots));
    let samples = Arc::new(Mutex::new(Vec::new()));
    for i in 0u64.. {
        // `interval * i` in u32 steps would overflow for long runs: compute in seconds.
        let due = began + Duration::from_secs_f64(interval.as_secs_f64() * i as f64);
        let more = match stop {
            Stop::Count(n) => i < n,
            Stop::After(d) => due < began + d,
        };
        if !more {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        // Waiting for a free connection delays the request, and that delay is counted in
        // its latency (measured from `due`): this is the queueing an open loop must show.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let seq = next_seq.fetch_add(1, Ordering::Relaxed);
        let (send, samples, counters) = (
            Arc::clone(&send),
            Arc::clone(&samples),
            Arc::clone(counters),
        );
        tokio::spawn(async move {
            let outcome = send(seq).await;
            record(&counters, &outcome);
            let sample = Sample {
                seq,
                start: due,
                latency: due.elapsed(),
                outcome,
            };
            samples
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(sample);
            drop(permit);
        });
    }
    // Every slot free again means every request has finished and recorded its sample.
    let slots = u32::try_from(slots).unwrap_or(u32::MAX);
    let _all_done = in_flight.acquire_many(slots).await;
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    Phase {
        samples,
        began,
        ended: Instant::now(),
    }
}
