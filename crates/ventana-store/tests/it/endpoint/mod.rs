//! `EndpointStore` and `GatewayStore` conformance: identities, compare-and-swap sessions, the
//! outbox, inbound dedup, history, and the gateway's businesses, numbers, tokens and webhooks.

use crate::{mid, phone, waba};
use ventana_core::rules::EnvelopeKind;
use ventana_core::{DeviceId, MessageStatus, PhoneNumber, UnixTime};
use ventana_store::endpoint::{
    AccessTokenRecord, AppRecord, BusinessRecord, Direction, IdentityRecord, InboundCommit,
    InboundOutcome, MessageRecord, OutboundCommit, OutboxRow, PhoneNumberRecord, SessionWrite,
    WebhookJob,
};
use ventana_store::{EndpointStore, GatewayStore, StoreError};

mod gateway;
mod nodes;
mod resends;
mod sessions;
mod webhooks;

use gateway::*;
use resends::*;
use sessions::*;
use webhooks::*;

/// Every endpoint and gateway case against one backend.
macro_rules! endpoint_cases {
    ($backend:ident, $open:path) => {
        conformance!(
            $backend,
            $open,
            [
                an_identity_is_saved_replaced_and_its_account_updated,
                a_session_write_with_a_stale_version_is_a_conflict_and_writes_nothing,
                creating_a_session_that_exists_is_a_conflict,
                of_two_concurrent_session_writes_exactly_one_wins,
                sessions_are_listed_most_recently_used_first,
                an_inbound_envelope_is_processed_once,
                a_failed_inbound_commit_leaves_no_dedup_marker,
                the_outbox_is_oldest_first_and_settled_with_its_records,
                a_status_only_moves_forward,
                history_returns_the_latest_messages_newest_last,
                a_message_recorded_twice_is_kept_once_per_direction,
                a_contact_is_replaced_by_the_latest_profile,
                endpoints_sharing_a_file_are_kept_apart,
                a_business_is_created_once,
                a_phone_number_id_and_address_are_each_taken_once,
                a_token_is_revoked_once_and_only_by_its_business,
                webhooks_are_leased_oldest_first_to_one_node_at_a_time,
                an_endpoint_is_owned_by_one_node_until_its_lease_runs_out,
                a_cached_template_version_is_kept_as_first_written,
                an_outbox_row_keeps_its_session_marks_and_attempt,
                an_envelope_acknowledged_unread_is_not_taken_for_a_duplicate,
                a_resend_is_counted_on_the_message,
                a_status_is_announced_only_when_it_moves,
                a_device_keeps_only_its_most_recently_used_sessions,
                the_statuses_of_one_message_are_leased_one_at_a_time_in_order,
                the_jobs_of_a_receiver_without_room_are_passed_over,
                a_lease_takes_at_most_so_many_jobs_of_one_route,
                a_node_takes_back_its_own_leases_at_start,
                attempts_are_logged_and_dead_events_redriven,
                settled_events_are_replayed_from_a_time_or_an_event,
                settled_events_and_the_log_are_pruned_after_their_retention,
                events_go_to_the_number_then_the_waba_then_the_app,
                a_late_failure_leaves_another_nodes_lease_alone,
                a_dead_status_is_not_redriven_after_a_later_one_was_delivered,
            ]
        );
    };
}

endpoint_cases!(sqlite, crate::open::sqlite_endpoint);
endpoint_cases!(postgres, crate::open::postgres_endpoint);

const ME: &str = "16505550100";
const PEER: &str = "34600111222";

fn me() -> PhoneNumber {
    phone(ME)
}

fn identity(owner: &str, account: &[u8]) -> IdentityRecord {
    IdentityRecord {
        owner: phone(owner),
        device_id: DeviceId(1),
        relay_token_sealed: b"sealed token".to_vec(),
        account_sealed: account.to_vec(),
        display_name: "Acme".into(),
    }
}

fn session(id: &str, sealed: &str, expected_version: Option<i64>) -> SessionWrite {
    SessionWrite {
        peer: phone(PEER),
        peer_device: DeviceId(1),
        session_id: id.into(),
        sealed: sealed.as_bytes().to_vec(),
        expected_version,
    }
}

fn message(n: u32, direction: Direction, ts: i64, status: &str) -> MessageRecord {
    MessageRecord {
        id: mid(n),
        direction,
        peer: phone(PEER),
        peer_device: (direction == Direction::Inbound).then_some(DeviceId(1)),
        kind: EnvelopeKind::Message,
        ts: UnixTime(ts),
        body_sealed: format!("body {n}").into_bytes(),
        status: MessageStatus::parse(status).unwrap(),
        resends: 0,
    }
}

fn outbound(n: u32, sessions: Vec<SessionWrite>, account: Option<&[u8]>) -> OutboundCommit {
    OutboundCommit {
        owner: me(),
        account_sealed: account.map(<[u8]>::to_vec),
        sessions,
        outbox: OutboxRow {
            id: mid(n),
            to: phone(PEER),
            submission: format!("submission {n}").into_bytes(),
            created_at: UnixTime(i64::from(n)),
            sessions: Vec::new(),
            attempt: 0,
        },
        records: vec![AppRecord::Message(message(
            n,
            Direction::Outbound,
            i64::from(n),
            "accepted",
        ))],
    }
}

fn inbound(n: u32, session: Option<SessionWrite>, records: Vec<AppRecord>) -> InboundCommit {
    InboundCommit {
        owner: me(),
        from: phone(PEER),
        id: mid(n),
        account_sealed: Some(b"after".to_vec()),
        session,
        records,
        processed: true,
        outbox: Vec::new(),
        settled: Vec::new(),
    }
}

fn job(id: &str, created_at: i64, due: i64) -> WebhookJob {
    WebhookJob {
        id: id.into(),
        waba_id: waba("1001"),
        body_sealed: format!("event {id}").into_bytes(),
        attempts: 0,
        next_attempt_at: UnixTime(due),
        created_at: UnixTime(created_at),
        phone_number_id: None,
        order_key: None,
        failing_since: None,
    }
}

async fn versions(store: &dyn EndpointStore) -> Vec<(String, i64, Vec<u8>)> {
    let sessions = store
        .sessions(&me(), &phone(PEER), DeviceId(1))
        .await
        .unwrap();
    sessions
        .into_iter()
        .map(|s| (s.session_id, s.version, s.sealed))
        .collect()
}

async fn statuses(store: &dyn EndpointStore) -> Vec<(u32, String)> {
    let all = store.messages(&me(), 100).await.unwrap();
    all.into_iter()
        .map(|m| (m.ts.0 as u32, m.status.as_str().to_owned()))
        .collect()
}

// --- template cache ------------------------------------------------------------------------

async fn a_cached_template_version_is_kept_as_first_written(store: &dyn EndpointStore) {
    let (business, other_business) = (phone(PEER), phone("34600999888"));
    let cached = |owner: PhoneNumber, business: PhoneNumber, id: &'static str, version| async move {
        store
            .cached_template(&owner, &business, id, version)
            .await
            .unwrap()
    };
    assert_eq!(cached(me(), business.clone(), "17", 1).await, None);
    store
        .cache_template(&me(), &business, "17", 1, "{\"v\":1}".into())
        .await
        .unwrap();
    // A version never changes: a second write of the same key leaves the first.
    store
        .cache_template(&me(), &business, "17", 1, "{\"v\":\"other\"}".into())
        .await
        .unwrap();
    store
        .cache_template(&me(), &business, "17", 2, "{\"v\":2}".into())
        .await
        .unwrap();
    assert_eq!(
        cached(me(), business.clone(), "17", 1).await.as_deref(),
        Some("{\"v\":1}")
    );
    assert_eq!(
        cached(me(), business.clone(), "17", 2).await.as_deref(),
        Some("{\"v\":2}")
    );
    assert_eq!(cached(me(), business.clone(), "17", 3).await, None);
    assert_eq!(cached(me(), business.clone(), "18", 1).await, None);
    assert_eq!(cached(me(), other_business, "17", 1).await, None);
    assert_eq!(cached(phone("16505550199"), business, "17", 1).await, None);
}

// --- gateway fixtures ----------------------------------------------------------------------

fn business_record(id: &str, created_at: i64) -> BusinessRecord {
    BusinessRecord {
        waba_id: waba(id),
        name: format!("Business {id}"),
        app_secret_sealed: b"secret".to_vec(),
        webhook_url: Some("https://example.invalid/hook".into()),
        verify_token_sealed: b"verify".to_vec(),
        sandbox: true,
        created_at: UnixTime(created_at),
    }
}

fn number(id: &str, address: &str) -> PhoneNumberRecord {
    PhoneNumberRecord {
        id: id.parse().unwrap(),
        waba_id: waba("1001"),
        address: phone(address),
        display_phone_number: format!("+{address}"),
        verified_name: "Acme".into(),
        created_at: UnixTime(5),
    }
}

fn token(id: &str, business: &str) -> AccessTokenRecord {
    AccessTokenRecord {
        id: id.into(),
        waba_id: waba(business),
        token_hash: format!("hash-{id}"),
        label: "ci".into(),
        created_at: UnixTime(5),
        revoked_at: None,
        person: (id == "t2").then(|| "Marta".to_owned()),
    }
}

// --- backend-specific: the file itself -----------------------------------------------------

#[tokio::test]
async fn reopening_a_file_keeps_everything_and_applies_no_migration_twice() {
    let fresh = crate::sqlite_endpoint();
    let path = fresh.path();
    fresh.save_identity(identity(ME, b"account")).await.unwrap();
    fresh
        .commit_outbound(outbound(1, vec![session("s", "one", None)], None))
        .await
        .unwrap();
    fresh
        .create_business(business_record("1001", 10))
        .await
        .unwrap();
    let crate::Fresh { store, dir } = fresh;
    drop(store);
    assert_eq!(
        crate::schema_version(&path),
        crate::migration_count("endpoint")
    );

    let store = ventana_store::sqlite::SqliteEndpointStore::open(&path).unwrap();
    assert_eq!(
        crate::schema_version(&path),
        crate::migration_count("endpoint")
    );
    assert_kept_everything(&store).await;
    drop((store, dir));
}

/// What the reopening tests wrote before closing the store, found again after reopening it.
async fn assert_kept_everything(store: &dyn GatewayStore) {
    assert_eq!(
        store.identity(&me()).await.unwrap(),
        Some(identity(ME, b"account"))
    );
    assert_eq!(
        versions(store).await,
        [("s".to_string(), 1, b"one".to_vec())]
    );
    assert_eq!(store.outbox(&me()).await.unwrap().len(), 1);
    assert_eq!(
        store.businesses().await.unwrap(),
        [business_record("1001", 10)]
    );
}
