//! A business's templates over its WebSocket: submission, the limit, listing, edits and
//! deletion; what another business or a user may see of them; the business clock.

use super::*;

on_both_backends!(
    a_submitted_template_waits_for_review_and_mistakes_are_named,
    a_business_keeps_at_most_its_limit_of_templates,
    listing_filters_and_pages_both_ways,
    an_edit_is_a_new_version_pending_review_while_the_approved_one_stays_public,
    another_business_sees_none_of_it,
    the_clock_is_the_business_clock,
);

async fn a_submitted_template_waits_for_review_and_mistakes_are_named(backend: Backend) {
    let lab = backend.start(TemplatePolicy::default()).await;
    let shop = lab.business("3001", "15550003001", false).await;

    let created = shop.create(shipped("order_shipped")).await;
    assert_eq!(created.status, TemplateStatus::Pending);
    assert_eq!(created.version, 1);
    assert_eq!(created.category, Category::Utility);
    assert_eq!(created.parameter_format, "POSITIONAL");
    assert!(
        (15..=16).contains(&created.id.len()) && created.id.bytes().all(|b| b.is_ascii_digit()),
        "a numeric id like the Cloud API's: {}",
        created.id
    );
    assert_eq!(
        created.components,
        json!([{"type": "BODY", "text": "Your parcel left our warehouse today and is on its way."}])
    );
    let fetched = shop
        .template(Op::TemplateGet {
            id: created.id.clone(),
        })
        .await;
    assert_eq!(fetched, created);

    // A broken definition is refused with the JSON path of the field.
    let error = shop
        .refused(Op::TemplateCreate {
            definition: definition("order_shipped", "en_US", "UTILITY", "   "),
        })
        .await;
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(
        error.message.starts_with("components[0].text: "),
        "{}",
        error.message
    );
    let error = shop
        .refused(Op::TemplateCreate {
            definition: definition("Order Shipped", "en_US", "UTILITY", "Hello there"),
        })
        .await;
    assert!(error.message.starts_with("name: "), "{}", error.message);

    // The same name in the same language is taken; in another language it is another template.
    let error = shop
        .refused(Op::TemplateCreate {
            definition: shipped("order_shipped"),
        })
        .await;
    assert_eq!(error.code, ErrorCode::Conflict);
    assert_eq!(
        error.message,
        "a template named order_shipped already exists in language en_US"
    );
    let spanish = definition(
        "order_shipped",
        "es",
        "UTILITY",
        "Tu paquete salió hoy de nuestro almacén.",
    );
    assert_eq!(shop.create(spanish).await.status, TemplateStatus::Pending);

    // Users have no templates.
    let ana = lab.user("34600003001").await;
    let error = ana
        .refused(Op::TemplateCreate {
            definition: shipped("mine"),
        })
        .await;
    assert_eq!(error.code, ErrorCode::BadRequest);
    let error = ana
        .refused(Op::TemplateList {
            query: TemplateQuery::default(),
        })
        .await;
    assert_eq!(error.code, ErrorCode::BadRequest);
    lab.stop().await;
}

async fn a_business_keeps_at_most_its_limit_of_templates(backend: Backend) {
    let policy = TemplatePolicy {
        limit_per_business: 2,
        ..TemplatePolicy::default()
    };
    let lab = backend.start(policy).await;
    let shop = lab.business("3002", "15550003002", false).await;
    shop.create(shipped("first")).await;
    shop.create(shipped("second")).await;
    let error = shop
        .refused(Op::TemplateCreate {
            definition: shipped("third"),
        })
        .await;
    assert_eq!(error.code, ErrorCode::LimitReached);
    assert!(error.message.contains("2 templates"), "{}", error.message);

    // Deleting one makes room; deleting what is not there is NotFound.
    let deleted = shop
        .ask(Op::TemplateDelete {
            name: "first".into(),
            id: None,
        })
        .await
        .unwrap();
    let Reply::Templates { templates, .. } = deleted else {
        panic!("expected the deleted templates, got {deleted:?}");
    };
    assert_eq!(templates.len(), 1);
    assert_eq!(templates[0].status, TemplateStatus::Deleted);
    let error = shop
        .refused(Op::TemplateDelete {
            name: "first".into(),
            id: None,
        })
        .await;
    assert_eq!(error.code, ErrorCode::NotFound);
    assert_eq!(
        shop.create(shipped("third")).await.status,
        TemplateStatus::Pending
    );

    // The limit is per business.
    let other = lab.business("3003", "15550003003", false).await;
    other.create(shipped("first")).await;
    other.create(shipped("second")).await;
    lab.stop().await;
}

async fn listing_filters_and_pages_both_ways(backend: Backend) {
    let lab = backend.start(TemplatePolicy::default()).await;
    let shop = lab.business("3004", "15550003004", false).await;
    let mut made = Vec::new();
    for (name, language, category) in [
        ("order_shipped", "en_US", "UTILITY"),
        ("order_delayed", "en_US", "UTILITY"),
        ("summer_news", "en_US", "MARKETING"),
        ("order_shipped", "es", "UTILITY"),
        ("login_code", "en_US", "AUTHENTICATION"),
    ] {
        let body = "Here is a short message from the shop about something.";
        made.push(
            shop.create(definition(name, language, category, body))
                .await,
        );
    }
    let ids = |page: &[TemplateInfo]| page.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    let all = ids(&made);
    // Another business's templates never show up.
    let other = lab.business("3005", "15550003005", false).await;
    other.create(shipped("order_other")).await;

    // Forward, two at a time.
    let page = |after, before| TemplateQuery {
        after,
        before,
        limit: 2,
        ..TemplateQuery::default()
    };
    let (first, has_before, has_after) = shop.list(page(None, None)).await;
    assert_eq!(
        (ids(&first), has_before, has_after),
        (all[0..2].to_vec(), false, true)
    );
    let (second, has_before, has_after) = shop.list(page(Some(first[1].seq), None)).await;
    assert_eq!(
        (ids(&second), has_before, has_after),
        (all[2..4].to_vec(), true, true)
    );
    let (third, has_before, has_after) = shop.list(page(Some(second[1].seq), None)).await;
    assert_eq!(
        (ids(&third), has_before, has_after),
        (all[4..].to_vec(), true, false)
    );

    // Backward from the last page.
    let (back, has_before, has_after) = shop.list(page(None, Some(third[0].seq))).await;
    assert_eq!(
        (ids(&back), has_before, has_after),
        (all[2..4].to_vec(), true, true)
    );
    let (back, has_before, has_after) = shop.list(page(None, Some(back[0].seq))).await;
    assert_eq!(
        (ids(&back), has_before, has_after),
        (all[0..2].to_vec(), false, true)
    );

    // A limit of 0 is the default page; filters combine.
    let (everything, _, has_after) = shop.list(TemplateQuery::default()).await;
    assert_eq!((ids(&everything), has_after), (all.clone(), false));
    let (orders, ..) = shop
        .list(TemplateQuery {
            name: Some("order".into()),
            language: Some("en_US".into()),
            ..TemplateQuery::default()
        })
        .await;
    assert_eq!(ids(&orders), vec![all[0].clone(), all[1].clone()]);
    let (marketing, ..) = shop
        .list(TemplateQuery {
            category: Some(Category::Marketing),
            ..TemplateQuery::default()
        })
        .await;
    assert_eq!(ids(&marketing), vec![all[2].clone()]);
    lab.approve(&all[4]).await;
    let (approved, ..) = shop
        .list(TemplateQuery {
            status: Some(TemplateStatus::Approved),
            ..TemplateQuery::default()
        })
        .await;
    assert_eq!(ids(&approved), vec![all[4].clone()]);

    // The operator's listing pages with `next_after` and filters by business and status.
    let (status, queue) = lab
        .admin_get("/relay/v1/admin/templates?status=PENDING&waba_id=3004&limit=3")
        .await;
    assert_eq!(status, 200, "{queue}");
    let listed: Vec<&str> = queue["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        all[0..3].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(queue["data"][0]["waba_id"], "3004");
    assert_eq!(queue["data"][0]["status"], "PENDING");
    let next = queue["next_after"].as_i64().unwrap();
    let (_, rest) = lab
        .admin_get(&format!(
            "/relay/v1/admin/templates?status=pending&waba_id=3004&after={next}"
        ))
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["data"][0]["id"], all[3].as_str());
    assert_eq!(rest["next_after"], Value::Null);

    // Mistakes in the query are 400s in the relay's error format.
    for bad in [
        "status=WAITING",
        "limit=many",
        "waba_id=abc",
        "stauts=PENDING",
    ] {
        let (status, error) = lab
            .admin_get(&format!("/relay/v1/admin/templates?{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}: {error}");
        assert_eq!(error["error"]["code"], "bad_request", "{bad}");
    }
    lab.stop().await;
}

async fn an_edit_is_a_new_version_pending_review_while_the_approved_one_stays_public(
    backend: Backend,
) {
    let lab = backend.start(TemplatePolicy::default()).await;
    let shop = lab.business("3008", "15550003008", false).await;
    let ana = lab.user("34600003008").await;
    let created = shop.create(shipped("order_shipped")).await;
    let id = created.id.clone();
    let version = |version| Op::TemplateVersion {
        business: shop.phone.clone(),
        id: id.clone(),
        version,
    };

    // Not public until approved.
    assert_eq!(ana.refused(version(1)).await.code, ErrorCode::NotFound);
    lab.approve(&id).await;
    let v1 = match ana.ask(version(1)).await {
        Ok(Reply::TemplateVersion { template }) => template,
        other => panic!("expected version 1, got {other:?}"),
    };
    assert_eq!(
        (v1.name.as_str(), v1.language.as_str()),
        ("order_shipped", "en_US")
    );
    assert_eq!((v1.version, v1.category), (1, Category::Utility));
    assert_eq!(v1.components, created.components);

    // A broken edit names its field and changes nothing.
    let error = shop
        .refused(Op::TemplateEdit {
            id: id.clone(),
            edit: json!({"components": [{"type": "BODY", "text": ""}]}),
        })
        .await;
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(
        error.message.starts_with("components[0].text: "),
        "{}",
        error.message
    );
    let error = shop
        .refused(Op::TemplateEdit {
            id: id.clone(),
            edit: json!({"name": "renamed"}),
        })
        .await;
    assert!(error.message.starts_with("name: "), "{}", error.message);

    let edited = shop
        .template(Op::TemplateEdit {
            id: id.clone(),
            edit: json!({
                "category": "MARKETING",
                "components": [{"type": "BODY", "text": "Our summer collection is in the shop now."}],
            }),
        })
        .await;
    assert_eq!(edited.version, 2);
    assert_eq!(edited.status, TemplateStatus::Pending);
    assert_eq!(edited.category, Category::Marketing);
    assert_eq!(edited.name, "order_shipped");

    // Version 1 still renders messages sent with it; version 2 is not public yet.
    assert!(matches!(
        ana.ask(version(1)).await,
        Ok(Reply::TemplateVersion { .. })
    ));
    assert_eq!(ana.refused(version(2)).await.code, ErrorCode::NotFound);
    assert_eq!(ana.refused(version(3)).await.code, ErrorCode::NotFound);
    lab.approve(&id).await;
    let v2 = match shop.ask(version(2)).await {
        Ok(Reply::TemplateVersion { template }) => template,
        other => panic!("expected version 2, got {other:?}"),
    };
    assert_eq!(v2.category, Category::Marketing);

    // Deleted, the template's approved versions still render.
    shop.ask(Op::TemplateDelete {
        name: "order_shipped".into(),
        id: Some(id.clone()),
    })
    .await
    .unwrap();
    assert!(matches!(
        ana.ask(version(2)).await,
        Ok(Reply::TemplateVersion { .. })
    ));
    let error = shop
        .refused(Op::TemplateEdit {
            id: id.clone(),
            edit: json!({"category": "UTILITY"}),
        })
        .await;
    assert_eq!(error.code, ErrorCode::Conflict);
    lab.stop().await;
}

async fn another_business_sees_none_of_it(backend: Backend) {
    let lab = backend.start(TemplatePolicy::default()).await;
    let shop = lab.business("3009", "15550003009", false).await;
    let rival = lab.business("3010", "15550003010", false).await;
    let created = shop.create(shipped("order_shipped")).await;
    lab.approve(&created.id).await;
    let id = created.id.clone();

    for op in [
        Op::TemplateGet { id: id.clone() },
        Op::TemplateEdit {
            id: id.clone(),
            edit: json!({"category": "MARKETING"}),
        },
        Op::TemplateGet {
            id: "1234567890123456".into(),
        },
    ] {
        let error = rival.refused(op).await;
        assert_eq!(error.code, ErrorCode::NotFound);
        assert!(error.message.contains("no template"), "{}", error.message);
    }
    let error = rival
        .refused(Op::TemplateDelete {
            name: "order_shipped".into(),
            id: Some(id.clone()),
        })
        .await;
    assert_eq!(error.code, ErrorCode::NotFound);
    let (listed, ..) = rival.list(TemplateQuery::default()).await;
    assert!(listed.is_empty());
    match rival
        .ask(Op::TemplateEvents {
            after: 0,
            limit: 10,
        })
        .await
    {
        Ok(Reply::TemplateEvents { events }) => assert!(events.is_empty()),
        other => panic!("expected events, got {other:?}"),
    }
    // An approved version is public, but only under its own business.
    let under_rival = Op::TemplateVersion {
        business: rival.phone.clone(),
        id: id.clone(),
        version: 1,
    };
    assert_eq!(rival.refused(under_rival).await.code, ErrorCode::NotFound);
    let under_shop = Op::TemplateVersion {
        business: shop.phone.clone(),
        id: id.clone(),
        version: 1,
    };
    assert!(matches!(
        rival.ask(under_shop).await,
        Ok(Reply::TemplateVersion { .. })
    ));

    // Untouched.
    let mine = shop.template(Op::TemplateGet { id }).await;
    assert_eq!((mine.status, mine.version), (TemplateStatus::Approved, 1));
    lab.stop().await;
}

async fn the_clock_is_the_business_clock(backend: Backend) {
    let lab = backend.start(TemplatePolicy::default()).await;
    let sandbox = lab.business("3011", "15550003011", true).await;
    let live = lab.business("3012", "15550003012", false).await;
    let ana = lab.user("34600003011").await;
    let close = |a: UnixTime, b: UnixTime| (a.0 - b.0).abs() <= 5;

    assert!(close(sandbox.now().await, UnixTime::now()));
    let (status, advanced) = lab.node.advance_clock("3011", 3 * 3600).await;
    assert_eq!(status, 200, "{advanced}");
    assert!(close(
        sandbox.now().await,
        UnixTime::now().plus_secs(3 * 3600)
    ));
    assert!(close(live.now().await, UnixTime::now()));
    assert!(close(ana.now().await, UnixTime::now()));
    lab.stop().await;
}
