//! Where a message stands in an endpoint's history, and the one order statuses move in.

/// The status of a message in an endpoint's history. Outbound: `Accepted` (committed, not yet
/// answered by the relay) → `Sent` → `Delivered` → `Read`, or `Failed`; inbound: `Received`
/// → `Read`. A message only ever moves to a higher [`rank`](Self::rank).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageStatus {
    Received,
    Accepted,
    Sent,
    Failed,
    Delivered,
    Read,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 6] = [
        Self::Received,
        Self::Accepted,
        Self::Sent,
        Self::Failed,
        Self::Delivered,
        Self::Read,
    ];

    /// The stored (and shown) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Accepted => "accepted",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The order statuses move in: a later report (a receipt) never moves a message back
    /// (a `delivered` after `read` changes nothing; `failed` gives way to a delivery a
    /// device reported after all).
    pub fn rank(self) -> u8 {
        match self {
            Self::Received | Self::Accepted => 0,
            Self::Sent => 1,
            Self::Failed => 2,
            Self::Delivered => 3,
            Self::Read => 4,
        }
    }
}

impl std::fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_from_its_name() {
        for status in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(MessageStatus::parse("played"), None);
    }

    #[test]
    fn statuses_move_forward_in_the_cloud_api_order() {
        use MessageStatus::*;
        assert!(Accepted.rank() < Sent.rank());
        assert!(Sent.rank() < Delivered.rank() && Delivered.rank() < Read.rank());
        assert!(Failed.rank() < Delivered.rank());
        assert_eq!(Received.rank(), Accepted.rank());
    }
}
