//! `ScheduleStore` conformance (part of every `GatewayStore`): scheduled sends from creation to
//! cancelling, claiming, taking over from a dead node and finishing; and the template cursor
//! with the webhooks it queues. Several PostgreSQL nodes claiming at once are in `nodes`.

use crate::{mid, phone, waba};
use futures_util::future::join_all;
use std::collections::BTreeSet;
use ventana_core::{MessageId, PhoneNumber, UnixTime};
use ventana_store::endpoint::WebhookJob;
use ventana_store::schedule::{CancelOutcome, ScheduleRecord, ScheduleState};
use ventana_store::{GatewayStore, StoreError};

use ScheduleState::*;

mod nodes;

/// Every schedule case against one backend.
macro_rules! schedule_cases {
    ($backend:ident, $open:path) => {
        conformance!(
            $backend,
            $open,
            [
                a_new_schedule_is_scheduled_unclaimed_and_reads_back,
                a_taken_id_is_a_conflict,
                schedules_are_listed_by_time_then_id_a_page_at_a_time,
                a_listing_can_keep_to_one_state,
                only_a_scheduled_send_can_be_cancelled,
                a_claim_takes_only_the_owners_due_sends_earliest_first,
                a_second_claim_in_the_same_round_gets_nothing,
                concurrent_claims_never_share_a_send,
                a_stale_claim_is_taken_over_and_the_old_node_cannot_finish,
                only_the_claimer_finishes_a_send_and_only_as_sent_or_failed,
                the_next_due_time_is_the_earliest_scheduled_send,
                the_template_cursor_moves_by_compare_and_swap_with_its_webhooks,
                of_concurrent_cursor_moves_from_one_place_exactly_one_wins,
            ]
        );
    };
}

schedule_cases!(sqlite, crate::open::sqlite_endpoint);
schedule_cases!(postgres, crate::open::postgres_endpoint);

const ME: &str = "16505550100";
const OTHER: &str = "16505550111";
const PEER: &str = "34600111222";
const WABA: &str = "1001";

fn me() -> PhoneNumber {
    phone(ME)
}

/// Schedule `n` of `owner`, due at `send_at`. Ids sort as their numbers do.
fn record(n: u32, owner: &str, send_at: i64) -> ScheduleRecord {
    ScheduleRecord {
        id: mid(n),
        owner: phone(owner),
        waba_id: waba(WABA),
        recipient: phone(PEER),
        send_at: UnixTime(send_at),
        request_sealed: format!("request {n}").into_bytes(),
        state: Scheduled,
        error: None,
        claimed_by: None,
        claimed_at: None,
        created_at: UnixTime(1),
        updated_at: UnixTime(1),
    }
}

/// `record` as it stands once claimed by `node` at `at`.
fn claimed(record: ScheduleRecord, node: &str, at: i64) -> ScheduleRecord {
    ScheduleRecord {
        state: Firing,
        claimed_by: Some(node.into()),
        claimed_at: Some(UnixTime(at)),
        updated_at: UnixTime(at),
        ..record
    }
}

async fn create(store: &dyn GatewayStore, records: &[ScheduleRecord]) {
    for r in records {
        store.create_schedule(r.clone()).await.unwrap();
    }
}

/// Claims for `node` at `now` whatever is due by then, counting claims older than 60 s stale.
async fn claim(store: &dyn GatewayStore, node: &str, now: i64, limit: u32) -> Vec<ScheduleRecord> {
    store
        .claim_due_schedules(
            &me(),
            UnixTime(now),
            node,
            UnixTime(now),
            UnixTime(now - 60),
            limit,
        )
        .await
        .unwrap()
}

fn ids(records: &[ScheduleRecord]) -> Vec<MessageId> {
    records.iter().map(|r| r.id.clone()).collect()
}

async fn state_of(store: &dyn GatewayStore, n: u32) -> ScheduleState {
    store.schedule(&me(), &mid(n)).await.unwrap().unwrap().state
}

fn job(id: &str) -> WebhookJob {
    WebhookJob {
        id: id.into(),
        waba_id: waba(WABA),
        body_sealed: format!("event {id}").into_bytes(),
        attempts: 0,
        next_attempt_at: UnixTime(0),
        created_at: UnixTime(5),
        phone_number_id: None,
        order_key: None,
        failing_since: None,
    }
}

async fn a_new_schedule_is_scheduled_unclaimed_and_reads_back(store: &dyn GatewayStore) {
    let given = ScheduleRecord {
        state: Sent,
        error: Some("ignored".into()),
        claimed_by: Some("node".into()),
        claimed_at: Some(UnixTime(3)),
        ..record(1, ME, 100)
    };
    store.create_schedule(given).await.unwrap();
    assert_eq!(
        store.schedule(&me(), &mid(1)).await.unwrap(),
        Some(record(1, ME, 100))
    );
    // Another owner, or another id, finds nothing.
    assert_eq!(store.schedule(&phone(OTHER), &mid(1)).await.unwrap(), None);
    assert_eq!(store.schedule(&me(), &mid(2)).await.unwrap(), None);
}

async fn a_taken_id_is_a_conflict(store: &dyn GatewayStore) {
    create(store, &[record(1, ME, 100)]).await;
    for taken in [record(1, ME, 500), record(1, OTHER, 500)] {
        let again = store.create_schedule(taken).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    }
    assert_eq!(
        store.schedule(&me(), &mid(1)).await.unwrap(),
        Some(record(1, ME, 100))
    );
    assert_eq!(store.schedule(&phone(OTHER), &mid(1)).await.unwrap(), None);
}

async fn schedules_are_listed_by_time_then_id_a_page_at_a_time(store: &dyn GatewayStore) {
    // Created out of order; 2, 3 and 5 share a time.
    let mine = [
        record(5, ME, 200),
        record(1, ME, 300),
        record(3, ME, 200),
        record(4, ME, 100),
        record(2, ME, 200),
    ];
    create(store, &mine).await;
    create(store, &[record(9, OTHER, 150)]).await;
    let in_order = [mid(4), mid(2), mid(3), mid(5), mid(1)];

    let all = store.list_schedules(&me(), None, None, 100).await.unwrap();
    assert_eq!(ids(&all), in_order);
    assert_eq!(all[0], record(4, ME, 100));

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_schedules(&me(), None, after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.send_at, last.id.clone()));
        paged.extend(ids(&page));
    }
    assert_eq!(paged, in_order);

    let none = store
        .list_schedules(&phone(PEER), None, None, 100)
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn a_listing_can_keep_to_one_state(store: &dyn GatewayStore) {
    create(
        store,
        &[
            record(1, ME, 100),
            record(2, ME, 200),
            record(3, ME, 300),
            record(4, ME, 400),
            record(5, ME, 500),
        ],
    )
    .await;
    create(store, &[record(9, OTHER, 100)]).await;
    store
        .cancel_schedule(&me(), &mid(2), UnixTime(50))
        .await
        .unwrap();
    store
        .cancel_schedule(&me(), &mid(4), UnixTime(50))
        .await
        .unwrap();
    assert_eq!(ids(&claim(store, "a", 100, 10).await), [mid(1)]);

    let listed = async |state, after, limit| {
        let found = store
            .list_schedules(&me(), Some(state), after, limit)
            .await
            .unwrap();
        assert!(found.iter().all(|r| r.state == state), "{found:?}");
        ids(&found)
    };
    assert_eq!(listed(Scheduled, None, 10).await, [mid(3), mid(5)]);
    assert_eq!(listed(Cancelled, None, 10).await, [mid(2), mid(4)]);
    assert_eq!(listed(Firing, None, 10).await, [mid(1)]);
    assert!(listed(Sent, None, 10).await.is_empty());
    // The cursor and the limit hold within a state.
    assert_eq!(listed(Cancelled, None, 1).await, [mid(2)]);
    assert_eq!(
        listed(Cancelled, Some((UnixTime(200), mid(2))), 10).await,
        [mid(4)]
    );
    assert_eq!(
        listed(Scheduled, Some((UnixTime(300), mid(3))), 10).await,
        [mid(5)]
    );
}

async fn only_a_scheduled_send_can_be_cancelled(store: &dyn GatewayStore) {
    create(store, &[record(1, ME, 100), record(2, ME, 100)]).await;
    let cancelled = ScheduleRecord {
        state: Cancelled,
        updated_at: UnixTime(40),
        ..record(1, ME, 100)
    };
    assert_eq!(
        store
            .cancel_schedule(&me(), &mid(1), UnixTime(40))
            .await
            .unwrap(),
        CancelOutcome::Cancelled(cancelled.clone())
    );
    assert_eq!(
        store
            .cancel_schedule(&me(), &mid(1), UnixTime(41))
            .await
            .unwrap(),
        CancelOutcome::NotCancellable(cancelled)
    );
    assert_eq!(
        store
            .cancel_schedule(&me(), &mid(3), UnixTime(40))
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
    // Another owner cannot reach it.
    assert_eq!(
        store
            .cancel_schedule(&phone(OTHER), &mid(2), UnixTime(40))
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );

    // Once firing, or done, it stays as it is.
    assert_eq!(claim(store, "a", 100, 10).await.len(), 1);
    let firing = claimed(record(2, ME, 100), "a", 100);
    assert_eq!(
        store
            .cancel_schedule(&me(), &mid(2), UnixTime(101))
            .await
            .unwrap(),
        CancelOutcome::NotCancellable(firing.clone())
    );
    assert!(
        store
            .finish_schedule(&me(), &mid(2), "a", Sent, None, UnixTime(102))
            .await
            .unwrap()
    );
    let outcome = store
        .cancel_schedule(&me(), &mid(2), UnixTime(103))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, CancelOutcome::NotCancellable(r) if r.state == Sent),
        "{outcome:?}"
    );
}

async fn a_claim_takes_only_the_owners_due_sends_earliest_first(store: &dyn GatewayStore) {
    create(
        store,
        &[
            record(3, ME, 100),
            record(1, ME, 100),
            record(2, ME, 90),
            record(4, ME, 101),
            record(5, ME, 500),
        ],
    )
    .await;
    create(store, &[record(9, OTHER, 10)]).await;

    // At most `limit`, earliest first.
    let first = claim(store, "a", 100, 2).await;
    assert_eq!(
        first,
        [
            claimed(record(2, ME, 90), "a", 100),
            claimed(record(1, ME, 100), "a", 100),
        ]
    );
    // `send_at <= due_by`, and nothing of another owner.
    let rest = claim(store, "b", 100, 10).await;
    assert_eq!(rest, [claimed(record(3, ME, 100), "b", 100)]);
    for (n, state) in [(4, Scheduled), (5, Scheduled)] {
        assert_eq!(state_of(store, n).await, state);
    }
    let others = store
        .schedule(&phone(OTHER), &mid(9))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(others, record(9, OTHER, 10));

    // Due by a later time, the next one comes.
    assert_eq!(ids(&claim(store, "a", 101, 10).await), [mid(4)]);
}

async fn a_second_claim_in_the_same_round_gets_nothing(store: &dyn GatewayStore) {
    create(store, &[record(1, ME, 100), record(2, ME, 100)]).await;
    assert_eq!(claim(store, "a", 100, 10).await.len(), 2);
    assert!(claim(store, "b", 100, 10).await.is_empty());
    assert!(claim(store, "a", 100, 10).await.is_empty());
    // Not stale until a minute has passed (`claimed_at <= now - 60`).
    assert!(claim(store, "b", 159, 10).await.is_empty());
    assert_eq!(claim(store, "b", 160, 10).await.len(), 2);
}

async fn concurrent_claims_never_share_a_send(store: &dyn GatewayStore) {
    let all: Vec<ScheduleRecord> = (1..=40).map(|n| record(n, ME, i64::from(n))).collect();
    create(store, &all).await;
    let claimers = (0..8).map(|c| async move {
        let node = format!("n{c}");
        let mut mine = Vec::new();
        loop {
            let got = claim(store, &node, 100, 3).await;
            if got.is_empty() {
                return mine;
            }
            assert!(got.iter().all(|r| r.claimed_by.as_deref() == Some(&*node)));
            mine.extend(ids(&got));
        }
    });
    let claimed: Vec<MessageId> = join_all(claimers).await.into_iter().flatten().collect();
    let distinct: BTreeSet<&MessageId> = claimed.iter().collect();
    assert_eq!(distinct.len(), claimed.len(), "a send went to two claimers");
    assert_eq!(distinct.len(), all.len(), "every send claimed");
}

async fn a_stale_claim_is_taken_over_and_the_old_node_cannot_finish(store: &dyn GatewayStore) {
    create(store, &[record(1, ME, 100), record(2, ME, 100)]).await;
    assert_eq!(claim(store, "a", 100, 1).await.len(), 1);
    // Node a dies with schedule 1 firing. Only when its claim is stale does b take it,
    // along with what is plainly due.
    assert_eq!(ids(&claim(store, "b", 150, 10).await), [mid(2)]);
    let taken = claim(store, "b", 161, 10).await;
    assert_eq!(taken, [claimed(record(1, ME, 100), "b", 161)]);

    // a comes back: its answer no longer counts, b's does.
    assert!(
        !store
            .finish_schedule(&me(), &mid(1), "a", Sent, None, UnixTime(170))
            .await
            .unwrap()
    );
    assert_eq!(state_of(store, 1).await, Firing);
    assert!(
        store
            .finish_schedule(&me(), &mid(1), "b", Sent, None, UnixTime(171))
            .await
            .unwrap()
    );
    let done = store.schedule(&me(), &mid(1)).await.unwrap().unwrap();
    assert_eq!(
        done,
        ScheduleRecord {
            state: Sent,
            updated_at: UnixTime(171),
            ..claimed(record(1, ME, 100), "b", 161)
        }
    );
    // A finished send is never stale; one left firing is.
    assert_eq!(ids(&claim(store, "c", 1000, 10).await), [mid(2)]);
    assert_eq!(state_of(store, 1).await, Sent);
}

async fn only_the_claimer_finishes_a_send_and_only_as_sent_or_failed(store: &dyn GatewayStore) {
    create(
        store,
        &[record(1, ME, 100), record(2, ME, 100), record(3, ME, 500)],
    )
    .await;
    assert_eq!(claim(store, "a", 100, 10).await.len(), 2);
    let finish = async |n: u32, node: &str, state, error: Option<&str>| {
        store
            .finish_schedule(
                &me(),
                &mid(n),
                node,
                state,
                error.map(str::to_owned),
                UnixTime(110),
            )
            .await
    };

    for not_final in [Scheduled, Firing, Cancelled] {
        let refused = finish(1, "a", not_final, None).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{not_final:?}: {refused:?}"
        );
    }
    assert!(!finish(1, "b", Sent, None).await.unwrap());
    assert!(finish(1, "a", Sent, None).await.unwrap());
    let error = r#"{"code":131026,"title":"Message undeliverable"}"#;
    assert!(finish(2, "a", Failed, Some(error)).await.unwrap());
    // Done is done; one never claimed cannot be finished.
    assert!(!finish(1, "a", Failed, Some(error)).await.unwrap());
    assert!(!finish(3, "a", Sent, None).await.unwrap());

    let sent = store.schedule(&me(), &mid(1)).await.unwrap().unwrap();
    assert_eq!((sent.state, sent.error), (Sent, None));
    let failed = store.schedule(&me(), &mid(2)).await.unwrap().unwrap();
    assert_eq!(
        (failed.state, failed.error.as_deref(), failed.updated_at),
        (Failed, Some(error), UnixTime(110))
    );
    assert_eq!(state_of(store, 3).await, Scheduled);
}

async fn the_next_due_time_is_the_earliest_scheduled_send(store: &dyn GatewayStore) {
    assert_eq!(store.next_schedule_due(&me()).await.unwrap(), None);
    create(
        store,
        &[record(1, ME, 300), record(2, ME, 100), record(3, ME, 200)],
    )
    .await;
    create(store, &[record(9, OTHER, 50)]).await;
    assert_eq!(
        store.next_schedule_due(&me()).await.unwrap(),
        Some(UnixTime(100))
    );
    // Firing and cancelled ones no longer count.
    assert_eq!(ids(&claim(store, "a", 100, 10).await), [mid(2)]);
    assert_eq!(
        store.next_schedule_due(&me()).await.unwrap(),
        Some(UnixTime(200))
    );
    store
        .cancel_schedule(&me(), &mid(3), UnixTime(120))
        .await
        .unwrap();
    assert_eq!(
        store.next_schedule_due(&me()).await.unwrap(),
        Some(UnixTime(300))
    );
    store
        .cancel_schedule(&me(), &mid(1), UnixTime(120))
        .await
        .unwrap();
    assert_eq!(store.next_schedule_due(&me()).await.unwrap(), None);
    assert_eq!(
        store.next_schedule_due(&phone(OTHER)).await.unwrap(),
        Some(UnixTime(50))
    );
}

async fn leased_ids(store: &dyn GatewayStore) -> Vec<String> {
    let leased = crate::lease(store, "leaser", UnixTime(10), 60, 100)
        .await
        .unwrap();
    let mut ids: Vec<String> = leased.into_iter().map(|j| j.id).collect();
    ids.sort();
    ids
}

async fn the_template_cursor_moves_by_compare_and_swap_with_its_webhooks(store: &dyn GatewayStore) {
    let (mine, other) = (waba(WABA), waba("2002"));
    assert_eq!(store.template_cursor(&mine).await.unwrap(), 0);

    assert!(
        store
            .advance_template_cursor(&mine, 0, 3, vec![job("e1"), job("e3")])
            .await
            .unwrap()
    );
    // A second caller that also read 0 loses, and its jobs are not queued.
    assert!(
        !store
            .advance_template_cursor(&mine, 0, 2, vec![job("e1-again"), job("e2")])
            .await
            .unwrap()
    );
    assert_eq!(store.template_cursor(&mine).await.unwrap(), 3);
    // Nor from anywhere else but where it is.
    assert!(
        !store
            .advance_template_cursor(&mine, 5, 9, vec![job("e9")])
            .await
            .unwrap()
    );
    // A job already queued is kept as it was.
    let replaced = WebhookJob {
        body_sealed: b"other bytes".to_vec(),
        ..job("e3")
    };
    assert!(
        store
            .advance_template_cursor(&mine, 3, 4, vec![replaced, job("e4")])
            .await
            .unwrap()
    );
    assert_eq!(store.template_cursor(&mine).await.unwrap(), 4);

    // Each business has a cursor of its own.
    assert_eq!(store.template_cursor(&other).await.unwrap(), 0);
    assert!(
        !store
            .advance_template_cursor(&other, 4, 5, vec![])
            .await
            .unwrap()
    );
    assert!(
        store
            .advance_template_cursor(&other, 0, 7, vec![])
            .await
            .unwrap()
    );
    assert_eq!(store.template_cursor(&other).await.unwrap(), 7);
    assert_eq!(store.template_cursor(&mine).await.unwrap(), 4);

    let leased = crate::lease(store, "leaser", UnixTime(10), 60, 100)
        .await
        .unwrap();
    let e3 = leased.iter().find(|j| j.id == "e3").unwrap();
    assert_eq!(e3.body_sealed, job("e3").body_sealed);
    let mut ids: Vec<&str> = leased.iter().map(|j| j.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["e1", "e3", "e4"]);
}

async fn of_concurrent_cursor_moves_from_one_place_exactly_one_wins(store: &dyn GatewayStore) {
    let mine = waba(WABA);
    for from in [0, 10] {
        let to = from + 10;
        let callers = (0..8).map(|c| {
            let mine = &mine;
            async move {
                let jobs = vec![job(&format!("from{from}-caller{c}"))];
                let won = store
                    .advance_template_cursor(mine, from, to, jobs)
                    .await
                    .unwrap();
                (c, won)
            }
        });
        let winners: Vec<u32> = join_all(callers)
            .await
            .into_iter()
            .filter(|(_, won)| *won)
            .map(|(c, _)| c)
            .collect();
        assert_eq!(winners.len(), 1, "from {from}: {winners:?}");
        assert_eq!(store.template_cursor(&mine).await.unwrap(), to);
        assert_eq!(
            leased_ids(store).await,
            [format!("from{from}-caller{}", winners[0])]
        );
    }
}
