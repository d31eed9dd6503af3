//! The relay: the platform every device talks to. It never sees plaintext.
//!
//! - [`Relay`] holds the store, the number verifier and the live-connection registry, and
//!   builds the HTTP [`Relay::router`]:
//!   - `registration`: `POST /relay/v1/verifications`, `POST /relay/v1/devices`;
//!   - `connection`: `GET /relay/v1/ws`, the authenticated WebSocket (push, ack, requests);
//!   - `ops`: what a device may ask over the socket (send, devices, claim, keys, block,
//!     clock), dispatching template requests to `templates`;
//!   - `admin`: operator routes (read a development code, test clocks);
//!   - `templates::admin`: the operator's review of templates: `GET /relay/v1/admin/templates`
//!     (the queue, filtered and paged), `GET /relay/v1/admin/templates/{id}` (with its audit
//!     trail), `POST /relay/v1/admin/templates/{id}/{approve|reject|pause|disable}`.
//! - `billing`: loading the pricing policy (at start, [`Relay::load_policy`] on SIGHUP, or
//!   uploaded) and the operator's billing routes under `/relay/v1/admin/billing`: policy
//!   versions, a business's usage and invoice for a month, `verify` (every hash chain, every
//!   amount recomputed), `rerate` (a month under another policy, nothing written). Rating
//!   itself is the store's `meter_delivery`, called when a user's device reports a business
//!   message delivered (`ops`), which prices the receipt for the business's webhook.
//! - `templates`: the template registry as devices see it: a business's create, edit, list,
//!   get, delete and status events; any device's fetch of an approved version; the check of a
//!   template envelope's header before the store's rules. [`TemplatePolicy`] is the
//!   operator's limit per business and automatic (lint) review.
//! - [`verifier`]: proving control of a phone number ([`NumberVerifier`]).
//! - `signals`: wakes a device's connections when something is queued for it.

mod admin;
mod billing;
mod connection;
mod error;
mod limits;
mod ops;
mod registration;
mod signals;
mod templates;
pub mod verifier;

use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;
use tokio::sync::watch;
use ventana_crypto::{Token, TokenHash};
use ventana_store::RelayStore;

pub use billing::{BillingSettings, PolicyLoadError};
pub use error::refusal_body;
pub use limits::{RelayLimits, client_key};
pub use templates::{OnFindings, Review, TemplatePolicy, UnknownChoice};
pub use verifier::{DevVerifier, NumberVerifier};

/// How long a verification code stays valid.
const CODE_TTL_SECS: i64 = 10 * 60;
/// Below this many one-time keys a device is told to replenish.
const LOW_KEYS: u64 = 20;

/// The relay, shared by every request and connection.
pub struct Relay {
    store: Arc<dyn RelayStore>,
    verifier: Arc<dyn NumberVerifier>,
    operator: TokenHash,
    templates: TemplatePolicy,
    billing: BillingSettings,
    limits: RelayLimits,
    /// Verification codes asked for, per client address.
    code_requests: limits::PerAddress,
    /// Registration attempts, per client address.
    registrations: limits::PerAddress,
    connections: Arc<limits::DeviceConnections>,
    signals: signals::Signals,
    shutdown: watch::Receiver<bool>,
}

impl Relay {
    /// `operator_token` authorises business-number registration and the admin routes;
    /// `templates` is the operator's policy for templates; `billing` where the pricing policy
    /// is read from (load it with [`Relay::load_policy`] before serving); `limits` what one
    /// client may hold or ask for; `shutdown` turning true closes every device connection.
    pub fn new(
        store: Arc<dyn RelayStore>,
        verifier: Arc<dyn NumberVerifier>,
        operator_token: &Token,
        templates: TemplatePolicy,
        billing: BillingSettings,
        limits: RelayLimits,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let relay = Arc::new(Self {
            store,
            verifier,
            operator: operator_token.hash(),
            templates,
            billing,
            code_requests: limits::PerAddress::per_hour(
                limits.codes_per_address_per_hour,
                limits.loopback_exempt,
            ),
            registrations: limits::PerAddress::per_hour(
                limits.registrations_per_address_per_hour,
                limits.loopback_exempt,
            ),
            connections: Arc::default(),
            limits,
            signals: signals::Signals::default(),
            shutdown,
        });
        tokio::spawn(signals::follow_wakeups(Arc::clone(&relay)));
        relay
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/relay/v1/verifications", post(registration::request_code))
            .route("/relay/v1/devices", post(registration::register_device))
            .route("/relay/v1/ws", get(connection::upgrade))
            .route(
                "/relay/v1/admin/verifications/{phone}",
                get(admin::peek_code),
            )
            .route("/relay/v1/admin/businesses/{waba}/clock", get(admin::clock))
            .route(
                "/relay/v1/admin/businesses/{waba}/tier",
                get(admin::tier).post(admin::set_tier),
            )
            .route(
                "/relay/v1/admin/businesses/{waba}/clock/advance",
                post(admin::advance_clock),
            )
            .route(
                "/relay/v1/admin/billing/policies",
                get(billing::policies).post(billing::upload),
            )
            .route(
                "/relay/v1/admin/billing/policies/reload",
                post(billing::reload),
            )
            .route("/relay/v1/admin/billing/verify", get(billing::verify_all))
            .route(
                "/relay/v1/admin/billing/businesses/{waba}/usage",
                get(billing::usage),
            )
            .route(
                "/relay/v1/admin/billing/businesses/{waba}/ledger",
                get(billing::ledger),
            )
            .route(
                "/relay/v1/admin/billing/businesses/{waba}/rerate",
                post(billing::rerate_period),
            )
            .route("/relay/v1/admin/templates", get(templates::admin::list))
            .route(
                "/relay/v1/admin/templates/{id}",
                get(templates::admin::show),
            )
            .route(
                "/relay/v1/admin/templates/{id}/{action}",
                post(templates::admin::review),
            )
            .with_state(Arc::clone(self))
    }

    /// True when the store answers.
    pub async fn ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    fn is_operator(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|t| Token::from_presented(t).hash() == self.operator)
    }
}
