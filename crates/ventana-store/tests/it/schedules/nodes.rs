//! PostgreSQL only: gateway nodes (two stores, each with its own pool, on one database)
//! claiming, cancelling and moving the template cursor at once.

use super::*;
use crate::postgres::TestDb;
use tokio::task::JoinSet;
use ventana_store::ScheduleStore;
use ventana_store::postgres::PgEndpointStore;

/// Two nodes on a fresh database, or `None` if PostgreSQL is not configured.
async fn two_nodes() -> Option<(TestDb, PgEndpointStore, PgEndpointStore)> {
    let db = TestDb::create().await?;
    let (a, b) = (db.endpoint().await, db.endpoint().await);
    Some((db, a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_on_two_nodes_never_share_a_send() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let all: Vec<ScheduleRecord> = (1..=120).map(|n| record(n, ME, i64::from(n))).collect();
    create(&a, &all).await;
    // A node that died holding the first 30: by now their claims are stale and due again.
    let dead = a
        .claim_due_schedules(&me(), UnixTime(30), "dead", UnixTime(30), UnixTime(0), 30)
        .await
        .unwrap();
    assert_eq!(dead.len(), 30);

    let mut claimers = JoinSet::new();
    for c in 0..8 {
        let node = if c % 2 == 0 { a.clone() } else { b.clone() };
        claimers.spawn(async move {
            let name = format!("n{c}");
            let mut mine = Vec::new();
            loop {
                let got = node
                    .claim_due_schedules(
                        &me(),
                        UnixTime(1000),
                        &name,
                        UnixTime(1000),
                        UnixTime(900),
                        4,
                    )
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                assert!(got.iter().all(|r| r.claimed_by.as_deref() == Some(&*name)));
                // Each batch comes earliest first.
                assert!(got.windows(2).all(|w| w[0].send_at < w[1].send_at));
                mine.extend(ids(&got));
            }
        });
    }
    let claimed: Vec<MessageId> = claimers.join_all().await.into_iter().flatten().collect();
    let distinct: BTreeSet<&MessageId> = claimed.iter().collect();
    assert_eq!(distinct.len(), claimed.len(), "a send went to two nodes");
    assert_eq!(distinct.len(), all.len(), "every send claimed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_cancelled_while_another_node_claims_it_is_either_cancelled_or_sent() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    const SENDS: u32 = 40;
    let all: Vec<ScheduleRecord> = (1..=SENDS).map(|n| record(n, ME, 100)).collect();
    create(&a, &all).await;

    let claimer = tokio::spawn(async move {
        let mut claimed = Vec::new();
        loop {
            let got = a
                .claim_due_schedules(&me(), UnixTime(100), "a", UnixTime(100), UnixTime(0), 1)
                .await
                .unwrap();
            if got.is_empty() {
                return claimed;
            }
            claimed.extend(ids(&got));
        }
    });
    let mut cancellers = JoinSet::new();
    for n in 1..=SENDS {
        let b = b.clone();
        cancellers.spawn(async move {
            let outcome = b.cancel_schedule(&me(), &mid(n), UnixTime(100)).await;
            (mid(n), outcome.unwrap())
        });
    }
    let outcomes = cancellers.join_all().await;
    let claimed: BTreeSet<MessageId> = claimer.await.unwrap().into_iter().collect();

    for (id, outcome) in outcomes {
        match outcome {
            CancelOutcome::Cancelled(r) => {
                assert!(!claimed.contains(&id), "{id:?} cancelled and claimed");
                assert_eq!(r.state, Cancelled);
            }
            CancelOutcome::NotCancellable(r) => {
                assert!(
                    claimed.contains(&id),
                    "{id:?} neither cancelled nor claimed"
                );
                assert_eq!(r.state, Firing);
            }
            CancelOutcome::NotFound => panic!("{id:?} not found"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_cursor_moves_on_two_nodes_from_one_place_exactly_one_wins() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    for from in [0, 10, 20] {
        let mut callers = JoinSet::new();
        for c in 0..8 {
            let node = if c % 2 == 0 { a.clone() } else { b.clone() };
            callers.spawn(async move {
                let jobs = vec![job(&format!("from{from}-caller{c}"))];
                let won = node
                    .advance_template_cursor(&waba(WABA), from, from + 10, jobs)
                    .await
                    .unwrap();
                (c, won)
            });
        }
        let winners: Vec<u32> = callers
            .join_all()
            .await
            .into_iter()
            .filter(|(_, won)| *won)
            .map(|(c, _)| c)
            .collect();
        assert_eq!(winners.len(), 1, "from {from}: {winners:?}");
        assert_eq!(b.template_cursor(&waba(WABA)).await.unwrap(), from + 10);
        assert_eq!(
            leased_ids(&a).await,
            [format!("from{from}-caller{}", winners[0])]
        );
    }
}
