//! Cases for accepting submissions under the rules, the queues and blocking.

use super::*;

// --- envelopes and rules ---------------------------------------------------------------

pub(super) async fn a_user_message_creates_the_contact_and_reaches_every_device(
    store: &dyn RelayStore,
) {
    let (u, b) = (user(store, USER, 1).await, business(store, 2).await);
    let ok = accepted(store, message(1, &u, &b, &[2, 1], 1000)).await;
    assert_eq!(
        ok,
        Accepted {
            accepted_at: UnixTime(1000),
            devices: vec![DeviceId(1), DeviceId(2)],
            duplicate: false,
            pricing: None,
        }
    );

    for d in [1, 2] {
        let pending = store.pending(&b, DeviceId(d), 0, 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        let e = &pending[0];
        assert_eq!(
            (&e.id, &e.sender, e.sender_device, e.kind, e.ts),
            (
                &mid(1),
                &u,
                DeviceId(1),
                EnvelopeKind::Message,
                UnixTime(1000)
            )
        );
        assert_eq!(e.body, format!("1 for {d}").into_bytes());
    }
    // The contact exists now: the business may answer.
    accepted(store, message(2, &b, &u, &[1], 1001)).await;
}

pub(super) async fn a_business_cannot_write_first(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    assert_eq!(
        refused(store, message(1, &b, &u, &[1], 1000)).await,
        Refusal::Rule(RuleViolation::NoContact)
    );
    assert!(queued(store, &u, 1).await.is_empty());
}

pub(super) async fn a_free_form_message_outside_the_window_is_refused(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    accepted(store, message(1, &u, &b, &[1], 1000)).await;
    accepted(store, message(2, &b, &u, &[1], 1000 + WINDOW_SECS - 1)).await;

    let closed_at = UnixTime(1000 + WINDOW_SECS);
    let late = refused(store, message(3, &b, &u, &[1], closed_at.0)).await;
    assert_eq!(
        late,
        Refusal::Rule(RuleViolation::WindowClosed { closed_at })
    );
    // Receipts still flow, and a new user message opens the window again.
    accepted(
        store,
        submission(4, &b, &u, EnvelopeKind::Receipt, &[1], closed_at.0),
    )
    .await;
    accepted(store, message(5, &u, &b, &[1], closed_at.0 + 10)).await;
    accepted(store, message(6, &b, &u, &[1], closed_at.0 + 20)).await;
    assert_eq!(
        queued(store, &u, 1).await,
        [mid(2), mid(4), mid(6)].map(|m| m.to_string())
    );
}

pub(super) async fn a_sandbox_clock_moves_the_window_and_the_timestamps(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    accepted(store, message(1, &u, &b, &[1], 1000)).await;
    let clock = store.business_clock(&waba(WABA)).await.unwrap().unwrap();
    store
        .set_business_clock(&waba(WABA), clock.advanced(WINDOW_SECS).unwrap())
        .await
        .unwrap();

    // One wall-clock second later, a day has passed for the business.
    let late = refused(store, message(2, &b, &u, &[1], 1001)).await;
    assert_eq!(
        late,
        Refusal::Rule(RuleViolation::WindowClosed {
            closed_at: UnixTime(1000 + WINDOW_SECS)
        })
    );
    let ok = accepted(store, message(3, &u, &b, &[1], 1001)).await;
    assert_eq!(ok.accepted_at, UnixTime(1001 + WINDOW_SECS));
    let pending = store.pending(&b, DeviceId(1), 0, 10).await.unwrap();
    assert_eq!(pending[1].ts, UnixTime(1001 + WINDOW_SECS));
}

pub(super) async fn resubmitting_the_same_id_is_answered_as_the_first_time(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    let first = accepted(store, message(1, &u, &b, &[1], 1000)).await;
    // A new device since does not change the answer's time, and nothing is queued twice.
    store
        .add_device(device(business_account(BUSINESS, WABA), "late", &[], None))
        .await
        .unwrap();
    let again = accepted(store, message(1, &u, &b, &[1], 5000)).await;
    assert_eq!(
        again,
        Accepted {
            duplicate: true,
            devices: vec![DeviceId(1), DeviceId(2)],
            ..first
        }
    );
    assert_eq!(queued(store, &b, 1).await.len(), 1);
    assert!(queued(store, &b, 2).await.is_empty());
}

pub(super) async fn only_accepted_ids_count_as_submitted(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    assert!(!store.submitted(&u, &mid(1)).await.unwrap());
    accepted(store, message(1, &u, &b, &[1], 1000)).await;
    assert!(store.submitted(&u, &mid(1)).await.unwrap());
    // Per sender: the same id from the business is another submission.
    assert!(!store.submitted(&b, &mid(1)).await.unwrap());
    // A refused submission leaves nothing to retry.
    let stale = message(2, &u, &b, &[1, 2], 1000);
    assert!(matches!(
        refused(store, stale).await,
        Refusal::StaleDevices(_)
    ));
    assert!(!store.submitted(&u, &mid(2)).await.unwrap());
}

pub(super) async fn reusing_an_id_for_different_content_is_refused(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    accepted(store, message(1, &u, &b, &[1], 1000)).await;
    let changed = NewSubmission {
        fingerprint: "something else".into(),
        ..message(1, &u, &b, &[1], 1000)
    };
    assert_eq!(refused(store, changed).await, Refusal::IdReused);
    assert_eq!(queued(store, &b, 1).await.len(), 1);
}

pub(super) async fn a_resend_of_an_accepted_id_queues_new_copies_under_the_first_acceptance(
    store: &dyn RelayStore,
) {
    let (u, b) = (user(store, USER, 2).await, business(store, 1).await);
    accepted(store, message(1, &u, &b, &[1], 1000)).await;
    let first = accepted(store, message(2, &b, &u, &[1, 2], 1000)).await;
    // Two days later the window is closed, but the message was accepted inside it: a new
    // encryption for device 2 is queued under the first acceptance, not decided again.
    let resend = NewSubmission {
        fingerprint: "a new encryption".into(),
        resend: true,
        ..message(2, &b, &u, &[2], 1000 + 2 * 86_400)
    };
    let again = accepted(store, resend.clone()).await;
    assert_eq!(again.accepted_at, first.accepted_at);
    assert_eq!(again.devices, [DeviceId(2)]);
    assert!(!again.duplicate);
    assert_eq!(queued(store, &u, 1).await.len(), 1);
    assert_eq!(
        queued(store, &u, 2).await,
        [mid(2).to_string(), mid(2).to_string()]
    );
    // Copies for a device the recipient does not have, or none at all, are stale.
    for stale in [&[3][..], &[]] {
        let bad = NewSubmission {
            fingerprint: "another encryption".into(),
            resend: true,
            ..message(2, &b, &u, stale, 1000)
        };
        assert!(matches!(
            refused(store, bad).await,
            Refusal::StaleDevices(_)
        ));
    }
    // Without the flag, different content under an accepted id is still a reused id.
    let plain = NewSubmission {
        resend: false,
        ..resend
    };
    assert_eq!(refused(store, plain).await, Refusal::IdReused);
}

pub(super) async fn a_resend_must_repeat_its_message_and_is_capped(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    let other = user(store, OTHER_USER, 1).await;
    accepted(store, message(1, &u, &b, &[1], 1000)).await;
    accepted(store, message(2, &b, &u, &[1], 1000)).await;
    let resend = |fingerprint: &str| NewSubmission {
        fingerprint: fingerprint.into(),
        resend: true,
        ..message(2, &b, &u, &[1], 1000)
    };
    // An accepted id does not open a way to anyone else (the other user never wrote to
    // the business), nor to another kind of message.
    let elsewhere = NewSubmission {
        recipient: other.clone(),
        ..resend("to another user")
    };
    assert_eq!(refused(store, elsewhere).await, Refusal::IdReused);
    let as_template = NewSubmission {
        header: "template:1:en:1:promo".into(),
        ..resend("as a template")
    };
    assert_eq!(refused(store, as_template).await, Refusal::IdReused);
    assert!(queued(store, &other, 1).await.is_empty());
    // And one message is resent only so often.
    for n in 0..ventana_store::relay::MAX_RESENDS_PER_MESSAGE {
        accepted(store, resend(&format!("encryption {n}"))).await;
    }
    assert_eq!(refused(store, resend("one more")).await, Refusal::IdReused);
}

pub(super) async fn a_resend_of_an_id_never_accepted_is_a_first_submission(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 2).await, business(store, 1).await);
    accepted(store, message(1, &u, &b, &[1], 1000)).await;
    // The rules apply as to any first submission: outside the window it is refused...
    let late = NewSubmission {
        resend: true,
        ..message(2, &b, &u, &[1, 2], 1000 + 2 * 86_400)
    };
    assert!(matches!(refused(store, late).await, Refusal::Rule(_)));
    // ...and every device needs its copy.
    let partial = NewSubmission {
        resend: true,
        ..message(2, &b, &u, &[1], 1000)
    };
    assert!(matches!(
        refused(store, partial).await,
        Refusal::StaleDevices(_)
    ));
    let whole = NewSubmission {
        resend: true,
        ..message(2, &b, &u, &[1, 2], 1000)
    };
    assert!(!accepted(store, whole).await.duplicate);
    assert!(store.submitted(&b, &mid(2)).await.unwrap());
}

pub(super) async fn a_stale_device_list_is_refused_with_the_current_devices(
    store: &dyn RelayStore,
) {
    let (u, b) = (user(store, USER, 1).await, business(store, 2).await);
    let current = store.devices(&b).await.unwrap();
    for stale in [&[1][..], &[1, 2, 3], &[1, 1, 2], &[]] {
        let refusal = refused(store, message(1, &u, &b, stale, 1000)).await;
        assert_eq!(
            refusal,
            Refusal::StaleDevices(current.clone()),
            "copies for {stale:?}"
        );
    }
    assert!(queued(store, &b, 1).await.is_empty());
    // The refusals left no trace: the same id is still free, and the contact is still new.
    assert!(
        !accepted(store, message(1, &u, &b, &[1, 2], 1000))
            .await
            .duplicate
    );
}

pub(super) async fn a_shared_body_is_queued_for_every_device(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 2).await, business(store, 1).await);
    accepted(store, message(1, &u, &b, &[1], 1000)).await;
    let receipt = NewSubmission {
        body: EnvelopeBody::Shared(b"read".to_vec()),
        ..submission(2, &b, &u, EnvelopeKind::Receipt, &[], 1001)
    };
    assert_eq!(
        accepted(store, receipt).await.devices,
        [DeviceId(1), DeviceId(2)]
    );
    for d in [1, 2] {
        let pending = store.pending(&u, DeviceId(d), 0, 10).await.unwrap();
        assert_eq!(
            (pending[0].kind, pending[0].body.as_slice()),
            (EnvelopeKind::Receipt, &b"read"[..])
        );
    }
}

pub(super) async fn an_unknown_recipient_is_refused(store: &dyn RelayStore) {
    let u = user(store, USER, 1).await;
    assert_eq!(
        refused(store, message(1, &u, &phone(BUSINESS), &[1], 1000)).await,
        Refusal::UnknownRecipient
    );
}

pub(super) async fn users_cannot_message_users(store: &dyn RelayStore) {
    let (a, b) = (user(store, USER, 1).await, user(store, OTHER_USER, 1).await);
    assert_eq!(
        refused(store, message(1, &a, &b, &[1], 1000)).await,
        Refusal::Rule(RuleViolation::NotBusinessMessaging)
    );
}

pub(super) async fn envelopes_from_a_blocked_business_are_held_back(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    accepted(store, message(1, &u, &b, &[1], 1000)).await;
    accepted(store, message(2, &b, &u, &[1], 1001)).await;

    store
        .set_blocked(&u, &b, true, UnixTime(1002))
        .await
        .unwrap();
    assert!(queued(store, &u, 1).await.is_empty());
    assert_eq!(
        refused(store, message(3, &b, &u, &[1], 1003)).await,
        Refusal::Rule(RuleViolation::Blocked)
    );
    // The user may still write to the business they blocked.
    accepted(store, message(4, &u, &b, &[1], 1004)).await;

    store
        .set_blocked(&u, &b, false, UnixTime(1005))
        .await
        .unwrap();
    assert_eq!(queued(store, &u, 1).await, [mid(2).to_string()]);
}

pub(super) async fn a_blocked_business_cannot_create_consent(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    store
        .set_blocked(&u, &b, true, UnixTime(1000))
        .await
        .unwrap();
    store
        .set_blocked(&u, &b, true, UnixTime(1001))
        .await
        .unwrap();
    assert_eq!(
        refused(store, message(1, &b, &u, &[1], 1002)).await,
        Refusal::Rule(RuleViolation::NoContact)
    );
    // Neither blocking nor a receipt from the user made a contact.
    let receipt = NewSubmission {
        body: EnvelopeBody::Shared(b"read".to_vec()),
        ..submission(2, &u, &b, EnvelopeKind::Receipt, &[], 1003)
    };
    accepted(store, receipt).await;
    store
        .set_blocked(&u, &b, false, UnixTime(1004))
        .await
        .unwrap();
    assert_eq!(
        refused(store, message(3, &b, &u, &[1], 1005)).await,
        Refusal::Rule(RuleViolation::NoContact)
    );
}

pub(super) async fn acknowledging_removes_only_that_devices_envelopes(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 2).await);
    accepted(store, message(1, &u, &b, &[1, 2], 1000)).await;
    let mine = store.pending(&b, DeviceId(1), 0, 10).await.unwrap()[0].seq;
    let theirs = store.pending(&b, DeviceId(2), 0, 10).await.unwrap()[0].seq;

    assert_eq!(
        store
            .ack(&b, DeviceId(1), &[mine, theirs, 9999])
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.ack(&b, DeviceId(1), &[mine]).await.unwrap(), 0);
    assert!(queued(store, &b, 1).await.is_empty());
    assert_eq!(queued(store, &b, 2).await.len(), 1);
}

pub(super) async fn pending_pages_by_sequence(store: &dyn RelayStore) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    for id in 1..=5 {
        accepted(store, message(id, &u, &b, &[1], 1000 + i64::from(id))).await;
    }
    let first = store.pending(&b, DeviceId(1), 0, 2).await.unwrap();
    let rest = store
        .pending(&b, DeviceId(1), first[1].seq, 10)
        .await
        .unwrap();
    let ids: Vec<_> = first.iter().chain(&rest).map(|e| e.id.clone()).collect();
    assert_eq!(ids, (1..=5).map(mid).collect::<Vec<_>>());
    assert!(first[0].seq < first[1].seq && first[1].seq < rest[0].seq);

    // Sequence numbers are never reused, even once the newest envelopes are acknowledged.
    let seqs: Vec<_> = rest.iter().map(|e| e.seq).collect();
    store.ack(&b, DeviceId(1), &seqs).await.unwrap();
    accepted(store, message(6, &u, &b, &[1], 2000)).await;
    let newest = store
        .pending(&b, DeviceId(1), first[1].seq, 10)
        .await
        .unwrap();
    assert!(newest[0].seq > seqs[seqs.len() - 1]);
}

pub(super) async fn a_business_learns_nothing_of_numbers_it_may_not_write_to(
    store: &dyn RelayStore,
) {
    let (u, b) = (user(store, USER, 2).await, business(store, 1).await);
    // Not a user at all, and a user who never wrote: the same answer, no device list.
    let nobody = phone(OTHER_USER);
    assert_eq!(
        refused(store, message(1, &b, &nobody, &[1], 1000)).await,
        Refusal::Rule(RuleViolation::NoContact)
    );
    assert_eq!(
        refused(store, message(2, &b, &u, &[9], 1000)).await,
        Refusal::Rule(RuleViolation::NoContact)
    );
}

pub(super) async fn committed_changes_wake_the_devices_they_concern(store: &dyn RelayStore) {
    let mut wakeups = store.wakeups();
    let (u, b) = (user(store, USER, 2).await, business(store, 1).await);
    accepted(store, message(1, &u, &b, &[1], 1000)).await;
    // Published when the transaction commits, and received asynchronously where wake-ups
    // travel through the database (PostgreSQL's NOTIFY): wait a little for each.
    async fn next(w: &mut tokio::sync::broadcast::Receiver<Wakeup>) -> Wakeup {
        tokio::time::timeout(std::time::Duration::from_secs(10), w.recv())
            .await
            .expect("no wake-up within 10 s")
            .unwrap()
    }
    assert_eq!(
        next(&mut wakeups).await,
        Wakeup {
            account: b.clone(),
            device: DeviceId(1),
            reason: WakeReason::Envelopes
        }
    );
    // A refused submission wakes nobody (wake-ups arrive in commit order: the next one seen
    // must be the claim's).
    refused(store, message(2, &b, &phone(OTHER_USER), &[1], 1000)).await;
    // (The test devices have no one-time keys: a claim yields their fallback keys.)
    store
        .upload_keys(&u, DeviceId(2), &[], Some(&key("f2")), 1000)
        .await
        .unwrap();
    store
        .claim_pre_keys(&u, Some(&[DeviceId(2)]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut wakeups).await,
        Wakeup {
            account: u.clone(),
            device: DeviceId(2),
            reason: WakeReason::KeysClaimed
        }
    );
    store.set_blocked(&u, &b, true, UnixTime(1)).await.unwrap();
    store.set_blocked(&u, &b, false, UnixTime(2)).await.unwrap();
    for device in [1, 2] {
        assert_eq!(
            next(&mut wakeups).await,
            Wakeup {
                account: u.clone(),
                device: DeviceId(device),
                reason: WakeReason::Rescan
            }
        );
    }
}
