//! Accepting submissions under the rules, the per-device queues, and blocking.

use super::billing;
use super::directory::{account, business_clock, business_tier, devices, lock_account};
use crate::relay::{
    Accepted, AccountRecord, BusinessPair, ManualLimit, NewSubmission, Proposed, Refusal,
    StoredEnvelope, WakeReason,
};
use crate::sql::{Sql, Tx, TxResult, args, backend, big};
use ventana_core::pricing::{PriceQuote, PricingCategory, PricingNote, WindowState};
use ventana_core::rules::{
    self, AccountKind, BusinessTier, ContactOrigin, EnvelopeKind, RuleViolation, SendDecision,
    ServiceWindow,
};
use ventana_core::{BusinessClock, DeviceId, MessageId, PhoneNumber, Relationship, UnixTime};

/// Decides and records one submission: idempotency, the two accounts, the rules, the device
/// list, then the effects. What makes the decision hold until the commit:
///
/// - On SQLite, nothing more is needed: the one writer thread runs units one after another,
///   so what this reads is what its effects are written over.
/// - On PostgreSQL, whichever node runs it, two locks:
///   1. [`Tx::lock`] on (sender, id): concurrent retries of one submission run one after the
///      other, so the second finds the first's `submissions` row and answers as a duplicate
///      (or `IdReused`), instead of both deciding and one failing on the key;
///   2. the recipient's account row ([`lock_account`]): every `accept` to one recipient, and
///      every `add_device` to it (which updates the same row), runs one at a time. That keeps
///      the device list checked below current until the commit; it serialises the
///      relationship's read-decide-write for the pair, since only a user's message to a
///      business writes it and those all lock the business's row; and it makes each device's
///      envelope sequence numbers, drawn while the lock is held, become visible in increasing
///      order, so a device paging with `seq > after` never skips one committed late.
///
///   Then, only where they apply and always in this order: `manual/{sender}` (the pace of a
///   business number's replies by hand) and `business-message/{waba}/{id}` (one id per
///   business message, across the business's numbers). The locks are always taken in that
///   order and the rest of the work takes no lock another `accept` waits on, so concurrent
///   accepts cannot deadlock one another.
///
/// The devices that got a copy are woken once it commits.
pub(crate) async fn accept(
    tx: &mut impl Tx,
    s: &NewSubmission,
) -> TxResult<Result<Accepted, Refusal>> {
    let outcome = decide(tx, s).await?;
    if let Ok(accepted) = &outcome {
        tx.wake(&s.recipient, &accepted.devices, WakeReason::Envelopes)
            .await?;
    }
    Ok(outcome)
}

async fn decide(tx: &mut impl Tx, s: &NewSubmission) -> TxResult<Result<Accepted, Refusal>> {
    tx.lock(&format!(
        "submission/{}/{}",
        s.sender.digits(),
        s.id.as_str()
    ))
    .await?;
    // A retry must get the first answer, even if the rules or the devices changed since.
    let earlier = tx
        .query_opt(
            "SELECT fingerprint, accepted_at, recipient, header, resends FROM submissions
             WHERE sender = $1 AND id = $2",
            args![s.sender.digits(), s.id.as_str()],
        )
        .await?;
    if let Some(row) = earlier {
        let accepted_at = row.time(1)?;
        if row.text(0)? == s.fingerprint {
            let devices = devices(tx, &s.recipient)
                .await?
                .into_iter()
                .map(|d| d.device_id)
                .collect();
            let pricing =
                billing::sent_note(tx, &s.sender, &s.recipient, &s.id, accepted_at).await?;
            return Ok(Ok(Accepted {
                accepted_at,
                devices,
                duplicate: true,
                pricing,
            }));
        }
        if !s.may_resend(row.text(2)?, row.text(3)?, row.int(4)?) {
            return Ok(Err(Refusal::IdReused));
        }
        // A new encryption of an accepted message: the first acceptance stands (the rules
        // were decided then); only the new copies are queued, under the recipient's lock
        // like every other envelope (sequence numbers stay in commit order).
        lock_account(tx, &s.recipient).await?;
        let current = devices(tx, &s.recipient).await?;
        let device_ids: Vec<DeviceId> = current.iter().map(|d| d.device_id).collect();
        let Some(copies) = s.body.resent_copies(&device_ids) else {
            return Ok(Err(Refusal::StaleDevices(current)));
        };
        let queued = copies.iter().map(|(device, _)| *device).collect();
        queue_copies(tx, s, accepted_at, copies).await?;
        tx.execute(
            "UPDATE submissions SET resends = resends + 1 WHERE sender = $1 AND id = $2",
            args![s.sender.digits(), s.id.as_str()],
        )
        .await?;
        let pricing = billing::sent_note(tx, &s.sender, &s.recipient, &s.id, accepted_at).await?;
        return Ok(Ok(Accepted {
            accepted_at,
            devices: queued,
            duplicate: false,
            pricing,
        }));
    }

    let sender = account(tx, &s.sender)
        .await?
        .ok_or_else(|| backend(format!("the sending account {} does not exist", s.sender)))?;
    let Some(recipient) = lock_account(tx, &s.recipient).await? else {
        return Ok(Err(no_recipient(&sender)));
    };

    // The rules first: the device list below is only for senders allowed to write.
    let judged = match judge(tx, &Proposal::of(s), &sender, &recipient).await? {
        Err(refusal) => return Ok(Err(refusal)),
        Ok(judged) => judged,
    };
    let now = judged.now;
    // The ledger knows a business's messages by id: one id, one message, whichever of the
    // business's numbers sent it (a self-run gateway chooses its own ids).
    if let Some(inputs) = &judged.inputs
        && billing::id_taken(tx, &inputs.waba, &s.id).await?
    {
        return Ok(Err(Refusal::IdReused));
    }

    let current = devices(tx, &s.recipient).await?;
    let device_ids: Vec<DeviceId> = current.iter().map(|d| d.device_id).collect();
    let Some(copies) = s.body.per_device(&device_ids) else {
        return Ok(Err(Refusal::StaleDevices(current)));
    };

    if let SendDecision::DeliverAndRecord(rel) = &judged.decision {
        let pair = judged
            .pair
            .as_ref()
            .ok_or_else(|| backend("the rules recorded a relationship without a business"))?;
        record_relationship(tx, pair, rel, judged.existing.is_none()).await?;
    }

    queue_copies(tx, s, now, copies).await?;
    tx.execute(
        "INSERT INTO submissions (sender, id, fingerprint, accepted_at, recipient, header)
         VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            s.sender.digits(),
            s.id.as_str(),
            &s.fingerprint,
            now,
            s.recipient.digits(),
            &s.header,
        ],
    )
    .await?;
    // A business's message to a user is priced on delivery, from what it is now.
    let pricing = match &judged.inputs {
        Some(inputs) => {
            billing::record_inputs(tx, &s.sender, &s.id, inputs).await?;
            billing::prospect(tx, inputs, &s.recipient, &s.id, now).await?
        }
        None => None,
    };
    Ok(Ok(Accepted {
        accepted_at: now,
        devices: device_ids,
        duplicate: false,
        pricing,
    }))
}

/// To a business, "no such user" and "no contact" are the same answer: it may not learn who
/// is on Ventana by trying.
fn no_recipient(sender: &AccountRecord) -> Refusal {
    match sender.kind {
        AccountKind::Business => Refusal::Rule(RuleViolation::NoContact),
        AccountKind::User => Refusal::UnknownRecipient,
    }
}

/// What the rules read of a message: who to whom, what, by hand or not, and when.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Proposal<'a> {
    pub(crate) sender: &'a PhoneNumber,
    pub(crate) recipient: &'a PhoneNumber,
    pub(crate) kind: EnvelopeKind,
    pub(crate) category: PricingCategory,
    pub(crate) manual: bool,
    pub(crate) manual_limit: ManualLimit,
    pub(crate) wall: UnixTime,
}

impl<'a> From<&'a Proposed> for Proposal<'a> {
    fn from(p: &'a Proposed) -> Self {
        Self {
            sender: &p.sender,
            recipient: &p.recipient,
            kind: p.kind,
            category: p.category,
            manual: p.manual,
            manual_limit: p.manual_limit,
            wall: p.wall,
        }
    }
}

impl<'a> Proposal<'a> {
    fn of(s: &'a NewSubmission) -> Self {
        Self {
            sender: &s.sender,
            recipient: &s.recipient,
            kind: s.kind,
            category: s.category,
            manual: s.manual,
            manual_limit: s.manual_limit,
            wall: s.wall,
        }
    }
}

/// The rules' verdict on a proposal, and what it was decided from.
struct Judged<'a> {
    /// On the business's clock.
    now: UnixTime,
    pair: Option<BusinessPair<'a>>,
    existing: Option<Relationship>,
    decision: SendDecision,
    /// A business's message to a user: what it is for pricing.
    inputs: Option<billing::Inputs>,
}

/// Judges a proposal under the rules, writing nothing: the business's clock, the
/// relationship, a reply by hand's tier and pace, contact-first, blocking and the window.
async fn judge<'a>(
    tx: &mut impl Tx,
    p: &Proposal<'_>,
    sender: &'a AccountRecord,
    recipient: &'a AccountRecord,
) -> TxResult<Result<Judged<'a>, Refusal>> {
    let pair = BusinessPair::of(sender, recipient);
    let clock = match pair.as_ref().and_then(|p| p.business.waba_id.as_ref()) {
        Some(waba) => business_clock(tx, waba)
            .await?
            .unwrap_or(BusinessClock::LIVE),
        None => BusinessClock::LIVE,
    };
    let now = clock.now(p.wall);
    let existing = match &pair {
        Some(pair) => relationship_between(tx, &pair.business.address, &pair.user.address).await?,
        None => None,
    };
    // A reply by hand passes a closed window only from an `app`-tier business; from any
    // other it is an ordinary message, under the window like the rest.
    let manual = match &pair {
        Some(pair) if p.manual && p.kind == EnvelopeKind::Message => {
            pair.business.address == *p.sender
                && match &pair.business.waba_id {
                    Some(waba) => business_tier(tx, waba).await? == Some(BusinessTier::App),
                    None => false,
                }
        }
        _ => false,
    };
    let decided = if manual {
        match human_pace(tx, p.sender, p.manual_limit, now).await? {
            Err(violation) => Err(violation),
            Ok(()) => rules::decide_manual_reply(existing.as_ref()),
        }
    } else {
        rules::decide(sender.kind, recipient.kind, p.kind, existing.as_ref(), now)
    };
    let decision = match decided {
        Err(violation) => return Ok(Err(Refusal::Rule(violation))),
        Ok(decision) => decision,
    };
    // Business messages only: the business's own receipts are not charged for.
    let priced = matches!(p.kind, EnvelopeKind::Message | EnvelopeKind::Template);
    let inputs = match &pair {
        Some(pair) if priced && pair.business.address == *p.sender => {
            pair.business.waba_id.as_ref().map(|waba| billing::Inputs {
                waba: waba.clone(),
                category: p.category,
                template: p.kind == EnvelopeKind::Template,
                window: match &existing {
                    Some(rel) if rel.window.is_open(now) => WindowState::Open,
                    _ => WindowState::Closed,
                },
                manual,
            })
        }
        _ => None,
    };
    Ok(Ok(Judged {
        now,
        pair,
        existing,
        decision,
        inputs,
    }))
}

/// [`preview`] as the store answers it.
pub(crate) async fn quote(
    tx: &mut impl Tx,
    proposed: &Proposed,
) -> TxResult<Result<Option<PriceQuote>, Refusal>> {
    Ok(preview(tx, &Proposal::from(proposed)).await?.map(|rated| {
        rated.map(|r| PriceQuote {
            pricing: PricingNote::of(&r.decision, r.conversation),
            rate: r.decision.rate.0,
            amount: r.decision.amount.0,
            currency: r.currency,
            precision: r.precision,
            policy_version: r.version,
        })
    }))
}

/// What sending a message would do, deciding and rating it exactly as [`accept`] would but
/// writing nothing (a cost preview): the refusal it would meet, or how it would be priced
/// were it delivered now (`None` for a message nobody is charged for).
async fn preview(
    tx: &mut impl Tx,
    p: &Proposal<'_>,
) -> TxResult<Result<Option<billing::Rated>, Refusal>> {
    let sender = account(tx, p.sender)
        .await?
        .ok_or_else(|| backend(format!("the sending account {} does not exist", p.sender)))?;
    let Some(recipient) = account(tx, p.recipient).await? else {
        return Ok(Err(no_recipient(&sender)));
    };
    let judged = match judge(tx, p, &sender, &recipient).await? {
        Err(refusal) => return Ok(Err(refusal)),
        Ok(judged) => judged,
    };
    let Some(inputs) = &judged.inputs else {
        return Ok(Ok(None));
    };
    // A conversation it would open is named after the message; a preview has none yet.
    let placeholder = MessageId::generate();
    billing::rate(tx, inputs, p.recipient, &placeholder, judged.now)
        .await
        .map(Ok)
}

/// Whether a business number may send a reply by hand at `now`: at least `min_gap_secs`
/// after its last one and fewer than `per_minute` in the last 60 seconds. Counted from its
/// accepted manual submissions, under a lock on the number, so it holds across nodes.
async fn human_pace(
    tx: &mut impl Tx,
    sender: &PhoneNumber,
    limit: ManualLimit,
    now: UnixTime,
) -> TxResult<Result<(), RuleViolation>> {
    tx.lock(&format!("manual/{}", sender.digits())).await?;
    // Only the last minute (or gap, if longer) matters, which also bounds what is read.
    let since = now.plus_secs(-i64::from(limit.min_gap_secs.max(60)));
    let recent = tx
        .query(
            "SELECT accepted_at FROM submissions WHERE sender = $1 AND manual
               AND accepted_at > $3
             ORDER BY accepted_at DESC LIMIT $2",
            args![sender.digits(), limit.per_minute.max(1), since],
        )
        .await?;
    let times: Vec<UnixTime> = recent
        .iter()
        .map(|row| row.time(0))
        .collect::<TxResult<_>>()?;
    let gap = i64::from(limit.min_gap_secs);
    let mut wait = 0_i64;
    if let Some(last) = times.first() {
        wait = wait.max(gap - (now.0 - last.0));
    }
    if limit.per_minute == 0 {
        wait = wait.max(60);
    } else if times.len() >= limit.per_minute as usize
        && let Some(oldest) = times.last()
    {
        wait = wait.max(60 - (now.0 - oldest.0));
    }
    if wait > 0 {
        return Ok(Err(RuleViolation::ManualTooFast {
            per_minute: limit.per_minute,
            min_gap_secs: limit.min_gap_secs,
            retry_after_secs: u32::try_from(wait).unwrap_or(u32::MAX),
        }));
    }
    Ok(Ok(()))
}

/// Queues one envelope per device copy, stamped `at`.
async fn queue_copies(
    tx: &mut impl Tx,
    s: &NewSubmission,
    at: UnixTime,
    copies: Vec<(DeviceId, &[u8])>,
) -> TxResult<()> {
    for (device, body) in copies {
        tx.execute(
            "INSERT INTO envelopes
                 (recipient, recipient_device, id, sender, sender_device, kind, ts, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            args![
                s.recipient.digits(),
                device,
                s.id.as_str(),
                s.sender.digits(),
                s.sender_device,
                s.kind.as_str(),
                at,
                body,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn submitted(
    tx: &mut impl Tx,
    sender: &PhoneNumber,
    id: &MessageId,
) -> TxResult<bool> {
    let row = tx
        .query_opt(
            "SELECT 1 FROM submissions WHERE sender = $1 AND id = $2",
            args![sender.digits(), id.as_str()],
        )
        .await?;
    Ok(row.is_some())
}

pub(crate) async fn relationship_between(
    tx: &mut impl Tx,
    business: &PhoneNumber,
    user: &PhoneNumber,
) -> TxResult<Option<Relationship>> {
    let row = tx
        .query_opt(
            "SELECT r.first_contact_at, r.origin, r.last_inbound_at,
                    EXISTS (SELECT 1 FROM blocks b
                            WHERE b.user_address = r.user_address AND b.business = r.business)
             FROM relationships r WHERE r.business = $1 AND r.user_address = $2",
            args![business.digits(), user.digits()],
        )
        .await?;
    row.map(|row| {
        Ok(Relationship {
            first_contact_at: row.time(0)?,
            origin: row.named(1, parse_origin)?,
            window: ServiceWindow {
                last_inbound: row.time(2)?,
            },
            blocked: row.bool(3)?,
        })
    })
    .transpose()
}

// `ContactOrigin` has no parser of its own in ventana-core.
fn parse_origin(s: &str) -> Option<ContactOrigin> {
    [ContactOrigin::UserMessage]
        .into_iter()
        .find(|origin| origin.as_str() == s)
}

/// Writes the relationship the rules decided; a new one is consent, so it is audited too.
/// `blocked` is not stored here: it only ever comes from `blocks`.
async fn record_relationship(
    tx: &mut impl Tx,
    pair: &BusinessPair<'_>,
    rel: &Relationship,
    is_new: bool,
) -> TxResult<()> {
    let (business, user) = (pair.business.address.digits(), pair.user.address.digits());
    tx.execute(
        "INSERT INTO relationships
             (business, user_address, first_contact_at, origin, last_inbound_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (business, user_address) DO UPDATE
         SET first_contact_at = excluded.first_contact_at, origin = excluded.origin,
             last_inbound_at = excluded.last_inbound_at",
        args![
            business,
            user,
            rel.first_contact_at,
            rel.origin.as_str(),
            rel.window.last_inbound,
        ],
    )
    .await?;
    if is_new {
        tx.execute(
            "INSERT INTO consent_events (business, user_address, at, event, origin)
             VALUES ($1, $2, $3, 'contact', $4)",
            args![business, user, rel.first_contact_at, rel.origin.as_str()],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn pending(
    tx: &mut impl Tx,
    account: &PhoneNumber,
    device: DeviceId,
    after_seq: u64,
    limit: u32,
) -> TxResult<Vec<StoredEnvelope>> {
    // Past the column's range there is nothing left to read.
    let after_seq = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            "SELECT e.seq, e.id, e.sender, e.sender_device, e.kind, e.ts, e.body
             FROM envelopes e
             WHERE e.recipient = $1 AND e.recipient_device = $2 AND e.seq > $3
               AND NOT EXISTS (SELECT 1 FROM blocks b
                               WHERE b.user_address = e.recipient AND b.business = e.sender)
             ORDER BY e.seq
             LIMIT $4",
            args![account.digits(), device, after_seq, limit],
        )
        .await?;
    rows.into_iter()
        .map(|mut row| {
            Ok(StoredEnvelope {
                seq: row.unsigned(0)?,
                id: row.parsed(1)?,
                sender: row.parsed(2)?,
                sender_device: row.device_id(3)?,
                kind: row.named(4, EnvelopeKind::parse)?,
                ts: row.time(5)?,
                body: row.take_blob(6)?,
            })
        })
        .collect()
}

pub(crate) async fn ack(
    tx: &mut impl Tx,
    account: &PhoneNumber,
    device: DeviceId,
    seqs: &[u64],
) -> TxResult<u64> {
    const DELETE: Sql = Sql::dialects(
        "DELETE FROM envelopes WHERE recipient = $1 AND recipient_device = $2
         AND seq IN (SELECT value FROM json_each($3))",
        "DELETE FROM envelopes WHERE recipient = $1 AND recipient_device = $2
         AND seq = ANY ($3)",
    );
    // A number past the column's range names no envelope.
    let seqs: Vec<i64> = seqs.iter().filter_map(|&seq| big(seq).ok()).collect();
    tx.changes(DELETE, args![account.digits(), device, seqs.as_slice()])
        .await
}

/// Only a change is audited, so a repeated request leaves one entry. An unblock releases
/// held-back envelopes, so every device of the user reads its queue again. Of two requests at once
/// on PostgreSQL, the second's `INSERT ... ON CONFLICT` or `DELETE` waits for the first and
/// then changes nothing.
pub(crate) async fn set_blocked(
    tx: &mut impl Tx,
    user: &PhoneNumber,
    business: &PhoneNumber,
    blocked: bool,
    at: UnixTime,
) -> TxResult<()> {
    let (address, business) = (user.digits(), business.digits());
    let changed = if blocked {
        tx.execute(
            "INSERT INTO blocks (user_address, business, blocked_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_address, business) DO NOTHING",
            args![address, business, at],
        )
        .await?
    } else {
        tx.execute(
            "DELETE FROM blocks WHERE user_address = $1 AND business = $2",
            args![address, business],
        )
        .await?
    };
    if changed > 0 {
        let event = if blocked { "block" } else { "unblock" };
        tx.execute(
            "INSERT INTO consent_events (business, user_address, at, event)
             VALUES ($1, $2, $3, $4)",
            args![business, address, at, event],
        )
        .await?;
    }
    if !blocked {
        let devices: Vec<DeviceId> = devices(tx, user)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        tx.wake(user, &devices, WakeReason::Rescan).await?;
    }
    Ok(())
}
