//! `conversation`: users each write to the business and wait for its answer, over and over.
//! The business answers every inbound webhook through the Cloud API, as a bot would; a round
//! trip is from the user's send to the answer decrypted on the user's device.

use crate::fixture::{
    Arrival, BenchBusiness, BenchNode, Devices, Hook, Progress, message_text, seq_of, status,
};
use crate::load::{self, Stop};
use crate::report::{Figures, Unit};
use crate::stats::{CpuSample, CpuUse, Percentiles, per_second};
use anyhow::Result;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use ventana_core::PhoneNumber;

#[derive(Debug, Clone)]
pub struct ConversationOptions {
    pub users: usize,
    /// Round trips in all, or how long.
    pub stop: Stop,
    pub warmup: Duration,
    /// HTTP connections the business's bot answers over.
    pub connections: usize,
    pub setup_parallelism: usize,
    /// A round trip not completed by then is counted as lost, and the user goes on.
    pub reply_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ConversationRun {
    pub round_trips: u64,
    pub lost: u64,
    pub send_failures: u64,
    pub reply_failures: u64,
    pub elapsed: Duration,
    pub latency: Percentiles,
    /// Where a round trip's time goes, stage by stage.
    pub stages: Stages,
    /// Cores in use during the measured phase.
    pub cpu: CpuUse,
    pub setup_time: Duration,
}

/// A round trip cut into its stages, each summarised over the measured round trips.
#[derive(Debug, Clone, Default)]
pub struct Stages {
    /// The user's device encrypts, commits and hands the message to the relay, which
    /// accepts it (`send_message` returns).
    pub user_send: Percentiles,
    /// From the relay's acceptance to the business's receiver having the webhook: relay →
    /// gateway (WebSocket), decrypt, commit, webhook queue, signed POST.
    pub to_webhook: Percentiles,
    /// The bot's `POST /messages` round trip: encrypt, commit, relay accepts.
    pub api_answer: Percentiles,
    /// From the API's answer to the user's device having decrypted and committed it.
    pub to_device: Percentiles,
}

impl ConversationRun {
    pub fn figures(&self) -> Figures {
        let mut f = Figures::default();
        f.push(
            "round trips/s",
            Unit::PerSecond,
            per_second(self.round_trips, self.elapsed),
        );
        f.latency("round trip", &self.latency);
        for (stage, p) in [
            (
                "stage 1, user send (device → relay accepted)",
                &self.stages.user_send,
            ),
            (
                "stage 2, relay accepted → webhook received",
                &self.stages.to_webhook,
            ),
            ("stage 3, bot's API call", &self.stages.api_answer),
            (
                "stage 4, API answered → user's device",
                &self.stages.to_device,
            ),
        ] {
            f.push(
                format!("{stage} p50 (ms)"),
                Unit::Millis,
                p.p50.as_secs_f64() * 1000.0,
            );
        }
        f.push("round trips", Unit::Count, self.round_trips as f64);
        f.push("lost (no answer in time)", Unit::Count, self.lost as f64);
        f.push("failed user sends", Unit::Count, self.send_failures as f64);
        f.push(
            "failed API answers",
            Unit::Count,
            self.reply_failures as f64,
        );
        f.cpu(&self.cpu);
        f.push("set-up (s)", Unit::Seconds, self.setup_time.as_secs_f64());
        f
    }

    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.lost + self.send_failures + self.reply_failures > 0 {
            out.push(format!(
                "{} round trips lost, {} user sends and {} API answers failed",
                self.lost, self.send_failures, self.reply_failures
            ));
        }
        out
    }
}

/// One user's side of the conversation, kept across phases.
struct Talker {
    device: crate::fixture::Device,
    replies: mpsc::UnboundedReceiver<Arrival>,
}

/// When the bot got the webhook of a message, and its `POST /messages` call (start, answer).
#[derive(Clone, Copy)]
struct BotTimes {
    hook: Instant,
    answer: Option<(Instant, Instant)>,
}

/// The bot's times, by sequence number.
#[derive(Default)]
struct BotLog(Mutex<HashMap<u64, BotTimes>>);

impl BotLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, BotTimes>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One measured round trip, as the user saw it.
struct Trip {
    seq: u64,
    start: Instant,
    sent: Instant,
    arrived: Instant,
}

#[derive(Default)]
struct Tally {
    round_trips: AtomicU64,
    lost: AtomicU64,
    send_failures: AtomicU64,
}

pub async fn run(options: &ConversationOptions) -> Result<ConversationRun> {
    let setup_began = Instant::now();
    let node = BenchNode::start(BenchNode::fresh_data_dir()?).await?;
    let BenchBusiness {
        number: business_number,
        token,
        messages_url,
        mut hooks,
    } = BenchBusiness::create(&node.access, Duration::ZERO).await?;

    // The business's bot: every inbound bench message is answered with the same number.
    let inbound = Arc::new(AtomicU64::new(0));
    let reply_failures = Arc::new(AtomicU64::new(0));
    let bot_log = Arc::new(BotLog::default());
    let http = load::http_client(options.connections)?;
    {
        let (inbound, reply_failures, bot_log) = (
            Arc::clone(&inbound),
            Arc::clone(&reply_failures),
            Arc::clone(&bot_log),
        );
        tokio::spawn(async move {
            while let Some(delivery) = hooks.recv().await {
                let Some(Hook::Message { from, id, text }) = Hook::of(&delivery) else {
                    continue;
                };
                let hook_at = Instant::now();
                inbound.fetch_add(1, Ordering::Relaxed);
                let Some(seq) = seq_of(&text) else { continue };
                bot_log.lock().insert(
                    seq,
                    BotTimes {
                        hook: hook_at,
                        answer: None,
                    },
                );
                let body = format!(
                    r#"{{"messaging_product":"whatsapp","to":"{from}","type":"text","context":{{"message_id":"{id}"}},"text":{{"body":"{}"}}}}"#,
                    message_text(seq)
                );
                let (http, url, token) = (http.clone(), messages_url.clone(), token.clone());
                let (reply_failures, bot_log) = (Arc::clone(&reply_failures), Arc::clone(&bot_log));
                // At most one answer per user is outstanding: each waits for its answer.
                tokio::spawn(async move {
                    let start = Instant::now();
                    match load::post_json(&http, &url, Some(&token), body).await {
                        Ok(_) => {
                            if let Some(entry) = bot_log.lock().get_mut(&seq) {
                                entry.answer = Some((start, Instant::now()));
                            }
                        }
                        Err(_) => {
                            reply_failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
    }

    let users = options.users.max(1);
    let mut inboxes = Vec::with_capacity(users);
    let mut senders = Vec::with_capacity(users);
    for _ in 0..users {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        inboxes.push(rx);
    }
    let devices = Devices::start_users(&node.access, users, options.setup_parallelism, |user| {
        senders[user].clone()
    })
    .await?;
    let greeted = Arc::clone(&inbound);
    devices
        .greet(&business_number, options.setup_parallelism, move || {
            greeted.load(Ordering::Relaxed)
        })
        .await?;
    let setup_time = setup_began.elapsed();

    let mut talkers: Vec<Talker> = devices
        .list
        .iter()
        .cloned()
        .zip(inboxes)
        .map(|(device, replies)| Talker { device, replies })
        .collect();
    let next_seq = Arc::new(AtomicU64::new(0));
    if !options.warmup.is_zero() {
        status(format!(
            "warming up for {:.1} s",
            options.warmup.as_secs_f64()
        ));
        let tally = Arc::new(Tally::default());
        let (back, _, _) = phase(
            talkers,
            &business_number,
            Stop::After(options.warmup),
            options.reply_timeout,
            &next_seq,
            &tally,
        )
        .await;
        talkers = back;
    }

    status(format!("measuring {users} conversations"));
    let tally = Arc::new(Tally::default());
    let progress = {
        let tally = Arc::clone(&tally);
        let began = Instant::now();
        Progress::start(move || {
            let done = tally.round_trips.load(Ordering::Relaxed);
            format!(
                "{:.0} s: {done} round trips ({:.0}/s), lost {}",
                began.elapsed().as_secs_f64(),
                per_second(done, began.elapsed()),
                tally.lost.load(Ordering::Relaxed)
            )
        })
    };
    let cpu_before = CpuSample::now();
    let (_, trips, elapsed) = phase(
        talkers,
        &business_number,
        options.stop,
        options.reply_timeout,
        &next_seq,
        &tally,
    )
    .await;
    drop(progress);

    let cpu = cpu_before.until(&CpuSample::now());
    let stages = stages(&trips, &bot_log);
    let latencies = trips
        .iter()
        .map(|t| t.arrived - t.start)
        .collect::<Vec<_>>();
    let run = ConversationRun {
        round_trips: latencies.len() as u64,
        lost: tally.lost.load(Ordering::Relaxed),
        send_failures: tally.send_failures.load(Ordering::Relaxed),
        reply_failures: reply_failures.load(Ordering::Relaxed),
        elapsed,
        latency: Percentiles::of(latencies),
        stages,
        cpu,
        setup_time,
    };
    devices.disconnect().await;
    node.stop().await?;
    Ok(run)
}

/// Each measured round trip cut into its stages, where the bot's log has them.
fn stages(trips: &[Trip], bot_log: &BotLog) -> Stages {
    let log = bot_log.lock();
    let (mut user_send, mut to_webhook, mut api_answer, mut to_device) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for trip in trips {
        user_send.push(trip.sent - trip.start);
        if let Some(&BotTimes { hook, answer }) = log.get(&trip.seq) {
            // The relay may hand the message on before its answer reaches the sender.
            to_webhook.push(hook.saturating_duration_since(trip.sent));
            if let Some((start, end)) = answer {
                api_answer.push(end - start);
                to_device.push(trip.arrived.saturating_duration_since(end));
            }
        }
    }
    Stages {
        user_send: Percentiles::of(user_send),
        to_webhook: Percentiles::of(to_webhook),
        api_answer: Percentiles::of(api_answer),
        to_device: Percentiles::of(to_device),
    }
}

/// Every user converses until `stop`; returns the talkers, the round trips and how long the
/// phase took.
async fn phase(
    talkers: Vec<Talker>,
    business: &PhoneNumber,
    stop: Stop,
    reply_timeout: Duration,
    next_seq: &Arc<AtomicU64>,
    tally: &Arc<Tally>,
) -> (Vec<Talker>, Vec<Trip>, Duration) {
    let began = Instant::now();
    let taken = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for mut talker in talkers {
        let (business, taken, next_seq, tally) = (
            business.clone(),
            Arc::clone(&taken),
            Arc::clone(next_seq),
            Arc::clone(tally),
        );
        tasks.spawn(async move {
            let mut trips = Vec::new();
            loop {
                let more = match stop {
                    Stop::Count(n) => taken.fetch_add(1, Ordering::Relaxed) < n,
                    Stop::After(d) => began.elapsed() < d,
                };
                if !more {
                    return (talker, trips);
                }
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                if talker
                    .device
                    .send_text(&business, message_text(seq))
                    .await
                    .is_err()
                {
                    tally.send_failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let sent = Instant::now();
                match answer(&mut talker.replies, seq, start + reply_timeout).await {
                    Some(arrived) => {
                        trips.push(Trip {
                            seq,
                            start,
                            sent,
                            arrived,
                        });
                        tally.round_trips.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        tally.lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let mut talkers = Vec::new();
    let mut trips = Vec::new();
    while let Some(done) = tasks.join_next().await {
        // A task that panicked takes its user out of later phases; counts show it.
        if let Ok((talker, mut some)) = done {
            talkers.push(talker);
            trips.append(&mut some);
        }
    }
    (talkers, trips, began.elapsed())
}

/// When the answer to `seq` arrived, skipping late answers to earlier messages.
async fn answer(
    replies: &mut mpsc::UnboundedReceiver<Arrival>,
    seq: u64,
    deadline: Instant,
) -> Option<Instant> {
    loop {
        let arrival = tokio::time::timeout_at(deadline.into(), replies.recv())
            .await
            .ok()??;
        if arrival.seq == Some(seq) {
            return Some(arrival.at);
        }
    }
}
