//! How what happens to a business number becomes webhook events: inbound messages, receipts
//! (delivered, read) and the relay's answers (sent, failed). Each event is queued in the same
//! transaction as the state change it reports, under a stable id, so it is neither lost nor
//! duplicated by a crash or a retry.

use crate::webhook::delivery::webhook_body_aad;
use crate::webhook::payload::{
    self, DeliveryStatus, InboundContent, StatusError, WebhookContact, WebhookContext,
};
use crate::webhook::sign::ascii_json;
use crate::{Gateway, Hosted};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::{Arc, Weak};
use ventana_client::endpoint::contact_aad;
use ventana_client::{Application, ClientError, Endpoint, Inbound, Settlement};
use ventana_core::payload::Content;
use ventana_core::pricing::PricingNote;
use ventana_core::protocol::ReceiptStatus;
use ventana_core::user_id::business_scoped_user_id;
use ventana_core::{CloudError, MessageStatus, PhoneNumber, UnixTime, WabaId};
use ventana_store::endpoint::{AppRecord, WebhookJob};

/// The Cloud API's code for a message of a type it does not support, and its title.
const UNSUPPORTED_CODE: i64 = 131_051;
const UNSUPPORTED_TITLE: &str = "Message type unknown";

pub(crate) struct GatewayEvents {
    pub(crate) gateway: Weak<Gateway>,
}

impl Gateway {
    fn context(hosted: &Hosted) -> WebhookContext {
        WebhookContext {
            waba_id: hosted.record.waba_id.clone(),
            phone_number_id: hosted.record.id.clone(),
            display_phone_number: hosted.record.address.to_string(),
        }
    }

    pub(crate) fn user_id(&self, hosted: &Hosted, user: &PhoneNumber) -> String {
        business_scoped_user_id(&self.user_id_secret, &hosted.record.waba_id, user)
    }

    /// A webhook job of a hosted number's event with a stable id, its exact ASCII-escaped
    /// body sealed, as a record to commit with the state change it reports. Jobs with one
    /// `order_key` reach the business one at a time, in the order they were queued.
    pub(crate) fn webhook_job(
        &self,
        hosted: &Hosted,
        id: String,
        order_key: Option<String>,
        event: &Value,
        now: UnixTime,
    ) -> AppRecord {
        let mut job = self.business_webhook_job(&hosted.record.waba_id, id, order_key, event, now);
        job.phone_number_id = Some(hosted.record.id.clone());
        AppRecord::Webhook(job)
    }

    /// A webhook job of a business's event (one of no particular number, such as a template
    /// status change) with a stable id, its exact ASCII-escaped body sealed.
    pub(crate) fn business_webhook_job(
        &self,
        waba: &WabaId,
        id: String,
        order_key: Option<String>,
        event: &Value,
        now: UnixTime,
    ) -> WebhookJob {
        let body = ascii_json(event);
        WebhookJob {
            body_sealed: self.sealer.seal(&webhook_body_aad(&id), &body),
            id,
            waba_id: waba.clone(),
            phone_number_id: None,
            order_key,
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
            failing_since: None,
        }
    }

    async fn profile_name(&self, endpoint: &Endpoint, user: &PhoneNumber) -> String {
        let sealed = endpoint
            .store()
            .contact(endpoint.owner(), user)
            .await
            .ok()
            .flatten();
        sealed
            .and_then(|s| endpoint.open_sealed(&contact_aad(endpoint.owner(), user), &s))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The `biz_opaque_callback_data` the message was sent with, if any. A store that
    /// cannot answer now leaves it out rather than holding the status back.
    async fn callback_data(&self, hosted: &Hosted, id: &ventana_core::MessageId) -> Option<String> {
        let owner = &hosted.record.address;
        let sealed = match self.store.callback_data(owner, id).await {
            Ok(sealed) => sealed?,
            Err(error) => {
                tracing::warn!(%id, %error, "could not read a message's callback data");
                return None;
            }
        };
        let data = self
            .sealer
            .open(&crate::aad::callback_data(owner, id), &sealed)
            .ok()?;
        String::from_utf8(data.to_vec()).ok()
    }

    /// The status webhook for one message (`sent`, `delivered`, `read`, `failed`), with the
    /// stable id `<wamid>.<status>`.
    pub(crate) async fn status_job(
        &self,
        hosted: &Hosted,
        user: &PhoneNumber,
        id: &ventana_core::MessageId,
        status: DeliveryStatus<'_>,
        ts: UnixTime,
        pricing: Option<&PricingNote>,
    ) -> AppRecord {
        let profile = self.profile_name(&hosted.endpoint, user).await;
        let user_id = self.user_id(hosted, user);
        let contact = WebhookContact {
            wa_id: user,
            user_id: &user_id,
            profile_name: &profile,
        };
        let name = status.as_str();
        let callback_data = self.callback_data(hosted, id).await;
        let event = payload::status(
            &Self::context(hosted),
            contact,
            id,
            status,
            ts,
            pricing,
            callback_data.as_deref(),
        );
        // The statuses of one message reach the business in the order they happened.
        let order_key = Some(format!("status/{id}"));
        self.webhook_job(
            hosted,
            format!("{id}.{name}"),
            order_key,
            &event,
            UnixTime::now(),
        )
    }
}

impl GatewayEvents {
    /// The gateway and the number an endpoint serves. Failing (during shutdown, or before a
    /// new number is listed) leaves the event to be processed again later.
    fn resolve(&self, endpoint: &Endpoint) -> Result<(Arc<Gateway>, Hosted), ClientError> {
        let gateway = self
            .gateway
            .upgrade()
            .ok_or_else(|| ClientError::Application("the gateway is shutting down".into()))?;
        let hosted = gateway.hosted_by_address(endpoint.owner()).ok_or_else(|| {
            ClientError::Application(format!("{} is not hosted here", endpoint.owner()))
        })?;
        Ok((gateway, hosted))
    }
}

#[async_trait]
impl Application for GatewayEvents {
    async fn inbound(
        &self,
        endpoint: &Endpoint,
        event: &Inbound,
    ) -> Result<Vec<AppRecord>, ClientError> {
        let (gateway, hosted) = self.resolve(endpoint)?;
        Ok(match event {
            Inbound::Message { meta, payload } => {
                let content = match &payload.content {
                    Content::Text { body, .. } => InboundContent::Text(body),
                    Content::Button { text, payload } => InboundContent::Button { text, payload },
                    Content::Template { .. } => {
                        tracing::warn!(from = %meta.from, id = %meta.id, "a user sent a template; dropped");
                        return Ok(Vec::new());
                    }
                };
                let business = hosted.record.address.to_string();
                let reply_to = payload.reply_to.as_ref().map(|id| (business.as_str(), id));
                let user_id = gateway.user_id(&hosted, &meta.from);
                let contact = WebhookContact {
                    wa_id: &meta.from,
                    user_id: &user_id,
                    profile_name: payload.profile_name.as_deref().unwrap_or_default(),
                };
                let event = payload::inbound_message(
                    &Gateway::context(&hosted),
                    contact,
                    &meta.id,
                    meta.ts,
                    content,
                    reply_to,
                );
                // Message ids are chosen by senders, so the event id names the sender too.
                let event_id = format!("{}.{}", meta.from, meta.id);
                vec![gateway.webhook_job(&hosted, event_id, None, &event, UnixTime::now())]
            }
            Inbound::Receipt {
                meta,
                status,
                ids,
                pricing,
            } => {
                let (delivery, stored) = match status {
                    ReceiptStatus::Delivered => {
                        (DeliveryStatus::Delivered, MessageStatus::Delivered)
                    }
                    ReceiptStatus::Read => (DeliveryStatus::Read, MessageStatus::Read),
                    // The engine resends; only a final failure is reported (`settled`).
                    ReceiptStatus::Retry => return Ok(Vec::new()),
                };
                let mut records = Vec::with_capacity(ids.len());
                for id in ids {
                    // Announced only if the status moves: a repeated receipt, or one that
                    // arrives after a later status, sends no webhook.
                    let priced = pricing.iter().find(|p| p.id == *id).map(|p| &p.pricing);
                    let job = gateway
                        .status_job(&hosted, &meta.from, id, delivery, meta.ts, priced)
                        .await;
                    let announce = match job {
                        AppRecord::Webhook(job) => Some(job),
                        _ => None,
                    };
                    records.push(AppRecord::Status {
                        id: id.clone(),
                        status: stored,
                        announce,
                    });
                }
                records
            }
            Inbound::Undecryptable {
                meta,
                reason,
                resend_asked: true,
            } => {
                tracing::warn!(from = %meta.from, id = %meta.id, %reason, "an undecryptable message; its sender was asked to send it again");
                Vec::new()
            }
            Inbound::Undecryptable { meta, reason, .. } => {
                // It will never be read: the business hears of it as of content the Cloud
                // API does not support, rather than not at all.
                tracing::warn!(from = %meta.from, id = %meta.id, %reason, "a message that cannot be read");
                let user_id = gateway.user_id(&hosted, &meta.from);
                let contact = WebhookContact {
                    wa_id: &meta.from,
                    user_id: &user_id,
                    profile_name: "",
                };
                let details = format!("The message could not be read: {reason}.");
                let error = StatusError {
                    code: UNSUPPORTED_CODE,
                    title: UNSUPPORTED_TITLE,
                    details: &details,
                };
                let event = payload::inbound_message(
                    &Gateway::context(&hosted),
                    contact,
                    &meta.id,
                    meta.ts,
                    InboundContent::Unreadable(error),
                    None,
                );
                let event_id = format!("{}.{}", meta.from, meta.id);
                vec![gateway.webhook_job(&hosted, event_id, None, &event, UnixTime::now())]
            }
        })
    }

    async fn settled(
        &self,
        endpoint: &Endpoint,
        settlement: &Settlement,
    ) -> Result<Vec<AppRecord>, ClientError> {
        let (gateway, hosted) = self.resolve(endpoint)?;
        let job = match &settlement.outcome {
            Ok(accepted_at) => {
                gateway
                    .status_job(
                        &hosted,
                        &settlement.to,
                        &settlement.id,
                        DeliveryStatus::Sent,
                        *accepted_at,
                        settlement.pricing.as_ref(),
                    )
                    .await
            }
            Err(error) => {
                // What the business would have been answered, had it waited.
                let refusal = CloudError::of_send(error);
                let failed = DeliveryStatus::Failed(StatusError::from(&refusal));
                gateway
                    .status_job(
                        &hosted,
                        &settlement.to,
                        &settlement.id,
                        failed,
                        UnixTime::now(),
                        None,
                    )
                    .await
            }
        };
        Ok(vec![job])
    }

    fn committed(&self, _endpoint: &Endpoint, _event: &Inbound) {
        self.wake();
    }

    fn settle_committed(&self, _endpoint: &Endpoint, _settlement: &Settlement) {
        self.wake();
    }
}

impl GatewayEvents {
    /// Queued webhook jobs are durable now: have the worker look.
    fn wake(&self) {
        if let Some(gateway) = self.gateway.upgrade() {
            gateway.webhooks_due.notify_one();
        }
    }
}
