//! Wakes the live connections of a device when envelopes are queued for it, or when its
//! one-time keys were claimed. Wake-ups come from the store as transactions commit, from
//! whichever node committed them. A connection re-reads the store when woken (and every 30 s
//! regardless), so a lost or merged wake-up costs nothing but a little latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, broadcast};
use ventana_core::{DeviceId, PhoneNumber};
use ventana_store::relay::{WakeReason, Wakeup};

#[derive(Default)]
pub(crate) struct DeviceSignal {
    pub(crate) notify: Notify,
    pub(crate) keys_claimed: AtomicBool,
    /// Read the queue from the start again: envelopes held back (a blocked sender) sit
    /// behind the connection's cursor once they are released.
    pub(crate) rescan: AtomicBool,
}

/// A device's signal and how many of its connections are open.
type Registry = HashMap<(PhoneNumber, DeviceId), (Arc<DeviceSignal>, usize)>;

#[derive(Default)]
pub(crate) struct Signals {
    devices: Mutex<Registry>,
}

impl Signals {
    /// Registers a connection of a device; release it with [`Signals::release`].
    pub(crate) fn acquire(&self, account: &PhoneNumber, device: DeviceId) -> Arc<DeviceSignal> {
        let mut map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry((account.clone(), device))
            .or_insert_with(|| (Arc::new(DeviceSignal::default()), 0));
        entry.1 += 1;
        Arc::clone(&entry.0)
    }

    pub(crate) fn release(&self, account: &PhoneNumber, device: DeviceId) {
        let mut map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let key = (account.clone(), device);
        if let Some(entry) = map.get_mut(&key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&key);
            }
        }
    }

    pub(crate) fn wake(&self, account: &PhoneNumber, device: DeviceId) {
        if let Some(signal) = self.get(account, device) {
            signal.notify.notify_waiters();
        }
    }

    pub(crate) fn rescan(&self, account: &PhoneNumber, device: DeviceId) {
        if let Some(signal) = self.get(account, device) {
            signal.rescan.store(true, Ordering::Release);
            signal.notify.notify_waiters();
        }
    }

    /// Every device with a connection here: rescan (after missing wake-ups).
    pub(crate) fn rescan_all(&self) {
        let map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        for (signal, _) in map.values() {
            signal.rescan.store(true, Ordering::Release);
            signal.notify.notify_waiters();
        }
    }

    pub(crate) fn keys_claimed(&self, account: &PhoneNumber, device: DeviceId) {
        if let Some(signal) = self.get(account, device) {
            signal.keys_claimed.store(true, Ordering::Release);
            signal.notify.notify_waiters();
        }
    }

    fn get(&self, account: &PhoneNumber, device: DeviceId) -> Option<Arc<DeviceSignal>> {
        let map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(account.clone(), device))
            .map(|e| Arc::clone(&e.0))
    }
}

/// Applies the store's wake-ups to this node's connections until shutdown.
pub(crate) async fn follow_wakeups(relay: Arc<crate::Relay>) {
    let mut wakeups = relay.store.wakeups();
    let mut shutdown = relay.shutdown.clone();
    loop {
        let wakeup = tokio::select! {
            w = wakeups.recv() => w,
            _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => return,
        };
        match wakeup {
            Ok(Wakeup {
                account,
                device,
                reason,
            }) => match reason {
                WakeReason::Envelopes => relay.signals.wake(&account, device),
                WakeReason::KeysClaimed => relay.signals.keys_claimed(&account, device),
                WakeReason::Rescan => relay.signals.rescan(&account, device),
            },
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "wake-ups were missed; every connection rescans");
                relay.signals.rescan_all();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
