//! Proving control of a phone number before a device may register it.

use async_trait::async_trait;
use ventana_core::PhoneNumber;

#[derive(Debug, thiserror::Error)]
#[error("could not deliver the verification code: {0}")]
pub struct DeliveryError(pub String);

/// Delivers a one-time code to a phone number (by SMS, a voice call, …). The relay creates,
/// stores and checks the code; a verifier only carries it to the number's owner.
#[async_trait]
pub trait NumberVerifier: Send + Sync {
    async fn deliver(&self, phone: &PhoneNumber, code: &str) -> Result<(), DeliveryError>;
}

/// For development and sandboxes: the code is not sent anywhere; the operator reads it through
/// the admin API (`ventana admin verification-code`) and hands it over.
#[derive(Debug, Default)]
pub struct DevVerifier;

#[async_trait]
impl NumberVerifier for DevVerifier {
    async fn deliver(&self, phone: &PhoneNumber, _code: &str) -> Result<(), DeliveryError> {
        tracing::info!(%phone, "verification code issued; the operator can read it with `ventana admin verification-code`");
        Ok(())
    }
}
