//! `baseline`: the ceiling for one durable write per HTTP request on this machine, measured
//! in the same process with the same load generator: a bare axum handler that parses one JSON
//! body and inserts one row, committed by one writer thread with eager group commit (each
//! commit takes whatever queued during the previous one) into SQLite in WAL mode with
//! `synchronous=FULL`. It is the design of `/work/shared/reference/baseline.md`.

use crate::load::{self, Counters, LoadOptions, Phase, Stop};
use crate::report::{Figures, Unit};
use crate::stats::{CpuSample, CpuUse, Percentiles, per_second};
use anyhow::{Context, Result, anyhow};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use rusqlite::{Connection, params};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// The figure other scenarios' throughput is compared with.
pub const THROUGHPUT: &str = "requests/s";
/// At most this many rows per commit.
const MAX_BATCH: usize = 1000;

/// What one run measured (the measured phase only).
#[derive(Debug, Clone)]
pub struct BaselineRun {
    pub accepted: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    pub elapsed: Duration,
    pub latency: Percentiles,
    /// Rows in the table at the end, warm-up included: every accepted request is one.
    pub rows: u64,
    /// Accepted requests of every phase, warm-up included.
    pub accepted_all_phases: u64,
    pub commits: u64,
    /// Cores in use during the measured phase.
    pub cpu: CpuUse,
}

impl BaselineRun {
    pub fn figures(&self) -> Figures {
        let mut f = Figures::default();
        f.push(
            THROUGHPUT,
            Unit::PerSecond,
            per_second(self.accepted, self.elapsed),
        );
        f.latency("request", &self.latency);
        f.push("requests", Unit::Count, self.accepted as f64);
        f.push("failed requests", Unit::Count, self.failed as f64);
        let per_commit = if self.commits > 0 {
            self.rows as f64 / self.commits as f64
        } else {
            0.0
        };
        f.push("rows per commit (mean)", Unit::Plain, per_commit);
        f.cpu(&self.cpu);
        f
    }

    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.failed > 0 {
            out.push(format!(
                "baseline: {} requests failed; first: {}",
                self.failed,
                self.first_failure.as_deref().unwrap_or("?")
            ));
        }
        if self.rows != self.accepted_all_phases {
            out.push(format!(
                "baseline: {} rows stored for {} accepted requests",
                self.rows, self.accepted_all_phases
            ));
        }
        out
    }
}

/// The request body of `baseline.md`'s `post_rand.lua`: 301 bytes, sender and recipient
/// spread over 1000 users.
fn request_body(seq: u64) -> String {
    let sender = seq.wrapping_mul(7919) % 1000;
    let recipient = seq.wrapping_mul(104_729).wrapping_add(17) % 1000;
    format!(
        r#"{{"client_id":"5f0c6a1e-8d2b-4c7a-9e31-2b7d4f6a9c10","sender":"user-{sender:06}","recipient":"user-{recipient:06}","body":"Hey! Are we still on for tomorrow? I booked the table at 7pm, the place near the station. Bring the documents we talked about and the charger, mine died again. Also tell Sam to call me back."}}"#
    )
}

#[derive(Deserialize)]
struct SendMsg {
    // Parsed like the real thing, though only three fields are stored.
    #[allow(dead_code)]
    client_id: String,
    sender: String,
    recipient: String,
    body: String,
}

struct Job {
    msg: SendMsg,
    reply: oneshot::Sender<Result<String, String>>,
}

/// One run: a fresh database, a warm-up, then the measured phase.
pub async fn run(options: &LoadOptions) -> Result<BaselineRun> {
    let dir = tempfile::Builder::new()
        .prefix("ventana-bench-baseline-")
        .tempdir()?;
    let conn = open(&dir.path().join("b.db"))?;
    let (jobs, queue) = mpsc::channel::<Job>();
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let commits = Arc::clone(&commits);
        std::thread::Builder::new()
            .name("baseline-writer".into())
            .spawn(move || write_loop(conn, queue, &commits))?
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/msg", listener.local_addr()?);
    let app = Router::new().route("/msg", post(handle)).with_state(jobs);
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });

    let http = load::http_client(options.connections)?;
    let url = Arc::new(url);
    let send = Arc::new(move |seq: u64| {
        let (http, url) = (http.clone(), Arc::clone(&url));
        async move {
            let answer = load::post_json(&http, &url, None, request_body(seq)).await?;
            let answer: Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
            Ok(answer["id"].as_str().unwrap_or_default().to_owned())
        }
    });
    let next_seq = Arc::new(AtomicU64::new(0));
    let mut accepted_all_phases = 0;
    if !options.warmup.is_zero() {
        let counters = Arc::new(Counters::default());
        let warmup = load::run_phase(
            Arc::clone(&send),
            options,
            Stop::After(options.warmup),
            &next_seq,
            &counters,
        )
        .await;
        accepted_all_phases += warmup.accepted().count() as u64;
    }
    let counters = Arc::new(Counters::default());
    let progress = {
        let counters = Arc::clone(&counters);
        let began = Instant::now();
        crate::fixture::Progress::start(move || {
            let accepted = counters.accepted.load(Ordering::Relaxed);
            format!(
                "baseline {:.0} s: {accepted} requests ({:.0}/s)",
                began.elapsed().as_secs_f64(),
                per_second(accepted, began.elapsed())
            )
        })
    };
    let cpu_before = CpuSample::now();
    let phase = load::run_phase(send, options, options.stop, &next_seq, &counters).await;
    let cpu = cpu_before.until(&CpuSample::now());
    drop(progress);
    accepted_all_phases += phase.accepted().count() as u64;

    let _ = stop.send(true);
    server.await??;
    // The server's router held the only sender; with it gone the writer finishes and ends.
    let conn = writer
        .join()
        .map_err(|_| anyhow!("the baseline writer thread panicked"))?;
    let rows: u64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
    let mut run = measure(
        &phase,
        rows,
        accepted_all_phases,
        commits.load(Ordering::Relaxed),
    );
    run.cpu = cpu;
    Ok(run)
}

fn measure(phase: &Phase, rows: u64, accepted_all_phases: u64, commits: u64) -> BaselineRun {
    let (failed, first_failure) = phase.failures();
    BaselineRun {
        accepted: phase.accepted().count() as u64,
        failed: failed as u64,
        first_failure,
        elapsed: phase.ended - phase.began,
        latency: Percentiles::of(phase.accepted().map(|s| s.latency).collect()),
        rows,
        accepted_all_phases,
        commits,
        cpu: CpuUse::default(),
    }
}

async fn handle(
    State(jobs): State<mpsc::Sender<Job>>,
    Json(msg): Json<SendMsg>,
) -> Result<Json<Value>, StatusCode> {
    let (reply, answer) = oneshot::channel();
    jobs.send(Job { msg, reply })
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    match answer.await {
        Ok(Ok(id)) => Ok(Json(json!({ "ok": true, "id": id }))),
        _ => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "no WAL: {mode}");
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE messages (id TEXT PRIMARY KEY, sender TEXT NOT NULL, recipient TEXT NOT NULL,
           ts INTEGER NOT NULL, body BLOB NOT NULL);
         CREATE INDEX idx_recipient_ts ON messages(recipient, ts);",
    )
    .context("creating the baseline table")?;
    Ok(conn)
}

/// The one writer: blocks for a first job, takes whatever else is queued (up to
/// `MAX_BATCH`), commits them in one transaction (one fsync), answers each. Returns the
/// connection when every sender is gone.
fn write_loop(mut conn: Connection, queue: mpsc::Receiver<Job>, commits: &AtomicU64) -> Connection {
    let mut seq: u64 = 0;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let ids: Vec<String> = batch
            .iter()
            .map(|_| {
                seq += 1;
                row_id(seq)
            })
            .collect();
        let outcome = commit(&mut conn, &batch, &ids).map_err(|e| e.to_string());
        commits.fetch_add(1, Ordering::Relaxed);
        for (job, id) in batch.into_iter().zip(ids) {
            let _ = job.reply.send(outcome.clone().map(|()| id));
        }
    }
    conn
}

fn commit(conn: &mut Connection, batch: &[Job], ids: &[String]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO messages (id, sender, recipient, ts, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let ts = now_millis();
        for (job, id) in batch.iter().zip(ids) {
            insert.execute(params![
                id,
                job.msg.sender,
                job.msg.recipient,
                ts,
                job.msg.body.as_bytes()
            ])?;
        }
    }
    tx.commit()
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A ULID-like id as in `baseline.md`: 16 hex digits of (ms << 20 | seq), then 24 that only
/// need to look random (a mix of the sequence number; uniqueness comes from the prefix).
fn row_id(seq: u64) -> String {
    let ms = u64::try_from(now_millis()).unwrap_or(0);
    let prefix = (ms << 20) | (seq & 0xF_FFFF);
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!(
        "{prefix:016x}{:024x}",
        u128::from(z) << 32 | u128::from(seq as u32)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_body_is_the_reference_size_and_ids_are_distinct() {
        assert_eq!(request_body(0).len(), 301);
        assert_eq!(request_body(123_456).len(), 301);
        assert_eq!(row_id(1).len(), 40);
        assert_ne!(row_id(1), row_id(2));
    }
}
