//! PostgreSQL only: template writes racing on two relay nodes (two stores, each with its own
//! pool, on one database).

use super::*;
use crate::postgres::TestDb;
use std::time::Duration;
use tokio::task::JoinSet;
use ventana_store::postgres::PgRelayStore;

/// Two nodes on a fresh database, or `None` if PostgreSQL is not configured.
async fn two_nodes() -> Option<(TestDb, PgRelayStore, PgRelayStore)> {
    let db = TestDb::create().await?;
    let (a, b) = (db.relay().await, db.relay().await);
    Some((db, a, b))
}

async fn live_templates(store: &dyn TemplateStore, waba_id: &str) -> Vec<TemplateRecord> {
    store
        .list_templates(&of_waba(waba_id), None, None, 1000)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_name_on_two_nodes_make_one_template() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let mut tasks = JoinSet::new();
    for n in 0..16 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let new = new_template(&format!("{}", 100 + n), WABA, "order_update", "en_US");
        tasks.spawn(async move { node.create_template(new, LIMIT).await.unwrap() });
    }
    let outcomes = tasks.join_all().await;
    let created: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .filter(|o| o.is_err())
            .all(|o| *o == Err(CreateRefusal::Exists))
    );
    assert_eq!(
        ids(&live_templates(&a, WABA).await),
        [created[0].id.as_str()]
    );
    assert_eq!(b.template_events(None, 0, 100).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_at_the_limit_on_two_nodes_never_pass_it() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    const LIMIT: u32 = 5;
    let mut tasks = JoinSet::new();
    for n in 0..24 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let new = new_template(&format!("{}", 100 + n), WABA, &format!("t{n}"), "en_US");
        tasks.spawn(async move { node.create_template(new, LIMIT).await.unwrap() });
    }
    let outcomes = tasks.join_all().await;
    let created = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(created, LIMIT as usize, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .filter(|o| o.is_err())
            .all(|o| *o == Err(CreateRefusal::LimitReached))
    );
    assert_eq!(live_templates(&b, WABA).await.len(), LIMIT as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reviews_on_two_nodes_let_exactly_one_win() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    for round in 0..5 {
        let id = format!("{}", 100 + round);
        created(&a, &id, &format!("t{round}")).await;
        let mut tasks = JoinSet::new();
        for n in 0..8 {
            let node = if n % 2 == 0 { a.clone() } else { b.clone() };
            let to = if n % 3 == 0 { Rejected } else { Approved };
            let (id, actor) = (id.clone(), format!("operator:{n}"));
            tasks.spawn(async move {
                let now = UnixTime(2000);
                let moved = node
                    .set_template_status(&id, Pending, to, &actor, None, now)
                    .await;
                (actor, moved)
            });
        }
        let outcomes = tasks.join_all().await;
        let winners: Vec<_> = outcomes.iter().filter(|(_, o)| o.is_ok()).collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|(_, o)| o.is_ok() || is_conflict(o)));
        let (winner, record) = winners[0];
        let record = record.as_ref().unwrap();
        assert_eq!(b.template(&id).await.unwrap().as_ref(), Some(record));
        let audit = b.template_audit(&id).await.unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!((&audit[1].actor, audit[1].to), (winner, record.status));
    }
}

/// The gateway follows events with `seq > last seen` while two nodes write them: an event that
/// drew its number early but committed late must not be skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_of_events_written_on_two_nodes_misses_none() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    const TEMPLATES: usize = 20;
    let mut tasks = JoinSet::new();
    for n in 0..TEMPLATES {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let (id, waba_id) = (
            format!("{}", 100 + n),
            if n % 4 < 2 { WABA } else { OTHER_WABA },
        );
        tasks.spawn(async move {
            let new = new_template(&id, waba_id, &format!("t{n}"), "en_US");
            node.create_template(new, LIMIT).await.unwrap().unwrap();
            let now = UnixTime(2000);
            node.set_template_status(&id, Pending, Approved, OPERATOR, None, now)
                .await
                .unwrap();
            node.edit_template(&id, 1, edit("v2"), "business", now)
                .await
                .unwrap();
        });
    }
    let mut seen: Vec<TemplateEvent> = Vec::new();
    let mut after = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < TEMPLATES * 3 {
        assert!(tokio::time::Instant::now() < deadline, "saw only {seen:?}");
        for event in a.template_events(None, after, 5).await.unwrap() {
            assert!(event.seq > after);
            after = event.seq;
            seen.push(event);
        }
        tokio::task::yield_now().await;
    }
    tasks.join_all().await;
    assert_eq!(seen, b.template_events(None, 0, 1000).await.unwrap());
    // Each template's own events arrived in the order they happened.
    for n in 0..TEMPLATES {
        let id = format!("{}", 100 + n);
        let mine: Vec<TemplateStatus> = seen
            .iter()
            .filter(|e| e.template_id == id)
            .map(|e| e.to)
            .collect();
        assert_eq!(mine, [Pending, Approved, Pending], "{id}");
    }
}
