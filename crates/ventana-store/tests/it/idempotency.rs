//! Idempotency keys (part of every `GatewayStore`): a first claim, a claim that finds the key
//! in use, completing, giving up and taking over by compare-and-swap, retention and pruning.
//! Two PostgreSQL nodes claiming one key at once are at the end.

use crate::mid;
use ventana_core::{IdempotencyKey, PhoneNumberId, UnixTime};
use ventana_store::GatewayStore;
use ventana_store::idempotency::{
    ClaimOutcome, IdempotencyRecord, IdempotencyState, NewClaim, StoredResponse,
};

/// Every idempotency case against one backend.
macro_rules! idempotency_cases {
    ($backend:ident, $open:path) => {
        conformance!(
            $backend,
            $open,
            [
                a_new_key_is_claimed_in_progress_with_its_message_id,
                a_key_in_use_is_found_as_it_stands_and_left_untouched,
                keys_of_different_numbers_are_apart,
                a_completed_key_keeps_its_answer_and_completes_once,
                only_the_current_attempt_completes_or_gives_up,
                a_claim_is_taken_over_only_once_expired_and_only_once,
                a_given_up_claim_is_taken_over_at_once_with_its_message_id,
                a_key_past_retention_counts_as_new,
                pruning_deletes_only_keys_past_retention,
            ]
        );
    };
}

idempotency_cases!(sqlite, crate::open::sqlite_endpoint);
idempotency_cases!(postgres, crate::open::postgres_endpoint);

const NUMBER: &str = "106540352242922";

fn number(id: &str) -> PhoneNumberId {
    id.parse().unwrap()
}

fn key(k: &str) -> IdempotencyKey {
    k.parse().unwrap()
}

/// A first claim of `k` on `NUMBER` at `now` for message `n`, claimed for 30 s.
fn claim(k: &str, n: u32, now: i64) -> NewClaim {
    NewClaim {
        phone_number_id: number(NUMBER),
        key: key(k),
        fingerprint: format!("fingerprint of {k}/{n}").into_bytes(),
        message_id: mid(n),
        claimed_until: UnixTime(now + 30),
        created_at: UnixTime(now),
    }
}

fn answer(status: u16, id: u32) -> StoredResponse {
    StoredResponse {
        status,
        body: format!(r#"{{"messages":[{{"id":"{}"}}]}}"#, mid(id)),
    }
}

async fn claimed(store: &dyn GatewayStore, c: NewClaim) -> IdempotencyRecord {
    match store.claim_idempotency_key(c, UnixTime(0)).await.unwrap() {
        ClaimOutcome::Claimed(record) => record,
        other => panic!("expected a claim, got {other:?}"),
    }
}

async fn existing(store: &dyn GatewayStore, c: NewClaim) -> IdempotencyRecord {
    match store.claim_idempotency_key(c, UnixTime(0)).await.unwrap() {
        ClaimOutcome::Existing(record) => record,
        other => panic!("expected the key in use, got {other:?}"),
    }
}

async fn read(store: &dyn GatewayStore, k: &str) -> IdempotencyRecord {
    store
        .idempotency_key(&number(NUMBER), &key(k))
        .await
        .unwrap()
        .unwrap()
}

async fn a_new_key_is_claimed_in_progress_with_its_message_id(store: &dyn GatewayStore) {
    let record = claimed(store, claim("k1", 1, 100)).await;
    assert_eq!(
        record,
        IdempotencyRecord {
            phone_number_id: number(NUMBER),
            key: key("k1"),
            fingerprint: b"fingerprint of k1/1".to_vec(),
            message_id: mid(1),
            state: IdempotencyState::InProgress,
            attempt: 1,
            claimed_until: UnixTime(130),
            response: None,
            created_at: UnixTime(100),
        }
    );
    assert_eq!(read(store, "k1").await, record);
    assert_eq!(
        store
            .idempotency_key(&number(NUMBER), &key("other"))
            .await
            .unwrap(),
        None
    );
}

async fn a_key_in_use_is_found_as_it_stands_and_left_untouched(store: &dyn GatewayStore) {
    let first = claimed(store, claim("k1", 1, 100)).await;
    // Another request (another body, another id) under the same key, later.
    let found = existing(store, claim("k1", 2, 110)).await;
    assert_eq!(found, first);
    assert_eq!(read(store, "k1").await, first);
}

async fn keys_of_different_numbers_are_apart(store: &dyn GatewayStore) {
    claimed(store, claim("k1", 1, 100)).await;
    let other = NewClaim {
        phone_number_id: number("106540352242923"),
        ..claim("k1", 2, 100)
    };
    let record = claimed(store, other).await;
    assert_eq!(record.message_id, mid(2));
    assert_eq!(read(store, "k1").await.message_id, mid(1));
}

async fn a_completed_key_keeps_its_answer_and_completes_once(store: &dyn GatewayStore) {
    claimed(store, claim("k1", 1, 100)).await;
    let (id, k) = (number(NUMBER), key("k1"));
    assert!(
        store
            .complete_idempotency_key(&id, &k, 1, answer(200, 1))
            .await
            .unwrap()
    );
    let done = existing(store, claim("k1", 2, 110)).await;
    assert_eq!(done.state, IdempotencyState::Completed);
    assert_eq!(done.response, Some(answer(200, 1)));
    assert_eq!(done.message_id, mid(1));
    // Completed is final: neither completed again, nor given up, nor taken over.
    assert!(
        !store
            .complete_idempotency_key(&id, &k, 1, answer(400, 9))
            .await
            .unwrap()
    );
    assert!(
        !store
            .release_idempotency_key(&id, &k, 1, UnixTime(110))
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_over_idempotency_key(&id, &k, 1, UnixTime(1000), UnixTime(1030))
            .await
            .unwrap()
    );
    assert_eq!(read(store, "k1").await, done);
}

async fn only_the_current_attempt_completes_or_gives_up(store: &dyn GatewayStore) {
    claimed(store, claim("k1", 1, 100)).await;
    let (id, k) = (number(NUMBER), key("k1"));
    assert!(
        store
            .take_over_idempotency_key(&id, &k, 1, UnixTime(130), UnixTime(160))
            .await
            .unwrap()
    );
    // The first attempt outlived its claim: its late answer is not kept.
    assert!(
        !store
            .complete_idempotency_key(&id, &k, 1, answer(200, 1))
            .await
            .unwrap()
    );
    assert!(
        !store
            .release_idempotency_key(&id, &k, 1, UnixTime(140))
            .await
            .unwrap()
    );
    let now = read(store, "k1").await;
    assert_eq!(
        (now.state, now.attempt, now.claimed_until),
        (IdempotencyState::InProgress, 2, UnixTime(160))
    );
    assert!(
        store
            .complete_idempotency_key(&id, &k, 2, answer(400, 1))
            .await
            .unwrap()
    );
    assert_eq!(read(store, "k1").await.response, Some(answer(400, 1)));
}

async fn a_claim_is_taken_over_only_once_expired_and_only_once(store: &dyn GatewayStore) {
    claimed(store, claim("k1", 1, 100)).await;
    let (id, k) = (number(NUMBER), key("k1"));
    // Still live at 129.
    assert!(
        !store
            .take_over_idempotency_key(&id, &k, 1, UnixTime(129), UnixTime(159))
            .await
            .unwrap()
    );
    // Expired at 130; of two takeovers from attempt 1, one wins.
    assert!(
        store
            .take_over_idempotency_key(&id, &k, 1, UnixTime(130), UnixTime(160))
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_over_idempotency_key(&id, &k, 1, UnixTime(131), UnixTime(161))
            .await
            .unwrap()
    );
    let record = read(store, "k1").await;
    assert_eq!((record.attempt, record.message_id), (2, mid(1)));
}

async fn a_given_up_claim_is_taken_over_at_once_with_its_message_id(store: &dyn GatewayStore) {
    claimed(store, claim("k1", 1, 100)).await;
    let (id, k) = (number(NUMBER), key("k1"));
    assert!(
        store
            .release_idempotency_key(&id, &k, 1, UnixTime(105))
            .await
            .unwrap()
    );
    let record = read(store, "k1").await;
    assert_eq!(
        (record.state, record.claimed_until, record.message_id),
        (IdempotencyState::InProgress, UnixTime(105), mid(1))
    );
    assert!(
        store
            .take_over_idempotency_key(&id, &k, 1, UnixTime(106), UnixTime(136))
            .await
            .unwrap()
    );
}

async fn a_key_past_retention_counts_as_new(store: &dyn GatewayStore) {
    claimed(store, claim("k1", 1, 100)).await;
    let (id, k) = (number(NUMBER), key("k1"));
    store
        .complete_idempotency_key(&id, &k, 1, answer(200, 1))
        .await
        .unwrap();
    // Not yet past retention (created after 99): in use.
    let later = claim("k1", 2, 500);
    match store
        .claim_idempotency_key(later.clone(), UnixTime(99))
        .await
        .unwrap()
    {
        ClaimOutcome::Existing(r) => assert_eq!(r.message_id, mid(1)),
        other => panic!("{other:?}"),
    }
    // Past it: a new first claim, with nothing of the old one left.
    match store
        .claim_idempotency_key(later, UnixTime(100))
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(r) => {
            assert_eq!(
                (r.message_id, r.attempt, r.state, r.response, r.created_at),
                (mid(2), 1, IdempotencyState::InProgress, None, UnixTime(500))
            );
            assert_eq!(r.fingerprint, b"fingerprint of k1/2".to_vec());
        }
        other => panic!("{other:?}"),
    }
}

async fn pruning_deletes_only_keys_past_retention(store: &dyn GatewayStore) {
    claimed(store, claim("old", 1, 100)).await;
    claimed(store, claim("older", 2, 50)).await;
    claimed(store, claim("new", 3, 200)).await;
    store
        .complete_idempotency_key(&number(NUMBER), &key("older"), 1, answer(200, 2))
        .await
        .unwrap();
    assert_eq!(
        store.prune_idempotency_keys(UnixTime(101)).await.unwrap(),
        2
    );
    for gone in ["old", "older"] {
        assert_eq!(
            store
                .idempotency_key(&number(NUMBER), &key(gone))
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(read(store, "new").await.message_id, mid(3));
    assert_eq!(
        store.prune_idempotency_keys(UnixTime(101)).await.unwrap(),
        0
    );
}

/// PostgreSQL only: two gateway nodes (two stores, each with its own pool) claiming one key
/// at once, many times over: exactly one claim wins, and every other finds the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_claims_of_one_key_on_two_nodes_exactly_one_wins() {
    let Some(db) = crate::postgres::TestDb::create().await else {
        return;
    };
    let (a, b) = (db.endpoint().await, db.endpoint().await);
    for round in 0..10_u32 {
        let mut claimers = tokio::task::JoinSet::new();
        for c in 0..8_u32 {
            let node = if c % 2 == 0 { a.clone() } else { b.clone() };
            claimers.spawn(async move {
                let k = format!("round-{round}");
                let outcome = node
                    .claim_idempotency_key(claim(&k, round * 100 + c, 100), UnixTime(0))
                    .await
                    .unwrap();
                (c, outcome)
            });
        }
        let outcomes = claimers.join_all().await;
        let winners: Vec<(u32, IdempotencyRecord)> = outcomes
            .iter()
            .filter_map(|(c, o)| match o {
                ClaimOutcome::Claimed(r) => Some((*c, r.clone())),
                ClaimOutcome::Existing(_) => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let (winner, record) = &winners[0];
        assert_eq!(record.message_id, mid(round * 100 + winner));
        for (_, outcome) in &outcomes {
            if let ClaimOutcome::Existing(found) = outcome {
                assert_eq!(found, record, "round {round}");
            }
        }
    }
}

/// PostgreSQL only: a number added through one node is signalled to every node's store (how
/// every node hosts it at once), once the adding transaction commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_added_on_one_node_is_signalled_to_the_others() {
    let Some(db) = crate::postgres::TestDb::create().await else {
        return;
    };
    let (a, b) = (db.endpoint().await, db.endpoint().await);
    let mut heard_on_b = b.number_changes().expect("PostgreSQL signals numbers");
    let mut heard_on_a = a.number_changes().expect("PostgreSQL signals numbers");
    a.create_business(ventana_store::endpoint::BusinessRecord {
        waba_id: crate::waba("1001"),
        name: "Acme".into(),
        app_secret_sealed: vec![1],
        webhook_url: None,
        verify_token_sealed: vec![2],
        sandbox: false,
        created_at: UnixTime(1),
    })
    .await
    .unwrap();
    let record = ventana_store::endpoint::PhoneNumberRecord {
        id: number(NUMBER),
        waba_id: crate::waba("1001"),
        address: crate::phone("16505550100"),
        display_phone_number: "+1 650 555 0100".into(),
        verified_name: "Acme".into(),
        created_at: UnixTime(1),
    };
    a.add_phone_number(record.clone()).await.unwrap();
    let wait = std::time::Duration::from_secs(5);
    tokio::time::timeout(wait, heard_on_b.recv())
        .await
        .expect("node b hears of the number")
        .unwrap();
    tokio::time::timeout(wait, heard_on_a.recv())
        .await
        .expect("node a hears of its own number too")
        .unwrap();
    // A number refused (taken) was never added: no signal.
    assert!(a.add_phone_number(record).await.is_err());
    let silence = tokio::time::timeout(std::time::Duration::from_millis(300), heard_on_b.recv());
    assert!(silence.await.is_err(), "a refused number was signalled");
}
