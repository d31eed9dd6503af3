//! [`LedgerStore`]: the billing ledger, part of every relay store. Entries are appended once
//! per message and chained per business (see [`ventana_core::pricing::ledger`]); nothing
//! updates or deletes one.

use crate::StoreResult;
use async_trait::async_trait;
use ventana_core::pricing::{Charge, LedgerEntry};
use ventana_core::protocol::PricedMessage;
use ventana_core::{MessageId, PhoneNumber, UnixTime, WabaId};

/// A pricing policy version as loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyVersion {
    pub version: String,
    pub effective_from: UnixTime,
    /// SHA-256 of `text`, hex.
    pub digest: String,
    pub loaded_at: UnixTime,
    /// The file as the operator wrote it.
    pub text: String,
}

/// What loading a policy file did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyAdded {
    Added(PolicyVersion),
    /// This version was loaded before with the same text.
    Unchanged(PolicyVersion),
}

/// What appending a charge did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// The charge is the business's newest entry.
    New(LedgerEntry),
    /// The message was charged before (a redelivery, a retry, another node): that entry
    /// stands and nothing was written.
    Already(LedgerEntry),
}

impl Appended {
    pub fn entry(&self) -> &LedgerEntry {
        match self {
            Self::New(e) | Self::Already(e) => e,
        }
    }
}

#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Appends `charge` as the business's next entry, unless its message already has one.
    /// Of concurrent appends for one business (on any node) each gets its own number, in
    /// the order they commit.
    async fn append_charge(&self, charge: Charge) -> StoreResult<Appended>;

    /// Adds a pricing policy file (checked again here) as a new version. The same version
    /// with the same text is [`PolicyAdded::Unchanged`]; with another text, a conflict.
    async fn add_policy(&self, text: &str, at: UnixTime) -> StoreResult<PolicyAdded>;

    /// Every policy version, in the order loaded.
    async fn policy_versions(&self) -> StoreResult<Vec<PolicyVersion>>;

    /// Meters `user`'s `delivered` or `read` receipt for `business`'s messages `ids` (the
    /// wall clock `wall`; each business's test clock applies): each is charged once, and
    /// priced from its entry. Ids that are not business messages to `user` are left out.
    async fn meter_delivery(
        &self,
        business: &PhoneNumber,
        user: &PhoneNumber,
        ids: &[MessageId],
        wall: UnixTime,
    ) -> StoreResult<Vec<PricedMessage>>;

    /// The business's entries delivered in `[from, until)`, in order.
    async fn ledger_between(
        &self,
        waba: &WabaId,
        from: UnixTime,
        until: UnixTime,
    ) -> StoreResult<Vec<LedgerEntry>>;

    /// Every business with ledger entries.
    async fn ledger_businesses(&self) -> StoreResult<Vec<WabaId>>;

    /// The business's entries numbered after `after_seq`, in order, at most `limit`.
    async fn ledger_entries(
        &self,
        waba: &WabaId,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<LedgerEntry>>;
}
