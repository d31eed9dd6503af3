//! Receiving: find (or create) the session, decrypt, check the bound header, commit the
//! state and every effect at once; the caller acknowledges afterwards.

use super::outbound::CONFLICT_RETRIES;
use super::templates::check_template_shape;
use super::{
    Application, Endpoint, Inbound, InboundMeta, SendError, body_aad, contact_aad, session_aad,
};
use crate::ClientError;
use crate::link::LinkError;
use crate::registration::identity_aad;
use ventana_core::payload::{Header, Payload};
use ventana_core::protocol::{Ciphertext, Envelope, Receipt, ReceiptStatus};
use ventana_core::rules::EnvelopeKind;
use ventana_core::{DeviceId, PhoneNumber};
use ventana_crypto::{DeviceAccount, PeerSession};
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
/// unacknowledged, so the relay sends it again; a permanent one is recorded and acknowledged.
enum DecryptFailure {
    Transient(String),
    Permanent(String),
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
        let mut attempt = 0;
        loop {
            match self
                .receive_message_once(meta.clone(), &ciphertext, app)
                .await
            {
                // Another node (sending on the same session) wrote it first: read it again.
                Err(ClientError::Store(StoreError::Conflict(_))) if attempt < CONFLICT_RETRIES => {
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
                tracing::warn!(owner = %self.owner, from = %meta.from, %reason, "undecryptable message");
                let event = Inbound::Undecryptable { meta, reason };
                return self.commit(event, None, None, Vec::new(), app).await;
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
                let event = Inbound::Undecryptable { meta, reason };
                // The session did advance: keep it, or the next message cannot be read.
                return self.commit(event, session, account, Vec::new(), app).await;
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
        let (from, id) = (meta.from.clone(), meta.id.clone());
        let template = payload.header.template.clone();
        self.commit(
            Inbound::Message { meta, payload },
            session,
            account,
            records,
            app,
        )
        .await?;
        // Fetch the template's text now, while the relay is reachable, so the message still
        // renders when it is not; in the background, so the acknowledgement does not wait.
        if let Some(template) = &template {
            self.prefetch_template(&from, template);
        }
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
        account: Option<AccountChange<'_>>,
        mut records: Vec<AppRecord>,
        app: &dyn Application,
    ) -> Result<(), ClientError> {
        let (account_sealed, mut resident) = match account {
            Some(change) => (Some(change.sealed), Some(change.resident)),
            None => (None, None),
        };
        let result = async {
            records.extend(app.inbound(self, &event).await?);
            let meta = event.meta();
            let commit = InboundCommit {
                owner: self.owner.clone(),
                from: meta.from.clone(),
                id: meta.id.clone(),
                account_sealed,
                session,
                records,
            };
            Ok::<_, ClientError>(self.store.commit_inbound(commit).await?)
        }
        .await;
        match result {
            Ok(InboundOutcome::Committed) => {
                app.committed(self, &event);
                Ok(())
            }
            Ok(InboundOutcome::Duplicate) => Ok(()),
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
        let write = SessionWrite {
            peer: meta.from.clone(),
            peer_device: meta.from_device,
            session_id,
            sealed: session.seal(&self.sealer, &aad),
            expected_version: None,
        };
        let sealed = account.seal(&self.sealer, &identity_aad(&self.owner));
        let change = AccountChange {
            sealed,
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
            if let Some(found) = devices.iter().find(|d| d.device_id == device) {
                return Ok(found.curve25519.clone());
            }
        }
        Err(DecryptFailure::Permanent(format!(
            "device {device} of {peer} is unknown to the relay"
        )))
    }
}
