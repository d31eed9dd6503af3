//! Olm accounts and sessions (vodozemac), persisted only as sealed bytes.

use crate::{CryptoError, Sealer};
use base64::Engine as _;
use ventana_core::protocol::{Ciphertext, ClaimedKey, SignedKey};
use vodozemac::olm::{Account, AccountPickle, OlmMessage, Session, SessionConfig, SessionPickle};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature};
use zeroize::Zeroizing;

/// How many one-time keys a device keeps published at the relay.
pub const TARGET_ONE_TIME_KEYS: usize = 50;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD_NO_PAD
}

fn config() -> SessionConfig {
    SessionConfig::version_1()
}

/// One device's long-term keys: its identity and its private pre-keys.
pub struct DeviceAccount {
    inner: Account,
}

impl Default for DeviceAccount {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceAccount {
    pub fn new() -> Self {
        Self {
            inner: Account::new(),
        }
    }

    pub fn curve25519(&self) -> String {
        self.inner.curve25519_key().to_base64()
    }

    pub fn ed25519(&self) -> String {
        self.inner.ed25519_key().to_base64()
    }

    /// Creates `count` new one-time keys (and a fallback key if asked) and returns the
    /// unpublished ones, signed. Persist the account, upload, then [`Self::mark_published`].
    pub fn unpublished_keys(
        &mut self,
        count: usize,
        new_fallback: bool,
    ) -> (Vec<SignedKey>, Option<SignedKey>) {
        if count > 0 {
            self.inner.generate_one_time_keys(count);
        }
        if new_fallback {
            self.inner.generate_fallback_key();
        }
        let sign = |(id, key): (vodozemac::KeyId, Curve25519PublicKey)| {
            let key = key.to_base64();
            SignedKey {
                key_id: id.to_base64(),
                signature: self.inner.sign(key.as_bytes()).to_base64(),
                key,
            }
        };
        let mut otks: Vec<SignedKey> = self.inner.one_time_keys().into_iter().map(sign).collect();
        otks.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        let fallback = self.inner.fallback_key().into_iter().map(sign).next();
        (otks, fallback)
    }

    pub fn mark_published(&mut self) {
        self.inner.mark_keys_as_published();
    }

    /// Starts a session with a peer device from a claimed pre-key, after checking that the
    /// pre-key was signed by that device's identity key.
    pub fn outbound_session(&self, claimed: &ClaimedKey) -> Result<PeerSession, CryptoError> {
        let ed = Ed25519PublicKey::from_base64(&claimed.device.ed25519)
            .map_err(|e| CryptoError::Malformed(e.to_string()))?;
        let sig = Ed25519Signature::from_base64(&claimed.key.signature)
            .map_err(|_| CryptoError::BadSignature)?;
        ed.verify(claimed.key.key.as_bytes(), &sig)
            .map_err(|_| CryptoError::BadSignature)?;
        let identity = curve(&claimed.device.curve25519)?;
        let otk = curve(&claimed.key.key)?;
        let session = self
            .inner
            .create_outbound_session(config(), identity, otk)
            .map_err(|e| CryptoError::Session(e.to_string()))?;
        Ok(PeerSession { inner: session })
    }

    /// Creates the session a peer started with a pre-key message, and decrypts that message.
    /// Consumes the one-time key it used: persist account and session together.
    pub fn inbound_session(
        &mut self,
        their_curve25519: &str,
        ciphertext: &Ciphertext,
    ) -> Result<(PeerSession, Zeroizing<Vec<u8>>), CryptoError> {
        let OlmMessage::PreKey(message) = decode(ciphertext)? else {
            return Err(CryptoError::Session("not a pre-key message".into()));
        };
        let result = self
            .inner
            .create_inbound_session(config(), curve(their_curve25519)?, &message)
            .map_err(|e| CryptoError::Session(e.to_string()))?;
        Ok((
            PeerSession {
                inner: result.session,
            },
            Zeroizing::new(result.plaintext),
        ))
    }

    /// The state pickled and sealed, to store. A pickle that cannot be written is an error,
    /// never an empty blob that would replace the state for good.
    pub fn seal(&self, sealer: &Sealer, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let json =
            Zeroizing::new(serde_json::to_vec(&self.inner.pickle()).map_err(CryptoError::Pickle)?);
        Ok(sealer.seal(aad, &json))
    }

    pub fn open(sealer: &Sealer, aad: &[u8], sealed: &[u8]) -> Result<Self, CryptoError> {
        let json = sealer.open(aad, sealed)?;
        let pickle: AccountPickle =
            serde_json::from_slice(&json).map_err(|e| CryptoError::Malformed(e.to_string()))?;
        Ok(Self {
            inner: Account::from_pickle(pickle),
        })
    }
}

/// One Olm session with one peer device.
pub struct PeerSession {
    inner: Session,
}

impl PeerSession {
    /// The same on both ends of the session.
    pub fn id(&self) -> String {
        self.inner.session_id()
    }

    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Ciphertext, CryptoError> {
        let message = self
            .inner
            .encrypt(plaintext)
            .map_err(|e| CryptoError::Session(e.to_string()))?;
        let (message_type, bytes) = message.to_parts();
        Ok(Ciphertext {
            message_type: message_type as u8,
            body: b64().encode(bytes),
        })
    }

    pub fn decrypt(&mut self, ciphertext: &Ciphertext) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let message = decode(ciphertext)?;
        self.inner
            .decrypt(&message)
            .map(Zeroizing::new)
            .map_err(|e| CryptoError::Decrypt(e.to_string()))
    }

    /// Whether a pre-key message belongs to this session (so it must not start a new one).
    pub fn owns_pre_key_message(&self, ciphertext: &Ciphertext) -> bool {
        matches!(decode(ciphertext), Ok(OlmMessage::PreKey(m)) if m.session_id() == self.id())
    }

    /// The state pickled and sealed, to store. A pickle that cannot be written is an error,
    /// never an empty blob that would replace the state for good.
    pub fn seal(&self, sealer: &Sealer, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let json =
            Zeroizing::new(serde_json::to_vec(&self.inner.pickle()).map_err(CryptoError::Pickle)?);
        Ok(sealer.seal(aad, &json))
    }

    pub fn open(sealer: &Sealer, aad: &[u8], sealed: &[u8]) -> Result<Self, CryptoError> {
        let json = sealer.open(aad, sealed)?;
        let pickle: SessionPickle =
            serde_json::from_slice(&json).map_err(|e| CryptoError::Malformed(e.to_string()))?;
        Ok(Self {
            inner: Session::from_pickle(pickle),
        })
    }
}

/// Checks a device's published keys as the relay receives them: well-formed identity keys,
/// and every pre-key signed by the device's ed25519 key. A device that fails this could only
/// make every session with it fail later.
pub fn verify_device_keys(
    curve25519: &str,
    ed25519: &str,
    keys: &[&SignedKey],
) -> Result<(), CryptoError> {
    curve(curve25519)?;
    let ed = Ed25519PublicKey::from_base64(ed25519)
        .map_err(|e| CryptoError::Malformed(e.to_string()))?;
    for key in keys {
        curve(&key.key)?;
        let sig =
            Ed25519Signature::from_base64(&key.signature).map_err(|_| CryptoError::BadSignature)?;
        ed.verify(key.key.as_bytes(), &sig)
            .map_err(|_| CryptoError::BadSignature)?;
    }
    Ok(())
}

fn curve(text: &str) -> Result<Curve25519PublicKey, CryptoError> {
    Curve25519PublicKey::from_base64(text).map_err(|e| CryptoError::Malformed(e.to_string()))
}

/// The session a pre-key message starts or belongs to (the same id on both ends); `None` for
/// a normal message, which does not say.
pub fn pre_key_session_id(ciphertext: &Ciphertext) -> Option<String> {
    match decode(ciphertext) {
        Ok(OlmMessage::PreKey(m)) => Some(m.session_id()),
        _ => None,
    }
}

fn decode(ciphertext: &Ciphertext) -> Result<OlmMessage, CryptoError> {
    let bytes = b64()
        .decode(ciphertext.body.trim_end_matches('='))
        .map_err(|e| CryptoError::Malformed(e.to_string()))?;
    OlmMessage::from_parts(ciphertext.message_type as usize, &bytes)
        .map_err(|e| CryptoError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SealKey;
    use ventana_core::DeviceId;
    use ventana_core::protocol::DeviceInfo;

    fn claim(account: &mut DeviceAccount) -> ClaimedKey {
        let (otks, _) = account.unpublished_keys(3, true);
        account.mark_published();
        ClaimedKey {
            device: DeviceInfo {
                device_id: DeviceId(1),
                curve25519: account.curve25519(),
                ed25519: account.ed25519(),
            },
            key: otks[0].clone(),
            fallback: false,
        }
    }

    #[test]
    fn two_devices_talk_through_sealed_state() {
        let sealer = Sealer::new(SealKey::generate());
        let mut business = DeviceAccount::new();
        let user = DeviceAccount::new();
        let claimed = claim(&mut business);

        let mut outbound = user.outbound_session(&claimed).unwrap();
        let first = outbound.encrypt(b"where is my order?").unwrap();
        assert_eq!(first.message_type, 0);

        let business =
            DeviceAccount::open(&sealer, b"acct", &business.seal(&sealer, b"acct").unwrap())
                .unwrap();
        let mut business = business;
        let (mut inbound, plaintext) = business
            .inbound_session(&user.curve25519(), &first)
            .unwrap();
        assert_eq!(plaintext.as_slice(), b"where is my order?");
        assert!(inbound.owns_pre_key_message(&first));
        assert_eq!(inbound.id(), outbound.id());

        let reply = inbound.encrypt(b"shipped today").unwrap();
        let mut outbound =
            PeerSession::open(&sealer, b"s", &outbound.seal(&sealer, b"s").unwrap()).unwrap();
        assert_eq!(
            outbound.decrypt(&reply).unwrap().as_slice(),
            b"shipped today"
        );
        // A replayed message does not decrypt twice.
        assert!(outbound.decrypt(&reply).is_err());
    }

    #[test]
    fn a_pre_key_with_a_forged_signature_is_refused() {
        let mut business = DeviceAccount::new();
        let mut claimed = claim(&mut business);
        let impostor = DeviceAccount::new();
        claimed.key.signature = {
            let mut other = impostor;
            let (keys, _) = other.unpublished_keys(1, false);
            keys[0].signature.clone()
        };
        let user = DeviceAccount::new();
        assert!(matches!(
            user.outbound_session(&claimed),
            Err(CryptoError::BadSignature)
        ));
    }
}
