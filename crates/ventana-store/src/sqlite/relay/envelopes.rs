//! Accepting submissions under the rules, the per-device queues, and blocking.

use super::{account, business_clock, devices};
use crate::relay::{Accepted, BusinessPair, NewSubmission, Refusal, StoredEnvelope};
use crate::sqlite::db::{TxResult, backend, named, parsed};
use rusqlite::{Connection, OptionalExtension, params};
use ventana_core::rules::{
    self, AccountKind, ContactOrigin, EnvelopeKind, RuleViolation, SendDecision, ServiceWindow,
};
use ventana_core::{BusinessClock, DeviceId, MessageId, PhoneNumber, Relationship, UnixTime};

/// Decides and records one submission. The caller runs it in an immediate transaction, so
/// the relationship read for the decision is the one the decision's effects are written over.
pub(super) fn accept(tx: &Connection, s: &NewSubmission) -> TxResult<Result<Accepted, Refusal>> {
    // A retry must get the first answer, even if the rules or the devices changed since.
    let earlier: Option<(String, i64, String, String, i64)> = tx
        .prepare_cached(
            "SELECT fingerprint, accepted_at, recipient, header, resends FROM submissions
             WHERE sender = ?1 AND id = ?2",
        )?
        .query_row(params![s.sender.digits(), s.id.as_str()], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .optional()?;
    if let Some((fingerprint, accepted_at, recipient, header, resends)) = earlier {
        let current = devices(tx, &s.recipient)?;
        let device_ids: Vec<DeviceId> = current.iter().map(|d| d.device_id).collect();
        if fingerprint == s.fingerprint {
            return Ok(Ok(Accepted {
                accepted_at: UnixTime(accepted_at),
                devices: device_ids,
                duplicate: true,
            }));
        }
        if !s.may_resend(&recipient, &header, resends) {
            return Ok(Err(Refusal::IdReused));
        }
        // A new encryption of an accepted message: the first acceptance stands (the rules
        // were decided then); only the new copies are queued.
        let Some(copies) = s.body.resent_copies(&device_ids) else {
            return Ok(Err(Refusal::StaleDevices(current)));
        };
        let accepted_at = UnixTime(accepted_at);
        let queued = copies.iter().map(|(device, _)| *device).collect();
        queue_copies(tx, s, accepted_at, copies)?;
        tx.prepare_cached(
            "UPDATE submissions SET resends = resends + 1 WHERE sender = ?1 AND id = ?2",
        )?
        .execute(params![s.sender.digits(), s.id.as_str()])?;
        return Ok(Ok(Accepted {
            accepted_at,
            devices: queued,
            duplicate: false,
        }));
    }

    let sender = account(tx, &s.sender)?
        .ok_or_else(|| backend(format!("the sending account {} does not exist", s.sender)))?;
    let Some(recipient) = account(tx, &s.recipient)? else {
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
        Some(waba) => business_clock(tx, waba)?.unwrap_or(BusinessClock::LIVE),
        None => BusinessClock::LIVE,
    };
    let now = clock.now(s.wall);
    let existing = match &pair {
        Some(pair) => relationship(tx, pair)?,
        None => None,
    };
    let decision = match rules::decide(sender.kind, recipient.kind, s.kind, existing.as_ref(), now)
    {
        Err(violation) => return Ok(Err(Refusal::Rule(violation))),
        Ok(decision) => decision,
    };

    let current = devices(tx, &s.recipient)?;
    let device_ids: Vec<DeviceId> = current.iter().map(|d| d.device_id).collect();
    let Some(copies) = s.body.per_device(&device_ids) else {
        return Ok(Err(Refusal::StaleDevices(current)));
    };

    if let SendDecision::DeliverAndRecord(rel) = decision {
        let pair =
            pair.ok_or_else(|| backend("the rules recorded a relationship without a business"))?;
        record_relationship(tx, &pair, &rel, existing.is_none())?;
    }

    queue_copies(tx, s, now, copies)?;
    tx.prepare_cached(
        "INSERT INTO submissions (sender, id, fingerprint, accepted_at, recipient, header)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        s.sender.digits(),
        s.id.as_str(),
        s.fingerprint,
        now.0,
        s.recipient.digits(),
        s.header,
    ])?;
    Ok(Ok(Accepted {
        accepted_at: now,
        devices: device_ids,
        duplicate: false,
    }))
}

/// Queues one envelope per device copy, stamped `at`.
fn queue_copies(
    tx: &Connection,
    s: &NewSubmission,
    at: UnixTime,
    copies: Vec<(DeviceId, &[u8])>,
) -> TxResult<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO envelopes (recipient, recipient_device, id, sender, sender_device, kind, ts, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (device, body) in copies {
        insert.execute(params![
            s.recipient.digits(),
            device.0,
            s.id.as_str(),
            s.sender.digits(),
            s.sender_device.0,
            s.kind.as_str(),
            at.0,
            body,
        ])?;
    }
    Ok(())
}

pub(super) fn submitted(tx: &Connection, sender: &PhoneNumber, id: &MessageId) -> TxResult<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM submissions WHERE sender = ?1 AND id = ?2")?
        .query_row(params![sender.digits(), id.as_str()], |_| Ok(()))
        .optional()?
        .is_some())
}

fn relationship(tx: &Connection, pair: &BusinessPair<'_>) -> TxResult<Option<Relationship>> {
    relationship_between(tx, &pair.business.address, &pair.user.address)
}

pub(super) fn relationship_between(
    tx: &Connection,
    business: &PhoneNumber,
    user: &PhoneNumber,
) -> TxResult<Option<Relationship>> {
    Ok(tx
        .prepare_cached(
            "SELECT r.first_contact_at, r.origin, r.last_inbound_at,
                    EXISTS (SELECT 1 FROM blocks b WHERE b.user = r.user AND b.business = r.business)
             FROM relationships r WHERE r.business = ?1 AND r.user = ?2",
        )?
        .query_row(params![business.digits(), user.digits()], |row| {
            Ok(Relationship {
                first_contact_at: UnixTime(row.get(0)?),
                origin: named(row, 1, parse_origin)?,
                window: ServiceWindow { last_inbound: UnixTime(row.get(2)?) },
                blocked: row.get(3)?,
            })
        })
        .optional()?)
}

// `ContactOrigin` has no parser of its own in ventana-core.
fn parse_origin(s: &str) -> Option<ContactOrigin> {
    [ContactOrigin::UserMessage]
        .into_iter()
        .find(|origin| origin.as_str() == s)
}

/// Writes the relationship the rules decided; a new one is consent, so it is audited too.
/// `blocked` is not stored here: it only ever comes from `blocks`.
fn record_relationship(
    tx: &Connection,
    pair: &BusinessPair<'_>,
    rel: &Relationship,
    is_new: bool,
) -> TxResult<()> {
    let (business, user) = (pair.business.address.digits(), pair.user.address.digits());
    tx.prepare_cached(
        "INSERT INTO relationships (business, user, first_contact_at, origin, last_inbound_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (business, user) DO UPDATE
         SET first_contact_at = excluded.first_contact_at, origin = excluded.origin,
             last_inbound_at = excluded.last_inbound_at",
    )?
    .execute(params![
        business,
        user,
        rel.first_contact_at.0,
        rel.origin.as_str(),
        rel.window.last_inbound.0
    ])?;
    if is_new {
        tx.prepare_cached(
            "INSERT INTO consent_events (business, user, at, event, origin) VALUES (?1, ?2, ?3, 'contact', ?4)",
        )?
        .execute(params![business, user, rel.first_contact_at.0, rel.origin.as_str()])?;
    }
    Ok(())
}

pub(super) fn pending(
    tx: &Connection,
    account: &PhoneNumber,
    device: DeviceId,
    after_seq: u64,
    limit: u32,
) -> TxResult<Vec<StoredEnvelope>> {
    let mut stmt = tx.prepare_cached(
        "SELECT e.seq, e.id, e.sender, e.sender_device, e.kind, e.ts, e.body
         FROM envelopes e
         WHERE e.recipient = ?1 AND e.recipient_device = ?2 AND e.seq > ?3
           AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.user = e.recipient AND b.business = e.sender)
         ORDER BY e.seq
         LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![account.digits(), device.0, after_seq, limit],
        |row| {
            Ok(StoredEnvelope {
                seq: row.get(0)?,
                id: parsed(row, 1)?,
                sender: parsed(row, 2)?,
                sender_device: DeviceId(row.get(3)?),
                kind: named(row, 4, EnvelopeKind::parse)?,
                ts: UnixTime(row.get(5)?),
                body: row.get(6)?,
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn ack(
    tx: &Connection,
    account: &PhoneNumber,
    device: DeviceId,
    seqs: &[u64],
) -> TxResult<u64> {
    let mut delete = tx.prepare_cached(
        "DELETE FROM envelopes WHERE recipient = ?1 AND recipient_device = ?2 AND seq = ?3",
    )?;
    let mut gone = 0;
    for seq in seqs {
        gone += delete.execute(params![account.digits(), device.0, seq])? as u64;
    }
    Ok(gone)
}

/// Only a change is audited, so a repeated request leaves one entry.
pub(super) fn set_blocked(
    tx: &Connection,
    user: &PhoneNumber,
    business: &PhoneNumber,
    blocked: bool,
    at: UnixTime,
) -> TxResult<()> {
    let changed = if blocked {
        tx.prepare_cached(
            "INSERT INTO blocks (user, business, blocked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (user, business) DO NOTHING",
        )?
        .execute(params![user.digits(), business.digits(), at.0])?
    } else {
        tx.prepare_cached("DELETE FROM blocks WHERE user = ?1 AND business = ?2")?
            .execute(params![user.digits(), business.digits()])?
    };
    if changed > 0 {
        tx.prepare_cached(
            "INSERT INTO consent_events (business, user, at, event) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            business.digits(),
            user.digits(),
            at.0,
            if blocked { "block" } else { "unblock" }
        ])?;
    }
    Ok(())
}
