//! Requests a connected device may make.

use crate::registration::check_keys;
use crate::{Relay, templates};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ventana_core::pricing::PricingCategory;
use ventana_core::pricing::report::Granularity;
use ventana_core::protocol::{
    Ciphertext, ClaimedKey, DeviceInfo, ErrorCode, Op, ProtocolError, Receipt, ReceiptStatus,
    Reply, Submission,
};
use ventana_core::rules::{AccountKind, EnvelopeKind, RuleViolation};
use ventana_core::template::TemplateHeader;
use ventana_core::{BusinessClock, DeviceId, PhoneNumber, UnixTime, WabaId};
use ventana_store::StoreError;
use ventana_store::relay::{
    AccountRecord, DeviceRecord, EnvelopeBody, NewSubmission, Proposed, Refusal,
};

/// Largest ciphertext per device copy (base64 characters).
const MAX_CIPHERTEXT: usize = 96 * 1024;
const MAX_RECEIPT_IDS: usize = 256;

/// What the relay stores per envelope: the ciphertext, or a receipt. Nothing else.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) template: Option<TemplateHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ciphertext: Option<Ciphertext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) receipt: Option<Receipt>,
}

pub(crate) fn bad(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadRequest, message)
}

pub(crate) fn internal(error: StoreError) -> ProtocolError {
    match error {
        StoreError::Conflict(what) if what.kind == ventana_store::ConflictKind::Limit => {
            ProtocolError::new(ErrorCode::LimitReached, what.detail)
        }
        StoreError::Conflict(what) => ProtocolError::new(ErrorCode::Conflict, what.detail),
        StoreError::Backend(what) => {
            tracing::error!(%what, "relay store failed");
            ProtocolError::new(ErrorCode::Internal, "internal error")
        }
    }
}

fn info(device: DeviceRecord) -> DeviceInfo {
    DeviceInfo {
        device_id: device.device_id,
        curve25519: device.curve25519,
        ed25519: device.ed25519,
    }
}

/// The JSON of what is stored, or of what is fingerprinted. Failing to write it fails the
/// request: an empty body would be stored and delivered as if it were the message, an
/// empty fingerprint would let any submission pass for a retry of any other.
fn json(value: &impl Serialize) -> Result<Vec<u8>, ProtocolError> {
    serde_json::to_vec(value).map_err(|e| {
        tracing::error!(error = %e, "a submission could not be written as JSON");
        ProtocolError::new(ErrorCode::Internal, "internal error")
    })
}

pub(crate) async fn handle(
    relay: &Relay,
    me: &AccountRecord,
    device: DeviceId,
    op: Op,
) -> Result<Reply, ProtocolError> {
    match op {
        Op::Send(submission) => send(relay, me, device, *submission).await,
        Op::Devices { account } => {
            may_reach(relay, me, &account, false).await?;
            let devices = known_devices(relay, &account).await?;
            Ok(Reply::Devices {
                devices: devices.into_iter().map(info).collect(),
            })
        }
        Op::Claim { account, devices } => {
            may_reach(relay, me, &account, true).await?;
            known_devices(relay, &account).await?;
            let claimed = relay
                .store
                .claim_pre_keys(&account, devices.as_deref())
                .await
                .map_err(internal)?;
            let keys = claimed
                .into_iter()
                .map(|c| ClaimedKey {
                    device: info(c.device),
                    key: c.key,
                    fallback: c.fallback,
                })
                .collect();
            Ok(Reply::Claimed { keys })
        }
        Op::UploadKeys {
            one_time_keys,
            fallback_key,
        } => {
            let devices = relay.store.devices(&me.address).await.map_err(internal)?;
            let own = devices
                .iter()
                .find(|d| d.device_id == device)
                .ok_or_else(|| {
                    ProtocolError::new(ErrorCode::UnknownAccount, "this device is gone")
                })?;
            check_keys(
                &own.curve25519,
                &own.ed25519,
                &one_time_keys,
                fallback_key.as_ref(),
            )
            .map_err(|e| e.1)?;
            let remaining = relay
                .store
                .upload_keys(
                    &me.address,
                    device,
                    &one_time_keys,
                    fallback_key.as_ref(),
                    relay.limits.one_time_keys_per_device,
                )
                .await
                .map_err(internal)?;
            Ok(Reply::KeysUploaded {
                one_time_keys_remaining: remaining,
            })
        }
        Op::Block { business } => set_blocked(relay, me, &business, true).await,
        Op::Unblock { business } => set_blocked(relay, me, &business, false).await,
        Op::Clock => clock(relay, me).await,
        Op::TemplateVersion {
            business,
            id,
            version,
        } => templates::version(relay, &business, &id, version).await,
        Op::TemplateCreate { definition } => {
            templates::create(relay, business_of(me)?, &definition).await
        }
        Op::TemplateList { query } => templates::list(relay, business_of(me)?, query).await,
        Op::TemplateGet { id } => templates::get(relay, business_of(me)?, &id).await,
        Op::TemplateEdit { id, edit } => templates::edit(relay, business_of(me)?, &id, &edit).await,
        Op::TemplateDelete { name, id } => {
            templates::delete(relay, business_of(me)?, &name, id.as_deref()).await
        }
        Op::TemplateEvents { after, limit } => {
            templates::events(relay, business_of(me)?, after, limit).await
        }
        Op::Preview {
            to,
            kind,
            template,
            manual,
        } => preview(relay, me, to, kind, template, manual).await,
        Op::Analytics {
            from,
            until,
            granularity,
        } => analytics(relay, business_of(me)?, from, until, granularity).await,
    }
}

/// The business whose templates `me` manages: business numbers only.
fn business_of(me: &AccountRecord) -> Result<&WabaId, ProtocolError> {
    match (me.kind, &me.waba_id) {
        (AccountKind::Business, Some(waba)) => Ok(waba),
        _ => Err(bad("only a business has templates")),
    }
}

/// The time the rules apply to `me`: its business's clock (a sandbox's test clock included),
/// or the wall clock for a user.
async fn clock(relay: &Relay, me: &AccountRecord) -> Result<Reply, ProtocolError> {
    let wall = UnixTime::now();
    let now = match (me.kind, &me.waba_id) {
        (AccountKind::Business, Some(waba)) => relay
            .store
            .business_clock(waba)
            .await
            .map_err(internal)?
            .unwrap_or(BusinessClock::LIVE)
            .now(wall),
        _ => wall,
    };
    Ok(Reply::Clock { now })
}

/// Whether `me` may look up `target`'s devices (and, for `claim`, start sessions with them):
/// anyone may reach a business; a business may reach only a user who contacted it, and may
/// not start sessions with one who blocked it. So a business cannot probe which numbers are
/// on Ventana, nor burn the one-time keys of users it may not write to.
async fn may_reach(
    relay: &Relay,
    me: &AccountRecord,
    target: &PhoneNumber,
    claim: bool,
) -> Result<(), ProtocolError> {
    let account = relay
        .store
        .account(target)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::UnknownAccount,
                format!("{target} has no Ventana account"),
            )
        })?;
    match (me.kind, account.kind) {
        (AccountKind::User, AccountKind::Business) => Ok(()),
        (AccountKind::Business, AccountKind::User) => {
            match relay
                .store
                .relationship(&me.address, target)
                .await
                .map_err(internal)?
            {
                None => Err(ProtocolError::refused(RuleViolation::NoContact)),
                Some(rel) if rel.blocked && claim => {
                    Err(ProtocolError::refused(RuleViolation::Blocked))
                }
                Some(_) => Ok(()),
            }
        }
        _ => Err(ProtocolError::refused(RuleViolation::NotBusinessMessaging)),
    }
}

async fn known_devices(
    relay: &Relay,
    account: &PhoneNumber,
) -> Result<Vec<DeviceRecord>, ProtocolError> {
    let devices = relay.store.devices(account).await.map_err(internal)?;
    if devices.is_empty() {
        return Err(ProtocolError::new(
            ErrorCode::UnknownAccount,
            format!("{account} has no Ventana account"),
        ));
    }
    Ok(devices)
}

async fn set_blocked(
    relay: &Relay,
    me: &AccountRecord,
    business: &PhoneNumber,
    blocked: bool,
) -> Result<Reply, ProtocolError> {
    if me.kind != AccountKind::User {
        return Err(bad("only users block businesses"));
    }
    match relay.store.account(business).await.map_err(internal)? {
        Some(account) if account.kind == AccountKind::Business => {}
        _ => {
            return Err(ProtocolError::new(
                ErrorCode::UnknownAccount,
                format!("{business} is not a business on Ventana"),
            ));
        }
    }
    relay
        .store
        .set_blocked(&me.address, business, blocked, UnixTime::now())
        .await
        .map_err(internal)?;
    // Unblocking releases held envelopes: the store's wake-up has the devices rescan.
    Ok(Reply::Done)
}

/// The clear header of a submission, as a resend must repeat it: the kind, and for a
/// template message the template version it names.
fn clear_header(submission: &Submission) -> String {
    match &submission.template {
        Some(t) => format!(
            "{}:{}:{}:{}:{}",
            submission.kind.as_str(),
            t.id,
            t.language,
            t.version,
            t.name
        ),
        None => submission.kind.as_str().to_owned(),
    }
}

async fn send(
    relay: &Relay,
    me: &AccountRecord,
    device: DeviceId,
    submission: Submission,
) -> Result<Reply, ProtocolError> {
    if submission.to == me.address {
        return Err(bad("an account cannot message itself"));
    }
    let template_of = match (submission.kind, &submission.template) {
        (EnvelopeKind::Template, _) if me.kind != AccountKind::Business => {
            return Err(bad("users do not send templates"));
        }
        (EnvelopeKind::Template, Some(header)) => Some((business_of(me)?, header)),
        (EnvelopeKind::Template, None) => {
            return Err(bad(
                "a template message names its template version in `template`",
            ));
        }
        (EnvelopeKind::Message | EnvelopeKind::Receipt, Some(_)) => {
            return Err(bad("only a template message carries a `template` header"));
        }
        (EnvelopeKind::Message | EnvelopeKind::Receipt, None) => None,
    };
    let body = match (submission.kind, &submission.receipt) {
        (EnvelopeKind::Message | EnvelopeKind::Template, None) => {
            if submission.copies.is_empty() {
                return Err(bad("a message needs one ciphertext per recipient device"));
            }
            let mut copies = Vec::with_capacity(submission.copies.len());
            for copy in &submission.copies {
                let c = &copy.ciphertext;
                if c.message_type > 1 || c.body.is_empty() || c.body.len() > MAX_CIPHERTEXT {
                    return Err(bad(
                        "a ciphertext has type 0 or 1 and a body of at most 96 KiB",
                    ));
                }
                copies.push((
                    copy.device,
                    json(&StoredBody {
                        template: submission.template.clone(),
                        ciphertext: Some(c.clone()),
                        receipt: None,
                    })?,
                ));
            }
            EnvelopeBody::PerDevice(copies)
        }
        (EnvelopeKind::Receipt, Some(receipt))
            if submission.copies.is_empty() && !submission.resend =>
        {
            if receipt.ids.is_empty() || receipt.ids.len() > MAX_RECEIPT_IDS {
                return Err(bad("a receipt names 1 to 256 message ids"));
            }
            if !receipt.pricing.is_empty() {
                return Err(bad("only the relay prices a receipt's messages"));
            }
            let mut receipt = receipt.clone();
            // A user's device reporting a business's message delivered (or read, which
            // implies it) is the delivery that is charged: once, whoever reports it first.
            if me.kind == AccountKind::User
                && matches!(
                    receipt.status,
                    ReceiptStatus::Delivered | ReceiptStatus::Read
                )
            {
                receipt.pricing = relay
                    .store
                    .meter_delivery(&submission.to, &me.address, &receipt.ids, UnixTime::now())
                    .await
                    .map_err(internal)?;
            }
            EnvelopeBody::Shared(json(&StoredBody {
                template: None,
                ciphertext: None,
                receipt: Some(receipt),
            })?)
        }
        _ => {
            return Err(bad(
                "a message carries ciphertext copies; a receipt carries a receipt and nothing else",
            ));
        }
    };
    let fingerprint = {
        let bytes = json(&submission)?;
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    if let Some((waba, header)) = template_of
        && let Err(rule) = templates::check_header(relay, waba, header).await?
        // The relay answers a retry as the first time: a template paused since the store
        // accepted this id must not turn that acceptance into a refusal.
        && !relay
            .store
            .submitted(&me.address, &submission.id)
            .await
            .map_err(internal)?
    {
        return Err(ProtocolError::refused(rule));
    }
    let outcome = relay
        .store
        .accept(NewSubmission {
            id: submission.id.clone(),
            sender: me.address.clone(),
            sender_device: device,
            recipient: submission.to.clone(),
            kind: submission.kind,
            body,
            fingerprint,
            wall: UnixTime::now(),
            resend: submission.resend,
            header: clear_header(&submission),
            category: submission
                .template
                .as_ref()
                .map_or(PricingCategory::Service, |t| t.category.into()),
            manual: submission.manual,
            manual_limit: relay.billing.manual_limit,
        })
        .await
        .map_err(internal)?;
    match outcome {
        // The recipient's devices are woken by the store's wake-up, on whichever node.
        Ok(accepted) => Ok(Reply::Sent {
            accepted_at: accepted.accepted_at,
            pricing: accepted.pricing,
        }),
        Err(refused) => Err(refusal(refused, &submission.to)),
    }
}

/// The longest period one analytics request covers.
const MAX_ANALYTICS_SECS: i64 = 366 * 86_400;

/// A business's own billing ledger, grouped for the Cloud API's analytics.
async fn analytics(
    relay: &Relay,
    waba: &WabaId,
    from: UnixTime,
    until: UnixTime,
    granularity: Granularity,
) -> Result<Reply, ProtocolError> {
    let length = until.0.checked_sub(from.0);
    if !length.is_some_and(|secs| secs > 0 && secs <= MAX_ANALYTICS_SECS) {
        return Err(bad(
            "analytics cover a period that ends after it starts, at most 366 days long",
        ));
    }
    let entries = relay
        .store
        .ledger_between(waba, from, until)
        .await
        .map_err(internal)?;
    Ok(Reply::Analytics {
        points: ventana_core::pricing::report::analytics(&entries, from, until, granularity),
    })
}

/// The store's refusal of a message to `to`, in the client protocol.
fn refusal(refused: Refusal, to: &PhoneNumber) -> ProtocolError {
    match refused {
        Refusal::UnknownRecipient => ProtocolError::new(
            ErrorCode::UnknownAccount,
            format!("{to} has no Ventana account"),
        ),
        Refusal::StaleDevices(devices) => ProtocolError {
            code: ErrorCode::StaleDevices,
            message: "the copies do not match the recipient's devices".into(),
            rule: None,
            devices: Some(devices.into_iter().map(info).collect()),
        },
        Refusal::IdReused => ProtocolError::new(
            ErrorCode::Conflict,
            "this message id was used for another message",
        ),
        Refusal::Rule(rule) => ProtocolError::refused(rule),
    }
}

/// A cost preview: the same checks as [`send`] (the template header, then the store's
/// rules) and the same rating, with nothing sent or written.
async fn preview(
    relay: &Relay,
    me: &AccountRecord,
    to: PhoneNumber,
    kind: EnvelopeKind,
    template: Option<TemplateHeader>,
    manual: bool,
) -> Result<Reply, ProtocolError> {
    if to == me.address {
        return Err(bad("an account cannot message itself"));
    }
    let category = match (kind, &template) {
        (EnvelopeKind::Template, Some(header)) => {
            if let Err(rule) = templates::check_header(relay, business_of(me)?, header).await? {
                return Err(ProtocolError::refused(rule));
            }
            header.category.into()
        }
        (EnvelopeKind::Message, None) => PricingCategory::Service,
        _ => {
            return Err(bad(
                "a preview is of a message, or of a template message naming its template",
            ));
        }
    };
    let proposed = Proposed {
        sender: me.address.clone(),
        recipient: to.clone(),
        kind,
        category,
        manual,
        manual_limit: relay.billing.manual_limit,
        wall: UnixTime::now(),
    };
    match relay.store.preview(proposed).await.map_err(internal)? {
        Ok(quote) => Ok(Reply::Preview { quote }),
        Err(refused) => Err(refusal(refused, &to)),
    }
}
