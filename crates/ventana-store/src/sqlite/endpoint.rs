//! [`EndpointStore`] on SQLite: identities, sealed Olm sessions, the outbox, dedup markers and
//! history. The gateway's extra tables are in the same file (see `gateway`).

use super::db::{Db, Migration, TxResult, backend, conflict, named, parsed};
use crate::StoreResult;
use crate::endpoint::{
    AppRecord, Direction, EndpointStore, IdentityRecord, InboundCommit, InboundOutcome,
    MAX_SESSIONS_PER_DEVICE, MessageRecord, OutboundCommit, OutboxRow, SessionMark, SessionRecord,
    SessionWrite,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::path::Path;
use ventana_core::rules::EnvelopeKind;
use ventana_core::{DeviceId, MessageId, MessageStatus, PhoneNumber, UnixTime};

const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_init",
        sql: include_str!("../../migrations/sqlite/endpoint/0001_init.sql"),
    },
    Migration {
        name: "0002_leases",
        sql: include_str!("../../migrations/sqlite/endpoint/0002_leases.sql"),
    },
    Migration {
        name: "0003_templates_schedules",
        sql: include_str!("../../migrations/sqlite/endpoint/0003_templates_schedules.sql"),
    },
    Migration {
        name: "0004_resends",
        sql: include_str!("../../migrations/sqlite/endpoint/0004_resends.sql"),
    },
    Migration {
        name: "0005_idempotency",
        sql: include_str!("../../migrations/sqlite/endpoint/0005_idempotency.sql"),
    },
];

/// An endpoint's store (a user device, or a gateway with its business tables) in one file.
#[derive(Clone, Debug)]
pub struct SqliteEndpointStore {
    pub(super) db: Db,
}

impl SqliteEndpointStore {
    /// Opens the file, creating it if missing, and brings its schema up to date.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            db: Db::open(path, MIGRATIONS)?,
        })
    }
}

#[async_trait]
impl EndpointStore for SqliteEndpointStore {
    async fn identity(&self, owner: &PhoneNumber) -> StoreResult<Option<IdentityRecord>> {
        let owner = owner.clone();
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "SELECT owner, device_id, relay_token_sealed, account_sealed, display_name
                         FROM identities WHERE owner = ?1",
                    )?
                    .query_row([owner.digits()], |row| {
                        Ok(IdentityRecord {
                            owner: parsed(row, 0)?,
                            device_id: DeviceId(row.get(1)?),
                            relay_token_sealed: row.get(2)?,
                            account_sealed: row.get(3)?,
                            display_name: row.get(4)?,
                        })
                    })
                    .optional()?)
            })
            .await
    }

    async fn save_identity(&self, identity: IdentityRecord) -> StoreResult<()> {
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO identities (owner, device_id, relay_token_sealed, account_sealed, display_name)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (owner) DO UPDATE
                     SET device_id = excluded.device_id, relay_token_sealed = excluded.relay_token_sealed,
                         account_sealed = excluded.account_sealed, display_name = excluded.display_name",
                )?
                .execute(params![
                    identity.owner.digits(),
                    identity.device_id.0,
                    identity.relay_token_sealed,
                    identity.account_sealed,
                    identity.display_name,
                ])?;
                Ok(())
            })
            .await
    }

    async fn save_account(&self, owner: &PhoneNumber, account_sealed: Vec<u8>) -> StoreResult<()> {
        let owner = owner.clone();
        self.db
            .write(move |tx| save_account(tx, &owner, &account_sealed))
            .await
    }

    async fn sessions(
        &self,
        owner: &PhoneNumber,
        peer: &PhoneNumber,
        peer_device: DeviceId,
    ) -> StoreResult<Vec<SessionRecord>> {
        let (owner, peer) = (owner.clone(), peer.clone());
        self.db
            .read(move |tx| {
                let mut stmt = tx.prepare_cached(
                    "SELECT peer, peer_device, session_id, sealed, version, updated_at FROM sessions
                     WHERE owner = ?1 AND peer = ?2 AND peer_device = ?3
                     ORDER BY recency DESC",
                )?;
                let rows = stmt.query_map(
                    params![owner.digits(), peer.digits(), peer_device.0],
                    |row| {
                        Ok(SessionRecord {
                            peer: parsed(row, 0)?,
                            peer_device: DeviceId(row.get(1)?),
                            session_id: row.get(2)?,
                            sealed: row.get(3)?,
                            version: row.get(4)?,
                            updated_at: UnixTime(row.get(5)?),
                        })
                    },
                )?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn commit_outbound(&self, commit: OutboundCommit) -> StoreResult<()> {
        self.db
            .write(move |tx| {
                let owner = &commit.owner;
                if let Some(account_sealed) = &commit.account_sealed {
                    save_account(tx, owner, account_sealed)?;
                }
                for session in &commit.sessions {
                    write_session(tx, owner, session)?;
                }
                queue_outbox(tx, owner, &commit.outbox)?;
                apply(tx, owner, &commit.records)
            })
            .await
    }

    async fn outbox(&self, owner: &PhoneNumber) -> StoreResult<Vec<OutboxRow>> {
        let owner = owner.clone();
        self.db
            .read_blocking(move |tx| {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, recipient, submission, created_at, sessions, attempt FROM outbox
                     WHERE owner = ?1 ORDER BY created_at, rowid",
                )?;
                let rows = stmt.query_map([owner.digits()], |row| {
                    Ok(OutboxRow {
                        id: parsed(row, 0)?,
                        to: parsed(row, 1)?,
                        submission: row.get(2)?,
                        created_at: UnixTime(row.get(3)?),
                        sessions: named(row, 4, SessionMark::decode_all)?,
                        attempt: row.get(5)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn settle_outbox(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        records: Vec<AppRecord>,
    ) -> StoreResult<bool> {
        let (owner, id) = (owner.clone(), id.clone());
        self.db
            .write(move |tx| {
                // A row already gone means this answer was settled before, with its records.
                let settled = tx
                    .prepare_cached("DELETE FROM outbox WHERE owner = ?1 AND id = ?2")?
                    .execute(params![owner.digits(), id.as_str()])?
                    == 1;
                if settled {
                    apply(tx, &owner, &records)?;
                }
                Ok(settled)
            })
            .await
    }

    async fn is_processed(
        &self,
        owner: &PhoneNumber,
        from: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<bool> {
        let (owner, from, id) = (owner.clone(), from.clone(), id.clone());
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM processed WHERE owner = ?1 AND sender = ?2 AND id = ?3)",
                    )?
                    .query_row(params![owner.digits(), from.digits(), id.as_str()], |row| row.get(0))?)
            })
            .await
    }

    async fn commit_inbound(&self, commit: InboundCommit) -> StoreResult<InboundOutcome> {
        self.db
            .write(move |tx| {
                let owner = &commit.owner;
                for id in &commit.settled {
                    tx.prepare_cached("DELETE FROM outbox WHERE owner = ?1 AND id = ?2")?
                        .execute(params![owner.digits(), id.as_str()])?;
                }
                let first_time = !commit.processed
                    || tx
                        .prepare_cached(
                            "INSERT INTO processed (owner, sender, id, processed_at) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT DO NOTHING",
                        )?
                        .execute(params![
                            owner.digits(),
                            commit.from.digits(),
                            commit.id.as_str(),
                            UnixTime::now().0
                        ])?
                        == 1;
                if !first_time {
                    return Ok(InboundOutcome::Duplicate);
                }
                for row in &commit.outbox {
                    queue_outbox(tx, owner, row)?;
                }
                if let Some(account_sealed) = &commit.account_sealed {
                    save_account(tx, owner, account_sealed)?;
                }
                if let Some(session) = &commit.session {
                    write_session(tx, owner, session)?;
                }
                apply(tx, owner, &commit.records)?;
                Ok(InboundOutcome::Committed)
            })
            .await
    }

    async fn message(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<Option<MessageRecord>> {
        let (owner, id) = (owner.clone(), id.clone());
        self.db
            .read(move |tx| {
                // Both directions can hold an id only if a peer reused one of ours, which it can
                // only have learnt from us; the earlier row is then the genuine one.
                Ok(tx
                    .prepare_cached(
                        "SELECT id, direction, peer, peer_device, kind, ts, body_sealed, status, resends
                         FROM messages WHERE owner = ?1 AND id = ?2 ORDER BY rowid LIMIT 1",
                    )?
                    .query_row(params![owner.digits(), id.as_str()], message_from_row)
                    .optional()?)
            })
            .await
    }

    async fn messages(&self, owner: &PhoneNumber, limit: u32) -> StoreResult<Vec<MessageRecord>> {
        let owner = owner.clone();
        self.db
            .read(move |tx| {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, direction, peer, peer_device, kind, ts, body_sealed, status, resends FROM (
                         SELECT *, rowid AS written FROM messages WHERE owner = ?1
                         ORDER BY ts DESC, written DESC LIMIT ?2
                     ) ORDER BY ts, written",
                )?;
                let rows = stmt.query_map(params![owner.digits(), limit], message_from_row)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn apply(&self, owner: &PhoneNumber, records: Vec<AppRecord>) -> StoreResult<()> {
        let owner = owner.clone();
        self.db.write(move |tx| apply(tx, &owner, &records)).await
    }

    async fn contact(
        &self,
        owner: &PhoneNumber,
        peer: &PhoneNumber,
    ) -> StoreResult<Option<Vec<u8>>> {
        let (owner, peer) = (owner.clone(), peer.clone());
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "SELECT profile_sealed FROM contacts WHERE owner = ?1 AND peer = ?2",
                    )?
                    .query_row(params![owner.digits(), peer.digits()], |row| row.get(0))
                    .optional()?)
            })
            .await
    }

    async fn cached_template(
        &self,
        owner: &PhoneNumber,
        business: &PhoneNumber,
        id: &str,
        version: u32,
    ) -> StoreResult<Option<String>> {
        let (owner, business, id) = (owner.clone(), business.clone(), id.to_owned());
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "SELECT definition FROM template_cache
                         WHERE owner = ?1 AND business = ?2 AND id = ?3 AND version = ?4",
                    )?
                    .query_row(
                        params![owner.digits(), business.digits(), id, version],
                        |row| row.get(0),
                    )
                    .optional()?)
            })
            .await
    }

    async fn cache_template(
        &self,
        owner: &PhoneNumber,
        business: &PhoneNumber,
        id: &str,
        version: u32,
        definition: String,
    ) -> StoreResult<()> {
        let (owner, business, id) = (owner.clone(), business.clone(), id.to_owned());
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO template_cache (owner, business, id, version, definition)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    owner.digits(),
                    business.digits(),
                    id,
                    version,
                    definition
                ])?;
                Ok(())
            })
            .await
    }
}

/// Queues an outbox row. A row with the same id is replaced (its earlier ciphertext was never
/// accepted, or is being encrypted again), keeping the lowest attempt: a first send that was
/// not settled yet still announces itself when it is.
fn queue_outbox(tx: &Connection, owner: &PhoneNumber, row: &OutboxRow) -> TxResult<()> {
    tx.prepare_cached(
        "INSERT INTO outbox (owner, id, recipient, submission, created_at, sessions, attempt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (owner, id) DO UPDATE
         SET submission = excluded.submission, sessions = excluded.sessions,
             attempt = min(outbox.attempt, excluded.attempt)",
    )?
    .execute(params![
        owner.digits(),
        row.id.as_str(),
        row.to.digits(),
        row.submission,
        row.created_at.0,
        SessionMark::encode_all(&row.sessions),
        row.attempt,
    ])?;
    Ok(())
}

fn save_account(tx: &Connection, owner: &PhoneNumber, account_sealed: &[u8]) -> TxResult<()> {
    let saved = tx
        .prepare_cached("UPDATE identities SET account_sealed = ?2 WHERE owner = ?1")?
        .execute(params![owner.digits(), account_sealed])?;
    if saved == 0 {
        return Err(backend(format!(
            "no identity for {owner} to save an account into"
        )));
    }
    Ok(())
}

/// Writes a session if nobody else wrote it since it was read, else fails the transaction.
fn write_session(tx: &Connection, owner: &PhoneNumber, s: &SessionWrite) -> TxResult<()> {
    let key = (
        owner.digits(),
        s.peer.digits(),
        s.peer_device.0,
        s.session_id.as_str(),
    );
    let recency: i64 = tx
        .prepare_cached(
            "SELECT coalesce(max(recency), 0) + 1 FROM sessions WHERE owner = ?1 AND peer = ?2 AND peer_device = ?3",
        )?
        .query_row(params![key.0, key.1, key.2], |row| row.get(0))?;
    let now = UnixTime::now().0;
    let written = match s.expected_version {
        None => {
            let written = tx
                .prepare_cached(
                    "INSERT INTO sessions (owner, peer, peer_device, session_id, sealed, version, updated_at, recency)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![key.0, key.1, key.2, key.3, s.sealed, now, recency])?;
            tx.prepare_cached(
                "DELETE FROM sessions
                 WHERE owner = ?1 AND peer = ?2 AND peer_device = ?3 AND session_id NOT IN (
                     SELECT session_id FROM sessions
                     WHERE owner = ?1 AND peer = ?2 AND peer_device = ?3
                     ORDER BY recency DESC LIMIT ?4)",
            )?
            .execute(params![key.0, key.1, key.2, MAX_SESSIONS_PER_DEVICE])?;
            written
        }
        Some(version) => tx
            .prepare_cached(
                "UPDATE sessions SET sealed = ?5, version = ?6 + 1, updated_at = ?7, recency = ?8
                 WHERE owner = ?1 AND peer = ?2 AND peer_device = ?3 AND session_id = ?4 AND version = ?6",
            )?
            .execute(params![key.0, key.1, key.2, key.3, s.sealed, version, now, recency])?,
    };
    if written == 0 {
        return Err(conflict(
            crate::ConflictKind::Changed,
            format!(
                "session {} with {}/{} was written by someone else",
                s.session_id, s.peer, s.peer_device
            ),
        ));
    }
    Ok(())
}

/// Applies application records. Each is idempotent, so a record applied twice (a settled
/// outbox row answered again) changes nothing the second time.
fn apply(tx: &Connection, owner: &PhoneNumber, records: &[AppRecord]) -> TxResult<()> {
    for record in records {
        match record {
            AppRecord::Message(m) => {
                tx.prepare_cached(
                    "INSERT INTO messages (owner, id, direction, peer, peer_device, kind, ts, body_sealed, status)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT DO NOTHING",
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
                ])?;
            }
            AppRecord::Status {
                id,
                status,
                announce,
            } => {
                if advance_status(tx, owner, id, *status)?
                    && let Some(job) = announce
                {
                    super::gateway::queue_webhook(tx, job)?;
                }
            }
            AppRecord::Resent { id } => {
                tx.prepare_cached(
                    "UPDATE messages SET resends = resends + 1
                     WHERE owner = ?1 AND id = ?2 AND direction = 'out'",
                )?
                .execute(params![owner.digits(), id.as_str()])?;
            }
            AppRecord::Webhook(job) => super::gateway::queue_webhook(tx, job)?,
            AppRecord::Contact {
                peer,
                profile_sealed,
            } => {
                tx.prepare_cached(
                    "INSERT INTO contacts (owner, peer, profile_sealed, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (owner, peer) DO UPDATE
                     SET profile_sealed = excluded.profile_sealed, updated_at = excluded.updated_at",
                )?
                .execute(params![owner.digits(), peer.digits(), profile_sealed, UnixTime::now().0])?;
            }
        }
    }
    Ok(())
}

fn advance_status(
    tx: &Connection,
    owner: &PhoneNumber,
    id: &MessageId,
    status: MessageStatus,
) -> TxResult<bool> {
    let mut advanced = false;
    let rows: Vec<(String, String)> = tx
        .prepare_cached("SELECT direction, status FROM messages WHERE owner = ?1 AND id = ?2")?
        .query_map(params![owner.digits(), id.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (direction, current) in rows {
        if MessageStatus::parse(&current).is_none_or(|current| current.rank() < status.rank()) {
            tx.prepare_cached(
                "UPDATE messages SET status = ?4 WHERE owner = ?1 AND id = ?2 AND direction = ?3",
            )?
            .execute(params![
                owner.digits(),
                id.as_str(),
                direction,
                status.as_str()
            ])?;
            advanced = true;
        }
    }
    Ok(advanced)
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        id: parsed(row, 0)?,
        direction: named(row, 1, parse_direction)?,
        peer: parsed(row, 2)?,
        peer_device: row.get::<_, Option<u32>>(3)?.map(DeviceId),
        kind: named(row, 4, EnvelopeKind::parse)?,
        ts: UnixTime(row.get(5)?),
        body_sealed: row.get(6)?,
        status: named(row, 7, MessageStatus::parse)?,
        resends: row.get(8)?,
    })
}

// `Direction` has no parser of its own.
fn parse_direction(s: &str) -> Option<Direction> {
    [Direction::Inbound, Direction::Outbound]
        .into_iter()
        .find(|d| d.as_str() == s)
}
