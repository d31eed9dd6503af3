//! The bytes a webhook carries and their signature.
//!
//! Meta's rule is that the HMAC covers the payload with non-ASCII characters escaped, and
//! whatsapp-api-js verifies exactly that: it re-escapes the body it received before checking
//! the signature, so a raw UTF-8 "olá" fails there. Sending ASCII-only JSON makes the escaped
//! and the raw body the same bytes, and every SDK agrees on the signature.

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use serde_json::ser::Formatter;
use sha2::Sha256;
use std::io;

/// Compact JSON with every non-ASCII character written as `\uXXXX` (lowercase hex, UTF-16
/// surrogate pairs above U+FFFF), as JavaScript's and Meta's encoders do.
pub(crate) fn ascii_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, AsciiEscaping);
    // A `Value` has only string keys, and writing into a `Vec` cannot fail.
    value
        .serialize(&mut serializer)
        .unwrap_or_else(|_| unreachable!("serialising a Value into a Vec"));
    out
}

/// serde_json's compact formatter, except for string contents. serde_json has already
/// escaped quotes, backslashes and control characters before a fragment gets here.
struct AsciiEscaping;

impl Formatter for AsciiEscaping {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut plain_from = 0;
        for (at, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[plain_from..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            plain_from = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[plain_from..])
    }
}

/// The `X-Hub-Signature-256` value of `body`: `sha256=` and the HMAC-SHA256 in lowercase hex.
pub(crate) fn signature(app_secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(app_secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", lower_hex(&mac.finalize().into_bytes()))
}

/// Ventana's `X-Ventana-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
/// under the app secret. Unlike `X-Hub-Signature-256` it covers the time it was made, so a
/// receiver that refuses old timestamps (five minutes, say) cannot be fed a recorded event
/// again. A new one is made for every attempt.
pub(crate) fn timestamped_signature(app_secret: &[u8], at: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(app_secret).unwrap_or_else(|_| unreachable!());
    mac.update(at.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={at},v1={}", lower_hex(&mac.finalize().into_bytes()))
}

/// Lowercase hexadecimal, two digits per byte.
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|byte| {
            [
                DIGITS[usize::from(byte >> 4)],
                DIGITS[usize::from(byte & 0x0f)],
            ]
        })
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn non_ascii_is_escaped_with_lowercase_hex_and_surrogate_pairs() {
        let bytes = ascii_json(&json!({"body": "olá 😀"}));
        assert_eq!(bytes, br#"{"body":"ol\u00e1 \ud83d\ude00"}"#);
    }

    #[test]
    fn keys_and_serde_json_escapes_are_kept_and_the_output_is_compact_ascii() {
        let value = json!({"ñ": ["\"quoted\"\n\\", 1, null, true, {"x": "€"}]});
        let bytes = ascii_json(&value);
        assert_eq!(
            bytes,
            br#"{"\u00f1":["\"quoted\"\n\\",1,null,true,{"x":"\u20ac"}]}"#
        );
    }

    #[test]
    fn the_escaped_json_parses_back_to_the_same_value() {
        let value = json!({"name": "Zoë 中文 𝄞", "emoji": "👍🏽", "n": 1.5, "list": ["ok", "ç"]});
        let bytes = ascii_json(&value);
        assert!(bytes.is_ascii());
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), value);
    }

    #[test]
    fn the_signature_is_sha256_equals_lowercase_hex_hmac() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
