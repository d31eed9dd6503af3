//! [`ScheduleStore`] on PostgreSQL: scheduled sends and the template cursor, in the gateway's
//! schema, shared by every gateway node.
//!
//! Every decision is made by the statement that writes it, so nodes need no other lock:
//!
//! - A claim picks its rows `FOR UPDATE SKIP LOCKED`: rows another node is claiming right now
//!   are passed over, and a row another node claimed and committed since this statement
//!   began is rechecked on its new version (now `firing`, claimed just now) and left out.
//! - Cancelling and finishing are conditional `UPDATE`s (`state = 'scheduled'`; `firing` and
//!   still `claimed_by` this node): of a cancel and a claim, or of a late finish and a
//!   takeover, the second waits for the first's row lock and then finds the state moved on.
//! - The cursor moves with `UPDATE ... WHERE seq = from`, or from 0 by inserting its row
//!   (`ON CONFLICT DO NOTHING`): of two callers from one `from`, the second waits for the
//!   first and matches no row.

use super::db::{
    TxResult, execute, get, named, parsed, query, query_one, query_opt, time, transaction,
};
use super::endpoint::PgEndpointStore;
use super::gateway::queue_webhook;
use crate::StoreResult;
use crate::endpoint::WebhookJob;
use crate::schedule::{
    CancelOutcome, ScheduleRecord, ScheduleState, ScheduleStore, check_finish, listing_start,
};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use ventana_core::{MessageId, PhoneNumber, UnixTime, WabaId};

/// A schedule's columns, in the order [`schedule_from_row`] reads them.
const COLUMNS: &str = "id, owner, waba_id, recipient, send_at, request_sealed, state, error,
    claimed_by, claimed_at, created_at, updated_at";

#[async_trait]
impl ScheduleStore for PgEndpointStore {
    async fn create_schedule(&self, r: ScheduleRecord) -> StoreResult<()> {
        transaction!(self.db, |tx| {
            execute(
                tx,
                "INSERT INTO schedules (id, owner, waba_id, recipient, send_at, request_sealed,
                     state, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $8)",
                &[
                    &r.id.as_str(),
                    &r.owner.digits(),
                    &r.waba_id.as_str(),
                    &r.recipient.digits(),
                    &r.send_at.0,
                    &r.request_sealed,
                    &r.created_at.0,
                    &r.updated_at.0,
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn schedule(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<Option<ScheduleRecord>> {
        self.db.read(async |c| schedule(c, owner, id).await).await
    }

    async fn list_schedules(
        &self,
        owner: &PhoneNumber,
        state: Option<ScheduleState>,
        after: Option<(UnixTime, MessageId)>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRecord>> {
        let (after_send_at, after_id) = listing_start(after);
        let limit = i64::from(limit);
        self.db
            .read(async |c| {
                // Two fixed statements rather than an optional filter, so each walks its index
                // from the cursor on: (owner, send_at, id), or (owner, state, send_at, id).
                let rows = match state {
                    None => {
                        let sql = format!(
                            "SELECT {COLUMNS} FROM schedules
                             WHERE owner = $1 AND (send_at, id) > ($2, $3)
                             ORDER BY send_at, id LIMIT $4"
                        );
                        query(
                            c,
                            &sql,
                            &[&owner.digits(), &after_send_at, &after_id, &limit],
                        )
                        .await?
                    }
                    Some(state) => {
                        let sql = format!(
                            "SELECT {COLUMNS} FROM schedules
                             WHERE owner = $1 AND state = $5 AND (send_at, id) > ($2, $3)
                             ORDER BY send_at, id LIMIT $4"
                        );
                        query(
                            c,
                            &sql,
                            &[
                                &owner.digits(),
                                &after_send_at,
                                &after_id,
                                &limit,
                                &state.as_str(),
                            ],
                        )
                        .await?
                    }
                };
                rows.iter().map(schedule_from_row).collect()
            })
            .await
    }

    async fn cancel_schedule(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        now: UnixTime,
    ) -> StoreResult<CancelOutcome> {
        transaction!(self.db, |tx| {
            let sql = format!(
                "UPDATE schedules SET state = 'cancelled', updated_at = $3
                 WHERE owner = $1 AND id = $2 AND state = 'scheduled'
                 RETURNING {COLUMNS}"
            );
            let cancelled = query_opt(tx, &sql, &[&owner.digits(), &id.as_str(), &now.0]).await?;
            Ok(match cancelled {
                Some(row) => CancelOutcome::Cancelled(schedule_from_row(&row)?),
                // A statement of its own, so it sees what a claim that won committed.
                None => match schedule(tx, owner, id).await? {
                    Some(record) => CancelOutcome::NotCancellable(record),
                    None => CancelOutcome::NotFound,
                },
            })
        })
    }

    async fn claim_due_schedules(
        &self,
        owner: &PhoneNumber,
        due_by: UnixTime,
        node: &str,
        now: UnixTime,
        stale_before: UnixTime,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRecord>> {
        transaction!(self.db, |tx| {
            let sql = format!(
                "UPDATE schedules SET state = 'firing', claimed_by = $5, claimed_at = $6,
                     updated_at = $6
                 WHERE id IN (SELECT id FROM schedules
                              WHERE owner = $1
                                AND ((state = 'scheduled' AND send_at <= $2)
                                     OR (state = 'firing' AND claimed_at <= $3))
                              ORDER BY send_at, id
                              LIMIT $4
                              FOR UPDATE SKIP LOCKED)
                 RETURNING {COLUMNS}"
            );
            let rows = query(
                tx,
                &sql,
                &[
                    &owner.digits(),
                    &due_by.0,
                    &stale_before.0,
                    &i64::from(limit),
                    &node,
                    &now.0,
                ],
            )
            .await?;
            let mut claimed = rows
                .iter()
                .map(schedule_from_row)
                .collect::<TxResult<Vec<_>>>()?;
            // RETURNING does not keep the subquery's order.
            claimed.sort_by(|a, b| (a.send_at, &a.id).cmp(&(b.send_at, &b.id)));
            Ok(claimed)
        })
    }

    async fn finish_schedule(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        node: &str,
        state: ScheduleState,
        error: Option<String>,
        now: UnixTime,
    ) -> StoreResult<bool> {
        check_finish(id, state)?;
        transaction!(self.db, |tx| {
            let finished = execute(
                tx,
                "UPDATE schedules SET state = $4, error = $5, updated_at = $6
                 WHERE owner = $1 AND id = $2 AND state = 'firing' AND claimed_by = $3",
                &[
                    &owner.digits(),
                    &id.as_str(),
                    &node,
                    &state.as_str(),
                    &error,
                    &now.0,
                ],
            )
            .await?;
            Ok(finished == 1)
        })
    }

    async fn next_schedule_due(&self, owner: &PhoneNumber) -> StoreResult<Option<UnixTime>> {
        self.db
            .read(async |c| {
                let row = query_one(
                    c,
                    "SELECT min(send_at) FROM schedules WHERE owner = $1 AND state = 'scheduled'",
                    &[&owner.digits()],
                )
                .await?;
                let due: Option<i64> = get(&row, 0)?;
                Ok(due.map(UnixTime))
            })
            .await
    }

    async fn template_cursor(&self, waba: &WabaId) -> StoreResult<i64> {
        self.db
            .read(async |c| {
                let row = query_opt(
                    c,
                    "SELECT seq FROM template_cursors WHERE waba_id = $1",
                    &[&waba.as_str()],
                )
                .await?;
                Ok(row.map(|row| get(&row, 0)).transpose()?.unwrap_or(0))
            })
            .await
    }

    async fn advance_template_cursor(
        &self,
        waba: &WabaId,
        from: i64,
        to: i64,
        jobs: Vec<WebhookJob>,
    ) -> StoreResult<bool> {
        transaction!(self.db, |tx| {
            let mut moved = execute(
                tx,
                "UPDATE template_cursors SET seq = $3 WHERE waba_id = $1 AND seq = $2",
                &[&waba.as_str(), &from, &to],
            )
            .await?
                == 1;
            // No row is a cursor at 0.
            if !moved && from == 0 {
                moved = execute(
                    tx,
                    "INSERT INTO template_cursors (waba_id, seq) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&waba.as_str(), &to],
                )
                .await?
                    == 1;
            }
            if moved {
                for job in &jobs {
                    queue_webhook(tx, job).await?;
                }
            }
            Ok(moved)
        })
    }
}

async fn schedule(
    c: &impl GenericClient,
    owner: &PhoneNumber,
    id: &MessageId,
) -> TxResult<Option<ScheduleRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE owner = $1 AND id = $2");
    let row = query_opt(c, &sql, &[&owner.digits(), &id.as_str()]).await?;
    row.as_ref().map(schedule_from_row).transpose()
}

fn schedule_from_row(row: &Row) -> TxResult<ScheduleRecord> {
    let claimed_at: Option<i64> = get(row, 9)?;
    Ok(ScheduleRecord {
        id: parsed(row, 0)?,
        owner: parsed(row, 1)?,
        waba_id: parsed(row, 2)?,
        recipient: parsed(row, 3)?,
        send_at: time(row, 4)?,
        request_sealed: get(row, 5)?,
        state: named(row, 6, ScheduleState::parse)?,
        error: get(row, 7)?,
        claimed_by: get(row, 8)?,
        claimed_at: claimed_at.map(UnixTime),
        created_at: time(row, 10)?,
        updated_at: time(row, 11)?,
    })
}
