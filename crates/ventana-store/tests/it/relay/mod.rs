//! `RelayStore` conformance: verification codes, clocks, devices and keys, the rules at
//! acceptance, the queues, blocking. The relay's `TemplateStore` is in `templates`.

use crate::{mid, phone, waba};
use ventana_core::pricing::PricingCategory;
use ventana_core::protocol::SignedKey;
use ventana_core::rules::{AccountKind, EnvelopeKind, RuleViolation, WINDOW_SECS};
use ventana_core::{BusinessClock, DeviceId, PhoneNumber, UnixTime};
use ventana_store::relay::{
    Accepted, AccountRecord, EnvelopeBody, ManualLimit, NewDevice, NewSubmission, Refusal,
    VerificationOutcome, WakeReason, Wakeup,
};
use ventana_store::{ConflictKind, RelayStore, StoreError};

mod accounts;
mod billing;
mod envelopes;
mod nodes;
mod templates;

use accounts::*;
use billing::*;
use envelopes::*;

/// Every relay case against one backend.
macro_rules! relay_cases {
    ($backend:ident, $open:path) => {
        conformance!(
            $backend,
            $open,
            [
                a_correct_code_verifies_once,
                the_fifth_wrong_code_burns_it,
                an_expired_code_is_refused_and_forgotten,
                a_new_code_replaces_the_old_one_but_not_its_attempts,
                at_most_five_codes_are_issued_per_number_per_hour,
                a_successful_verification_does_not_open_a_fresh_window_of_codes,
                a_business_clock_is_created_once_and_can_be_moved,
                devices_are_numbered_per_account_and_found_by_token,
                an_account_cannot_change_kind_or_business,
                a_registration_with_a_taken_token_writes_nothing,
                a_one_time_key_is_claimed_at_most_once,
                concurrent_claims_never_share_a_key,
                a_number_holds_at_most_its_device_limit,
                an_upload_past_the_key_limit_is_refused_whole,
                uploading_the_same_keys_again_changes_nothing,
                a_different_key_under_a_known_id_is_a_conflict_and_nothing_is_written,
                a_claimed_key_cannot_be_uploaded_back,
                claims_cover_every_device_and_skip_those_without_keys,
                a_claim_can_be_limited_to_some_devices,
                a_user_message_creates_the_contact_and_reaches_every_device,
                a_business_cannot_write_first,
                a_free_form_message_outside_the_window_is_refused,
                a_sandbox_clock_moves_the_window_and_the_timestamps,
                resubmitting_the_same_id_is_answered_as_the_first_time,
                only_accepted_ids_count_as_submitted,
                reusing_an_id_for_different_content_is_refused,
                a_resend_of_an_accepted_id_queues_new_copies_under_the_first_acceptance,
                a_resend_of_an_id_never_accepted_is_a_first_submission,
                a_resend_must_repeat_its_message_and_is_capped,
                a_stale_device_list_is_refused_with_the_current_devices,
                a_business_learns_nothing_of_numbers_it_may_not_write_to,
                committed_changes_wake_the_devices_they_concern,
                a_shared_body_is_queued_for_every_device,
                an_unknown_recipient_is_refused,
                users_cannot_message_users,
                envelopes_from_a_blocked_business_are_held_back,
                a_blocked_business_cannot_create_consent,
                acknowledging_removes_only_that_devices_envelopes,
                pending_pages_by_sequence,
                a_delivery_is_charged_once_under_the_policy_in_force,
                a_policy_version_is_never_changed_once_loaded,
                only_a_business_message_is_charged_once_per_business_id,
            ]
        );
    };
}

relay_cases!(sqlite, crate::open::sqlite_relay);
relay_cases!(postgres, crate::open::postgres_relay);

const USER: &str = "34600111222";
const OTHER_USER: &str = "34600333444";
const BUSINESS: &str = "16505550100";
const WABA: &str = "1001";

fn key(id: &str) -> SignedKey {
    SignedKey {
        key_id: id.into(),
        key: format!("curve-{id}"),
        signature: format!("sig-{id}"),
    }
}

fn user_account(address: &str) -> AccountRecord {
    AccountRecord {
        address: phone(address),
        kind: AccountKind::User,
        waba_id: None,
        verified_name: None,
        created_at: UnixTime(1),
    }
}

fn business_account(address: &str, waba_id: &str) -> AccountRecord {
    AccountRecord {
        address: phone(address),
        kind: AccountKind::Business,
        waba_id: Some(waba(waba_id)),
        verified_name: Some("Acme".into()),
        created_at: UnixTime(1),
    }
}

fn device(account: AccountRecord, token: &str, keys: &[&str], fallback: Option<&str>) -> NewDevice {
    NewDevice {
        account,
        token_hash: format!("hash-{token}"),
        curve25519: format!("curve-of-{token}"),
        ed25519: format!("ed-of-{token}"),
        one_time_keys: keys.iter().map(|id| key(id)).collect(),
        fallback_key: fallback.map(key),
        max_devices: None,
    }
}

/// Registers `devices` devices for a user and returns the address.
async fn user(store: &dyn RelayStore, address: &str, devices: u32) -> PhoneNumber {
    for n in 1..=devices {
        store
            .add_device(device(
                user_account(address),
                &format!("{address}-{n}"),
                &[],
                None,
            ))
            .await
            .unwrap();
    }
    phone(address)
}

/// Registers a business number of `WABA` with `devices` devices and returns the address.
async fn business(store: &dyn RelayStore, devices: u32) -> PhoneNumber {
    store.ensure_business(&waba(WABA), true).await.unwrap();
    for n in 1..=devices {
        let account = business_account(BUSINESS, WABA);
        store
            .add_device(device(account, &format!("{BUSINESS}-{n}"), &[], None))
            .await
            .unwrap();
    }
    phone(BUSINESS)
}

/// A submission with one copy per listed device.
fn submission(
    id: u32,
    from: &PhoneNumber,
    to: &PhoneNumber,
    kind: EnvelopeKind,
    devices: &[u32],
    wall: i64,
) -> NewSubmission {
    NewSubmission {
        id: mid(id),
        sender: from.clone(),
        sender_device: DeviceId(1),
        recipient: to.clone(),
        kind,
        body: EnvelopeBody::PerDevice(
            devices
                .iter()
                .map(|d| (DeviceId(*d), format!("{id} for {d}").into_bytes()))
                .collect(),
        ),
        fingerprint: format!("fingerprint of {id}"),
        wall: UnixTime(wall),
        resend: false,
        header: kind.as_str().into(),
        category: PricingCategory::Service,
        manual: false,
        manual_limit: ManualLimit::default(),
    }
}

fn message(
    id: u32,
    from: &PhoneNumber,
    to: &PhoneNumber,
    devices: &[u32],
    wall: i64,
) -> NewSubmission {
    submission(id, from, to, EnvelopeKind::Message, devices, wall)
}

async fn accepted(store: &dyn RelayStore, s: NewSubmission) -> Accepted {
    store.accept(s).await.unwrap().unwrap()
}

async fn refused(store: &dyn RelayStore, s: NewSubmission) -> Refusal {
    store.accept(s).await.unwrap().unwrap_err()
}

/// The ids of everything queued for a device.
async fn queued(store: &dyn RelayStore, account: &PhoneNumber, device: u32) -> Vec<String> {
    let pending = store
        .pending(account, DeviceId(device), 0, 100)
        .await
        .unwrap();
    pending.into_iter().map(|e| e.id.to_string()).collect()
}

// --- backend-specific: the file itself -----------------------------------------------------

#[tokio::test]
async fn reopening_a_file_keeps_everything_and_applies_no_migration_twice() {
    let fresh = crate::sqlite_relay();
    let path = fresh.path();
    let (u, b) = (user(&*fresh, USER, 1).await, business(&*fresh, 1).await);
    accepted(&*fresh, message(1, &u, &b, &[1], 1000)).await;
    let crate::Fresh { store, dir } = fresh;
    drop(store);
    assert_eq!(
        crate::schema_version(&path),
        crate::migration_count("relay")
    );

    let store = ventana_store::sqlite::SqliteRelayStore::open(&path).unwrap();
    assert_eq!(
        crate::schema_version(&path),
        crate::migration_count("relay")
    );
    assert_eq!(store.devices(&b).await.unwrap().len(), 1);
    assert_eq!(queued(&store, &b, 1).await, [mid(1).to_string()]);
    // The relationship survived: the business may still answer.
    accepted(&store, message(2, &b, &u, &[1], 1001)).await;
    drop((store, dir));
}

#[tokio::test]
async fn consent_is_audited_and_a_block_records_no_relationship() {
    let fresh = crate::sqlite_relay();
    let (u, b) = (user(&*fresh, USER, 1).await, business(&*fresh, 1).await);
    fresh
        .set_blocked(&u, &b, true, UnixTime(900))
        .await
        .unwrap();
    fresh
        .set_blocked(&u, &b, true, UnixTime(901))
        .await
        .unwrap();
    fresh
        .set_blocked(&u, &b, false, UnixTime(950))
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(fresh.path()).unwrap();
    let relationships = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM relationships", [], |row| row.get(0))
            .unwrap()
    };
    assert_eq!(relationships(&conn), 0);

    accepted(&*fresh, message(1, &u, &b, &[1], 1000)).await;
    accepted(&*fresh, message(2, &u, &b, &[1], 2000)).await;
    assert_eq!(relationships(&conn), 1);
    let events: Vec<(String, String, String, i64, Option<String>)> = conn
        .prepare(
            "SELECT business, user_address, event, at, origin FROM consent_events ORDER BY seq",
        )
        .unwrap()
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events, expected_consent_events());
}

/// A consent-audit row as both backends' tests read it: business, user, event, at, origin.
type ConsentEvent = (String, String, String, i64, Option<String>);

/// The audit the consent test's steps leave: one entry per change (a repeated block and a
/// second message add nothing).
fn expected_consent_events() -> Vec<ConsentEvent> {
    let event = |event: &str, at: i64, origin: Option<&str>| {
        (
            BUSINESS.to_string(),
            USER.to_string(),
            event.to_string(),
            at,
            origin.map(String::from),
        )
    };
    vec![
        event("block", 900, None),
        event("unblock", 950, None),
        event("contact", 1000, Some("user_message")),
    ]
}
