//! Cases for verification codes, business clocks, devices and pre-keys.

use super::*;

// --- verification codes ----------------------------------------------------------------

pub(super) async fn a_correct_code_verifies_once(store: &dyn RelayStore) {
    let p = phone(USER);
    assert_eq!(
        store
            .check_verification(&p, "123456", UnixTime(10))
            .await
            .unwrap(),
        VerificationOutcome::NoneRequested
    );
    store
        .put_verification(&p, "123456", UnixTime(0), UnixTime(100))
        .await
        .unwrap();
    assert_eq!(
        store
            .peek_verification(&p, UnixTime(10))
            .await
            .unwrap()
            .as_deref(),
        Some("123456")
    );
    assert_eq!(
        store
            .check_verification(&p, "123456", UnixTime(10))
            .await
            .unwrap(),
        VerificationOutcome::Verified
    );
    assert_eq!(
        store
            .check_verification(&p, "123456", UnixTime(10))
            .await
            .unwrap(),
        VerificationOutcome::NoneRequested
    );
}

pub(super) async fn the_fifth_wrong_code_burns_it(store: &dyn RelayStore) {
    let p = phone(USER);
    store
        .put_verification(&p, "123456", UnixTime(0), UnixTime(100))
        .await
        .unwrap();
    for _ in 0..4 {
        assert_eq!(
            store
                .check_verification(&p, "000000", UnixTime(10))
                .await
                .unwrap(),
            VerificationOutcome::WrongCode
        );
    }
    assert_eq!(
        store
            .check_verification(&p, "000000", UnixTime(10))
            .await
            .unwrap(),
        VerificationOutcome::TooManyAttempts
    );
    // Burnt for the rest of the hour, even with the right code or a new one.
    assert_eq!(
        store
            .check_verification(&p, "123456", UnixTime(10))
            .await
            .unwrap(),
        VerificationOutcome::TooManyAttempts
    );
    assert!(
        store
            .put_verification(&p, "654321", UnixTime(20), UnixTime(500))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .check_verification(&p, "654321", UnixTime(30))
            .await
            .unwrap(),
        VerificationOutcome::TooManyAttempts
    );
    // A new hour, a new chance.
    assert!(
        store
            .put_verification(&p, "777777", UnixTime(3700), UnixTime(4000))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .check_verification(&p, "777777", UnixTime(3701))
            .await
            .unwrap(),
        VerificationOutcome::Verified
    );
}

pub(super) async fn an_expired_code_is_refused_and_forgotten(store: &dyn RelayStore) {
    let p = phone(USER);
    store
        .put_verification(&p, "123456", UnixTime(0), UnixTime(100))
        .await
        .unwrap();
    assert!(
        store
            .peek_verification(&p, UnixTime(99))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.peek_verification(&p, UnixTime(100)).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .check_verification(&p, "123456", UnixTime(100))
            .await
            .unwrap(),
        VerificationOutcome::Expired
    );
    assert_eq!(
        store
            .check_verification(&p, "123456", UnixTime(50))
            .await
            .unwrap(),
        VerificationOutcome::NoneRequested
    );
}

pub(super) async fn a_new_code_replaces_the_old_one_but_not_its_attempts(store: &dyn RelayStore) {
    let p = phone(USER);
    store
        .put_verification(&p, "111111", UnixTime(0), UnixTime(100))
        .await
        .unwrap();
    for _ in 0..3 {
        store
            .check_verification(&p, "000000", UnixTime(10))
            .await
            .unwrap();
    }
    store
        .put_verification(&p, "222222", UnixTime(0), UnixTime(100))
        .await
        .unwrap();
    // The old code no longer works, and counts as the fourth wrong guess.
    assert_eq!(
        store
            .check_verification(&p, "111111", UnixTime(10))
            .await
            .unwrap(),
        VerificationOutcome::WrongCode
    );
    assert_eq!(
        store
            .check_verification(&p, "222222", UnixTime(10))
            .await
            .unwrap(),
        VerificationOutcome::Verified
    );
}

pub(super) async fn a_successful_verification_does_not_open_a_fresh_window_of_codes(
    store: &dyn RelayStore,
) {
    let p = phone(USER);
    for i in 0..5 {
        assert!(
            store
                .put_verification(&p, "123456", UnixTime(i), UnixTime(600))
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .check_verification(&p, "123456", UnixTime(i))
                .await
                .unwrap(),
            VerificationOutcome::Verified
        );
    }
    assert!(
        !store
            .put_verification(&p, "999999", UnixTime(10), UnixTime(600))
            .await
            .unwrap(),
        "a sixth code within the hour, after five registrations"
    );
}

pub(super) async fn at_most_five_codes_are_issued_per_number_per_hour(store: &dyn RelayStore) {
    let p = phone(USER);
    for i in 0..5 {
        assert!(
            store
                .put_verification(&p, "123456", UnixTime(i), UnixTime(600))
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .put_verification(&p, "999999", UnixTime(10), UnixTime(600))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .peek_verification(&p, UnixTime(10))
            .await
            .unwrap()
            .as_deref(),
        Some("123456")
    );
    assert!(
        store
            .put_verification(&p, "999999", UnixTime(3600), UnixTime(4200))
            .await
            .unwrap()
    );
}

// --- businesses ----------------------------------------------------------------------

pub(super) async fn a_business_clock_is_created_once_and_can_be_moved(store: &dyn RelayStore) {
    let w = waba(WABA);
    assert_eq!(store.business_clock(&w).await.unwrap(), None);
    let sandbox = store.ensure_business(&w, true).await.unwrap();
    assert_eq!(
        sandbox,
        BusinessClock {
            sandbox: true,
            offset_secs: 0
        }
    );
    let later = sandbox.advanced(3600).unwrap();
    store.set_business_clock(&w, later).await.unwrap();
    // Ensuring again neither resets the clock nor changes the business's kind.
    assert_eq!(store.ensure_business(&w, false).await.unwrap(), later);
    assert_eq!(store.business_clock(&w).await.unwrap(), Some(later));
}

// --- accounts, devices, keys ---------------------------------------------------------

pub(super) async fn devices_are_numbered_per_account_and_found_by_token(store: &dyn RelayStore) {
    let first = store
        .add_device(device(user_account(USER), "a", &[], None))
        .await
        .unwrap();
    let second = store
        .add_device(device(user_account(USER), "b", &[], None))
        .await
        .unwrap();
    let other = store
        .add_device(device(user_account(OTHER_USER), "c", &[], None))
        .await
        .unwrap();
    assert_eq!(
        (first, second, other),
        (DeviceId(1), DeviceId(2), DeviceId(1))
    );

    let account = store.account(&phone(USER)).await.unwrap().unwrap();
    assert_eq!(account, user_account(USER));
    assert_eq!(
        store.device_by_token("hash-b").await.unwrap(),
        Some((account, DeviceId(2)))
    );
    assert_eq!(store.device_by_token("hash-unknown").await.unwrap(), None);

    let devices = store.devices(&phone(USER)).await.unwrap();
    let ids: Vec<_> = devices.iter().map(|d| d.device_id).collect();
    assert_eq!(ids, [DeviceId(1), DeviceId(2)]);
    assert_eq!(devices[1].curve25519, "curve-of-b");
    assert_eq!(devices[1].ed25519, "ed-of-b");
}

pub(super) async fn an_account_cannot_change_kind_or_business(store: &dyn RelayStore) {
    store
        .add_device(device(business_account(BUSINESS, WABA), "a", &[], None))
        .await
        .unwrap();
    let elsewhere = store
        .add_device(device(business_account(BUSINESS, "2002"), "b", &[], None))
        .await;
    assert!(
        matches!(elsewhere, Err(StoreError::Conflict(_))),
        "{elsewhere:?}"
    );
    let as_user = store
        .add_device(device(user_account(BUSINESS), "c", &[], None))
        .await;
    assert!(
        matches!(as_user, Err(StoreError::Conflict(_))),
        "{as_user:?}"
    );
    assert_eq!(store.devices(&phone(BUSINESS)).await.unwrap().len(), 1);
}

pub(super) async fn a_registration_with_a_taken_token_writes_nothing(store: &dyn RelayStore) {
    store
        .add_device(device(user_account(USER), "same", &[], None))
        .await
        .unwrap();
    let taken = store
        .add_device(device(user_account(OTHER_USER), "same", &["k1"], None))
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert_eq!(store.account(&phone(OTHER_USER)).await.unwrap(), None);
}

pub(super) async fn a_one_time_key_is_claimed_at_most_once(store: &dyn RelayStore) {
    store
        .add_device(device(user_account(USER), "a", &["k1", "k2"], Some("f1")))
        .await
        .unwrap();
    let p = phone(USER);
    assert_eq!(store.one_time_key_count(&p, DeviceId(1)).await.unwrap(), 2);

    let mut handed_out = Vec::new();
    for _ in 0..4 {
        let claims = store.claim_pre_keys(&p, None).await.unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].device.device_id, DeviceId(1));
        handed_out.push((claims[0].key.clone(), claims[0].fallback));
    }
    // Oldest first, then the fallback key, which is kept for every later claim.
    assert_eq!(
        handed_out,
        [
            (key("k1"), false),
            (key("k2"), false),
            (key("f1"), true),
            (key("f1"), true)
        ]
    );
    assert_eq!(store.one_time_key_count(&p, DeviceId(1)).await.unwrap(), 0);
}

pub(super) async fn concurrent_claims_never_share_a_key(store: &dyn RelayStore) {
    store
        .add_device(device(
            user_account(USER),
            "a",
            &["k1", "k2", "k3", "k4"],
            None,
        ))
        .await
        .unwrap();
    let p = phone(USER);
    let (a, b, c, d, e) = tokio::join!(
        store.claim_pre_keys(&p, None),
        store.claim_pre_keys(&p, None),
        store.claim_pre_keys(&p, None),
        store.claim_pre_keys(&p, None),
        store.claim_pre_keys(&p, None),
    );
    let mut ids: Vec<String> = [a, b, c, d, e]
        .into_iter()
        .flat_map(|claims| claims.unwrap())
        .map(|claim| claim.key.key_id)
        .collect();
    ids.sort();
    // Four keys for five claims: one claim found the device with nothing left (no fallback).
    assert_eq!(ids, ["k1", "k2", "k3", "k4"]);
}

pub(super) async fn a_number_holds_at_most_its_device_limit(store: &dyn RelayStore) {
    let limited = |token: &str| NewDevice {
        max_devices: Some(2),
        ..device(user_account(USER), token, &["k1"], None)
    };
    store.add_device(limited("a")).await.unwrap();
    store.add_device(limited("b")).await.unwrap();
    let third = store.add_device(limited("c")).await.unwrap_err();
    assert_eq!(third.conflict_kind(), Some(ConflictKind::Limit), "{third}");
    assert!(store.device_by_token("hash-c").await.unwrap().is_none());
    assert_eq!(store.devices(&phone(USER)).await.unwrap().len(), 2);
    // Other numbers are counted apart; a refused registration used no device id.
    store
        .add_device(NewDevice {
            max_devices: Some(2),
            ..device(user_account(OTHER_USER), "d", &[], None)
        })
        .await
        .unwrap();
    let id = store
        .add_device(NewDevice {
            max_devices: Some(3),
            ..device(user_account(USER), "e", &[], None)
        })
        .await
        .unwrap();
    assert_eq!(id, DeviceId(3));
}

pub(super) async fn an_upload_past_the_key_limit_is_refused_whole(store: &dyn RelayStore) {
    let id = store
        .add_device(device(user_account(USER), "a", &["k1", "k2"], Some("f1")))
        .await
        .unwrap();
    let p = phone(USER);
    let refused = store
        .upload_keys(&p, id, &[key("k3"), key("k4")], Some(&key("f2")), 3)
        .await
        .unwrap_err();
    assert_eq!(
        refused.conflict_kind(),
        Some(ConflictKind::Limit),
        "{refused}"
    );
    assert_eq!(store.one_time_key_count(&p, id).await.unwrap(), 2);
    // Keys sent again do not count twice: the limit is on what is left unclaimed.
    assert_eq!(
        store
            .upload_keys(&p, id, &[key("k1"), key("k2"), key("k3")], None, 3)
            .await
            .unwrap(),
        3
    );
}

pub(super) async fn uploading_the_same_keys_again_changes_nothing(store: &dyn RelayStore) {
    let id = store
        .add_device(device(user_account(USER), "a", &["k1", "k2"], None))
        .await
        .unwrap();
    let p = phone(USER);
    assert_eq!(
        store
            .upload_keys(&p, id, &[key("k1"), key("k2")], None, 1000)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .upload_keys(&p, id, &[key("k2"), key("k3")], None, 1000)
            .await
            .unwrap(),
        3
    );
}

pub(super) async fn a_different_key_under_a_known_id_is_a_conflict_and_nothing_is_written(
    store: &dyn RelayStore,
) {
    let id = store
        .add_device(device(user_account(USER), "a", &["k1"], Some("f1")))
        .await
        .unwrap();
    let p = phone(USER);
    let forged = SignedKey {
        key: "another".into(),
        ..key("k1")
    };
    let upload = store
        .upload_keys(&p, id, &[key("k2"), forged], Some(&key("f2")), 1000)
        .await;
    assert!(matches!(upload, Err(StoreError::Conflict(_))), "{upload:?}");

    assert_eq!(store.one_time_key_count(&p, id).await.unwrap(), 1);
    let claims: Vec<_> = [
        store.claim_pre_keys(&p, None).await.unwrap(),
        store.claim_pre_keys(&p, None).await.unwrap(),
    ]
    .into_iter()
    .flatten()
    .map(|c| c.key)
    .collect();
    assert_eq!(
        claims,
        [key("k1"), key("f1")],
        "neither k2 nor the new fallback key was kept"
    );
}

pub(super) async fn a_claimed_key_cannot_be_uploaded_back(store: &dyn RelayStore) {
    let id = store
        .add_device(device(user_account(USER), "a", &["k1"], None))
        .await
        .unwrap();
    let p = phone(USER);
    assert_eq!(
        store.claim_pre_keys(&p, None).await.unwrap()[0].key,
        key("k1")
    );
    // A retried upload carrying k1 again must not hand it out a second time.
    assert_eq!(
        store
            .upload_keys(&p, id, &[key("k1"), key("k2")], None, 1000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.claim_pre_keys(&p, None).await.unwrap()[0].key,
        key("k2")
    );
}

pub(super) async fn claims_cover_every_device_and_skip_those_without_keys(store: &dyn RelayStore) {
    store
        .add_device(device(user_account(USER), "a", &["a1"], None))
        .await
        .unwrap();
    store
        .add_device(device(user_account(USER), "b", &[], Some("b-old")))
        .await
        .unwrap();
    store
        .add_device(device(user_account(USER), "c", &[], None))
        .await
        .unwrap();
    let p = phone(USER);
    assert_eq!(
        store
            .upload_keys(&p, DeviceId(2), &[], Some(&key("b-new")), 1000)
            .await
            .unwrap(),
        0
    );

    let claims = store.claim_pre_keys(&p, None).await.unwrap();
    let seen: Vec<_> = claims
        .iter()
        .map(|c| (c.device.device_id, c.key.key_id.as_str(), c.fallback))
        .collect();
    assert_eq!(
        seen,
        [(DeviceId(1), "a1", false), (DeviceId(2), "b-new", true)]
    );
}

pub(super) async fn a_claim_can_be_limited_to_some_devices(store: &dyn RelayStore) {
    store
        .add_device(device(user_account(USER), "a", &["a1", "a2"], None))
        .await
        .unwrap();
    store
        .add_device(device(user_account(USER), "b", &["b1", "b2"], None))
        .await
        .unwrap();
    let p = phone(USER);
    let claims = store
        .claim_pre_keys(&p, Some(&[DeviceId(2)]))
        .await
        .unwrap();
    let seen: Vec<_> = claims
        .iter()
        .map(|c| (c.device.device_id, c.key.key_id.as_str()))
        .collect();
    assert_eq!(seen, [(DeviceId(2), "b1")]);
    // Device 1's keys were left alone.
    assert_eq!(store.one_time_key_count(&p, DeviceId(1)).await.unwrap(), 2);
    assert_eq!(store.one_time_key_count(&p, DeviceId(2)).await.unwrap(), 1);
}
