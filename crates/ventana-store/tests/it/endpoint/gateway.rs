//! Cases for the gateway's businesses, numbers, tokens and webhooks.

use super::*;

pub(super) async fn a_business_is_created_once(store: &dyn GatewayStore) {
    store
        .create_business(business_record("1002", 20))
        .await
        .unwrap();
    store
        .create_business(business_record("1001", 10))
        .await
        .unwrap();
    let again = store
        .create_business(BusinessRecord {
            name: "Impostor".into(),
            ..business_record("1001", 30)
        })
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(
        store.business(&waba("1001")).await.unwrap(),
        Some(business_record("1001", 10))
    );
    assert_eq!(store.business(&waba("9999")).await.unwrap(), None);
    assert_eq!(
        store.businesses().await.unwrap(),
        [business_record("1001", 10), business_record("1002", 20)]
    );
}

pub(super) async fn a_phone_number_id_and_address_are_each_taken_once(store: &dyn GatewayStore) {
    store
        .create_business(business_record("1001", 10))
        .await
        .unwrap();
    let n = number("5001", ME);
    store.add_phone_number(n.clone()).await.unwrap();
    for taken in [number("5001", "16505550111"), number("5002", ME)] {
        let result = store.add_phone_number(taken.clone()).await;
        assert!(
            matches!(result, Err(StoreError::Conflict(_))),
            "{taken:?}: {result:?}"
        );
    }
    assert_eq!(
        store.phone_number(&"5001".parse().unwrap()).await.unwrap(),
        Some(n.clone())
    );
    assert_eq!(
        store.phone_number_by_address(&me()).await.unwrap(),
        Some(n.clone())
    );
    assert_eq!(
        store.phone_number_by_address(&phone(PEER)).await.unwrap(),
        None
    );
    assert_eq!(store.phone_numbers().await.unwrap(), [n]);
}

pub(super) async fn a_token_is_revoked_once_and_only_by_its_business(store: &dyn GatewayStore) {
    store
        .create_business(business_record("1001", 10))
        .await
        .unwrap();
    store
        .create_business(business_record("1002", 10))
        .await
        .unwrap();
    store.add_token(token("t1", "1001")).await.unwrap();
    store.add_token(token("t2", "1001")).await.unwrap();
    assert!(matches!(
        store.add_token(token("t1", "1002")).await,
        Err(StoreError::Conflict(_))
    ));

    assert!(
        !store
            .revoke_token(&waba("1002"), "t1", UnixTime(50))
            .await
            .unwrap()
    );
    assert!(
        store
            .revoke_token(&waba("1001"), "t1", UnixTime(60))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_token(&waba("1001"), "t1", UnixTime(70))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_token(&waba("1001"), "nope", UnixTime(70))
            .await
            .unwrap()
    );

    let revoked = store.token_by_hash("hash-t1").await.unwrap().unwrap();
    assert_eq!(
        revoked,
        AccessTokenRecord {
            revoked_at: Some(UnixTime(60)),
            ..token("t1", "1001")
        }
    );
    let listed: Vec<_> = store
        .tokens(&waba("1001"))
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.revoked_at))
        .collect();
    assert_eq!(
        listed,
        [
            ("t1".to_string(), Some(UnixTime(60))),
            ("t2".to_string(), None)
        ]
    );
    assert!(store.tokens(&waba("1002")).await.unwrap().is_empty());
}

pub(super) async fn webhooks_are_leased_oldest_first_to_one_node_at_a_time(
    store: &dyn GatewayStore,
) {
    assert_eq!(
        store.next_webhook_due(UnixTime(300), &[]).await.unwrap(),
        None
    );
    // Jobs arrive with the messages they report, in the same transaction.
    let reported = InboundCommit {
        account_sealed: None,
        ..inbound(1, None, vec![AppRecord::Webhook(job("late", 30, 100))])
    };
    store.commit_inbound(reported).await.unwrap();
    let first = vec![
        AppRecord::Webhook(job("b", 20, 20)),
        AppRecord::Webhook(job("a", 10, 40)),
    ];
    store.apply(&me(), first).await.unwrap();
    // The same event queued again is kept once.
    store
        .apply(&me(), vec![AppRecord::Webhook(job("a", 10, 40))])
        .await
        .unwrap();

    let ids = |jobs: Vec<WebhookJob>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        store.next_webhook_due(UnixTime(300), &[]).await.unwrap(),
        Some(UnixTime(20))
    );
    // At 30 only "b" is due; node 1 leases it for 60 s.
    assert_eq!(
        ids(crate::lease(store, "n1", UnixTime(30), 60, 10)
            .await
            .unwrap()),
        ["b"]
    );
    // At 50 "a" is due too, but "b" is node 1's: node 2 gets only "a", and then nothing.
    assert_eq!(
        crate::lease(store, "n2", UnixTime(50), 60, 10)
            .await
            .unwrap(),
        [job("a", 10, 40)]
    );
    assert!(
        crate::lease(store, "n2", UnixTime(50), 60, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Node 1 died: once its lease runs out, node 2 takes "b" over.
    assert_eq!(
        ids(crate::lease(store, "n2", UnixTime(90), 60, 10)
            .await
            .unwrap()),
        ["b"]
    );

    // A retry releases the lease and moves the job to its next attempt.
    crate::retry(store, "n2", "a", 1, UnixTime(200), "503 from the endpoint")
        .await
        .unwrap();
    assert_eq!(
        ids(crate::lease(store, "n1", UnixTime(149), 60, 10)
            .await
            .unwrap()),
        ["late"]
    );
    let retried = crate::lease(store, "n1", UnixTime(200), 60, 10)
        .await
        .unwrap();
    assert_eq!(
        retried[0],
        WebhookJob {
            attempts: 1,
            next_attempt_at: UnixTime(200),
            // Failing since the first failed attempt (`retry` says it was made at 200).
            failing_since: Some(UnixTime(200)),
            ..job("a", 10, 40)
        }
    );
    assert_eq!(ids(retried), ["a", "b"]);

    crate::delivered(store, "b").await.unwrap();
    crate::delivered(store, "late").await.unwrap();
    assert_eq!(
        store.next_webhook_due(UnixTime(300), &[]).await.unwrap(),
        Some(UnixTime(200))
    );
    crate::delivered(store, "a").await.unwrap();
    assert_eq!(
        store.next_webhook_due(UnixTime(300), &[]).await.unwrap(),
        None
    );
}

pub(super) async fn an_endpoint_is_owned_by_one_node_until_its_lease_runs_out(
    store: &dyn GatewayStore,
) {
    let number = me();
    assert!(
        store
            .acquire_endpoint(&number, "n1", UnixTime(0), 15)
            .await
            .unwrap()
    );
    // Renewing is fine; another node is refused while the lease lasts.
    assert!(
        store
            .acquire_endpoint(&number, "n1", UnixTime(10), 15)
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_endpoint(&number, "n2", UnixTime(20), 15)
            .await
            .unwrap()
    );
    // Node 1 stopped renewing (it died): at 25 the lease is free for node 2.
    assert!(
        store
            .acquire_endpoint(&number, "n2", UnixTime(25), 15)
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_endpoint(&number, "n1", UnixTime(26), 15)
            .await
            .unwrap()
    );
    // Giving it up is immediate, and only by its holder.
    store.release_endpoint(&number, "n1").await.unwrap();
    assert!(
        !store
            .acquire_endpoint(&number, "n1", UnixTime(27), 15)
            .await
            .unwrap()
    );
    store.release_endpoint(&number, "n2").await.unwrap();
    assert!(
        store
            .acquire_endpoint(&number, "n1", UnixTime(28), 15)
            .await
            .unwrap()
    );
}
