//! Events out to the business, as Cloud API webhooks.
//!
//! - [`payload`]: the JSON of one event (an inbound message, a status, a template status
//!   change), in Meta's envelope.
//! - [`sign`]: ASCII-only JSON bytes and their `X-Hub-Signature-256`.
//! - [`delivery`]: the durable queue's worker: POSTs each job until the business answers
//!   2xx, with exponential backoff, for up to seven days.
//!
//! Events are queued in the same store transaction as the message they report, as the
//! exact bytes to send sealed for the job (`delivery::webhook_body_aad`), so the worker can
//! crash at any point without losing one; a business may then see an event twice, which
//! Meta's webhooks also do.

pub(crate) mod delivery;
pub(crate) mod payload;
pub(crate) mod sign;
