//! [`TemplateStore`] on SQLite, in the relay's file.
//!
//! Every write runs as a unit of the one writer (see `db`), so each decision (the name and
//! the limit at creation, the version at an edit, the status of a transition) holds until
//! its commit without further locking, and events commit in `seq` order.

use super::SqliteRelayStore;
use crate::StoreResult;
use crate::sqlite::db::{TxResult, backend, conflict, named, named_opt, parsed};
use crate::template::{
    CreateRefusal, NewTemplate, TemplateEdit, TemplateEvent, TemplateFilter, TemplateRecord,
    TemplateStore, TemplateVersion, category_named, check_review, next_version, status_named,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use ventana_core::template::{Category, TemplateStatus};
use ventana_core::{UnixTime, WabaId};

/// A template's columns with its current version's content, read by [`record_from_row`].
const RECORD: &str = "SELECT t.id, t.seq, t.waba_id, t.name, t.language, v.category, t.status,
        t.version, v.components, v.parameter_format, t.reason, t.created_at, t.updated_at
    FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.version";

const EVENT: &str = "SELECT seq, template_id, waba_id, name, language, version, from_status,
        to_status, actor, reason, at
    FROM template_events";

#[async_trait]
impl TemplateStore for SqliteRelayStore {
    async fn create_template(
        &self,
        new: NewTemplate,
        limit: u32,
    ) -> StoreResult<Result<TemplateRecord, CreateRefusal>> {
        self.db.write(move |tx| create(tx, &new, limit)).await
    }

    async fn template(&self, id: &str) -> StoreResult<Option<TemplateRecord>> {
        let id = id.to_owned();
        self.db.read(move |tx| template(tx, &id)).await
    }

    async fn find_template(
        &self,
        waba: &WabaId,
        name: &str,
        language: &str,
    ) -> StoreResult<Option<TemplateRecord>> {
        let (waba, name, language) = (waba.clone(), name.to_owned(), language.to_owned());
        self.db
            .read(move |tx| {
                let sql = format!(
                    "{RECORD} WHERE t.waba_id = ?1 AND t.name = ?2 AND t.language = ?3
                     AND t.status <> 'DELETED'"
                );
                Ok(tx
                    .prepare_cached(&sql)?
                    .query_row(params![waba.as_str(), name, language], record_from_row)
                    .optional()?)
            })
            .await
    }

    async fn template_version(
        &self,
        id: &str,
        version: u32,
    ) -> StoreResult<Option<TemplateVersion>> {
        let id = id.to_owned();
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "SELECT template_id, version, category, components, parameter_format,
                                created_at, approved
                         FROM template_versions WHERE template_id = ?1 AND version = ?2",
                    )?
                    .query_row(params![id, version], |row| {
                        Ok(TemplateVersion {
                            template_id: row.get(0)?,
                            version: row.get(1)?,
                            category: named(row, 2, category_named)?,
                            components: row.get(3)?,
                            parameter_format: row.get(4)?,
                            created_at: UnixTime(row.get(5)?),
                            approved: row.get(6)?,
                        })
                    })
                    .optional()?)
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
        let filter = filter.clone();
        self.db
            .read(move |tx| list(tx, &filter, after, before, limit))
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
        let (id, actor) = (id.to_owned(), actor.to_owned());
        self.db
            .write(move |tx| apply_edit(tx, &id, expected_version, &edit, &actor, now))
            .await
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
        let (id, actor) = (id.to_owned(), actor.to_owned());
        self.db
            .write(move |tx| set_status(tx, &id, expected, to, &actor, reason.as_deref(), now))
            .await
    }

    async fn delete_templates(
        &self,
        waba: &WabaId,
        name: &str,
        id: Option<&str>,
        actor: &str,
        now: UnixTime,
    ) -> StoreResult<Vec<TemplateRecord>> {
        let (waba, name, actor) = (waba.clone(), name.to_owned(), actor.to_owned());
        let id = id.map(str::to_owned);
        self.db
            .write(move |tx| delete(tx, &waba, &name, id.as_deref(), &actor, now))
            .await
    }

    async fn template_events(
        &self,
        waba: Option<&WabaId>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<TemplateEvent>> {
        let waba = waba.cloned();
        self.db
            .read(move |tx| {
                // Two statements rather than `?1 IS NULL OR`, so each uses its index.
                let mut stmt;
                let rows = match &waba {
                    Some(waba) => {
                        let sql = format!(
                            "{EVENT} WHERE waba_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                        );
                        stmt = tx.prepare_cached(&sql)?;
                        stmt.query_map(params![waba.as_str(), after_seq, limit], event_from_row)?
                    }
                    None => {
                        let sql = format!("{EVENT} WHERE seq > ?1 ORDER BY seq LIMIT ?2");
                        stmt = tx.prepare_cached(&sql)?;
                        stmt.query_map(params![after_seq, limit], event_from_row)?
                    }
                };
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn template_audit(&self, template_id: &str) -> StoreResult<Vec<TemplateEvent>> {
        let template_id = template_id.to_owned();
        self.db
            .read(move |tx| {
                let sql = format!("{EVENT} WHERE template_id = ?1 ORDER BY seq");
                let mut stmt = tx.prepare_cached(&sql)?;
                let rows = stmt.query_map([template_id], event_from_row)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }
}

fn create(
    tx: &Connection,
    new: &NewTemplate,
    limit: u32,
) -> TxResult<Result<TemplateRecord, CreateRefusal>> {
    let waba = new.waba_id.as_str();
    let live: u32 = tx
        .prepare_cached(
            "SELECT count(*) FROM templates WHERE waba_id = ?1 AND status <> 'DELETED'",
        )?
        .query_row([waba], |row| row.get(0))?;
    let taken = tx
        .prepare_cached(
            "SELECT 1 FROM templates
             WHERE waba_id = ?1 AND name = ?2 AND language = ?3 AND status <> 'DELETED'",
        )?
        .query_row(params![waba, new.name, new.language], |_| Ok(()))
        .optional()?
        .is_some();
    // A name in use is the more useful answer, even when the business is also at its limit.
    if taken {
        return Ok(Err(CreateRefusal::Exists));
    }
    if live >= limit {
        return Ok(Err(CreateRefusal::LimitReached));
    }
    tx.prepare_cached(
        "INSERT INTO templates (id, waba_id, name, language, status, version, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'PENDING', 1, ?5, ?5)",
    )?
    .execute(params![new.id, waba, new.name, new.language, new.now.0])?;
    insert_version(
        tx,
        &new.id,
        1,
        new.category,
        &new.components,
        &new.parameter_format,
        new.now,
    )?;
    let record = stored(tx, &new.id)?;
    insert_event(tx, &record, None, &new.actor, None, new.now)?;
    Ok(Ok(record))
}

fn apply_edit(
    tx: &Connection,
    id: &str,
    expected_version: u32,
    edit: &TemplateEdit,
    actor: &str,
    now: UnixTime,
) -> TxResult<TemplateRecord> {
    let (version, status) = current_state(tx, id)?;
    let next = next_version(id, version, status, expected_version)?;
    insert_version(
        tx,
        id,
        next,
        edit.category,
        &edit.components,
        &edit.parameter_format,
        now,
    )?;
    tx.prepare_cached(
        "UPDATE templates SET version = ?2, status = 'PENDING', reason = NULL, updated_at = ?3
         WHERE id = ?1",
    )?
    .execute(params![id, next, now.0])?;
    let record = stored(tx, id)?;
    insert_event(tx, &record, Some(status), actor, None, now)?;
    Ok(record)
}

fn set_status(
    tx: &Connection,
    id: &str,
    expected: TemplateStatus,
    to: TemplateStatus,
    actor: &str,
    reason: Option<&str>,
    now: UnixTime,
) -> TxResult<TemplateRecord> {
    check_review(expected, to)?;
    let moved = tx
        .prepare_cached(
            "UPDATE templates SET status = ?3, reason = ?4, updated_at = ?5
             WHERE id = ?1 AND status = ?2",
        )?
        .execute(params![id, expected.as_str(), to.as_str(), reason, now.0])?;
    if moved == 0 {
        return Err(conflict(
            crate::ConflictKind::Changed,
            format!("template {id} does not exist or is no longer {expected}"),
        ));
    }
    if to == TemplateStatus::Approved {
        tx.prepare_cached(
            "UPDATE template_versions SET approved = 1
             WHERE template_id = ?1 AND version = (SELECT version FROM templates WHERE id = ?1)",
        )?
        .execute([id])?;
    }
    let record = stored(tx, id)?;
    insert_event(tx, &record, Some(expected), actor, reason, now)?;
    Ok(record)
}

fn delete(
    tx: &Connection,
    waba: &WabaId,
    name: &str,
    id: Option<&str>,
    actor: &str,
    now: UnixTime,
) -> TxResult<Vec<TemplateRecord>> {
    let targets: Vec<(String, TemplateStatus)> = tx
        .prepare_cached(
            "SELECT id, status FROM templates
             WHERE waba_id = ?1 AND name = ?2 AND status <> 'DELETED' AND (?3 IS NULL OR id = ?3)
             ORDER BY seq",
        )?
        .query_map(params![waba.as_str(), name, id], |row| {
            Ok((row.get(0)?, named(row, 1, status_named)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut deleted = Vec::with_capacity(targets.len());
    for (id, from) in targets {
        tx.prepare_cached(
            "UPDATE templates SET status = 'DELETED', updated_at = ?2 WHERE id = ?1",
        )?
        .execute(params![id, now.0])?;
        let record = stored(tx, &id)?;
        insert_event(tx, &record, Some(from), actor, None, now)?;
        deleted.push(record);
    }
    Ok(deleted)
}

fn list(
    tx: &Connection,
    filter: &TemplateFilter,
    after: Option<i64>,
    before: Option<i64>,
    limit: u32,
) -> TxResult<Vec<TemplateRecord>> {
    // The previous page is read backwards from `before`, then turned around.
    let backward = before.is_some();
    let order = if backward { "DESC" } else { "ASC" };
    // `instr` rather than `LIKE`: case-sensitive, and `_` or `%` in a name match themselves.
    let sql = format!(
        "{RECORD}
         WHERE (?1 IS NULL OR t.waba_id = ?1)
           AND (?2 IS NULL OR instr(t.name, ?2) > 0)
           AND (CASE WHEN ?3 IS NULL THEN t.status <> 'DELETED' ELSE t.status = ?3 END)
           AND (?4 IS NULL OR v.category = ?4)
           AND (?5 IS NULL OR t.language = ?5)
           AND (?6 IS NULL OR t.seq > ?6)
           AND (?7 IS NULL OR t.seq < ?7)
         ORDER BY t.seq {order} LIMIT ?8"
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            filter.waba_id.as_ref().map(WabaId::as_str),
            filter.name,
            filter.status.map(TemplateStatus::as_str),
            filter.category.map(Category::as_str),
            filter.language,
            after,
            before,
            limit,
        ],
        record_from_row,
    )?;
    let mut page: Vec<TemplateRecord> = rows.collect::<rusqlite::Result<_>>()?;
    if backward {
        page.reverse();
    }
    Ok(page)
}

fn template(tx: &Connection, id: &str) -> TxResult<Option<TemplateRecord>> {
    let sql = format!("{RECORD} WHERE t.id = ?1");
    Ok(tx
        .prepare_cached(&sql)?
        .query_row([id], record_from_row)
        .optional()?)
}

/// A template this unit just wrote.
fn stored(tx: &Connection, id: &str) -> TxResult<TemplateRecord> {
    template(tx, id)?.ok_or_else(|| backend(format!("template {id} vanished while written")))
}

/// The version and status the next write is checked against; `Conflict` if there is none.
fn current_state(tx: &Connection, id: &str) -> TxResult<(u32, TemplateStatus)> {
    tx.prepare_cached("SELECT version, status FROM templates WHERE id = ?1")?
        .query_row([id], |row| Ok((row.get(0)?, named(row, 1, status_named)?)))
        .optional()?
        .ok_or_else(|| {
            conflict(
                crate::ConflictKind::State,
                format!("there is no template {id}"),
            )
        })
}

fn insert_version(
    tx: &Connection,
    id: &str,
    version: u32,
    category: Category,
    components: &str,
    parameter_format: &str,
    now: UnixTime,
) -> TxResult<()> {
    tx.prepare_cached(
        "INSERT INTO template_versions
             (template_id, version, category, components, parameter_format, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        id,
        version,
        category.as_str(),
        components,
        parameter_format,
        now.0
    ])?;
    Ok(())
}

/// Records the move of `record` (as it now stands) from `from` to its status.
fn insert_event(
    tx: &Connection,
    record: &TemplateRecord,
    from: Option<TemplateStatus>,
    actor: &str,
    reason: Option<&str>,
    at: UnixTime,
) -> TxResult<()> {
    tx.prepare_cached(
        "INSERT INTO template_events
             (template_id, waba_id, name, language, version, from_status, to_status, actor,
              reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        record.id,
        record.waba_id.as_str(),
        record.name,
        record.language,
        record.version,
        from.map(TemplateStatus::as_str),
        record.status.as_str(),
        actor,
        reason,
        at.0,
    ])?;
    Ok(())
}

/// Reads the columns of [`RECORD`], in order.
fn record_from_row(row: &Row<'_>) -> rusqlite::Result<TemplateRecord> {
    Ok(TemplateRecord {
        id: row.get(0)?,
        seq: row.get(1)?,
        waba_id: parsed(row, 2)?,
        name: row.get(3)?,
        language: row.get(4)?,
        category: named(row, 5, category_named)?,
        status: named(row, 6, status_named)?,
        version: row.get(7)?,
        components: row.get(8)?,
        parameter_format: row.get(9)?,
        reason: row.get(10)?,
        created_at: UnixTime(row.get(11)?),
        updated_at: UnixTime(row.get(12)?),
    })
}

/// Reads the columns of [`EVENT`], in order.
fn event_from_row(row: &Row<'_>) -> rusqlite::Result<TemplateEvent> {
    Ok(TemplateEvent {
        seq: row.get(0)?,
        template_id: row.get(1)?,
        waba_id: parsed(row, 2)?,
        name: row.get(3)?,
        language: row.get(4)?,
        version: row.get(5)?,
        from: named_opt(row, 6, status_named)?,
        to: named(row, 7, status_named)?,
        actor: row.get(8)?,
        reason: row.get(9)?,
        at: UnixTime(row.get(10)?),
    })
}
