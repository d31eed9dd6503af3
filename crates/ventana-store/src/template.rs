//! The relay's registry of message templates, per business.
//!
//! Template text is public to the platform: the operator reviews it and devices fetch the
//! version a message was sent with. So every version is kept, unchanged, for as long as the
//! store lives; deleting a template only marks it `DELETED`. Each change of status leaves a
//! [`TemplateEvent`]: the audit trail, and what the gateway follows to emit
//! `message_template_status_update` webhooks.
//!
//! Components are an opaque JSON text here: the caller parsed and validated them
//! (`ventana_core::template`) before handing them over.

use crate::{ConflictKind, StoreError, StoreResult};
use async_trait::async_trait;
use ventana_core::template::{Category, TemplateStatus};
use ventana_core::{UnixTime, WabaId};

/// A template as it stands: its identity, status, and its current version's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateRecord {
    /// A numeric string, chosen by the caller.
    pub id: String,
    /// Assigned by the store, increasing in creation order: the cursor for paging lists.
    pub seq: i64,
    pub waba_id: WabaId,
    pub name: String,
    pub language: String,
    pub category: Category,
    pub status: TemplateStatus,
    /// The current version, 1 at creation and one more at each edit.
    pub version: u32,
    /// The current version's components, as JSON.
    pub components: String,
    pub parameter_format: String,
    /// The reason given with the last review transition (a rejection, a pause), if any.
    pub reason: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// One version of a template, immutable once written: messages name the version they were
/// sent with, and devices fetch it later to render them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateVersion {
    pub template_id: String,
    pub version: u32,
    pub category: Category,
    pub components: String,
    pub parameter_format: String,
    pub created_at: UnixTime,
    /// Whether this version was ever approved (it stays true after a pause, an edit, a
    /// deletion): messages sent with it remain renderable.
    pub approved: bool,
}

/// One change of a template's status, in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateEvent {
    /// Assigned by the store, increasing across the whole store in commit order: a follower
    /// reading `seq > last seen` misses none (see [`TemplateStore::template_events`]).
    pub seq: i64,
    pub template_id: String,
    pub waba_id: WabaId,
    pub name: String,
    pub language: String,
    /// The version the template was at after the change.
    pub version: u32,
    /// `None` at creation.
    pub from: Option<TemplateStatus>,
    pub to: TemplateStatus,
    /// Who made the change: `business`, `operator:<who>` or `rule:<rule name>`.
    pub actor: String,
    pub reason: Option<String>,
    pub at: UnixTime,
}

/// A template to create, `PENDING` at version 1.
#[derive(Clone, Debug)]
pub struct NewTemplate {
    /// A numeric string, unique in the store (a taken id is a `Conflict`).
    pub id: String,
    pub waba_id: WabaId,
    pub name: String,
    pub language: String,
    pub category: Category,
    pub parameter_format: String,
    /// Validated components, as JSON.
    pub components: String,
    /// Recorded in the creation's audit event (`business`, usually).
    pub actor: String,
    pub now: UnixTime,
}

/// A new version's content, for [`TemplateStore::edit_template`].
#[derive(Clone, Debug)]
pub struct TemplateEdit {
    pub category: Category,
    pub parameter_format: String,
    /// Validated components, as JSON.
    pub components: String,
}

/// Why [`TemplateStore::create_template`] created nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateRefusal {
    /// The business has a template of that name and language that is not deleted.
    Exists,
    /// The business already has as many templates (not deleted) as it may.
    LimitReached,
}

/// Which templates [`TemplateStore::list_templates`] returns; every field given must match.
#[derive(Clone, Debug, Default)]
pub struct TemplateFilter {
    pub waba_id: Option<WabaId>,
    /// A case-sensitive substring of the name (`order` finds `order_update` and
    /// `new_order`); no wildcards.
    pub name: Option<String>,
    /// Exactly this status. Unset: every status but `DELETED`; deleted templates are listed
    /// only when asked for by status.
    pub status: Option<TemplateStatus>,
    pub category: Option<Category>,
    /// Exactly this language code (`en_US`).
    pub language: Option<String>,
}

#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Creates a `PENDING` template with its version 1 and a creation event (from no status),
    /// unless the business has a non-deleted template with that name and language
    /// (`Exists`), or already `limit` non-deleted templates (`LimitReached`). Whichever node
    /// runs them, concurrent creates respect both checks.
    async fn create_template(
        &self,
        new: NewTemplate,
        limit: u32,
    ) -> StoreResult<Result<TemplateRecord, CreateRefusal>>;

    /// The template with that id, whatever its status (deleted ones included).
    async fn template(&self, id: &str) -> StoreResult<Option<TemplateRecord>>;

    /// The business's non-deleted template with that name and language.
    async fn find_template(
        &self,
        waba: &WabaId,
        name: &str,
        language: &str,
    ) -> StoreResult<Option<TemplateRecord>>;

    /// One version of a template, whatever became of the template since.
    async fn template_version(
        &self,
        id: &str,
        version: u32,
    ) -> StoreResult<Option<TemplateVersion>>;

    /// Up to `limit` templates matching `filter`, in `seq` order. Without cursors, the first
    /// ones; with `after`, the first ones past it; with `before`, the last ones before it
    /// (the previous page), still in ascending order. Both may be given to bound a range.
    async fn list_templates(
        &self,
        filter: &TemplateFilter,
        after: Option<i64>,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<TemplateRecord>>;

    /// Stores `edit` as the next version, sets the template `PENDING` (clearing the reason)
    /// and records the event. `Conflict` if there is no such template, its current version
    /// is not `expected_version`, or it is `DELETED` or `DISABLED`.
    async fn edit_template(
        &self,
        id: &str,
        expected_version: u32,
        edit: TemplateEdit,
        actor: &str,
        now: UnixTime,
    ) -> StoreResult<TemplateRecord>;

    /// A review transition, compare-and-swap: moves the template from `expected` to `to`,
    /// stores `reason` as its reason, marks its current version approved when `to` is
    /// `APPROVED`, and records the event. `Conflict` if there is no such template, its status
    /// is not `expected` (someone else moved it first: of concurrent transitions from one
    /// status exactly one succeeds), or `expected.may_become(to)` is false.
    async fn set_template_status(
        &self,
        id: &str,
        expected: TemplateStatus,
        to: TemplateStatus,
        actor: &str,
        reason: Option<String>,
        now: UnixTime,
    ) -> StoreResult<TemplateRecord>;

    /// The Cloud API's delete: the business's non-deleted templates named `name`, in every
    /// language, or with `id` only that one (if its name is `name`). Each becomes `DELETED`
    /// (its versions stay) with an event. Returns them as deleted, in `seq` order; none
    /// matching is not an error.
    async fn delete_templates(
        &self,
        waba: &WabaId,
        name: &str,
        id: Option<&str>,
        actor: &str,
        now: UnixTime,
    ) -> StoreResult<Vec<TemplateRecord>>;

    /// Up to `limit` events with `seq > after_seq` (of one business, or all), oldest first.
    ///
    /// Events become visible in `seq` order on every backend (writers of events are
    /// serialised from drawing the number to the commit), so a follower that remembers the
    /// last `seq` it handled and asks for what follows misses none and sees none twice.
    async fn template_events(
        &self,
        waba: Option<&WabaId>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<TemplateEvent>>;

    /// The whole audit trail of one template, oldest first.
    async fn template_audit(&self, template_id: &str) -> StoreResult<Vec<TemplateEvent>>;
}

/// A stored status, for the backends' row readers.
pub(crate) fn status_named(text: &str) -> Option<TemplateStatus> {
    text.parse().ok()
}

/// A stored category, for the backends' row readers.
pub(crate) fn category_named(text: &str) -> Option<Category> {
    text.parse().ok()
}

/// What both backends check before an edit: the template may be edited, and the caller saw
/// its current version. Answers the version the edit becomes.
pub(crate) fn next_version(
    id: &str,
    version: u32,
    status: TemplateStatus,
    expected_version: u32,
) -> Result<u32, StoreError> {
    if matches!(status, TemplateStatus::Deleted | TemplateStatus::Disabled) {
        return Err(StoreError::conflict(
            ConflictKind::State,
            format!("template {id} is {status} and cannot be edited"),
        ));
    }
    if version != expected_version {
        return Err(StoreError::conflict(
            ConflictKind::Changed,
            format!("template {id} is at version {version}, not {expected_version}"),
        ));
    }
    version
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend(format!("template {id} has run out of version numbers")))
}

/// What both backends check before a review transition.
pub(crate) fn check_review(expected: TemplateStatus, to: TemplateStatus) -> Result<(), StoreError> {
    if expected.may_become(to) {
        Ok(())
    } else {
        Err(StoreError::conflict(
            ConflictKind::State,
            format!("review cannot move a template from {expected} to {to}"),
        ))
    }
}
