//! An endpoint's units of work: identities, sealed Olm sessions, the outbox, dedup markers,
//! history, contacts and the template cache. The gateway's tables live beside them (see
//! [`gateway`](super::gateway)), so a webhook job commits with the message it reports.

use super::gateway::webhooks::queue_webhook;
use crate::endpoint::{
    AppRecord, Direction, IdentityRecord, InboundCommit, InboundOutcome, MAX_SESSIONS_PER_DEVICE,
    MessageRecord, OutboundCommit, OutboxRow, SessionMark, SessionRecord, SessionWrite,
};
use crate::sql::{Row, Sql, Tx, TxResult, args, backend, conflict};
use ventana_core::rules::EnvelopeKind;
use ventana_core::{DeviceId, MessageId, MessageStatus, PhoneNumber, UnixTime};

// --- identity ------------------------------------------------------------------------------

pub(crate) async fn identity(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
) -> TxResult<Option<IdentityRecord>> {
    let row = tx
        .query_opt(
            "SELECT owner, device_id, relay_token_sealed, account_sealed, display_name
             FROM identities WHERE owner = $1",
            args![owner.digits()],
        )
        .await?;
    row.map(|row| {
        Ok(IdentityRecord {
            owner: row.parsed(0)?,
            device_id: row.device_id(1)?,
            relay_token_sealed: row.blob(2)?,
            account_sealed: row.blob(3)?,
            display_name: row.string(4)?,
        })
    })
    .transpose()
}

/// Inserts or replaces the identity.
pub(crate) async fn save_identity(tx: &mut impl Tx, identity: &IdentityRecord) -> TxResult<()> {
    tx.execute(
        "INSERT INTO identities
             (owner, device_id, relay_token_sealed, account_sealed, display_name)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (owner) DO UPDATE
         SET device_id = excluded.device_id,
             relay_token_sealed = excluded.relay_token_sealed,
             account_sealed = excluded.account_sealed,
             display_name = excluded.display_name",
        args![
            identity.owner.digits(),
            identity.device_id,
            &identity.relay_token_sealed,
            &identity.account_sealed,
            &identity.display_name,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn save_account(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    account_sealed: &[u8],
) -> TxResult<()> {
    let saved = tx
        .execute(
            "UPDATE identities SET account_sealed = $2 WHERE owner = $1",
            args![owner.digits(), account_sealed],
        )
        .await?;
    if saved == 0 {
        return Err(backend(format!(
            "no identity for {owner} to save an account into"
        )));
    }
    Ok(())
}

// --- sessions ------------------------------------------------------------------------------

/// Sessions with one peer device, most recently used first.
pub(crate) async fn sessions(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    peer: &PhoneNumber,
    peer_device: DeviceId,
) -> TxResult<Vec<SessionRecord>> {
    let rows = tx
        .query(
            "SELECT peer, peer_device, session_id, sealed, version, updated_at
             FROM sessions WHERE owner = $1 AND peer = $2 AND peer_device = $3
             ORDER BY recency DESC",
            args![owner.digits(), peer.digits(), peer_device],
        )
        .await?;
    rows.into_iter()
        .map(|mut row| {
            Ok(SessionRecord {
                peer: row.parsed(0)?,
                peer_device: row.device_id(1)?,
                session_id: row.string(2)?,
                sealed: row.take_blob(3)?,
                version: row.int(4)?,
                updated_at: row.time(5)?,
            })
        })
        .collect()
}

/// Writes a session if nobody else wrote it since it was read, else fails the transaction.
/// The check is the statement's own. On SQLite nothing else writes meanwhile (the one writer
/// runs units one after another). On PostgreSQL, of two writers expecting one version, the
/// second's `UPDATE` waits for the first's row lock and then finds the version moved on, and
/// the second of two creators finds the row there; either way it matches no row.
///
/// `recency` orders a peer device's sessions by last write. PostgreSQL draws it from the
/// `session_recency` sequence, so no two writes on any node share one; SQLite, whose writes
/// never overlap, counts on from the device's latest.
async fn write_session(tx: &mut impl Tx, owner: &PhoneNumber, s: &SessionWrite) -> TxResult<()> {
    const CREATE: Sql = Sql::dialects(
        "INSERT INTO sessions
             (owner, peer, peer_device, session_id, sealed, version, updated_at, recency)
         VALUES ($1, $2, $3, $4, $5, 1, $6,
                 (SELECT coalesce(max(recency), 0) + 1 FROM sessions
                  WHERE owner = $1 AND peer = $2 AND peer_device = $3))
         ON CONFLICT DO NOTHING",
        "INSERT INTO sessions
             (owner, peer, peer_device, session_id, sealed, version, updated_at, recency)
         VALUES ($1, $2, $3, $4, $5, 1, $6, nextval('session_recency'))
         ON CONFLICT DO NOTHING",
    );
    const UPDATE: Sql = Sql::dialects(
        "UPDATE sessions SET sealed = $5, version = version + 1, updated_at = $7,
             recency = (SELECT coalesce(max(recency), 0) + 1 FROM sessions
                        WHERE owner = $1 AND peer = $2 AND peer_device = $3)
         WHERE owner = $1 AND peer = $2 AND peer_device = $3 AND session_id = $4
           AND version = $6",
        "UPDATE sessions SET sealed = $5, version = version + 1, updated_at = $7,
             recency = nextval('session_recency')
         WHERE owner = $1 AND peer = $2 AND peer_device = $3 AND session_id = $4
           AND version = $6",
    );
    let (owner, peer, device, id) = (
        owner.digits(),
        s.peer.digits(),
        s.peer_device,
        s.session_id.as_str(),
    );
    let now = UnixTime::now();
    let written = match s.expected_version {
        None => {
            let written = tx
                .changes(CREATE, args![owner, peer, device, id, &s.sealed, now])
                .await?;
            // Beyond the newest few, a peer device's sessions are dropped, least recently
            // used first.
            tx.execute(
                "DELETE FROM sessions
                 WHERE owner = $1 AND peer = $2 AND peer_device = $3 AND session_id NOT IN (
                     SELECT session_id FROM sessions
                     WHERE owner = $1 AND peer = $2 AND peer_device = $3
                     ORDER BY recency DESC LIMIT $4)",
                args![owner, peer, device, MAX_SESSIONS_PER_DEVICE],
            )
            .await?;
            written
        }
        Some(version) => {
            tx.changes(
                UPDATE,
                args![owner, peer, device, id, &s.sealed, version, now],
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

// --- the outbox and inbound processing -----------------------------------------------------

/// Commits sessions, the outbox row and records at once.
pub(crate) async fn commit_outbound(tx: &mut impl Tx, commit: &OutboundCommit) -> TxResult<()> {
    let owner = &commit.owner;
    if let Some(account_sealed) = &commit.account_sealed {
        save_account(tx, owner, account_sealed).await?;
    }
    for session in &commit.sessions {
        write_session(tx, owner, session).await?;
    }
    queue_outbox(tx, owner, &commit.outbox).await?;
    apply(tx, owner, &commit.records).await
}

/// Queues an outbox row. A row with the same id is replaced (its earlier ciphertext was never
/// accepted, or is being encrypted again), keeping the lowest attempt: a first send that was
/// not settled yet still announces itself when it is.
async fn queue_outbox(tx: &mut impl Tx, owner: &PhoneNumber, row: &OutboxRow) -> TxResult<()> {
    tx.execute(
        "INSERT INTO outbox (owner, id, recipient, submission, created_at, sessions, attempt)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (owner, id) DO UPDATE
         SET submission = excluded.submission, sessions = excluded.sessions,
             attempt = CASE WHEN excluded.attempt < outbox.attempt
                            THEN excluded.attempt ELSE outbox.attempt END",
        args![
            owner.digits(),
            row.id.as_str(),
            row.to.digits(),
            &row.submission,
            row.created_at,
            &SessionMark::encode_all(&row.sessions),
            row.attempt,
        ],
    )
    .await?;
    Ok(())
}

/// Rows not yet settled with the relay, oldest first; rows of one second in the order they
/// were written (SQLite's `rowid`, PostgreSQL's `written`).
pub(crate) async fn outbox(tx: &mut impl Tx, owner: &PhoneNumber) -> TxResult<Vec<OutboxRow>> {
    const OUTBOX: Sql = Sql::dialects(
        "SELECT id, recipient, submission, created_at, sessions, attempt FROM outbox
         WHERE owner = $1 ORDER BY created_at, rowid",
        "SELECT id, recipient, submission, created_at, sessions, attempt FROM outbox
         WHERE owner = $1 ORDER BY created_at, written",
    );
    let rows = tx.rows(OUTBOX, args![owner.digits()]).await?;
    rows.into_iter()
        .map(|mut row| {
            Ok(OutboxRow {
                id: row.parsed(0)?,
                to: row.parsed(1)?,
                submission: row.take_blob(2)?,
                created_at: row.time(3)?,
                sessions: row.named(4, SessionMark::decode_all)?,
                attempt: row.unsigned(5)?,
            })
        })
        .collect()
}

/// The relay has answered for this row: drops it and applies `records`. A row already gone
/// means this answer was settled before, with its records: false, and nothing applied.
pub(crate) async fn settle_outbox(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    id: &MessageId,
    records: &[AppRecord],
) -> TxResult<bool> {
    let settled = tx
        .execute(
            "DELETE FROM outbox WHERE owner = $1 AND id = $2",
            args![owner.digits(), id.as_str()],
        )
        .await?
        == 1;
    if settled {
        apply(tx, owner, records).await?;
    }
    Ok(settled)
}

pub(crate) async fn is_processed(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    from: &PhoneNumber,
    id: &MessageId,
) -> TxResult<bool> {
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM processed
                            WHERE owner = $1 AND sender = $2 AND id = $3)",
            args![owner.digits(), from.digits(), id.as_str()],
        )
        .await?;
    row.bool(0)
}

/// Everything processing one inbound envelope changes, or nothing if it was processed before.
pub(crate) async fn commit_inbound(
    tx: &mut impl Tx,
    commit: &InboundCommit,
) -> TxResult<InboundOutcome> {
    let owner = &commit.owner;
    for id in &commit.settled {
        tx.execute(
            "DELETE FROM outbox WHERE owner = $1 AND id = $2",
            args![owner.digits(), id.as_str()],
        )
        .await?;
    }
    // On PostgreSQL, of two nodes processing one envelope at once, the second waits here for
    // the first: it inserts if the first rolled back, and finds the marker otherwise.
    let first_time = !commit.processed
        || tx
            .execute(
                "INSERT INTO processed (owner, sender, id, processed_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                args![
                    owner.digits(),
                    commit.from.digits(),
                    commit.id.as_str(),
                    UnixTime::now(),
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
}

// --- history and application records -------------------------------------------------------

/// The message columns [`message_from_row`] reads.
macro_rules! message_columns {
    () => {
        "id, direction, peer, peer_device, kind, ts, body_sealed, status, resends"
    };
}

pub(crate) async fn message(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    id: &MessageId,
) -> TxResult<Option<MessageRecord>> {
    // Both directions can hold an id only if a peer reused one of ours, which it can only
    // have learnt from us; the earlier row (SQLite's `rowid`, PostgreSQL's `written`) is then
    // the genuine one.
    const MESSAGE: Sql = Sql::dialects(
        concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE owner = $1 AND id = $2 ORDER BY rowid LIMIT 1"
        ),
        concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE owner = $1 AND id = $2 ORDER BY written LIMIT 1"
        ),
    );
    let row = tx
        .row_opt(MESSAGE, args![owner.digits(), id.as_str()])
        .await?;
    row.map(message_from_row).transpose()
}

/// The latest `limit` messages, newest last; those of one second in the order they were
/// written.
pub(crate) async fn messages(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    limit: u32,
) -> TxResult<Vec<MessageRecord>> {
    const LATEST: Sql = Sql::dialects(
        concat!(
            "SELECT ",
            message_columns!(),
            " FROM (SELECT *, rowid AS written FROM messages WHERE owner = $1
                    ORDER BY ts DESC, written DESC LIMIT $2) AS latest
              ORDER BY ts, written"
        ),
        concat!(
            "SELECT ",
            message_columns!(),
            " FROM (SELECT * FROM messages WHERE owner = $1
                    ORDER BY ts DESC, written DESC LIMIT $2) AS latest
              ORDER BY ts, written"
        ),
    );
    let rows = tx.rows(LATEST, args![owner.digits(), limit]).await?;
    rows.into_iter().map(message_from_row).collect()
}

fn message_from_row(mut row: Row) -> TxResult<MessageRecord> {
    Ok(MessageRecord {
        id: row.parsed(0)?,
        direction: row.named(1, parse_direction)?,
        peer: row.parsed(2)?,
        peer_device: if row.is_null(3)? {
            None
        } else {
            Some(row.device_id(3)?)
        },
        kind: row.named(4, EnvelopeKind::parse)?,
        ts: row.time(5)?,
        body_sealed: row.take_blob(6)?,
        status: row.named(7, MessageStatus::parse)?,
        resends: row.unsigned(8)?,
    })
}

// `Direction` has no parser of its own.
fn parse_direction(s: &str) -> Option<Direction> {
    [Direction::Inbound, Direction::Outbound]
        .into_iter()
        .find(|d| d.as_str() == s)
}

/// Applies application records. Each is idempotent, so a record applied twice (a settled
/// outbox row answered again) changes nothing the second time.
pub(crate) async fn apply(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    records: &[AppRecord],
) -> TxResult<()> {
    for record in records {
        match record {
            AppRecord::Message(m) => {
                tx.execute(
                    "INSERT INTO messages
                         (owner, id, direction, peer, peer_device, kind, ts, body_sealed, status)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT DO NOTHING",
                    args![
                        owner.digits(),
                        m.id.as_str(),
                        m.direction.as_str(),
                        m.peer.digits(),
                        m.peer_device,
                        m.kind.as_str(),
                        m.ts,
                        &m.body_sealed,
                        m.status.as_str(),
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
                    queue_webhook(tx, job).await?;
                }
            }
            AppRecord::Resent { id } => {
                tx.execute(
                    "UPDATE messages SET resends = resends + 1
                     WHERE owner = $1 AND id = $2 AND direction = 'out'",
                    args![owner.digits(), id.as_str()],
                )
                .await?;
            }
            AppRecord::Webhook(job) => queue_webhook(tx, job).await?,
            AppRecord::Contact {
                peer,
                profile_sealed,
            } => {
                tx.execute(
                    "INSERT INTO contacts (owner, peer, profile_sealed, updated_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (owner, peer) DO UPDATE
                     SET profile_sealed = excluded.profile_sealed, updated_at = excluded.updated_at",
                    args![
                        owner.digits(),
                        peer.digits(),
                        profile_sealed,
                        UnixTime::now(),
                    ],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Moves the message (either direction) to `status` if that is a step forward; true if it
/// moved. The rank is compared in the `UPDATE`: on PostgreSQL, two nodes moving one message
/// at once cannot move it backwards, as the second waits for the first's row lock and then
/// compares with its status.
async fn advance_status(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    id: &MessageId,
    status: MessageStatus,
) -> TxResult<bool> {
    const ADVANCE: Sql = Sql::dialects(
        "UPDATE messages SET status = $3
         WHERE owner = $1 AND id = $2 AND status IN (SELECT value FROM json_each($4))",
        "UPDATE messages SET status = $3
         WHERE owner = $1 AND id = $2 AND status = ANY ($4)",
    );
    // The statuses it may move from: those of a lower rank (the core's one order).
    let below: Vec<&str> = MessageStatus::ALL
        .into_iter()
        .filter(|s| s.rank() < status.rank())
        .map(MessageStatus::as_str)
        .collect();
    let moved = tx
        .changes(
            ADVANCE,
            args![
                owner.digits(),
                id.as_str(),
                status.as_str(),
                below.as_slice()
            ],
        )
        .await?;
    Ok(moved > 0)
}

pub(crate) async fn contact(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    peer: &PhoneNumber,
) -> TxResult<Option<Vec<u8>>> {
    let row = tx
        .query_opt(
            "SELECT profile_sealed FROM contacts WHERE owner = $1 AND peer = $2",
            args![owner.digits(), peer.digits()],
        )
        .await?;
    row.map(|mut row| row.take_blob(0)).transpose()
}

// --- the template cache --------------------------------------------------------------------

pub(crate) async fn cached_template(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    business: &PhoneNumber,
    id: &str,
    version: u32,
) -> TxResult<Option<String>> {
    // The column is an INTEGER (PostgreSQL's is 32 bits): a version beyond it was never
    // cached.
    let Ok(version) = i32::try_from(version) else {
        return Ok(None);
    };
    let row = tx
        .query_opt(
            "SELECT definition FROM template_cache
             WHERE owner = $1 AND business = $2 AND id = $3 AND version = $4",
            args![owner.digits(), business.digits(), id, version],
        )
        .await?;
    row.map(|row| row.string(0)).transpose()
}

/// Versions never change, so an entry already there is kept as it is.
pub(crate) async fn cache_template(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    business: &PhoneNumber,
    id: &str,
    version: u32,
    definition: &str,
) -> TxResult<()> {
    let version = i32::try_from(version).map_err(|_| {
        backend(format!(
            "template version {version} is beyond the cache's range"
        ))
    })?;
    tx.execute(
        "INSERT INTO template_cache (owner, business, id, version, definition)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
        args![owner.digits(), business.digits(), id, version, definition],
    )
    .await?;
    Ok(())
}
