//! Sending: encrypt for every device of the recipient, commit, hand to the relay, settle.

use super::{
    Application, Caller, Endpoint, REQUEST_WAIT, SUBMIT_WAIT, SendError, Sent, Settlement,
    body_aad, lock, session_aad,
};
use crate::ClientError;
use crate::link::LinkError;
use std::collections::HashMap;
use ventana_core::payload::{Content, Header, Payload};
use ventana_core::pricing::PricingNote;
use ventana_core::protocol::{
    ClaimedKey, DeviceCopy, DeviceInfo, ErrorCode, Op, ProtocolError, Receipt, ReceiptStatus,
    Reply, Submission,
};
use ventana_core::rules::EnvelopeKind;
use ventana_core::template::TemplateHeader;
use ventana_core::{DeviceId, MessageId, MessageStatus, PhoneNumber, UnixTime};
use ventana_crypto::PeerSession;
use ventana_store::StoreError;
use ventana_store::endpoint::{
    AppRecord, Direction, MessageRecord, OutboundCommit, OutboxRow, SessionMark, SessionWrite,
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
    /// Written by a person, not by the business's software (see `Submission::manual`).
    pub manual: bool,
}

/// How a submission goes to the relay.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Mode {
    /// The relay may have accepted this id already (see `Submission::resend`).
    pub(super) resend: bool,
    /// A reply written by a person (see `Submission::manual`).
    pub(super) manual: bool,
}

/// How often a message is encrypted again for a recipient whose devices keep changing.
const STALE_RETRIES: usize = 3;
/// How often a send or receive is tried again after another node wrote the same session.
pub(super) const CONFLICT_RETRIES: usize = 5;
/// How often a message is sent again to a device that could not decrypt it, before the
/// sender records it as failed.
pub(super) const MAX_RESENDS: u32 = 3;

/// The versions each session (recipient, device, session id) was written at by rows still
/// in the outbox.
type QueuedWrites = HashMap<(PhoneNumber, DeviceId, String), std::collections::HashSet<i64>>;

/// One message encrypted for some devices of its recipient: the session states to commit,
/// the copies, and where each copy stands in its session.
pub(super) struct Encrypted {
    pub(super) writes: Vec<SessionWrite>,
    pub(super) copies: Vec<DeviceCopy>,
    pub(super) marks: Vec<SessionMark>,
}

/// A submission in the outbox: the row as the store keeps it (the submission as JSON) and
/// the submission itself. One queued just now goes to the relay as it was built, never read
/// back from the JSON it was written as; one read from the store is parsed once, here.
#[derive(Clone, Debug)]
pub(super) struct Queued {
    pub(super) row: OutboxRow,
    pub(super) submission: Submission,
}

impl Queued {
    /// Queues `submission` (a refusal to write it is an error, never an empty row).
    fn new(
        submission: Submission,
        sessions: Vec<SessionMark>,
        attempt: u32,
    ) -> Result<Self, ClientError> {
        let row = OutboxRow {
            id: submission.id.clone(),
            to: submission.to.clone(),
            submission: serde_json::to_vec(&submission).map_err(ClientError::Outbox)?,
            created_at: UnixTime::now(),
            sessions,
            attempt,
        };
        Ok(Self { row, submission })
    }

    /// A row the store kept.
    pub(super) fn read(row: OutboxRow) -> Result<Self, ClientError> {
        let submission = serde_json::from_slice(&row.submission).map_err(ClientError::Outbox)?;
        Ok(Self { row, submission })
    }
}

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
                manual: false,
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
            manual,
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
        let mode = Mode {
            resend: false,
            manual,
        };
        match self.deliver(&payload, app, Caller::Waits, mode).await? {
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
        mode: Mode,
    ) -> Result<Submitted, SendError> {
        let to = &payload.header.to;
        let mut refresh = false;
        for _ in 0..STALE_RETRIES {
            let devices = self.peer_devices(to, refresh).await?;
            let queued = self
                .encrypt_and_commit_retrying(to, &devices, payload, mode)
                .await?;
            match self.submit(&queued, app, caller).await? {
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
            .settle(&payload.header.id, to, (Err(error), None), app, caller, 0)
            .await?)
    }

    /// [`Self::encrypt_and_commit`], again while another node wrote one of the sessions in
    /// between: its ciphertext was never committed nor sent, so encrypting again is safe.
    async fn encrypt_and_commit_retrying(
        &self,
        to: &PhoneNumber,
        devices: &[DeviceInfo],
        payload: &Payload,
        mode: Mode,
    ) -> Result<Queued, ClientError> {
        let mut attempt = 0;
        loop {
            match self.encrypt_and_commit(to, devices, payload, mode).await {
                Err(ClientError::Store(StoreError::Conflict(what)))
                    if super::written_meanwhile(&what) && attempt < CONFLICT_RETRIES =>
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
        mode: Mode,
    ) -> Result<Queued, ClientError> {
        let plaintext = zeroize::Zeroizing::new(payload.to_bytes().map_err(ClientError::Payload)?);
        let mut ids: Vec<DeviceId> = devices.iter().map(|d| d.device_id).collect();
        ids.sort();
        // Locks in a fixed order, so two senders to the same devices cannot deadlock.
        let locks: Vec<_> = ids.iter().map(|d| self.session_lock(to, *d)).collect();
        let mut guards = Vec::with_capacity(locks.len());
        for l in &locks {
            guards.push(l.lock().await);
        }
        let encrypted = self
            .encrypt_for(to, devices, &[&plaintext], false)
            .await?
            .pop()
            .ok_or_else(|| ClientError::Unexpected("nothing was encrypted".into()))?;
        let id = payload.header.id.clone();
        let now = UnixTime::now();
        let queued = self.outbox_row(payload, encrypted.copies, encrypted.marks, mode, 0)?;
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
            status: MessageStatus::Accepted,
            resends: 0,
        };
        self.store
            .commit_outbound(OutboundCommit {
                owner: self.owner.clone(),
                account_sealed: None,
                sessions: encrypted.writes,
                outbox: queued.row.clone(),
                // A re-encryption replaces only the outbox row; the history has the message.
                records: vec![AppRecord::Message(record)],
            })
            .await?;
        drop(guards);
        Ok(queued)
    }

    /// Encrypts each plaintext, in order, for each of `devices` (whose session locks the
    /// caller holds): on the device's current session, or on a new one from a claimed
    /// one-time key where it has none or `fresh` asks for one (a device that could not
    /// decrypt). One [`Encrypted`] per plaintext; the session writes (the final states) are
    /// in the last one.
    pub(super) async fn encrypt_for(
        &self,
        to: &PhoneNumber,
        devices: &[DeviceInfo],
        plaintexts: &[&[u8]],
        fresh: bool,
    ) -> Result<Vec<Encrypted>, ClientError> {
        let mut current = Vec::with_capacity(devices.len());
        let mut without_session = Vec::new();
        for device in devices {
            let record = if fresh {
                None
            } else {
                self.store
                    .sessions(&self.owner, to, device.device_id)
                    .await?
                    .into_iter()
                    .next()
            };
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

        let mut out: Vec<Encrypted> = plaintexts
            .iter()
            .map(|_| Encrypted {
                writes: Vec::new(),
                copies: Vec::with_capacity(devices.len()),
                marks: Vec::with_capacity(devices.len()),
            })
            .collect();
        let mut writes = Vec::with_capacity(devices.len());
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
            let session_id = session.id();
            // The version this commit writes: one past the one read, or 1 for a new session.
            let version = expected.map_or(1, |v| v + 1);
            for (plaintext, encrypted) in plaintexts.iter().zip(out.iter_mut()) {
                encrypted.copies.push(DeviceCopy {
                    device: device.device_id,
                    ciphertext: session.encrypt(plaintext)?,
                });
                encrypted.marks.push(SessionMark {
                    peer_device: device.device_id,
                    session_id: session_id.clone(),
                    version,
                });
            }
            let aad = session_aad(&self.owner, to, device.device_id, &session_id);
            writes.push(SessionWrite {
                peer: to.clone(),
                peer_device: device.device_id,
                session_id,
                sealed: session.seal(&self.sealer, &aad)?,
                expected_version: expected,
            });
        }
        if let Some(last) = out.last_mut() {
            last.writes = writes;
        }
        Ok(out)
    }

    /// The outbox row of one encryption of `payload`.
    pub(super) fn outbox_row(
        &self,
        payload: &Payload,
        copies: Vec<DeviceCopy>,
        sessions: Vec<SessionMark>,
        mode: Mode,
        attempt: u32,
    ) -> Result<Queued, ClientError> {
        let submission = Submission {
            id: payload.header.id.clone(),
            to: payload.header.to.clone(),
            kind: payload.header.kind,
            template: payload.header.template.clone(),
            copies,
            receipt: None,
            resend: mode.resend,
            manual: mode.manual,
        };
        Queued::new(submission, sessions, attempt)
    }

    /// The outbox row of a receipt, under an id of its own.
    pub(super) fn receipt_row(
        &self,
        to: &PhoneNumber,
        receipt: Receipt,
    ) -> Result<Queued, ClientError> {
        let submission = Submission {
            id: MessageId::generate(),
            to: to.clone(),
            kind: EnvelopeKind::Receipt,
            template: None,
            copies: Vec::new(),
            receipt: Some(receipt),
            resend: false,
            manual: false,
        };
        Queued::new(submission, Vec::new(), 0)
    }

    /// Hands a committed outbox row to the relay. A final answer settles the row, except
    /// `stale_devices`, which leaves it for the caller to encrypt again.
    pub(super) async fn submit(
        &self,
        queued: &Queued,
        app: &dyn Application,
        caller: Caller,
    ) -> Result<Submitted, ClientError> {
        if queued.submission.kind == EnvelopeKind::Receipt {
            return self.submit_receipt(queued).await;
        }
        let row = &queued.row;
        let op = Op::Send(Box::new(queued.submission.clone()));
        let outcome = match self.link.request(op, SUBMIT_WAIT).await {
            Ok(Reply::Sent {
                accepted_at,
                pricing,
            }) => Ok((accepted_at, pricing)),
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
        let (outcome, pricing) = match outcome {
            Ok((at, pricing)) => (Ok(at), pricing),
            Err(e) => (Err(e), None),
        };
        self.settle(
            &row.id,
            &row.to,
            (outcome, pricing),
            app,
            caller,
            row.attempt,
        )
        .await
    }

    /// Hands a queued receipt to the relay. A receipt only has to reach it: accepted, or
    /// refused (the peer blocked us, or is gone) and dropped, it is settled either way.
    async fn submit_receipt(&self, queued: &Queued) -> Result<Submitted, ClientError> {
        let row = &queued.row;
        let op = Op::Send(Box::new(queued.submission.clone()));
        let submitted = match self.link.request(op, SUBMIT_WAIT).await {
            Ok(Reply::Sent { accepted_at, .. }) => Submitted::Accepted(accepted_at),
            // The relay failed (a delivery report is also what it bills by): try again
            // later, which is safe, rather than drop it.
            Err(LinkError::Refused(e)) if e.code == ErrorCode::Internal => {
                tracing::debug!(id = %row.id, error = %e, "a receipt failed at the relay; will retry");
                return Ok(Submitted::Pending);
            }
            Err(LinkError::Refused(e)) => {
                tracing::debug!(id = %row.id, error = %e, "a receipt was refused");
                Submitted::Refused(e)
            }
            Ok(_) | Err(_) => return Ok(Submitted::Pending),
        };
        if self.link.is_receiving() {
            // Its row goes with the next inbound commit or retry round (see
            // `receipts_done`), not a write of its own.
            lock(&self.receipts_done).push(row.id.clone());
        } else {
            // A send-only endpoint (a gateway node marking a message read for a number
            // another node receives for) has neither: it would only collect ids.
            self.store
                .settle_outbox(&self.owner, &row.id, Vec::new())
                .await?;
        }
        Ok(submitted)
    }

    /// The receipts the relay has taken whose rows are still to be dropped.
    pub(super) fn take_receipts_done(&self) -> Vec<MessageId> {
        std::mem::take(&mut *lock(&self.receipts_done))
    }

    /// Gives back receipts whose rows a failed commit did not drop.
    pub(super) fn return_receipts_done(&self, ids: Vec<MessageId>) {
        lock(&self.receipts_done).extend(ids);
    }

    /// Records the relay's final answer: the message's status, the application's effects,
    /// and the outbox row gone, in one transaction. Only a message's first settlement
    /// (`attempt` 0, its row still there) reports anything: a resend a device asked for was
    /// accepted long ago, and an answer settled before was reported then.
    async fn settle(
        &self,
        id: &MessageId,
        to: &PhoneNumber,
        (outcome, pricing): (Result<UnixTime, ProtocolError>, Option<PricingNote>),
        app: &dyn Application,
        caller: Caller,
        attempt: u32,
    ) -> Result<Submitted, ClientError> {
        let settlement = Settlement {
            id: id.clone(),
            to: to.clone(),
            outcome,
            pricing,
        };
        let mut records = Vec::new();
        if attempt == 0 {
            let status = if settlement.outcome.is_ok() {
                MessageStatus::Sent
            } else {
                MessageStatus::Failed
            };
            // A refusal the caller is waiting for is its answer; the application hears only
            // of acceptances and of refusals nobody was waiting for (a retry after a restart).
            // Its announcement (the `sent` or `failed` webhook) goes out only if the status
            // moves: a receipt of the recipient may have moved it further already, and a
            // status never goes backwards.
            let mut announce = None;
            if settlement.outcome.is_ok() || caller == Caller::Background {
                match app.settled(self, &settlement).await {
                    Ok(more) => {
                        for record in more {
                            match record {
                                AppRecord::Webhook(job) if announce.is_none() => {
                                    announce = Some(job);
                                }
                                other => records.push(other),
                            }
                        }
                    }
                    Err(e) => {
                        // Settled later, by the retry, when the application can take it.
                        tracing::warn!(%id, error = %e, "settlement postponed");
                        return Ok(Submitted::Pending);
                    }
                }
            }
            records.insert(
                0,
                AppRecord::Status {
                    id: id.clone(),
                    status,
                    announce,
                },
            );
        } else if let Err(e) = &settlement.outcome {
            tracing::warn!(%id, attempt, error = %e, "a resend was refused");
        }
        let first = self.store.settle_outbox(&self.owner, id, records).await?;
        if first && attempt == 0 {
            app.settle_committed(self, &settlement);
        }
        Ok(match settlement.outcome {
            Ok(at) => Submitted::Accepted(at),
            Err(e) => Submitted::Refused(e),
        })
    }

    /// Resubmits unsettled outbox rows, oldest first (after a reconnect or a restart, and
    /// periodically). With `min_age`, only rows at least that old: younger ones may still
    /// have a sender waiting for them.
    ///
    /// A message row whose session another writer moved past since it was committed (another
    /// node sent or received on it while this row waited, say because the node that
    /// committed it died before sending) is not sent as it is: by now the recipient's ratchet
    /// may have dropped the keys for it. It is encrypted again from the sealed history, under
    /// the same id, as a resend (the relay may have accepted the first ciphertext).
    pub async fn flush_outbox(
        &self,
        app: &dyn Application,
        min_age: Option<std::time::Duration>,
    ) -> Result<(), ClientError> {
        for id in self.take_receipts_done() {
            self.store
                .settle_outbox(&self.owner, &id, Vec::new())
                .await?;
        }
        let now = UnixTime::now();
        let rows = self.store.outbox(&self.owner).await?;
        // Writes this outbox itself explains: the versions of each session that queued rows
        // were encrypted at. Rows queued one after another on one session are in order, so
        // a row's session has moved on only if it was written since by something else.
        let mut queued: QueuedWrites = HashMap::new();
        for row in &rows {
            for mark in &row.sessions {
                let key = (row.to.clone(), mark.peer_device, mark.session_id.clone());
                queued.entry(key).or_default().insert(mark.version);
            }
        }
        for row in rows {
            if let Some(age) = min_age
                && row.created_at.0 > now.0 - age.as_secs() as i64
            {
                continue;
            }
            let Some(_flight) = self.begin_flight(&row.id) else {
                continue;
            };
            let reencrypted = if row.attempt == 0 && self.moved_on(&row, &queued).await? {
                tracing::info!(id = %row.id, to = %row.to, "session moved on since this message was encrypted; encrypting it again");
                self.reencrypt(&row, app).await
            } else {
                let stored = Queued::read(row.clone())?;
                match self.submit(&stored, app, Caller::Background).await? {
                    Submitted::Pending => break,
                    Submitted::Refused(e) if e.code == ErrorCode::StaleDevices => {
                        self.reencrypt(&row, app).await
                    }
                    Submitted::Accepted(_) | Submitted::Refused(_) => Ok(()),
                }
            };
            match reencrypted {
                Ok(()) => {}
                // The relay is out of reach: the rest waits for the next round too.
                Err(ClientError::Link(_)) => break,
                // Something about this row; the others still go.
                Err(e) => {
                    tracing::warn!(id = %row.id, error = %e, "a message could not be encrypted again; will retry")
                }
            }
        }
        Ok(())
    }

    /// Whether a session a row's copy was encrypted on has been written since by anything
    /// but rows still queued (`queued`: the versions each session's queued rows wrote):
    /// every version after the row's, up to the session's current one, must be one of them.
    async fn moved_on(&self, row: &OutboxRow, queued: &QueuedWrites) -> Result<bool, ClientError> {
        for mark in &row.sessions {
            let sessions = self
                .store
                .sessions(&self.owner, &row.to, mark.peer_device)
                .await?;
            let key = (row.to.clone(), mark.peer_device, mark.session_id.clone());
            let Some(current) = sessions
                .iter()
                .find(|s| s.session_id == mark.session_id)
                .map(|s| s.version)
            else {
                return Ok(true);
            };
            let ours = queued.get(&key);
            let explained = current >= mark.version
                && (mark.version + 1..=current).all(|v| ours.is_some_and(|o| o.contains(&v)));
            if !explained {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Encrypts a row's message again from the history for the recipient's current devices,
    /// under the same id: its devices changed while it waited, or its session moved on. It
    /// goes as a resend: the relay may have accepted an earlier ciphertext of it (a row
    /// that was itself a resend, or one whose node died after the relay took it).
    async fn reencrypt(&self, row: &OutboxRow, app: &dyn Application) -> Result<(), ClientError> {
        let record = self.store.message(&self.owner, &row.id).await?;
        let Some(payload) = record.as_ref().and_then(|r| self.open_body(r)) else {
            let error = ProtocolError::new(
                ErrorCode::Internal,
                "the message is no longer in the history",
            );
            self.settle(
                &row.id,
                &row.to,
                (Err(error), None),
                app,
                Caller::Background,
                0,
            )
            .await?;
            return Ok(());
        };
        lock(&self.peers).remove(&row.to);
        // A reply by hand stays one: if the relay never accepted the first ciphertext, this
        // is its first submission, decided as the first would have been.
        let manual = serde_json::from_slice::<Submission>(&row.submission)
            .map(|s| s.manual)
            .unwrap_or(false);
        let mode = Mode {
            resend: true,
            manual,
        };
        let refusal = match self.deliver(&payload, app, Caller::Background, mode).await {
            Ok(_) => return Ok(()),
            Err(SendError::Refused(e))
            | Err(SendError::Client(ClientError::Link(LinkError::Refused(e)))) => e,
            Err(SendError::UnknownRecipient(to)) => ProtocolError::new(
                ErrorCode::UnknownAccount,
                format!("{to} has no Ventana account"),
            ),
            Err(SendError::Client(e)) => return Err(e),
        };
        self.settle(
            &row.id,
            &row.to,
            (Err(refusal), None),
            app,
            Caller::Background,
            0,
        )
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

    /// Sends a delivered or read receipt for messages received from `to`. It is queued
    /// durably first: if the relay does not answer now, it goes out with the outbox.
    pub async fn send_receipt(
        &self,
        to: &PhoneNumber,
        status: ReceiptStatus,
        ids: Vec<MessageId>,
    ) -> Result<(), SendError> {
        let queued = self.receipt_row(
            to,
            Receipt {
                status,
                ids,
                session: None,
                pricing: Vec::new(),
            },
        )?;
        self.store
            .commit_outbound(OutboundCommit {
                owner: self.owner.clone(),
                account_sealed: None,
                sessions: Vec::new(),
                outbox: queued.row.clone(),
                records: Vec::new(),
            })
            .await
            .map_err(ClientError::from)?;
        match self.submit_queued(&queued, None).await? {
            Submitted::Refused(e) => Err(SendError::Refused(e)),
            Submitted::Accepted(_) | Submitted::Pending => Ok(()),
        }
    }

    /// Submits a row just queued (a receipt; a resend, which needs `app`), unless the retry
    /// loop has it. Whatever is not answered now goes out with the outbox.
    pub(super) async fn submit_queued(
        &self,
        queued: &Queued,
        app: Option<&dyn Application>,
    ) -> Result<Submitted, ClientError> {
        let Some(_flight) = self.begin_flight(&queued.row.id) else {
            return Ok(Submitted::Pending);
        };
        match app {
            Some(app) => self.submit(queued, app, Caller::Background).await,
            None => self.submit_receipt(queued).await,
        }
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
