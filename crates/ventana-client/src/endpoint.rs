//! The end-to-end engine of one device: encrypt, commit, send; receive, decrypt, commit, ack.
//!
//! Crash safety: an outbound message's ratchet state and ciphertext are committed together
//! (with the message in the history) before the relay sees it, and a retry resends the stored
//! ciphertext. An inbound envelope's new ratchet state, dedup marker and application effects
//! are committed together before it is acknowledged. One writer per session: a lock per peer
//! device here, and a version check in the store.

use crate::ClientError;
use crate::link::{LinkError, LinkEvent, RelayLink};
use crate::registration::{identity_aad, token_aad};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use ventana_core::payload::{Content, Header, Payload};
use ventana_core::protocol::{
    Ciphertext, ClaimedKey, DeviceCopy, DeviceInfo, ErrorCode, Op, ProtocolError, Receipt,
    ReceiptStatus, Reply, Submission,
};
use ventana_core::rules::EnvelopeKind;
use ventana_core::{DeviceId, MessageId, PhoneNumber, UnixTime};
use ventana_crypto::{DeviceAccount, PeerSession, Sealer, TARGET_ONE_TIME_KEYS};
use ventana_store::EndpointStore;
use ventana_store::endpoint::{
    AppRecord, Direction, InboundCommit, InboundOutcome, MessageRecord, OutboundCommit, OutboxRow,
    SessionWrite,
};

/// How long a send waits for the relay before answering "queued".
const SUBMIT_WAIT: Duration = Duration::from_secs(10);
const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// The clear metadata of an inbound envelope.
#[derive(Clone, Debug)]
pub struct InboundMeta {
    pub id: MessageId,
    pub from: PhoneNumber,
    pub from_device: DeviceId,
    pub ts: UnixTime,
}

/// An inbound envelope after decryption, as the host application sees it.
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
    },
    /// Could not be decrypted or did not match its envelope; acknowledged so the queue moves.
    Undecryptable {
        meta: InboundMeta,
        reason: String,
    },
}

/// The relay's final answer for an outbound submission.
#[derive(Clone, Debug)]
pub struct Settlement {
    pub id: MessageId,
    pub to: PhoneNumber,
    pub outcome: Result<UnixTime, ProtocolError>,
}

/// What the host application adds to the engine.
#[async_trait]
pub trait Application: Send + Sync {
    /// Effects of an inbound envelope, committed with its ratchet state.
    async fn inbound(&self, endpoint: &Endpoint, event: &Inbound) -> Vec<AppRecord>;
    /// Effects of the relay's answer for an outbound message, committed as it is settled.
    async fn settled(&self, endpoint: &Endpoint, settlement: &Settlement) -> Vec<AppRecord>;
    /// Called once an inbound envelope's effects are durable (wake workers, print).
    fn committed(&self, _endpoint: &Endpoint, _event: &Inbound) {}
}

/// The result of a send the relay accepted or that is safely queued.
#[derive(Clone, Debug)]
pub struct Sent {
    pub id: MessageId,
    /// `None` when the relay could not be reached in time: the message is queued durably and
    /// will be submitted (and settled through [`Application::settled`]) on reconnect.
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

/// Who hands a row to the relay: a sender waiting for the answer, or the background retry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    Waits { may_retry_stale: bool },
    Background,
}

enum Submitted {
    Accepted(UnixTime),
    Refused(ProtocolError),
    Pending,
}

type SessionLocks = Mutex<HashMap<(PhoneNumber, DeviceId), Arc<tokio::sync::Mutex<()>>>>;

/// One registered device, connected to the relay.
pub struct Endpoint {
    owner: PhoneNumber,
    device_id: DeviceId,
    display_name: String,
    store: Arc<dyn EndpointStore>,
    sealer: Sealer,
    account: tokio::sync::Mutex<DeviceAccount>,
    session_locks: SessionLocks,
    peers: Mutex<HashMap<PhoneNumber, Vec<DeviceInfo>>>,
    link: RelayLink,
}

impl Endpoint {
    /// Opens a registered device from its store and starts its link to the relay. Feed the
    /// returned events to [`Endpoint::handle`] (or [`Endpoint::run`]).
    pub async fn open(
        store: Arc<dyn EndpointStore>,
        sealer: Sealer,
        owner: &PhoneNumber,
        relay_url: &str,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Self>, mpsc::Receiver<LinkEvent>), ClientError> {
        let identity = store
            .identity(owner)
            .await?
            .ok_or_else(|| ClientError::NotRegistered(owner.to_string()))?;
        let account = DeviceAccount::open(&sealer, &identity_aad(owner), &identity.account_sealed)?;
        let token = sealer.open(&token_aad(owner), &identity.relay_token_sealed)?;
        let token = String::from_utf8_lossy(&token).into_owned();
        let (link, events) = RelayLink::start(relay_url, &token, shutdown);
        let endpoint = Arc::new(Self {
            owner: owner.clone(),
            device_id: identity.device_id,
            display_name: identity.display_name,
            store,
            sealer,
            account: tokio::sync::Mutex::new(account),
            session_locks: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            link,
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

    /// Processes link events until the link ends.
    pub async fn run(
        self: Arc<Self>,
        mut events: mpsc::Receiver<LinkEvent>,
        app: Arc<dyn Application>,
    ) {
        while let Some(event) = events.recv().await {
            if let Err(e) = self.handle(event, app.as_ref()).await {
                tracing::error!(owner = %self.owner, error = %e, "processing a relay event failed");
            }
        }
    }

    /// Processes one link event.
    pub async fn handle(&self, event: LinkEvent, app: &dyn Application) -> Result<(), ClientError> {
        match event {
            LinkEvent::Connected {
                one_time_keys_remaining,
            } => {
                self.replenish(one_time_keys_remaining).await?;
                self.flush_outbox(app).await?;
            }
            LinkEvent::KeysLow { remaining } => self.replenish(remaining).await?,
            LinkEvent::Envelope(envelope) => {
                let seq = envelope.seq;
                self.receive(envelope, app).await?;
                // If the ack is lost the relay redelivers, and the dedup marker absorbs it.
                let _ = self.link.ack(vec![seq]).await;
            }
            LinkEvent::Rejected(reason) => {
                tracing::error!(owner = %self.owner, %reason, "the relay rejected this device");
            }
            LinkEvent::Drained | LinkEvent::Disconnected => {}
        }
        Ok(())
    }

    // ---- outbound ------------------------------------------------------------------------

    /// Encrypts `content` for every device of `to`, commits, and submits it to the relay.
    pub async fn send_message(
        &self,
        to: &PhoneNumber,
        content: Content,
        reply_to: Option<MessageId>,
        app: &dyn Application,
    ) -> Result<Sent, SendError> {
        let id = MessageId::generate();
        let payload = Payload {
            v: 1,
            header: Header {
                id: id.clone(),
                from: self.owner.clone(),
                to: to.clone(),
                kind: EnvelopeKind::Message,
            },
            profile_name: Some(self.display_name.clone()),
            content,
            reply_to,
        };
        for attempt in 0..2 {
            let devices = self.peer_devices(to, attempt > 0).await?;
            let row = self.encrypt_and_commit(to, &devices, &payload).await?;
            match self
                .submit(
                    &row,
                    app,
                    Caller::Waits {
                        may_retry_stale: attempt == 0,
                    },
                )
                .await?
            {
                Submitted::Accepted(at) => {
                    return Ok(Sent {
                        id,
                        accepted_at: Some(at),
                    });
                }
                Submitted::Pending => {
                    return Ok(Sent {
                        id,
                        accepted_at: None,
                    });
                }
                Submitted::Refused(e) if e.code == ErrorCode::StaleDevices && attempt == 0 => {
                    lock(&self.peers).remove(to);
                }
                Submitted::Refused(e) => return Err(SendError::Refused(e)),
            }
        }
        Err(SendError::Refused(ProtocolError::new(
            ErrorCode::StaleDevices,
            "the recipient's devices keep changing",
        )))
    }

    async fn encrypt_and_commit(
        &self,
        to: &PhoneNumber,
        devices: &[DeviceInfo],
        payload: &Payload,
    ) -> Result<OutboxRow, ClientError> {
        let plaintext = zeroize::Zeroizing::new(payload.to_bytes());
        let mut ids: Vec<DeviceId> = devices.iter().map(|d| d.device_id).collect();
        ids.sort();
        let locks: Vec<_> = ids.iter().map(|d| self.session_lock(to, *d)).collect();
        let mut guards = Vec::with_capacity(locks.len());
        for l in &locks {
            guards.push(l.lock().await);
        }
        let mut claimed: Option<Vec<ClaimedKey>> = None;
        let mut writes = Vec::new();
        let mut copies = Vec::new();
        for device in devices {
            let existing = self
                .store
                .sessions(&self.owner, to, device.device_id)
                .await?;
            let (mut session, expected) = match existing.into_iter().next() {
                Some(record) => {
                    let aad = session_aad(&self.owner, to, device.device_id, &record.session_id);
                    (
                        PeerSession::open(&self.sealer, &aad, &record.sealed)?,
                        Some(record.version),
                    )
                }
                None => {
                    if claimed.is_none() {
                        claimed = Some(self.claim(to).await?);
                    }
                    let key = claimed
                        .iter()
                        .flatten()
                        .find(|k| k.device.device_id == device.device_id)
                        .ok_or_else(|| {
                            ClientError::Http(format!(
                                "device {} of {to} has no pre-key left",
                                device.device_id
                            ))
                        })?;
                    if key.device.curve25519 != device.curve25519
                        || key.device.ed25519 != device.ed25519
                    {
                        return Err(ClientError::Http(
                            "a claimed pre-key does not match the device's identity".into(),
                        ));
                    }
                    (self.account.lock().await.outbound_session(key)?, None)
                }
            };
            let ciphertext = session.encrypt(&plaintext)?;
            let session_id = session.id();
            let aad = session_aad(&self.owner, to, device.device_id, &session_id);
            writes.push(SessionWrite {
                peer: to.clone(),
                peer_device: device.device_id,
                session_id,
                sealed: session.seal(&self.sealer, &aad),
                expected_version: expected,
            });
            copies.push(DeviceCopy {
                device: device.device_id,
                ciphertext,
            });
        }
        let id = payload.header.id.clone();
        let submission = Submission {
            id: id.clone(),
            to: to.clone(),
            kind: EnvelopeKind::Message,
            copies,
            receipt: None,
        };
        let now = UnixTime::now();
        let row = OutboxRow {
            id: id.clone(),
            to: to.clone(),
            submission: serde_json::to_vec(&submission).unwrap_or_default(),
            created_at: now,
        };
        let record = MessageRecord {
            id: id.clone(),
            direction: Direction::Outbound,
            peer: to.clone(),
            peer_device: None,
            kind: EnvelopeKind::Message,
            ts: now,
            body_sealed: self
                .sealer
                .seal(&body_aad(&self.owner, &id, Direction::Outbound), &plaintext),
            status: "accepted".into(),
        };
        self.store
            .commit_outbound(OutboundCommit {
                owner: self.owner.clone(),
                account_sealed: None,
                sessions: writes,
                outbox: row.clone(),
                records: vec![AppRecord::Message(record)],
            })
            .await?;
        drop(guards);
        Ok(row)
    }

    /// Hands a committed outbox row to the relay and settles it on a final answer.
    async fn submit(
        &self,
        row: &OutboxRow,
        app: &dyn Application,
        caller: Caller,
    ) -> Result<Submitted, ClientError> {
        let submission: Submission = serde_json::from_slice(&row.submission)
            .map_err(|e| ClientError::Http(format!("unreadable outbox row: {e}")))?;
        let outcome = match self.link.request(Op::Send(submission), SUBMIT_WAIT).await {
            Ok(Reply::Sent { accepted_at }) => Ok(accepted_at),
            Ok(other) => Err(ProtocolError::new(
                ErrorCode::Internal,
                format!("unexpected reply {other:?}"),
            )),
            Err(LinkError::Refused(e)) => Err(e),
            Err(LinkError::Disconnected | LinkError::Timeout) => return Ok(Submitted::Pending),
        };
        if let Err(e) = &outcome
            && e.code == ErrorCode::StaleDevices
            && matches!(
                caller,
                Caller::Waits {
                    may_retry_stale: true
                }
            )
        {
            // The caller encrypts again for the current devices under the same id.
            self.store
                .settle_outbox(&self.owner, &row.id, Vec::new())
                .await?;
            return Ok(Submitted::Refused(e.clone()));
        }
        let settlement = Settlement {
            id: row.id.clone(),
            to: row.to.clone(),
            outcome: outcome.clone(),
        };
        let status = if outcome.is_ok() { "sent" } else { "failed" };
        let mut records = vec![AppRecord::Status {
            id: row.id.clone(),
            status: status.into(),
        }];
        // A refusal the caller is waiting for is its answer; the application hears only of
        // acceptances and of refusals nobody was waiting for (a retry after a restart).
        if outcome.is_ok() || caller == Caller::Background {
            records.extend(app.settled(self, &settlement).await);
        }
        self.store
            .settle_outbox(&self.owner, &row.id, records)
            .await?;
        Ok(match outcome {
            Ok(at) => Submitted::Accepted(at),
            Err(e) => Submitted::Refused(e),
        })
    }

    /// Resubmits every unsettled outbox row, in order (after a reconnect or a restart).
    pub async fn flush_outbox(&self, app: &dyn Application) -> Result<(), ClientError> {
        for row in self.store.outbox(&self.owner).await? {
            if let Submitted::Pending = self.submit(&row, app, Caller::Background).await? {
                break;
            }
        }
        Ok(())
    }

    /// Sends a delivered or read receipt for messages received from `to`.
    pub async fn send_receipt(
        &self,
        to: &PhoneNumber,
        status: ReceiptStatus,
        ids: Vec<MessageId>,
    ) -> Result<(), SendError> {
        let submission = Submission {
            id: MessageId::generate(),
            to: to.clone(),
            kind: EnvelopeKind::Receipt,
            copies: Vec::new(),
            receipt: Some(Receipt { status, ids }),
        };
        match self.link.request(Op::Send(submission), REQUEST_WAIT).await {
            Ok(_) => Ok(()),
            Err(LinkError::Refused(e)) => Err(SendError::Refused(e)),
            Err(e) => Err(SendError::Client(e.into())),
        }
    }

    /// Blocks or unblocks a business (users only).
    pub async fn set_blocked(
        &self,
        business: &PhoneNumber,
        blocked: bool,
    ) -> Result<(), SendError> {
        let op = if blocked {
            Op::Block {
                business: business.clone(),
            }
        } else {
            Op::Unblock {
                business: business.clone(),
            }
        };
        match self.link.request(op, REQUEST_WAIT).await {
            Ok(_) => Ok(()),
            Err(LinkError::Refused(e)) => Err(SendError::Refused(e)),
            Err(e) => Err(SendError::Client(e.into())),
        }
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
            Ok(other) => Err(ClientError::Http(format!("unexpected reply {other:?}")).into()),
            Err(LinkError::Refused(e)) if e.code == ErrorCode::UnknownAccount => {
                Err(SendError::UnknownRecipient(peer.clone()))
            }
            Err(LinkError::Refused(e)) => Err(SendError::Refused(e)),
            Err(e) => Err(ClientError::from(e).into()),
        }
    }

    async fn claim(&self, peer: &PhoneNumber) -> Result<Vec<ClaimedKey>, ClientError> {
        match self
            .link
            .request(
                Op::Claim {
                    account: peer.clone(),
                },
                REQUEST_WAIT,
            )
            .await?
        {
            Reply::Claimed { keys } => Ok(keys),
            other => Err(ClientError::Http(format!("unexpected reply {other:?}"))),
        }
    }

    /// Tops the published one-time keys back up: persist, upload, mark published, persist.
    async fn replenish(&self, remaining: u64) -> Result<(), ClientError> {
        let target = TARGET_ONE_TIME_KEYS as u64;
        if remaining >= target / 2 {
            return Ok(());
        }
        let mut account = self.account.lock().await;
        let (one_time_keys, _) = account.unpublished_keys((target - remaining) as usize, false);
        let aad = identity_aad(&self.owner);
        self.store
            .save_account(&self.owner, account.seal(&self.sealer, &aad))
            .await?;
        self.link
            .request(
                Op::UploadKeys {
                    one_time_keys,
                    fallback_key: None,
                },
                REQUEST_WAIT,
            )
            .await?;
        account.mark_published();
        self.store
            .save_account(&self.owner, account.seal(&self.sealer, &aad))
            .await?;
        Ok(())
    }

    // ---- inbound -------------------------------------------------------------------------

    async fn receive(
        &self,
        envelope: ventana_core::protocol::Envelope,
        app: &dyn Application,
    ) -> Result<(), ClientError> {
        if self
            .store
            .is_processed(&self.owner, &envelope.from, &envelope.id)
            .await?
        {
            return Ok(());
        }
        let meta = InboundMeta {
            id: envelope.id.clone(),
            from: envelope.from.clone(),
            from_device: envelope.from_device,
            ts: envelope.ts,
        };
        match (envelope.kind, envelope.receipt, envelope.ciphertext) {
            (EnvelopeKind::Receipt, Some(receipt), _) => {
                self.receive_receipt(meta, receipt, app).await
            }
            (EnvelopeKind::Message, _, Some(ciphertext)) => {
                self.receive_message(meta, ciphertext, app).await
            }
            _ => {
                let event = Inbound::Undecryptable {
                    meta,
                    reason: "envelope without content".into(),
                };
                self.commit(event, None, None, Vec::new(), app).await
            }
        }
    }

    async fn receive_receipt(
        &self,
        meta: InboundMeta,
        receipt: Receipt,
        app: &dyn Application,
    ) -> Result<(), ClientError> {
        let mut ids = Vec::new();
        for id in receipt.ids {
            // Only the recipient of a message may report on it.
            if let Some(record) = self.store.message(&self.owner, &id).await?
                && record.direction == Direction::Outbound
                && record.peer == meta.from
            {
                ids.push(id);
            }
        }
        let status = match receipt.status {
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Read => "read",
        };
        let records = ids
            .iter()
            .map(|id| AppRecord::Status {
                id: id.clone(),
                status: status.into(),
            })
            .collect();
        let event = Inbound::Receipt {
            meta,
            status: receipt.status,
            ids,
        };
        self.commit(event, None, None, records, app).await
    }

    async fn receive_message(
        &self,
        meta: InboundMeta,
        ciphertext: Ciphertext,
        app: &dyn Application,
    ) -> Result<(), ClientError> {
        let lock = self.session_lock(&meta.from, meta.from_device);
        let _guard = lock.lock().await;
        let decrypted = self.decrypt(&meta, &ciphertext).await;
        let (plaintext, session, account) = match decrypted {
            Ok(found) => found,
            Err(reason) => {
                tracing::warn!(owner = %self.owner, from = %meta.from, %reason, "undecryptable message");
                let event = Inbound::Undecryptable { meta, reason };
                return self.commit(event, None, None, Vec::new(), app).await;
            }
        };
        let header = Header {
            id: meta.id.clone(),
            from: meta.from.clone(),
            to: self.owner.clone(),
            kind: EnvelopeKind::Message,
        };
        let payload = match Payload::open(&plaintext, &header) {
            Ok(payload) => payload,
            Err(e) => {
                let event = Inbound::Undecryptable {
                    meta,
                    reason: e.to_string(),
                };
                // The session did advance: keep it, or the next message cannot be read.
                return self.commit(event, session, account, Vec::new(), app).await;
            }
        };
        let mut records = vec![AppRecord::Message(MessageRecord {
            id: meta.id.clone(),
            direction: Direction::Inbound,
            peer: meta.from.clone(),
            peer_device: Some(meta.from_device),
            kind: EnvelopeKind::Message,
            ts: meta.ts,
            body_sealed: self.sealer.seal(
                &body_aad(&self.owner, &meta.id, Direction::Inbound),
                &plaintext,
            ),
            status: "received".into(),
        })];
        if let Some(name) = &payload.profile_name {
            records.push(AppRecord::Contact {
                peer: meta.from.clone(),
                profile_sealed: self
                    .sealer
                    .seal(&contact_aad(&self.owner, &meta.from), name.as_bytes()),
            });
        }
        let from = meta.from.clone();
        let id = meta.id.clone();
        self.commit(
            Inbound::Message { meta, payload },
            session,
            account,
            records,
            app,
        )
        .await?;
        // Double ticks for the sender; if this is lost the message still arrived.
        if let Err(e) = self
            .send_receipt(&from, ReceiptStatus::Delivered, vec![id])
            .await
        {
            tracing::debug!(error = %e, "delivered receipt not sent");
        }
        Ok(())
    }

    async fn commit(
        &self,
        event: Inbound,
        session: Option<SessionWrite>,
        account_sealed: Option<Vec<u8>>,
        mut records: Vec<AppRecord>,
        app: &dyn Application,
    ) -> Result<(), ClientError> {
        let (from, id) = match &event {
            Inbound::Message { meta, .. }
            | Inbound::Receipt { meta, .. }
            | Inbound::Undecryptable { meta, .. } => (meta.from.clone(), meta.id.clone()),
        };
        records.extend(app.inbound(self, &event).await);
        let outcome = self
            .store
            .commit_inbound(InboundCommit {
                owner: self.owner.clone(),
                from,
                id,
                account_sealed,
                session,
                records,
            })
            .await?;
        if outcome == InboundOutcome::Committed {
            app.committed(self, &event);
        }
        Ok(())
    }

    /// Finds the session that decrypts this message, or creates it from a pre-key message.
    /// Returns the plaintext, the session write and (for a new session) the sealed account.
    async fn decrypt(
        &self,
        meta: &InboundMeta,
        ciphertext: &Ciphertext,
    ) -> Result<
        (
            zeroize::Zeroizing<Vec<u8>>,
            Option<SessionWrite>,
            Option<Vec<u8>>,
        ),
        String,
    > {
        let sessions = self
            .store
            .sessions(&self.owner, &meta.from, meta.from_device)
            .await
            .map_err(|e| e.to_string())?;
        let mut owned_by_existing = false;
        for record in &sessions {
            let aad = session_aad(
                &self.owner,
                &meta.from,
                meta.from_device,
                &record.session_id,
            );
            let Ok(mut session) = PeerSession::open(&self.sealer, &aad, &record.sealed) else {
                continue;
            };
            let owns = session.owns_pre_key_message(ciphertext);
            owned_by_existing |= owns;
            if ciphertext.message_type == 0 && !owns {
                continue;
            }
            if let Ok(plaintext) = session.decrypt(ciphertext) {
                let write = SessionWrite {
                    peer: meta.from.clone(),
                    peer_device: meta.from_device,
                    session_id: record.session_id.clone(),
                    sealed: session.seal(&self.sealer, &aad),
                    expected_version: Some(record.version),
                };
                return Ok((plaintext, Some(write), None));
            }
        }
        if ciphertext.message_type != 0 || owned_by_existing {
            // A replay, or a wedged session: never start a second session from it.
            return Err("no session decrypts this message".into());
        }
        let their_identity = self.device_identity(&meta.from, meta.from_device).await?;
        let mut account = self.account.lock().await;
        let (session, plaintext) = account
            .inbound_session(&their_identity, ciphertext)
            .map_err(|e| e.to_string())?;
        let session_id = session.id();
        let aad = session_aad(&self.owner, &meta.from, meta.from_device, &session_id);
        let write = SessionWrite {
            peer: meta.from.clone(),
            peer_device: meta.from_device,
            session_id,
            sealed: session.seal(&self.sealer, &aad),
            expected_version: None,
        };
        let account_sealed = account.seal(&self.sealer, &identity_aad(&self.owner));
        Ok((plaintext, Some(write), Some(account_sealed)))
    }

    async fn device_identity(
        &self,
        peer: &PhoneNumber,
        device: DeviceId,
    ) -> Result<String, String> {
        for refresh in [false, true] {
            let devices = self
                .peer_devices(peer, refresh)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(found) = devices.iter().find(|d| d.device_id == device) {
                return Ok(found.curve25519.clone());
            }
        }
        Err(format!("device {device} of {peer} is unknown to the relay"))
    }

    fn session_lock(&self, peer: &PhoneNumber, device: DeviceId) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            lock(&self.session_locks)
                .entry((peer.clone(), device))
                .or_default(),
        )
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
