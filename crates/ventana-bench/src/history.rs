//! `history`: does the node slow down as its stores fill up? `notify` runs on an empty node,
//! then on one whose stores were pre-filled with a large history, and the figures are
//! compared.
//!
//! The history is loaded into the SQLite files before the node starts, through the store's
//! bulk import (`SqliteEndpointStore::import_history`, `SqliteRelayStore::import_submissions`),
//! into the tables that grow with it (the relay's `submissions`, the gateway's `messages` and
//! `processed`), in transactions of 100,000 rows. The rows go in in key order, which is
//! how a bulk load builds an index, but their keys are spread over the key space exactly
//! like real message ids (`wamid.` and 128 random bits), so the measured messages' inserts
//! land at random places among them as they would in production.

use crate::fixture::{BUSINESS_NUMBER, BenchNode, Progress, status};
use crate::notify::{self, NotifyOptions, NotifyRun};
use crate::report::{Figures, Unit};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use ventana_core::rules::EnvelopeKind;
use ventana_core::{DeviceId, MessageId, MessageStatus, PhoneNumber, UnixTime};
use ventana_store::endpoint::{Direction, MessageRecord};
use ventana_store::sqlite::{
    IMPORT_ROWS_PER_TX, ProcessedMarker, SqliteEndpointStore, SqliteRelayStore, SubmissionRecord,
};

/// Distinct users the history is spread over (numbers +34 700 000 000 onwards, apart from
/// the bench users').
const PEERS: u64 = 100_000;
/// Bytes of a stored message's sealed body: about a short text's payload plus the AEAD's.
const BODY_BYTES: usize = 300;

#[derive(Debug, Clone)]
pub struct HistoryOptions {
    pub notify: NotifyOptions,
    /// Messages in the history.
    pub history: u64,
}

#[derive(Debug, Clone)]
pub struct HistoryRun {
    pub empty: NotifyRun,
    pub full: NotifyRun,
    pub prefill_time: Duration,
    /// Size of relay.db and gateway.db (with their WAL) after the pre-fill, in bytes.
    pub store_bytes: u64,
}

/// The figures compared between the empty and the full node.
const COMPARED: [&str; 9] = [
    "accepted/s",
    "delivered/s (decrypted on device)",
    "delivered-status webhooks/s",
    "accept p50 (ms)",
    "accept p99 (ms)",
    "accept p99.9 (ms)",
    "accept→device p50 (ms)",
    "accept→device p99 (ms)",
    "accept→device p99.9 (ms)",
];

impl HistoryRun {
    pub fn figures(&self) -> Figures {
        let (empty, full) = (self.empty.figures(), self.full.figures());
        let mut f = Figures::default();
        for name in COMPARED {
            let unit = if name.ends_with("(ms)") {
                Unit::Millis
            } else {
                Unit::PerSecond
            };
            let (a, b) = (
                empty.get(name).unwrap_or(0.0),
                full.get(name).unwrap_or(0.0),
            );
            f.push(format!("empty: {name}"), unit, a);
            f.push(format!("history: {name}"), unit, b);
            f.push(
                format!("history ÷ empty: {name}"),
                Unit::Ratio,
                if a > 0.0 { b / a } else { 0.0 },
            );
        }
        f.push(
            "pre-fill (s)",
            Unit::Seconds,
            self.prefill_time.as_secs_f64(),
        );
        f.push(
            "store files after pre-fill (MiB)",
            Unit::MiB,
            self.store_bytes as f64 / (1024.0 * 1024.0),
        );
        f
    }

    pub fn warnings(&self) -> Vec<String> {
        let label = |prefix: &str, warnings: Vec<String>| {
            warnings
                .into_iter()
                .map(|w| format!("{prefix}: {w}"))
                .collect::<Vec<_>>()
        };
        let mut out = label("empty", self.empty.warnings());
        out.extend(label("history", self.full.warnings()));
        out
    }
}

pub fn prefill_note(history: u64) -> String {
    format!(
        "history: {history} messages written into the node's SQLite files before it starts, in transactions of {IMPORT_ROWS_PER_TX} rows, in key order: \
         gateway.db `messages` (every message, owned by the business number, half outbound, half inbound, {BODY_BYTES}-byte bodies), \
         gateway.db `processed` (the inbound half), relay.db `submissions` (every message, by its sender); \
         peers spread over {PEERS} users; ids uniform over the key space like real `wamid.` ids"
    )
}

pub async fn run(options: &HistoryOptions) -> Result<HistoryRun> {
    status("notify on an empty node");
    let empty = notify::run(&options.notify).await?;

    let dir = BenchNode::fresh_data_dir()?;
    status(format!(
        "pre-filling {} messages into {}",
        options.history,
        dir.path().display()
    ));
    let began = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let progress = {
        let (done, total) = (Arc::clone(&done), options.history);
        Progress::start(move || {
            let rows = done.load(Ordering::Relaxed);
            format!(
                "pre-filled {rows} rows of {} ({:.0} rows/s)",
                total * 5 / 2,
                rows as f64 / began.elapsed().as_secs_f64().max(0.001)
            )
        })
    };
    let path = dir.path().to_path_buf();
    let history = options.history;
    tokio::task::spawn_blocking(move || prefill(&path, history, &done)).await??;
    drop(progress);
    let prefill_time = began.elapsed();
    let store_bytes = store_size(dir.path());

    status("notify on the node holding the history");
    let full = notify::run_on(dir, &options.notify).await?;
    Ok(HistoryRun {
        empty,
        full,
        prefill_time,
        store_bytes,
    })
}

fn store_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Creates the two stores and fills their history tables through the store's bulk import.
/// `done` counts rows written.
fn prefill(data_dir: &Path, messages: u64, done: &AtomicU64) -> Result<()> {
    let history = History::new(messages)?;
    let progress = |rows: u64| {
        done.fetch_add(rows, Ordering::Relaxed);
    };
    let (mut bad_message, mut bad_marker, mut bad_submission) = (None, None, None);

    // `processed` is keyed (owner, sender, id): peer by peer, each peer's ids in order.
    SqliteEndpointStore::import_history(
        &data_dir.join("gateway.db"),
        &history.business,
        until_failure((0..messages).map(|i| history.message(i)), &mut bad_message),
        until_failure(
            inbound_by_peer(messages).map(|i| history.marker(i)),
            &mut bad_marker,
        ),
        progress,
    )
    .context("pre-filling gateway.db")?;
    // `submissions` is keyed (sender, id): the business's own first, then each peer's.
    let submissions = (0..messages).step_by(2).chain(inbound_by_peer(messages));
    SqliteRelayStore::import_submissions(
        &data_dir.join("relay.db"),
        until_failure(
            submissions.map(|i| history.submission(i)),
            &mut bad_submission,
        ),
        progress,
    )
    .context("pre-filling relay.db")?;
    match bad_message.or(bad_marker).or(bad_submission) {
        Some(e) => Err(e.context("building the history")),
        None => Ok(()),
    }
}

/// `rows` up to the first that could not be built, which is left in `failed`.
fn until_failure<'a, T>(
    rows: impl Iterator<Item = Result<T>> + 'a,
    failed: &'a mut Option<anyhow::Error>,
) -> impl Iterator<Item = T> + 'a {
    rows.map_while(move |row| row.map_err(|e| *failed = Some(e)).ok())
}

/// The rows of a history of `messages` messages between the bench business and its peers.
struct History {
    business: PhoneNumber,
    peers: Vec<PhoneNumber>,
    messages: u64,
    /// The history spans the year before now, oldest first: when it starts.
    since: u64,
}

const YEAR: u64 = 365 * 24 * 3600;

impl History {
    fn new(messages: u64) -> Result<Self> {
        let now = u64::try_from(UnixTime::now().0).unwrap_or(0);
        Ok(Self {
            business: BUSINESS_NUMBER.parse()?,
            peers: (0..PEERS)
                .map(|peer| format!("347{peer:08}").parse())
                .collect::<Result<_, _>>()?,
            messages,
            since: now.saturating_sub(YEAR),
        })
    }

    fn ts(&self, i: u64) -> UnixTime {
        UnixTime((self.since + i * YEAR / self.messages.max(1)) as i64)
    }

    /// Message `i`'s peer: outbound and inbound messages alike go round the peers.
    fn peer(&self, i: u64) -> &PhoneNumber {
        &self.peers[((i / 2) % PEERS) as usize]
    }

    fn id(&self, i: u64) -> Result<MessageId> {
        Ok(message_id(i, self.messages).parse()?)
    }

    /// Even messages went out (and were delivered), odd ones came in.
    fn message(&self, i: u64) -> Result<MessageRecord> {
        let outbound = i.is_multiple_of(2);
        let mut body = vec![0x5a_u8; BODY_BYTES];
        body[..8].copy_from_slice(&i.to_le_bytes());
        Ok(MessageRecord {
            id: self.id(i)?,
            direction: if outbound {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            peer: self.peer(i).clone(),
            peer_device: Some(DeviceId(1)),
            kind: EnvelopeKind::Message,
            ts: self.ts(i),
            body_sealed: body,
            status: if outbound {
                MessageStatus::Delivered
            } else {
                MessageStatus::Received
            },
            resends: 0,
        })
    }

    /// The dedup marker of inbound message `i`.
    fn marker(&self, i: u64) -> Result<ProcessedMarker> {
        Ok(ProcessedMarker {
            sender: self.peer(i).clone(),
            id: self.id(i)?,
            processed_at: self.ts(i),
        })
    }

    /// The relay's record of message `i`, by its sender.
    fn submission(&self, i: u64) -> Result<SubmissionRecord> {
        let (sender, recipient) = if i.is_multiple_of(2) {
            (&self.business, self.peer(i))
        } else {
            (self.peer(i), &self.business)
        };
        Ok(SubmissionRecord {
            sender: sender.clone(),
            id: self.id(i)?,
            recipient: recipient.clone(),
            fingerprint: format!("{:016x}{:048x}", mix(i), i),
            header: EnvelopeKind::Message.as_str().to_owned(),
            accepted_at: self.ts(i),
        })
    }
}

/// The inbound messages (odd `i`) grouped by peer, each peer's in increasing `i`.
fn inbound_by_peer(messages: u64) -> impl Iterator<Item = u64> {
    (0..PEERS).flat_map(move |peer| {
        (0..)
            .map(move |k| 2 * (peer + k * PEERS) + 1)
            .take_while(move |&i| i < messages)
    })
}

/// The characters of base64url, in ASCII order, so that ids built from increasing numbers
/// sort in the same order.
const ORDERED_BASE64: &[u8; 64] =
    b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// The `i`th of `n` history ids, in increasing order: `wamid.` and 22 base64url characters
/// like a real id. Value `i` lies in the `i`th of `n` equal slices of the 126-bit space of
/// the first 21 characters, at a pseudo-random place in it, so the ids are spread over the
/// key space as uniformly as random ones, yet come out sorted.
fn message_id(i: u64, n: u64) -> String {
    // `n` is at most 10^9 (the option's bound), so a slice is never empty.
    let slice = (1u128 << 126) / u128::from(n.max(1));
    let r = u128::from(mix(i));
    // `slice * r / 2^64` without overflowing: split `slice` at 64 bits.
    let offset = (slice >> 64) * r + (((slice & u128::from(u64::MAX)) * r) >> 64);
    let value = u128::from(i) * slice + offset.min(slice - 1);
    let mut id = String::with_capacity(28);
    id.push_str("wamid.");
    for k in (0..21).rev() {
        id.push(char::from(
            ORDERED_BASE64[((value >> (6 * k)) & 63) as usize],
        ));
    }
    // A real id's last character carries 2 bits; it never decides the order here.
    id.push(char::from(b"AQgw"[(mix(i) & 3) as usize]));
    id
}

/// SplitMix64's finaliser: a well-spread 64-bit value from `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn history_ids_are_valid_sorted_and_spread() {
        let n = 1000;
        let ids: Vec<String> = (0..n).map(|i| message_id(i, n)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        for id in &ids {
            assert_eq!(id.len(), "wamid.".len() + 22);
            id.parse::<ventana_core::MessageId>().unwrap();
        }
        // The first character covers the whole alphabet, as random ids' would.
        assert_eq!(ids[0].as_bytes()[6], b'-');
        assert_eq!(ids[999].as_bytes()[6], b'z');
    }

    #[test]
    fn inbound_messages_are_grouped_by_peer_in_order() {
        let all: Vec<u64> = inbound_by_peer(2 * PEERS + 10).collect();
        assert_eq!(all.len() as u64, PEERS + 5);
        assert_eq!(&all[..2], &[1, 2 * PEERS + 1]);
        assert!(all.iter().all(|i| i % 2 == 1));
    }
}
