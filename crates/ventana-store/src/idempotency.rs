//! Idempotency keys of the gateway's sends (Ventana's `Idempotency-Key` extension).
//!
//! A business that lost the answer to a send retries it under the same key. The gateway
//! claims the key before sending, with the message id the send will carry, so a retry can
//! finish or report that same message instead of sending another. One row per (business
//! phone number, key): `InProgress` while a node sends under its claim, `Completed` with the
//! answer to replay. A claim that runs out (its node died) is taken over by compare-and-swap on
//! `attempt`; a row older than the retention period counts as new.
//!
//! The decisions (replay, refuse, wait, take over) are the gateway's; the store offers the
//! atomic steps they are made of, the same on every backend.

use ventana_core::{IdempotencyKey, MessageId, PhoneNumberId, UnixTime};

/// Where a claimed key stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyState {
    /// A node is sending (or died sending) under the claim.
    InProgress,
    /// The answer is stored: every retry gets it.
    Completed,
}

impl IdempotencyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "in_progress" => Some(Self::InProgress),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// The answer a request got, kept to be given again: HTTP status and JSON body (as text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// A key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub phone_number_id: PhoneNumberId,
    pub key: IdempotencyKey,
    /// SHA-256 of the request it was first used for.
    pub fingerprint: Vec<u8>,
    /// The message id the request sends under, chosen when the key was first claimed.
    pub message_id: MessageId,
    pub state: IdempotencyState,
    /// Counts claims: 1 for the first, one more per takeover. Finishing an attempt is a
    /// compare-and-swap on it.
    pub attempt: i64,
    /// Until when the claimer's attempt stands; after it, another may take over.
    pub claimed_until: UnixTime,
    /// Set when `Completed`.
    pub response: Option<StoredResponse>,
    pub created_at: UnixTime,
}

/// A first claim of a key: `InProgress`, attempt 1, claimed until `claimed_until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewClaim {
    pub phone_number_id: PhoneNumberId,
    pub key: IdempotencyKey,
    pub fingerprint: Vec<u8>,
    pub message_id: MessageId,
    pub claimed_until: UnixTime,
    pub created_at: UnixTime,
}

/// What [`GatewayStore::claim_idempotency_key`](crate::GatewayStore::claim_idempotency_key)
/// found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key was free (new, or past retention): the caller holds it, as this record.
    Claimed(IdempotencyRecord),
    /// The key is in use: the record as it stands, untouched.
    Existing(IdempotencyRecord),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_name() {
        for state in [IdempotencyState::InProgress, IdempotencyState::Completed] {
            assert_eq!(IdempotencyState::parse(state.as_str()), Some(state));
        }
        assert_eq!(IdempotencyState::parse("Completed"), None);
    }
}
