//! Cases for the webhook queue: order within a message, receivers without room, a node's
//! own stale leases, the delivery log, the dead-letter queue, replay, redrive, pruning and
//! where events go.

use super::*;
use ventana_store::webhook::{
    CallbackChange, LeaseRequest, ReplayFrom, WebhookAttempt, WebhookOutcome, WebhookRouting,
    WebhookState, route_key,
};

fn keyed(id: &str, key: Option<&str>, number: Option<&str>) -> WebhookJob {
    WebhookJob {
        order_key: key.map(str::to_owned),
        phone_number_id: number.map(|n| n.parse().unwrap()),
        ..job(id, 10, 10)
    }
}

async fn queue(store: &dyn GatewayStore, jobs: Vec<WebhookJob>) {
    store
        .apply(&me(), jobs.into_iter().map(AppRecord::Webhook).collect())
        .await
        .unwrap();
}

async fn lease_ids(store: &dyn GatewayStore, node: &str, now: i64) -> Vec<String> {
    let mut ids: Vec<String> = crate::lease(store, node, UnixTime(now), 15, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    ids.sort();
    ids
}

async fn settle(store: &dyn GatewayStore, id: &str, at_ms: i64, outcome: WebhookOutcome) {
    let error = (outcome != WebhookOutcome::Delivered).then_some("HTTP 503");
    let attempt = WebhookAttempt {
        at_ms,
        http_status: Some(if error.is_some() { 503 } else { 200 }),
        ..crate::attempt(id, error, None)
    };
    store.settle_webhook(attempt, 1, outcome).await.unwrap();
}

pub(super) async fn the_statuses_of_one_message_are_leased_one_at_a_time_in_order(
    store: &dyn GatewayStore,
) {
    queue(
        store,
        vec![
            keyed("m1.sent", Some("status/m1"), None),
            keyed("inbound", None, None),
            keyed("m1.delivered", Some("status/m1"), None),
            keyed("m2.sent", Some("status/m2"), None),
            keyed("m1.read", Some("status/m1"), None),
        ],
    )
    .await;
    // Only the first of each key; events without a key are not held back.
    assert_eq!(
        lease_ids(store, "n1", 20).await,
        ["inbound", "m1.sent", "m2.sent"]
    );
    // Another node finds nothing: the followers wait for their heads, which are leased.
    assert!(lease_ids(store, "n2", 20).await.is_empty());
    // A head that failed holds its followers back until it is delivered.
    crate::retry(store, "n1", "m1.sent", 1, UnixTime(30), "HTTP 503")
        .await
        .unwrap();
    assert!(lease_ids(store, "n2", 25).await.is_empty());
    // The next time anything can be leased is the retry's, not the held-back followers'
    // (due since 10) nor the leased ones' (until 35).
    assert_eq!(
        store.next_webhook_due(UnixTime(25), &[]).await.unwrap(),
        Some(UnixTime(30))
    );
    assert_eq!(lease_ids(store, "n2", 30).await, ["m1.sent"]);
    crate::delivered(store, "m1.sent").await.unwrap();
    assert_eq!(lease_ids(store, "n1", 31).await, ["m1.delivered"]);
    crate::retry(store, "n1", "m1.delivered", 1, UnixTime(33), "HTTP 503")
        .await
        .unwrap();
    assert_eq!(lease_ids(store, "n1", 33).await, ["m1.delivered"]);
    // A dead head lets the next one go, and hands it its failing time: the follower dies
    // after its own next failure, not a whole retry period later.
    settle(store, "m1.delivered", 34_000, WebhookOutcome::Dead).await;
    let read = crate::lease(store, "n1", UnixTime(34), 15, 10)
        .await
        .unwrap();
    assert_eq!(
        read.iter()
            .map(|j| (j.id.as_str(), j.failing_since))
            .collect::<Vec<_>>(),
        [("m1.read", Some(UnixTime(33)))]
    );
}

pub(super) async fn a_late_failure_leaves_another_nodes_lease_alone(store: &dyn GatewayStore) {
    queue(store, vec![job("x", 10, 10)]).await;
    assert_eq!(lease_ids(store, "n1", 20).await, ["x"]);
    // Node 1's lease ran out and node 2 took the job; node 1's late failure changes nothing.
    assert_eq!(lease_ids(store, "n2", 40).await, ["x"]);
    crate::retry(store, "n1", "x", 1, UnixTime(41), "timed out")
        .await
        .unwrap();
    assert!(
        lease_ids(store, "n3", 42).await.is_empty(),
        "node 2's lease was ended"
    );
    // A delivery is a delivery, whoever reports it.
    crate::delivered(store, "x").await.unwrap();
    assert!(lease_ids(store, "n3", 100).await.is_empty());
    assert_eq!(
        store.next_webhook_due(UnixTime(100), &[]).await.unwrap(),
        None
    );
}

pub(super) async fn a_dead_status_is_not_redriven_after_a_later_one_was_delivered(
    store: &dyn GatewayStore,
) {
    queue(
        store,
        vec![
            keyed("m.sent", Some("status/m"), None),
            keyed("m.delivered", Some("status/m"), None),
            keyed("n.sent", Some("status/n"), None),
        ],
    )
    .await;
    assert_eq!(lease_ids(store, "n1", 20).await, ["m.sent", "n.sent"]);
    settle(store, "m.sent", 20_000, WebhookOutcome::Dead).await;
    settle(store, "n.sent", 20_000, WebhookOutcome::Dead).await;
    assert_eq!(lease_ids(store, "n1", 21).await, ["m.delivered"]);
    crate::delivered(store, "m.delivered").await.unwrap();
    // `m.sent` now would arrive after `m.delivered`: it stays dead; `n.sent` goes again.
    assert_eq!(
        store
            .redrive_webhooks(&waba("1001"), UnixTime(30))
            .await
            .unwrap(),
        1
    );
    assert_eq!(lease_ids(store, "n1", 30).await, ["n.sent"]);
}

pub(super) async fn the_jobs_of_a_receiver_without_room_are_passed_over(store: &dyn GatewayStore) {
    queue(
        store,
        vec![
            keyed("a1", None, Some("2001")),
            keyed("b1", None, Some("2002")),
            keyed("w1", None, None),
        ],
    )
    .await;
    let skip = [
        route_key(&waba("1001"), Some(&"2001".parse().unwrap())),
        route_key(&waba("1001"), None),
    ];
    // Nothing of the skipped routes counts as due either.
    assert_eq!(
        store.next_webhook_due(UnixTime(20), &skip).await.unwrap(),
        Some(UnixTime(10))
    );
    let leased = store
        .lease_webhooks(LeaseRequest {
            node: "n1",
            now: UnixTime(20),
            lease_secs: 15,
            limit: 10,
            per_route: 10,
            skip: &skip,
        })
        .await
        .unwrap();
    assert_eq!(
        leased.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["b1"]
    );
    assert_eq!(leased[0].phone_number_id, Some("2002".parse().unwrap()));
    assert_eq!(
        store.next_webhook_due(UnixTime(20), &skip).await.unwrap(),
        Some(UnixTime(35))
    );
    // Released jobs are free at once, for this node or another.
    assert_eq!(lease_ids(store, "n1", 20).await, ["a1", "w1"]);
    store
        .release_webhooks("n1", &["a1".to_owned(), "b1".to_owned()])
        .await
        .unwrap();
    assert_eq!(lease_ids(store, "n2", 20).await, ["a1", "b1"]);
}

pub(super) async fn a_lease_takes_at_most_so_many_jobs_of_one_route(store: &dyn GatewayStore) {
    queue(
        store,
        vec![
            keyed("a1", None, Some("2001")),
            keyed("a2", None, Some("2001")),
            keyed("a3", None, Some("2001")),
            keyed("b1", None, Some("2002")),
            keyed("w1", None, None),
        ],
    )
    .await;
    let lease = |now: i64| {
        store.lease_webhooks(LeaseRequest {
            node: "n1",
            now: UnixTime(now),
            lease_secs: 15,
            limit: 10,
            per_route: 2,
            skip: &[],
        })
    };
    let mut first: Vec<String> = lease(20).await.unwrap().into_iter().map(|j| j.id).collect();
    first.sort();
    assert_eq!(first, ["a1", "a2", "b1", "w1"]);
    let second: Vec<String> = lease(20).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(second, ["a3"]);
}

pub(super) async fn a_node_takes_back_its_own_leases_at_start(store: &dyn GatewayStore) {
    queue(
        store,
        vec![job("x", 10, 10), job("y", 11, 10), job("z", 12, 10)],
    )
    .await;
    let first = crate::lease(store, "n1", UnixTime(20), 15, 2)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(lease_ids(store, "n2", 20).await, ["z"]);
    // Node 1 restarts: its leases are its own to give back; node 2's stay.
    assert_eq!(store.release_node_webhooks("n1").await.unwrap(), 2);
    assert_eq!(lease_ids(store, "n1", 21).await, ["x", "y"]);
    assert!(lease_ids(store, "n3", 21).await.is_empty());
}

pub(super) async fn attempts_are_logged_and_dead_events_redriven(store: &dyn GatewayStore) {
    queue(store, vec![job("e1", 10, 10), job("e2", 11, 10)]).await;
    lease_ids(store, "n1", 20).await;
    settle(
        store,
        "e1",
        20_000,
        WebhookOutcome::Retry {
            next: UnixTime(21),
            now: UnixTime(20),
        },
    )
    .await;
    settle(store, "e2", 20_500, WebhookOutcome::Delivered).await;
    lease_ids(store, "n1", 21).await;
    settle(store, "e1", 21_000, WebhookOutcome::Dead).await;

    let log = store.webhook_log(&waba("1001"), None, 10).await.unwrap();
    let seen: Vec<(&str, Option<u16>)> = log
        .iter()
        .map(|e| (e.attempt.event_id.as_str(), e.attempt.http_status))
        .collect();
    assert_eq!(
        seen,
        [("e1", Some(503)), ("e2", Some(200)), ("e1", Some(503))]
    );
    assert_eq!(log[0].attempt.error.as_deref(), Some("HTTP 503"));
    // Pages go back from the last entry seen.
    let older = store
        .webhook_log(&waba("1001"), Some(log[1].seq), 10)
        .await
        .unwrap();
    assert_eq!(older, log[2..]);
    assert!(
        store
            .webhook_log(&waba("1002"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let dead = store
        .webhook_events(&waba("1001"), WebhookState::Dead, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "e1");
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(
        store.next_webhook_due(UnixTime(300), &[]).await.unwrap(),
        None
    );
    // Redriven: queued again under its id, from its first attempt.
    assert_eq!(
        store
            .redrive_webhooks(&waba("1001"), UnixTime(100))
            .await
            .unwrap(),
        1
    );
    let again = crate::lease(store, "n2", UnixTime(100), 15, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (
            again[0].id.as_str(),
            again[0].attempts,
            again[0].failing_since
        ),
        ("e1", 0, None)
    );
}

pub(super) async fn settled_events_are_replayed_from_a_time_or_an_event(store: &dyn GatewayStore) {
    queue(
        store,
        vec![job("p1", 10, 10), job("p2", 20, 10), job("p3", 30, 10)],
    )
    .await;
    for id in lease_ids(store, "n1", 40).await {
        settle(store, &id, 40_000, WebhookOutcome::Delivered).await;
    }
    assert_eq!(
        store
            .replay_webhooks(&waba("1001"), ReplayFrom::Time(UnixTime(20)), UnixTime(50))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(lease_ids(store, "n1", 50).await, ["p2", "p3"]);
    settle(store, "p2", 50_000, WebhookOutcome::Delivered).await;
    settle(store, "p3", 50_000, WebhookOutcome::Delivered).await;
    // From an event: it and every one queued after it.
    assert_eq!(
        store
            .replay_webhooks(&waba("1001"), ReplayFrom::Event("p2".into()), UnixTime(60))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(lease_ids(store, "n1", 60).await, ["p2", "p3"]);
    // An event that does not exist, or is another business's, is no place to start.
    for (business, event) in [("1001", "nope"), ("1002", "p1")] {
        assert_eq!(
            store
                .replay_webhooks(
                    &waba(business),
                    ReplayFrom::Event(event.into()),
                    UnixTime(60)
                )
                .await
                .unwrap(),
            None
        );
    }
}

pub(super) async fn settled_events_and_the_log_are_pruned_after_their_retention(
    store: &dyn GatewayStore,
) {
    queue(
        store,
        vec![job("old", 10, 10), job("new", 11, 10), job("gone", 12, 10)],
    )
    .await;
    lease_ids(store, "n1", 20).await;
    settle(store, "old", 20_000, WebhookOutcome::Delivered).await;
    settle(store, "gone", 20_000, WebhookOutcome::Dead).await;
    settle(store, "new", 90_000, WebhookOutcome::Delivered).await;
    // Delivered ones and the log go at 50; dead ones are kept longer, until 10.
    assert_eq!(
        store
            .prune_webhooks(UnixTime(50), UnixTime(10))
            .await
            .unwrap(),
        3
    );
    let replayed = store
        .replay_webhooks(&waba("1001"), ReplayFrom::Time(UnixTime(0)), UnixTime(100))
        .await
        .unwrap();
    assert_eq!(replayed, Some(2));
    assert_eq!(lease_ids(store, "n1", 100).await, ["gone", "new"]);
    assert_eq!(
        store
            .webhook_log(&waba("1001"), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub(super) async fn events_go_to_the_number_then_the_waba_then_the_app(store: &dyn GatewayStore) {
    store
        .create_business(business_record("1001", 10))
        .await
        .unwrap();
    store.add_phone_number(number("2001", ME)).await.unwrap();
    let number_id: ventana_core::PhoneNumberId = "2001".parse().unwrap();
    let routing = |n: Option<&ventana_core::PhoneNumberId>| {
        let n = n.cloned();
        async move {
            store
                .webhook_routing(&waba("1001"), n.as_ref())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let app = routing(Some(&number_id)).await;
    assert_eq!(app.callback(), Ok("https://example.invalid/hook"));
    assert!(app.sandbox, "the business's sandbox flag comes along");

    let changed = |change: CallbackChange| async move {
        assert!(store.change_callback(&waba("1001"), change).await.unwrap());
    };
    changed(CallbackChange::Subscribe {
        waba_callback: Some(("https://waba.invalid/".into(), b"t".to_vec())),
    })
    .await;
    changed(CallbackChange::Number {
        id: number_id.clone(),
        callback: Some(("https://number.invalid/".into(), b"t".to_vec())),
    })
    .await;
    assert_eq!(
        routing(Some(&number_id)).await.callback(),
        Ok("https://number.invalid/")
    );
    assert_eq!(routing(None).await.callback(), Ok("https://waba.invalid/"));
    changed(CallbackChange::App {
        callback: Some("https://app.invalid/".into()),
        verify_token_sealed: b"v".to_vec(),
        fields: Some("messages".into()),
    })
    .await;
    changed(CallbackChange::Number {
        id: number_id.clone(),
        callback: None,
    })
    .await;
    assert_eq!(
        routing(Some(&number_id)).await.callback(),
        Ok("https://waba.invalid/")
    );
    changed(CallbackChange::Unsubscribe).await;
    let off: WebhookRouting = routing(Some(&number_id)).await;
    assert!(off.callback().is_err());
    assert_eq!(off.app_callback.as_deref(), Some("https://app.invalid/"));
    assert_eq!(off.fields.as_deref(), Some("messages"));
    changed(CallbackChange::Subscribe {
        waba_callback: None,
    })
    .await;
    assert_eq!(routing(None).await.callback(), Ok("https://app.invalid/"));
    // No such business, or a number of another.
    assert!(
        !store
            .change_callback(&waba("1002"), CallbackChange::Unsubscribe)
            .await
            .unwrap()
    );
    assert_eq!(
        store.webhook_routing(&waba("1002"), None).await.unwrap(),
        None
    );
}
