//! The webhook queue's units of work (see [`crate::webhook`]).
//!
//! Jobs are ordered by `rowid` on SQLite and by `written` on PostgreSQL: the order they were
//! inserted in, which for the statuses of one message is the order they happened in (each
//! is inserted after the message row's status moved, under that row's lock). Not by
//! `created_at`, which two nodes' clocks may disagree on.

use crate::sql::{Row, Sql, Tx, TxResult, args, big};
use crate::webhook::{
    CallbackChange, LeaseRequest, LoggedAttempt, ReplayFrom, WebhookAttempt, WebhookEvent,
    WebhookJob, WebhookOutcome, WebhookRouting, WebhookState,
};
use ventana_core::{MessageId, PhoneNumber, PhoneNumberId, UnixTime, WabaId};

/// Queues a job, in the caller's transaction. A job already queued under its id is left as
/// it is: the same event reported again (a record applied twice) is delivered once.
pub(crate) async fn queue_webhook(tx: &mut impl Tx, job: &WebhookJob) -> TxResult<()> {
    tx.execute(
        "INSERT INTO webhooks (id, waba_id, phone_number_id, order_key, body_sealed, attempts,
                               next_attempt_at, created_at, failing_since)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT DO NOTHING",
        args![
            &job.id,
            job.waba_id.as_str(),
            job.phone_number_id.as_ref().map(|id| id.as_str()),
            job.order_key.as_deref(),
            &job.body_sealed,
            job.attempts,
            job.next_attempt_at,
            job.created_at,
            job.failing_since,
        ],
    )
    .await?;
    Ok(())
}

/// See [`WebhookStore::lease_webhooks`](crate::webhook::WebhookStore::lease_webhooks).
///
/// A job is the first of its `order_key` if no job of that key queued before it is still
/// queued (due later, or leased and in flight): so the statuses of one message reach the
/// business in the order they happened, across nodes too, and one that is retrying holds
/// back only those of its own message.
///
/// On SQLite the one writer runs this with nobody in between. On PostgreSQL, `SKIP LOCKED`
/// passes over jobs another node is leasing right now; one it has leased and committed fails
/// the recheck of `lease_until`, so no job goes to two nodes at once.
pub(crate) async fn lease_webhooks(
    tx: &mut impl Tx,
    request: &LeaseRequest<'_>,
) -> TxResult<Vec<WebhookJob>> {
    // The jobs each route may take at most (`row_number` over the route), then the oldest of
    // those; on PostgreSQL the rows are locked in an outer query, as `FOR UPDATE` does not
    // go with window functions.
    const LEASE: Sql = Sql::dialects(
        "UPDATE webhooks SET leased_by = $3, lease_until = $4
         WHERE id IN (
             SELECT id FROM (
                 SELECT w.id, w.created_at, w.rowid AS written,
                        row_number() OVER (PARTITION BY w.waba_id, w.phone_number_id
                                           ORDER BY w.created_at, w.rowid) AS nth
                 FROM webhooks w
                 WHERE w.state = 'queued' AND w.next_attempt_at <= $1
                   AND (w.lease_until IS NULL OR w.lease_until <= $1)
                   AND w.waba_id || '/' || coalesce(w.phone_number_id, '')
                       NOT IN (SELECT value FROM json_each($5))
                   AND (w.order_key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM webhooks e
                       WHERE e.order_key = w.order_key AND e.state = 'queued'
                         AND e.rowid < w.rowid)))
             WHERE nth <= $6
             ORDER BY created_at, written
             LIMIT $2)
         RETURNING id, waba_id, phone_number_id, order_key, body_sealed, attempts,
                   next_attempt_at, created_at, failing_since, rowid",
        "UPDATE webhooks SET leased_by = $3, lease_until = $4
         WHERE id IN (
             SELECT l.id FROM webhooks l
             WHERE l.id IN (
                 SELECT c.id FROM (
                     SELECT w.id,
                            row_number() OVER (PARTITION BY w.waba_id, w.phone_number_id
                                               ORDER BY w.created_at, w.written) AS nth
                     FROM webhooks w
                     WHERE w.state = 'queued' AND w.next_attempt_at <= $1
                       AND (w.lease_until IS NULL OR w.lease_until <= $1)
                       AND NOT (w.waba_id || '/' || coalesce(w.phone_number_id, '') = ANY ($5))
                       AND (w.order_key IS NULL OR NOT EXISTS (
                           SELECT 1 FROM webhooks e
                           WHERE e.order_key = w.order_key AND e.state = 'queued'
                             AND e.written < w.written))) c
                 WHERE c.nth <= $6)
               AND l.state = 'queued' AND (l.lease_until IS NULL OR l.lease_until <= $1)
             ORDER BY l.created_at, l.written
             LIMIT $2
             FOR UPDATE OF l SKIP LOCKED)
         RETURNING id, waba_id, phone_number_id, order_key, body_sealed, attempts,
                   next_attempt_at, created_at, failing_since, written",
    );
    let now = request.now;
    let until = UnixTime(now.0.saturating_add(request.lease_secs));
    let skip: Vec<&str> = request.skip.iter().map(String::as_str).collect();
    let rows = tx
        .rows(
            LEASE,
            args![
                now,
                request.limit,
                request.node,
                until,
                skip.as_slice(),
                request.per_route.max(1)
            ],
        )
        .await?;
    let mut jobs = rows
        .into_iter()
        .map(|mut row| {
            let written = row.int(9)?;
            let job = WebhookJob {
                id: row.string(0)?,
                waba_id: row.parsed(1)?,
                phone_number_id: row.parsed_opt(2)?,
                order_key: row.string_opt(3)?,
                body_sealed: row.take_blob(4)?,
                attempts: row.unsigned(5)?,
                next_attempt_at: row.time(6)?,
                created_at: row.time(7)?,
                failing_since: row.time_opt(8)?,
            };
            Ok((job, written))
        })
        .collect::<TxResult<Vec<_>>>()?;
    // RETURNING does not keep the subquery's order.
    jobs.sort_by_key(|(job, written)| (job.created_at, *written));
    Ok(jobs.into_iter().map(|(job, _)| job).collect())
}

pub(crate) async fn release_webhooks(tx: &mut impl Tx, node: &str, ids: &[String]) -> TxResult<()> {
    const RELEASE: Sql = Sql::dialects(
        "UPDATE webhooks SET leased_by = NULL, lease_until = NULL
         WHERE leased_by = $1 AND id IN (SELECT value FROM json_each($2))",
        "UPDATE webhooks SET leased_by = NULL, lease_until = NULL
         WHERE leased_by = $1 AND id = ANY ($2)",
    );
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    tx.changes(RELEASE, args![node, ids.as_slice()]).await?;
    Ok(())
}

pub(crate) async fn release_node_webhooks(tx: &mut impl Tx, node: &str) -> TxResult<u64> {
    tx.execute(
        "UPDATE webhooks SET leased_by = NULL, lease_until = NULL
         WHERE leased_by = $1 AND state = 'queued'",
        args![node],
    )
    .await
}

pub(crate) async fn settle_webhook(
    tx: &mut impl Tx,
    attempt: &WebhookAttempt,
    attempts: u32,
    outcome: WebhookOutcome,
) -> TxResult<()> {
    let now = UnixTime(attempt.at_ms.div_euclid(1000));
    let id = attempt.event_id.as_str();
    match outcome {
        WebhookOutcome::Delivered => {
            tx.execute(
                "UPDATE webhooks SET state = 'delivered', attempts = $2, settled_at = $3,
                     last_error = NULL, failing_since = NULL, leased_by = NULL, lease_until = NULL
                 WHERE id = $1 AND state = 'queued'",
                args![id, attempts, now],
            )
            .await?;
        }
        // A failure is recorded only by the node holding the lease (or by one whose lease
        // nobody took since): one whose lease ran out must not end another node's.
        WebhookOutcome::Retry { next, now } => {
            tx.execute(
                "UPDATE webhooks SET attempts = $2, next_attempt_at = $3, last_error = $4,
                     failing_since = coalesce(failing_since, $5),
                     leased_by = NULL, lease_until = NULL
                 WHERE id = $1 AND state = 'queued' AND (leased_by = $6 OR leased_by IS NULL)",
                args![
                    id,
                    attempts,
                    next,
                    attempt.error.as_deref(),
                    now,
                    &attempt.node
                ],
            )
            .await?;
        }
        WebhookOutcome::Dead => {
            let died = tx
                .execute(
                    "UPDATE webhooks SET state = 'dead', attempts = $2, settled_at = $3,
                         last_error = $4, leased_by = NULL, lease_until = NULL
                     WHERE id = $1 AND state = 'queued'
                       AND (leased_by = $5 OR leased_by IS NULL)",
                    args![id, attempts, now, attempt.error.as_deref(), &attempt.node],
                )
                .await?;
            if died > 0 {
                // The statuses queued behind it have been failing as long: they die after
                // their next failed attempt, not a whole retry period later each.
                tx.execute(
                    "UPDATE webhooks
                     SET failing_since = coalesce(failing_since,
                                                  (SELECT failing_since FROM webhooks WHERE id = $1))
                     WHERE order_key = (SELECT order_key FROM webhooks WHERE id = $1)
                       AND state = 'queued'",
                    args![id],
                )
                .await?;
            }
        }
    }
    // An attempt that reached no receiver (the business has no callback, or unsubscribed)
    // is logged the first time only: a business without a callback would otherwise fill
    // the log with one row per event per retry, for a week.
    if attempt.url.is_none() && attempts > 1 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO webhook_attempts
             (waba_id, event_id, node, at_ms, url, http_status, latency_ms, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        args![
            attempt.waba_id.as_str(),
            id,
            &attempt.node,
            attempt.at_ms,
            attempt.url.as_deref(),
            attempt.http_status,
            big(attempt.latency_ms)?,
            attempt.error.as_deref(),
        ],
    )
    .await?;
    Ok(())
}

/// When a job may next be leased: the earliest due time of the first queued job of each key
/// (followers wait for their head), or the end of a lease another node holds on one; jobs of
/// the routes in `skip` (whose receivers have no room) aside. So a receiver that has been down
/// for days, with statuses held behind a backing-off one, is not polled for them.
pub(crate) async fn next_webhook_due(
    tx: &mut impl Tx,
    now: UnixTime,
    skip: &[String],
) -> TxResult<Option<UnixTime>> {
    const NEXT: Sql = Sql::dialects(
        "SELECT min(CASE WHEN w.lease_until > $1 THEN w.lease_until ELSE w.next_attempt_at END)
         FROM webhooks w
         WHERE w.state = 'queued'
           AND w.waba_id || '/' || coalesce(w.phone_number_id, '')
               NOT IN (SELECT value FROM json_each($2))
           AND (w.order_key IS NULL OR NOT EXISTS (
               SELECT 1 FROM webhooks e
               WHERE e.order_key = w.order_key AND e.state = 'queued' AND e.rowid < w.rowid))",
        "SELECT min(CASE WHEN w.lease_until > $1 THEN w.lease_until ELSE w.next_attempt_at END)
         FROM webhooks w
         WHERE w.state = 'queued'
           AND NOT (w.waba_id || '/' || coalesce(w.phone_number_id, '') = ANY ($2))
           AND (w.order_key IS NULL OR NOT EXISTS (
               SELECT 1 FROM webhooks e
               WHERE e.order_key = w.order_key AND e.state = 'queued'
                 AND e.written < w.written))",
    );
    let skip: Vec<&str> = skip.iter().map(String::as_str).collect();
    let rows = tx.rows(NEXT, args![now, skip.as_slice()]).await?;
    match rows.first() {
        Some(row) => row.time_opt(0),
        None => Ok(None),
    }
}

pub(crate) async fn webhook_log(
    tx: &mut impl Tx,
    waba: &WabaId,
    before: Option<i64>,
    limit: u32,
) -> TxResult<Vec<LoggedAttempt>> {
    let rows = tx
        .query(
            "SELECT id, waba_id, event_id, node, at_ms, url, http_status, latency_ms, error
             FROM webhook_attempts
             WHERE waba_id = $1 AND id < $2
             ORDER BY id DESC
             LIMIT $3",
            args![waba.as_str(), before.unwrap_or(i64::MAX), limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(LoggedAttempt {
                seq: row.int(0)?,
                attempt: WebhookAttempt {
                    waba_id: row.parsed(1)?,
                    event_id: row.string(2)?,
                    node: row.string(3)?,
                    at_ms: row.int(4)?,
                    url: row.string_opt(5)?,
                    http_status: row
                        .int_opt(6)?
                        .map(|status| u16::try_from(status).unwrap_or(0)),
                    latency_ms: row.unsigned(7)?,
                    error: row.string_opt(8)?,
                },
            })
        })
        .collect()
}

pub(crate) async fn webhook_events(
    tx: &mut impl Tx,
    waba: &WabaId,
    state: WebhookState,
    limit: u32,
) -> TxResult<Vec<WebhookEvent>> {
    let rows = tx
        .query(
            "SELECT id, waba_id, phone_number_id, state, attempts, created_at, settled_at,
                    last_error
             FROM webhooks WHERE waba_id = $1 AND state = $2
             ORDER BY created_at DESC, id
             LIMIT $3",
            args![waba.as_str(), state.as_str(), limit],
        )
        .await?;
    rows.iter().map(event_from_row).collect()
}

fn event_from_row(row: &Row) -> TxResult<WebhookEvent> {
    Ok(WebhookEvent {
        id: row.string(0)?,
        waba_id: row.parsed(1)?,
        phone_number_id: row.parsed_opt(2)?,
        state: row.named(3, WebhookState::parse)?,
        attempts: row.unsigned(4)?,
        created_at: row.time(5)?,
        settled_at: row.time_opt(6)?,
        last_error: row.string_opt(7)?,
    })
}

pub(crate) async fn replay_webhooks(
    tx: &mut impl Tx,
    waba: &WabaId,
    from: &ReplayFrom,
    now: UnixTime,
) -> TxResult<Option<u64>> {
    const REQUEUE_FROM_TIME: &str = "UPDATE webhooks
         SET state = 'queued', attempts = 0, next_attempt_at = $3, failing_since = NULL,
             settled_at = NULL, last_error = NULL, leased_by = NULL, lease_until = NULL
         WHERE waba_id = $1 AND state <> 'queued' AND created_at >= $2";
    const REQUEUE_FROM_EVENT: Sql = Sql::dialects(
        "UPDATE webhooks
         SET state = 'queued', attempts = 0, next_attempt_at = $3, failing_since = NULL,
             settled_at = NULL, last_error = NULL, leased_by = NULL, lease_until = NULL
         WHERE waba_id = $1 AND state <> 'queued'
           AND rowid >= (SELECT rowid FROM webhooks WHERE id = $2)",
        "UPDATE webhooks
         SET state = 'queued', attempts = 0, next_attempt_at = $3, failing_since = NULL,
             settled_at = NULL, last_error = NULL, leased_by = NULL, lease_until = NULL
         WHERE waba_id = $1 AND state <> 'queued'
           AND written >= (SELECT written FROM webhooks WHERE id = $2)",
    );
    match from {
        ReplayFrom::Time(since) => Ok(Some(
            tx.execute(REQUEUE_FROM_TIME, args![waba.as_str(), *since, now])
                .await?,
        )),
        ReplayFrom::Event(id) => {
            let known = tx
                .query_opt(
                    "SELECT 1 FROM webhooks WHERE id = $1 AND waba_id = $2",
                    args![id, waba.as_str()],
                )
                .await?;
            if known.is_none() {
                return Ok(None);
            }
            Ok(Some(
                tx.changes(REQUEUE_FROM_EVENT, args![waba.as_str(), id, now])
                    .await?,
            ))
        }
    }
}

/// A dead status whose message has a later status delivered since stays dead: sent now, it
/// would go backwards.
pub(crate) async fn redrive_webhooks(
    tx: &mut impl Tx,
    waba: &WabaId,
    now: UnixTime,
) -> TxResult<u64> {
    const REDRIVE: Sql = Sql::dialects(
        "UPDATE webhooks
         SET state = 'queued', attempts = 0, next_attempt_at = $2, failing_since = NULL,
             settled_at = NULL, leased_by = NULL, lease_until = NULL
         WHERE waba_id = $1 AND state = 'dead'
           AND NOT (order_key IS NOT NULL AND EXISTS (
               SELECT 1 FROM webhooks l
               WHERE l.order_key = webhooks.order_key AND l.state = 'delivered'
                 AND l.rowid > webhooks.rowid))",
        "UPDATE webhooks
         SET state = 'queued', attempts = 0, next_attempt_at = $2, failing_since = NULL,
             settled_at = NULL, leased_by = NULL, lease_until = NULL
         WHERE waba_id = $1 AND state = 'dead'
           AND NOT (order_key IS NOT NULL AND EXISTS (
               SELECT 1 FROM webhooks l
               WHERE l.order_key = webhooks.order_key AND l.state = 'delivered'
                 AND l.written > webhooks.written))",
    );
    tx.changes(REDRIVE, args![waba.as_str(), now]).await
}

pub(crate) async fn prune_webhooks(
    tx: &mut impl Tx,
    delivered_before: UnixTime,
    dead_before: UnixTime,
) -> TxResult<u64> {
    let events = tx
        .execute(
            "DELETE FROM webhooks
             WHERE (state = 'delivered' AND settled_at < $1)
                OR (state = 'dead' AND settled_at < $2)",
            args![delivered_before, dead_before],
        )
        .await?;
    let log = tx
        .execute(
            "DELETE FROM webhook_attempts WHERE at_ms < $1",
            args![delivered_before.0.saturating_mul(1000)],
        )
        .await?;
    let data = tx
        .execute(
            "DELETE FROM message_callback_data WHERE created_at < $1",
            args![dead_before],
        )
        .await?;
    Ok(events + log + data)
}

pub(crate) async fn webhook_routing(
    tx: &mut impl Tx,
    waba: &WabaId,
    number: Option<&PhoneNumberId>,
) -> TxResult<Option<WebhookRouting>> {
    let row = tx
        .query_opt(
            "SELECT b.subscribed, b.webhook_url, b.webhook_fields, b.override_callback_url,
                    n.callback_url, b.app_secret_sealed, b.sandbox
             FROM businesses b
             LEFT JOIN phone_numbers n ON n.id = $2 AND n.waba_id = b.waba_id
             WHERE b.waba_id = $1",
            args![waba.as_str(), number.map(PhoneNumberId::as_str)],
        )
        .await?;
    row.map(|mut row| {
        Ok(WebhookRouting {
            subscribed: row.bool(0)?,
            app_callback: row.string_opt(1)?,
            fields: row.string_opt(2)?,
            waba_callback: row.string_opt(3)?,
            number_callback: row.string_opt(4)?,
            app_secret_sealed: row.take_blob(5)?,
            sandbox: row.bool(6)?,
        })
    })
    .transpose()
}

pub(crate) async fn change_callback(
    tx: &mut impl Tx,
    waba: &WabaId,
    change: &CallbackChange,
) -> TxResult<bool> {
    let changed = match change {
        CallbackChange::App {
            callback,
            verify_token_sealed,
            fields,
        } => {
            tx.execute(
                "UPDATE businesses SET webhook_url = $2, verify_token_sealed = $3,
                     webhook_fields = $4
                 WHERE waba_id = $1",
                args![
                    waba.as_str(),
                    callback.as_deref(),
                    verify_token_sealed,
                    fields.as_deref()
                ],
            )
            .await?
        }
        CallbackChange::Subscribe { waba_callback } => {
            let (url, token) = match waba_callback {
                Some((url, token)) => (Some(url.as_str()), Some(token.as_slice())),
                None => (None, None),
            };
            tx.execute(
                "UPDATE businesses SET subscribed = $2, override_callback_url = $3,
                     override_verify_token_sealed = $4
                 WHERE waba_id = $1",
                args![waba.as_str(), true, url, token],
            )
            .await?
        }
        CallbackChange::Unsubscribe => {
            tx.execute(
                "UPDATE businesses SET subscribed = $2, override_callback_url = NULL,
                     override_verify_token_sealed = NULL
                 WHERE waba_id = $1",
                args![waba.as_str(), false],
            )
            .await?
        }
        CallbackChange::Number { id, callback } => {
            let (url, token) = match callback {
                Some((url, token)) => (Some(url.as_str()), Some(token.as_slice())),
                None => (None, None),
            };
            tx.execute(
                "UPDATE phone_numbers SET callback_url = $3, verify_token_sealed = $4
                 WHERE id = $2 AND waba_id = $1",
                args![waba.as_str(), id.as_str(), url, token],
            )
            .await?
        }
    };
    Ok(changed > 0)
}

pub(crate) async fn save_callback_data(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    message: &MessageId,
    data_sealed: &[u8],
    at: UnixTime,
) -> TxResult<()> {
    tx.execute(
        "INSERT INTO message_callback_data (owner, message_id, data_sealed, created_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        args![owner.digits(), message.as_str(), data_sealed, at],
    )
    .await?;
    Ok(())
}

pub(crate) async fn callback_data(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    message: &MessageId,
) -> TxResult<Option<Vec<u8>>> {
    let row = tx
        .query_opt(
            "SELECT data_sealed FROM message_callback_data WHERE owner = $1 AND message_id = $2",
            args![owner.digits(), message.as_str()],
        )
        .await?;
    row.map(|mut row| row.take_blob(0)).transpose()
}
