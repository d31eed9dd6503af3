//! An end-to-end endpoint's store, and the business gateway's tables beside it.
//!
//! Everything secret arrives here already sealed by the caller (`ventana-crypto`): the store
//! keeps bytes and never sees a key. One file may hold several endpoints (a gateway hosts one
//! per business number), told apart by `owner`, the endpoint's own phone number.

use crate::StoreResult;
use crate::idempotency::{ClaimOutcome, IdempotencyRecord, NewClaim, StoredResponse};
pub use crate::webhook::WebhookJob;
use async_trait::async_trait;
use tokio::sync::broadcast;
use ventana_core::rules::EnvelopeKind;
use ventana_core::{
    DeviceId, IdempotencyKey, MessageId, MessageStatus, PhoneNumber, PhoneNumberId, UnixTime,
    WabaId,
};

/// Who this endpoint is at the relay, with its sealed Olm account and sealed relay token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRecord {
    pub owner: PhoneNumber,
    pub device_id: DeviceId,
    pub relay_token_sealed: Vec<u8>,
    pub account_sealed: Vec<u8>,
    /// The name shown to the other side (a user's profile name, a business's verified name).
    pub display_name: String,
}

/// How many sessions are kept per peer device: starting a new one (a device that could not
/// decrypt asks for one) drops the least recently used beyond these, so a peer cannot make
/// the list, and the cost of trying each on a message, grow without bound.
pub const MAX_SESSIONS_PER_DEVICE: i64 = 5;

/// A sealed Olm session with one peer device. `version` counts writes, for compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub peer: PhoneNumber,
    pub peer_device: DeviceId,
    pub session_id: String,
    pub sealed: Vec<u8>,
    pub version: i64,
    pub updated_at: UnixTime,
}

/// A session to write: `expected_version` is `None` for a new session, or the version read
/// before changing it (the write fails with `Conflict` if someone else wrote since).
#[derive(Clone, Debug)]
pub struct SessionWrite {
    pub peer: PhoneNumber,
    pub peer_device: DeviceId,
    pub session_id: String,
    pub sealed: Vec<u8>,
    pub expected_version: Option<i64>,
}

/// A submission ready for the relay, already encrypted: a retry resends these exact bytes,
/// unless a session it was encrypted on moved on meanwhile (see [`SessionMark`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: MessageId,
    pub to: PhoneNumber,
    /// The client protocol's `Submission`, as JSON (its bodies are Olm ciphertext, or a
    /// receipt).
    pub submission: Vec<u8>,
    pub created_at: UnixTime,
    /// Where each copy's ciphertext stands in its session (empty for a receipt).
    pub sessions: Vec<SessionMark>,
    /// 0 for a message's first encryption; n for the n-th resend its recipient asked for.
    pub attempt: u32,
}

/// The session one copy of an outbox row was encrypted on, and the version that encryption
/// wrote. If another writer has moved the session past that version, the copy no longer
/// fits the recipient's ratchet and must be encrypted again before it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionMark {
    pub peer_device: DeviceId,
    pub session_id: String,
    pub version: i64,
}

impl SessionMark {
    /// The column form of a row's marks: `device:version:session` separated by spaces
    /// (session ids are unpadded base64).
    pub fn encode_all(marks: &[SessionMark]) -> String {
        marks
            .iter()
            .map(|m| format!("{}:{}:{}", m.peer_device.0, m.version, m.session_id))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Reads [`Self::encode_all`]'s form; `None` if it is not that.
    pub fn decode_all(column: &str) -> Option<Vec<SessionMark>> {
        column
            .split_whitespace()
            .map(|mark| {
                let mut parts = mark.splitn(3, ':');
                Some(SessionMark {
                    peer_device: DeviceId(parts.next()?.parse().ok()?),
                    version: parts.next()?.parse().ok()?,
                    session_id: parts.next()?.to_owned(),
                })
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "in",
            Self::Outbound => "out",
        }
    }
}

/// One message in the endpoint's history. The body (the decrypted payload) is sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: MessageId,
    pub direction: Direction,
    pub peer: PhoneNumber,
    /// The peer device it came from (inbound) — where read receipts go.
    pub peer_device: Option<DeviceId>,
    pub kind: EnvelopeKind,
    pub ts: UnixTime,
    pub body_sealed: Vec<u8>,
    pub status: MessageStatus,
    /// How often an outbound message was encrypted again because its recipient's device
    /// could not decrypt it (bounded by the sender).
    pub resends: u32,
}

/// Application effects committed in the same transaction as the Olm state they result from.
#[derive(Clone, Debug)]
pub enum AppRecord {
    Message(MessageRecord),
    /// Moves an earlier message to a later status (never backwards), and queues `announce`
    /// (its status webhook) only if it did move: a receipt repeated, or arriving after a
    /// later one, announces nothing.
    Status {
        id: MessageId,
        status: MessageStatus,
        announce: Option<WebhookJob>,
    },
    /// One more resend of an outbound message (see [`MessageRecord::resends`]).
    Resent {
        id: MessageId,
    },
    Webhook(WebhookJob),
    /// The peer's profile name as last seen, sealed.
    Contact {
        peer: PhoneNumber,
        profile_sealed: Vec<u8>,
    },
}

/// Everything that processing one inbound envelope changes, committed at once.
#[derive(Clone, Debug)]
pub struct InboundCommit {
    pub owner: PhoneNumber,
    /// The dedup marker: (sender, envelope id).
    pub from: PhoneNumber,
    pub id: MessageId,
    pub account_sealed: Option<Vec<u8>>,
    pub session: Option<SessionWrite>,
    pub records: Vec<AppRecord>,
    /// Whether to write the dedup marker. `false` for a message acknowledged without being
    /// read (undecryptable, its sender asked to send it again): the resend must not be
    /// taken for a duplicate.
    pub processed: bool,
    /// Submissions this envelope gives rise to (its receipt, a resend a peer asked for),
    /// queued with it and sent until the relay accepts them.
    pub outbox: Vec<OutboxRow>,
    /// Outbox rows of receipts the relay has taken since, dropped in the same transaction.
    pub settled: Vec<MessageId>,
}

/// Everything that encrypting one outbound message changes, committed before it is sent.
#[derive(Clone, Debug)]
pub struct OutboundCommit {
    pub owner: PhoneNumber,
    pub account_sealed: Option<Vec<u8>>,
    pub sessions: Vec<SessionWrite>,
    pub outbox: OutboxRow,
    pub records: Vec<AppRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundOutcome {
    Committed,
    /// Already processed before: nothing was written.
    Duplicate,
}

#[async_trait]
pub trait EndpointStore: Send + Sync {
    async fn identity(&self, owner: &PhoneNumber) -> StoreResult<Option<IdentityRecord>>;
    /// Inserts or replaces the identity.
    async fn save_identity(&self, identity: IdentityRecord) -> StoreResult<()>;
    async fn save_account(&self, owner: &PhoneNumber, account_sealed: Vec<u8>) -> StoreResult<()>;

    /// Sessions with one peer device, most recently used first.
    async fn sessions(
        &self,
        owner: &PhoneNumber,
        peer: &PhoneNumber,
        peer_device: DeviceId,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Commits sessions, the outbox row and records at once. A row with the same id is
    /// replaced (its earlier ciphertext was refused for a stale device list and never sent).
    async fn commit_outbound(&self, commit: OutboundCommit) -> StoreResult<()>;
    /// Rows not yet settled with the relay, oldest first.
    async fn outbox(&self, owner: &PhoneNumber) -> StoreResult<Vec<OutboxRow>>;
    /// The relay has answered for this row (accepted or refused): drop it and apply
    /// `records`. False (and nothing applied) if the row was gone: settled before.
    async fn settle_outbox(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
        records: Vec<AppRecord>,
    ) -> StoreResult<bool>;

    async fn is_processed(
        &self,
        owner: &PhoneNumber,
        from: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<bool>;
    async fn commit_inbound(&self, commit: InboundCommit) -> StoreResult<InboundOutcome>;

    async fn message(
        &self,
        owner: &PhoneNumber,
        id: &MessageId,
    ) -> StoreResult<Option<MessageRecord>>;
    /// The latest `limit` messages, newest last.
    async fn messages(&self, owner: &PhoneNumber, limit: u32) -> StoreResult<Vec<MessageRecord>>;
    async fn apply(&self, owner: &PhoneNumber, records: Vec<AppRecord>) -> StoreResult<()>;
    async fn contact(
        &self,
        owner: &PhoneNumber,
        peer: &PhoneNumber,
    ) -> StoreResult<Option<Vec<u8>>>;

    /// A template version this endpoint fetched earlier from the relay (the definition JSON
    /// it was rendered with), if it is cached.
    async fn cached_template(
        &self,
        owner: &PhoneNumber,
        business: &PhoneNumber,
        id: &str,
        version: u32,
    ) -> StoreResult<Option<String>>;
    /// Caches a fetched template version. Versions never change, so an entry already there
    /// is kept as it is.
    async fn cache_template(
        &self,
        owner: &PhoneNumber,
        business: &PhoneNumber,
        id: &str,
        version: u32,
        definition: String,
    ) -> StoreResult<()>;
}

/// A business as the gateway knows it. Secrets are sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessRecord {
    pub waba_id: WabaId,
    pub name: String,
    pub app_secret_sealed: Vec<u8>,
    pub webhook_url: Option<String>,
    pub verify_token_sealed: Vec<u8>,
    pub sandbox: bool,
    pub created_at: UnixTime,
}

/// A business phone number hosted by this gateway; its endpoint `owner` is `address`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneNumberRecord {
    pub id: PhoneNumberId,
    pub waba_id: WabaId,
    pub address: PhoneNumber,
    pub display_phone_number: String,
    pub verified_name: String,
    pub created_at: UnixTime,
}

/// An API access token of a business; only its hash is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenRecord {
    pub id: String,
    pub waba_id: WabaId,
    pub token_hash: String,
    pub label: String,
    pub created_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
    /// Issued to this person (a member of a small business's staff) rather than to the
    /// business's software: free-form sends with it are replies by hand.
    pub person: Option<String>,
}

#[async_trait]
pub trait GatewayStore:
    EndpointStore + crate::schedule::ScheduleStore + crate::webhook::WebhookStore
{
    /// `Conflict` if the WABA id exists.
    async fn create_business(&self, business: BusinessRecord) -> StoreResult<()>;
    async fn business(&self, waba: &WabaId) -> StoreResult<Option<BusinessRecord>>;
    async fn businesses(&self) -> StoreResult<Vec<BusinessRecord>>;

    /// `Conflict` if the id or the number is taken.
    async fn add_phone_number(&self, number: PhoneNumberRecord) -> StoreResult<()>;
    async fn phone_number(&self, id: &PhoneNumberId) -> StoreResult<Option<PhoneNumberRecord>>;
    async fn phone_number_by_address(
        &self,
        address: &PhoneNumber,
    ) -> StoreResult<Option<PhoneNumberRecord>>;
    async fn phone_numbers(&self) -> StoreResult<Vec<PhoneNumberRecord>>;
    /// Signals that a number was added (by this node or another sharing the store), shortly
    /// after the commit; `None` where no other process can add one (SQLite: one process owns
    /// the file). A receiver that lagged missed some signals, which all mean "look again".
    fn number_changes(&self) -> Option<broadcast::Receiver<()>>;

    async fn add_token(&self, token: AccessTokenRecord) -> StoreResult<()>;
    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<AccessTokenRecord>>;
    async fn tokens(&self, waba: &WabaId) -> StoreResult<Vec<AccessTokenRecord>>;
    /// Returns false if no such live token of that business.
    async fn revoke_token(&self, waba: &WabaId, id: &str, at: UnixTime) -> StoreResult<bool>;

    /// Takes or renews `node`'s lease on a hosted number's endpoint (the one node that
    /// receives for it, tops up its keys and retries its outbox) until `now + ttl_secs`.
    /// True if `node` holds it now: it was free, expired, or already `node`'s.
    async fn acquire_endpoint(
        &self,
        owner: &PhoneNumber,
        node: &str,
        now: UnixTime,
        ttl_secs: i64,
    ) -> StoreResult<bool>;
    /// Gives the lease up (on shutdown), if `node` holds it.
    async fn release_endpoint(&self, owner: &PhoneNumber, node: &str) -> StoreResult<()>;

    /// Claims an idempotency key for a first attempt, in one transaction: inserts `claim` if
    /// the key is not in use, or replaces a row created at or before `expired_before` (past
    /// retention: the key counts as new) -> `Claimed`. Otherwise -> `Existing`, the row as it
    /// stands. Of concurrent claims of one key, exactly one is `Claimed`.
    async fn claim_idempotency_key(
        &self,
        claim: NewClaim,
        expired_before: UnixTime,
    ) -> StoreResult<ClaimOutcome>;
    async fn idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Takes over an `InProgress` claim whose `claimed_until` is at or before `now` (its node
    /// died, or gave the claim up), compare-and-swap on `attempt`: it becomes `attempt + 1`,
    /// claimed until `claimed_until`. False, with nothing written, if the row moved on.
    async fn take_over_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        now: UnixTime,
        claimed_until: UnixTime,
    ) -> StoreResult<bool>;
    /// `InProgress` at `attempt` -> `Completed` with `response`. False, with nothing written,
    /// if it is completed already or another attempt took it over.
    async fn complete_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        response: StoredResponse,
    ) -> StoreResult<bool>;
    /// Gives an `InProgress` claim at `attempt` up (its send failed on our side): it stays
    /// `InProgress`, with its message id, but claimed only until `now`, so the next retry
    /// takes it over at once. False if the row moved on.
    async fn release_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        now: UnixTime,
    ) -> StoreResult<bool>;
    /// Deletes keys created before `created_before`, in whatever state; returns how many.
    async fn prune_idempotency_keys(&self, created_before: UnixTime) -> StoreResult<u64>;
}
