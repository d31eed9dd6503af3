//! The client protocol, version 1: how devices (end-user devices and business gateways) talk
//! to the relay. `docs/PROTOCOL.md` describes it in prose; these types are its wire form.
//!
//! Registration is plain HTTP; everything after it runs over one authenticated WebSocket
//! carrying JSON text frames: [`ClientFrame`] up, [`ServerFrame`] down.

use crate::rules::{EnvelopeKind, RuleViolation};
use crate::template::{Category, TemplateHeader, TemplateStatus};
use crate::{DeviceId, MessageId, PhoneNumber, UnixTime, WabaId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const PROTOCOL_VERSION: u32 = 1;

/// `POST /relay/v1/verifications`: ask the relay to prove control of a number.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerificationRequest {
    pub phone: PhoneNumber,
}

/// A public key signed by the device's ed25519 identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedKey {
    pub key_id: String,
    /// Curve25519 public key, unpadded base64.
    pub key: String,
    /// Ed25519 signature over `key`, unpadded base64.
    pub signature: String,
}

/// A device's public identity and its first batch of pre-keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceKeys {
    pub curve25519: String,
    pub ed25519: String,
    pub one_time_keys: Vec<SignedKey>,
    pub fallback_key: Option<SignedKey>,
}

/// `POST /relay/v1/devices`: register a device. A user proves the number with `code`; a
/// business number is registered by the operator (admin token) and names its business.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceRegistration {
    pub phone: PhoneNumber,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub business: Option<BusinessNumber>,
    pub keys: DeviceKeys,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BusinessNumber {
    pub waba_id: WabaId,
    pub verified_name: String,
    /// A sandbox business gets a test clock the operator can advance.
    #[serde(default)]
    pub sandbox: bool,
}

/// The relay's answer to a registration. The token is shown once; the relay keeps its hash.
#[derive(Clone, Serialize, Deserialize)]
pub struct Registered {
    pub account: PhoneNumber,
    pub device_id: DeviceId,
    pub token: String,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("account", &self.account)
            .field("device_id", &self.device_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// An Olm message as it travels: type 0 (pre-key) or 1 (normal), body in unpadded base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ciphertext {
    #[serde(rename = "type")]
    pub message_type: u8,
    pub body: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    Delivered,
    Read,
    /// The device could not decrypt these messages (a session the sender moved past, or
    /// lost or corrupted state): the sender starts a new session with that device and sends
    /// them again under the same ids, a bounded number of times (like Signal's retry
    /// receipts). The relay sees only which ids, as for every receipt.
    Retry,
}

impl ReceiptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Retry => "retry",
        }
    }
}

/// A receipt for earlier messages of the recipient's. Travels in clear: the relay delivered
/// those ids itself, and meters on delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub status: ReceiptStatus,
    pub ids: Vec<MessageId>,
    /// For `retry`: the Olm session the undecryptable message named, when it said (a pre-key
    /// message does), so the sender can tell which of its sessions failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Written by the relay on a `delivered` or `read` receipt to a business: what each
    /// message it names was charged, from its ledger entry. A device never sets it (the
    /// relay refuses a receipt that does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pricing: Vec<PricedMessage>,
}

/// One message of a receipt and how its status webhook describes its price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedMessage {
    pub id: MessageId,
    pub pricing: crate::pricing::PricingNote,
}

/// One recipient device's copy of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCopy {
    pub device: DeviceId,
    pub ciphertext: Ciphertext,
}

/// A message (or receipt) handed to the relay: one id, one recipient account, a copy per
/// device of that account. Submitting the same id again is answered as the first time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    pub id: MessageId,
    pub to: PhoneNumber,
    pub kind: EnvelopeKind,
    /// For kind `template`: the template version the ciphertext fills, which the relay checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateHeader>,
    #[serde(default)]
    pub copies: Vec<DeviceCopy>,
    #[serde(default)]
    pub receipt: Option<Receipt>,
    /// A new encryption of a message whose id the relay may have accepted already (the
    /// sender's session moved past the first ciphertext, or the recipient asked for it
    /// again with a `retry` receipt). If the id was accepted, the relay keeps the first
    /// acceptance (and its time), queues these copies for the devices they name and answers
    /// as the first time; if not, it is an ordinary first submission. Receivers deduplicate
    /// by id, so a device that could read the first copy ignores this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
    /// A business's free-form reply written by a person (the web inbox, `ventana reply`),
    /// not by its software. For a business on the `app` tier (the 2018 article's small
    /// businesses) the relay lets it through outside the 24-hour window, free, at a human
    /// pace; for any other it means nothing and the window applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
}

/// Frames a device sends.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The device has durably processed these envelopes; the relay may forget them.
    Ack { seqs: Vec<u64> },
    /// A request answered by one [`ServerFrame::Response`] with the same `req`.
    Request { req: u64, op: Op },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Send(Box<Submission>),
    /// The devices of an account, with their identity keys.
    Devices {
        account: PhoneNumber,
    },
    /// Claim one pre-key of each device of an account (or of the listed ones), to start
    /// sessions.
    Claim {
        account: PhoneNumber,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        devices: Option<Vec<DeviceId>>,
    },
    /// Replenish this device's one-time keys (and optionally replace its fallback key).
    UploadKeys {
        one_time_keys: Vec<SignedKey>,
        fallback_key: Option<SignedKey>,
    },
    Block {
        business: PhoneNumber,
    },
    Unblock {
        business: PhoneNumber,
    },
    /// The current time on this business's clock (a sandbox's test clock included).
    Clock,
    /// One approved version of a business's template, to render a message sent with it.
    /// Any device may fetch it: template text is public to the platform.
    TemplateVersion {
        business: PhoneNumber,
        id: String,
        version: u32,
    },
    /// Submits a template for review, in the Cloud API's JSON (`name`, `language`,
    /// `category`, `parameter_format`, `components`). Business devices only, for their WABA.
    TemplateCreate {
        definition: Value,
    },
    /// Lists the business's templates, filtered, `limit` at a time from a cursor.
    TemplateList {
        #[serde(default)]
        query: TemplateQuery,
    },
    TemplateGet {
        id: String,
    },
    /// Edits a template (`category` and/or `components`, in the Cloud API's JSON): a new
    /// version, pending review.
    TemplateEdit {
        id: String,
        edit: Value,
    },
    /// Deletes the business's templates named `name` (in every language), or only `id`.
    TemplateDelete {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// The business's template status changes after `after` (an event `seq`), oldest first.
    TemplateEvents {
        after: i64,
        limit: u32,
    },
    /// What sending this message now would do, decided and rated as a `send` would be, with
    /// nothing sent or written: answered with [`Reply::Preview`], or refused as the send would
    /// be (the window, contact-first, a block, the template's state, the pace of replies by
    /// hand).
    Preview {
        to: PhoneNumber,
        kind: EnvelopeKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<TemplateHeader>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        manual: bool,
    },
    /// The business's delivered messages in `[from, until)` from its billing ledger, grouped
    /// for the Cloud API's `pricing_analytics` and `conversation_analytics`.
    Analytics {
        from: UnixTime,
        until: UnixTime,
        granularity: crate::pricing::report::Granularity,
    },
}

/// Which templates [`Op::TemplateList`] returns, and which page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateQuery {
    /// A substring of the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TemplateStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Templates after this `seq` (the next page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// Templates before this `seq` (the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    pub limit: u32,
}

/// A template as the registry holds it: identity, review status and current version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub id: String,
    /// The registry's order, the cursor of listings.
    pub seq: i64,
    pub name: String,
    pub language: String,
    pub category: Category,
    pub status: TemplateStatus,
    pub version: u32,
    pub parameter_format: String,
    /// The current version's components, in the Cloud API's JSON.
    pub components: Value,
    /// Why it was last rejected, paused or disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One version of a template, as a device renders it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVersionInfo {
    pub id: String,
    pub name: String,
    pub language: String,
    pub version: u32,
    pub category: Category,
    pub parameter_format: String,
    pub components: Value,
}

/// One status change of a business's template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateEventInfo {
    pub seq: i64,
    pub template_id: String,
    pub name: String,
    pub language: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<TemplateStatus>,
    pub to: TemplateStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: UnixTime,
}

/// Frames the relay sends.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Hello {
        protocol: u32,
        account: PhoneNumber,
        device_id: DeviceId,
        one_time_keys_remaining: u64,
    },
    Envelope(Envelope),
    Response {
        req: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<Reply>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ProtocolError>,
    },
    /// Fewer one-time keys remain than the device should keep published.
    KeysLow {
        remaining: u64,
    },
    /// Everything queued for the device has been sent (not necessarily acknowledged).
    Drained,
}

/// A stored envelope as delivered to one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The relay's delivery sequence for this device; acknowledge by it.
    pub seq: u64,
    pub id: MessageId,
    pub from: PhoneNumber,
    pub from_device: DeviceId,
    pub kind: EnvelopeKind,
    /// For kind `template`: the template version, as the relay checked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateHeader>,
    /// When the relay accepted it, on the business's clock.
    pub ts: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<Ciphertext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device_id: DeviceId,
    pub curve25519: String,
    pub ed25519: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKey {
    pub device: DeviceInfo,
    pub key: SignedKey,
    /// The device had no one-time key left; this is its (reusable) fallback key.
    pub fallback: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Sent {
        accepted_at: UnixTime,
        /// A business's message to a user: how it would be priced were it delivered now
        /// (what the `sent` status webhook says); the charge itself is decided on delivery.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pricing: Option<crate::pricing::PricingNote>,
    },
    Devices {
        devices: Vec<DeviceInfo>,
    },
    Claimed {
        keys: Vec<ClaimedKey>,
    },
    KeysUploaded {
        one_time_keys_remaining: u64,
    },
    Done,
    Clock {
        now: UnixTime,
    },
    Template {
        template: TemplateInfo,
    },
    /// A page of templates; `has_before`/`has_after` say whether more lie either side.
    Templates {
        templates: Vec<TemplateInfo>,
        has_before: bool,
        has_after: bool,
    },
    TemplateVersion {
        template: TemplateVersionInfo,
    },
    TemplateEvents {
        events: Vec<TemplateEventInfo>,
    },
    /// A [`Op::Preview`]'s answer: how the message would be priced were it delivered now
    /// (`None` when no policy prices it, as between two users).
    Preview {
        quote: Option<crate::pricing::PriceQuote>,
    },
    Analytics {
        points: Vec<crate::pricing::report::AnalyticsPoint>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    UnknownAccount,
    /// A rule refused the envelope; `rule` says which.
    Refused,
    /// The copies do not match the recipient's devices; `devices` lists the current ones.
    StaleDevices,
    /// The id was already used for a different submission, or a key id for a different key;
    /// or a template of that name and language exists, or changed meanwhile.
    Conflict,
    /// No such thing (a template id) for this account.
    NotFound,
    /// The account has as many of something as it may (templates, devices, one-time keys,
    /// queued envelopes).
    LimitReached,
    /// Too many requests of this kind for now; retry later.
    RateLimited,
    Internal,
    /// Never sent by the relay: the outcome a sender records when the recipient's device
    /// still could not decrypt a message after every resend it asked for.
    Undecryptable,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleViolation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceInfo>>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            rule: None,
            devices: None,
        }
    }

    pub fn refused(rule: RuleViolation) -> Self {
        Self {
            code: ErrorCode::Refused,
            message: rule.to_string(),
            rule: Some(rule),
            devices: None,
        }
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_a_stable_wire_form() {
        let frame = ClientFrame::Request {
            req: 7,
            op: Op::Block {
                business: "15550001111".parse().unwrap(),
            },
        };
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"type":"request","req":7,"op":{"op":"block","business":"15550001111"}}"#
        );
        let refused = ServerFrame::Response {
            req: 7,
            ok: None,
            error: Some(ProtocolError::refused(RuleViolation::NoContact)),
        };
        let json = serde_json::to_value(&refused).unwrap();
        assert_eq!(json["error"]["code"], "refused");
        assert_eq!(json["error"]["rule"]["rule"], "no_contact");
    }
}
