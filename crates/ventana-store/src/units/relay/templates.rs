//! The template registry ([`TemplateStore`](crate::TemplateStore)): every version kept,
//! review as a compare-and-swap on the status, and the audit trail of events.
//!
//! What keeps each decision true until its commit:
//!
//! - On SQLite, the one writer thread: units run one after another.
//! - On PostgreSQL, where several nodes write at once:
//!   - [`create`] takes [`Tx::lock`] on the business first: creates for one business run one
//!     at a time, so the name check and the count against the limit hold until the commit.
//!     (The partial unique index on the live name would catch a duplicate anyway; the
//!     insert's `ON CONFLICT ... DO NOTHING` answers it as `Exists` rather than an error.)
//!   - [`edit`] and [`delete`] lock the templates they change (`FOR NO KEY UPDATE`) before
//!     checking them; [`set_status`] is a compare-and-swap in the `UPDATE` itself (`WHERE
//!     status = expected`): of concurrent transitions from one status, the first to commit
//!     wins and the others, re-checking the row after it, find nothing to update and answer
//!     `Conflict`.
//!   - Every transaction that records an event takes one advisory lock for the schema's
//!     events ([`EVENTS_LOCK`]) just before drawing the event's `seq`, and holds it until it
//!     commits. Event numbers are therefore drawn and committed in the same order, and a
//!     follower reading `seq > last seen` (the gateway's status webhooks) never skips an event
//!     that committed late. The lock is taken last and its holder then waits for nothing
//!     else, so it is held only for the insert and the commit, and cannot take part in a
//!     deadlock.

use crate::ConflictKind;
use crate::sql::{Row, Sql, Tx, TxResult, args, backend, conflict};
use crate::template::{
    CreateRefusal, NewTemplate, TemplateEdit, TemplateEvent, TemplateFilter, TemplateRecord,
    TemplateVersion, category_named, check_review, next_version, status_named,
};
use ventana_core::template::{Category, TemplateStatus};
use ventana_core::{UnixTime, WabaId};

/// The advisory lock every event-writing transaction holds from drawing the event's `seq` to
/// its commit.
const EVENTS_LOCK: &str = "template_events";

/// A template's columns with its current version's content, read by [`record_from_row`].
macro_rules! record {
    () => {
        "SELECT t.id, t.seq, t.waba_id, t.name, t.language, v.category, t.status,
                t.version, v.components, v.parameter_format, t.reason, t.created_at,
                t.updated_at
         FROM templates t
         JOIN template_versions v ON v.template_id = t.id AND v.version = t.version"
    };
}

/// An event's columns, read by [`event_from_row`].
macro_rules! event {
    () => {
        "SELECT seq, template_id, waba_id, name, language, version, from_status, to_status,
                actor, reason, at
         FROM template_events"
    };
}

pub(crate) async fn create(
    tx: &mut impl Tx,
    new: &NewTemplate,
    limit: u32,
) -> TxResult<Result<TemplateRecord, CreateRefusal>> {
    let waba = new.waba_id.as_str();
    tx.lock(&format!("templates/{waba}")).await?;
    // Later statements than the lock: they see every create that held it before.
    let live = tx
        .query_one(
            "SELECT count(*) FROM templates WHERE waba_id = $1 AND status <> 'DELETED'",
            args![waba],
        )
        .await?
        .int(0)?;
    let taken = tx
        .query_opt(
            "SELECT 1 FROM templates
             WHERE waba_id = $1 AND name = $2 AND language = $3 AND status <> 'DELETED'",
            args![waba, &new.name, &new.language],
        )
        .await?
        .is_some();
    // A name in use is the more useful answer, even when the business is also at its limit.
    if taken {
        return Ok(Err(CreateRefusal::Exists));
    }
    if live >= i64::from(limit) {
        return Ok(Err(CreateRefusal::LimitReached));
    }
    let inserted = tx
        .query_opt(
            "INSERT INTO templates
                 (id, waba_id, name, language, status, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'PENDING', 1, $5, $5)
             ON CONFLICT (waba_id, name, language) WHERE status <> 'DELETED' DO NOTHING
             RETURNING seq",
            args![&new.id, waba, &new.name, &new.language, new.now],
        )
        .await?;
    if inserted.is_none() {
        return Ok(Err(CreateRefusal::Exists));
    }
    insert_version(
        tx,
        &new.id,
        1,
        new.category,
        &new.components,
        &new.parameter_format,
        new.now,
    )
    .await?;
    let record = stored(tx, &new.id).await?;
    insert_events(tx, &[(&record, None)], &new.actor, None, new.now).await?;
    Ok(Ok(record))
}

pub(crate) async fn template(tx: &mut impl Tx, id: &str) -> TxResult<Option<TemplateRecord>> {
    let row = tx
        .query_opt(concat!(record!(), " WHERE t.id = $1"), args![id])
        .await?;
    row.as_ref().map(record_from_row).transpose()
}

pub(crate) async fn find(
    tx: &mut impl Tx,
    waba: &WabaId,
    name: &str,
    language: &str,
) -> TxResult<Option<TemplateRecord>> {
    let row = tx
        .query_opt(
            concat!(
                record!(),
                " WHERE t.waba_id = $1 AND t.name = $2 AND t.language = $3
                  AND t.status <> 'DELETED'"
            ),
            args![waba.as_str(), name, language],
        )
        .await?;
    row.as_ref().map(record_from_row).transpose()
}

pub(crate) async fn version(
    tx: &mut impl Tx,
    id: &str,
    version: u32,
) -> TxResult<Option<TemplateVersion>> {
    let row = tx
        .query_opt(
            "SELECT template_id, version, category, components, parameter_format, created_at,
                    approved
             FROM template_versions WHERE template_id = $1 AND version = $2",
            args![id, version],
        )
        .await?;
    row.map(|row| {
        Ok(TemplateVersion {
            template_id: row.string(0)?,
            version: row.unsigned(1)?,
            category: row.named(2, category_named)?,
            components: row.string(3)?,
            parameter_format: row.string(4)?,
            created_at: row.time(5)?,
            approved: row.bool(6)?,
        })
    })
    .transpose()
}

/// One page of templates matching `filter`, after or before a `seq` cursor.
pub(crate) async fn list(
    tx: &mut impl Tx,
    filter: &TemplateFilter,
    after: Option<i64>,
    before: Option<i64>,
    limit: u32,
) -> TxResult<Vec<TemplateRecord>> {
    // `instr`/`strpos` rather than `LIKE`: case-sensitive, and `_` or `%` in a name match
    // themselves.
    macro_rules! page {
        ($contains:literal, $order:literal) => {
            concat!(
                record!(),
                " WHERE (CAST($1 AS TEXT) IS NULL OR t.waba_id = $1)
                    AND (CAST($2 AS TEXT) IS NULL OR ",
                $contains,
                " > 0)
                    AND (CASE WHEN CAST($3 AS TEXT) IS NULL THEN t.status <> 'DELETED'
                              ELSE t.status = $3 END)
                    AND (CAST($4 AS TEXT) IS NULL OR v.category = $4)
                    AND (CAST($5 AS TEXT) IS NULL OR t.language = $5)
                    AND (CAST($6 AS BIGINT) IS NULL OR t.seq > $6)
                    AND (CAST($7 AS BIGINT) IS NULL OR t.seq < $7)
                  ORDER BY t.seq ",
                $order,
                " LIMIT $8"
            )
        };
    }
    const FORWARD: Sql = Sql::dialects(
        page!("instr(t.name, $2)", "ASC"),
        page!("strpos(t.name, $2)", "ASC"),
    );
    const BACKWARD: Sql = Sql::dialects(
        page!("instr(t.name, $2)", "DESC"),
        page!("strpos(t.name, $2)", "DESC"),
    );
    // The previous page is read backwards from `before`, then turned around.
    let backward = before.is_some();
    let rows = tx
        .rows(
            if backward { BACKWARD } else { FORWARD },
            args![
                filter.waba_id.as_ref().map(WabaId::as_str),
                filter.name.as_ref(),
                filter.status.map(TemplateStatus::as_str),
                filter.category.map(Category::as_str),
                filter.language.as_ref(),
                after,
                before,
                limit,
            ],
        )
        .await?;
    let mut page = rows
        .iter()
        .map(record_from_row)
        .collect::<TxResult<Vec<_>>>()?;
    if backward {
        page.reverse();
    }
    Ok(page)
}

/// A new version of the template's content, back to `PENDING` review.
pub(crate) async fn edit(
    tx: &mut impl Tx,
    id: &str,
    expected_version: u32,
    edit: &TemplateEdit,
    actor: &str,
    now: UnixTime,
) -> TxResult<TemplateRecord> {
    const CURRENT: Sql = Sql::locking(
        "SELECT version, status FROM templates WHERE id = $1",
        "FOR NO KEY UPDATE",
    );
    let row = tx
        .row_opt(CURRENT, args![id])
        .await?
        .ok_or_else(|| conflict(ConflictKind::State, format!("there is no template {id}")))?;
    let (version, status): (u32, TemplateStatus) = (row.unsigned(0)?, row.named(1, status_named)?);
    let next = next_version(id, version, status, expected_version)?;
    insert_version(
        tx,
        id,
        next,
        edit.category,
        &edit.components,
        &edit.parameter_format,
        now,
    )
    .await?;
    tx.execute(
        "UPDATE templates SET version = $2, status = 'PENDING', reason = NULL, updated_at = $3
         WHERE id = $1",
        args![id, next, now],
    )
    .await?;
    let record = stored(tx, id).await?;
    insert_events(tx, &[(&record, Some(status))], actor, None, now).await?;
    Ok(record)
}

/// A review decision: moves the template from `expected` to `to`, or refuses if it is no
/// longer `expected`.
pub(crate) async fn set_status(
    tx: &mut impl Tx,
    id: &str,
    expected: TemplateStatus,
    to: TemplateStatus,
    actor: &str,
    reason: Option<&str>,
    now: UnixTime,
) -> TxResult<TemplateRecord> {
    check_review(expected, to)?;
    // On PostgreSQL a concurrent transition of the same row makes this wait for its commit,
    // then re-check the condition against the row as it left it.
    let moved = tx
        .query_opt(
            "UPDATE templates SET status = $3, reason = $4, updated_at = $5
             WHERE id = $1 AND status = $2
             RETURNING version",
            args![id, expected.as_str(), to.as_str(), reason, now],
        )
        .await?
        .ok_or_else(|| {
            conflict(
                ConflictKind::Changed,
                format!("template {id} does not exist or is no longer {expected}"),
            )
        })?;
    if to == TemplateStatus::Approved {
        tx.execute(
            "UPDATE template_versions SET approved = TRUE WHERE template_id = $1 AND version = $2",
            args![id, moved.int(0)?],
        )
        .await?;
    }
    let record = stored(tx, id).await?;
    insert_events(tx, &[(&record, Some(expected))], actor, reason, now).await?;
    Ok(record)
}

/// Deletes the business's live templates named `name` (only the one with `id`, if given).
pub(crate) async fn delete(
    tx: &mut impl Tx,
    waba: &WabaId,
    name: &str,
    id: Option<&str>,
    actor: &str,
    now: UnixTime,
) -> TxResult<Vec<TemplateRecord>> {
    // One table only: on PostgreSQL a row changed meanwhile is re-checked as it now is (a
    // join would be re-checked against the version row read before, and could drop an
    // edited template).
    const TARGETS: Sql = Sql::locking(
        "SELECT id, status FROM templates
         WHERE waba_id = $1 AND name = $2 AND status <> 'DELETED'
           AND (CAST($3 AS TEXT) IS NULL OR id = $3)
         ORDER BY seq",
        "FOR NO KEY UPDATE",
    );
    let targets = tx.rows(TARGETS, args![waba.as_str(), name, id]).await?;
    let mut deleted = Vec::with_capacity(targets.len());
    for row in &targets {
        let id = row.text(0)?;
        let from = row.named(1, status_named)?;
        tx.execute(
            "UPDATE templates SET status = 'DELETED', updated_at = $2 WHERE id = $1",
            args![id, now],
        )
        .await?;
        deleted.push((stored(tx, id).await?, Some(from)));
    }
    let events: Vec<_> = deleted.iter().map(|(r, from)| (r, *from)).collect();
    insert_events(tx, &events, actor, None, now).await?;
    Ok(deleted.into_iter().map(|(record, _)| record).collect())
}

/// Events after `after_seq` (of one business, or all), in order.
pub(crate) async fn events(
    tx: &mut impl Tx,
    waba: Option<&WabaId>,
    after_seq: i64,
    limit: u32,
) -> TxResult<Vec<TemplateEvent>> {
    // Two statements rather than `$1 IS NULL OR`, so each uses its index.
    let rows = match waba {
        Some(waba) => {
            tx.query(
                concat!(
                    event!(),
                    " WHERE waba_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ),
                args![waba.as_str(), after_seq, limit],
            )
            .await?
        }
        None => {
            tx.query(
                concat!(event!(), " WHERE seq > $1 ORDER BY seq LIMIT $2"),
                args![after_seq, limit],
            )
            .await?
        }
    };
    rows.iter().map(event_from_row).collect()
}

/// Every event of one template, in order.
pub(crate) async fn audit(tx: &mut impl Tx, template_id: &str) -> TxResult<Vec<TemplateEvent>> {
    let rows = tx
        .query(
            concat!(event!(), " WHERE template_id = $1 ORDER BY seq"),
            args![template_id],
        )
        .await?;
    rows.iter().map(event_from_row).collect()
}

/// A template this transaction just wrote.
async fn stored(tx: &mut impl Tx, id: &str) -> TxResult<TemplateRecord> {
    template(tx, id)
        .await?
        .ok_or_else(|| backend(format!("template {id} vanished while written")))
}

async fn insert_version(
    tx: &mut impl Tx,
    id: &str,
    version: u32,
    category: Category,
    components: &str,
    parameter_format: &str,
    now: UnixTime,
) -> TxResult<()> {
    tx.execute(
        "INSERT INTO template_versions
             (template_id, version, category, components, parameter_format, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            id,
            version,
            category.as_str(),
            components,
            parameter_format,
            now
        ],
    )
    .await?;
    Ok(())
}

/// Records the move of each template (as it now stands) from its `from` to its status,
/// under [`EVENTS_LOCK`]: the last thing the transaction does before committing.
async fn insert_events(
    tx: &mut impl Tx,
    moves: &[(&TemplateRecord, Option<TemplateStatus>)],
    actor: &str,
    reason: Option<&str>,
    at: UnixTime,
) -> TxResult<()> {
    if moves.is_empty() {
        return Ok(());
    }
    tx.lock(EVENTS_LOCK).await?;
    for (record, from) in moves {
        tx.execute(
            "INSERT INTO template_events
                 (template_id, waba_id, name, language, version, from_status, to_status, actor,
                  reason, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            args![
                &record.id,
                record.waba_id.as_str(),
                &record.name,
                &record.language,
                record.version,
                from.map(TemplateStatus::as_str),
                record.status.as_str(),
                actor,
                reason,
                at,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Reads the columns of `record!`, in order.
fn record_from_row(row: &Row) -> TxResult<TemplateRecord> {
    Ok(TemplateRecord {
        id: row.string(0)?,
        seq: row.int(1)?,
        waba_id: row.parsed(2)?,
        name: row.string(3)?,
        language: row.string(4)?,
        category: row.named(5, category_named)?,
        status: row.named(6, status_named)?,
        version: row.unsigned(7)?,
        components: row.string(8)?,
        parameter_format: row.string(9)?,
        reason: row.string_opt(10)?,
        created_at: row.time(11)?,
        updated_at: row.time(12)?,
    })
}

/// Reads the columns of `event!`, in order.
fn event_from_row(row: &Row) -> TxResult<TemplateEvent> {
    Ok(TemplateEvent {
        seq: row.int(0)?,
        template_id: row.string(1)?,
        waba_id: row.parsed(2)?,
        name: row.string(3)?,
        language: row.string(4)?,
        version: row.unsigned(5)?,
        from: row.named_opt(6, status_named)?,
        to: row.named(7, status_named)?,
        actor: row.string(8)?,
        reason: row.string_opt(9)?,
        at: row.time(10)?,
    })
}
