//! Metering: a business message is rated when delivered, under the policy version in force,
//! once however often (and on however many nodes) its delivery is reported.

use super::*;
use ventana_core::pricing::ledger::verify;
use ventana_core::pricing::{EXAMPLE_POLICY, Model, PricingType};
use ventana_store::ledger::PolicyAdded;

/// A user message at `1_000`, then from the business a free-form reply inside the window
/// (id 2) and a marketing template outside it (id 3). Returns (user, business).
pub(super) async fn a_window_and_two_business_messages(
    store: &dyn RelayStore,
) -> (PhoneNumber, PhoneNumber) {
    let (u, b) = (user(store, USER, 1).await, business(store, 1).await);
    accepted(store, message(1, &u, &b, &[1], 1_000)).await;
    accepted(store, message(2, &b, &u, &[1], 2_000)).await;
    let mut promo = submission(
        3,
        &b,
        &u,
        EnvelopeKind::Template,
        &[1],
        1_000 + WINDOW_SECS + 5,
    );
    promo.category = PricingCategory::Marketing;
    let ok = accepted(store, promo).await;
    // The `sent` status's pricing: as it would be charged now.
    let note = ok.pricing.expect("a business message is priced");
    assert!(note.billable);
    assert_eq!(note.category, PricingCategory::Marketing);
    (u, b)
}

pub(super) async fn a_delivery_is_charged_once_under_the_policy_in_force(store: &dyn RelayStore) {
    let added = store.add_policy(EXAMPLE_POLICY, UnixTime(1)).await.unwrap();
    assert!(matches!(added, PolicyAdded::Added(_)));
    let again = store.add_policy(EXAMPLE_POLICY, UnixTime(2)).await.unwrap();
    assert!(matches!(again, PolicyAdded::Unchanged(_)));
    let (u, b) = a_window_and_two_business_messages(store).await;
    let ids = [mid(2), mid(3), mid(1), mid(99)];
    let priced = store
        .meter_delivery(&b, &u, &ids, UnixTime(1_000 + WINDOW_SECS + 60))
        .await
        .unwrap();
    // The user's own message and an unknown id are not the business's to be charged for.
    assert_eq!(
        priced.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        [mid(2), mid(3)]
    );
    assert!(!priced[0].pricing.billable);
    assert_eq!(
        priced[0].pricing.pricing_type,
        PricingType::FreeCustomerService
    );
    assert!(priced[1].pricing.billable);
    assert_eq!(priced[1].pricing.model, Model::PerMessage2025);

    // Reported again (read, another device, a retry): the same pricing, nothing appended.
    let again = store
        .meter_delivery(&b, &u, &ids, UnixTime(1_000 + WINDOW_SECS + 120))
        .await
        .unwrap();
    assert_eq!(again, priced);
    let entries = store.ledger_entries(&waba(WABA), 0, 100).await.unwrap();
    assert_eq!(entries.len(), 2);
    verify(&waba(WABA), &entries).unwrap();
    assert_eq!(entries[1].charge.amount.0, 250);
    assert_eq!(entries[1].charge.policy_version, "example-per-message-2025");
    // Another user cannot report the business's messages delivered.
    let other = user(store, OTHER_USER, 1).await;
    let none = store
        .meter_delivery(&b, &other, &ids, UnixTime(1_000 + WINDOW_SECS + 60))
        .await
        .unwrap();
    assert!(none.is_empty());
}

pub(super) async fn a_policy_version_is_never_changed_once_loaded(store: &dyn RelayStore) {
    store.add_policy(EXAMPLE_POLICY, UnixTime(1)).await.unwrap();
    let changed = EXAMPLE_POLICY.replace("\"0.0250\"", "\"0.0260\"");
    let refused = store.add_policy(&changed, UnixTime(2)).await.unwrap_err();
    assert!(matches!(refused, StoreError::Conflict(_)), "{refused:?}");
    let versions = store.policy_versions().await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].text, EXAMPLE_POLICY);
}

pub(super) async fn only_a_business_message_is_charged_once_per_business_id(
    store: &dyn RelayStore,
) {
    store.add_policy(EXAMPLE_POLICY, UnixTime(1)).await.unwrap();
    let (u, b) = a_window_and_two_business_messages(store).await;
    // The business's own receipt (the gateway marking the user's message read) goes the
    // same way, but a user reporting it "delivered" charges nothing.
    let mut read = submission(4, &b, &u, EnvelopeKind::Receipt, &[], 2_100);
    read.body = EnvelopeBody::Shared(b"receipt".to_vec());
    accepted(store, read).await;
    let at = UnixTime(1_000 + WINDOW_SECS + 60);
    assert!(
        store
            .meter_delivery(&b, &u, &[mid(4)], at)
            .await
            .unwrap()
            .is_empty()
    );

    // Once charged, a retry of the send is answered with the entry's pricing.
    let priced = store.meter_delivery(&b, &u, &[mid(3)], at).await.unwrap();
    let mut retry = submission(
        3,
        &b,
        &u,
        EnvelopeKind::Template,
        &[1],
        1_000 + WINDOW_SECS + 5,
    );
    retry.category = PricingCategory::Marketing;
    let again = accepted(store, retry).await;
    assert!(again.duplicate);
    assert_eq!(again.pricing.as_ref(), Some(&priced[0].pricing));

    // Another number of the same business may not reuse the id: the ledger knows a
    // business's messages by id.
    let second = business_account("16505550101", WABA);
    store
        .add_device(device(second, "second-1", &[], None))
        .await
        .unwrap();
    let other = phone("16505550101");
    accepted(
        store,
        message(5, &u, &other, &[1], 1_000 + WINDOW_SECS + 10),
    )
    .await;
    let mut reuse = submission(
        3,
        &other,
        &u,
        EnvelopeKind::Template,
        &[1],
        1_000 + WINDOW_SECS + 20,
    );
    reuse.category = PricingCategory::Marketing;
    assert_eq!(refused(store, reuse).await, Refusal::IdReused);
    let entries = store.ledger_entries(&waba(WABA), 0, 100).await.unwrap();
    assert_eq!(entries.len(), 1);
}
