//! The relay's units of work.
//!
//! - `directory`: business clocks, accounts, devices and the key directory.
//! - `envelopes`: accepting submissions under the rules, the per-device queues, blocking.

pub(crate) mod directory;
pub(crate) mod envelopes;
