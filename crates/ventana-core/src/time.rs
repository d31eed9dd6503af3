//! Time as the rules see it: Unix seconds, shifted per business by a sandbox test clock.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// The wall clock. The only place Ventana reads it; everything else is handed a time.
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Self(secs)
    }

    pub fn plus_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// Reads an RFC 3339 timestamp (`2026-12-01T09:30:00Z`, `2026-12-01T10:30:00+01:00`);
    /// fractions of a second are dropped.
    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map(|t| Self(t.unix_timestamp()))
            .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}"))
    }

    /// The time as RFC 3339 in UTC (`2026-12-01T09:30:00Z`).
    pub fn to_rfc3339(self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| self.0.to_string())
    }
}

/// A business's view of time. Live businesses follow the wall clock; a sandbox business has a
/// test clock an operator can move forward (like Stripe's test clocks), so window expiry can be
/// tried without waiting a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessClock {
    pub sandbox: bool,
    /// How far the test clock is ahead of the wall clock; always 0 for live businesses.
    pub offset_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("only a sandbox business has a test clock that can be advanced")]
    NotSandbox,
    #[error("a test clock only moves forward, by 1 second to 10 years at a time")]
    BadStep,
}

impl BusinessClock {
    pub const LIVE: Self = Self {
        sandbox: false,
        offset_secs: 0,
    };

    pub fn now(&self, wall: UnixTime) -> UnixTime {
        wall.plus_secs(self.offset_secs)
    }

    /// The clock after advancing it by `secs`.
    pub fn advanced(self, secs: i64) -> Result<Self, ClockError> {
        if !self.sandbox {
            return Err(ClockError::NotSandbox);
        }
        if !(1..=10 * 366 * 86_400).contains(&secs) {
            return Err(ClockError::BadStep);
        }
        Ok(Self {
            offset_secs: self.offset_secs + secs,
            ..self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sandbox_clocks_advance() {
        assert_eq!(
            BusinessClock::LIVE.advanced(60),
            Err(ClockError::NotSandbox)
        );
        let sandbox = BusinessClock {
            sandbox: true,
            offset_secs: 0,
        };
        let later = sandbox.advanced(3600).unwrap();
        assert_eq!(later.now(UnixTime(100)), UnixTime(3700));
        assert_eq!(sandbox.advanced(0), Err(ClockError::BadStep));
    }

    #[test]
    fn rfc3339_round_trips_through_unix_seconds() {
        let t = UnixTime::parse_rfc3339("2026-12-01T10:30:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-01T09:30:00Z");
        assert_eq!(UnixTime::parse_rfc3339("2026-12-01T09:30:00.75Z"), Ok(t));
        assert!(UnixTime::parse_rfc3339("tomorrow").is_err());
        assert!(UnixTime::parse_rfc3339("2026-12-01 09:30").is_err());
    }
}
