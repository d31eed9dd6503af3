//! The relay's store. It holds ciphertext and the metadata the rules need, never plaintext.

use crate::StoreResult;
use async_trait::async_trait;
use tokio::sync::broadcast;
use ventana_core::protocol::SignedKey;
use ventana_core::rules::{AccountKind, EnvelopeKind, RuleViolation};
use ventana_core::{
    BusinessClock, DeviceId, MessageId, PhoneNumber, Relationship, UnixTime, WabaId,
};

/// An account: an end user, or a business phone number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    pub address: PhoneNumber,
    pub kind: AccountKind,
    /// For business numbers: the business they belong to.
    pub waba_id: Option<WabaId>,
    pub verified_name: Option<String>,
    pub created_at: UnixTime,
}

/// The business number and the user of a submission, when it is between one of each; the
/// relationship between them is keyed by this pair on every backend.
pub(crate) struct BusinessPair<'a> {
    pub(crate) business: &'a AccountRecord,
    pub(crate) user: &'a AccountRecord,
}

impl<'a> BusinessPair<'a> {
    pub(crate) fn of(a: &'a AccountRecord, b: &'a AccountRecord) -> Option<Self> {
        match (a.kind, b.kind) {
            (AccountKind::Business, AccountKind::User) => Some(Self {
                business: a,
                user: b,
            }),
            (AccountKind::User, AccountKind::Business) => Some(Self {
                business: b,
                user: a,
            }),
            _ => None,
        }
    }
}

/// A device's public identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub account: PhoneNumber,
    pub device_id: DeviceId,
    pub curve25519: String,
    pub ed25519: String,
}

/// A device to register. The account is created with it if it does not exist yet; if it does,
/// its kind and business must match.
#[derive(Clone, Debug)]
pub struct NewDevice {
    pub account: AccountRecord,
    /// SHA-256 (hex) of the device's bearer token.
    pub token_hash: String,
    pub curve25519: String,
    pub ed25519: String,
    pub one_time_keys: Vec<SignedKey>,
    pub fallback_key: Option<SignedKey>,
    /// The most devices the account may have, this one included (`None`: no limit, as for a
    /// business number's devices, which the operator registers). Past it: `Conflict(Limit)`.
    pub max_devices: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerificationOutcome {
    Verified,
    WrongCode,
    Expired,
    NoneRequested,
    TooManyAttempts,
}

/// A pre-key claimed for one device of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedPreKey {
    pub device: DeviceRecord,
    pub key: SignedKey,
    pub fallback: bool,
}

/// What an envelope carries to its recipient devices, opaque to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvelopeBody {
    /// One ciphertext per recipient device; the devices must be exactly the account's.
    PerDevice(Vec<(DeviceId, Vec<u8>)>),
    /// The same bytes to every device of the account (receipts).
    Shared(Vec<u8>),
}

impl EnvelopeBody {
    /// The bytes to queue for each of the recipient's current devices (`devices`, sorted by
    /// id), or `None` when per-device copies do not cover exactly those devices (one missing,
    /// one extra, or one named twice).
    pub(crate) fn per_device<'a>(
        &'a self,
        devices: &[DeviceId],
    ) -> Option<Vec<(DeviceId, &'a [u8])>> {
        match self {
            Self::PerDevice(copies) => {
                let mut covered: Vec<DeviceId> = copies.iter().map(|(device, _)| *device).collect();
                covered.sort_unstable();
                (covered == devices).then(|| {
                    copies
                        .iter()
                        .map(|(device, body)| (*device, body.as_slice()))
                        .collect()
                })
            }
            Self::Shared(body) => Some(
                devices
                    .iter()
                    .map(|device| (*device, body.as_slice()))
                    .collect(),
            ),
        }
    }

    /// The copies of a resend of an accepted id: per-device copies for some of the
    /// recipient's current devices (`devices`, sorted), each named once; `None` otherwise.
    pub(crate) fn resent_copies<'a>(
        &'a self,
        devices: &[DeviceId],
    ) -> Option<Vec<(DeviceId, &'a [u8])>> {
        let Self::PerDevice(copies) = self else {
            return None;
        };
        let mut named: Vec<DeviceId> = copies.iter().map(|(device, _)| *device).collect();
        named.sort_unstable();
        named.dedup();
        let fits = !copies.is_empty()
            && named.len() == copies.len()
            && named.iter().all(|d| devices.binary_search(d).is_ok());
        fits.then(|| {
            copies
                .iter()
                .map(|(device, body)| (*device, body.as_slice()))
                .collect()
        })
    }
}

/// A submission to accept, or refuse by the rules, in one transaction.
#[derive(Clone, Debug)]
pub struct NewSubmission {
    pub id: MessageId,
    pub sender: PhoneNumber,
    pub sender_device: DeviceId,
    pub recipient: PhoneNumber,
    pub kind: EnvelopeKind,
    pub body: EnvelopeBody,
    /// A digest of the whole submission: resubmitting the same id with a different digest is
    /// a conflict, with the same digest it is answered as the first time.
    pub fingerprint: String,
    /// The wall clock; envelopes are stamped with the business's clock derived from it.
    pub wall: UnixTime,
    /// A new encryption of a message the relay may have accepted already
    /// (`Submission::resend`): if the id was accepted, its copies are queued for the devices
    /// they name under the first acceptance, without deciding again; if not, it is accepted
    /// as a first submission.
    pub resend: bool,
    /// The clear header a resend must repeat: the kind, and the template a template message
    /// names (see [`NewSubmission::may_resend`]).
    pub header: String,
    /// What a business's message is for pricing: its template's category, or `service`.
    pub category: ventana_core::pricing::PricingCategory,
    /// A reply written by a person (`Submission::manual`): for an `app`-tier business it
    /// passes a closed window, free, within `manual_limit`; for any other it is an ordinary
    /// message.
    pub manual: bool,
    pub manual_limit: ManualLimit,
}

/// The human pace of an `app`-tier business number's replies by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManualLimit {
    /// At least this long between two.
    pub min_gap_secs: u32,
    /// At most this many in any 60 seconds.
    pub per_minute: u32,
}

impl Default for ManualLimit {
    fn default() -> Self {
        Self {
            min_gap_secs: 3,
            per_minute: 10,
        }
    }
}

/// A message proposed for a cost preview ([`RelayStore::preview`]): what `accept` would
/// judge of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposed {
    pub sender: PhoneNumber,
    pub recipient: PhoneNumber,
    pub kind: EnvelopeKind,
    pub category: ventana_core::pricing::PricingCategory,
    pub manual: bool,
    pub manual_limit: ManualLimit,
    pub wall: UnixTime,
}

/// One change of a business's tier, as audited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierEvent {
    pub at: UnixTime,
    pub tier: ventana_core::rules::BusinessTier,
    pub previous: ventana_core::rules::BusinessTier,
    /// Who changed it (`operator:<name>`).
    pub actor: String,
    pub reason: Option<String>,
}

/// How often one accepted message may be resent (new encryptions for some of its
/// recipient's devices), whatever asks for it.
pub const MAX_RESENDS_PER_MESSAGE: i64 = 16;

impl NewSubmission {
    /// Whether this may be queued as a resend of the accepted submission described by
    /// `recipient` (digits), `header` and `resends` so far: the same message to the same
    /// account under the same clear header, and not too often. Otherwise an accepted id
    /// would let a sender skip the rules for anyone, or fill the queues with copies.
    pub(crate) fn may_resend(&self, recipient: &str, header: &str, resends: i64) -> bool {
        self.resend
            && recipient == self.recipient.digits()
            && header == self.header
            && resends < MAX_RESENDS_PER_MESSAGE
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// When it was accepted, on the business's clock.
    pub accepted_at: UnixTime,
    /// The recipient devices that now have it queued (to wake them).
    pub devices: Vec<DeviceId>,
    /// True if this id had already been accepted with the same content.
    pub duplicate: bool,
    /// A business's message to a user: how it would be priced were it delivered now.
    pub pricing: Option<ventana_core::pricing::PricingNote>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    UnknownRecipient,
    /// The copies do not cover exactly these devices of the recipient.
    StaleDevices(Vec<DeviceRecord>),
    /// The id was used before for a different submission.
    IdReused,
    Rule(RuleViolation),
}

/// An envelope queued for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEnvelope {
    pub seq: u64,
    pub id: MessageId,
    pub sender: PhoneNumber,
    pub sender_device: DeviceId,
    pub kind: EnvelopeKind,
    pub ts: UnixTime,
    pub body: Vec<u8>,
}

/// A device some node should wake, published when the transaction that calls for it commits.
/// Every node sharing the store receives every wake-up; each acts on its own connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wakeup {
    pub account: PhoneNumber,
    pub device: DeviceId,
    pub reason: WakeReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeReason {
    /// Envelopes were queued for it.
    Envelopes,
    /// Some of its one-time keys were claimed.
    KeysClaimed,
    /// Envelopes held back (a blocked sender) were released: read the queue from the start.
    Rescan,
}

impl WakeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Envelopes => "envelopes",
            Self::KeysClaimed => "keys",
            Self::Rescan => "rescan",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Envelopes, Self::KeysClaimed, Self::Rescan]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The relay's whole store: the methods below and, in the same file or schema, the template
/// registry ([`TemplateStore`](crate::TemplateStore)) and the billing ledger
/// ([`LedgerStore`](crate::LedgerStore)).
#[async_trait]
pub trait RelayStore: crate::TemplateStore + crate::LedgerStore + Send + Sync {
    /// Wake-ups from every node sharing this store: `accept` publishes `Envelopes` for each
    /// recipient device, `claim_pre_keys` `KeysClaimed` for each claimed device, and an
    /// unblocking `set_blocked` `Rescan` for each of the user's devices. A receiver that lags
    /// behind should wake every device it serves.
    fn wakeups(&self) -> broadcast::Receiver<Wakeup>;

    // --- proving control of a number -------------------------------------------------
    /// Records a fresh one-time code for `phone`, replacing any earlier one; false (and
    /// nothing written) once five codes were issued for it within the hour.
    async fn put_verification(
        &self,
        phone: &PhoneNumber,
        code: &str,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> StoreResult<bool>;
    /// Checks a code; a correct one is consumed. Five wrong tries within the hour, across
    /// reissued codes, burn the number's verification until the hour is over.
    async fn check_verification(
        &self,
        phone: &PhoneNumber,
        code: &str,
        now: UnixTime,
    ) -> StoreResult<VerificationOutcome>;
    /// The pending code, for the development verifier that lets the operator read it.
    async fn peek_verification(
        &self,
        phone: &PhoneNumber,
        now: UnixTime,
    ) -> StoreResult<Option<String>>;

    // --- businesses and their clocks ---------------------------------------------------
    /// Creates the business's clock entry if it does not exist; returns the clock.
    async fn ensure_business(&self, waba: &WabaId, sandbox: bool) -> StoreResult<BusinessClock>;
    async fn business_clock(&self, waba: &WabaId) -> StoreResult<Option<BusinessClock>>;
    async fn set_business_clock(&self, waba: &WabaId, clock: BusinessClock) -> StoreResult<()>;
    /// The business's tier (`None`: no such business at the relay).
    async fn business_tier(
        &self,
        waba: &WabaId,
    ) -> StoreResult<Option<ventana_core::rules::BusinessTier>>;
    /// Sets the tier; a change is audited (a request that changes nothing is not). Returns
    /// whether it changed; `None` if there is no such business.
    async fn set_business_tier(
        &self,
        waba: &WabaId,
        change: TierEvent,
    ) -> StoreResult<Option<bool>>;
    /// The audited tier changes of a business, oldest first.
    async fn tier_events(&self, waba: &WabaId) -> StoreResult<Vec<TierEvent>>;
    /// What accepting `proposed` now would do, writing nothing: the refusal it would meet, or
    /// how it would be priced were it delivered now (`None` if nothing prices it).
    async fn preview(
        &self,
        proposed: Proposed,
    ) -> StoreResult<Result<Option<ventana_core::pricing::PriceQuote>, Refusal>>;

    // --- accounts, devices, keys -------------------------------------------------------
    async fn account(&self, address: &PhoneNumber) -> StoreResult<Option<AccountRecord>>;
    /// Registers a device (and its account if new) with its first keys. `Conflict` if the
    /// account exists with another kind or business.
    async fn add_device(&self, device: NewDevice) -> StoreResult<DeviceId>;
    async fn device_by_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<(AccountRecord, DeviceId)>>;
    async fn devices(&self, account: &PhoneNumber) -> StoreResult<Vec<DeviceRecord>>;
    /// Adds one-time keys (idempotent per key id; a different key under a known id is a
    /// `Conflict`) and replaces the fallback key if given. Returns the unclaimed count. An
    /// upload that would leave more than `max_unclaimed` unclaimed keys is refused whole
    /// (`Conflict(Limit)`).
    async fn upload_keys(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
        one_time_keys: &[SignedKey],
        fallback_key: Option<&SignedKey>,
        max_unclaimed: u64,
    ) -> StoreResult<u64>;
    async fn one_time_key_count(&self, account: &PhoneNumber, device: DeviceId)
    -> StoreResult<u64>;
    /// Claims, atomically and at most once each, the oldest one-time key of every device of
    /// the account (or of those in `only`); a device with none left yields its fallback key
    /// (which is kept).
    async fn claim_pre_keys(
        &self,
        account: &PhoneNumber,
        only: Option<&[DeviceId]>,
    ) -> StoreResult<Vec<ClaimedPreKey>>;

    // --- envelopes and rules -----------------------------------------------------------
    /// Applies the rules (`ventana_core::rules::decide`) to the submission against the stored
    /// relationship and the business's clock, and if allowed records its effects and queues
    /// one envelope per recipient device, all in one transaction.
    async fn accept(&self, submission: NewSubmission) -> StoreResult<Result<Accepted, Refusal>>;
    /// Whether a submission with this id was accepted from `sender`: `accept` will answer a
    /// retry of it as the first time (or `IdReused`), whatever changed since.
    async fn submitted(&self, sender: &PhoneNumber, id: &MessageId) -> StoreResult<bool>;
    /// Envelopes queued for a device after `after_seq`, oldest first. Envelopes from a business
    /// the recipient has blocked are held back.
    async fn pending(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEnvelope>>;
    /// Forgets acknowledged envelopes of that device; returns how many went.
    async fn ack(&self, account: &PhoneNumber, device: DeviceId, seqs: &[u64]) -> StoreResult<u64>;
    /// What exists between a business number and a user (with `blocked` from the user's
    /// blocks), if the user ever contacted it.
    async fn relationship(
        &self,
        business: &PhoneNumber,
        user: &PhoneNumber,
    ) -> StoreResult<Option<Relationship>>;
    /// Answers if the store is reachable (readiness).
    async fn ping(&self) -> StoreResult<()>;
    /// Blocks or unblocks a business for a user, with an audit entry.
    async fn set_blocked(
        &self,
        user: &PhoneNumber,
        business: &PhoneNumber,
        blocked: bool,
        at: UnixTime,
    ) -> StoreResult<()>;
}
