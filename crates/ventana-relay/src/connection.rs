//! One device's WebSocket: queued envelopes on connect, new ones pushed live, acks, requests.
//!
//! Three tasks per connection: a writer that owns the socket's sending half, a delivery loop
//! that streams the device's queue (woken by `signals`), and the reader below. Envelopes sent
//! but not acknowledged stay queued and are sent again on the next connection.

use crate::error::{HttpError, bearer};
use crate::ops::{self, StoredBody};
use crate::signals::DeviceSignal;
use crate::{LOW_KEYS, Relay};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use ventana_core::protocol::{
    ClientFrame, Envelope, ErrorCode, PROTOCOL_VERSION, ProtocolError, ServerFrame,
};
use ventana_core::{DeviceId, PhoneNumber};
use ventana_crypto::Token;
use ventana_store::relay::{AccountRecord, StoredEnvelope};

/// Largest frame a device may send: a message to a handful of devices fits easily.
const MAX_FRAME_BYTES: usize = 1 << 20;
const PAGE: u32 = 256;
const SOCKET_BUFFER: usize = 4 * 1024;
/// At most this many envelopes are sent but not yet acknowledged on one connection. A device
/// that stops acknowledging stops receiving; one that processes slowly is never flooded.
const WINDOW: usize = 256;
/// At most this many of one connection's frames are being handled at once.
const MAX_IN_FLIGHT: usize = 64;

/// Flow control of one connection: permits for envelopes in flight, and their seqs so that
/// only acks of envelopes actually in flight return permits.
struct Flow {
    permits: Semaphore,
    in_flight: Mutex<HashSet<u64>>,
}

impl Flow {
    fn new() -> Self {
        Self {
            permits: Semaphore::new(WINDOW),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    async fn reserve(&self, seq: u64) -> bool {
        match self.permits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return false,
        }
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq);
        if !fresh {
            // Sent again after a rescan: it already holds a permit.
            self.permits.add_permits(1);
        }
        true
    }

    fn release(&self, seqs: &[u64]) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let released = seqs.iter().filter(|seq| in_flight.remove(seq)).count();
        self.permits.add_permits(released);
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct Mode {
    /// `false` for a send-only connection: requests only, no envelopes (a gateway node that
    /// sends for a number another node receives for).
    #[serde(default = "yes")]
    receive: bool,
}

fn yes() -> bool {
    true
}

pub(crate) async fn upgrade(
    State(relay): State<Arc<Relay>>,
    Query(mode): Query<Mode>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, HttpError> {
    let token =
        bearer(&headers).ok_or_else(|| HttpError::unauthorized("a device token is required"))?;
    let (account, device) = relay
        .store
        .device_by_token(&Token::from_presented(token).hash().0)
        .await?
        .ok_or_else(|| HttpError::unauthorized("unknown device token"))?;
    let max = relay.limits.connections_per_device;
    let place = relay
        .connections
        .open(&account.address, device, max)
        .ok_or_else(|| {
            HttpError::too_many(format!(
                "this device has {max} connections open, as many as it may; close one first"
            ))
        })?;
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        // An idle connection should cost little: tungstenite's default buffers are 128 KiB
        // each way; frames here are small and each is flushed as it is sent.
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .on_upgrade(move |socket| async move {
            serve(relay, socket, account, device, mode.receive).await;
            drop(place);
        }))
}

async fn serve(
    relay: Arc<Relay>,
    socket: WebSocket,
    me: AccountRecord,
    device: DeviceId,
    receive: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<ServerFrame>(PAGE as usize);
    let idle = Duration::from_secs(relay.limits.idle_timeout_secs);
    // Every write must finish within the idle timeout: a client that stops reading would
    // otherwise hold the writer, then the replies, then the reader's permits, for ever.
    let mut writer = tokio::spawn(async move {
        let write = async |sink: &mut SplitSink<WebSocket, Message>, message: Option<Message>| {
            let done = match message {
                Some(message) => tokio::time::timeout(idle, sink.feed(message)).await,
                None => tokio::time::timeout(idle, sink.flush()).await,
            };
            matches!(done, Ok(Ok(())))
        };
        // A ping every third of the idle timeout: a live client's pong keeps it open.
        let mut pings = tokio::time::interval(idle / 3);
        pings.tick().await;
        loop {
            let frame = tokio::select! {
                frame = rx.recv() => frame,
                _ = pings.tick() => {
                    if !write(&mut sink, Some(Message::Ping(Default::default()))).await
                        || !write(&mut sink, None).await
                    {
                        return;
                    }
                    continue;
                }
            };
            let Some(frame) = frame else { break };
            // Every frame waiting is written before one flush: a burst costs one write, not one each.
            let mut next = Some(frame);
            while let Some(frame) = next {
                if let Ok(text) = serde_json::to_string(&frame)
                    && !write(&mut sink, Some(Message::Text(text.into()))).await
                {
                    return;
                }
                next = rx.try_recv().ok();
            }
            if !write(&mut sink, None).await {
                return;
            }
        }
        let _ = tokio::time::timeout(idle, sink.close()).await;
    });

    let remaining = relay
        .store
        .one_time_key_count(&me.address, device)
        .await
        .unwrap_or(0);
    let hello = ServerFrame::Hello {
        protocol: PROTOCOL_VERSION,
        account: me.address.clone(),
        device_id: device,
        one_time_keys_remaining: remaining,
    };
    if tx.send(hello).await.is_err() {
        return;
    }
    tracing::debug!(account = %me.address, %device, "device connected");

    let flow = Arc::new(Flow::new());
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let me = Arc::new(me);
    let delivery = receive.then(|| {
        let signal = relay.signals.acquire(&me.address, device);
        tokio::spawn(deliver(
            Arc::clone(&relay),
            me.address.clone(),
            device,
            signal,
            Arc::clone(&flow),
            tx.clone(),
        ))
    });

    let mut shutdown = relay.shutdown.clone();
    let mut writer_done = false;
    loop {
        tokio::select! {
            // The writer gave up on a client that does not read: the connection is over.
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            incoming = tokio::time::timeout(idle, stream.next()) => match incoming {
                Err(_) => {
                    tracing::debug!(account = %me.address, %device, "idle connection closed");
                    break;
                }
                Ok(incoming) => match incoming {
                Some(Ok(Message::Text(text))) => {
                    // Frames are handled concurrently (answers carry the request's id), so a
                    // client with many requests in flight shares the store's group commits
                    // instead of queueing for one each. Waiting for a permit stops reading:
                    // a client cannot make the relay hold more than MAX_IN_FLIGHT of its frames.
                    let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                        break;
                    };
                    let (relay, me, flow, tx) =
                        (Arc::clone(&relay), Arc::clone(&me), Arc::clone(&flow), tx.clone());
                    tokio::spawn(async move {
                        if let Some(reply) = handle_frame(&relay, &me, device, &flow, text.as_str()).await {
                            let _ = tx.send(reply).await;
                        }
                        drop(permit);
                    });
                }
                Some(Ok(Message::Binary(_))) => {
                    let error = ProtocolError::new(ErrorCode::BadRequest, "frames are JSON text");
                    let _ = tx.send(ServerFrame::Response { req: 0, ok: None, error: Some(error) }).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }},
            _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => break,
        }
    }
    if let Some(delivery) = delivery {
        delivery.abort();
        let _ = delivery.await;
        relay.signals.release(&me.address, device);
    }
    drop(tx);
    if !writer_done {
        let _ = writer.await;
    }
    tracing::debug!(account = %me.address, %device, "device disconnected");
}

async fn handle_frame(
    relay: &Relay,
    me: &AccountRecord,
    device: DeviceId,
    flow: &Flow,
    text: &str,
) -> Option<ServerFrame> {
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(ClientFrame::Ack { seqs }) => {
            if let Err(e) = relay.store.ack(&me.address, device, &seqs).await {
                // The envelopes stay queued and are sent again on the next connection.
                tracing::error!(error = %e, "ack failed");
            }
            flow.release(&seqs);
            None
        }
        Ok(ClientFrame::Request { req, op }) => {
            Some(match ops::handle(relay, me, device, op).await {
                Ok(reply) => ServerFrame::Response {
                    req,
                    ok: Some(reply),
                    error: None,
                },
                Err(error) => ServerFrame::Response {
                    req,
                    ok: None,
                    error: Some(error),
                },
            })
        }
        Err(e) => {
            let error = ProtocolError::new(ErrorCode::BadRequest, format!("malformed frame: {e}"));
            Some(ServerFrame::Response {
                req: 0,
                ok: None,
                error: Some(error),
            })
        }
    }
}

async fn deliver(
    relay: Arc<Relay>,
    account: PhoneNumber,
    device: DeviceId,
    signal: Arc<DeviceSignal>,
    flow: Arc<Flow>,
    tx: mpsc::Sender<ServerFrame>,
) {
    let mut last_seq = 0;
    let mut first_pass = true;
    loop {
        // Arm the wake-up before reading, so nothing queued meanwhile is missed.
        let notified = signal.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        if signal.rescan.swap(false, Ordering::AcqRel) {
            last_seq = 0;
        }
        if signal.keys_claimed.swap(false, Ordering::AcqRel)
            && let Ok(remaining) = relay.store.one_time_key_count(&account, device).await
            && remaining < LOW_KEYS
            && tx.send(ServerFrame::KeysLow { remaining }).await.is_err()
        {
            return;
        }
        let mut sent_any = false;
        loop {
            let batch = match relay.store.pending(&account, device, last_seq, PAGE).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, %account, "reading the queue failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let full = batch.len() == PAGE as usize;
            for stored in batch {
                last_seq = stored.seq;
                sent_any = true;
                let Some(envelope) = to_frame(stored) else {
                    continue;
                };
                if !flow.reserve(envelope.seq).await
                    || tx.send(ServerFrame::Envelope(envelope)).await.is_err()
                {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        if (first_pass || sent_any) && tx.send(ServerFrame::Drained).await.is_err() {
            return;
        }
        first_pass = false;
        // Also re-read now and then: a wake-up lost on its way between nodes costs at most this.
        let _ = tokio::time::timeout(Duration::from_secs(30), notified).await;
    }
}

fn to_frame(stored: StoredEnvelope) -> Option<Envelope> {
    let body: StoredBody = match serde_json::from_slice(&stored.body) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(seq = stored.seq, error = %e, "unreadable stored envelope skipped");
            return None;
        }
    };
    Some(Envelope {
        seq: stored.seq,
        id: stored.id,
        from: stored.sender,
        from_device: stored.sender_device,
        kind: stored.kind,
        template: body.template,
        ts: stored.ts,
        ciphertext: body.ciphertext,
        receipt: body.receipt,
    })
}
