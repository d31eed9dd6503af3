//! Bulk loading: a large history written into a store's file before a node opens it (the
//! bench's pre-filled stores), so the tables that grow with use can be measured full.
//!
//! The rows go through one connection of their own, [`IMPORT_ROWS_PER_TX`] per transaction,
//! in the order given: given in key order, SQLite appends to each index page by page, as a
//! bulk load should. The file keeps the store's durability (WAL, `synchronous=FULL` at each
//! commit); only the page cache is made large, so each page is written once per commit.

use super::tx::error;
use super::{SqliteEndpointStore, SqliteRelayStore};
use crate::StoreResult;
use crate::endpoint::MessageRecord;
use rusqlite::{Connection, params};
use std::path::Path;
use ventana_core::{MessageId, PhoneNumber, UnixTime};

/// Rows per transaction: large enough that the fsyncs do not count, small enough that the
/// WAL stays a few tens of megabytes.
pub const IMPORT_ROWS_PER_TX: usize = 100_000;

/// An inbound message an endpoint has processed (its dedup marker): a redelivery of `id`
/// from `sender` is recognised and only acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessedMarker {
    pub sender: PhoneNumber,
    pub id: MessageId,
    pub processed_at: UnixTime,
}

/// A submission the relay accepted, as it keeps it to answer a retry of the same id with the
/// first answer and to let a resend through (see `NewSubmission`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmissionRecord {
    pub sender: PhoneNumber,
    pub id: MessageId,
    pub recipient: PhoneNumber,
    /// The digest of the submission (`NewSubmission::fingerprint`).
    pub fingerprint: String,
    /// The clear header a resend must repeat (`NewSubmission::header`).
    pub header: String,
    pub accepted_at: UnixTime,
}

impl SqliteEndpointStore {
    /// Writes `messages` into `owner`'s history, then `processed` as its dedup markers, into
    /// the store at `path` (created with its schema if missing). `progress` is told the rows
    /// of each transaction once it is committed.
    ///
    /// For a file no node has open: it blocks, and bypasses the store's writer thread.
    /// A row that is already there is a [`StoreError::Conflict`](crate::StoreError).
    pub fn import_history(
        path: &Path,
        owner: &PhoneNumber,
        messages: impl IntoIterator<Item = MessageRecord>,
        processed: impl IntoIterator<Item = ProcessedMarker>,
        progress: impl Fn(u64),
    ) -> StoreResult<()> {
        drop(Self::open(path)?);
        let mut conn = open_for_bulk(path)?;
        load(&mut conn, messages, &progress, |tx, m| {
            tx.prepare_cached(
                "INSERT INTO messages
                     (owner, id, direction, peer, peer_device, kind, ts, body_sealed, status, resends)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                owner.digits(),
                m.id.as_str(),
                m.direction.as_str(),
                m.peer.digits(),
                m.peer_device.map(|d| d.0),
                m.kind.as_str(),
                m.ts.0,
                m.body_sealed,
                m.status.as_str(),
                m.resends,
            ])
            .map(drop)
        })?;
        load(&mut conn, processed, &progress, |tx, p| {
            tx.prepare_cached(
                "INSERT INTO processed (owner, sender, id, processed_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                owner.digits(),
                p.sender.digits(),
                p.id.as_str(),
                p.processed_at.0
            ])
            .map(drop)
        })
    }
}

impl SqliteRelayStore {
    /// Writes `submissions` into the relay's store at `path` (created with its schema if
    /// missing), as [`SqliteEndpointStore::import_history`] does.
    pub fn import_submissions(
        path: &Path,
        submissions: impl IntoIterator<Item = SubmissionRecord>,
        progress: impl Fn(u64),
    ) -> StoreResult<()> {
        drop(Self::open(path)?);
        let mut conn = open_for_bulk(path)?;
        load(&mut conn, submissions, &progress, |tx, s| {
            tx.prepare_cached(
                "INSERT INTO submissions (sender, id, fingerprint, accepted_at, recipient, header)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                s.sender.digits(),
                s.id.as_str(),
                s.fingerprint,
                s.accepted_at.0,
                s.recipient.digits(),
                s.header,
            ])
            .map(drop)
        })
    }
}

fn open_for_bulk(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(sql)?;
    // About a gigabyte of page cache: the load writes each page once, so it can stay in
    // memory until the commit.
    conn.pragma_update(None, "cache_size", -1_000_000)
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    Ok(conn)
}

/// Inserts one row per item, [`IMPORT_ROWS_PER_TX`] per transaction.
fn load<T>(
    conn: &mut Connection,
    rows: impl IntoIterator<Item = T>,
    progress: &impl Fn(u64),
    insert: impl Fn(&Connection, &T) -> rusqlite::Result<()>,
) -> StoreResult<()> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let tx = conn.transaction().map_err(sql)?;
        let mut n = 0;
        for row in rows.by_ref().take(IMPORT_ROWS_PER_TX) {
            insert(&tx, &row).map_err(sql)?;
            n += 1;
        }
        tx.commit().map_err(sql)?;
        progress(n);
    }
    Ok(())
}

fn sql(e: rusqlite::Error) -> crate::StoreError {
    error(e).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::endpoint::Direction;
    use crate::{EndpointStore, RelayStore};
    use std::cell::Cell;
    use ventana_core::rules::EnvelopeKind;
    use ventana_core::{DeviceId, MessageStatus};

    fn phone(digits: &str) -> PhoneNumber {
        digits.parse().unwrap()
    }

    fn message(id: &MessageId, peer: &PhoneNumber, ts: i64) -> MessageRecord {
        MessageRecord {
            id: id.clone(),
            direction: Direction::Inbound,
            peer: peer.clone(),
            peer_device: Some(DeviceId(1)),
            kind: EnvelopeKind::Message,
            ts: UnixTime(ts),
            body_sealed: vec![7; 16],
            status: MessageStatus::Received,
            resends: 0,
        }
    }

    #[tokio::test]
    async fn an_imported_history_reads_back_as_the_store_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let (business, peer) = (phone("15550107777"), phone("34700000001"));
        let ids: Vec<MessageId> = (0..3).map(|_| MessageId::generate()).collect();
        let messages: Vec<MessageRecord> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| message(id, &peer, 1_000 + n as i64))
            .collect();
        let markers = ids.iter().map(|id| ProcessedMarker {
            sender: peer.clone(),
            id: id.clone(),
            processed_at: UnixTime(2_000),
        });
        let rows = Cell::new(0);
        let path = dir.path().join("gateway.db");
        SqliteEndpointStore::import_history(&path, &business, messages.clone(), markers, |n| {
            rows.set(rows.get() + n)
        })
        .unwrap();
        assert_eq!(rows.get(), 6);

        let store = SqliteEndpointStore::open(&path).unwrap();
        assert_eq!(store.messages(&business, 10).await.unwrap(), messages);
        assert!(store.is_processed(&business, &peer, &ids[1]).await.unwrap());
    }

    #[tokio::test]
    async fn imported_submissions_are_known_to_the_relay() {
        let dir = tempfile::tempdir().unwrap();
        let (business, peer) = (phone("15550107777"), phone("34700000001"));
        let id = MessageId::generate();
        let path = dir.path().join("relay.db");
        let submission = SubmissionRecord {
            sender: business.clone(),
            id: id.clone(),
            recipient: peer,
            fingerprint: "f".repeat(64),
            header: EnvelopeKind::Message.as_str().to_owned(),
            accepted_at: UnixTime(1_000),
        };
        SqliteRelayStore::import_submissions(&path, [submission.clone()], |_| {}).unwrap();
        let store = SqliteRelayStore::open(&path).unwrap();
        assert!(store.submitted(&business, &id).await.unwrap());

        // The same row again is a conflict, as in the store's own writes.
        drop(store);
        let again = SqliteRelayStore::import_submissions(&path, [submission], |_| {});
        assert!(matches!(again, Err(crate::StoreError::Conflict(_))));
    }
}
