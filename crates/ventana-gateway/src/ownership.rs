//! Which node receives for each hosted number. Every node can send for every number (over a
//! send-only connection to the relay); exactly one at a time receives its envelopes, tops up
//! its one-time keys and retries its outbox, under a lease in the shared store that it renews.
//! A node that dies stops renewing; after `LEASE_SECS` another node takes the number over,
//! and the relay hands it everything that was not acknowledged. The same loop picks up numbers
//! added through another node: at once when the store signals them (PostgreSQL's `NOTIFY`),
//! within `RENEW_EVERY` otherwise. (A request for a number not hosted yet hosts it on the spot;
//! see `api`.)

use crate::{Gateway, read};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use ventana_client::Endpoint;
use ventana_core::UnixTime;

/// How long a lease lasts without renewal.
const LEASE_SECS: i64 = 15;
/// How often leases are renewed (and free ones looked for).
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Takes the number if it is free (or already ours) and starts receiving; otherwise makes
/// sure this node only sends for it.
pub(crate) async fn claim(gateway: &Gateway, endpoint: &Endpoint) {
    let held = gateway
        .store
        .acquire_endpoint(endpoint.owner(), &gateway.node, UnixTime::now(), LEASE_SECS)
        .await;
    match held {
        Ok(true) if !endpoint.link().is_receiving() => {
            tracing::info!(number = %endpoint.owner(), node = %gateway.node, "receiving for this number");
            if let Err(e) = endpoint.take_over().await {
                tracing::error!(number = %endpoint.owner(), error = %e, "could not take the number over");
            }
        }
        Ok(true) => {}
        Ok(false) if endpoint.link().is_receiving() => {
            tracing::warn!(number = %endpoint.owner(), "another node receives for this number now");
            endpoint.hand_over();
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(number = %endpoint.owner(), error = %e, "lease not renewed"),
    }
}

/// Renews and takes leases until shutdown, then gives up the ones held so that another node
/// can take over at once.
pub(crate) async fn keep(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut added = gateway.store.number_changes();
    loop {
        // Numbers added through another node are hosted here too.
        match gateway.store.phone_numbers().await {
            Ok(records) => {
                for record in records {
                    if gateway.hosted(&record.id).is_none()
                        && let Err(e) = gateway.host(record).await
                    {
                        tracing::warn!(error = %e, "could not host a number added elsewhere");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list the hosted numbers"),
        }
        let endpoints: Vec<_> = read(&gateway.numbers)
            .values()
            .map(|h| Arc::clone(&h.endpoint))
            .collect();
        for endpoint in &endpoints {
            claim(&gateway, endpoint).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            signal = number_added(&mut added) => {
                if signal.is_err() {
                    // The store stopped signalling: the periodic look is all there is.
                    added = None;
                }
            }
            _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => break,
        }
    }
    let endpoints: Vec<_> = read(&gateway.numbers)
        .values()
        .map(|h| Arc::clone(&h.endpoint))
        .collect();
    for endpoint in endpoints {
        if endpoint.link().is_receiving() {
            endpoint.hand_over();
            let _ = gateway
                .store
                .release_endpoint(endpoint.owner(), &gateway.node)
                .await;
        }
    }
}

/// Waits for the store's next "a number was added" signal; never, if it gives none. Signals
/// missed while lagging mean the same "look again", so a lag counts as one.
async fn number_added(
    added: &mut Option<broadcast::Receiver<()>>,
) -> Result<(), broadcast::error::RecvError> {
    let Some(receiver) = added else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
        Err(closed) => Err(closed),
    }
}
