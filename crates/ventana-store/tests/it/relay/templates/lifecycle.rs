//! Template lifecycle cases: edits and their versions, review transitions, deletion, the
//! audit trail and the events followed by sequence.

use super::*;

pub(super) async fn an_edit_adds_a_pending_version_and_keeps_the_old_one(
    store: &dyn TemplateStore,
) {
    let first = created(store, "101", "order_update").await;
    store
        .set_template_status(
            "101",
            Pending,
            Rejected,
            OPERATOR,
            Some("INVALID_FORMAT".into()),
            UnixTime(2000),
        )
        .await
        .unwrap();
    let edited = store
        .edit_template("101", 1, edit("fixed"), "business", UnixTime(3000))
        .await
        .unwrap();
    assert_eq!(edited.version, 2);
    assert_eq!(edited.status, Pending);
    assert_eq!(edited.reason, None);
    assert_eq!(edited.category, Category::Marketing);
    assert_eq!(edited.components, components("fixed"));
    assert_eq!(edited.parameter_format, "NAMED");
    assert_eq!(
        (edited.seq, edited.created_at, edited.updated_at),
        (first.seq, UnixTime(1000), UnixTime(3000))
    );
    assert_eq!(store.template("101").await.unwrap(), Some(edited.clone()));

    let v1 = store.template_version("101", 1).await.unwrap().unwrap();
    assert_eq!(
        (v1.category, v1.components, v1.parameter_format.as_str()),
        (Category::Utility, first.components, "POSITIONAL")
    );
    let v2 = store.template_version("101", 2).await.unwrap().unwrap();
    assert_eq!(
        (v2.category, v2.components, v2.created_at),
        (Category::Marketing, components("fixed"), UnixTime(3000))
    );
    assert!(!v1.approved && !v2.approved);
}

pub(super) async fn an_edit_against_another_version_or_a_closed_template_is_a_conflict(
    store: &dyn TemplateStore,
) {
    created(store, "101", "order_update").await;
    let edit_v1 = || store.edit_template("101", 1, edit("again"), "business", UnixTime(3000));
    edit_v1().await.unwrap();
    // Someone else's edit already made version 2.
    let stale = edit_v1().await;
    assert!(is_conflict(&stale), "{stale:?}");
    let ahead = store
        .edit_template("101", 3, edit("ahead"), "business", UnixTime(3000))
        .await;
    assert!(is_conflict(&ahead), "{ahead:?}");
    let unknown = store
        .edit_template("999", 1, edit("x"), "business", UnixTime(3000))
        .await;
    assert!(is_conflict(&unknown), "{unknown:?}");
    assert_eq!(store.template_version("101", 3).await.unwrap(), None);

    review(store, "101", Pending, Approved).await;
    review(store, "101", Approved, Disabled).await;
    let disabled = store
        .edit_template("101", 2, edit("x"), "business", UnixTime(4000))
        .await;
    assert!(is_conflict(&disabled), "{disabled:?}");

    created(store, "102", "gone").await;
    store
        .delete_templates(&waba(WABA), "gone", None, "business", UnixTime(4000))
        .await
        .unwrap();
    let deleted = store
        .edit_template("102", 1, edit("x"), "business", UnixTime(4000))
        .await;
    assert!(is_conflict(&deleted), "{deleted:?}");
    assert_eq!(
        store.template("102").await.unwrap().unwrap().status,
        Deleted
    );
    // Refused edits recorded nothing.
    assert_eq!(store.template_audit("101").await.unwrap().len(), 4);
    assert_eq!(store.template_audit("102").await.unwrap().len(), 2);
}

pub(super) async fn review_moves_only_as_the_matrix_allows(store: &dyn TemplateStore) {
    // A walk through the matrix: every step the matrix allows, from each status reached.
    created(store, "101", "walk").await;
    let path = [
        (Pending, Rejected),
        (Rejected, Approved),
        (Approved, Paused),
        (Paused, Approved),
        (Approved, Paused),
        (Paused, Disabled),
    ];
    for (from, to) in path {
        // Every move the matrix forbids from here is refused and changes nothing.
        for refused in TemplateStatus::ALL
            .into_iter()
            .filter(|to| !from.may_become(*to))
        {
            let result = store
                .set_template_status("101", from, refused, OPERATOR, None, UnixTime(2000))
                .await;
            assert!(is_conflict(&result), "{from} -> {refused}: {result:?}");
            assert_eq!(store.template("101").await.unwrap().unwrap().status, from);
        }
        let moved = review(store, "101", from, to).await;
        assert_eq!(moved.status, to);
    }
    // Disabled is final for review.
    assert!(
        TemplateStatus::ALL
            .iter()
            .all(|to| !Disabled.may_become(*to))
    );
    let events = store.template_audit("101").await.unwrap();
    assert_eq!(events.len(), 1 + path.len());
    assert_eq!(store.template("101").await.unwrap().unwrap().version, 1);
}

pub(super) async fn a_transition_from_a_status_already_left_is_a_conflict(
    store: &dyn TemplateStore,
) {
    created(store, "101", "order_update").await;
    review(store, "101", Pending, Approved).await;
    // A second operator, who also saw it pending, decides differently: too late.
    let late = store
        .set_template_status(
            "101",
            Pending,
            Rejected,
            "operator:bob",
            Some("TAG_CONTENT_MISMATCH".into()),
            UnixTime(2001),
        )
        .await;
    assert!(is_conflict(&late), "{late:?}");
    let record = store.template("101").await.unwrap().unwrap();
    assert_eq!((record.status, record.reason), (Approved, None));
    let unknown = store
        .set_template_status("999", Pending, Approved, OPERATOR, None, UnixTime(2000))
        .await;
    assert!(is_conflict(&unknown), "{unknown:?}");
    assert_eq!(store.template_audit("101").await.unwrap().len(), 2);
}

pub(super) async fn approval_is_remembered_per_version(store: &dyn TemplateStore) {
    created(store, "101", "order_update").await;
    let approved = |version| async move {
        let v = store.template_version("101", version).await.unwrap();
        v.unwrap().approved
    };
    review(store, "101", Pending, Approved).await;
    assert!(approved(1).await);
    store
        .edit_template("101", 1, edit("v2"), "business", UnixTime(3000))
        .await
        .unwrap();
    assert!(approved(1).await && !approved(2).await);
    review(store, "101", Pending, Rejected).await;
    store
        .edit_template("101", 2, edit("v3"), "business", UnixTime(4000))
        .await
        .unwrap();
    review(store, "101", Pending, Approved).await;
    review(store, "101", Approved, Paused).await;
    assert_eq!(
        [approved(1).await, approved(2).await, approved(3).await],
        [true, false, true]
    );
    store
        .delete_templates(
            &waba(WABA),
            "order_update",
            None,
            "business",
            UnixTime(5000),
        )
        .await
        .unwrap();
    // Deleting keeps every version, approved or not.
    assert_eq!(
        [approved(1).await, approved(2).await, approved(3).await],
        [true, false, true]
    );
}

pub(super) async fn deleting_by_name_deletes_every_language(store: &dyn TemplateStore) {
    created(store, "101", "order_update").await;
    create(store, new_template("102", WABA, "order_update", "es")).await;
    review(store, "102", Pending, Approved).await;
    created(store, "103", "order_update_2").await;
    create(
        store,
        new_template("104", OTHER_WABA, "order_update", "en_US"),
    )
    .await;

    let deleted = store
        .delete_templates(
            &waba(WABA),
            "order_update",
            None,
            "business",
            UnixTime(3000),
        )
        .await
        .unwrap();
    assert_eq!(ids(&deleted), ["101", "102"]);
    assert!(
        deleted
            .iter()
            .all(|r| r.status == Deleted && r.updated_at == UnixTime(3000))
    );
    assert_eq!(
        store.template("101").await.unwrap().unwrap().status,
        Deleted
    );
    for (waba_id, name, language) in [
        (WABA, "order_update", "en_US"),
        (WABA, "order_update", "es"),
    ] {
        let found = store.find_template(&waba(waba_id), name, language).await;
        assert_eq!(found.unwrap(), None);
    }
    // Other names and other businesses are untouched; versions stay readable.
    assert_eq!(listed(store, of_waba(WABA)).await, ["103"]);
    assert_eq!(listed(store, of_waba(OTHER_WABA)).await, ["104"]);
    assert!(store.template_version("102", 1).await.unwrap().is_some());
    let approved_then_deleted = store.template_audit("102").await.unwrap();
    assert_eq!(
        moves(&approved_then_deleted)[2],
        step("102", 1, Some(Approved), Deleted, "business", None)
    );

    let again = store
        .delete_templates(
            &waba(WABA),
            "order_update",
            None,
            "business",
            UnixTime(4000),
        )
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(store.template_audit("101").await.unwrap().len(), 2);
}

pub(super) async fn deleting_by_id_deletes_only_that_template_of_that_name(
    store: &dyn TemplateStore,
) {
    created(store, "101", "order_update").await;
    create(store, new_template("102", WABA, "order_update", "es")).await;
    let delete = |name: &'static str, id: &'static str| async move {
        let deleted = store
            .delete_templates(&waba(WABA), name, Some(id), "business", UnixTime(3000))
            .await
            .unwrap();
        deleted.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    // The id must belong to that name (and that business).
    assert!(delete("other_name", "101").await.is_empty());
    let elsewhere = store
        .delete_templates(
            &waba(OTHER_WABA),
            "order_update",
            Some("101"),
            "business",
            UnixTime(3000),
        )
        .await
        .unwrap();
    assert!(elsewhere.is_empty());
    assert_eq!(delete("order_update", "102").await, ["102"]);
    assert_eq!(listed(store, of_waba(WABA)).await, ["101"]);
    assert!(delete("order_update", "102").await.is_empty());
}

pub(super) async fn the_audit_trail_records_every_change_in_order(store: &dyn TemplateStore) {
    created(store, "101", "order_update").await;
    created(store, "102", "unrelated").await;
    store
        .set_template_status(
            "101",
            Pending,
            Rejected,
            "rule:promotional_in_utility",
            Some("INCORRECT_CATEGORY".into()),
            UnixTime(2000),
        )
        .await
        .unwrap();
    store
        .edit_template("101", 1, edit("v2"), "business", UnixTime(3000))
        .await
        .unwrap();
    review(store, "102", Pending, Approved).await;
    review(store, "101", Pending, Approved).await;
    store
        .set_template_status(
            "101",
            Approved,
            Paused,
            "rule:quality",
            Some("LOW_QUALITY".into()),
            UnixTime(4000),
        )
        .await
        .unwrap();
    assert_eq!(
        store.template("101").await.unwrap().unwrap().reason,
        Some("LOW_QUALITY".into())
    );
    store
        .delete_templates(
            &waba(WABA),
            "order_update",
            None,
            "business",
            UnixTime(5000),
        )
        .await
        .unwrap();

    let audit = store.template_audit("101").await.unwrap();
    assert_eq!(
        moves(&audit),
        [
            step("101", 1, None, Pending, "business", None),
            step(
                "101",
                1,
                Some(Pending),
                Rejected,
                "rule:promotional_in_utility",
                Some("INCORRECT_CATEGORY")
            ),
            step("101", 2, Some(Rejected), Pending, "business", None),
            step("101", 2, Some(Pending), Approved, OPERATOR, None),
            step(
                "101",
                2,
                Some(Approved),
                Paused,
                "rule:quality",
                Some("LOW_QUALITY")
            ),
            step("101", 2, Some(Paused), Deleted, "business", None),
        ]
    );
    let times: Vec<i64> = audit.iter().map(|e| e.at.0).collect();
    assert_eq!(times, [1000, 2000, 3000, 2000, 4000, 5000]);
    assert!(audit.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(audit.iter().all(|e| e.name == "order_update"));
    assert!(store.template_audit("999").await.unwrap().is_empty());
}

pub(super) async fn events_are_followed_by_sequence_and_filtered_by_business(
    store: &dyn TemplateStore,
) {
    created(store, "101", "one").await;
    create(store, new_template("201", OTHER_WABA, "one", "en_US")).await;
    review(store, "101", Pending, Approved).await;
    review(store, "201", Pending, Rejected).await;
    created(store, "102", "two").await;

    let all = store.template_events(None, 0, 100).await.unwrap();
    let order: Vec<(&str, TemplateStatus)> =
        all.iter().map(|e| (e.template_id.as_str(), e.to)).collect();
    assert_eq!(
        order,
        [
            ("101", Pending),
            ("201", Pending),
            ("101", Approved),
            ("201", Rejected),
            ("102", Pending),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));

    // A follower of one business, two at a time, resuming from the last seq it saw.
    let waba_id: WabaId = waba(WABA);
    let mut followed = Vec::new();
    let mut after = 0;
    loop {
        let batch = store
            .template_events(Some(&waba_id), after, 2)
            .await
            .unwrap();
        let Some(last) = batch.last() else { break };
        after = last.seq;
        followed.extend(batch);
    }
    let expected: Vec<TemplateEvent> = all
        .iter()
        .filter(|e| e.waba_id == waba_id)
        .cloned()
        .collect();
    assert_eq!(followed, expected);
    assert_eq!(followed.len(), 3);

    // Later changes show up after the cursor, and only those.
    review(store, "102", Pending, Approved).await;
    let newer = store
        .template_events(Some(&waba_id), after, 100)
        .await
        .unwrap();
    assert_eq!(
        moves(&newer),
        [step("102", 1, Some(Pending), Approved, OPERATOR, None)]
    );
    let since = store.template_events(None, all[3].seq, 100).await.unwrap();
    let since: Vec<&str> = since.iter().map(|e| e.template_id.as_str()).collect();
    assert_eq!(since, ["102", "102"]);
}
