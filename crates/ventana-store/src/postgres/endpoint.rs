//! [`EndpointStore`] on PostgreSQL: identities, sealed Olm sessions, the outbox, dedup markers
//! and history. The gateway's extra tables are in the same schema (see `gateway`), so a
//! webhook job commits with the message it reports.

use super::db::{
    self, DEFAULT_POOL_SIZE, Db, Migration, TxResult, backend, conflict, device_id, execute, get,
    named, parsed, query, query_opt, time, transaction,
};
use super::wakeups::{self, Listener};
use crate::endpoint::{
    AppRecord, Direction, EndpointStore, IdentityRecord, InboundCommit, InboundOutcome,
    MAX_SESSIONS_PER_DEVICE, MessageRecord, OutboundCommit, OutboxRow, SessionMark, SessionRecord,
    SessionWrite,
};
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use std::sync::Arc;
use tokio_postgres::Row;
use ventana_core::rules::EnvelopeKind;
use ventana_core::{DeviceId, MessageId, MessageStatus, PhoneNumber, UnixTime};

const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_init",
        sql: include_str!("../../migrations/postgres/endpoint/0001_init.sql"),
    },
    Migration {
        name: "0002_leases",
        sql: include_str!("../../migrations/postgres/endpoint/0002_leases.sql"),
    },
    Migration {
        name: "0003_templates_schedules",
        sql: include_str!("../../migrations/postgres/endpoint/0003_templates_schedules.sql"),
    },
    Migration {
        name: "0004_resends",
        sql: include_str!("../../migrations/postgres/endpoint/0004_resends.sql"),
    },
    Migration {
        name: "0005_idempotency",
        sql: include_str!("../../migrations/postgres/endpoint/0005_idempotency.sql"),
    },
];

/// An endpoint's store (in practice a gateway's, with its business tables) in one schema of
/// a PostgreSQL database, shared by every gateway node.
#[derive(Clone, Debug)]
pub struct PgEndpointStore {
    pub(super) db: Db,
    /// Where "a number was added" is published and listened for, so every node hosts it.
    pub(super) numbers_channel: Arc<str>,
    pub(super) numbers: Arc<Listener<()>>,
}

impl PgEndpointStore {
    /// Connects to the database at `url` (`postgres://user@host/db`, or `key=value` pairs),
    /// creates `schema` if missing and brings it up to date. The schema name is a plain
    /// lower-case identifier (`gateway`), another than the relay's.
    pub async fn connect(url: &str, schema: &str) -> StoreResult<Self> {
        Self::connect_with_pool_size(url, schema, DEFAULT_POOL_SIZE).await
    }

    /// [`connect`](Self::connect) with `pool_size` pooled connections (8 by default).
    pub async fn connect_with_pool_size(
        url: &str,
        schema: &str,
        pool_size: usize,
    ) -> StoreResult<Self> {
        let config = db::config_for(url, schema)?;
        let db = Db::connect(config.clone(), schema, pool_size, MIGRATIONS).await?;
        let channel = wakeups::numbers_channel(schema);
        let numbers = Listener::start_with(config, channel.clone(), wakeups::signal).await?;
        Ok(Self {
            db,
            numbers_channel: channel.into(),
            numbers: Arc::new(numbers),
        })
    }
}

#[async_trait]
impl EndpointStore for PgEndpointStore {
    async fn identity(&self, owner: &PhoneNumber) -> StoreResult<Option<IdentityRecord>> {
        self.db
            .read(async |c| {
                let row = query_opt(
                    c,
                    "SELECT owner, device_id, relay_token_sealed, account_sealed, display_name
                     FROM identities WHERE owner = $1",
                    &[&owner.digits()],
                )
                .await?;
                row.map(|row| {
                    Ok(IdentityRecord {
                        owner: parsed(&row, 0)?,
                        device_id: device_id(&row, 1)?,
                        relay_token_sealed: get(&row, 2)?,
                        account_sealed: get(&row, 3)?,
                        display_name: get(&row, 4)?,
                    })
                })
                .transpose()
            })
            .await
    }

    async fn save_identity(&self, identity: IdentityRecord) -> StoreResult<()> {
        transaction!(self.db, |tx| {
            execute(
                tx,
                "INSERT INTO identities
                         (owner, device_id, relay_token_sealed, account_sealed, display_name)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (owner) DO UPDATE
                     SET device_id = excluded.device_id,
                         relay_token_sealed = excluded.relay_token_sealed,
                         account_sealed = excluded.account_sealed,
                         display_name = excluded.display_name",
                &[
                    &identity.owner.digits(),
                    &i64::from(identity.device_id.0),
                    &identity.relay_token_sealed,
                    &identity.account_sealed,
                    &identity.display_name,
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn save_account(&self, owner: &PhoneNumber, account_sealed: Vec<u8>) -> StoreResult<()> {
        transaction!(self.db, |tx| save_account(tx, owner, &account_sealed).await)
    }

    async fn sessions(
        &self,
        owner: &PhoneNumber,
        peer: &PhoneNumber,
        peer_device: DeviceId,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.db
            .read(async |c| {
                let rows = query(
                    c,
                    "SELECT peer, peer_device, session_id, sealed, version, updated_at
                     FROM sessions WHERE owner = $1 AND peer = $2 AND peer_device = $3
                     ORDER BY recency DESC",
                    &[&owner.digits(), &peer.digits(), &i64::from(peer_device.0)],
                )
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(SessionRecord {
                            peer: parsed(row, 0)?,
                            peer_device: device_id(row, 1)?,
                            session_id: get(row, 2)?,
                            sealed: get(row, 3)?,
                            version: get(row, 4)?,
                            updated_at: time(row, 5)?,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn commit_outbound(&self, commit: OutboundCommit) -> StoreResult<()> {
        transaction!(self.db, |tx| {
            let owner = &commit.owner;
            if let Some(account_sealed) = &commit.account_sealed {
                save_account(tx, owner, account_sealed).await?;
            }
            for session in &commit.sessions {
                write_session(tx, owner, session).await?;
            }
            queue_outbox(tx, owner, &commit.outbox).await?;
            apply(tx, owner, &commit.records).await
        })
    }

    async fn outbox(&self, owner: &PhoneNumber) -> StoreResult<Vec<OutboxRow>> {
        self.db
            .read(async |c| {
                let rows = query(
                    c,
                    "SELECT id, recipient, submission, created_at, sessions, attempt FROM outbox
                     WHERE owner = $1 ORDER BY created_at, written",
                    &[&owner.digits()],
                )
                .await?;
                rows.iter()
                    .map(|row| {
                        let attempt: i64 = get(row, 5)?;
                        Ok(OutboxRow {
                            id: parsed(row, 0)?,
                            to: parsed(row, 1)?,
                            submission: get(row, 2)?,
                            created_at: time(row, 3)?,
                            sessions: named(row, 4, SessionMark::decode_all)?,
                            attempt: u32::try_from(attempt)
                                .map_err(|_| backend(format!("outbox attempt {attempt}")))?,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn settle_outbox(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        records: Vec<AppRecord>,
    ) -> StoreResult<bool> {
        transaction!(self.db, |tx| {
            // A row already gone means this answer was settled before, with its records.
            let settled = execute(
                tx,
                "DELETE FROM outbox WHERE owner = $1 AND id = $2",
                &[&owner.digits(), &id.as_str()],
            )
            .await?
                == 1;
            if settled {
                apply(tx, owner, &records).await?;
            }
            Ok(settled)
        })
    }

    async fn is_processed(
        &self,
        owner: &PhoneNumber,
        from: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<bool> {
        self.db
            .read(async |c| {
                let row = db::query_one(
                    c,
                    "SELECT EXISTS (SELECT 1 FROM processed
                                    WHERE owner = $1 AND sender = $2 AND id = $3)",
                    &[&owner.digits(), &from.digits(), &id.as_str()],
                )
                .await?;
                get(&row, 0)
            })
            .await
    }

    async fn commit_inbound(&self, commit: InboundCommit) -> StoreResult<InboundOutcome> {
        transaction!(self.db, |tx| {
            let owner = &commit.owner;
            for id in &commit.settled {
                execute(
                    tx,
                    "DELETE FROM outbox WHERE owner = $1 AND id = $2",
                    &[&owner.digits(), &id.as_str()],
                )
                .await?;
            }
            // Of two nodes processing one envelope at once, the second waits here for the
            // first: it inserts if the first rolled back, and finds the marker otherwise.
            let first_time = !commit.processed
                || execute(
                    tx,
                    "INSERT INTO processed (owner, sender, id, processed_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[
                        &owner.digits(),
                        &commit.from.digits(),
                        &commit.id.as_str(),
                        &UnixTime::now().0,
                    ],
                )
                .await?
                    == 1;
            if !first_time {
                return Ok(InboundOutcome::Duplicate);
            }
            for row in &commit.outbox {
                queue_outbox(tx, owner, row).await?;
            }
            if let Some(account_sealed) = &commit.account_sealed {
                save_account(tx, owner, account_sealed).await?;
            }
            if let Some(session) = &commit.session {
                write_session(tx, owner, session).await?;
            }
            apply(tx, owner, &commit.records).await?;
            Ok(InboundOutcome::Committed)
        })
    }

    async fn message(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<Option<MessageRecord>> {
        self.db
            .read(async |c| {
                // Both directions can hold an id only if a peer reused one of ours, which it can
                // only have learnt from us; the earlier row is then the genuine one.
                let row = query_opt(
                    c,
                    "SELECT id, direction, peer, peer_device, kind, ts, body_sealed, status, resends
                     FROM messages WHERE owner = $1 AND id = $2 ORDER BY written LIMIT 1",
                    &[&owner.digits(), &id.as_str()],
                )
                .await?;
                row.as_ref().map(message_from_row).transpose()
            })
            .await
    }

    async fn messages(&self, owner: &PhoneNumber, limit: u32) -> StoreResult<Vec<MessageRecord>> {
        self.db
            .read(async |c| {
                let rows = query(
                    c,
                    "SELECT id, direction, peer, peer_device, kind, ts, body_sealed, status, resends FROM (
                         SELECT * FROM messages WHERE owner = $1
                         ORDER BY ts DESC, written DESC LIMIT $2
                     ) AS latest ORDER BY ts, written",
                    &[&owner.digits(), &i64::from(limit)],
                )
                .await?;
                rows.iter().map(message_from_row).collect()
            })
            .await
    }

    async fn apply(&self, owner: &PhoneNumber, records: Vec<AppRecord>) -> StoreResult<()> {
        transaction!(self.db, |tx| apply(tx, owner, &records).await)
    }

    async fn contact(
        &self,
        owner: &PhoneNumber,
        peer: &PhoneNumber,
    ) -> StoreResult<Option<Vec<u8>>> {
        self.db
            .read(async |c| {
                let row = query_opt(
                    c,
                    "SELECT profile_sealed FROM contacts WHERE owner = $1 AND peer = $2",
                    &[&owner.digits(), &peer.digits()],
                )
                .await?;
                row.map(|row| get(&row, 0)).transpose()
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
        // The column is an INTEGER: a version beyond it was never cached.
        let Ok(version) = i32::try_from(version) else {
            return Ok(None);
        };
        self.db
            .read(async |c| {
                let row = query_opt(
                    c,
                    "SELECT definition FROM template_cache
                     WHERE owner = $1 AND business = $2 AND id = $3 AND version = $4",
                    &[&owner.digits(), &business.digits(), &id, &version],
                )
                .await?;
                row.map(|row| get(&row, 0)).transpose()
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
        let version = i32::try_from(version).map_err(|_| {
            StoreError::Backend(format!(
                "template version {version} is beyond the cache's range"
            ))
        })?;
        transaction!(self.db, |tx| {
            execute(
                tx,
                "INSERT INTO template_cache (owner, business, id, version, definition)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                &[
                    &owner.digits(),
                    &business.digits(),
                    &id,
                    &version,
                    &definition,
                ],
            )
            .await?;
            Ok(())
        })
    }
}

/// Queues an outbox row. A row with the same id is replaced (its earlier ciphertext was never
/// accepted, or is being encrypted again), keeping the lowest attempt: a first send that was
/// not settled yet still announces itself when it is.
async fn queue_outbox(
    tx: &impl GenericClient,
    owner: &PhoneNumber,
    row: &OutboxRow,
) -> TxResult<()> {
    execute(
        tx,
        "INSERT INTO outbox (owner, id, recipient, submission, created_at, sessions, attempt)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (owner, id) DO UPDATE
         SET submission = excluded.submission, sessions = excluded.sessions,
             attempt = least(outbox.attempt, excluded.attempt)",
        &[
            &owner.digits(),
            &row.id.as_str(),
            &row.to.digits(),
            &row.submission,
            &row.created_at.0,
            &SessionMark::encode_all(&row.sessions),
            &i64::from(row.attempt),
        ],
    )
    .await?;
    Ok(())
}

async fn save_account(
    tx: &impl GenericClient,
    owner: &PhoneNumber,
    account_sealed: &[u8],
) -> TxResult<()> {
    let saved = execute(
        tx,
        "UPDATE identities SET account_sealed = $2 WHERE owner = $1",
        &[&owner.digits(), &account_sealed],
    )
    .await?;
    if saved == 0 {
        return Err(backend(format!(
            "no identity for {owner} to save an account into"
        )));
    }
    Ok(())
}

/// Writes a session if nobody else wrote it since it was read, else fails the transaction.
/// The check is the statement's own: of two writers expecting one version, the second's
/// `UPDATE` waits for the first's row lock and then finds the version moved on, and the
/// second of two creators finds the row there; either way it matches no row.
async fn write_session(
    tx: &impl GenericClient,
    owner: &PhoneNumber,
    s: &SessionWrite,
) -> TxResult<()> {
    let (owner, peer, peer_device, session_id) = (
        owner.digits(),
        s.peer.digits(),
        i64::from(s.peer_device.0),
        s.session_id.as_str(),
    );
    let now = UnixTime::now().0;
    let written = match s.expected_version {
        None => {
            let written = execute(
                tx,
                "INSERT INTO sessions
                     (owner, peer, peer_device, session_id, sealed, version, updated_at, recency)
                 VALUES ($1, $2, $3, $4, $5, 1, $6, nextval('session_recency'))
                 ON CONFLICT DO NOTHING",
                &[&owner, &peer, &peer_device, &session_id, &s.sealed, &now],
            )
            .await?;
            execute(
                tx,
                "DELETE FROM sessions
                 WHERE owner = $1 AND peer = $2 AND peer_device = $3 AND session_id NOT IN (
                     SELECT session_id FROM sessions
                     WHERE owner = $1 AND peer = $2 AND peer_device = $3
                     ORDER BY recency DESC LIMIT $4)",
                &[&owner, &peer, &peer_device, &MAX_SESSIONS_PER_DEVICE],
            )
            .await?;
            written
        }
        Some(version) => {
            execute(
                tx,
                "UPDATE sessions SET sealed = $5, version = $6::bigint + 1, updated_at = $7,
                     recency = nextval('session_recency')
                 WHERE owner = $1 AND peer = $2 AND peer_device = $3 AND session_id = $4
                   AND version = $6",
                &[
                    &owner,
                    &peer,
                    &peer_device,
                    &session_id,
                    &s.sealed,
                    &version,
                    &now,
                ],
            )
            .await?
        }
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
async fn apply(
    tx: &impl GenericClient,
    owner: &PhoneNumber,
    records: &[AppRecord],
) -> TxResult<()> {
    for record in records {
        match record {
            AppRecord::Message(m) => {
                execute(
                    tx,
                    "INSERT INTO messages
                         (owner, id, direction, peer, peer_device, kind, ts, body_sealed, status)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT DO NOTHING",
                    &[
                        &owner.digits(),
                        &m.id.as_str(),
                        &m.direction.as_str(),
                        &m.peer.digits(),
                        &m.peer_device.map(|d| i64::from(d.0)),
                        &m.kind.as_str(),
                        &m.ts.0,
                        &m.body_sealed,
                        &m.status.as_str(),
                    ],
                )
                .await?;
            }
            AppRecord::Status {
                id,
                status,
                announce,
            } => {
                if advance_status(tx, owner, id, *status).await?
                    && let Some(job) = announce
                {
                    super::gateway::queue_webhook(tx, job).await?;
                }
            }
            AppRecord::Resent { id } => {
                execute(
                    tx,
                    "UPDATE messages SET resends = resends + 1
                     WHERE owner = $1 AND id = $2 AND direction = 'out'",
                    &[&owner.digits(), &id.as_str()],
                )
                .await?;
            }
            AppRecord::Webhook(job) => super::gateway::queue_webhook(tx, job).await?,
            AppRecord::Contact {
                peer,
                profile_sealed,
            } => {
                execute(
                    tx,
                    "INSERT INTO contacts (owner, peer, profile_sealed, updated_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (owner, peer) DO UPDATE
                     SET profile_sealed = excluded.profile_sealed, updated_at = excluded.updated_at",
                    &[
                        &owner.digits(),
                        &peer.digits(),
                        profile_sealed,
                        &UnixTime::now().0,
                    ],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Moves the message (either direction) to `status` if that is a step forward; true if it
/// moved. The rank is
/// compared in the `UPDATE`: two nodes moving one message at once cannot move it backwards,
/// as the second waits for the first's row lock and then compares with its status.
async fn advance_status(
    tx: &impl GenericClient,
    owner: &PhoneNumber,
    id: &MessageId,
    status: MessageStatus,
) -> TxResult<bool> {
    // The statuses it may move from: those of a lower rank (the core's one order).
    let below: Vec<&str> = MessageStatus::ALL
        .into_iter()
        .filter(|s| s.rank() < status.rank())
        .map(MessageStatus::as_str)
        .collect();
    let moved = execute(
        tx,
        "UPDATE messages SET status = $3
         WHERE owner = $1 AND id = $2 AND status = ANY($4)",
        &[&owner.digits(), &id.as_str(), &status.as_str(), &below],
    )
    .await?;
    Ok(moved > 0)
}

fn message_from_row(row: &Row) -> TxResult<MessageRecord> {
    let peer_device: Option<i64> = get(row, 3)?;
    Ok(MessageRecord {
        id: parsed(row, 0)?,
        direction: named(row, 1, parse_direction)?,
        peer: parsed(row, 2)?,
        peer_device: match peer_device {
            Some(_) => Some(device_id(row, 3)?),
            None => None,
        },
        kind: named(row, 4, EnvelopeKind::parse)?,
        ts: time(row, 5)?,
        body_sealed: get(row, 6)?,
        status: named(row, 7, MessageStatus::parse)?,
        resends: {
            let resends: i64 = get(row, 8)?;
            u32::try_from(resends).map_err(|_| backend(format!("resends {resends}")))?
        },
    })
}

// `Direction` has no parser of its own.
fn parse_direction(s: &str) -> Option<Direction> {
    [Direction::Inbound, Direction::Outbound]
        .into_iter()
        .find(|d| d.as_str() == s)
}
