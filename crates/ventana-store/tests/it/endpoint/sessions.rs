//! Cases for identities, sessions, inbound and outbound commits, and history.

use super::*;

// --- identity and sessions ---------------------------------------------------------------

pub(super) async fn an_identity_is_saved_replaced_and_its_account_updated(
    store: &dyn EndpointStore,
) {
    assert_eq!(store.identity(&me()).await.unwrap(), None);
    store.save_identity(identity(ME, b"v1")).await.unwrap();
    store.save_account(&me(), b"v2".to_vec()).await.unwrap();
    assert_eq!(
        store.identity(&me()).await.unwrap(),
        Some(identity(ME, b"v2"))
    );
    let renamed = IdentityRecord {
        display_name: "Acme Ltd".into(),
        device_id: DeviceId(3),
        ..identity(ME, b"v3")
    };
    store.save_identity(renamed.clone()).await.unwrap();
    assert_eq!(store.identity(&me()).await.unwrap(), Some(renamed));
}

pub(super) async fn a_session_write_with_a_stale_version_is_a_conflict_and_writes_nothing(
    store: &dyn EndpointStore,
) {
    store.save_identity(identity(ME, b"before")).await.unwrap();
    store
        .commit_outbound(outbound(1, vec![session("s", "one", None)], None))
        .await
        .unwrap();
    store
        .commit_outbound(outbound(2, vec![session("s", "two", Some(1))], None))
        .await
        .unwrap();
    assert_eq!(
        versions(store).await,
        [("s".to_string(), 2, b"two".to_vec())]
    );

    let stale = outbound(3, vec![session("s", "three", Some(1))], Some(b"after"));
    let result = store.commit_outbound(stale).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");

    assert_eq!(
        versions(store).await,
        [("s".to_string(), 2, b"two".to_vec())]
    );
    assert_eq!(
        store.identity(&me()).await.unwrap().unwrap().account_sealed,
        b"before"
    );
    let outbox: Vec<_> = store
        .outbox(&me())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(outbox, [mid(1), mid(2)]);
    assert_eq!(store.message(&me(), &mid(3)).await.unwrap(), None);
}

pub(super) async fn creating_a_session_that_exists_is_a_conflict(store: &dyn EndpointStore) {
    store
        .commit_outbound(outbound(1, vec![session("s", "one", None)], None))
        .await
        .unwrap();
    let again = store
        .commit_outbound(outbound(2, vec![session("s", "other", None)], None))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(
        versions(store).await,
        [("s".to_string(), 1, b"one".to_vec())]
    );
}

pub(super) async fn of_two_concurrent_session_writes_exactly_one_wins(store: &dyn EndpointStore) {
    store
        .commit_outbound(outbound(1, vec![session("s", "one", None)], None))
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        store.commit_outbound(outbound(2, vec![session("s", "a", Some(1))], None)),
        store.commit_outbound(outbound(3, vec![session("s", "b", Some(1))], None)),
    );
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    let winner = if a.is_ok() { "a" } else { "b" };
    assert_eq!(
        versions(store).await,
        [("s".to_string(), 2, winner.as_bytes().to_vec())]
    );
    assert_eq!(store.outbox(&me()).await.unwrap().len(), 2);
}

pub(super) async fn sessions_are_listed_most_recently_used_first(store: &dyn EndpointStore) {
    store
        .commit_outbound(outbound(1, vec![session("old", "1", None)], None))
        .await
        .unwrap();
    store
        .commit_outbound(outbound(2, vec![session("new", "1", None)], None))
        .await
        .unwrap();
    let order = |v: Vec<(String, i64, Vec<u8>)>| v.into_iter().map(|s| s.0).collect::<Vec<_>>();
    assert_eq!(order(versions(store).await), ["new", "old"]);
    // Within the same second: using the older session moves it to the front.
    store
        .commit_outbound(outbound(3, vec![session("old", "2", Some(1))], None))
        .await
        .unwrap();
    assert_eq!(order(versions(store).await), ["old", "new"]);
    assert!(
        store
            .sessions(&me(), &phone(PEER), DeviceId(2))
            .await
            .unwrap()
            .is_empty()
    );
}

// --- inbound and outbound ------------------------------------------------------------------

pub(super) async fn an_inbound_envelope_is_processed_once(store: &dyn EndpointStore) {
    store.save_identity(identity(ME, b"before")).await.unwrap();
    assert!(
        !store
            .is_processed(&me(), &phone(PEER), &mid(7))
            .await
            .unwrap()
    );
    let first = inbound(
        7,
        Some(session("s", "one", None)),
        vec![AppRecord::Message(message(
            7,
            Direction::Inbound,
            100,
            "received",
        ))],
    );
    assert_eq!(
        store.commit_inbound(first).await.unwrap(),
        InboundOutcome::Committed
    );
    assert!(
        store
            .is_processed(&me(), &phone(PEER), &mid(7))
            .await
            .unwrap()
    );
    assert_eq!(
        store.identity(&me()).await.unwrap().unwrap().account_sealed,
        b"after"
    );

    // The redelivery carries a different decryption result; none of it may land.
    let again = inbound(
        7,
        Some(session("s", "two", Some(1))),
        vec![AppRecord::Message(message(
            8,
            Direction::Inbound,
            101,
            "received",
        ))],
    );
    assert_eq!(
        store.commit_inbound(again).await.unwrap(),
        InboundOutcome::Duplicate
    );
    assert_eq!(
        versions(store).await,
        [("s".to_string(), 1, b"one".to_vec())]
    );
    assert_eq!(store.messages(&me(), 10).await.unwrap().len(), 1);
    // The marker is per sender: the same id from someone else is new.
    let other = InboundCommit {
        from: phone("34600999888"),
        session: None,
        records: vec![],
        ..inbound(7, None, vec![])
    };
    assert_eq!(
        store.commit_inbound(other).await.unwrap(),
        InboundOutcome::Committed
    );
}

pub(super) async fn a_failed_inbound_commit_leaves_no_dedup_marker(store: &dyn EndpointStore) {
    store.save_identity(identity(ME, b"before")).await.unwrap();
    store
        .commit_outbound(outbound(1, vec![session("s", "one", None)], None))
        .await
        .unwrap();
    let stale = inbound(
        9,
        Some(session("s", "two", Some(5))),
        vec![AppRecord::Message(message(
            9,
            Direction::Inbound,
            100,
            "received",
        ))],
    );
    assert!(matches!(
        store.commit_inbound(stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        !store
            .is_processed(&me(), &phone(PEER), &mid(9))
            .await
            .unwrap()
    );
    assert_eq!(store.message(&me(), &mid(9)).await.unwrap(), None);
    assert_eq!(
        store.identity(&me()).await.unwrap().unwrap().account_sealed,
        b"before"
    );

    let retry = inbound(9, Some(session("s", "two", Some(1))), vec![]);
    assert_eq!(
        store.commit_inbound(retry).await.unwrap(),
        InboundOutcome::Committed
    );
}

pub(super) async fn the_outbox_is_oldest_first_and_settled_with_its_records(
    store: &dyn EndpointStore,
) {
    store
        .commit_outbound(outbound(2, vec![], None))
        .await
        .unwrap();
    store
        .commit_outbound(outbound(1, vec![], None))
        .await
        .unwrap();
    let rows = store.outbox(&me()).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [mid(1), mid(2)]
    );
    assert_eq!(rows[0].submission, b"submission 1");

    let sent = vec![AppRecord::Status {
        id: mid(1),
        status: MessageStatus::parse("sent").unwrap(),
        announce: None,
    }];
    assert!(
        store
            .settle_outbox(&me(), &mid(1), sent.clone())
            .await
            .unwrap()
    );
    // Settling again (a retried answer) is harmless, and says it was settled before.
    assert!(!store.settle_outbox(&me(), &mid(1), sent).await.unwrap());
    assert_eq!(store.outbox(&me()).await.unwrap().len(), 1);
    assert_eq!(
        store.message(&me(), &mid(1)).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );
}

pub(super) async fn a_status_only_moves_forward(store: &dyn EndpointStore) {
    store
        .apply(
            &me(),
            vec![AppRecord::Message(message(
                1,
                Direction::Outbound,
                1,
                "accepted",
            ))],
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    for status in ["sent", "delivered", "sent", "failed", "read", "delivered"] {
        store
            .apply(
                &me(),
                vec![AppRecord::Status {
                    id: mid(1),
                    status: MessageStatus::parse(status).unwrap(),
                    announce: None,
                }],
            )
            .await
            .unwrap();
        seen.push(
            store
                .message(&me(), &mid(1))
                .await
                .unwrap()
                .unwrap()
                .status
                .as_str(),
        );
    }
    assert_eq!(
        seen,
        [
            "sent",
            "delivered",
            "delivered",
            "delivered",
            "read",
            "read"
        ]
    );
    // A status for a message never recorded changes nothing.
    store
        .apply(
            &me(),
            vec![AppRecord::Status {
                id: mid(2),
                status: MessageStatus::parse("read").unwrap(),
                announce: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(store.message(&me(), &mid(2)).await.unwrap(), None);
}

pub(super) async fn history_returns_the_latest_messages_newest_last(store: &dyn EndpointStore) {
    let records = [3, 1, 5, 2, 4]
        .map(|ts| AppRecord::Message(message(ts, Direction::Inbound, i64::from(ts), "received")))
        .to_vec();
    store.apply(&me(), records).await.unwrap();
    let latest: Vec<_> = store
        .messages(&me(), 3)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.ts.0)
        .collect();
    assert_eq!(latest, [3, 4, 5]);
    let one = store.messages(&me(), 1).await.unwrap();
    assert_eq!(one, [message(5, Direction::Inbound, 5, "received")]);
}

pub(super) async fn a_message_recorded_twice_is_kept_once_per_direction(store: &dyn EndpointStore) {
    let original = message(1, Direction::Outbound, 1, "accepted");
    let replay = MessageRecord {
        body_sealed: b"changed".to_vec(),
        ..original.clone()
    };
    // A peer choosing the same id for its own message does not overwrite ours.
    let theirs = message(1, Direction::Inbound, 2, "received");
    store
        .apply(&me(), vec![AppRecord::Message(original.clone())])
        .await
        .unwrap();
    store
        .apply(
            &me(),
            vec![AppRecord::Message(replay), AppRecord::Message(theirs)],
        )
        .await
        .unwrap();
    assert_eq!(store.message(&me(), &mid(1)).await.unwrap(), Some(original));
    assert_eq!(store.messages(&me(), 10).await.unwrap().len(), 2);
}

pub(super) async fn a_contact_is_replaced_by_the_latest_profile(store: &dyn EndpointStore) {
    assert_eq!(store.contact(&me(), &phone(PEER)).await.unwrap(), None);
    for name in ["Ana", "Ana B."] {
        let record = AppRecord::Contact {
            peer: phone(PEER),
            profile_sealed: name.as_bytes().to_vec(),
        };
        store.apply(&me(), vec![record]).await.unwrap();
    }
    assert_eq!(
        store.contact(&me(), &phone(PEER)).await.unwrap(),
        Some(b"Ana B.".to_vec())
    );
}

pub(super) async fn endpoints_sharing_a_file_are_kept_apart(store: &dyn EndpointStore) {
    let other = phone("16505550199");
    store.save_identity(identity(ME, b"mine")).await.unwrap();
    store
        .commit_outbound(outbound(1, vec![session("s", "one", None)], None))
        .await
        .unwrap();
    store
        .apply(
            &me(),
            vec![AppRecord::Contact {
                peer: phone(PEER),
                profile_sealed: b"p".to_vec(),
            }],
        )
        .await
        .unwrap();

    assert_eq!(store.identity(&other).await.unwrap(), None);
    assert!(
        store
            .sessions(&other, &phone(PEER), DeviceId(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.outbox(&other).await.unwrap().is_empty());
    assert!(store.messages(&other, 10).await.unwrap().is_empty());
    assert_eq!(store.message(&other, &mid(1)).await.unwrap(), None);
    assert_eq!(store.contact(&other, &phone(PEER)).await.unwrap(), None);
    // The same session id under another owner is a different session.
    let theirs = OutboundCommit {
        owner: other.clone(),
        ..outbound(2, vec![session("s", "x", None)], None)
    };
    store.commit_outbound(theirs).await.unwrap();
    assert_eq!(
        store
            .sessions(&other, &phone(PEER), DeviceId(1))
            .await
            .unwrap()[0]
            .version,
        1
    );
    assert_eq!(statuses(store).await, [(1, "accepted".to_string())]);
}
