//! Wake-ups through PostgreSQL, so that every node sharing the database sees every one.
//!
//! The relay store publishes with `pg_notify('<schema>_wakeups', '<account>:<device>:<reason>')`
//! inside the transaction that calls for the wake-up: PostgreSQL delivers a notification only
//! when (and if) that transaction commits, which is exactly the promise of
//! [`RelayStore::wakeups`](crate::RelayStore::wakeups). Each store runs one [`Listener`]: a
//! task holding a dedicated connection (outside the pool) that `LISTEN`s on the channel and
//! forwards each notification into a broadcast channel. Its own node's wake-ups come back the
//! same way, so a subscriber sees them shortly after the commit, not before `accept` returns.
//!
//! The gateway's store uses the same [`Listener`] for its own channel,
//! `pg_notify('<schema>_numbers', '')` when a business number is added, so every node hosts
//! it at once (see [`GatewayStore::number_changes`](crate::GatewayStore::number_changes)).

use super::db::describe;
use crate::relay::{WakeReason, Wakeup};
use crate::{StoreError, StoreResult};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};
use ventana_core::{DeviceId, PhoneNumber};

/// Wake-ups a slow subscriber may fall behind by before it is told it lagged.
const WAKEUP_BUFFER: usize = 4096;
/// Waits between reconnection attempts: doubling from the first to the last.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const LAST_BACKOFF: Duration = Duration::from_secs(10);
/// A connection that lasted this long counts as healthy: the next drop starts the backoff over.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// The channel a schema's wake-ups travel on. The schema name was checked to be a plain
/// identifier, and short enough for the suffix.
pub(crate) fn channel(schema: &str) -> String {
    format!("{schema}_wakeups")
}

pub(crate) fn payload(w: &Wakeup) -> String {
    format!(
        "{}:{}:{}",
        w.account.digits(),
        w.device.0,
        w.reason.as_str()
    )
}

fn parse(payload: &str) -> Option<Wakeup> {
    let mut parts = payload.splitn(3, ':');
    let account: PhoneNumber = parts.next()?.parse().ok()?;
    let device = DeviceId(parts.next()?.parse().ok()?);
    let reason = WakeReason::parse(parts.next()?)?;
    Some(Wakeup {
        account,
        device,
        reason,
    })
}

/// The channel a gateway schema's "a number was added" signals travel on.
pub(crate) fn numbers_channel(schema: &str) -> String {
    format!("{schema}_numbers")
}

/// The payload of a notification, as what subscribers receive (`None`: unreadable, skipped).
pub(crate) type Parse<T> = fn(&str) -> Option<T>;

/// The "a number was added" signal carries nothing: it means "look again".
pub(crate) fn signal(_payload: &str) -> Option<()> {
    Some(())
}

/// The listening task and the channel it feeds; dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Listener<T = Wakeup> {
    sender: broadcast::Sender<T>,
    task: JoinHandle<()>,
}

impl Listener<Wakeup> {
    /// Listens for the relay's wake-ups on `channel`.
    pub(crate) async fn start(
        config: tokio_postgres::Config,
        channel: String,
    ) -> StoreResult<Self> {
        Self::start_with(config, channel, parse).await
    }
}

impl<T: Clone + Send + 'static> Listener<T> {
    /// Starts listening and returns once the first `LISTEN` is in place, so nothing committed
    /// after this returns is missed (short of a dropped connection, see [`run`]). Each
    /// notification's payload is read with `parse`.
    pub(crate) async fn start_with(
        config: tokio_postgres::Config,
        channel: String,
        parse: Parse<T>,
    ) -> StoreResult<Self> {
        let sender = broadcast::channel(WAKEUP_BUFFER).0;
        let (ready, listening) = oneshot::channel();
        let task = tokio::spawn(run(config, channel, sender.clone(), parse, ready));
        match listening.await {
            Ok(Ok(())) => Ok(Self { sender, task }),
            Ok(Err(e)) => {
                task.abort();
                Err(e)
            }
            Err(_) => Err(StoreError::Backend(
                "the wake-up listener stopped before it was listening".into(),
            )),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<T> {
        self.sender.subscribe()
    }
}

impl<T> Drop for Listener<T> {
    fn drop(&mut self) {
        // Dropping the task's client closes its connection.
        self.task.abort();
    }
}

/// Listens until the store is dropped, reconnecting with backoff whenever the connection
/// fails. The first attempt's outcome goes to `ready`; later failures are only logged.
///
/// Notifications sent while no connection listens are lost, and a reconnection sends nothing
/// to make up for them: a subscriber cannot tell. That is covered by the relay, whose
/// connections re-read their queues periodically whether woken or not; a missed wake-up only
/// delays delivery until that re-read.
async fn run<T>(
    config: tokio_postgres::Config,
    channel: String,
    sender: broadcast::Sender<T>,
    parse: Parse<T>,
    ready: oneshot::Sender<StoreResult<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        let outcome = listen(&config, &channel, &sender, parse, &mut ready).await;
        if let Some(ready) = ready.take() {
            // The first connection failed: `start` reports it, and the store is not built.
            let _ = ready.send(Err(StoreError::Backend(format!(
                "cannot listen for wake-ups: {}",
                outcome
                    .err()
                    .unwrap_or_else(|| "the connection closed".into())
            ))));
            return;
        }
        match outcome {
            Ok(()) => tracing::warn!(channel, "the wake-up connection closed; reconnecting"),
            Err(error) => tracing::warn!(channel, error, "the wake-up connection failed"),
        }
        if started.elapsed() >= HEALTHY_AFTER {
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LAST_BACKOFF);
    }
}

/// One connection's life: connect, `LISTEN`, forward notifications until it ends. Returns
/// `Ok` if the server closed it, `Err` with a description if it failed.
async fn listen<T>(
    config: &tokio_postgres::Config,
    channel: &str,
    sender: &broadcast::Sender<T>,
    parse: Parse<T>,
    ready: &mut Option<oneshot::Sender<StoreResult<()>>>,
) -> Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| describe(&e))?;
    // The connection does its I/O only when polled; polling it as a stream also yields what
    // the server sends unasked, notifications among them.
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // `channel` was built from a checked schema name: a plain identifier.
    let statement = format!("LISTEN {channel}");
    let subscribe = client.batch_execute(&statement);
    tokio::pin!(subscribe);
    let mut subscribed = false;
    loop {
        tokio::select! {
            done = &mut subscribe, if !subscribed => {
                done.map_err(|e| describe(&e))?;
                subscribed = true;
                tracing::debug!(channel, "listening for wake-ups");
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == channel => {
                    match parse(n.payload()) {
                        // No subscriber is fine: nobody is connected to this node.
                        Some(wakeup) => { let _ = sender.send(wakeup); }
                        None => tracing::warn!(payload = n.payload(), "an unreadable wake-up"),
                    }
                }
                Some(Ok(AsyncMessage::Notice(notice))) => {
                    tracing::debug!(%notice, "a notice on the wake-up connection");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(describe(&e)),
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_wakeup_survives_its_payload() {
        for reason in [
            WakeReason::Envelopes,
            WakeReason::KeysClaimed,
            WakeReason::Rescan,
        ] {
            let wakeup = Wakeup {
                account: "34600111222".parse().unwrap(),
                device: DeviceId(7),
                reason,
            };
            assert_eq!(parse(&payload(&wakeup)), Some(wakeup));
        }
        for bad in [
            "",
            "34600111222",
            "34600111222:x:envelopes",
            "34600111222:1:nope",
            "abc:1:keys",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
