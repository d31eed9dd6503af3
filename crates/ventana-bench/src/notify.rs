//! `notify`: the business sends to many users through the Cloud API as fast as it is
//! answered (or at an offered rate). Every user is a real device that decrypts, commits and
//! acknowledges; the business's receiver counts the `delivered` status webhooks.

use crate::fixture::{
    Arrival, BenchBusiness, BenchNode, Devices, Hook, Progress, message_text, status, user_number,
};
use crate::load::{self, Counters, LoadOptions, Phase, Stop};
use crate::report::{Figures, Unit};
use crate::stats::{CpuSample, CpuUse, Percentiles, per_second};
use anyhow::Result;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct NotifyOptions {
    pub users: usize,
    pub load: LoadOptions,
    /// How long to wait, after the last request, for deliveries and webhooks to come in.
    pub drain_timeout: Duration,
    /// Devices registered (and greeting the business) at once during set-up.
    pub setup_parallelism: usize,
    /// How long the business's receiver takes to answer each webhook.
    pub hook_delay: Duration,
}

/// What one run measured. Counts are of the measured phase only.
#[derive(Debug, Clone)]
pub struct NotifyRun {
    /// Answered 2xx by the API.
    pub accepted: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    /// Accepted messages a device decrypted and committed.
    pub delivered: u64,
    /// Accepted messages whose `delivered` status webhook the business received.
    pub delivered_webhooks: u64,
    /// From the first request to the last answer.
    pub send_time: Duration,
    /// From the first request to the last delivery on a device.
    pub delivery_time: Duration,
    /// From the first request to the last `delivered` webhook.
    pub webhook_time: Duration,
    /// The API's round trip, from the call's start (in open loop, from when it was due).
    pub accept_latency: Percentiles,
    /// From the API call's start to the device having decrypted and committed the message.
    pub device_latency: Percentiles,
    /// Cores in use while the measured requests were sent.
    pub cpu: CpuUse,
    /// Node start, business, user registration, greetings.
    pub setup_time: Duration,
    /// Everything accepted arrived (and was reported) before the drain timeout.
    pub drained: bool,
    /// The warm-up's messages had all arrived before the measured phase began.
    pub warmup_drained: bool,
}

impl NotifyRun {
    pub fn figures(&self) -> Figures {
        let mut f = Figures::default();
        f.push(
            "accepted/s",
            Unit::PerSecond,
            per_second(self.accepted, self.send_time),
        );
        f.push(
            "delivered/s (decrypted on device)",
            Unit::PerSecond,
            per_second(self.delivered, self.delivery_time),
        );
        f.push(
            "delivered-status webhooks/s",
            Unit::PerSecond,
            per_second(self.delivered_webhooks, self.webhook_time),
        );
        f.latency("accept", &self.accept_latency);
        f.latency("accept→device", &self.device_latency);
        f.push("accepted", Unit::Count, self.accepted as f64);
        f.push("delivered", Unit::Count, self.delivered as f64);
        f.push(
            "delivered webhooks",
            Unit::Count,
            self.delivered_webhooks as f64,
        );
        f.push("failed requests", Unit::Count, self.failed as f64);
        f.push(
            "sending time (s)",
            Unit::Seconds,
            self.send_time.as_secs_f64(),
        );
        f.push(
            "webhooks done after (s)",
            Unit::Seconds,
            self.webhook_time.as_secs_f64(),
        );
        f.cpu(&self.cpu);
        f.push("set-up (s)", Unit::Seconds, self.setup_time.as_secs_f64());
        f
    }

    /// What makes this run's figures doubtful, if anything.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.failed > 0 {
            out.push(format!(
                "{} requests failed; first: {}",
                self.failed,
                self.first_failure.as_deref().unwrap_or("?")
            ));
        }
        if !self.warmup_drained {
            out.push(
                "the warm-up's messages had not all arrived when the measured phase began".into(),
            );
        }
        if !self.drained {
            out.push(format!(
                "not everything arrived before the drain timeout: {} of {} accepted were delivered, {} delivered webhooks",
                self.delivered, self.accepted, self.delivered_webhooks
            ));
        }
        out
    }
}

/// What the devices and the webhook receiver saw, by message.
#[derive(Default)]
struct Observed {
    /// First arrival on a device, by sequence number.
    arrivals: Mutex<HashMap<u64, Instant>>,
    arrived: AtomicU64,
    /// First `delivered` status webhook, by message id.
    delivered_hooks: Mutex<HashMap<String, Instant>>,
    delivered: AtomicU64,
    inbound: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Observed {
    /// Notes the first `delivered` webhook of a message (delivery is at least once).
    fn webhook_delivered(&self, id: String, at: Instant) {
        if lock(&self.delivered_hooks).insert(id, at).is_none() {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many of `phase`'s accepted messages arrived, and have their webhook.
    fn settled(&self, phase: &Phase) -> (usize, usize) {
        let arrivals = lock(&self.arrivals);
        let hooks = lock(&self.delivered_hooks);
        phase.accepted().fold((0, 0), |(a, h), s| {
            let id = s.outcome.as_deref().unwrap_or_default();
            (
                a + usize::from(arrivals.contains_key(&s.seq)),
                h + usize::from(hooks.contains_key(id)),
            )
        })
    }
}

/// One run on a fresh, empty node.
pub async fn run(options: &NotifyOptions) -> Result<NotifyRun> {
    run_on(BenchNode::fresh_data_dir()?, options).await
}

/// One run on a node started on `data_dir` (which may hold a pre-filled history).
pub async fn run_on(data_dir: TempDir, options: &NotifyOptions) -> Result<NotifyRun> {
    let setup_began = Instant::now();
    let node = BenchNode::start(data_dir).await?;
    let BenchBusiness {
        number: business_number,
        token,
        messages_url,
        mut hooks,
    } = BenchBusiness::create(&node.access, options.hook_delay).await?;
    let observed = Arc::new(Observed::default());

    let (arrivals_tx, mut arrivals_rx) = mpsc::unbounded_channel::<Arrival>();
    let seen = Arc::clone(&observed);
    tokio::spawn(async move {
        while let Some(arrival) = arrivals_rx.recv().await {
            if let Some(seq) = arrival.seq
                && lock(&seen.arrivals).insert(seq, arrival.at).is_none()
            {
                seen.arrived.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let seen = Arc::clone(&observed);
    tokio::spawn(async move {
        while let Some(delivery) = hooks.recv().await {
            let at = Instant::now();
            match Hook::of(&delivery) {
                Some(Hook::Message { .. }) => {
                    seen.inbound.fetch_add(1, Ordering::Relaxed);
                }
                Some(Hook::Status { id, status }) if status == "delivered" => {
                    seen.webhook_delivered(id, at);
                }
                _ => {}
            }
        }
    });

    let users = options.users.max(1);
    let devices = Devices::start_users(&node.access, users, options.setup_parallelism, |_| {
        arrivals_tx.clone()
    })
    .await?;
    let greeted = Arc::clone(&observed);
    devices
        .greet(&business_number, options.setup_parallelism, move || {
            greeted.inbound.load(Ordering::Relaxed)
        })
        .await?;
    let setup_time = setup_began.elapsed();

    let http = load::http_client(options.load.connections)?;
    let recipients: Arc<Vec<String>> = Arc::new((0..users).map(user_number).collect());
    let url = Arc::new(messages_url);
    let token = Arc::new(token);
    let send = Arc::new(move |seq: u64| {
        let (http, url, token) = (http.clone(), Arc::clone(&url), Arc::clone(&token));
        // Round robin over the users; `seq % users` is below `users`.
        let to = recipients[(seq % recipients.len() as u64) as usize].clone();
        async move {
            let body = format!(
                r#"{{"messaging_product":"whatsapp","recipient_type":"individual","to":"+{to}","type":"text","text":{{"preview_url":false,"body":"{}"}}}}"#,
                message_text(seq)
            );
            let answer = load::post_json(&http, &url, Some(&token), body).await?;
            let answer: Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
            answer["messages"][0]["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no message id in {answer}"))
        }
    });

    let next_seq = Arc::new(AtomicU64::new(0));
    let mut warmup_drained = true;
    if !options.load.warmup.is_zero() {
        status(format!(
            "warming up for {:.1} s",
            options.load.warmup.as_secs_f64()
        ));
        let counters = Arc::new(Counters::default());
        let warmup = load::run_phase(
            Arc::clone(&send),
            &options.load,
            Stop::After(options.load.warmup),
            &next_seq,
            &counters,
        )
        .await;
        // Start the measured phase with nothing of the warm-up still queued.
        warmup_drained = drain(&observed, &warmup, options.drain_timeout).await;
    }

    status(format!("measuring: {}", options.load.describe()));
    let counters = Arc::new(Counters::default());
    let progress = {
        let (counters, seen) = (Arc::clone(&counters), Arc::clone(&observed));
        let began = Instant::now();
        Progress::start(move || {
            let accepted = counters.accepted.load(Ordering::Relaxed);
            format!(
                "{:.0} s: accepted {accepted} ({:.0}/s), failed {}, decrypted on devices {}, delivered webhooks {}",
                began.elapsed().as_secs_f64(),
                per_second(accepted, began.elapsed()),
                counters.failed.load(Ordering::Relaxed),
                seen.arrived.load(Ordering::Relaxed),
                seen.delivered.load(Ordering::Relaxed),
            )
        })
    };
    let cpu_before = CpuSample::now();
    let phase = load::run_phase(send, &options.load, options.load.stop, &next_seq, &counters).await;
    let cpu = cpu_before.until(&CpuSample::now());
    drop(progress);
    let drained = drain(&observed, &phase, options.drain_timeout).await;

    let mut run = measure(&observed, &phase, setup_time, drained);
    run.cpu = cpu;
    run.warmup_drained = warmup_drained;
    devices.disconnect().await;
    node.stop().await?;
    Ok(run)
}

/// Waits until every accepted message of `phase` arrived on its device and its `delivered`
/// webhook came in, for at most `limit`. True if all did.
async fn drain(observed: &Arc<Observed>, phase: &Phase, limit: Duration) -> bool {
    let expected = phase.accepted().count();
    let deadline = Instant::now() + limit;
    let progress = {
        let seen = Arc::clone(observed);
        let accepted = phase.accepted().count();
        Progress::start(move || {
            format!(
                "draining {accepted} accepted: decrypted on devices {}, delivered webhooks {} (all phases)",
                seen.arrived.load(Ordering::Relaxed),
                seen.delivered.load(Ordering::Relaxed)
            )
        })
    };
    loop {
        let (arrived, hooked) = observed.settled(phase);
        if arrived >= expected && hooked >= expected {
            drop(progress);
            return true;
        }
        if Instant::now() >= deadline {
            drop(progress);
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn measure(observed: &Observed, phase: &Phase, setup_time: Duration, drained: bool) -> NotifyRun {
    let arrivals = lock(&observed.arrivals);
    let hooks = lock(&observed.delivered_hooks);
    let mut device_latencies = Vec::new();
    let mut last_arrival = phase.began;
    let mut last_hook = phase.began;
    let mut delivered_webhooks = 0;
    for sample in phase.accepted() {
        if let Some(&at) = arrivals.get(&sample.seq) {
            device_latencies.push(at.saturating_duration_since(sample.start));
            last_arrival = last_arrival.max(at);
        }
        if let Some(&at) = sample.outcome.as_ref().ok().and_then(|id| hooks.get(id)) {
            delivered_webhooks += 1;
            last_hook = last_hook.max(at);
        }
    }
    let (failed, first_failure) = phase.failures();
    NotifyRun {
        accepted: phase.accepted().count() as u64,
        failed: failed as u64,
        first_failure,
        delivered: device_latencies.len() as u64,
        delivered_webhooks,
        send_time: phase.ended - phase.began,
        delivery_time: last_arrival - phase.began,
        webhook_time: last_hook - phase.began,
        accept_latency: Percentiles::of(phase.accepted().map(|s| s.latency).collect()),
        device_latency: Percentiles::of(device_latencies),
        cpu: CpuUse::default(),
        setup_time,
        drained,
        warmup_drained: true,
    }
}
