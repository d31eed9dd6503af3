//! Sending: encrypt for every device of the recipient, commit, hand to the relay, settle.

use super::{
    Application, Caller, Endpoint, REQUEST_WAIT, SUBMIT_WAIT, SendError, Sent, Settlement,
    body_aad, lock, session_aad,
};
use crate::ClientError;
use crate::link::LinkError;
use ventana_core::payload::{Content, Header, Payload};
use ventana_core::protocol::{
    ClaimedKey, DeviceCopy, DeviceInfo, ErrorCode, Op, ProtocolError, Receipt, ReceiptStatus,
    Reply, Submission,
};
use ventana_core::rules::EnvelopeKind;
use ventana_core::template::TemplateHeader;
use ventana_core::{DeviceId, MessageId, PhoneNumber, UnixTime};
use ventana_crypto::PeerSession;
use ventana_store::StoreError;
use ventana_store::endpoint::{
    AppRecord, Direction, MessageRecord, OutboundCommit, OutboxRow, SessionWrite,
};

/// A message to send: its id, recipient and content, and for a template the version it
/// fills.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub id: MessageId,
    pub to: PhoneNumber,
    pub template: Option<TemplateHeader>,
    pub content: Content,
    pub reply_to: Option<MessageId>,
}

/// How often a message is encrypted again for a recipient whose devices keep changing.
const STALE_RETRIES: usize = 3;
/// How often a send or receive is tried again after another node wrote the same session.
pub(super) const CONFLICT_RETRIES: usize = 5;

/// The relay's answer for one submission.
pub(super) enum Submitted {
    Accepted(UnixTime),
    Refused(ProtocolError),
    /// No final answer yet; the row stays in the outbox and is retried.
    Pending,
}

impl Endpoint {
    /// Encrypts `content` for every device of `to`, commits, and submits it to the relay.
    pub async fn send_message(
        &self,
        to: &PhoneNumber,
        content: Content,
        reply_to: Option<MessageId>,
        app: &dyn Application,
    ) -> Result<Sent, SendError> {
        self.send(
            Outgoing {
                id: MessageId::generate(),
                to: to.clone(),
                template: None,
                content,
                reply_to,
            },
            app,
        )
        .await
    }

    /// Sends one message under the id it names (a scheduled send chose it ahead of time). A
    /// template message carries its header, in clear for the relay and inside the ciphertext.
    pub async fn send(&self, message: Outgoing, app: &dyn Application) -> Result<Sent, SendError> {
        let Outgoing {
            id,
            to,
            template,
            content,
            reply_to,
        } = message;
        let kind = if template.is_some() {
            EnvelopeKind::Template
        } else {
            EnvelopeKind::Message
        };
        let payload = Payload {
            v: 1,
            header: Header {
                id: id.clone(),
                from: self.owner.clone(),
                to,
                kind,
                template,
            },
            profile_name: Some(self.display_name.clone()),
            content,
            reply_to,
        };
        let _flight = self.begin_flight(&id);
        match self.deliver(&payload, app, Caller::Waits).await? {
            Submitted::Accepted(at) => Ok(Sent {
                id,
                accepted_at: Some(at),
            }),
            Submitted::Pending => Ok(Sent {
                id,
                accepted_at: None,
            }),
            Submitted::Refused(e) => Err(SendError::Refused(e)),
        }
    }

    /// Encrypts for the recipient's current devices and submits, again (under the same id,
    /// replacing the outbox row) while the relay answers that the device list is stale.
    async fn deliver(
        &self,
        payload: &Payload,
        app: &dyn Application,
        caller: Caller,
    ) -> Result<Submitted, SendError> {
        let to = &payload.header.to;
        let mut refresh = false;
        for _ in 0..STALE_RETRIES {
            let devices = self.peer_devices(to, refresh).await?;
            let row = self
                .encrypt_and_commit_retrying(to, &devices, payload)
                .await?;
            match self.submit(&row, app, caller).await? {
                Submitted::Refused(e) if e.code == ErrorCode::StaleDevices => {
                    lock(&self.peers).remove(to);
                    refresh = true;
                }
                other => return Ok(other),
            }
        }
        let error = ProtocolError::new(
            ErrorCode::StaleDevices,
            "the recipient's devices keep changing",
        );
        Ok(self
            .settle(&payload.header.id, to, Err(error), app, caller)
            .await?)
    }

    /// [`Self::encrypt_and_commit`], again while another node wrote one of the sessions in
    /// between: its ciphertext was never committed nor sent, so encrypting again is safe.
    async fn encrypt_and_commit_retrying(
        &self,
        to: &PhoneNumber,
        devices: &[DeviceInfo],
        payload: &Payload,
    ) -> Result<OutboxRow, ClientError> {
        let mut attempt = 0;
        loop {
            match self.encrypt_and_commit(to, devices, payload).await {
                Err(ClientError::Store(StoreError::Conflict(what)))
                    if attempt < CONFLICT_RETRIES =>
                {
                    tracing::debug!(%what, "session written elsewhere meanwhile; encrypting again");
                    attempt += 1;
                }
                other => return other,
            }
        }
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
        // Locks in a fixed order, so two senders to the same devices cannot deadlock.
        let locks: Vec<_> = ids.iter().map(|d| self.session_lock(to, *d)).collect();
        let mut guards = Vec::with_capacity(locks.len());
        for l in &locks {
            guards.push(l.lock().await);
        }
        let mut current = Vec::with_capacity(devices.len());
        let mut without_session = Vec::new();
        for device in devices {
            let record = self
                .store
                .sessions(&self.owner, to, device.device_id)
                .await?
                .into_iter()
                .next();
            if record.is_none() {
                without_session.push(device.device_id);
            }
            current.push((device, record));
        }
        // Claim pre-keys only of the devices that need a new session.
        let claimed = if without_session.is_empty() {
            Vec::new()
        } else {
            self.claim(to, without_session).await?
        };

        let mut writes = Vec::with_capacity(devices.len());
        let mut copies = Vec::with_capacity(devices.len());
        for (device, record) in current {
            let (mut session, expected) = match record {
                Some(record) => {
                    let aad = session_aad(&self.owner, to, device.device_id, &record.session_id);
                    (
                        PeerSession::open(&self.sealer, &aad, &record.sealed)?,
                        Some(record.version),
                    )
                }
                None => {
                    let key = claimed
                        .iter()
                        .find(|k| k.device.device_id == device.device_id)
                        .ok_or_else(|| {
                            ClientError::Unexpected(format!(
                                "device {} of {to} has no pre-key left",
                                device.device_id
                            ))
                        })?;
                    if key.device.curve25519 != device.curve25519
                        || key.device.ed25519 != device.ed25519
                    {
                        return Err(ClientError::Unexpected(
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
            kind: payload.header.kind,
            template: payload.header.template.clone(),
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
            kind: payload.header.kind,
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

    /// Hands a committed outbox row to the relay. A final answer settles the row, except
    /// `stale_devices`, which leaves it for the caller to encrypt again.
    async fn submit(
        &self,
        row: &OutboxRow,
        app: &dyn Application,
        caller: Caller,
    ) -> Result<Submitted, ClientError> {
        let submission: Submission = serde_json::from_slice(&row.submission)
            .map_err(|e| ClientError::Unexpected(format!("unreadable outbox row: {e}")))?;
        let outcome = match self.link.request(Op::Send(submission), SUBMIT_WAIT).await {
            Ok(Reply::Sent { accepted_at }) => Ok(accepted_at),
            Err(LinkError::Refused(e)) if e.code == ErrorCode::StaleDevices => {
                return Ok(Submitted::Refused(e));
            }
            Err(LinkError::Refused(e)) => Err(e),
            Ok(other) => {
                tracing::warn!(reply = ?other, "unexpected reply to a send; will retry");
                return Ok(Submitted::Pending);
            }
            Err(_) => return Ok(Submitted::Pending),
        };
        self.settle(&row.id, &row.to, outcome, app, caller).await
    }

    /// Records the relay's final answer: the message's status, the application's effects,
    /// and the outbox row gone, in one transaction.
    async fn settle(
        &self,
        id: &MessageId,
        to: &PhoneNumber,
        outcome: Result<UnixTime, ProtocolError>,
        app: &dyn Application,
        caller: Caller,
    ) -> Result<Submitted, ClientError> {
        let settlement = Settlement {
            id: id.clone(),
            to: to.clone(),
            outcome,
        };
        let status = if settlement.outcome.is_ok() {
            "sent"
        } else {
            "failed"
        };
        let mut records = vec![AppRecord::Status {
            id: id.clone(),
            status: status.into(),
        }];
        // A refusal the caller is waiting for is its answer; the application hears only of
        // acceptances and of refusals nobody was waiting for (a retry after a restart).
        if settlement.outcome.is_ok() || caller == Caller::Background {
            match app.settled(self, &settlement).await {
                Ok(more) => records.extend(more),
                Err(e) => {
                    // Settled later, by the retry, when the application can take it.
                    tracing::warn!(%id, error = %e, "settlement postponed");
                    return Ok(Submitted::Pending);
                }
            }
        }
        self.store.settle_outbox(&self.owner, id, records).await?;
        app.settle_committed(self, &settlement);
        Ok(match settlement.outcome {
            Ok(at) => Submitted::Accepted(at),
            Err(e) => Submitted::Refused(e),
        })
    }

    /// Resubmits unsettled outbox rows, oldest first (after a reconnect or a restart, and
    /// periodically). With `min_age`, only rows at least that old: younger ones may still
    /// have a sender waiting for them.
    pub async fn flush_outbox(
        &self,
        app: &dyn Application,
        min_age: Option<std::time::Duration>,
    ) -> Result<(), ClientError> {
        let now = UnixTime::now();
        for row in self.store.outbox(&self.owner).await? {
            if let Some(age) = min_age
                && row.created_at.0 > now.0 - age.as_secs() as i64
            {
                continue;
            }
            let Some(_flight) = self.begin_flight(&row.id) else {
                continue;
            };
            match self.submit(&row, app, Caller::Background).await? {
                Submitted::Pending => break,
                Submitted::Refused(e) if e.code == ErrorCode::StaleDevices => {
                    self.reencrypt(&row, app).await?
                }
                Submitted::Accepted(_) | Submitted::Refused(_) => {}
            }
        }
        Ok(())
    }

    /// The recipient's devices changed while the row waited: encrypt the message again from
    /// the history for the current devices (the earlier ciphertext was never accepted).
    async fn reencrypt(&self, row: &OutboxRow, app: &dyn Application) -> Result<(), ClientError> {
        let record = self.store.message(&self.owner, &row.id).await?;
        let Some(payload) = record.as_ref().and_then(|r| self.open_body(r)) else {
            let error = ProtocolError::new(
                ErrorCode::Internal,
                "the message is no longer in the history",
            );
            self.settle(&row.id, &row.to, Err(error), app, Caller::Background)
                .await?;
            return Ok(());
        };
        lock(&self.peers).remove(&row.to);
        let refusal = match self.deliver(&payload, app, Caller::Background).await {
            Ok(_) => return Ok(()),
            Err(SendError::Refused(e)) => e,
            Err(SendError::UnknownRecipient(to)) => ProtocolError::new(
                ErrorCode::UnknownAccount,
                format!("{to} has no Ventana account"),
            ),
            Err(SendError::Client(e)) => return Err(e),
        };
        self.settle(&row.id, &row.to, Err(refusal), app, Caller::Background)
            .await?;
        Ok(())
    }

    async fn claim(
        &self,
        peer: &PhoneNumber,
        devices: Vec<DeviceId>,
    ) -> Result<Vec<ClaimedKey>, ClientError> {
        let op = Op::Claim {
            account: peer.clone(),
            devices: Some(devices),
        };
        match self.link.request(op, REQUEST_WAIT).await? {
            Reply::Claimed { keys } => Ok(keys),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
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
            template: None,
            copies: Vec::new(),
            receipt: Some(Receipt { status, ids }),
        };
        self.simple_request(Op::Send(submission)).await
    }

    /// Blocks or unblocks a business (users only).
    pub async fn set_blocked(
        &self,
        business: &PhoneNumber,
        blocked: bool,
    ) -> Result<(), SendError> {
        let business = business.clone();
        self.simple_request(if blocked {
            Op::Block { business }
        } else {
            Op::Unblock { business }
        })
        .await
    }

    async fn simple_request(&self, op: Op) -> Result<(), SendError> {
        match self.link.request(op, REQUEST_WAIT).await {
            Ok(_) => Ok(()),
            Err(LinkError::Refused(e)) => Err(SendError::Refused(e)),
            Err(e) => Err(SendError::Client(e.into())),
        }
    }
}
