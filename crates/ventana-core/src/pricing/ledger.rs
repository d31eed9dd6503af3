//! The ledger's entries and their hash chain: what was charged for one delivered message, and
//! the proof that no entry was changed, removed or inserted since.
//!
//! Each business's entries are numbered from 1, and each entry's hash commits to its own
//! fields and to the previous entry's hash (zeros before the first). Editing any field of any
//! entry, deleting one or slipping one in therefore breaks the chain at that entry, which
//! [`verify`] finds. The hash covers every input the charge was computed from, so the amount
//! can also be recomputed from the entry and the policy version it names.

use super::{Amount, Model, PricingCategory, PricingType, WindowState};
use crate::ids::{MessageId, WabaId};
use crate::phone::PhoneNumber;
use crate::time::UnixTime;
use sha2::{Digest, Sha256};

/// A SHA-256 hash of an entry.
pub type EntryHash = [u8; 32];

/// The hash "before" a business's first entry.
pub const GENESIS: EntryHash = [0; 32];

/// What one delivered message was charged, and everything the charge was decided from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub waba_id: WabaId,
    /// The key of the entry: a message is charged at most once.
    pub message_id: MessageId,
    pub destination: PhoneNumber,
    pub delivered_at: UnixTime,
    /// The policy version in force at `delivered_at`.
    pub policy_version: String,
    pub model: Model,
    pub category: PricingCategory,
    pub template: bool,
    pub window: WindowState,
    pub pricing_type: PricingType,
    /// A small business's reply sent by hand: free by rule, whatever the policy says.
    pub manual: bool,
    pub rate: Amount,
    pub amount: Amount,
    pub currency: String,
    pub precision: u8,
    /// `conversation_2022`: the conversation the message opened or rode on.
    pub conversation_id: Option<String>,
}

/// A charge in its business's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// 1, 2, 3, … per business.
    pub seq: u64,
    pub charge: Charge,
    pub prev_hash: EntryHash,
    pub hash: EntryHash,
}

impl LedgerEntry {
    /// The entry after `prev` (or the first, with `prev` = `None`) for `charge`.
    pub fn chain(prev: Option<&LedgerEntry>, charge: Charge) -> Self {
        Self::after(prev.map(|p| (p.seq, p.hash)), charge)
    }

    /// The entry after the one numbered and hashed `prev` (the first if `None`).
    pub fn after(prev: Option<(u64, EntryHash)>, charge: Charge) -> Self {
        let (seq, prev_hash) = prev.map_or((1, GENESIS), |(seq, hash)| (seq + 1, hash));
        let hash = entry_hash(seq, &charge, &prev_hash);
        Self {
            seq,
            charge,
            prev_hash,
            hash,
        }
    }
}

/// The hash of an entry: SHA-256 over a fixed, length-prefixed encoding of its number, every
/// field of its charge and the previous hash, so no two different entries encode alike.
pub fn entry_hash(seq: u64, charge: &Charge, prev_hash: &EntryHash) -> EntryHash {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"ventana-ledger-v1");
    field(&seq.to_be_bytes());
    field(charge.waba_id.as_str().as_bytes());
    field(charge.message_id.as_str().as_bytes());
    field(charge.destination.digits().as_bytes());
    field(&charge.delivered_at.0.to_be_bytes());
    field(charge.policy_version.as_bytes());
    field(charge.model.as_str().as_bytes());
    field(charge.category.as_str().as_bytes());
    field(&[u8::from(charge.template), u8::from(charge.manual)]);
    field(charge.window.as_str().as_bytes());
    field(charge.pricing_type.as_str().as_bytes());
    field(&charge.rate.0.to_be_bytes());
    field(&charge.amount.0.to_be_bytes());
    field(charge.currency.as_bytes());
    field(&[charge.precision]);
    field(charge.conversation_id.as_deref().unwrap_or("").as_bytes());
    field(prev_hash);
    h.finalize().into()
}

/// Where a business's chain first fails to hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entry {seq} of business {waba_id}: {reason}")]
pub struct BrokenLink {
    pub waba_id: String,
    pub seq: u64,
    pub reason: String,
}

/// Walks one business's entries in order and reports the first that does not follow from
/// the one before: a gap or repeat in the numbering, a `prev_hash` that is not the previous
/// entry's hash, a hash that does not match the entry's fields, or an entry of another
/// business.
pub fn verify(waba_id: &WabaId, entries: &[LedgerEntry]) -> Result<(), BrokenLink> {
    let mut prev_hash = GENESIS;
    for (expected_seq, entry) in (1_u64..).zip(entries) {
        let broken = |reason: &str| BrokenLink {
            waba_id: waba_id.as_str().to_owned(),
            seq: entry.seq,
            reason: reason.to_owned(),
        };
        if entry.charge.waba_id != *waba_id {
            return Err(broken("belongs to another business"));
        }
        if entry.seq != expected_seq {
            return Err(broken(&format!(
                "numbered {} where {expected_seq} was due (an entry is missing or inserted)",
                entry.seq
            )));
        }
        if entry.prev_hash != prev_hash {
            return Err(broken("does not follow the entry before it"));
        }
        if entry_hash(entry.seq, &entry.charge, &entry.prev_hash) != entry.hash {
            return Err(broken("its fields were changed after it was written"));
        }
        prev_hash = entry.hash;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn charge(n: u32, amount: i64) -> Charge {
        Charge {
            waba_id: "102290129340398".parse().unwrap(),
            message_id: format!("wamid.ledgertestmessage{n:06}").parse().unwrap(),
            destination: "447700900123".parse().unwrap(),
            delivered_at: UnixTime(1_796_083_200 + i64::from(n)),
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

    fn chain(n: u32) -> Vec<LedgerEntry> {
        let mut entries: Vec<LedgerEntry> = Vec::new();
        for i in 1..=n {
            let next = LedgerEntry::chain(entries.last(), charge(i, 250));
            entries.push(next);
        }
        entries
    }

    fn waba() -> WabaId {
        "102290129340398".parse().unwrap()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let entries = chain(5);
        assert_eq!(entries[0].prev_hash, GENESIS);
        assert_eq!(entries[4].seq, 5);
        assert_eq!(verify(&waba(), &entries), Ok(()));
        assert_eq!(verify(&waba(), &[]), Ok(()));
    }

    #[test]
    fn a_changed_amount_is_found_at_its_entry() {
        let mut entries = chain(5);
        entries[2].charge.amount = Amount(1);
        let broken = verify(&waba(), &entries).unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(broken.reason.contains("changed"), "{broken}");
    }

    #[test]
    fn a_rehashed_edit_still_breaks_the_next_link() {
        let mut entries = chain(5);
        entries[2].charge.amount = Amount(1);
        entries[2].hash = entry_hash(3, &entries[2].charge, &entries[2].prev_hash);
        let broken = verify(&waba(), &entries).unwrap_err();
        assert_eq!(broken.seq, 4);
    }

    #[test]
    fn a_removed_or_inserted_entry_is_found() {
        let mut removed = chain(5);
        removed.remove(1);
        assert_eq!(verify(&waba(), &removed).unwrap_err().seq, 3);

        let mut inserted = chain(3);
        let extra = LedgerEntry::chain(Some(&inserted[0]), charge(9, 250));
        inserted.insert(1, extra);
        assert!(verify(&waba(), &inserted).is_err());
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = charge(1, 250);
        let hash = |c: &Charge| entry_hash(1, c, &GENESIS);
        let mut variants = Vec::new();
        let mut c = base.clone();
        c.destination = "14155550123".parse().unwrap();
        variants.push(c);
        let mut c = base.clone();
        c.policy_version = "other".into();
        variants.push(c);
        let mut c = base.clone();
        c.window = WindowState::Open;
        variants.push(c);
        let mut c = base.clone();
        c.manual = true;
        variants.push(c);
        let mut c = base.clone();
        c.rate = Amount(251);
        variants.push(c);
        let mut c = base.clone();
        c.currency = "EUR".into();
        variants.push(c);
        let mut c = base.clone();
        c.delivered_at = UnixTime(0);
        variants.push(c);
        let mut c = base.clone();
        c.conversation_id = Some("0f".into());
        variants.push(c);
        for v in &variants {
            assert_ne!(hash(v), hash(&base), "{v:?}");
        }
        assert_ne!(entry_hash(2, &base, &GENESIS), hash(&base));
    }
}
