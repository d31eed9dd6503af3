//! [`TemplateStore`] on SQLite, in the relay's file: dispatch to
//! [`crate::units::relay::templates`]. Every write runs as a unit of the one writer (see
//! `db`), so each decision holds until its commit without further locking, and events commit
//! in `seq` order.

use super::SqliteRelayStore;
use crate::StoreResult;
use crate::template::{
    CreateRefusal, NewTemplate, TemplateEdit, TemplateEvent, TemplateFilter, TemplateRecord,
    TemplateStore, TemplateVersion,
};
use crate::units::relay::templates;
use async_trait::async_trait;
use ventana_core::template::TemplateStatus;
use ventana_core::{UnixTime, WabaId};

#[async_trait]
impl TemplateStore for SqliteRelayStore {
    async fn create_template(
        &self,
        new: NewTemplate,
        limit: u32,
    ) -> StoreResult<Result<TemplateRecord, CreateRefusal>> {
        self.db
            .unit(async move |tx| templates::create(tx, &new, limit).await)
            .await
    }

    async fn template(&self, id: &str) -> StoreResult<Option<TemplateRecord>> {
        let id = id.to_owned();
        self.db
            .read_unit(async move |tx| templates::template(tx, &id).await)
            .await
    }

    async fn find_template(
        &self,
        waba: &WabaId,
        name: &str,
        language: &str,
    ) -> StoreResult<Option<TemplateRecord>> {
        let (waba, name, language) = (waba.clone(), name.to_owned(), language.to_owned());
        self.db
            .read_unit(async move |tx| templates::find(tx, &waba, &name, &language).await)
            .await
    }

    async fn template_version(
        &self,
        id: &str,
        version: u32,
    ) -> StoreResult<Option<TemplateVersion>> {
        let id = id.to_owned();
        self.db
            .read_unit(async move |tx| templates::version(tx, &id, version).await)
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
            .read_unit(async move |tx| templates::list(tx, &filter, after, before, limit).await)
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
            .unit(async move |tx| {
                templates::edit(tx, &id, expected_version, &edit, &actor, now).await
            })
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
            .unit(async move |tx| {
                let reason = reason.as_deref();
                templates::set_status(tx, &id, expected, to, &actor, reason, now).await
            })
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
            .unit(async move |tx| {
                templates::delete(tx, &waba, &name, id.as_deref(), &actor, now).await
            })
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
            .read_unit(async move |tx| templates::events(tx, waba.as_ref(), after_seq, limit).await)
            .await
    }

    async fn template_audit(&self, template_id: &str) -> StoreResult<Vec<TemplateEvent>> {
        let template_id = template_id.to_owned();
        self.db
            .read_unit(async move |tx| templates::audit(tx, &template_id).await)
            .await
    }
}
