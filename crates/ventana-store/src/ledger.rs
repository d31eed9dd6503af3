//! [`LedgerStore`]: the billing ledger, part of every relay store. Entries are appended once
//! per message and chained per business (see [`ventana_core::pricing::ledger`]); nothing
//! updates or deletes one.

use crate::StoreResult;
use async_trait::async_trait;
use ventana_core::WabaId;
use ventana_core::pricing::{Charge, LedgerEntry};

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

    /// The business's entries numbered after `after_seq`, in order, at most `limit`.
    async fn ledger_entries(
        &self,
        waba: &WabaId,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<LedgerEntry>>;
}
