//! [`TemplateStore`] on PostgreSQL, in the relay's schema: dispatch to
//! [`crate::units::relay::templates`], whose module documentation says which locks keep each
//! decision true when several nodes write at once.

use super::PgRelayStore;
use crate::StoreResult;
use crate::postgres::db::unit;
use crate::template::{
    CreateRefusal, NewTemplate, TemplateEdit, TemplateEvent, TemplateFilter, TemplateRecord,
    TemplateStore, TemplateVersion,
};
use crate::units::relay::templates;
use async_trait::async_trait;
use ventana_core::template::TemplateStatus;
use ventana_core::{UnixTime, WabaId};

#[async_trait]
impl TemplateStore for PgRelayStore {
    async fn create_template(
        &self,
        new: NewTemplate,
        limit: u32,
    ) -> StoreResult<Result<TemplateRecord, CreateRefusal>> {
        unit!(self.db, |tx| templates::create(tx, &new, limit).await)
    }

    async fn template(&self, id: &str) -> StoreResult<Option<TemplateRecord>> {
        self.db
            .read_unit(async |tx| templates::template(tx, id).await)
            .await
    }

    async fn find_template(
        &self,
        waba: &WabaId,
        name: &str,
        language: &str,
    ) -> StoreResult<Option<TemplateRecord>> {
        self.db
            .read_unit(async |tx| templates::find(tx, waba, name, language).await)
            .await
    }

    async fn template_version(
        &self,
        id: &str,
        version: u32,
    ) -> StoreResult<Option<TemplateVersion>> {
        self.db
            .read_unit(async |tx| templates::version(tx, id, version).await)
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
            .read_unit(async |tx| templates::list(tx, filter, after, before, limit).await)
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
        unit!(self.db, |tx| templates::edit(
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
        unit!(self.db, |tx| templates::set_status(
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
        unit!(self.db, |tx| templates::delete(
            tx, waba, name, id, actor, now
        )
        .await)
    }

    async fn template_events(
        &self,
        waba: Option<&WabaId>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<TemplateEvent>> {
        self.db
            .read_unit(async |tx| templates::events(tx, waba, after_seq, limit).await)
            .await
    }

    async fn template_audit(&self, template_id: &str) -> StoreResult<Vec<TemplateEvent>> {
        self.db
            .read_unit(async |tx| templates::audit(tx, template_id).await)
            .await
    }
}
