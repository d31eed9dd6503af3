//! Accepting submissions under the rules, the per-device queues, and blocking.

use super::directory::{account, business_clock, devices, lock_account};
use crate::postgres::db::{
    TxResult, backend, big, device_id, execute, get, lock, named, parsed, query, query_opt, time,
    unsigned,
};
use crate::relay::{Accepted, BusinessPair, NewSubmission, Refusal, StoredEnvelope};
use deadpool_postgres::GenericClient;
use ventana_core::rules::{
    self, AccountKind, ContactOrigin, EnvelopeKind, RuleViolation, SendDecision, ServiceWindow,
};
use ventana_core::{BusinessClock, DeviceId, MessageId, PhoneNumber, Relationship, UnixTime};

/// Decides and records one submission, in the same order as the SQLite store: idempotency,
/// the two accounts, the rules, the device list, then the effects. Two locks make the
/// decision hold until the transaction commits, whichever node runs it:
///
/// 1. an advisory lock on (sender, id): concurrent retries of one submission run one after
///    the other, so the second finds the first's `submissions` row and answers as a
///    duplicate (or `IdReused`), instead of both deciding and one failing on the key;
/// 2. the recipient's account row, `FOR NO KEY UPDATE`: every `accept` to one recipient,
///    and every `add_device` to it (which updates the same row), runs one at a time. That
///    keeps the device list checked below current until the commit; it serialises the
///    relationship's read-decide-write for the pair, since only a user's message to a
///    business writes it and those all lock the business's row; and it makes each device's
///    envelope sequence numbers, drawn while the lock is held, become visible in increasing
///    order, so a device paging with `seq > after` never skips one committed late.
///
/// The locks are always taken in that order and the rest of the work takes no lock another
/// `accept` waits on, so concurrent accepts cannot deadlock one another.
pub(super) async fn accept(
    tx: &impl GenericClient,
    s: &NewSubmission,
) -> TxResult<Result<Accepted, Refusal>> {
    lock(
        tx,
        &format!("submission/{}/{}", s.sender.digits(), s.id.as_str()),
    )
    .await?;
    // A retry must get the first answer, even if the rules or the devices changed since.
    let earlier = query_opt(
        tx,
        "SELECT fingerprint, accepted_at, recipient, header, resends FROM submissions
         WHERE sender = $1 AND id = $2",
        &[&s.sender.digits(), &s.id.as_str()],
    )
    .await?;
    if let Some(row) = earlier {
        let fingerprint: String = get(&row, 0)?;
        let accepted_at = time(&row, 1)?;
        if fingerprint == s.fingerprint {
            let devices = devices(tx, &s.recipient)
                .await?
                .into_iter()
                .map(|d| d.device_id)
                .collect();
            return Ok(Ok(Accepted {
                accepted_at,
                devices,
                duplicate: true,
            }));
        }
        let (recipient, header, resends): (String, String, i64) =
            (get(&row, 2)?, get(&row, 3)?, get(&row, 4)?);
        if !s.may_resend(&recipient, &header, resends) {
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
        execute(
            tx,
            "UPDATE submissions SET resends = resends + 1 WHERE sender = $1 AND id = $2",
            &[&s.sender.digits(), &s.id.as_str()],
        )
        .await?;
        return Ok(Ok(Accepted {
            accepted_at,
            devices: queued,
            duplicate: false,
        }));
    }

    let sender = account(tx, &s.sender)
        .await?
        .ok_or_else(|| backend(format!("the sending account {} does not exist", s.sender)))?;
    let Some(recipient) = lock_account(tx, &s.recipient).await? else {
        // To a business, "no such user" and "no contact" are the same answer: it may not
        // learn who is on Ventana by trying.
        return Ok(Err(match sender.kind {
            AccountKind::Business => Refusal::Rule(RuleViolation::NoContact),
            AccountKind::User => Refusal::UnknownRecipient,
        }));
    };

    // The rules first: the device list below is only for senders allowed to write.
    let pair = BusinessPair::of(&sender, &recipient);
    let clock = match pair.as_ref().and_then(|p| p.business.waba_id.as_ref()) {
        Some(waba) => business_clock(tx, waba)
            .await?
            .unwrap_or(BusinessClock::LIVE),
        None => BusinessClock::LIVE,
    };
    let now = clock.now(s.wall);
    let existing = match &pair {
        Some(pair) => relationship_between(tx, &pair.business.address, &pair.user.address).await?,
        None => None,
    };
    let decision = match rules::decide(sender.kind, recipient.kind, s.kind, existing.as_ref(), now)
    {
        Err(violation) => return Ok(Err(Refusal::Rule(violation))),
        Ok(decision) => decision,
    };

    let current = devices(tx, &s.recipient).await?;
    let device_ids: Vec<DeviceId> = current.iter().map(|d| d.device_id).collect();
    let Some(copies) = s.body.per_device(&device_ids) else {
        return Ok(Err(Refusal::StaleDevices(current)));
    };

    if let SendDecision::DeliverAndRecord(rel) = decision {
        let pair =
            pair.ok_or_else(|| backend("the rules recorded a relationship without a business"))?;
        record_relationship(tx, &pair, &rel, existing.is_none()).await?;
    }

    queue_copies(tx, s, now, copies).await?;
    execute(
        tx,
        "INSERT INTO submissions (sender, id, fingerprint, accepted_at, recipient, header)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &s.sender.digits(),
            &s.id.as_str(),
            &s.fingerprint,
            &now.0,
            &s.recipient.digits(),
            &s.header,
        ],
    )
    .await?;
    Ok(Ok(Accepted {
        accepted_at: now,
        devices: device_ids,
        duplicate: false,
    }))
}

/// Queues one envelope per device copy, stamped `at`.
async fn queue_copies(
    tx: &impl GenericClient,
    s: &NewSubmission,
    at: UnixTime,
    copies: Vec<(DeviceId, &[u8])>,
) -> TxResult<()> {
    for (device, body) in copies {
        execute(
            tx,
            "INSERT INTO envelopes
                 (recipient, recipient_device, id, sender, sender_device, kind, ts, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &s.recipient.digits(),
                &i64::from(device.0),
                &s.id.as_str(),
                &s.sender.digits(),
                &i64::from(s.sender_device.0),
                &s.kind.as_str(),
                &at.0,
                &body,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn submitted(
    c: &impl GenericClient,
    sender: &PhoneNumber,
    id: &MessageId,
) -> TxResult<bool> {
    let row = query_opt(
        c,
        "SELECT 1 FROM submissions WHERE sender = $1 AND id = $2",
        &[&sender.digits(), &id.as_str()],
    )
    .await?;
    Ok(row.is_some())
}

pub(super) async fn relationship_between(
    c: &impl GenericClient,
    business: &PhoneNumber,
    user: &PhoneNumber,
) -> TxResult<Option<Relationship>> {
    let row = query_opt(
        c,
        "SELECT r.first_contact_at, r.origin, r.last_inbound_at,
                EXISTS (SELECT 1 FROM blocks b
                        WHERE b.user_address = r.user_address AND b.business = r.business)
         FROM relationships r WHERE r.business = $1 AND r.user_address = $2",
        &[&business.digits(), &user.digits()],
    )
    .await?;
    row.map(|row| {
        Ok(Relationship {
            first_contact_at: time(&row, 0)?,
            origin: named(&row, 1, parse_origin)?,
            window: ServiceWindow {
                last_inbound: time(&row, 2)?,
            },
            blocked: get(&row, 3)?,
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
    tx: &impl GenericClient,
    pair: &BusinessPair<'_>,
    rel: &Relationship,
    is_new: bool,
) -> TxResult<()> {
    let (business, user) = (pair.business.address.digits(), pair.user.address.digits());
    execute(
        tx,
        "INSERT INTO relationships (business, user_address, first_contact_at, origin, last_inbound_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (business, user_address) DO UPDATE
         SET first_contact_at = excluded.first_contact_at, origin = excluded.origin,
             last_inbound_at = excluded.last_inbound_at",
        &[
            &business,
            &user,
            &rel.first_contact_at.0,
            &rel.origin.as_str(),
            &rel.window.last_inbound.0,
        ],
    )
    .await?;
    if is_new {
        execute(
            tx,
            "INSERT INTO consent_events (business, user_address, at, event, origin)
             VALUES ($1, $2, $3, 'contact', $4)",
            &[
                &business,
                &user,
                &rel.first_contact_at.0,
                &rel.origin.as_str(),
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn pending(
    c: &impl GenericClient,
    account: &PhoneNumber,
    device: DeviceId,
    after_seq: u64,
    limit: u32,
) -> TxResult<Vec<StoredEnvelope>> {
    // Past BIGINT's range there is nothing left to read.
    let after_seq = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let rows = query(
        c,
        "SELECT e.seq, e.id, e.sender, e.sender_device, e.kind, e.ts, e.body
         FROM envelopes e
         WHERE e.recipient = $1 AND e.recipient_device = $2 AND e.seq > $3
           AND NOT EXISTS (SELECT 1 FROM blocks b
                           WHERE b.user_address = e.recipient AND b.business = e.sender)
         ORDER BY e.seq
         LIMIT $4",
        &[
            &account.digits(),
            &i64::from(device.0),
            &after_seq,
            &i64::from(limit),
        ],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredEnvelope {
                seq: unsigned(row, 0)?,
                id: parsed(row, 1)?,
                sender: parsed(row, 2)?,
                sender_device: device_id(row, 3)?,
                kind: named(row, 4, EnvelopeKind::parse)?,
                ts: time(row, 5)?,
                body: get(row, 6)?,
            })
        })
        .collect()
}

pub(super) async fn ack(
    tx: &impl GenericClient,
    account: &PhoneNumber,
    device: DeviceId,
    seqs: &[u64],
) -> TxResult<u64> {
    // A number past BIGINT's range names no envelope.
    let seqs: Vec<i64> = seqs.iter().filter_map(|&seq| big(seq).ok()).collect();
    execute(
        tx,
        "DELETE FROM envelopes WHERE recipient = $1 AND recipient_device = $2 AND seq = ANY ($3)",
        &[&account.digits(), &i64::from(device.0), &seqs],
    )
    .await
}

/// Only a change is audited, so a repeated request leaves one entry. Of two requests at once,
/// the second's `INSERT ... ON CONFLICT` or `DELETE` waits for the first and then changes
/// nothing.
pub(super) async fn set_blocked(
    tx: &impl GenericClient,
    user: &PhoneNumber,
    business: &PhoneNumber,
    blocked: bool,
    at: UnixTime,
) -> TxResult<()> {
    let (user, business) = (user.digits(), business.digits());
    let changed = if blocked {
        execute(
            tx,
            "INSERT INTO blocks (user_address, business, blocked_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_address, business) DO NOTHING",
            &[&user, &business, &at.0],
        )
        .await?
    } else {
        execute(
            tx,
            "DELETE FROM blocks WHERE user_address = $1 AND business = $2",
            &[&user, &business],
        )
        .await?
    };
    if changed > 0 {
        let event = if blocked { "block" } else { "unblock" };
        execute(
            tx,
            "INSERT INTO consent_events (business, user_address, at, event) VALUES ($1, $2, $3, $4)",
            &[&business, &user, &at.0, &event],
        )
        .await?;
    }
    Ok(())
}
