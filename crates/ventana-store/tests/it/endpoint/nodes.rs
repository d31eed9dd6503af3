//! PostgreSQL only: several gateway nodes sharing one database, each a store with its own
//! pool connected to the same schema.

use super::*;
use crate::postgres::{GATEWAY_SCHEMA, TestDb, expected_migrations, recorded_migrations};
use tokio::task::JoinSet;
use ventana_store::postgres::PgEndpointStore;

/// Two nodes on a fresh database, or `None` if PostgreSQL is not configured.
async fn two_nodes() -> Option<(TestDb, PgEndpointStore, PgEndpointStore)> {
    let db = TestDb::create().await?;
    let (a, b) = (db.endpoint().await, db.endpoint().await);
    Some((db, a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_leased_by_two_nodes_go_to_one_node_each() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let jobs: Vec<AppRecord> = (0..60)
        .map(|n| AppRecord::Webhook(job(&format!("j{n:02}"), n, 0)))
        .collect();
    a.apply(&me(), jobs).await.unwrap();
    let mut leasers = JoinSet::new();
    for n in 0..6 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        leasers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let leased = crate::lease(&node, &format!("n{n}"), UnixTime(10), 60, 4)
                    .await
                    .unwrap();
                if leased.is_empty() {
                    return mine;
                }
                // Each batch comes oldest first.
                assert!(leased.windows(2).all(|w| w[0].created_at < w[1].created_at));
                mine.extend(leased.into_iter().map(|j| j.id));
            }
        });
    }
    let mut leased: Vec<String> = leasers.join_all().await.into_iter().flatten().collect();
    leased.sort();
    let all: Vec<String> = (0..60).map(|n| format!("j{n:02}")).collect();
    assert_eq!(leased, all, "every job leased once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_session_writes_on_two_nodes_exactly_one_wins() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    a.commit_outbound(outbound(1, vec![session("s", "one", None)], None))
        .await
        .unwrap();
    let mut writers = JoinSet::new();
    for n in 0..8 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        writers.spawn(async move {
            let write = outbound(10 + n, vec![session("s", &format!("w{n}"), Some(1))], None);
            (n, node.commit_outbound(write).await)
        });
    }
    let outcomes = writers.join_all().await;
    let winners: Vec<u32> = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for (_, outcome) in &outcomes {
        assert!(
            matches!(outcome, Ok(()) | Err(StoreError::Conflict(_))),
            "{outcome:?}"
        );
    }
    let winner = format!("w{}", winners[0]);
    assert_eq!(
        versions(&b).await,
        [("s".to_string(), 2, winner.into_bytes())]
    );
    // The losers' outbox rows went with their transactions.
    assert_eq!(a.outbox(&me()).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_processed_on_two_nodes_at_once_is_committed_once() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    a.save_identity(identity(ME, b"before")).await.unwrap();
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let record = AppRecord::Message(message(7, Direction::Inbound, 100, "received"));
            node.commit_inbound(inbound(7, None, vec![record]))
                .await
                .unwrap()
        });
    }
    let outcomes = tasks.join_all().await;
    let committed = outcomes
        .iter()
        .filter(|o| **o == InboundOutcome::Committed)
        .count();
    assert_eq!(committed, 1, "{outcomes:?}");
    assert_eq!(b.messages(&me(), 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_contested_by_several_nodes_has_one_holder() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let held = node
                .acquire_endpoint(&me(), &format!("n{n}"), UnixTime(0), 15)
                .await
                .unwrap();
            (n, held)
        });
    }
    let holders: Vec<u32> = tasks
        .join_all()
        .await
        .into_iter()
        .filter(|(_, held)| *held)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    // Only the holder renews.
    let holder = format!("n{}", holders[0]);
    assert!(
        b.acquire_endpoint(&me(), &holder, UnixTime(5), 15)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_moved_on_two_nodes_at_once_never_go_backwards() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let sent = message(1, Direction::Outbound, 1, "accepted");
    a.apply(&me(), vec![AppRecord::Message(sent)])
        .await
        .unwrap();
    let mut tasks = JoinSet::new();
    for n in 0..16 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let status = ["sent", "delivered", "read", "failed"][n % 4];
        tasks.spawn(async move {
            let record = AppRecord::Status {
                id: mid(1),
                status: MessageStatus::parse(status).unwrap(),
                announce: None,
            };
            node.apply(&me(), vec![record]).await.unwrap();
        });
    }
    tasks.join_all().await;
    assert_eq!(statuses(&a).await, [(1, "read".to_string())]);
}

#[tokio::test]
async fn reconnecting_keeps_everything_and_applies_no_migration_twice() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.endpoint().await;
    store.save_identity(identity(ME, b"account")).await.unwrap();
    store
        .commit_outbound(outbound(1, vec![session("s", "one", None)], None))
        .await
        .unwrap();
    store
        .create_business(business_record("1001", 10))
        .await
        .unwrap();
    drop(store);
    let client = db.client().await;
    let migrated = recorded_migrations(&client, GATEWAY_SCHEMA).await;
    assert_eq!(migrated, expected_migrations("endpoint"));

    let store = db.endpoint().await;
    assert_eq!(recorded_migrations(&client, GATEWAY_SCHEMA).await, migrated);
    assert_kept_everything(&store).await;
}
