//! The relay's units of work.
//!
//! - `billing`: rating: pricing policy versions, the pricing inputs of accepted business
//!   messages, metering a delivery into the ledger with the usage it moves.
//! - `directory`: business clocks, accounts, devices and the key directory.
//! - `envelopes`: accepting submissions under the rules, the per-device queues, blocking.
//! - `ledger`: the billing ledger: a charge appended once per message, chained per business.
//! - `templates`: the template registry: versions, review, the audit trail of events.
//! - `verification`: one-time codes proving control of a number.

pub(crate) mod billing;
pub(crate) mod directory;
pub(crate) mod envelopes;
pub(crate) mod ledger;
pub(crate) mod templates;
pub(crate) mod verification;
