//! The device side of Ventana's client protocol.
//!
//! - [`link`]: [`RelayLink`], one authenticated WebSocket to the relay that reconnects by
//!   itself, matches responses to requests and streams envelopes as [`LinkEvent`]s.
//! - [`registration`]: asking for a verification code and registering a device.
//! - [`endpoint`]: [`Endpoint`], the end-to-end engine: sessions per peer device, a durable
//!   outbox committed with the ratchet state before anything is sent, inbound envelopes
//!   decrypted and committed with their effects before they are acknowledged. The host
//!   application (a user's device, a business gateway) adds its own effects through
//!   [`Application`]. Template messages are rendered from the relay's public registry
//!   (cached in the store) and checked against their header ([`Endpoint::render_template`]);
//!   a quick-reply tap goes back as a button message ([`Endpoint::tap_button`]).
//!
//! - [`device`]: the application of a person's device ([`device::UserDevice`]).
//!
//! A business gateway is "just another client": it runs one [`Endpoint`] per business number.

pub mod device;
pub mod endpoint;
pub mod link;
pub mod registration;

pub use endpoint::{
    Application, Endpoint, Inbound, InboundMeta, Outgoing, SendError, Sent, Settlement, TapError,
    Tapped, TemplateRenderError,
};
pub use link::{LinkError, LinkEvent, RelayLink};

/// A failure of the device library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("storage: {0}")]
    Store(#[from] ventana_store::StoreError),
    #[error("crypto: {0}")]
    Crypto(#[from] ventana_crypto::CryptoError),
    #[error("relay: {0}")]
    Link(#[from] LinkError),
    #[error("relay refused: {0}")]
    Http(String),
    #[error("this device is not registered here (no identity for {0})")]
    NotRegistered(String),
    /// A submission could not be written to the outbox as JSON, or a stored row read back.
    #[error("outbox row: {0}")]
    Outbox(serde_json::Error),
    /// A message's plaintext could not be written as JSON.
    #[error("payload: {0}")]
    Payload(serde_json::Error),
    #[error("unexpected: {0}")]
    Unexpected(String),
    /// The host application could not take an event now (it is shutting down, say).
    #[error("application: {0}")]
    Application(String),
}
