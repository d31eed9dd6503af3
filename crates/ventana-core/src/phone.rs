//! E.164 phone numbers, the address of every account (users and business numbers alike).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A phone number in E.164 form, held as its digits without `+` (the Cloud API's `wa_id`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneNumberError {
    #[error(
        "a phone number may contain only digits, spaces, dashes, dots, parentheses and a leading '+'"
    )]
    InvalidCharacter,
    #[error("a phone number has 8 to 15 digits including the country code")]
    Length,
    #[error("a phone number's country code cannot start with 0")]
    LeadingZero,
}

impl PhoneNumber {
    /// The digits, as the Cloud API's `wa_id`.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// ISO 3166 alpha-2 country of the number, from its calling code (`ZZ` if unknown).
    pub fn country(&self) -> &'static str {
        // Longest prefix wins; three-digit codes are tried first.
        for len in [3, 2, 1] {
            if let Some(prefix) = self.0.get(..len)
                && let Some((_, cc)) = CALLING_CODES.iter().find(|(code, _)| *code == prefix)
            {
                return cc;
            }
        }
        "ZZ"
    }
}

/// Calling codes of the countries most numbers come from; `+1` and `+7` are shared plans and
/// map to their largest member.
const CALLING_CODES: &[(&str, &str)] = &[
    ("1", "US"),
    ("7", "RU"),
    ("20", "EG"),
    ("27", "ZA"),
    ("30", "GR"),
    ("31", "NL"),
    ("32", "BE"),
    ("33", "FR"),
    ("34", "ES"),
    ("36", "HU"),
    ("39", "IT"),
    ("40", "RO"),
    ("41", "CH"),
    ("43", "AT"),
    ("44", "GB"),
    ("45", "DK"),
    ("46", "SE"),
    ("47", "NO"),
    ("48", "PL"),
    ("49", "DE"),
    ("51", "PE"),
    ("52", "MX"),
    ("53", "CU"),
    ("54", "AR"),
    ("55", "BR"),
    ("56", "CL"),
    ("57", "CO"),
    ("58", "VE"),
    ("60", "MY"),
    ("61", "AU"),
    ("62", "ID"),
    ("63", "PH"),
    ("64", "NZ"),
    ("65", "SG"),
    ("66", "TH"),
    ("81", "JP"),
    ("82", "KR"),
    ("84", "VN"),
    ("86", "CN"),
    ("90", "TR"),
    ("91", "IN"),
    ("92", "PK"),
    ("93", "AF"),
    ("94", "LK"),
    ("95", "MM"),
    ("98", "IR"),
    ("212", "MA"),
    ("213", "DZ"),
    ("216", "TN"),
    ("234", "NG"),
    ("254", "KE"),
    ("351", "PT"),
    ("353", "IE"),
    ("358", "FI"),
    ("380", "UA"),
    ("420", "CZ"),
    ("502", "GT"),
    ("503", "SV"),
    ("506", "CR"),
    ("507", "PA"),
    ("591", "BO"),
    ("593", "EC"),
    ("595", "PY"),
    ("598", "UY"),
    ("852", "HK"),
    ("880", "BD"),
    ("886", "TW"),
    ("966", "SA"),
    ("971", "AE"),
    ("972", "IL"),
];

impl FromStr for PhoneNumber {
    type Err = PhoneNumberError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let trimmed = input.trim();
        let rest = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let mut digits = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(PhoneNumberError::InvalidCharacter),
            }
        }
        if !(8..=15).contains(&digits.len()) {
            return Err(PhoneNumberError::Length);
        }
        if digits.starts_with('0') {
            return Err(PhoneNumberError::LeadingZero);
        }
        Ok(Self(digits))
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = PhoneNumberError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<PhoneNumber> for String {
    fn from(value: PhoneNumber) -> Self {
        value.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_numbers_parse_to_their_digits() {
        let n: PhoneNumber = "+1 (650) 555-1234".parse().unwrap();
        assert_eq!(n.digits(), "16505551234");
        assert_eq!(n.country(), "US");
        assert_eq!(
            "34600111222".parse::<PhoneNumber>().unwrap().country(),
            "ES"
        );
        assert_eq!(
            "351912345678".parse::<PhoneNumber>().unwrap().country(),
            "PT"
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(
            "12ab5678".parse::<PhoneNumber>(),
            Err(PhoneNumberError::InvalidCharacter)
        );
        assert_eq!("+123".parse::<PhoneNumber>(), Err(PhoneNumberError::Length));
        assert_eq!(
            "0034600111222".parse::<PhoneNumber>(),
            Err(PhoneNumberError::LeadingZero)
        );
    }
}
