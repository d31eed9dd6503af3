//! [`ScheduleStore`] on SQLite: scheduled sends and the template cursor, in the gateway's file.
//!
//! Every write is a unit of the one writer (see `db`), so a claim, a cancel or a cursor move
//! decides and writes with nobody in between: two tasks claiming at once are run one after
//! the other, and the second finds the rows the first took already `firing`.

use super::db::{TxResult, named, parsed};
use super::endpoint::SqliteEndpointStore;
use super::gateway::queue_webhook;
use crate::StoreResult;
use crate::endpoint::WebhookJob;
use crate::schedule::{
    CancelOutcome, ScheduleRecord, ScheduleState, ScheduleStore, check_finish, listing_start,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use ventana_core::{MessageId, PhoneNumber, UnixTime, WabaId};

/// A schedule's columns, in the order [`schedule_from_row`] reads them.
const COLUMNS: &str = "id, owner, waba_id, recipient, send_at, request_sealed, state, error,
    claimed_by, claimed_at, created_at, updated_at";

#[async_trait]
impl ScheduleStore for SqliteEndpointStore {
    async fn create_schedule(&self, r: ScheduleRecord) -> StoreResult<()> {
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO schedules (id, owner, waba_id, recipient, send_at, request_sealed,
                         state, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'scheduled', ?7, ?8)",
                )?
                .execute(params![
                    r.id.as_str(),
                    r.owner.digits(),
                    r.waba_id.as_str(),
                    r.recipient.digits(),
                    r.send_at.0,
                    r.request_sealed,
                    r.created_at.0,
                    r.updated_at.0,
                ])?;
                Ok(())
            })
            .await
    }

    async fn schedule(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<Option<ScheduleRecord>> {
        let (owner, id) = (owner.clone(), id.clone());
        self.db.read(move |tx| schedule(tx, &owner, &id)).await
    }

    async fn list_schedules(
        &self,
        owner: &PhoneNumber,
        state: Option<ScheduleState>,
        after: Option<(UnixTime, MessageId)>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRecord>> {
        let owner = owner.clone();
        let (after_send_at, after_id) = listing_start(after);
        // Two fixed statements rather than an optional filter, so each walks its index from
        // the cursor on: (owner, send_at, id), or (owner, state, send_at, id) with a state.
        self.db
            .read(move |tx| {
                let rows = match state {
                    None => tx
                        .prepare_cached(&format!(
                            "SELECT {COLUMNS} FROM schedules
                             WHERE owner = ?1 AND (send_at, id) > (?2, ?3)
                             ORDER BY send_at, id LIMIT ?4"
                        ))?
                        .query_map(
                            params![owner.digits(), after_send_at, after_id, limit],
                            schedule_from_row,
                        )?
                        .collect::<rusqlite::Result<_>>()?,
                    Some(state) => tx
                        .prepare_cached(&format!(
                            "SELECT {COLUMNS} FROM schedules
                             WHERE owner = ?1 AND state = ?5 AND (send_at, id) > (?2, ?3)
                             ORDER BY send_at, id LIMIT ?4"
                        ))?
                        .query_map(
                            params![
                                owner.digits(),
                                after_send_at,
                                after_id,
                                limit,
                                state.as_str()
                            ],
                            schedule_from_row,
                        )?
                        .collect::<rusqlite::Result<_>>()?,
                };
                Ok(rows)
            })
            .await
    }

    async fn cancel_schedule(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        now: UnixTime,
    ) -> StoreResult<CancelOutcome> {
        let (owner, id) = (owner.clone(), id.clone());
        self.db
            .write(move |tx| {
                let cancelled = tx
                    .prepare_cached(&format!(
                        "UPDATE schedules SET state = 'cancelled', updated_at = ?3
                         WHERE owner = ?1 AND id = ?2 AND state = 'scheduled'
                         RETURNING {COLUMNS}"
                    ))?
                    .query_row(
                        params![owner.digits(), id.as_str(), now.0],
                        schedule_from_row,
                    )
                    .optional()?;
                Ok(match cancelled {
                    Some(record) => CancelOutcome::Cancelled(record),
                    None => match schedule(tx, &owner, &id)? {
                        Some(record) => CancelOutcome::NotCancellable(record),
                        None => CancelOutcome::NotFound,
                    },
                })
            })
            .await
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
        let (owner, node) = (owner.clone(), node.to_owned());
        self.db
            .write(move |tx| {
                // Two searches of `schedules_due`, one per state, rather than one `OR`: that one
                // SQLite runs along `schedules_listing`, through every sent row of the owner.
                let mut stmt = tx.prepare_cached(&format!(
                    "UPDATE schedules SET state = 'firing', claimed_by = ?5, claimed_at = ?6,
                         updated_at = ?6
                     WHERE id IN (SELECT id FROM (
                                      SELECT id, send_at FROM schedules
                                      WHERE owner = ?1 AND state = 'scheduled' AND send_at <= ?2
                                      UNION ALL
                                      SELECT id, send_at FROM schedules
                                      WHERE owner = ?1 AND state = 'firing' AND claimed_at <= ?3)
                                  ORDER BY send_at, id
                                  LIMIT ?4)
                     RETURNING {COLUMNS}"
                ))?;
                let mut claimed = stmt
                    .query_map(
                        params![owner.digits(), due_by.0, stale_before.0, limit, node, now.0],
                        schedule_from_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                // RETURNING does not keep the subquery's order.
                claimed.sort_by(|a, b| (a.send_at, &a.id).cmp(&(b.send_at, &b.id)));
                Ok(claimed)
            })
            .await
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
        let (owner, id, node) = (owner.clone(), id.clone(), node.to_owned());
        self.db
            .write(move |tx| {
                let finished = tx
                    .prepare_cached(
                        "UPDATE schedules SET state = ?4, error = ?5, updated_at = ?6
                         WHERE owner = ?1 AND id = ?2 AND state = 'firing' AND claimed_by = ?3",
                    )?
                    .execute(params![
                        owner.digits(),
                        id.as_str(),
                        node,
                        state.as_str(),
                        error,
                        now.0
                    ])?;
                Ok(finished == 1)
            })
            .await
    }

    async fn next_schedule_due(&self, owner: &PhoneNumber) -> StoreResult<Option<UnixTime>> {
        let owner = owner.clone();
        self.db
            .read(move |tx| {
                let due: Option<i64> = tx
                    .prepare_cached(
                        "SELECT min(send_at) FROM schedules WHERE owner = ?1 AND state = 'scheduled'",
                    )?
                    .query_row([owner.digits()], |row| row.get(0))?;
                Ok(due.map(UnixTime))
            })
            .await
    }

    async fn template_cursor(&self, waba: &WabaId) -> StoreResult<i64> {
        let waba = waba.clone();
        self.db
            .read(move |tx| {
                let seq: Option<i64> = tx
                    .prepare_cached("SELECT seq FROM template_cursors WHERE waba_id = ?1")?
                    .query_row([waba.as_str()], |row| row.get(0))
                    .optional()?;
                Ok(seq.unwrap_or(0))
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
        let waba = waba.clone();
        self.db
            .write(move |tx| {
                let mut moved = tx
                    .prepare_cached(
                        "UPDATE template_cursors SET seq = ?3 WHERE waba_id = ?1 AND seq = ?2",
                    )?
                    .execute(params![waba.as_str(), from, to])?
                    == 1;
                // No row is a cursor at 0.
                if !moved && from == 0 {
                    moved = tx
                        .prepare_cached(
                            "INSERT INTO template_cursors (waba_id, seq) VALUES (?1, ?2)
                             ON CONFLICT DO NOTHING",
                        )?
                        .execute(params![waba.as_str(), to])?
                        == 1;
                }
                if moved {
                    for job in &jobs {
                        queue_webhook(tx, job)?;
                    }
                }
                Ok(moved)
            })
            .await
    }
}

fn schedule(
    tx: &Connection,
    owner: &PhoneNumber,
    id: &MessageId,
) -> TxResult<Option<ScheduleRecord>> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE owner = ?1 AND id = ?2"
        ))?
        .query_row(params![owner.digits(), id.as_str()], schedule_from_row)
        .optional()?)
}

fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        id: parsed(row, 0)?,
        owner: parsed(row, 1)?,
        waba_id: parsed(row, 2)?,
        recipient: parsed(row, 3)?,
        send_at: UnixTime(row.get(4)?),
        request_sealed: row.get(5)?,
        state: named(row, 6, ScheduleState::parse)?,
        error: row.get(7)?,
        claimed_by: row.get(8)?,
        claimed_at: row.get::<_, Option<i64>>(9)?.map(UnixTime),
        created_at: UnixTime(row.get(10)?),
        updated_at: UnixTime(row.get(11)?),
    })
}
