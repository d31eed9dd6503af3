//! Identifiers. Each is parsed once at the edge; holding one means it is well formed.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{0} must be 1 to 32 digits")]
    NotNumeric(&'static str),
    #[error(
        "a message id looks like `wamid.` followed by 16 to 128 letters, digits, '-', '_' or '='"
    )]
    MessageId,
    #[error("an idempotency key is 1 to 255 printable ASCII characters (space to '~')")]
    IdempotencyKey,
}

fn digits_id(s: &str, what: &'static str) -> Result<(), IdError> {
    if (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(IdError::NotNumeric(what))
    }
}

/// A string type checked once, when it is made: `$check` (a `fn(&str) -> Result<(), $error>`)
/// runs on parsing, on `TryFrom<String>` and on deserialising, so holding one means it passed.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $error:ty, $check:expr) => {
        $(#[$doc])*
        #[derive(
            Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = $error;
            fn from_str(s: &str) -> Result<Self, $error> {
                let check: fn(&str) -> Result<(), $error> = $check;
                check(s).map(|()| Self(s.to_owned()))
            }
        }
        impl TryFrom<String> for $name {
            type Error = $error;
            fn try_from(s: String) -> Result<Self, $error> {
                s.parse()
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use checked_string;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        checked_string!($(#[$doc])* $name, IdError, |s| digits_id(s, $what));
    };
}

numeric_id!(
    /// A WhatsApp Business Account id: the business, as the Cloud API names it.
    WabaId,
    "a WABA id"
);
numeric_id!(
    /// A phone number id: one business phone number in the Cloud API's paths.
    PhoneNumberId,
    "a phone number id"
);

checked_string!(
    /// A business's name for one request it may send more than once (Ventana's
    /// `Idempotency-Key`): 1 to 255 printable ASCII characters, space included.
    IdempotencyKey,
    IdError,
    |s| {
        if (1..=255).contains(&s.len()) && s.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            Ok(())
        } else {
            Err(IdError::IdempotencyKey)
        }
    }
);

/// One device of an account (a user's phone, a business number's gateway). Assigned by the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A message id in the Cloud API's `wamid.` form, chosen by the sender and unique per sender.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

impl MessageId {
    /// A fresh id: `wamid.` and 128 random bits, base64url.
    pub fn generate() -> Self {
        use base64::Engine as _;
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self(format!(
            "wamid.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MessageId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let rest = s.strip_prefix("wamid.").ok_or(IdError::MessageId)?;
        let ok = (16..=128).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::MessageId)
        }
    }
}
impl TryFrom<String> for MessageId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}
impl From<MessageId> for String {
    fn from(v: MessageId) -> String {
        v.0
    }
}
impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_message_ids_parse_back() {
        let id = MessageId::generate();
        assert_eq!(id.as_str().parse::<MessageId>().unwrap(), id);
        assert!("wamid.short".parse::<MessageId>().is_err());
        assert!("nope.AAAAAAAAAAAAAAAAAAAA".parse::<MessageId>().is_err());
    }

    #[test]
    fn numeric_ids_refuse_letters() {
        assert!("106540352242922".parse::<PhoneNumberId>().is_ok());
        assert!("10654x".parse::<WabaId>().is_err());
        assert!("".parse::<WabaId>().is_err());
    }

    #[test]
    fn an_idempotency_key_is_1_to_255_printable_ascii_characters() {
        for good in ["a", "order 42/retry", "~!", &"k".repeat(255)] {
            assert!(good.parse::<IdempotencyKey>().is_ok(), "{good}");
        }
        for bad in [
            "",
            &"k".repeat(256),
            "clé",
            "tab\there",
            "new\nline",
            "\u{7f}",
        ] {
            assert!(bad.parse::<IdempotencyKey>().is_err(), "{bad:?}");
        }
    }
}
