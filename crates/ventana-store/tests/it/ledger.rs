//! The billing ledger: a charge appended once per message, numbered and hash-chained per
//! business, on every backend.

use ventana_core::pricing::ledger::verify;
use ventana_core::pricing::{Amount, Charge, Model, PricingCategory, PricingType, WindowState};
use ventana_core::{UnixTime, WabaId};
use ventana_store::LedgerStore;
use ventana_store::ledger::Appended;

conformance!(
    sqlite,
    crate::open::sqlite_relay,
    [
        a_charge_is_appended_once_however_often_it_is_reported,
        each_business_has_its_own_chain_and_it_verifies,
        concurrent_appends_each_get_their_own_number,
    ]
);
conformance!(
    postgres,
    crate::open::postgres_relay,
    [
        a_charge_is_appended_once_however_often_it_is_reported,
        each_business_has_its_own_chain_and_it_verifies,
        concurrent_appends_each_get_their_own_number,
    ]
);

fn waba(n: u32) -> WabaId {
    format!("10229012934{n:04}").parse().unwrap()
}

fn charge(business: u32, message: u32, amount: i64) -> Charge {
    Charge {
        waba_id: waba(business),
        message_id: format!("wamid.ledgerconformance{business:04}{message:06}")
            .parse()
            .unwrap(),
        destination: "447700900123".parse().unwrap(),
        delivered_at: UnixTime(1_796_083_200 + i64::from(message)),
        policy_version: "2026-12-example".into(),
        model: Model::PerMessage2025,
        category: PricingCategory::Marketing,
        template: true,
        window: WindowState::Closed,
        pricing_type: PricingType::Regular,
        manual: false,
        rate: Amount(amount),
        amount: Amount(amount),
        currency: "USD".into(),
        precision: 4,
        conversation_id: None,
    }
}

async fn a_charge_is_appended_once_however_often_it_is_reported(store: &dyn LedgerStore) {
    let first = store.append_charge(charge(1, 1, 250)).await.unwrap();
    let Appended::New(entry) = first else {
        panic!("the first report must append: {first:?}")
    };
    assert_eq!(entry.seq, 1);
    // A redelivery reports it again, even with other figures: the first entry stands.
    for amount in [250, 999] {
        let again = store.append_charge(charge(1, 1, amount)).await.unwrap();
        assert_eq!(again, Appended::Already(entry.clone()));
    }
    let entries = store.ledger_entries(&waba(1), 0, 100).await.unwrap();
    assert_eq!(entries, vec![entry]);
}

async fn each_business_has_its_own_chain_and_it_verifies(store: &dyn LedgerStore) {
    for message in 1..=5 {
        store.append_charge(charge(1, message, 250)).await.unwrap();
        if message <= 3 {
            store.append_charge(charge(2, message, 40)).await.unwrap();
        }
    }
    let one = store.ledger_entries(&waba(1), 0, 100).await.unwrap();
    let two = store.ledger_entries(&waba(2), 0, 100).await.unwrap();
    assert_eq!(
        one.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(two.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    verify(&waba(1), &one).unwrap();
    verify(&waba(2), &two).unwrap();
    let total: i64 = one.iter().map(|e| e.charge.amount.0).sum();
    assert_eq!(total, 5 * 250);
    // Paging continues after the last number seen.
    let rest = store.ledger_entries(&waba(1), 3, 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
}

async fn concurrent_appends_each_get_their_own_number(store: &dyn LedgerStore) {
    let appends = (1..=20).map(|message| store.append_charge(charge(3, message, 35)));
    for appended in futures_util::future::join_all(appends).await {
        assert!(matches!(appended.unwrap(), Appended::New(_)));
    }
    let entries = store.ledger_entries(&waba(3), 0, 100).await.unwrap();
    assert_eq!(entries.len(), 20);
    verify(&waba(3), &entries).unwrap();
}

/// A row edited in the file behind the store's back is found by the verifier, at that row.
#[tokio::test]
async fn an_amount_edited_in_the_sqlite_file_breaks_the_chain_there() {
    let store = crate::sqlite_relay();
    for message in 1..=4 {
        store.append_charge(charge(4, message, 250)).await.unwrap();
    }
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let edited = conn
        .execute(
            "UPDATE ledger SET amount = 1 WHERE waba_id = ?1 AND seq = 3",
            [waba(4).as_str()],
        )
        .unwrap();
    assert_eq!(edited, 1);
    let entries = store.ledger_entries(&waba(4), 0, 100).await.unwrap();
    let broken = verify(&waba(4), &entries).unwrap_err();
    assert_eq!(broken.seq, 3);
}
