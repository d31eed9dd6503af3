//! What keeps an accepted message from being lost: outbox rows that know where their
//! ciphertext stands in its session, envelopes acknowledged unread (a resend must still get
//! through), receipts queued with the message they report, and status webhooks announced
//! only when the status moves.

use super::*;
use ventana_store::endpoint::SessionMark;

fn mark(device: u32, session: &str, version: i64) -> SessionMark {
    SessionMark {
        peer_device: DeviceId(device),
        session_id: session.into(),
        version,
    }
}

pub(crate) async fn an_outbox_row_keeps_its_session_marks_and_attempt(store: &dyn EndpointStore) {
    store.save_identity(identity(ME, b"acct")).await.unwrap();
    let mut commit = outbound(1, Vec::new(), None);
    commit.outbox.sessions = vec![mark(1, "s+A/1", 3), mark(2, "s+B/2", 1)];
    store.commit_outbound(commit.clone()).await.unwrap();
    let rows = store.outbox(&me()).await.unwrap();
    assert_eq!(rows, [commit.outbox.clone()]);

    // A resend the peer asked for, queued while the first send is still unsettled, keeps
    // the first's attempt (its settlement still announces it) and takes the new ciphertext.
    let mut resend = commit.outbox.clone();
    resend.submission = b"a new encryption".to_vec();
    resend.sessions = vec![mark(1, "s+C/3", 1)];
    resend.attempt = 2;
    let reported = InboundCommit {
        account_sealed: None,
        outbox: vec![resend.clone()],
        ..inbound(7, None, Vec::new())
    };
    store.commit_inbound(reported).await.unwrap();
    let rows = store.outbox(&me()).await.unwrap();
    assert_eq!(
        rows,
        [OutboxRow {
            attempt: 0,
            ..resend
        }]
    );
}

pub(crate) async fn an_envelope_acknowledged_unread_is_not_taken_for_a_duplicate(
    store: &dyn EndpointStore,
) {
    store.save_identity(identity(ME, b"acct")).await.unwrap();
    let retry = OutboxRow {
        id: mid(90),
        to: phone(PEER),
        submission: b"retry receipt".to_vec(),
        created_at: UnixTime(5),
        sessions: Vec::new(),
        attempt: 0,
    };
    let unread = InboundCommit {
        account_sealed: None,
        processed: false,
        outbox: vec![retry.clone()],
        ..inbound(1, None, Vec::new())
    };
    // Each undecryptable copy queues its retry receipt; neither marks the id processed.
    for _ in 0..2 {
        assert_eq!(
            store.commit_inbound(unread.clone()).await.unwrap(),
            InboundOutcome::Committed
        );
    }
    assert!(
        !store
            .is_processed(&me(), &phone(PEER), &mid(1))
            .await
            .unwrap()
    );
    assert_eq!(store.outbox(&me()).await.unwrap(), [retry]);
    // The resend is read and marked, and drops the retry receipt's row the relay has taken
    // meanwhile; a copy after it is a duplicate.
    let read = InboundCommit {
        account_sealed: None,
        settled: vec![mid(90)],
        ..inbound(
            1,
            None,
            vec![AppRecord::Message(message(
                1,
                Direction::Inbound,
                9,
                "received",
            ))],
        )
    };
    assert_eq!(
        store.commit_inbound(read.clone()).await.unwrap(),
        InboundOutcome::Committed
    );
    assert_eq!(
        store.commit_inbound(read).await.unwrap(),
        InboundOutcome::Duplicate
    );
    assert!(
        store
            .is_processed(&me(), &phone(PEER), &mid(1))
            .await
            .unwrap()
    );
}

pub(crate) async fn a_resend_is_counted_on_the_message(store: &dyn EndpointStore) {
    store.save_identity(identity(ME, b"acct")).await.unwrap();
    store
        .commit_outbound(outbound(1, Vec::new(), None))
        .await
        .unwrap();
    for _ in 0..2 {
        store
            .apply(&me(), vec![AppRecord::Resent { id: mid(1) }])
            .await
            .unwrap();
    }
    let message = store.message(&me(), &mid(1)).await.unwrap().unwrap();
    assert_eq!(message.resends, 2);
}

pub(crate) async fn a_status_is_announced_only_when_it_moves(store: &dyn GatewayStore) {
    store.save_identity(identity(ME, b"acct")).await.unwrap();
    store
        .apply(
            &me(),
            vec![AppRecord::Message(message(
                1,
                Direction::Outbound,
                1,
                "sent",
            ))],
        )
        .await
        .unwrap();
    let status = |status: &str, job_id: &str| AppRecord::Status {
        id: mid(1),
        status: MessageStatus::parse(status).unwrap(),
        announce: Some(job(job_id, 1, 1)),
    };
    // delivered, delivered again (a second receipt), read, then a late delivered.
    for (s, j) in [
        ("delivered", "d1"),
        ("delivered", "d2"),
        ("read", "r1"),
        ("delivered", "d3"),
    ] {
        store.apply(&me(), vec![status(s, j)]).await.unwrap();
    }
    let leased: Vec<String> = crate::lease(store, "n1", UnixTime(10), 60, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(leased, ["d1", "r1"]);
}

pub(crate) async fn a_device_keeps_only_its_most_recently_used_sessions(store: &dyn EndpointStore) {
    let cap = ventana_store::endpoint::MAX_SESSIONS_PER_DEVICE as usize;
    // The first session stays in use; every other one is new once (as a retry makes them).
    store
        .commit_outbound(outbound(1, vec![session("kept", "1", None)], None))
        .await
        .unwrap();
    for n in 0..cap + 2 {
        let name = format!("s{n}");
        let id = u32::try_from(n).unwrap() + 10;
        store
            .commit_outbound(outbound(id, vec![session(&name, "1", None)], None))
            .await
            .unwrap();
        if n == 2 {
            let used = versions(store)
                .await
                .into_iter()
                .find(|s| s.0 == "kept")
                .unwrap();
            store
                .commit_outbound(outbound(2, vec![session("kept", "2", Some(used.1))], None))
                .await
                .unwrap();
        }
    }
    let names: Vec<String> = versions(store).await.into_iter().map(|s| s.0).collect();
    assert_eq!(names.len(), cap);
    assert!(names.contains(&"kept".to_string()), "{names:?}");
    assert_eq!(names[0], format!("s{}", cap + 1));
    assert!(!names.contains(&"s0".to_string()), "{names:?}");
}
