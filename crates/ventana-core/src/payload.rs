//! What travels inside the ciphertext. The envelope's clear header (id, sender, recipient,
//! kind) is copied inside too, because Olm has no associated data: the receiver refuses a
//! message whose inner header differs from the envelope the relay handed it.

use crate::rules::EnvelopeKind;
use crate::template::{BoundTemplate, TemplateHeader};
use crate::{MessageId, PhoneNumber};
use serde::{Deserialize, Serialize};

/// The longest text body the Cloud API accepts, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub id: MessageId,
    pub from: PhoneNumber,
    pub to: PhoneNumber,
    pub kind: EnvelopeKind,
    /// For kind `template`: must equal the envelope's clear template header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateHeader>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text {
        body: String,
        #[serde(default)]
        preview_url: bool,
    },
    /// A template's parameters; the text is the approved version named in the header.
    Template { values: BoundTemplate },
    /// A tap on a template's quick-reply button (the Cloud API's inbound `button` message):
    /// the button's label and payload; `reply_to` names the template message.
    Button { text: String, payload: String },
}

/// The plaintext of one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub v: u8,
    pub header: Header,
    /// The sender's profile name, for users; businesses show their verified name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    pub content: Content,
    /// The message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is not valid JSON of version 1: {0}")]
    Malformed(String),
    #[error("the header inside the ciphertext does not match the envelope")]
    HeaderMismatch,
}

impl Payload {
    /// The plaintext to encrypt. An error (which plain structs of strings should never
    /// give) is returned rather than encrypting an empty message.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses a decrypted plaintext and checks it against the clear envelope header.
    pub fn open(plaintext: &[u8], expected: &Header) -> Result<Self, PayloadError> {
        let payload: Payload = serde_json::from_slice(plaintext)
            .map_err(|e| PayloadError::Malformed(e.to_string()))?;
        if payload.v != 1 {
            return Err(PayloadError::Malformed(format!("version {}", payload.v)));
        }
        if &payload.header != expected {
            return Err(PayloadError::HeaderMismatch);
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            id: MessageId::generate(),
            from: "34600111222".parse().unwrap(),
            to: "15550001111".parse().unwrap(),
            kind: EnvelopeKind::Message,
            template: None,
        }
    }

    #[test]
    fn a_payload_opens_only_under_its_own_header() {
        let h = header();
        let p = Payload {
            v: 1,
            header: h.clone(),
            profile_name: Some("Ana".into()),
            content: Content::Text {
                body: "hola".into(),
                preview_url: false,
            },
            reply_to: None,
        };
        assert_eq!(Payload::open(&p.to_bytes().unwrap(), &h).unwrap(), p);
        let other = Header {
            to: "15550002222".parse().unwrap(),
            ..h
        };
        assert_eq!(
            Payload::open(&p.to_bytes().unwrap(), &other),
            Err(PayloadError::HeaderMismatch)
        );
    }
}
