//! The business gateway: the business side of Ventana.
//!
//! - [`Gateway`]: one end-to-end endpoint (`ventana-client`) per business number, the
//!   business registry, and the [`Gateway::router`] with:
//!   - `api`: the Cloud-API-compatible REST API (`/{version}/{phone_number_id}/messages`, …);
//!   - `admin`: operator routes (businesses, numbers, access tokens, webhooks);
//! - `ownership`: which node receives for each number (a lease in the shared store);
//! - `events`: how inbound messages, receipts and relay answers become webhook events;
//! - `outbound`: a send request resolved (template lookup and binding) into the endpoint's
//!   `Outgoing` and handed to it; a relay refusal as the Graph error of the answer;
//! - `schedules`: Ventana's scheduled sends (kept, listed, cancelled, fired once);
//! - `idempotency`: Ventana's `Idempotency-Key` on sends: the message id claimed with the key
//!   before sending, the first answer replayed to retries on any node, keys kept 24 hours;
//! - `analytics`: `GET /{waba_id}?fields=…`: the business account's `id`, `name`,
//!   `pricing_analytics` and `conversation_analytics` (from the relay's billing ledger);
//! - `templates`: message templates on the Graph API (`/{waba_id}/message_templates`,
//!   `/{template_id}`), answered by the relay, and the follower of the relay's template
//!   events that queues `message_template_status_update` webhooks;
//! - `graph`: Graph API conventions (paths, tokens, the error envelope, request parsing);
//!   a relay refusal's code is `ventana_core::CloudError`'s, only its HTTP status is chosen
//!   here;
//! - `webhook`: event payloads, ASCII-escaped signed bodies, the delivery worker (a sliding
//!   window with a limit per receiver, statuses in order, dead letters), where events go
//!   and the Cloud API's webhook configuration.
//!
//! The gateway is a client of the relay like any user device: in the all-in-one node it
//! talks to the relay over the same WebSocket protocol, on loopback.

mod admin;
mod analytics;
mod api;
mod events;
mod graph;
mod idempotency;
mod outbound;
mod ownership;
mod schedules;
mod templates;
mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::{Notify, watch};
use ventana_client::Endpoint;
use ventana_core::{PhoneNumber, PhoneNumberId};
use ventana_crypto::{Sealer, Token, TokenHash};
use ventana_store::GatewayStore;
use ventana_store::endpoint::PhoneNumberRecord;

pub use admin::{BusinessCreated, NewBusiness, NewPhoneNumber, TokenIssued};
pub use graph::error::refusal_body;
pub use webhook::WebhookSettings;

/// AAD labels of the gateway's sealed columns.
pub(crate) mod aad {
    use ventana_core::WabaId;

    pub(crate) use crate::webhook::delivery::app_secret_aad as app_secret;

    pub(crate) fn verify_token(waba: &WabaId) -> Vec<u8> {
        format!("business/{waba}/verify_token").into_bytes()
    }

    /// A send's `biz_opaque_callback_data`: `callback_data/<number>/<message id>`.
    pub(crate) fn callback_data(
        owner: &ventana_core::PhoneNumber,
        message: &ventana_core::MessageId,
    ) -> Vec<u8> {
        format!("callback_data/{}/{message}", owner.digits()).into_bytes()
    }
}

/// How the gateway reaches its relay.
#[derive(Clone)]
pub struct RelayAccess {
    /// `http://host:port` of the relay.
    pub url: String,
    /// The operator token, which registers business numbers at the relay.
    pub operator_token: String,
}

/// A hosted business number: its record and its live endpoint.
#[derive(Clone)]
pub(crate) struct Hosted {
    pub(crate) record: PhoneNumberRecord,
    pub(crate) endpoint: Arc<Endpoint>,
}

/// The gateway, shared by every request and background task.
pub struct Gateway {
    pub(crate) store: Arc<dyn GatewayStore>,
    pub(crate) sealer: Sealer,
    pub(crate) relay: RelayAccess,
    pub(crate) operator: TokenHash,
    pub(crate) numbers: RwLock<HashMap<PhoneNumberId, Hosted>>,
    pub(crate) by_address: RwLock<HashMap<PhoneNumber, PhoneNumberId>>,
    pub(crate) webhooks_due: Arc<Notify>,
    /// A schedule was added: the scheduler looks at once.
    pub(crate) schedules_due: Notify,
    /// This node changed a template: the template event follower looks at once.
    pub(crate) template_events_due: Notify,
    pub(crate) http: reqwest::Client,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Secret for business-scoped user ids, derived from the seal key.
    pub(crate) user_id_secret: [u8; 32],
    /// This node's name in the leases it takes.
    pub(crate) node: String,
    /// How webhooks are delivered, and where callbacks may point.
    pub(crate) webhook_settings: WebhookSettings,
    /// Calls businesses' callbacks (the handshake): no redirects, and public addresses
    /// only unless private ones are allowed.
    pub(crate) callback_http: reqwest::Client,
    /// Serialises `host`, so a number is never hosted twice on one node.
    hosting: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Store(#[from] ventana_store::StoreError),
    #[error(transparent)]
    Client(#[from] ventana_client::ClientError),
    #[error("HTTP client: {0}")]
    Http(String),
}

impl Gateway {
    /// Opens every hosted number's endpoint and starts the webhook worker. Background tasks
    /// end when `shutdown` turns true; await the returned handle to let them finish.
    /// `node` names this process among the nodes sharing the store (in leases).
    pub async fn start(
        store: Arc<dyn GatewayStore>,
        sealer: Sealer,
        relay: RelayAccess,
        node: String,
        webhook_settings: WebhookSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), GatewayError> {
        let operator = Token::from_presented(&relay.operator_token).hash();
        let callback_http = webhook::target::callback_client(
            webhook_settings.policy(),
            std::time::Duration::from_secs(10),
            "Ventana-Webhooks/1",
        )
        .map_err(|e| GatewayError::Http(e.to_string()))?;
        let user_id_secret = *sealer.derive("business-scoped user ids");
        let gateway = Arc::new(Self {
            store,
            sealer,
            relay,
            operator,
            numbers: RwLock::new(HashMap::new()),
            by_address: RwLock::new(HashMap::new()),
            webhooks_due: Arc::new(Notify::new()),
            schedules_due: Notify::new(),
            template_events_due: Notify::new(),
            http: reqwest::Client::new(),
            shutdown: shutdown.clone(),
            user_id_secret,
            node,
            webhook_settings,
            callback_http,
            hosting: tokio::sync::Mutex::new(()),
        });
        for record in gateway.store.phone_numbers().await? {
            gateway.host(record).await?;
        }
        let dispatcher = webhook::delivery::WebhookDispatcher::new(
            Arc::clone(&gateway.store),
            gateway.sealer.clone(),
            Arc::clone(&gateway.webhooks_due),
            gateway.node.clone(),
            gateway.webhook_settings.clone(),
            business_clock(Arc::downgrade(&gateway)),
        )
        .map_err(|e| GatewayError::Http(e.to_string()))?;
        let webhooks = tokio::spawn(dispatcher.run(shutdown.clone()));
        let scheduler = tokio::spawn(schedules::run(Arc::clone(&gateway), shutdown.clone()));
        let template_events = tokio::spawn(templates::follow::follow(
            Arc::clone(&gateway),
            shutdown.clone(),
        ));
        let pruner = tokio::spawn(idempotency::prune(Arc::clone(&gateway), shutdown.clone()));
        let ownership = tokio::spawn(ownership::keep(Arc::clone(&gateway), shutdown));
        let background = tokio::spawn(async move {
            let _ = webhooks.await;
            let _ = pruner.await;
            let _ = ownership.await;
            let _ = scheduler.await;
            let _ = template_events.await;
        });
        Ok((gateway, background))
    }

    /// Starts the endpoint of a registered number.
    pub(crate) async fn host(
        self: &Arc<Self>,
        record: PhoneNumberRecord,
    ) -> Result<(), GatewayError> {
        let _hosting = self.hosting.lock().await;
        if self.hosted(&record.id).is_some() {
            return Ok(());
        }
        let store: Arc<dyn ventana_store::EndpointStore> = self.store.clone();
        let (endpoint, events) = Endpoint::open(
            store,
            self.sealer.clone(),
            &record.address,
            &self.relay.url,
            false,
            self.shutdown.clone(),
        )
        .await?;
        let app = Arc::new(events::GatewayEvents {
            gateway: Arc::downgrade(self),
        });
        // Listed before its events are processed, so none finds the number unknown.
        write(&self.by_address).insert(record.address.clone(), record.id.clone());
        let hosted = Hosted {
            record: record.clone(),
            endpoint: Arc::clone(&endpoint),
        };
        write(&self.numbers).insert(record.id, hosted);
        tokio::spawn(Arc::clone(&endpoint).run(events, app));
        // Receive for it now if no other node does; the ownership loop keeps at it.
        ownership::claim(self, &endpoint).await;
        Ok(())
    }

    pub(crate) fn hosted(&self, id: &PhoneNumberId) -> Option<Hosted> {
        read(&self.numbers).get(id).cloned()
    }

    pub(crate) fn hosted_by_address(&self, address: &PhoneNumber) -> Option<Hosted> {
        let id = read(&self.by_address).get(address).cloned()?;
        self.hosted(&id)
    }

    /// The Cloud API and the admin routes.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        admin::routes()
            .merge(api::routes())
            .with_state(Arc::clone(self))
    }

    /// True when every hosted number is connected to the relay.
    pub fn ready(&self) -> bool {
        read(&self.numbers)
            .values()
            .all(|h| h.endpoint.link().is_connected())
    }
}

/// A business's clock as the relay keeps it (a sandbox's test clock), asked through any of
/// its numbers hosted here; the wall clock if none is, or the relay cannot say.
fn business_clock(gateway: std::sync::Weak<Gateway>) -> webhook::delivery::BusinessClock {
    Arc::new(move |waba: ventana_core::WabaId| {
        let gateway = gateway.clone();
        Box::pin(async move {
            let hosted = gateway.upgrade().and_then(|gateway| {
                read(&gateway.numbers)
                    .values()
                    .find(|hosted| hosted.record.waba_id == waba)
                    .cloned()
            });
            match hosted {
                Some(hosted) => outbound::business_now(&hosted)
                    .await
                    .unwrap_or_else(|_| ventana_core::UnixTime::now()),
                None => ventana_core::UnixTime::now(),
            }
        })
    })
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
