//! End-to-end encryption and sealing at rest.
//!
//! - [`seal`]: [`SealKey`] and [`Sealer`], XChaCha20-Poly1305 with associated data binding each
//!   sealed blob to the row it belongs to, so blobs cannot be swapped between rows.
//! - [`olm`]: [`DeviceAccount`] and [`PeerSession`], thin wrappers over vodozemac's Olm that
//!   speak the client protocol's key and ciphertext types and persist only as sealed bytes.
//! - [`token`]: random bearer tokens and their stored hashes.

mod olm;
mod seal;
mod token;

pub use olm::{
    DeviceAccount, PeerSession, TARGET_ONE_TIME_KEYS, pre_key_session_id, verify_device_keys,
};
pub use seal::{SealKey, Sealer};
pub use token::{Token, TokenHash};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("a sealed blob failed to open: wrong key, wrong row, or tampered with")]
    Unseal,
    #[error("a seal key must be 32 bytes in base64 (got {0})")]
    BadSealKey(String),
    #[error("malformed key or message: {0}")]
    Malformed(String),
    #[error("a one-time key's signature does not verify against the device's identity key")]
    BadSignature,
    #[error("could not create a session: {0}")]
    Session(String),
    #[error("could not decrypt: {0}")]
    Decrypt(String),
    /// An account or session could not be pickled to be sealed.
    #[error("could not pickle: {0}")]
    Pickle(serde_json::Error),
}
