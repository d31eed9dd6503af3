//! Business-scoped user ids (the Cloud API's `user_id`, "BSUID"): `CC.` and opaque digits,
//! stable for one user and business, different across businesses, not revealing the number.

use crate::{PhoneNumber, WabaId};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Derives the id as HMAC-SHA256(platform secret, waba ‖ 0 ‖ wa_id), shown as 19 decimal digits.
pub fn business_scoped_user_id(secret: &[u8], waba: &WabaId, user: &PhoneNumber) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(waba.as_str().as_bytes());
    mac.update(&[0]);
    mac.update(user.digits().as_bytes());
    let tag = mac.finalize().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&tag[..8]);
    // 19 digits, leading digit never 0, from 64 bits of the tag.
    let n = u64::from_be_bytes(first) % 9_000_000_000_000_000_000 + 1_000_000_000_000_000_000;
    format!("{}.{}", user.country(), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_business_and_different_across_businesses() {
        let user: PhoneNumber = "16505551234".parse().unwrap();
        let a: WabaId = "111".parse().unwrap();
        let b: WabaId = "222".parse().unwrap();
        let id_a = business_scoped_user_id(b"secret", &a, &user);
        assert_eq!(id_a, business_scoped_user_id(b"secret", &a, &user));
        assert_ne!(id_a, business_scoped_user_id(b"secret", &b, &user));
        assert!(id_a.starts_with("US."));
        assert!(!id_a.contains("6505551234"));
        assert_eq!(id_a.len(), 3 + 19);
    }
}
