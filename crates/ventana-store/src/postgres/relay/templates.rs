//! [`TemplateStore`] on PostgreSQL, in the relay's schema.
//!
//! Several nodes write at once, so each decision is protected until its commit:
//!
//! - `create_template` takes an advisory lock on the business first: creates for one business
//!   run one at a time, so the name check and the count against the limit hold until the
//!   commit. (The partial unique index on the live name would catch a duplicate anyway; the
//!   insert's `ON CONFLICT ... DO NOTHING` answers it as `Exists` rather than an error.)
//! - `edit_template` and `delete_templates` lock the templates they change
//!   (`FOR NO KEY UPDATE`) before checking them; `set_template_status` is a compare-and-swap
//!   in the `UPDATE` itself (`WHERE status = expected`): of concurrent transitions from one
//!   status, the first to commit wins and the others, re-checking the row after it, find
//!   nothing to update and answer `Conflict`.
//! - Every transaction that records an event takes one advisory lock for the schema's events
//!   ([`EVENTS_LOCK`]) just before drawing the event's `seq`, and holds it until it commits.
//!   Event numbers are therefore drawn and committed in the same order, and a follower reading
//!   `seq > last seen` (the gateway's status webhooks) never skips an event that committed
//!   late. The lock is taken last and its holder then waits for nothing else, so it is held
//!   only for the insert and the commit, and cannot take part in a deadlock.

use super::PgRelayStore;
use crate::StoreResult;
use crate::postgres::db::{
    TxResult, backend, conflict, execute, get, lock, named, named_opt, parsed, query, query_one,
    query_opt, time, transaction, unsigned,
};
use crate::template::{
    CreateRefusal, NewTemplate, TemplateEdit, TemplateEvent, TemplateFilter, TemplateRecord,
    TemplateStore, TemplateVersion, category_named, check_review, next_version, status_named,
};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use ventana_core::template::{Category, TemplateStatus};
use ventana_core::{UnixTime, WabaId};

/// The advisory lock every event-writing transaction holds from drawing the event's `seq` to
/// its commit.
const EVENTS_LOCK: &str = "template_events";

/// A template's columns with its current version's content, read by [`record_from_row`].
const RECORD: &str = "SELECT t.id, t.seq, t.waba_id, t.name, t.language, v.category, t.status,
        t.version, v.components, v.parameter_format, t.reason, t.created_at, t.updated_at
    FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.version";

const EVENT: &str = "SELECT seq, template_id, waba_id, name, language, version, from_status,
        to_status, actor, reason, at
    FROM template_events";

#[async_trait]
impl TemplateStore for PgRelayStore {
    async fn create_template(
        &self,
        new: NewTemplate,
        limit: u32,
    ) -> StoreResult<Result<TemplateRecord, CreateRefusal>> {
        transaction!(self.db, |tx| create(tx, &new, limit).await)
    }

    async fn template(&self, id: &str) -> StoreResult<Option<TemplateRecord>> {
        self.db.read(async |c| template(c, id).await).await
    }

    async fn find_template(
        &self,
        waba: &WabaId,
        name: &str,
        language: &str,
    ) -> StoreResult<Option<TemplateRecord>> {
        self.db
            .read(async |c| {
                let sql = format!(
                    "{RECORD} WHERE t.waba_id = $1 AND t.name = $2 AND t.language = $3
                     AND t.status <> 'DELETED'"
                );
                let row = query_opt(c, &sql, &[&waba.as_str(), &name, &language]).await?;
                row.as_ref().map(record_from_row).transpose()
            })
            .await
    }

    async fn template_version(
        &self,
        id: &str,
        version: u32,
    ) -> StoreResult<Option<TemplateVersion>> {
        self.db
            .read(async |c| {
                let row = query_opt(
                    c,
                    "SELECT template_id, version, category, components, parameter_format,
                            created_at, approved
                     FROM template_versions WHERE template_id = $1 AND version = $2",
                    &[&id, &i64::from(version)],
                )
                .await?;
                row.map(|row| {
                    Ok(TemplateVersion {
                        template_id: get(&row, 0)?,
                        version: unsigned(&row, 1)?,
                        category: named(&row, 2, category_named)?,
                        components: get(&row, 3)?,
                        parameter_format: get(&row, 4)?,
                        created_at: time(&row, 5)?,
                        approved: get(&row, 6)?,
                    })
                })
                .transpose()
            })
            .await
    }

    async fn list_templates(
        &self,
        filter: &TemplateFilter,
        after: Option<i64>,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<TemplateRecord>> {
        self.db
            .read(async |c| list(c, filter, after, before, limit).await)
            .await
    }

    async fn edit_template(
        &self,
        id: &str,
        expected_version: u32,
        edit: TemplateEdit,
        actor: &str,
        now: UnixTime,
    ) -> StoreResult<TemplateRecord> {
        transaction!(self.db, |tx| apply_edit(
            tx,
            id,
            expected_version,
            &edit,
            actor,
            now
        )
        .await)
    }

    async fn set_template_status(
        &self,
        id: &str,
        expected: TemplateStatus,
        to: TemplateStatus,
        actor: &str,
        reason: Option<String>,
        now: UnixTime,
    ) -> StoreResult<TemplateRecord> {
        let reason = reason.as_deref();
        transaction!(self.db, |tx| set_status(
            tx, id, expected, to, actor, reason, now
        )
        .await)
    }

    async fn delete_templates(
        &self,
        waba: &WabaId,
        name: &str,
        id: Option<&str>,
        actor: &str,
        now: UnixTime,
    ) -> StoreResult<Vec<TemplateRecord>> {
        transaction!(self.db, |tx| delete(tx, waba, name, id, actor, now).await)
    }

    async fn template_events(
        &self,
        waba: Option<&WabaId>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<TemplateEvent>> {
        let limit = i64::from(limit);
        self.db
            .read(async |c| {
                // Two statements rather than `$1 IS NULL OR`, so each uses its index.
                let rows = match waba {
                    Some(waba) => {
                        let sql = format!(
                            "{EVENT} WHERE waba_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                        );
                        query(c, &sql, &[&waba.as_str(), &after_seq, &limit]).await?
                    }
                    None => {
                        let sql = format!("{EVENT} WHERE seq > $1 ORDER BY seq LIMIT $2");
                        query(c, &sql, &[&after_seq, &limit]).await?
                    }
                };
                rows.iter().map(event_from_row).collect()
            })
            .await
    }

    async fn template_audit(&self, template_id: &str) -> StoreResult<Vec<TemplateEvent>> {
        self.db
            .read(async |c| {
                let sql = format!("{EVENT} WHERE template_id = $1 ORDER BY seq");
                let rows = query(c, &sql, &[&template_id]).await?;
                rows.iter().map(event_from_row).collect()
            })
            .await
    }
}

async fn create(
    tx: &impl GenericClient,
    new: &NewTemplate,
    limit: u32,
) -> TxResult<Result<TemplateRecord, CreateRefusal>> {
    let waba = new.waba_id.as_str();
    lock(tx, &format!("templates/{waba}")).await?;
    // Later statements than the lock: they see every create that held it before.
    let live: i64 = get(
        &query_one(
            tx,
            "SELECT count(*) FROM templates WHERE waba_id = $1 AND status <> 'DELETED'",
            &[&waba],
        )
        .await?,
        0,
    )?;
    let taken = query_opt(
        tx,
        "SELECT 1 FROM templates
         WHERE waba_id = $1 AND name = $2 AND language = $3 AND status <> 'DELETED'",
        &[&waba, &new.name, &new.language],
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
    let inserted = query_opt(
        tx,
        "INSERT INTO templates (id, waba_id, name, language, status, version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'PENDING', 1, $5, $5)
         ON CONFLICT (waba_id, name, language) WHERE status <> 'DELETED' DO NOTHING
         RETURNING seq",
        &[&new.id, &waba, &new.name, &new.language, &new.now.0],
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

async fn apply_edit(
    tx: &impl GenericClient,
    id: &str,
    expected_version: u32,
    edit: &TemplateEdit,
    actor: &str,
    now: UnixTime,
) -> TxResult<TemplateRecord> {
    let row = query_opt(
        tx,
        "SELECT version, status FROM templates WHERE id = $1 FOR NO KEY UPDATE",
        &[&id],
    )
    .await?
    .ok_or_else(|| {
        conflict(
            crate::ConflictKind::State,
            format!("there is no template {id}"),
        )
    })?;
    let (version, status): (u32, TemplateStatus) =
        (unsigned(&row, 0)?, named(&row, 1, status_named)?);
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
    execute(
        tx,
        "UPDATE templates SET version = $2, status = 'PENDING', reason = NULL, updated_at = $3
         WHERE id = $1",
        &[&id, &i64::from(next), &now.0],
    )
    .await?;
    let record = stored(tx, id).await?;
    insert_events(tx, &[(&record, Some(status))], actor, None, now).await?;
    Ok(record)
}

async fn set_status(
    tx: &impl GenericClient,
    id: &str,
    expected: TemplateStatus,
    to: TemplateStatus,
    actor: &str,
    reason: Option<&str>,
    now: UnixTime,
) -> TxResult<TemplateRecord> {
    check_review(expected, to)?;
    // A concurrent transition of the same row makes this wait for its commit, then re-check
    // the condition against the row as it left it.
    let moved = query_opt(
        tx,
        "UPDATE templates SET status = $3, reason = $4, updated_at = $5
         WHERE id = $1 AND status = $2
         RETURNING version",
        &[&id, &expected.as_str(), &to.as_str(), &reason, &now.0],
    )
    .await?
    .ok_or_else(|| {
        conflict(
            crate::ConflictKind::Changed,
            format!("template {id} does not exist or is no longer {expected}"),
        )
    })?;
    if to == TemplateStatus::Approved {
        let version: i64 = get(&moved, 0)?;
        execute(
            tx,
            "UPDATE template_versions SET approved = TRUE WHERE template_id = $1 AND version = $2",
            &[&id, &version],
        )
        .await?;
    }
    let record = stored(tx, id).await?;
    insert_events(tx, &[(&record, Some(expected))], actor, reason, now).await?;
    Ok(record)
}

async fn delete(
    tx: &impl GenericClient,
    waba: &WabaId,
    name: &str,
    id: Option<&str>,
    actor: &str,
    now: UnixTime,
) -> TxResult<Vec<TemplateRecord>> {
    // One table only: a row changed meanwhile is re-checked as it now is (a join would be
    // re-checked against the version row read before, and could drop an edited template).
    let targets = query(
        tx,
        "SELECT id, status FROM templates
         WHERE waba_id = $1 AND name = $2 AND status <> 'DELETED' AND ($3::text IS NULL OR id = $3)
         ORDER BY seq
         FOR NO KEY UPDATE",
        &[&waba.as_str(), &name, &id],
    )
    .await?;
    let mut deleted = Vec::with_capacity(targets.len());
    for row in &targets {
        let id: String = get(row, 0)?;
        let from = named(row, 1, status_named)?;
        execute(
            tx,
            "UPDATE templates SET status = 'DELETED', updated_at = $2 WHERE id = $1",
            &[&id, &now.0],
        )
        .await?;
        deleted.push((stored(tx, &id).await?, Some(from)));
    }
    let events: Vec<_> = deleted.iter().map(|(r, from)| (r, *from)).collect();
    insert_events(tx, &events, actor, None, now).await?;
    Ok(deleted.into_iter().map(|(record, _)| record).collect())
}

async fn list(
    c: &impl GenericClient,
    filter: &TemplateFilter,
    after: Option<i64>,
    before: Option<i64>,
    limit: u32,
) -> TxResult<Vec<TemplateRecord>> {
    // The previous page is read backwards from `before`, then turned around.
    let backward = before.is_some();
    let order = if backward { "DESC" } else { "ASC" };
    // `strpos` rather than `LIKE`: `_` or `%` in a name match themselves.
    let sql = format!(
        "{RECORD}
         WHERE ($1::text IS NULL OR t.waba_id = $1)
           AND ($2::text IS NULL OR strpos(t.name, $2) > 0)
           AND (CASE WHEN $3::text IS NULL THEN t.status <> 'DELETED' ELSE t.status = $3 END)
           AND ($4::text IS NULL OR v.category = $4)
           AND ($5::text IS NULL OR t.language = $5)
           AND ($6::bigint IS NULL OR t.seq > $6)
           AND ($7::bigint IS NULL OR t.seq < $7)
         ORDER BY t.seq {order} LIMIT $8"
    );
    let rows = query(
        c,
        &sql,
        &[
            &filter.waba_id.as_ref().map(WabaId::as_str),
            &filter.name,
            &filter.status.map(TemplateStatus::as_str),
            &filter.category.map(Category::as_str),
            &filter.language,
            &after,
            &before,
            &i64::from(limit),
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

async fn template(c: &impl GenericClient, id: &str) -> TxResult<Option<TemplateRecord>> {
    let sql = format!("{RECORD} WHERE t.id = $1");
    let row = query_opt(c, &sql, &[&id]).await?;
    row.as_ref().map(record_from_row).transpose()
}

/// A template this transaction just wrote.
async fn stored(tx: &impl GenericClient, id: &str) -> TxResult<TemplateRecord> {
    template(tx, id)
        .await?
        .ok_or_else(|| backend(format!("template {id} vanished while written")))
}

async fn insert_version(
    tx: &impl GenericClient,
    id: &str,
    version: u32,
    category: Category,
    components: &str,
    parameter_format: &str,
    now: UnixTime,
) -> TxResult<()> {
    execute(
        tx,
        "INSERT INTO template_versions
             (template_id, version, category, components, parameter_format, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &id,
            &i64::from(version),
            &category.as_str(),
            &components,
            &parameter_format,
            &now.0,
        ],
    )
    .await?;
    Ok(())
}

/// Records the move of each template (as it now stands) from its `from` to its status,
/// under [`EVENTS_LOCK`]: the last thing the transaction does before committing.
async fn insert_events(
    tx: &impl GenericClient,
    moves: &[(&TemplateRecord, Option<TemplateStatus>)],
    actor: &str,
    reason: Option<&str>,
    at: UnixTime,
) -> TxResult<()> {
    if moves.is_empty() {
        return Ok(());
    }
    lock(tx, EVENTS_LOCK).await?;
    for (record, from) in moves {
        execute(
            tx,
            "INSERT INTO template_events
                 (template_id, waba_id, name, language, version, from_status, to_status, actor,
                  reason, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &record.id,
                &record.waba_id.as_str(),
                &record.name,
                &record.language,
                &i64::from(record.version),
                &from.map(TemplateStatus::as_str),
                &record.status.as_str(),
                &actor,
                &reason,
                &at.0,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Reads the columns of [`RECORD`], in order.
fn record_from_row(row: &Row) -> TxResult<TemplateRecord> {
    Ok(TemplateRecord {
        id: get(row, 0)?,
        seq: get(row, 1)?,
        waba_id: parsed(row, 2)?,
        name: get(row, 3)?,
        language: get(row, 4)?,
        category: named(row, 5, category_named)?,
        status: named(row, 6, status_named)?,
        version: unsigned(row, 7)?,
        components: get(row, 8)?,
        parameter_format: get(row, 9)?,
        reason: get(row, 10)?,
        created_at: time(row, 11)?,
        updated_at: time(row, 12)?,
    })
}

/// Reads the columns of [`EVENT`], in order.
fn event_from_row(row: &Row) -> TxResult<TemplateEvent> {
    Ok(TemplateEvent {
        seq: get(row, 0)?,
        template_id: get(row, 1)?,
        waba_id: parsed(row, 2)?,
        name: get(row, 3)?,
        language: get(row, 4)?,
        version: unsigned(row, 5)?,
        from: named_opt(row, 6, status_named)?,
        to: named(row, 7, status_named)?,
        actor: get(row, 8)?,
        reason: get(row, 9)?,
        at: time(row, 10)?,
    })
}
