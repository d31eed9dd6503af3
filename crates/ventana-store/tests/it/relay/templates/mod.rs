//! `TemplateStore` conformance: creating under the name and limit checks, reading, listing
//! and paging here; versions, review transitions, deletion, the audit trail and its followers
//! in `lifecycle`. Several PostgreSQL nodes writing at once are in `nodes`.

use crate::waba;
use ventana_core::template::{Category, TemplateStatus};
use ventana_core::{UnixTime, WabaId};
use ventana_store::template::{
    CreateRefusal, NewTemplate, TemplateEdit, TemplateEvent, TemplateFilter, TemplateRecord,
};
use ventana_store::{StoreError, TemplateStore};

mod lifecycle;
mod nodes;

use lifecycle::*;

use TemplateStatus::*;

conformance!(
    sqlite,
    crate::open::sqlite_relay,
    [
        a_new_template_is_pending_at_version_one_and_reads_back,
        a_live_name_and_language_is_taken_until_deleted,
        a_business_cannot_go_past_its_template_limit,
        a_taken_id_is_a_conflict,
        lists_filter_by_business_name_status_category_and_language,
        deleted_templates_are_listed_only_when_asked_for,
        paging_forward_and_backward_sees_each_template_once,
        an_edit_adds_a_pending_version_and_keeps_the_old_one,
        an_edit_against_another_version_or_a_closed_template_is_a_conflict,
        review_moves_only_as_the_matrix_allows,
        a_transition_from_a_status_already_left_is_a_conflict,
        approval_is_remembered_per_version,
        deleting_by_name_deletes_every_language,
        deleting_by_id_deletes_only_that_template_of_that_name,
        the_audit_trail_records_every_change_in_order,
        events_are_followed_by_sequence_and_filtered_by_business,
    ]
);

conformance!(
    postgres,
    crate::open::postgres_relay,
    [
        a_new_template_is_pending_at_version_one_and_reads_back,
        a_live_name_and_language_is_taken_until_deleted,
        a_business_cannot_go_past_its_template_limit,
        a_taken_id_is_a_conflict,
        lists_filter_by_business_name_status_category_and_language,
        deleted_templates_are_listed_only_when_asked_for,
        paging_forward_and_backward_sees_each_template_once,
        an_edit_adds_a_pending_version_and_keeps_the_old_one,
        an_edit_against_another_version_or_a_closed_template_is_a_conflict,
        review_moves_only_as_the_matrix_allows,
        a_transition_from_a_status_already_left_is_a_conflict,
        approval_is_remembered_per_version,
        deleting_by_name_deletes_every_language,
        deleting_by_id_deletes_only_that_template_of_that_name,
        the_audit_trail_records_every_change_in_order,
        events_are_followed_by_sequence_and_filtered_by_business,
    ]
);

const WABA: &str = "1001";
const OTHER_WABA: &str = "2002";
const LIMIT: u32 = 250;
const OPERATOR: &str = "operator:alice";

fn components(text: &str) -> String {
    format!(r#"[{{"type":"BODY","text":"{text}"}}]"#)
}

fn new_template(id: &str, waba_id: &str, name: &str, language: &str) -> NewTemplate {
    NewTemplate {
        id: id.into(),
        waba_id: waba(waba_id),
        name: name.into(),
        language: language.into(),
        category: Category::Utility,
        parameter_format: "POSITIONAL".into(),
        components: components(&format!("{name} in {language}")),
        actor: "business".into(),
        now: UnixTime(1000),
    }
}

async fn create(store: &dyn TemplateStore, new: NewTemplate) -> TemplateRecord {
    store.create_template(new, LIMIT).await.unwrap().unwrap()
}

/// Creates a template in `WABA` with id `id` named `name` in English.
async fn created(store: &dyn TemplateStore, id: &str, name: &str) -> TemplateRecord {
    create(store, new_template(id, WABA, name, "en_US")).await
}

async fn review(
    store: &dyn TemplateStore,
    id: &str,
    from: TemplateStatus,
    to: TemplateStatus,
) -> TemplateRecord {
    store
        .set_template_status(id, from, to, OPERATOR, None, UnixTime(2000))
        .await
        .unwrap()
}

fn edit(text: &str) -> TemplateEdit {
    TemplateEdit {
        category: Category::Marketing,
        parameter_format: "NAMED".into(),
        components: components(text),
    }
}

fn ids(records: &[TemplateRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

fn is_conflict<T: std::fmt::Debug>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

async fn listed(store: &dyn TemplateStore, filter: TemplateFilter) -> Vec<String> {
    let page = store
        .list_templates(&filter, None, None, 100)
        .await
        .unwrap();
    page.into_iter().map(|r| r.id).collect()
}

fn of_waba(id: &str) -> TemplateFilter {
    TemplateFilter {
        waba_id: Some(waba(id)),
        ..TemplateFilter::default()
    }
}

/// An event as the cases compare them: template, version, from, to, actor, reason.
type Move = (
    String,
    u32,
    Option<TemplateStatus>,
    TemplateStatus,
    String,
    Option<String>,
);

fn moves(events: &[TemplateEvent]) -> Vec<Move> {
    events
        .iter()
        .map(|e| {
            (
                e.template_id.clone(),
                e.version,
                e.from,
                e.to,
                e.actor.clone(),
                e.reason.clone(),
            )
        })
        .collect()
}

fn step(
    id: &str,
    version: u32,
    from: Option<TemplateStatus>,
    to: TemplateStatus,
    actor: &str,
    reason: Option<&str>,
) -> Move {
    (
        id.into(),
        version,
        from,
        to,
        actor.into(),
        reason.map(String::from),
    )
}

pub(super) async fn a_new_template_is_pending_at_version_one_and_reads_back(
    store: &dyn TemplateStore,
) {
    let record = created(store, "101", "order_update").await;
    assert_eq!(
        record,
        TemplateRecord {
            id: "101".into(),
            seq: record.seq,
            waba_id: waba(WABA),
            name: "order_update".into(),
            language: "en_US".into(),
            category: Category::Utility,
            status: Pending,
            version: 1,
            components: components("order_update in en_US"),
            parameter_format: "POSITIONAL".into(),
            reason: None,
            created_at: UnixTime(1000),
            updated_at: UnixTime(1000),
        }
    );
    assert_eq!(store.template("101").await.unwrap(), Some(record.clone()));
    let found = store
        .find_template(&waba(WABA), "order_update", "en_US")
        .await
        .unwrap();
    assert_eq!(found, Some(record.clone()));
    assert_eq!(store.template("999").await.unwrap(), None);
    assert_eq!(
        store
            .find_template(&waba(OTHER_WABA), "order_update", "en_US")
            .await
            .unwrap(),
        None
    );

    let v1 = store.template_version("101", 1).await.unwrap().unwrap();
    assert_eq!(v1.template_id, "101");
    assert_eq!(v1.version, 1);
    assert_eq!(v1.category, Category::Utility);
    assert_eq!(v1.components, record.components);
    assert_eq!(v1.parameter_format, "POSITIONAL");
    assert_eq!(v1.created_at, UnixTime(1000));
    assert!(!v1.approved);
    assert_eq!(store.template_version("101", 2).await.unwrap(), None);

    let audit = store.template_audit("101").await.unwrap();
    assert_eq!(
        moves(&audit),
        [step("101", 1, None, Pending, "business", None)]
    );
    let event = &audit[0];
    assert_eq!(
        (&event.waba_id, event.name.as_str(), event.language.as_str()),
        (&waba(WABA), "order_update", "en_US")
    );
    assert_eq!(event.at, UnixTime(1000));
}

pub(super) async fn a_live_name_and_language_is_taken_until_deleted(store: &dyn TemplateStore) {
    created(store, "101", "order_update").await;
    let again = store
        .create_template(new_template("102", WABA, "order_update", "en_US"), LIMIT)
        .await
        .unwrap();
    assert_eq!(again, Err(CreateRefusal::Exists));
    // Another language, another business: other templates.
    create(store, new_template("103", WABA, "order_update", "es")).await;
    create(
        store,
        new_template("104", OTHER_WABA, "order_update", "en_US"),
    )
    .await;
    // A refused create wrote nothing.
    assert_eq!(store.template("102").await.unwrap(), None);

    let deleted = store
        .delete_templates(
            &waba(WABA),
            "order_update",
            Some("101"),
            "business",
            UnixTime(3000),
        )
        .await
        .unwrap();
    assert_eq!(ids(&deleted), ["101"]);
    let reborn = create(store, new_template("105", WABA, "order_update", "en_US")).await;
    assert_eq!(reborn.version, 1);
    let found = store
        .find_template(&waba(WABA), "order_update", "en_US")
        .await
        .unwrap();
    assert_eq!(found.map(|r| r.id), Some("105".into()));
    // The deleted one is still there, as deleted.
    assert_eq!(
        store.template("101").await.unwrap().unwrap().status,
        Deleted
    );
}

pub(super) async fn a_business_cannot_go_past_its_template_limit(store: &dyn TemplateStore) {
    for (id, name) in [("101", "one"), ("102", "two")] {
        let new = new_template(id, WABA, name, "en_US");
        store.create_template(new, 2).await.unwrap().unwrap();
    }
    let third = store
        .create_template(new_template("103", WABA, "three", "en_US"), 2)
        .await
        .unwrap();
    assert_eq!(third, Err(CreateRefusal::LimitReached));
    // A name in use is answered as such, limit or not.
    let taken = store
        .create_template(new_template("103", WABA, "one", "en_US"), 2)
        .await
        .unwrap();
    assert_eq!(taken, Err(CreateRefusal::Exists));
    // The limit is per business.
    let elsewhere = new_template("104", OTHER_WABA, "three", "en_US");
    store.create_template(elsewhere, 2).await.unwrap().unwrap();
    assert_eq!(store.template("103").await.unwrap(), None);

    // Rejected templates count; deleted ones do not.
    review(store, "101", Pending, Rejected).await;
    let still = store
        .create_template(new_template("105", WABA, "three", "en_US"), 2)
        .await
        .unwrap();
    assert_eq!(still, Err(CreateRefusal::LimitReached));
    store
        .delete_templates(&waba(WABA), "one", None, "business", UnixTime(3000))
        .await
        .unwrap();
    let new = new_template("106", WABA, "three", "en_US");
    store.create_template(new, 2).await.unwrap().unwrap();
}

pub(super) async fn a_taken_id_is_a_conflict(store: &dyn TemplateStore) {
    created(store, "101", "order_update").await;
    let reused = store
        .create_template(new_template("101", WABA, "other", "en_US"), LIMIT)
        .await;
    assert!(is_conflict(&reused), "{reused:?}");
    assert_eq!(
        store
            .find_template(&waba(WABA), "other", "en_US")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.template_audit("101").await.unwrap().len(), 1);
}

pub(super) async fn lists_filter_by_business_name_status_category_and_language(
    store: &dyn TemplateStore,
) {
    created(store, "101", "order_update").await;
    create(store, new_template("102", WABA, "order_update", "fr")).await;
    let mut marketing = new_template("103", WABA, "new_order_promo", "en_US");
    marketing.category = Category::Marketing;
    create(store, marketing).await;
    created(store, "104", "Order_Shipped").await;
    create(
        store,
        new_template("105", OTHER_WABA, "order_update", "en_US"),
    )
    .await;
    review(store, "102", Pending, Approved).await;
    review(store, "104", Pending, Rejected).await;

    assert_eq!(
        listed(store, TemplateFilter::default()).await,
        ["101", "102", "103", "104", "105"]
    );
    assert_eq!(
        listed(store, of_waba(WABA)).await,
        ["101", "102", "103", "104"]
    );
    // Names match by case-sensitive substring, anywhere in the name.
    let named = |name: &str| TemplateFilter {
        name: Some(name.into()),
        ..of_waba(WABA)
    };
    assert_eq!(listed(store, named("order")).await, ["101", "102", "103"]);
    assert_eq!(listed(store, named("Order")).await, ["104"]);
    assert_eq!(listed(store, named("order_update")).await, ["101", "102"]);
    assert!(listed(store, named("%")).await.is_empty());
    let by_status = |status| TemplateFilter {
        status: Some(status),
        ..of_waba(WABA)
    };
    assert_eq!(listed(store, by_status(Pending)).await, ["101", "103"]);
    assert_eq!(listed(store, by_status(Approved)).await, ["102"]);
    assert_eq!(listed(store, by_status(Rejected)).await, ["104"]);
    assert!(listed(store, by_status(Paused)).await.is_empty());
    let by_category = TemplateFilter {
        category: Some(Category::Marketing),
        ..TemplateFilter::default()
    };
    assert_eq!(listed(store, by_category).await, ["103"]);
    let by_language = TemplateFilter {
        language: Some("fr".into()),
        ..TemplateFilter::default()
    };
    assert_eq!(listed(store, by_language).await, ["102"]);
    let all_of_them = TemplateFilter {
        name: Some("update".into()),
        status: Some(Pending),
        category: Some(Category::Utility),
        language: Some("en_US".into()),
        ..of_waba(OTHER_WABA)
    };
    assert_eq!(listed(store, all_of_them).await, ["105"]);
}

pub(super) async fn deleted_templates_are_listed_only_when_asked_for(store: &dyn TemplateStore) {
    created(store, "101", "one").await;
    created(store, "102", "two").await;
    store
        .delete_templates(&waba(WABA), "one", None, "business", UnixTime(3000))
        .await
        .unwrap();
    assert_eq!(listed(store, of_waba(WABA)).await, ["102"]);
    let deleted = TemplateFilter {
        status: Some(Deleted),
        ..of_waba(WABA)
    };
    assert_eq!(listed(store, deleted).await, ["101"]);
}

pub(super) async fn paging_forward_and_backward_sees_each_template_once(store: &dyn TemplateStore) {
    let mut all = Vec::new();
    for n in 0..8 {
        let id = format!("{}", 101 + n);
        all.push(created(store, &id, &format!("t{n}")).await);
        // Another business's templates interleave in `seq` without showing up.
        let other = new_template(&format!("{}", 201 + n), OTHER_WABA, "x", &format!("l{n}"));
        create(store, other).await;
    }
    // Deleted ones leave a gap in `seq` that paging must step over.
    store
        .delete_templates(&waba(WABA), "t3", None, "business", UnixTime(3000))
        .await
        .unwrap();
    all.remove(3);
    let expected: Vec<String> = all.iter().map(|r| r.id.clone()).collect();
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));

    let filter = of_waba(WABA);
    let mut forward: Vec<Vec<TemplateRecord>> = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_templates(&filter, after, None, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.seq);
        forward.push(page);
    }
    assert_eq!(
        forward.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 1],
        "{forward:?}"
    );
    let seen: Vec<String> = forward.iter().flatten().map(|r| r.id.clone()).collect();
    assert_eq!(seen, expected);

    // Back from the last page: each previous page, in ascending order, ending at the start.
    let mut backward: Vec<Vec<TemplateRecord>> = Vec::new();
    let mut before = forward.last().and_then(|p| p.first()).map(|r| r.seq);
    let mut pages = vec![forward.last().unwrap().clone()];
    loop {
        let page = store
            .list_templates(&filter, None, before, 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.windows(2).all(|w| w[0].seq < w[1].seq));
        before = page.first().map(|r| r.seq);
        backward.push(page.clone());
        pages.insert(0, page);
    }
    assert_eq!(backward, [forward[1].clone(), forward[0].clone()]);
    let seen: Vec<String> = pages.iter().flatten().map(|r| r.id.clone()).collect();
    assert_eq!(seen, expected);

    // A page before one that does not start at a boundary is the last three before it.
    let before_sixth = store
        .list_templates(&filter, None, Some(all[5].seq), 3)
        .await
        .unwrap();
    assert_eq!(ids(&before_sixth), ["103", "105", "106"]);
    // Both cursors bound a range.
    let between = store
        .list_templates(&filter, Some(all[0].seq), Some(all[4].seq), 10)
        .await
        .unwrap();
    assert_eq!(ids(&between), ["102", "103", "105"]);
}
