//! Events out to the business, as Cloud API webhooks.
//!
//! - [`payload`]: the JSON of one event (an inbound message, a status, a template status
//!   change), in Meta's envelope.
//! - [`sign`]: ASCII-only JSON bytes, their `X-Hub-Signature-256` and Ventana's timestamped
//!   `X-Ventana-Signature`.
//! - [`delivery`]: the durable queue's worker: a sliding window of POSTs with a limit per
//!   receiver, exponential backoff with jitter for the retry period, then the dead-letter
//!   queue; every attempt logged. `window`: its account of the POSTs in flight per receiver.
//! - [`target`]: where a business's events go (number over WABA over app), the callback
//!   handshake, and which addresses a callback may point to.
//! - [`config`]: the Cloud API's webhook configuration (`/{app_id}/subscriptions`,
//!   `/{waba_id}/subscribed_apps`, a number's `webhook_configuration`).
//!
//! Events are queued in the same store transaction as the message they report, as the
//! exact bytes to send sealed for the job (`delivery::webhook_body_aad`), so the worker can
//! crash at any point without losing one; a business may then see an event twice, which
//! Meta's webhooks also do.

pub(crate) mod config;
pub(crate) mod delivery;
pub(crate) mod payload;
pub(crate) mod sign;
pub(crate) mod target;
#[cfg(test)]
mod tests;
mod window;

use serde::Deserialize;

/// `[webhooks]`: how events are delivered.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// POSTs in flight from one node, at most.
    pub max_in_flight: usize,
    /// POSTs in flight from one node to one receiver (callback URL), at most.
    pub per_endpoint: usize,
    /// A receiver that has not answered by then has failed the attempt.
    pub timeout_secs: u64,
    /// How long an event is retried before it goes to the dead-letter queue, counted from
    /// its first failed attempt on its business's clock.
    pub retry_for_secs: i64,
    /// The longest wait between two attempts at one event.
    pub max_backoff_secs: u64,
    /// How long delivered events (for replay) and the delivery log are kept.
    pub keep_delivered_secs: i64,
    /// How long dead-lettered events are kept for a redrive.
    pub keep_dead_secs: i64,
    /// Whether a callback may point to a private, loopback or link-local address (a
    /// helpdesk on the operator's own network).
    pub allow_private_callbacks: bool,
}

const DAY_SECS: i64 = 24 * 60 * 60;

impl WebhookSettings {
    /// Where callbacks may point.
    pub(crate) fn policy(&self) -> target::CallbackPolicy {
        target::CallbackPolicy {
            allow_private: self.allow_private_callbacks,
        }
    }

    /// Refuses settings that would deliver nothing or forget everything at once.
    pub fn check(&self) -> Result<(), String> {
        if self.max_in_flight == 0 || self.per_endpoint == 0 {
            return Err(
                "webhooks.max_in_flight and webhooks.per_endpoint must be at least 1".into(),
            );
        }
        if self.timeout_secs == 0 || self.max_backoff_secs == 0 {
            return Err(
                "webhooks.timeout_secs and webhooks.max_backoff_secs must be at least 1".into(),
            );
        }
        if self.retry_for_secs < 0 || self.keep_delivered_secs < 0 || self.keep_dead_secs < 0 {
            return Err(
                "webhooks.retry_for_secs and the keep_* settings cannot be negative".into(),
            );
        }
        Ok(())
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 512,
            per_endpoint: 64,
            timeout_secs: 10,
            retry_for_secs: 7 * DAY_SECS,
            max_backoff_secs: 60 * 60,
            keep_delivered_secs: 7 * DAY_SECS,
            keep_dead_secs: 30 * DAY_SECS,
            allow_private_callbacks: true,
        }
    }
}
