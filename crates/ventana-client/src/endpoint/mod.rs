//! The end-to-end engine of one device: encrypt, commit, send; receive, decrypt, commit, ack.
//!
//! - `outbound`: sending — sessions per recipient device, the outbox (messages, receipts,
//!   resends) as `Queued` rows that carry their typed submission, the relay's answer; a row
//!   whose session moved on is encrypted again.
//! - `inbound`: receiving — finding or creating the session, committing, acknowledging; a
//!   message that cannot be decrypted is asked for again (`retry` receipt), and a peer's
//!   `retry` receipt is answered with a resend on a new session.
//! - `templates`: template messages — the approved text fetched from the relay and cached,
//!   checked against the message's header and rendered; quick-reply taps.
//!
//! Crash safety: an outbound message's ratchet state and ciphertext are committed together
//! (with the message in the history) before the relay sees it, and a retry resends the stored
//! ciphertext. An inbound envelope's new ratchet state, dedup marker and application effects
//! are committed together before it is acknowledged. One writer per session: a lock per peer
//! device here, and a version check in the store.

mod inbound;
mod outbound;
mod templates;

pub use outbound::Outgoing;
pub use templates::{TapError, Tapped, TemplateRenderError};

use crate::ClientError;
use crate::link::{LinkError, LinkEvent, RelayLink};
use crate::registration::{identity_aad, token_aad};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use ventana_core::payload::Payload;
use ventana_core::protocol::{
    DeviceInfo, Envelope, ErrorCode, Op, ProtocolError, ReceiptStatus, Reply,
};
use ventana_core::rules::EnvelopeKind;
use ventana_core::template::TemplateHeader;
use ventana_core::{DeviceId, MessageId, PhoneNumber, UnixTime};
use ventana_crypto::{DeviceAccount, Sealer, TARGET_ONE_TIME_KEYS};
use ventana_store::EndpointStore;
use ventana_store::endpoint::{AppRecord, Direction, MessageRecord};

/// How long a sender waits for the relay before answering "queued".
const SUBMIT_WAIT: Duration = Duration::from_secs(10);
const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// How often unsettled outbox rows are retried while connected.
const OUTBOX_RETRY: Duration = Duration::from_secs(5);
/// How long to wait before reconnecting after an envelope could not be processed.
const REDELIVERY_PAUSE: Duration = Duration::from_secs(1);

/// The clear metadata of an inbound envelope.
#[derive(Clone, Debug)]
pub struct InboundMeta {
    pub id: MessageId,
    pub from: PhoneNumber,
    pub from_device: DeviceId,
    pub ts: UnixTime,
    /// `message` or `template` (receipts carry `receipt`).
    pub kind: EnvelopeKind,
    /// For a template message: the version it fills, as the relay checked it.
    pub template: Option<TemplateHeader>,
}

/// An inbound envelope after decryption, as the host application sees it.
// One lives per envelope being processed and is handed around by reference: boxing the
// payload would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Inbound {
    Message {
        meta: InboundMeta,
        payload: Payload,
    },
    /// A receipt for messages this endpoint sent to that peer (ids checked against history).
    Receipt {
        meta: InboundMeta,
        status: ReceiptStatus,
        ids: Vec<MessageId>,
        /// What the relay charged for each message (from its ledger), on a `delivered` or
        /// `read` receipt to a business.
        pricing: Vec<ventana_core::protocol::PricedMessage>,
    },
    /// Could not be decrypted or did not match its envelope; acknowledged so the queue moves.
    Undecryptable {
        meta: InboundMeta,
        reason: String,
        /// The sender was asked to send it again (a session out of step): it may yet arrive.
        /// Otherwise this message will never be read.
        resend_asked: bool,
    },
}

impl Inbound {
    pub fn meta(&self) -> &InboundMeta {
        match self {
            Self::Message { meta, .. }
            | Self::Receipt { meta, .. }
            | Self::Undecryptable { meta, .. } => meta,
        }
    }
}

/// The relay's final answer for an outbound message.
#[derive(Clone, Debug)]
pub struct Settlement {
    pub id: MessageId,
    pub to: PhoneNumber,
    pub outcome: Result<UnixTime, ProtocolError>,
    /// A business's message accepted: how the relay prices it, were it delivered now.
    pub pricing: Option<ventana_core::pricing::PricingNote>,
}

/// What the host application adds to the engine. An error from `inbound` or `settled`
/// leaves the envelope unacknowledged (or the outbox row unsettled) to be tried again.
#[async_trait]
pub trait Application: Send + Sync {
    /// Effects of an inbound envelope, committed with its ratchet state.
    async fn inbound(
        &self,
        endpoint: &Endpoint,
        event: &Inbound,
    ) -> Result<Vec<AppRecord>, ClientError>;
    /// Effects of the relay's answer for an outbound message, committed as it is settled.
    /// A refusal is reported here only when no sender was waiting for it.
    async fn settled(
        &self,
        endpoint: &Endpoint,
        settlement: &Settlement,
    ) -> Result<Vec<AppRecord>, ClientError>;
    /// Called once an inbound envelope's effects are durable (wake workers, print).
    fn committed(&self, _endpoint: &Endpoint, _event: &Inbound) {}
    /// Called once a settlement's effects are durable.
    fn settle_committed(&self, _endpoint: &Endpoint, _settlement: &Settlement) {}
}

/// The result of a send the relay accepted or that is safely queued.
#[derive(Clone, Debug)]
pub struct Sent {
    pub id: MessageId,
    /// `None` when the relay could not be reached in time: the message is queued durably and
    /// will be submitted (and settled through [`Application::settled`]) later.
    pub accepted_at: Option<UnixTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Refused(ProtocolError),
    #[error("{0} has no Ventana account")]
    UnknownRecipient(PhoneNumber),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Who hands a message to the relay: a sender waiting for the answer, or the retry loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    Waits,
    Background,
}

type SessionLocks = Mutex<HashMap<(PhoneNumber, DeviceId), Arc<tokio::sync::Mutex<()>>>>;

/// One registered device, connected to the relay.
pub struct Endpoint {
    owner: PhoneNumber,
    device_id: DeviceId,
    display_name: String,
    store: Arc<dyn EndpointStore>,
    sealer: Sealer,
    /// Resident, with one owner: unpickling costs O(one-time keys). Written through to the
    /// store whenever it changes.
    account: tokio::sync::Mutex<DeviceAccount>,
    session_locks: SessionLocks,
    peers: Mutex<HashMap<PhoneNumber, Vec<DeviceInfo>>>,
    /// Outbox rows being handed to the relay right now, so the retry loop leaves them alone.
    in_flight: Mutex<HashSet<MessageId>>,
    /// Receipts the relay has taken whose outbox rows are still to be dropped: with the next
    /// inbound commit, or by the retry loop, rather than in a transaction of their own (a
    /// row dropped late is at worst submitted again, and the relay answers as the first time).
    receipts_done: Mutex<Vec<MessageId>>,
    link: RelayLink,
    /// Template versions fetched to render messages; shared with background prefetches.
    templates: Arc<templates::TemplateCache>,
}

impl Endpoint {
    /// Opens a registered device from its store and starts its link to the relay. Feed the
    /// returned events to [`Endpoint::handle`] (or [`Endpoint::run`]).
    pub async fn open(
        store: Arc<dyn EndpointStore>,
        sealer: Sealer,
        owner: &PhoneNumber,
        relay_url: &str,
        receive: bool,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Self>, mpsc::Receiver<LinkEvent>), ClientError> {
        let identity = store
            .identity(owner)
            .await?
            .ok_or_else(|| ClientError::NotRegistered(owner.to_string()))?;
        let account = DeviceAccount::open(&sealer, &identity_aad(owner), &identity.account_sealed)?;
        let token = sealer.open(&token_aad(owner), &identity.relay_token_sealed)?;
        let token = String::from_utf8_lossy(&token).into_owned();
        let (link, events) = RelayLink::start(relay_url, &token, receive, shutdown);
        let templates =
            templates::TemplateCache::new(owner.clone(), Arc::clone(&store), link.clone());
        let endpoint = Arc::new(Self {
            owner: owner.clone(),
            device_id: identity.device_id,
            display_name: identity.display_name,
            store,
            sealer,
            account: tokio::sync::Mutex::new(account),
            session_locks: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            receipts_done: Mutex::new(Vec::new()),
            link,
            templates: Arc::new(templates),
        });
        Ok((endpoint, events))
    }

    pub fn owner(&self) -> &PhoneNumber {
        &self.owner
    }

    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    pub fn link(&self) -> &RelayLink {
        &self.link
    }

    pub fn store(&self) -> &Arc<dyn EndpointStore> {
        &self.store
    }

    /// Opens the sealed payload of a message in this endpoint's history.
    pub fn open_body(&self, record: &MessageRecord) -> Option<Payload> {
        let aad = body_aad(&self.owner, &record.id, record.direction);
        let bytes = self.sealer.open(&aad, &record.body_sealed).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Seals bytes for this endpoint's store with a row-binding label.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.sealer.seal(aad, plaintext)
    }

    pub fn open_sealed(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        self.sealer.open(aad, sealed).ok().map(|z| z.to_vec())
    }

    /// Processes link events until the link ends, and retries unsettled outbox rows.
    ///
    /// Envelopes are processed in [`INBOUND_LANES`] lanes by sender device: one sender's
    /// envelopes stay in order (they share a ratchet), while different senders' are
    /// decrypted and committed concurrently, so a busy business number shares the store's
    /// group commits instead of queueing for one commit per message.
    pub async fn run(
        self: Arc<Self>,
        mut events: mpsc::Receiver<LinkEvent>,
        app: Arc<dyn Application>,
    ) {
        let lanes: Vec<mpsc::Sender<Envelope>> = (0..INBOUND_LANES)
            .map(|_| {
                let (lane, mut queue) = mpsc::channel::<Envelope>(LANE_DEPTH);
                let (endpoint, app) = (Arc::clone(&self), Arc::clone(&app));
                tokio::spawn(async move {
                    while let Some(envelope) = queue.recv().await {
                        if let Err(e) = endpoint.handle_envelope(envelope, app.as_ref()).await {
                            tracing::warn!(owner = %endpoint.owner, error = %e, "an envelope was not processed; it will come again");
                        }
                    }
                });
                lane
            })
            .collect();
        let mut retry = tokio::time::interval(OUTBOX_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break };
                    if let LinkEvent::Envelope(envelope) = event {
                        let lane = &lanes[lane_of(&envelope.from, envelope.from_device)];
                        if lane.send(envelope).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    if let Err(e) = self.handle(event, app.as_ref()).await {
                        tracing::warn!(owner = %self.owner, error = %e, "a relay event was not processed; it will come again");
                    }
                }
                _ = retry.tick() => {
                    if self.link.is_connected()
                        && self.link.is_receiving()
                        && let Err(e) = self.flush_outbox(app.as_ref(), Some(SUBMIT_WAIT)).await
                    {
                        tracing::warn!(owner = %self.owner, error = %e, "outbox retry failed");
                    }
                }
            }
        }
    }

    /// Processes one link event. An envelope that could not be processed is left
    /// unacknowledged and the link reconnects, so the relay sends it again.
    pub async fn handle(&self, event: LinkEvent, app: &dyn Application) -> Result<(), ClientError> {
        match event {
            // Keys and retries are the receiving connection's work (one per device at a time).
            LinkEvent::Connected {
                one_time_keys_remaining,
            } if self.link.is_receiving() => {
                if let Err(e) = self.replenish(one_time_keys_remaining).await {
                    tracing::warn!(owner = %self.owner, error = %e, "one-time keys not replenished");
                }
                self.flush_outbox(app, None).await?;
            }
            LinkEvent::Connected { .. } => {}
            LinkEvent::KeysLow { remaining } => self.replenish(remaining).await?,
            LinkEvent::Envelope(envelope) => self.handle_envelope(envelope, app).await?,
            LinkEvent::Rejected(reason) => {
                tracing::error!(owner = %self.owner, %reason, "the relay rejected this device");
            }
            LinkEvent::Drained | LinkEvent::Disconnected => {}
        }
        Ok(())
    }

    /// Processes one envelope and acknowledges it. One that could not be processed is left
    /// unacknowledged and the link reconnects, so the relay sends it again.
    async fn handle_envelope(
        &self,
        envelope: Envelope,
        app: &dyn Application,
    ) -> Result<(), ClientError> {
        let seq = envelope.seq;
        if let Err(e) = self.receive(envelope, app).await {
            tokio::time::sleep(REDELIVERY_PAUSE).await;
            self.link.reconnect();
            return Err(e);
        }
        // If the ack is lost the relay redelivers, and the dedup marker absorbs it.
        let _ = self.link.ack(vec![seq]).await;
        Ok(())
    }

    /// Tops the published one-time keys back up: persist, upload, mark published, persist.
    /// Keys from an earlier upload that failed are uploaded again, not added to.
    async fn replenish(&self, remaining: u64) -> Result<(), ClientError> {
        let target = TARGET_ONE_TIME_KEYS;
        let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
        if remaining >= target / 2 {
            return Ok(());
        }
        let mut account = self.account.lock().await;
        let (pending, _) = account.unpublished_keys(0, false);
        let missing = (target - remaining).saturating_sub(pending.len());
        let (one_time_keys, _) = account.unpublished_keys(missing, false);
        let aad = identity_aad(&self.owner);
        self.store
            .save_account(&self.owner, account.seal(&self.sealer, &aad)?)
            .await?;
        let upload = Op::UploadKeys {
            one_time_keys,
            fallback_key: None,
        };
        self.link.request(upload, REQUEST_WAIT).await?;
        account.mark_published();
        self.store
            .save_account(&self.owner, account.seal(&self.sealer, &aad)?)
            .await?;
        Ok(())
    }

    /// Becomes the device's receiving endpoint (on this node): picks up the account as stored
    /// (another node may have changed it) and asks the relay for the device's envelopes.
    pub async fn take_over(&self) -> Result<(), ClientError> {
        self.reload_account().await?;
        self.link.set_receiving(true);
        Ok(())
    }

    /// Stops receiving for the device (another node does now); sending still works.
    pub fn hand_over(&self) {
        self.link.set_receiving(false);
    }

    /// Replaces the resident account with the stored one (after a commit that would have
    /// changed it failed, so memory and store agree again).
    async fn reload_account(&self) -> Result<(), ClientError> {
        let stored = self.stored_account().await?;
        *self.account.lock().await = stored;
        Ok(())
    }

    async fn stored_account(&self) -> Result<DeviceAccount, ClientError> {
        let identity = self
            .store
            .identity(&self.owner)
            .await?
            .ok_or_else(|| ClientError::NotRegistered(self.owner.to_string()))?;
        Ok(DeviceAccount::open(
            &self.sealer,
            &identity_aad(&self.owner),
            &identity.account_sealed,
        )?)
    }

    async fn peer_devices(
        &self,
        peer: &PhoneNumber,
        refresh: bool,
    ) -> Result<Vec<DeviceInfo>, SendError> {
        if !refresh && let Some(devices) = lock(&self.peers).get(peer) {
            return Ok(devices.clone());
        }
        match self
            .link
            .request(
                Op::Devices {
                    account: peer.clone(),
                },
                REQUEST_WAIT,
            )
            .await
        {
            Ok(Reply::Devices { devices }) => {
                lock(&self.peers).insert(peer.clone(), devices.clone());
                Ok(devices)
            }
            Ok(other) => Err(ClientError::Unexpected(format!("{other:?}")).into()),
            Err(LinkError::Refused(e)) if e.code == ErrorCode::UnknownAccount => {
                Err(SendError::UnknownRecipient(peer.clone()))
            }
            Err(LinkError::Refused(e)) => Err(SendError::Refused(e)),
            Err(e) => Err(ClientError::from(e).into()),
        }
    }

    fn session_lock(&self, peer: &PhoneNumber, device: DeviceId) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            lock(&self.session_locks)
                .entry((peer.clone(), device))
                .or_default(),
        )
    }
}

/// How many envelopes one endpoint processes at once (each from a different sender device).
const INBOUND_LANES: usize = 16;
/// Envelopes waiting per lane; the relay's flow-control window bounds the total anyway.
const LANE_DEPTH: usize = 64;

/// The lane of a sender device: the same sender always gets the same lane.
fn lane_of(from: &PhoneNumber, device: DeviceId) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (from, device).hash(&mut hasher);
    (hasher.finish() % INBOUND_LANES as u64) as usize
}

/// Marks an outbox row as being handed to the relay for as long as it lives.
struct Flight<'a> {
    set: &'a Mutex<HashSet<MessageId>>,
    id: MessageId,
}

impl Endpoint {
    fn begin_flight(&self, id: &MessageId) -> Option<Flight<'_>> {
        lock(&self.in_flight).insert(id.clone()).then(|| Flight {
            set: &self.in_flight,
            id: id.clone(),
        })
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn session_aad(
    owner: &PhoneNumber,
    peer: &PhoneNumber,
    device: DeviceId,
    session_id: &str,
) -> Vec<u8> {
    format!("session/{owner}/{peer}/{device}/{session_id}").into_bytes()
}

fn body_aad(owner: &PhoneNumber, id: &MessageId, direction: Direction) -> Vec<u8> {
    format!("message/{owner}/{id}/{}", direction.as_str()).into_bytes()
}

/// The row-binding label of a sealed contact name.
pub fn contact_aad(owner: &PhoneNumber, peer: &PhoneNumber) -> Vec<u8> {
    format!("contact/{owner}/{peer}").into_bytes()
}

/// A store refusal that means another node (sending or receiving on the same sessions) wrote
/// first: reading again and redoing the work succeeds.
fn written_meanwhile(conflict: &ventana_store::Conflict) -> bool {
    matches!(
        conflict.kind,
        ventana_store::ConflictKind::Changed | ventana_store::ConflictKind::Exists
    )
}
