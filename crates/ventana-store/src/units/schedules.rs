//! Scheduled sends and the template cursor, in the gateway's file or schema.
//!
//! Every decision is made by the statement that writes it:
//!
//! - On SQLite, every write is a unit of the one writer, so a claim, a cancel or a cursor move
//!   decides and writes with nobody in between: two tasks claiming at once are run one after
//!   the other, and the second finds the rows the first took already `firing`.
//! - On PostgreSQL, nodes need no other lock. A claim picks its rows `FOR UPDATE SKIP LOCKED`:
//!   rows another node is claiming right now are passed over, and a row another node claimed
//!   and committed since this statement began is rechecked on its new version (now `firing`,
//!   claimed just now) and left out. Cancelling and finishing are conditional `UPDATE`s
//!   (`state = 'scheduled'`; `firing` and still `claimed_by` this node): of a cancel and a
//!   claim, or of a late finish and a takeover, the second waits for the first's row lock and
//!   then finds the state moved on. The cursor moves with `UPDATE ... WHERE seq = from`, or
//!   from 0 by inserting its row (`ON CONFLICT DO NOTHING`): of two callers from one `from`,
//!   the second waits for the first and matches no row.

use super::gateway::webhooks::queue_webhook;
use crate::endpoint::WebhookJob;
use crate::schedule::{CancelOutcome, ScheduleRecord, ScheduleState, check_finish, listing_start};
use crate::sql::{Row, Sql, Tx, TxResult, args};
use ventana_core::{MessageId, PhoneNumber, UnixTime, WabaId};

/// A schedule's columns, in the order [`schedule_from_row`] reads them.
macro_rules! columns {
    () => {
        "id, owner, waba_id, recipient, send_at, request_sealed, state, error, claimed_by, \
         claimed_at, created_at, updated_at"
    };
}

/// Stores a new schedule in state `scheduled`. A taken id is a conflict
/// ([`Exists`](crate::ConflictKind::Exists)).
pub(crate) async fn create(tx: &mut impl Tx, r: &ScheduleRecord) -> TxResult<()> {
    tx.execute(
        "INSERT INTO schedules (id, owner, waba_id, recipient, send_at, request_sealed,
             state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $8)",
        args![
            r.id.as_str(),
            r.owner.digits(),
            r.waba_id.as_str(),
            r.recipient.digits(),
            r.send_at,
            &r.request_sealed,
            r.created_at,
            r.updated_at,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn schedule(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    id: &MessageId,
) -> TxResult<Option<ScheduleRecord>> {
    let row = tx
        .query_opt(
            concat!(
                "SELECT ",
                columns!(),
                " FROM schedules WHERE owner = $1 AND id = $2"
            ),
            args![owner.digits(), id.as_str()],
        )
        .await?;
    row.map(schedule_from_row).transpose()
}

/// The owner's schedules in (`send_at`, `id`) order, after the cursor `after`.
pub(crate) async fn list(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    state: Option<ScheduleState>,
    after: Option<(UnixTime, MessageId)>,
    limit: u32,
) -> TxResult<Vec<ScheduleRecord>> {
    let (after_send_at, after_id) = listing_start(after);
    // Two fixed statements rather than an optional filter, so each walks its index from the
    // cursor on: (owner, send_at, id), or (owner, state, send_at, id) with a state.
    let rows = match state {
        None => {
            tx.query(
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM schedules
                      WHERE owner = $1 AND (send_at, id) > ($2, $3)
                      ORDER BY send_at, id LIMIT $4"
                ),
                args![owner.digits(), after_send_at, &after_id, limit],
            )
            .await?
        }
        Some(state) => {
            tx.query(
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM schedules
                      WHERE owner = $1 AND state = $5 AND (send_at, id) > ($2, $3)
                      ORDER BY send_at, id LIMIT $4"
                ),
                args![
                    owner.digits(),
                    after_send_at,
                    &after_id,
                    limit,
                    state.as_str()
                ],
            )
            .await?
        }
    };
    rows.into_iter().map(schedule_from_row).collect()
}

/// `scheduled` -> `cancelled`, compare-and-swap: a schedule being fired or done is not
/// cancellable.
pub(crate) async fn cancel(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    id: &MessageId,
    now: UnixTime,
) -> TxResult<CancelOutcome> {
    let cancelled = tx
        .query_opt(
            concat!(
                "UPDATE schedules SET state = 'cancelled', updated_at = $3
                 WHERE owner = $1 AND id = $2 AND state = 'scheduled'
                 RETURNING ",
                columns!()
            ),
            args![owner.digits(), id.as_str(), now],
        )
        .await?;
    Ok(match cancelled {
        Some(row) => CancelOutcome::Cancelled(schedule_from_row(row)?),
        // A statement of its own, so on PostgreSQL it sees what a claim that won committed.
        None => match schedule(tx, owner, id).await? {
            Some(record) => CancelOutcome::NotCancellable(record),
            None => CancelOutcome::NotFound,
        },
    })
}

/// Claims up to `limit` of the owner's due schedules (`scheduled` by `due_by`, or `firing`
/// since `stale_before`) for `node`, in (`send_at`, `id`) order.
pub(crate) async fn claim_due(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    due_by: UnixTime,
    node: &str,
    now: UnixTime,
    stale_before: UnixTime,
    limit: u32,
) -> TxResult<Vec<ScheduleRecord>> {
    // SQLite searches `schedules_due` twice, once per state, rather than once with an `OR`:
    // that one it runs along `schedules_listing`, through every sent row of the owner.
    // PostgreSQL takes the `OR`, since `FOR UPDATE` cannot lock the rows of a `UNION`.
    const CLAIM: Sql = Sql::dialects(
        concat!(
            "UPDATE schedules SET state = 'firing', claimed_by = $5, claimed_at = $6,
                 updated_at = $6
             WHERE id IN (SELECT id FROM (
                              SELECT id, send_at FROM schedules
                              WHERE owner = $1 AND state = 'scheduled' AND send_at <= $2
                              UNION ALL
                              SELECT id, send_at FROM schedules
                              WHERE owner = $1 AND state = 'firing' AND claimed_at <= $3)
                          ORDER BY send_at, id
                          LIMIT $4)
             RETURNING ",
            columns!()
        ),
        concat!(
            "UPDATE schedules SET state = 'firing', claimed_by = $5, claimed_at = $6,
                 updated_at = $6
             WHERE id IN (SELECT id FROM schedules
                          WHERE owner = $1
                            AND ((state = 'scheduled' AND send_at <= $2)
                                 OR (state = 'firing' AND claimed_at <= $3))
                          ORDER BY send_at, id
                          LIMIT $4
                          FOR UPDATE SKIP LOCKED)
             RETURNING ",
            columns!()
        ),
    );
    let rows = tx
        .rows(
            CLAIM,
            args![owner.digits(), due_by, stale_before, limit, node, now],
        )
        .await?;
    let mut claimed = rows
        .into_iter()
        .map(schedule_from_row)
        .collect::<TxResult<Vec<_>>>()?;
    // RETURNING does not keep the subquery's order.
    claimed.sort_by(|a, b| (a.send_at, &a.id).cmp(&(b.send_at, &b.id)));
    Ok(claimed)
}

/// `firing` -> `state` (sent or failed, else a [`State`](crate::ConflictKind::State)
/// conflict), only if `node` still holds the claim.
pub(crate) async fn finish(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    id: &MessageId,
    node: &str,
    state: ScheduleState,
    error: Option<&str>,
    now: UnixTime,
) -> TxResult<bool> {
    check_finish(id, state)?;
    let finished = tx
        .execute(
            "UPDATE schedules SET state = $4, error = $5, updated_at = $6
             WHERE owner = $1 AND id = $2 AND state = 'firing' AND claimed_by = $3",
            args![
                owner.digits(),
                id.as_str(),
                node,
                state.as_str(),
                error,
                now
            ],
        )
        .await?;
    Ok(finished == 1)
}

pub(crate) async fn next_due(tx: &mut impl Tx, owner: &PhoneNumber) -> TxResult<Option<UnixTime>> {
    let row = tx
        .query_one(
            "SELECT min(send_at) FROM schedules WHERE owner = $1 AND state = 'scheduled'",
            args![owner.digits()],
        )
        .await?;
    row.time_opt(0)
}

fn schedule_from_row(mut row: Row) -> TxResult<ScheduleRecord> {
    Ok(ScheduleRecord {
        id: row.parsed(0)?,
        owner: row.parsed(1)?,
        waba_id: row.parsed(2)?,
        recipient: row.parsed(3)?,
        send_at: row.time(4)?,
        request_sealed: row.take_blob(5)?,
        state: row.named(6, ScheduleState::parse)?,
        error: row.string_opt(7)?,
        claimed_by: row.string_opt(8)?,
        claimed_at: row.time_opt(9)?,
        created_at: row.time(10)?,
        updated_at: row.time(11)?,
    })
}

// --- the template cursor -------------------------------------------------------------------

/// The `seq` of the last template event turned into webhooks; no row is a cursor at 0.
pub(crate) async fn template_cursor(tx: &mut impl Tx, waba: &WabaId) -> TxResult<i64> {
    let row = tx
        .query_opt(
            "SELECT seq FROM template_cursors WHERE waba_id = $1",
            args![waba.as_str()],
        )
        .await?;
    Ok(row.map(|row| row.int(0)).transpose()?.unwrap_or(0))
}

/// Compare-and-swap from `from` to `to`, queueing `jobs` only if it moved.
pub(crate) async fn advance_template_cursor(
    tx: &mut impl Tx,
    waba: &WabaId,
    from: i64,
    to: i64,
    jobs: &[WebhookJob],
) -> TxResult<bool> {
    let mut moved = tx
        .execute(
            "UPDATE template_cursors SET seq = $3 WHERE waba_id = $1 AND seq = $2",
            args![waba.as_str(), from, to],
        )
        .await?
        == 1;
    // No row is a cursor at 0.
    if !moved && from == 0 {
        moved = tx
            .execute(
                "INSERT INTO template_cursors (waba_id, seq) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                args![waba.as_str(), to],
            )
            .await?
            == 1;
    }
    if moved {
        for job in jobs {
            queue_webhook(tx, job).await?;
        }
    }
    Ok(moved)
}
