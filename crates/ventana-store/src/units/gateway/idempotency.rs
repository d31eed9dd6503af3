//! The idempotency keys of the gateway's sends: each step is one conditional statement, so
//! the decision it makes holds on every backend (see [`crate::idempotency`]).

use crate::idempotency::{
    ClaimOutcome, IdempotencyRecord, IdempotencyState, NewClaim, StoredResponse,
};
use crate::sql::{Row, Tx, TxResult, args, conflict};
use ventana_core::{IdempotencyKey, PhoneNumberId, UnixTime};

/// The key columns [`key_from_row`] reads.
macro_rules! key_columns {
    () => {
        "phone_number_id, key, fingerprint, message_id, state, attempt, claimed_until, \
         response_status, response_body, created_at"
    };
}

/// Claims the key for a first attempt, or answers with the row as it stands. A row created at
/// or before `expired_before` is past retention and replaced as if it were not there.
///
/// One statement decides: on PostgreSQL, of concurrent claims of one key, the later ones wait
/// for the first's row and then find it in use (or, past retention, replace it); on SQLite
/// the one writer runs them one after another.
pub(crate) async fn claim(
    tx: &mut impl Tx,
    c: &NewClaim,
    expired_before: UnixTime,
) -> TxResult<ClaimOutcome> {
    let claimed = tx
        .query_opt(
            concat!(
                "INSERT INTO idempotency_keys (",
                key_columns!(),
                ")
                 VALUES ($1, $2, $3, $4, $5, 1, $6, NULL, NULL, $7)
                 ON CONFLICT (phone_number_id, key) DO UPDATE SET
                     fingerprint = excluded.fingerprint, message_id = excluded.message_id,
                     state = excluded.state, attempt = excluded.attempt,
                     claimed_until = excluded.claimed_until, response_status = NULL,
                     response_body = NULL, created_at = excluded.created_at
                 WHERE idempotency_keys.created_at <= $8
                 RETURNING ",
                key_columns!()
            ),
            args![
                c.phone_number_id.as_str(),
                c.key.as_str(),
                &c.fingerprint,
                c.message_id.as_str(),
                IdempotencyState::InProgress.as_str(),
                c.claimed_until,
                c.created_at,
                expired_before,
            ],
        )
        .await?;
    if let Some(row) = claimed {
        return Ok(ClaimOutcome::Claimed(key_from_row(row)?));
    }
    // A statement of its own: on PostgreSQL it sees the row the conflict was with, committed.
    key(tx, &c.phone_number_id, &c.key)
        .await?
        .map(ClaimOutcome::Existing)
        .ok_or_else(|| {
            conflict(
                crate::ConflictKind::Changed,
                "the idempotency key vanished while claimed; retry",
            )
        })
}

pub(crate) async fn key(
    tx: &mut impl Tx,
    id: &PhoneNumberId,
    key: &IdempotencyKey,
) -> TxResult<Option<IdempotencyRecord>> {
    let row = tx
        .query_opt(
            concat!(
                "SELECT ",
                key_columns!(),
                " FROM idempotency_keys WHERE phone_number_id = $1 AND key = $2"
            ),
            args![id.as_str(), key.as_str()],
        )
        .await?;
    row.map(key_from_row).transpose()
}

/// Takes over an `InProgress` claim at `attempt` that ran out by `now`: compare-and-swap on
/// `attempt`, which becomes `attempt + 1`. False if the row moved on.
pub(crate) async fn take_over(
    tx: &mut impl Tx,
    id: &PhoneNumberId,
    key: &IdempotencyKey,
    attempt: i64,
    now: UnixTime,
    claimed_until: UnixTime,
) -> TxResult<bool> {
    let taken = tx
        .execute(
            "UPDATE idempotency_keys SET attempt = attempt + 1, claimed_until = $5
             WHERE phone_number_id = $1 AND key = $2 AND attempt = $3
               AND state = $6 AND claimed_until <= $4",
            args![
                id.as_str(),
                key.as_str(),
                attempt,
                now,
                claimed_until,
                IdempotencyState::InProgress.as_str(),
            ],
        )
        .await?;
    Ok(taken == 1)
}

/// `InProgress` at `attempt` -> `Completed` with `response`. False if it is completed already
/// or another attempt took it over.
pub(crate) async fn complete(
    tx: &mut impl Tx,
    id: &PhoneNumberId,
    key: &IdempotencyKey,
    attempt: i64,
    response: &StoredResponse,
) -> TxResult<bool> {
    let completed = tx
        .execute(
            "UPDATE idempotency_keys
             SET state = $6, response_status = $4, response_body = $5
             WHERE phone_number_id = $1 AND key = $2 AND attempt = $3 AND state = $7",
            args![
                id.as_str(),
                key.as_str(),
                attempt,
                response.status,
                &response.body,
                IdempotencyState::Completed.as_str(),
                IdempotencyState::InProgress.as_str(),
            ],
        )
        .await?;
    Ok(completed == 1)
}

/// Gives the claim at `attempt` up: it stays `InProgress`, claimed only until `now` (or
/// earlier, if it ran out before), so the next retry takes it over at once. False if the row
/// moved on.
pub(crate) async fn release(
    tx: &mut impl Tx,
    id: &PhoneNumberId,
    key: &IdempotencyKey,
    attempt: i64,
    now: UnixTime,
) -> TxResult<bool> {
    let released = tx
        .execute(
            "UPDATE idempotency_keys
             SET claimed_until = CASE WHEN claimed_until < $4 THEN claimed_until ELSE $4 END
             WHERE phone_number_id = $1 AND key = $2 AND attempt = $3 AND state = $5",
            args![
                id.as_str(),
                key.as_str(),
                attempt,
                now,
                IdempotencyState::InProgress.as_str(),
            ],
        )
        .await?;
    Ok(released == 1)
}

/// Deletes keys created before `created_before`, in whatever state; returns how many.
pub(crate) async fn prune(tx: &mut impl Tx, created_before: UnixTime) -> TxResult<u64> {
    tx.execute(
        "DELETE FROM idempotency_keys WHERE created_at < $1",
        args![created_before],
    )
    .await
}

fn key_from_row(mut row: Row) -> TxResult<IdempotencyRecord> {
    let response = if row.is_null(7)? || row.is_null(8)? {
        None
    } else {
        Some(StoredResponse {
            status: row.unsigned(7)?,
            body: row.string(8)?,
        })
    };
    Ok(IdempotencyRecord {
        phone_number_id: row.parsed(0)?,
        key: row.parsed(1)?,
        fingerprint: row.take_blob(2)?,
        message_id: row.parsed(3)?,
        state: row.named(4, IdempotencyState::parse)?,
        attempt: row.int(5)?,
        claimed_until: row.time(6)?,
        response,
        created_at: row.time(9)?,
    })
}
