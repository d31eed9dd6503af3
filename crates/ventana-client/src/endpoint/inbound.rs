//! Receiving: find (or create) the session, decrypt, check the bound header, commit the
//! state and every effect at once; the caller acknowledges afterwards.

use super::outbound::{CONFLICT_RETRIES, MAX_RESENDS, Queued};
use super::templates::check_template_shape;
use super::{
    Application, Endpoint, Inbound, InboundMeta, SendError, Settlement, body_aad, contact_aad,
    session_aad,
};
use crate::ClientError;
use crate::link::LinkError;
use crate::registration::identity_aad;
use ventana_core::payload::{Header, Payload};
use ventana_core::protocol::{
    Ciphertext, DeviceInfo, Envelope, ErrorCode, ProtocolError, Receipt, ReceiptStatus,
};
use ventana_core::rules::EnvelopeKind;
use ventana_core::{DeviceId, MessageStatus, PhoneNumber};
use ventana_crypto::{DeviceAccount, PeerSession, pre_key_session_id};
use ventana_store::StoreError;
use ventana_store::endpoint::{
    AppRecord, Direction, InboundCommit, InboundOutcome, MessageRecord, SessionWrite,
};
use zeroize::Zeroizing;

/// A decrypted message: plaintext, the session to write, the account if it changed.
type Decrypted<'a> = (
    Zeroizing<Vec<u8>>,
    Option<SessionWrite>,
    Option<AccountChange<'a>>,
);

/// A changed account (a new inbound session consumed a one-time key): sealed for the store,
/// with the resident account locked until the change is committed or undone. Envelopes from
/// different senders are processed concurrently; holding the lock keeps two new sessions
/// from committing account states out of order.
struct AccountChange<'a> {
    sealed: Vec<u8>,
    resident: tokio::sync::MutexGuard<'a, DeviceAccount>,
}

/// Why an inbound message was not decrypted. A transient failure leaves the envelope
/// unacknowledged, so the relay sends it again; a permanent one is acknowledged with a retry
/// receipt queued for the sender, who sends the message again on a new session.
enum DecryptFailure {
    Transient(String),
    Permanent(String),
}

/// Why a message a peer device asked for again cannot be resent, for good.
struct Unsendable(String);

/// How old a message may be and still be sent again when a device asks for it.
const RESEND_WITHIN_SECS: i64 = 7 * 24 * 3600;

/// What committing one inbound envelope writes besides the application's records.
#[derive(Default)]
struct Effects<'a> {
    session: Option<SessionWrite>,
    account: Option<AccountChange<'a>>,
    /// Submissions to queue with it (its receipt, resends a peer asked for).
    outbox: Vec<Queued>,
    /// True for a message acknowledged unread (no dedup marker written), so that its
    /// resend is read rather than taken for a duplicate.
    unprocessed: bool,
}

impl Endpoint {
    pub(super) async fn receive(
        &self,
        envelope: Envelope,
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
            kind: envelope.kind,
            template: envelope.template.clone(),
        };
        match (envelope.kind, envelope.receipt, envelope.ciphertext) {
            (EnvelopeKind::Receipt, Some(receipt), _) => {
                self.receive_receipt(meta, receipt, app).await
            }
            (EnvelopeKind::Message | EnvelopeKind::Template, _, Some(ciphertext)) => {
                self.receive_message(meta, ciphertext, app).await
            }
            _ => {
                let event = Inbound::Undecryptable {
                    meta,
                    reason: "envelope without content".into(),
                    resend_asked: false,
                };
                self.commit(event, Effects::default(), Vec::new(), app)
                    .await
                    .map(drop)
            }
        }
    }

    async fn receive_receipt(
        &self,
        meta: InboundMeta,
        receipt: Receipt,
        app: &dyn Application,
    ) -> Result<(), ClientError> {
        let mut messages = Vec::new();
        for id in receipt.ids {
            // Only the recipient of a message may report on it.
            if let Some(record) = self.store.message(&self.owner, &id).await?
                && record.direction == Direction::Outbound
                && record.peer == meta.from
            {
                messages.push(record);
            }
        }
        let status = match receipt.status {
            ReceiptStatus::Delivered => MessageStatus::Delivered,
            ReceiptStatus::Read => MessageStatus::Read,
            ReceiptStatus::Retry => {
                return self
                    .receive_retry(meta, messages, receipt.session, app)
                    .await;
            }
        };
        let records = messages
            .iter()
            .map(|m| AppRecord::Status {
                id: m.id.clone(),
                status,
                announce: None,
            })
            .collect();
        let event = Inbound::Receipt {
            meta,
            status: receipt.status,
            ids: messages.into_iter().map(|m| m.id).collect(),
            pricing: receipt.pricing,
        };
        self.commit(event, Effects::default(), records, app)
            .await
            .map(drop)
    }

    /// A peer device could not decrypt some of our messages: send each again on a new
    /// session with that device (claiming one of its one-time keys), under the same id, in
    /// the transaction that records the receipt, so a crash cannot lose the resend. After
    /// [`MAX_RESENDS`], or when it cannot be resent at all, the message is recorded as failed
    /// and the application reports it (unless another device of the peer has it already).
    ///
    /// Receipts travel in clear, so a retry is only honoured for what it could genuinely
    /// be: a recent message of ours to that account, asked for by a device we already
    /// encrypt to (a device added since never had the message, and gets nothing).
    async fn receive_retry(
        &self,
        meta: InboundMeta,
        messages: Vec<MessageRecord>,
        session: Option<String>,
        app: &dyn Application,
    ) -> Result<(), ClientError> {
        let lock = self.session_lock(&meta.from, meta.from_device);
        let _guard = lock.lock().await;
        let known = !self
            .store
            .sessions(&self.owner, &meta.from, meta.from_device)
            .await?
            .is_empty();
        let now = ventana_core::UnixTime::now();
        let mut resend = Vec::new();
        let mut give_up: Vec<(&MessageRecord, String)> = Vec::new();
        for message in &messages {
            if !known {
                tracing::warn!(id = %message.id, from = %meta.from, device = %meta.from_device, "a retry from a device this message was never encrypted for; ignored");
                continue;
            }
            match self.open_body(message) {
                _ if message.resends >= MAX_RESENDS => give_up.push((
                    message,
                    format!(
                        "the recipient's device could not decrypt the message, even after {} resends",
                        message.resends
                    ),
                )),
                _ if now.0 - message.ts.0 > RESEND_WITHIN_SECS => give_up.push((
                    message,
                    "the recipient's device could not decrypt the message, and it is too old to send again".into(),
                )),
                Some(payload) => resend.push((message, payload)),
                None => give_up.push((
                    message,
                    "the recipient's device could not decrypt the message, and it is no longer in the history".into(),
                )),
            }
        }
        let mut effects = Effects::default();
        let mut records = Vec::new();
        if !resend.is_empty() {
            match self.encrypt_resends(&meta, &resend).await? {
                Ok((write, rows)) => {
                    effects.session = Some(write);
                    for ((message, _), queued) in resend.iter().zip(rows) {
                        tracing::info!(id = %message.id, to = %meta.from, device = %meta.from_device, attempt = queued.row.attempt, failed_session = ?session, "resending a message the device could not decrypt");
                        effects.outbox.push(queued);
                        records.push(AppRecord::Resent {
                            id: message.id.clone(),
                        });
                    }
                }
                Err(Unsendable(reason)) => {
                    for (message, _) in &resend {
                        give_up.push((message, reason.clone()));
                    }
                }
            }
        }
        for (message, reason) in give_up {
            tracing::warn!(id = %message.id, to = %meta.from, %reason, "giving up on a message");
            let settlement = Settlement {
                id: message.id.clone(),
                to: meta.from.clone(),
                outcome: Err(ProtocolError::new(ErrorCode::Undecryptable, reason)),
                pricing: None,
            };
            // The failure is announced only if it moves the message's status: not after
            // another device of the recipient reported it delivered.
            let mut announce = None;
            for record in app.settled(self, &settlement).await? {
                match record {
                    AppRecord::Webhook(job) if announce.is_none() => announce = Some(job),
                    other => records.push(other),
                }
            }
            records.push(AppRecord::Status {
                id: message.id.clone(),
                status: MessageStatus::Failed,
                announce,
            });
        }
        let event = Inbound::Receipt {
            meta,
            status: ReceiptStatus::Retry,
            ids: messages.into_iter().map(|m| m.id).collect(),
            pricing: Vec::new(),
        };
        let queued = self.commit(event, effects, records, app).await?;
        for resend in &queued {
            if let Err(e) = self.submit_queued(resend, Some(app)).await {
                tracing::debug!(id = %resend.row.id, error = %e, "resend queued; the outbox will send it");
            }
        }
        Ok(())
    }

    /// Encrypts `resend` on one new session with the device that asked. A transient failure
    /// (the relay not answering) is an error, so the receipt comes again; one that retrying
    /// will not mend (the device is gone, has no keys, or the relay refuses a session with
    /// it) is [`Unsendable`].
    async fn encrypt_resends(
        &self,
        meta: &InboundMeta,
        resend: &[(&MessageRecord, ventana_core::payload::Payload)],
    ) -> Result<Result<(SessionWrite, Vec<Queued>), Unsendable>, ClientError> {
        let transient = |e: String| {
            ClientError::Unexpected(format!("retry receipt {} not processed yet: {e}", meta.id))
        };
        let device = match self.device_info(&meta.from, meta.from_device).await {
            Ok(device) => device,
            Err(DecryptFailure::Transient(reason)) => return Err(transient(reason)),
            Err(DecryptFailure::Permanent(reason)) => {
                return Ok(Err(Unsendable(format!(
                    "the recipient's device cannot be reached to send the message again: {reason}"
                ))));
            }
        };
        let plaintexts: Vec<Zeroizing<Vec<u8>>> = resend
            .iter()
            .map(|(_, payload)| payload.to_bytes().map(Zeroizing::new))
            .collect::<Result<_, _>>()
            .map_err(ClientError::Payload)?;
        let borrowed: Vec<&[u8]> = plaintexts.iter().map(|p| p.as_slice()).collect();
        let mut encrypted = match self
            .encrypt_for(&meta.from, &[device], &borrowed, true)
            .await
        {
            Ok(encrypted) => encrypted,
            Err(ClientError::Link(LinkError::Refused(e))) => {
                return Ok(Err(Unsendable(format!(
                    "no new session with the recipient's device: {e}"
                ))));
            }
            Err(ClientError::Unexpected(reason)) => {
                return Ok(Err(Unsendable(format!(
                    "no new session with the recipient's device: {reason}"
                ))));
            }
            Err(e) => return Err(transient(e.to_string())),
        };
        let Some(write) = encrypted.last_mut().and_then(|e| e.writes.pop()) else {
            return Ok(Err(Unsendable("nothing was encrypted".into())));
        };
        let rows = resend
            .iter()
            .zip(encrypted)
            .map(|((message, payload), encrypted)| {
                self.outbox_row(
                    payload,
                    encrypted.copies,
                    encrypted.marks,
                    super::outbound::Mode {
                        resend: true,
                        manual: false,
                    },
                    message.resends + 1,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Ok((write, rows)))
    }

    async fn receive_message(
        &self,
        meta: InboundMeta,
        ciphertext: Ciphertext,
        app: &dyn Application,
    ) -> Result<(), ClientError> {
        let mut attempt = 0;
        loop {
            match self
                .receive_message_once(meta.clone(), &ciphertext, app)
                .await
            {
                // Another node (sending on the same session) wrote it first: read it again.
                Err(ClientError::Store(StoreError::Conflict(c)))
                    if super::written_meanwhile(&c) && attempt < CONFLICT_RETRIES =>
                {
                    attempt += 1
                }
                other => return other,
            }
        }
    }

    async fn receive_message_once(
        &self,
        meta: InboundMeta,
        ciphertext: &Ciphertext,
        app: &dyn Application,
    ) -> Result<(), ClientError> {
        let lock = self.session_lock(&meta.from, meta.from_device);
        let _guard = lock.lock().await;
        let (plaintext, session, account) = match self.decrypt(&meta, ciphertext).await {
            Ok(found) => found,
            Err(DecryptFailure::Transient(reason)) => {
                return Err(ClientError::Unexpected(format!(
                    "message {} not processed yet: {reason}",
                    meta.id
                )));
            }
            Err(DecryptFailure::Permanent(reason)) => {
                // Not marked processed: the sender will encrypt it again on a new session
                // and send it under the same id, which must then be read, not skipped.
                tracing::warn!(owner = %self.owner, from = %meta.from, id = %meta.id, %reason, "undecryptable message; asking the sender to send it again");
                let retry = self.receipt_row(
                    &meta.from,
                    Receipt {
                        status: ReceiptStatus::Retry,
                        ids: vec![meta.id.clone()],
                        session: pre_key_session_id(ciphertext),
                        pricing: Vec::new(),
                    },
                )?;
                let effects = Effects {
                    outbox: vec![retry],
                    unprocessed: true,
                    ..Effects::default()
                };
                let event = Inbound::Undecryptable {
                    meta,
                    reason,
                    resend_asked: true,
                };
                let queued = self.commit(event, effects, Vec::new(), app).await?;
                self.submit_receipts(&queued).await;
                return Ok(());
            }
        };
        let header = Header {
            id: meta.id.clone(),
            from: meta.from.clone(),
            to: self.owner.clone(),
            kind: meta.kind,
            template: meta.template.clone(),
        };
        // A template message must be one in its kind, its header and its content alike, or
        // it could show text the relay never checked; it is refused like a forged header.
        let opened = Payload::open(&plaintext, &header)
            .map_err(|e| e.to_string())
            .and_then(|payload| match check_template_shape(&payload) {
                Ok(()) => Ok(payload),
                Err(reason) => Err(reason.to_owned()),
            });
        let payload = match opened {
            Ok(payload) => payload,
            Err(reason) => {
                tracing::warn!(owner = %self.owner, from = %meta.from, %reason, "message refused");
                let event = Inbound::Undecryptable {
                    meta,
                    reason,
                    resend_asked: false,
                };
                // The session did advance: keep it, or the next message cannot be read.
                let effects = Effects {
                    session,
                    account,
                    ..Effects::default()
                };
                return self.commit(event, effects, Vec::new(), app).await.map(drop);
            }
        };
        let mut records = vec![AppRecord::Message(MessageRecord {
            id: meta.id.clone(),
            direction: Direction::Inbound,
            peer: meta.from.clone(),
            peer_device: Some(meta.from_device),
            kind: meta.kind,
            ts: meta.ts,
            body_sealed: self.sealer.seal(
                &body_aad(&self.owner, &meta.id, Direction::Inbound),
                &plaintext,
            ),
            status: MessageStatus::Received,
            resends: 0,
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
        let template = payload.header.template.clone();
        // Double ticks for the sender, queued with the message: sent until the relay takes
        // it, so a `delivered` status is never lost to a crash or a dropped connection.
        let delivered = self.receipt_row(
            &from,
            Receipt {
                status: ReceiptStatus::Delivered,
                ids: vec![meta.id.clone()],
                session: None,
                pricing: Vec::new(),
            },
        )?;
        let effects = Effects {
            session,
            account,
            outbox: vec![delivered],
            unprocessed: false,
        };
        let queued = self
            .commit(Inbound::Message { meta, payload }, effects, records, app)
            .await?;
        // Fetch the template's text now, while the relay is reachable, so the message still
        // renders when it is not; in the background, so the acknowledgement does not wait.
        if let Some(template) = &template {
            self.prefetch_template(&from, template);
        }
        self.submit_receipts(&queued).await;
        Ok(())
    }

    /// Hands receipts just committed to the relay; what it does not take now goes out with
    /// the outbox.
    async fn submit_receipts(&self, receipts: &[Queued]) {
        for receipt in receipts {
            if let Err(e) = self.submit_queued(receipt, None).await {
                tracing::debug!(id = %receipt.row.id, error = %e, "receipt queued; the outbox will send it");
            }
        }
    }

    /// Commits an envelope's effects and the application's records at once. Returns the
    /// outbox rows it queued (none if it was a duplicate), for the caller to submit.
    async fn commit(
        &self,
        event: Inbound,
        effects: Effects<'_>,
        mut records: Vec<AppRecord>,
        app: &dyn Application,
    ) -> Result<Vec<Queued>, ClientError> {
        let Effects {
            session,
            account,
            outbox,
            unprocessed,
        } = effects;
        let (account_sealed, mut resident) = match account {
            Some(change) => (Some(change.sealed), Some(change.resident)),
            None => (None, None),
        };
        let result = async {
            let own = app.inbound(self, &event).await?;
            // A status the application announces replaces the engine's bare one, so the
            // announcement is queued exactly when the status moves.
            records.retain(|r| match r {
                AppRecord::Status {
                    id,
                    status,
                    announce: None,
                } => !own.iter().any(|o| {
                    matches!(o, AppRecord::Status { id: i, status: s, .. } if i == id && s == status)
                }),
                _ => true,
            });
            records.extend(own);
            let meta = event.meta();
            let commit = InboundCommit {
                owner: self.owner.clone(),
                from: meta.from.clone(),
                id: meta.id.clone(),
                account_sealed,
                session,
                records,
                processed: !unprocessed,
                outbox: outbox.iter().map(|q| q.row.clone()).collect(),
                settled: self.take_receipts_done(),
            };
            let settled = commit.settled.clone();
            let outcome = self.store.commit_inbound(commit).await;
            if outcome.is_err() {
                self.return_receipts_done(settled);
            }
            Ok::<_, ClientError>(outcome?)
        }
        .await;
        match result {
            Ok(InboundOutcome::Committed) => {
                app.committed(self, &event);
                Ok(outbox)
            }
            Ok(InboundOutcome::Duplicate) => Ok(Vec::new()),
            Err(e) => {
                // Creating the session consumed a one-time key in memory only: go back to the
                // stored account, so the redelivered message finds its key again.
                if let Some(resident) = resident.as_mut() {
                    **resident = self.stored_account().await?;
                }
                Err(e)
            }
        }
    }

    /// Finds the session that decrypts this message, or creates it from a pre-key message.
    async fn decrypt(
        &self,
        meta: &InboundMeta,
        ciphertext: &Ciphertext,
    ) -> Result<Decrypted<'_>, DecryptFailure> {
        let sessions = self
            .store
            .sessions(&self.owner, &meta.from, meta.from_device)
            .await
            .map_err(|e| DecryptFailure::Transient(e.to_string()))?;
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
                let sealed = session
                    .seal(&self.sealer, &aad)
                    .map_err(|e| DecryptFailure::Transient(e.to_string()))?;
                let write = SessionWrite {
                    peer: meta.from.clone(),
                    peer_device: meta.from_device,
                    session_id: record.session_id.clone(),
                    sealed,
                    expected_version: Some(record.version),
                };
                return Ok((plaintext, Some(write), None));
            }
        }
        if ciphertext.message_type != 0 || owned_by_existing {
            // A replay, or a wedged session: never start a second session from it.
            return Err(DecryptFailure::Permanent(
                "no session decrypts this message".into(),
            ));
        }
        let their_identity = self.device_identity(&meta.from, meta.from_device).await?;
        let mut account = self.account.lock().await;
        let (session, plaintext) = account
            .inbound_session(&their_identity, ciphertext)
            .map_err(|e| DecryptFailure::Permanent(e.to_string()))?;
        let session_id = session.id();
        let aad = session_aad(&self.owner, &meta.from, meta.from_device, &session_id);
        let sealed = session.seal(&self.sealer, &aad).and_then(|session| {
            let account = account.seal(&self.sealer, &identity_aad(&self.owner))?;
            Ok((session, account))
        });
        let (session_sealed, account_sealed) = match sealed {
            Ok(sealed) => sealed,
            Err(e) => {
                // The session consumed a one-time key in memory only: go back to the stored
                // account, so the redelivered message finds its key again.
                *account = self
                    .stored_account()
                    .await
                    .map_err(|e| DecryptFailure::Transient(e.to_string()))?;
                return Err(DecryptFailure::Transient(e.to_string()));
            }
        };
        let write = SessionWrite {
            peer: meta.from.clone(),
            peer_device: meta.from_device,
            session_id,
            sealed: session_sealed,
            expected_version: None,
        };
        let change = AccountChange {
            sealed: account_sealed,
            resident: account,
        };
        Ok((plaintext, Some(write), Some(change)))
    }

    /// The Curve25519 identity key of a peer device, from the relay's directory.
    async fn device_identity(
        &self,
        peer: &PhoneNumber,
        device: DeviceId,
    ) -> Result<String, DecryptFailure> {
        Ok(self.device_info(peer, device).await?.curve25519)
    }

    /// A peer device's keys, from the relay's directory.
    async fn device_info(
        &self,
        peer: &PhoneNumber,
        device: DeviceId,
    ) -> Result<DeviceInfo, DecryptFailure> {
        for refresh in [false, true] {
            let devices = match self.peer_devices(peer, refresh).await {
                Ok(devices) => devices,
                // Not allowed to look the sender up: that will not change by retrying.
                Err(
                    SendError::Refused(e)
                    | SendError::Client(ClientError::Link(LinkError::Refused(e))),
                ) => {
                    return Err(DecryptFailure::Permanent(e.to_string()));
                }
                Err(SendError::UnknownRecipient(p)) => {
                    return Err(DecryptFailure::Permanent(format!(
                        "{p} is unknown to the relay"
                    )));
                }
                Err(SendError::Client(e)) => return Err(DecryptFailure::Transient(e.to_string())),
            };
            if let Some(found) = devices.into_iter().find(|d| d.device_id == device) {
                return Ok(found);
            }
        }
        Err(DecryptFailure::Permanent(format!(
            "device {device} of {peer} is unknown to the relay"
        )))
    }
}
