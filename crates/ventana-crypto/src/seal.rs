//! Sealing secrets at rest: XChaCha20-Poly1305, random 192-bit nonces, row-bound AAD.
//!
//! Blob layout: `[format = 1][key id][nonce: 24][ciphertext ‖ tag]`. The key id leaves room
//! for rotation: a later key gets a new id and old blobs still name the key that opens them.

use crate::CryptoError;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;

/// A 32-byte key from configuration. No `Debug`, zeroized on drop.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl Drop for SealKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl SealKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses standard base64 (padded or not) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
        let bytes = Zeroizing::new(
            engine
                .decode(text.trim().trim_end_matches('='))
                .map_err(|e| CryptoError::BadSealKey(e.to_string()))?,
        );
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::BadSealKey(format!("{} bytes", bytes.len())))?;
        Ok(Self(array))
    }

    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

/// Seals and opens blobs with one key. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    key_id: u8,
    key: SealKey,
}

impl Sealer {
    pub fn new(key: SealKey) -> Self {
        let cipher = XChaCha20Poly1305::new((&key.0).into());
        Self {
            cipher,
            key_id: 0,
            key,
        }
    }

    /// Seals `plaintext`; `aad` names the row (table, key columns) it may be opened for.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            // Encryption fails only for plaintexts beyond 256 GiB.
            .unwrap_or_else(|_| unreachable!("plaintext too large to seal"));
        let mut out = Vec::with_capacity(2 + NONCE_LEN + ciphertext.len());
        out.push(FORMAT);
        out.push(self.key_id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens a blob sealed for the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < 2 + NONCE_LEN || sealed[0] != FORMAT || sealed[1] != self.key_id {
            return Err(CryptoError::Unseal);
        }
        let (nonce, ciphertext) = sealed[2..].split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unseal)
    }

    /// A 32-byte key for another purpose, derived so it reveals nothing of the seal key.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        // HMAC accepts keys of any length.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key.0).unwrap_or_else(|_| unreachable!());
        mac.update(b"ventana derive v1\0");
        mac.update(purpose.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_blob_opens_only_for_its_own_row() {
        let sealer = Sealer::new(SealKey::generate());
        let blob = sealer.seal(b"sessions/1", b"ratchet state");
        assert_eq!(
            sealer.open(b"sessions/1", &blob).unwrap().as_slice(),
            b"ratchet state"
        );
        assert!(matches!(
            sealer.open(b"sessions/2", &blob),
            Err(CryptoError::Unseal)
        ));
        let mut tampered = blob.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            sealer.open(b"sessions/1", &tampered),
            Err(CryptoError::Unseal)
        ));
        let other = Sealer::new(SealKey::generate());
        assert!(matches!(
            other.open(b"sessions/1", &blob),
            Err(CryptoError::Unseal)
        ));
        assert!(!blob.windows(13).any(|w| w == b"ratchet state"));
    }

    #[test]
    fn seal_keys_round_trip_through_base64_and_refuse_wrong_lengths() {
        let key = SealKey::generate();
        let again = SealKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(key.0, again.0);
        assert!(SealKey::from_base64("c2hvcnQ=").is_err());
    }
}
