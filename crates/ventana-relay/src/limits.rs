//! What one client may hold of the relay, and how often it may ask for what costs the
//! platform (an SMS per verification code) or could guess a secret (a registration's code).
//!
//! Counts that must hold across nodes live in the store (devices per number, one-time keys
//! per device, codes and wrong guesses per number); the per-address rates and the
//! connections per device are counted on each node, with `governor`'s keyed limiters.

use governor::clock::DefaultClock;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ventana_core::{DeviceId, PhoneNumber};

/// `[relay]`: the operator's limits on what a client may hold or ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayLimits {
    /// Devices one user number may have registered (a business number's are the operator's).
    pub devices_per_number: u64,
    /// One-time keys a device may keep unclaimed; an upload past it is refused whole.
    pub one_time_keys_per_device: u64,
    /// Verification codes one client address may ask for in an hour (each is an SMS): this
    /// many at once, then one every hour / N.
    pub codes_per_address_per_hour: u32,
    /// Registration attempts (right or wrong codes) one client address may make in an hour,
    /// counted as the codes are.
    pub registrations_per_address_per_hour: u32,
    /// WebSockets one device may hold open on one node.
    pub connections_per_device: usize,
    /// A WebSocket from which nothing (not even a pong) came for this long is closed; the
    /// relay pings every third of it, so only a dead or stuck client meets it.
    pub idle_timeout_secs: u64,
    /// Whether loopback clients are exempt from the per-address rates (the node's
    /// `[server] loopback_exempt`, set by the node).
    #[serde(skip)]
    pub loopback_exempt: bool,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            devices_per_number: 8,
            one_time_keys_per_device: 1_000,
            codes_per_address_per_hour: 10,
            registrations_per_address_per_hour: 30,
            connections_per_device: 4,
            idle_timeout_secs: 90,
            loopback_exempt: true,
        }
    }
}

impl RelayLimits {
    /// Refuses settings that would leave the relay unusable.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("devices_per_number", self.devices_per_number),
            ("one_time_keys_per_device", self.one_time_keys_per_device),
            (
                "codes_per_address_per_hour",
                u64::from(self.codes_per_address_per_hour),
            ),
            (
                "registrations_per_address_per_hour",
                u64::from(self.registrations_per_address_per_hour),
            ),
            ("connections_per_device", self.connections_per_device as u64),
            ("idle_timeout_secs", self.idle_timeout_secs),
        ];
        match positive.iter().find(|(_, value)| *value == 0) {
            Some((name, _)) => Err(format!("{name} must be at least 1")),
            None => Ok(()),
        }
    }
}

/// What counts as one client: its IPv4 address, or its IPv6 /64 (one host's usual
/// allocation, which it could otherwise rotate through to pass any per-address count).
pub fn client_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) if !v6.is_loopback() => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        other => other,
    }
}

/// So many events per hour per client address: that many at once, then one each hour / N
/// as the allowance refills (GCRA), so a steady client gets N an hour and a first hour may
/// see up to 2N - 1.
pub(crate) struct PerAddress {
    limiter: RateLimiter<IpAddr, HashMapStateStore<IpAddr>, DefaultClock>,
    exempt_loopback: bool,
    /// When addresses whose allowance is full again were last forgotten.
    last_swept: Mutex<Instant>,
}

/// How often addresses whose allowance is full again are forgotten (a sweep reads them all).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl PerAddress {
    pub(crate) fn per_hour(count: u32, exempt_loopback: bool) -> Self {
        let count = NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::hashmap(Quota::per_hour(count)),
            exempt_loopback,
            last_swept: Mutex::new(Instant::now()),
        }
    }

    /// Takes one event of `address`'s allowance (an IPv6 address's /64's); false if none
    /// is left.
    pub(crate) fn allow(&self, address: IpAddr) -> bool {
        let address = client_key(address);
        if self.exempt_loopback && address.is_loopback() {
            return true;
        }
        {
            let mut last = self.last_swept.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= SWEEP_EVERY {
                *last = Instant::now();
                self.limiter.retain_recent();
            }
        }
        self.limiter.check_key(&address).is_ok()
    }
}

/// The WebSockets open per device on this node.
#[derive(Default)]
pub(crate) struct DeviceConnections {
    open: Mutex<HashMap<(PhoneNumber, DeviceId), usize>>,
}

impl DeviceConnections {
    /// A place for one more connection of the device, unless it has `max` open.
    pub(crate) fn open(
        self: &Arc<Self>,
        account: &PhoneNumber,
        device: DeviceId,
        max: usize,
    ) -> Option<DeviceConnection> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry((account.clone(), device)).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(DeviceConnection {
            registry: Arc::clone(self),
            key: (account.clone(), device),
        })
    }
}

/// One open connection of a device; dropping it frees the place.
pub(crate) struct DeviceConnection {
    registry: Arc<DeviceConnections>,
    key: (PhoneNumber, DeviceId),
}

impl Drop for DeviceConnection {
    fn drop(&mut self) {
        let mut open = self.registry.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_address_gets_its_hourly_allowance_and_loopback_may_be_exempt() {
        let limit = PerAddress::per_hour(3, true);
        let far: IpAddr = [192, 0, 2, 7].into();
        assert!((0..3).all(|_| limit.allow(far)));
        assert!(!limit.allow(far));
        assert!(limit.allow([192, 0, 2, 8].into()));
        assert!((0..10).all(|_| limit.allow([127, 0, 0, 1].into())));
        let strict = PerAddress::per_hour(1, false);
        assert!(strict.allow([127, 0, 0, 1].into()));
        assert!(!strict.allow([127, 0, 0, 1].into()));
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let loopback: IpAddr = "::1".parse().unwrap();
        assert!(client_key(loopback).is_loopback());
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), IpAddr::from([192, 0, 2, 1]));
    }

    #[test]
    fn a_device_holds_at_most_its_connections_and_a_closed_one_frees_its_place() {
        let registry = Arc::new(DeviceConnections::default());
        let me: PhoneNumber = "34600000001".parse().unwrap();
        let first = registry.open(&me, DeviceId(1), 2).unwrap();
        let _second = registry.open(&me, DeviceId(1), 2).unwrap();
        assert!(registry.open(&me, DeviceId(1), 2).is_none());
        assert!(registry.open(&me, DeviceId(2), 2).is_some());
        drop(first);
        assert!(registry.open(&me, DeviceId(1), 2).is_some());
    }
}
