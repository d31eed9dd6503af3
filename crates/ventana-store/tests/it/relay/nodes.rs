//! PostgreSQL only: several relay nodes sharing one database, each a store with its own pool
//! (and wake-up listener) connected to the same schema.

use super::*;
use crate::postgres::{RELAY_SCHEMA, TestDb, expected_migrations, recorded_migrations};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use ventana_store::LedgerStore;
use ventana_store::postgres::PgRelayStore;

/// Two nodes on a fresh database, or `None` if PostgreSQL is not configured.
async fn two_nodes() -> Option<(TestDb, PgRelayStore, PgRelayStore)> {
    let db = TestDb::create().await?;
    let (a, b) = (db.relay().await, db.relay().await);
    Some((db, a, b))
}

async fn contacts_recorded(db: &TestDb) -> i64 {
    let client = db.client().await;
    let sql = format!("SELECT count(*) FROM {RELAY_SCHEMA}.consent_events WHERE event = 'contact'");
    client.query_one(&sql, &[]).await.unwrap().get(0)
}

async fn next(w: &mut broadcast::Receiver<Wakeup>) -> Wakeup {
    tokio::time::timeout(Duration::from_secs(10), w.recv())
        .await
        .expect("no wake-up within 10 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_submission_on_two_nodes_are_accepted_once() {
    let Some((db, a, b)) = two_nodes().await else {
        return;
    };
    let (u, biz) = (user(&a, USER, 1).await, business(&b, 2).await);
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        // Retries arrive at different wall times; all must get the first one's answer.
        let retry = message(1, &u, &biz, &[1, 2], 1000 + n);
        tasks.spawn(async move { node.accept(retry).await.unwrap().unwrap() });
    }
    let answers = tasks.join_all().await;
    let first: Vec<_> = answers.iter().filter(|a| !a.duplicate).collect();
    assert_eq!(first.len(), 1, "{answers:?}");
    for answer in &answers {
        assert_eq!(answer.accepted_at, first[0].accepted_at);
        assert_eq!(answer.devices, [DeviceId(1), DeviceId(2)]);
    }
    for d in [1, 2] {
        assert_eq!(queued(&a, &biz, d).await, [mid(1).to_string()]);
    }
    assert_eq!(contacts_recorded(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_messages_on_two_nodes_make_one_contact() {
    let Some((db, a, b)) = two_nodes().await else {
        return;
    };
    let (u, biz) = (user(&a, USER, 1).await, business(&a, 1).await);
    let mut tasks = JoinSet::new();
    for n in 1..=8 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let first = message(n, &u, &biz, &[1], 1000);
        tasks.spawn(async move { node.accept(first).await.unwrap().unwrap() });
    }
    assert!(tasks.join_all().await.iter().all(|a| !a.duplicate));
    assert_eq!(contacts_recorded(&db).await, 1);
    let rel = b.relationship(&biz, &u).await.unwrap().unwrap();
    assert_eq!(rel.first_contact_at, UnixTime(1000));
    assert_eq!(queued(&b, &biz, 1).await.len(), 8);
}

/// A device reads its queue with `seq > last seen` while envelopes commit on two nodes: an
/// envelope that got its number early but committed late must not be skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_paging_while_two_nodes_accept_misses_nothing() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    const SENDERS: u32 = 30;
    let biz = business(&a, 1).await;
    let mut senders = Vec::new();
    for n in 0..SENDERS {
        senders.push(user(&a, &format!("3460010{n:04}"), 1).await);
    }
    let mut tasks = JoinSet::new();
    for (n, sender) in (1..).zip(senders) {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let biz = biz.clone();
        tasks.spawn(async move {
            node.accept(message(n, &sender, &biz, &[1], 1000))
                .await
                .unwrap()
                .unwrap()
        });
    }
    let mut seen = Vec::new();
    let mut after = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < SENDERS as usize {
        assert!(tokio::time::Instant::now() < deadline, "saw only {seen:?}");
        for e in a.pending(&biz, DeviceId(1), after, 4).await.unwrap() {
            assert!(e.seq > after);
            after = e.seq;
            seen.push(e.id);
        }
        tokio::task::yield_now().await;
    }
    tasks.join_all().await;
    seen.sort();
    assert_eq!(seen, (1..=SENDERS).map(mid).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_on_two_nodes_never_share_a_key() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let ids: Vec<String> = (0..20).map(|n| format!("k{n:02}")).collect();
    let keys: Vec<&str> = ids.iter().map(String::as_str).collect();
    a.add_device(device(user_account(USER), "a", &keys, None))
        .await
        .unwrap();
    let mut tasks = JoinSet::new();
    for n in 0..30 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move { node.claim_pre_keys(&phone(USER), None).await.unwrap() });
    }
    let mut claimed: Vec<String> = tasks
        .join_all()
        .await
        .into_iter()
        .flatten()
        .map(|claim| claim.key.key_id)
        .collect();
    claimed.sort();
    // Thirty claims for twenty keys (and no fallback key): each key went exactly once.
    assert_eq!(claimed, ids);
    assert_eq!(
        b.one_time_key_count(&phone(USER), DeviceId(1))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_wakeup_committed_on_one_node_reaches_every_node() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let (mut on_a, mut on_b) = (a.wakeups(), b.wakeups());
    let (u, biz) = (user(&a, USER, 2).await, business(&a, 1).await);
    // Refused: nothing is published.
    refused(&b, message(1, &biz, &u, &[1, 2], 1000)).await;

    accepted(&a, message(2, &u, &biz, &[1], 1000)).await;
    let queued_up = Wakeup {
        account: biz.clone(),
        device: DeviceId(1),
        reason: WakeReason::Envelopes,
    };
    assert_eq!(next(&mut on_a).await, queued_up);
    assert_eq!(next(&mut on_b).await, queued_up);

    b.upload_keys(&u, DeviceId(2), &[], Some(&key("f2")), 1000)
        .await
        .unwrap();
    b.claim_pre_keys(&u, Some(&[DeviceId(2)])).await.unwrap();
    let claimed = Wakeup {
        account: u.clone(),
        device: DeviceId(2),
        reason: WakeReason::KeysClaimed,
    };
    assert_eq!(next(&mut on_a).await, claimed);
    assert_eq!(next(&mut on_b).await, claimed);

    b.set_blocked(&u, &biz, false, UnixTime(5)).await.unwrap();
    for device in [1, 2] {
        let rescan = Wakeup {
            account: u.clone(),
            device: DeviceId(device),
            reason: WakeReason::Rescan,
        };
        assert_eq!(next(&mut on_a).await, rescan);
        assert_eq!(next(&mut on_b).await, rescan);
    }
    assert!(on_a.try_recv().is_err() && on_b.try_recv().is_err());
}

/// The listener's connection is cut (a restarted server, a network blip): it reconnects by
/// itself. Wake-ups sent while it was away are lost by design (the relay re-reads its queues
/// periodically); those sent after it is back arrive.
#[tokio::test]
async fn the_wakeup_listener_reconnects_after_its_connection_drops() {
    let Some((db, a, b)) = two_nodes().await else {
        return;
    };
    let mut on_a = a.wakeups();
    let (u, biz) = (user(&b, USER, 1).await, business(&b, 1).await);
    let admin = db.client().await;
    let cut: i64 = admin
        .query_one(
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND query = 'LISTEN {RELAY_SCHEMA}_wakeups'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cut, 2, "both nodes' listeners");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for n in 1.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no wake-up after reconnecting"
        );
        accepted(&b, message(n, &u, &biz, &[1], 1000)).await;
        if let Ok(woken) = tokio::time::timeout(Duration::from_millis(300), on_a.recv()).await {
            assert_eq!(woken.unwrap().reason, WakeReason::Envelopes);
            break;
        }
    }
}

#[tokio::test]
async fn reconnecting_keeps_everything_and_applies_no_migration_twice() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.relay().await;
    let (u, b) = (user(&store, USER, 1).await, business(&store, 1).await);
    accepted(&store, message(1, &u, &b, &[1], 1000)).await;
    drop(store);
    let client = db.client().await;
    let migrated = recorded_migrations(&client, RELAY_SCHEMA).await;
    assert_eq!(migrated, expected_migrations("relay"));

    let store = db.relay().await;
    assert_eq!(recorded_migrations(&client, RELAY_SCHEMA).await, migrated);
    assert_eq!(store.devices(&b).await.unwrap().len(), 1);
    assert_eq!(queued(&store, &b, 1).await, [mid(1).to_string()]);
    // The relationship survived: the business may still answer.
    accepted(&store, message(2, &b, &u, &[1], 1001)).await;
}

#[tokio::test]
async fn consent_is_audited_and_a_block_records_no_relationship() {
    let Some(store) = crate::postgres::relay().await else {
        return;
    };
    let (u, b) = (user(&*store, USER, 1).await, business(&*store, 1).await);
    store
        .set_blocked(&u, &b, true, UnixTime(900))
        .await
        .unwrap();
    store
        .set_blocked(&u, &b, true, UnixTime(901))
        .await
        .unwrap();
    store
        .set_blocked(&u, &b, false, UnixTime(950))
        .await
        .unwrap();
    let client = store.db().client().await;
    let relationships = async || -> i64 {
        let sql = format!("SELECT count(*) FROM {RELAY_SCHEMA}.relationships");
        client.query_one(&sql, &[]).await.unwrap().get(0)
    };
    assert_eq!(relationships().await, 0);

    accepted(&*store, message(1, &u, &b, &[1], 1000)).await;
    accepted(&*store, message(2, &u, &b, &[1], 2000)).await;
    assert_eq!(relationships().await, 1);
    let sql = format!(
        "SELECT business, user_address, event, at, origin FROM {RELAY_SCHEMA}.consent_events
         ORDER BY seq"
    );
    let events: Vec<(String, String, String, i64, Option<String>)> = client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect();
    assert_eq!(events, expected_consent_events());
}

/// Two nodes metering the same delivery at once (a retried receipt, two devices of the user
/// reporting it): one entry, and both answer with its pricing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_reported_on_two_nodes_at_once_is_charged_once() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    a.add_policy(ventana_core::pricing::EXAMPLE_POLICY, UnixTime(1))
        .await
        .unwrap();
    let (u, biz) = super::billing::a_window_and_two_business_messages(&a).await;
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let (u, biz) = (u.clone(), biz.clone());
        tasks.spawn(async move {
            node.meter_delivery(
                &biz,
                &u,
                &[mid(3), mid(2)],
                UnixTime(1_000 + WINDOW_SECS + 60 + n),
            )
            .await
            .unwrap()
        });
    }
    let answers = tasks.join_all().await;
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let entries = b.ledger_entries(&waba(WABA), 0, 100).await.unwrap();
    assert_eq!(entries.len(), 2);
    ventana_core::pricing::ledger::verify(&waba(WABA), &entries).unwrap();
}
