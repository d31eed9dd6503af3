//! Bearer tokens: 256 random bits shown once, stored as SHA-256 (they are high-entropy, so a
//! fast hash is enough: there is nothing to brute-force).

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A bearer token in clear. No `Debug`; zeroized on drop.
pub struct Token(Zeroizing<String>);

/// What is stored of a token: its SHA-256, hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenHash(pub String);

impl Token {
    /// A new token with a recognisable prefix (e.g. `vat` for access tokens).
    pub fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Self(Zeroizing::new(format!("{prefix}_{body}")))
    }

    pub fn from_presented(text: &str) -> Self {
        Self(Zeroizing::new(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(hex_sha256(self.0.as_bytes()))
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let a = Token::generate("vat");
        let b = Token::generate("vat");
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("vat_"));
        assert_eq!(a.hash(), Token::from_presented(a.expose()).hash());
        assert_eq!(a.hash().0.len(), 64);
    }
}
