//! One WebSocket to the relay, kept open: reconnects with backoff, answers requests by id,
//! and hands envelopes and notices to its owner as [`LinkEvent`]s, in order.

use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use ventana_core::protocol::{
    ClientFrame, Envelope, ErrorCode, Op, ProtocolError, Reply, ServerFrame,
};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Refused(ProtocolError),
    #[error("not connected to the relay")]
    Disconnected,
    #[error("the relay did not answer in time")]
    Timeout,
    /// The relay failed on its side (its `internal` error): retry later.
    #[error("the relay is unavailable: {0}")]
    Unavailable(String),
}

impl LinkError {
    /// Whether retrying later may succeed (as opposed to a refusal, which will not change).
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

/// What the link hands its owner, in the order it happened.
// Nearly every event is an envelope, moved once from the socket to its lane: boxing it
// would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum LinkEvent {
    Connected {
        one_time_keys_remaining: u64,
    },
    Envelope(Envelope),
    KeysLow {
        remaining: u64,
    },
    /// The relay has sent everything queued so far.
    Drained,
    Disconnected,
    /// The relay refused the device's token: it will not get better by retrying.
    Rejected(String),
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Reply, LinkError>>>>;

struct Inner {
    url: String,
    token: Zeroizing<String>,
    next_req: AtomicU64,
    pending: Pending,
    out: Mutex<Option<mpsc::Sender<ClientFrame>>>,
    connected: watch::Sender<bool>,
    reconnect: tokio::sync::Notify,
    /// Whether the relay sends this connection the device's envelopes (false: requests only).
    receive: std::sync::atomic::AtomicBool,
}

/// A handle to the link; cheap to clone.
#[derive(Clone)]
pub struct RelayLink {
    inner: Arc<Inner>,
}

impl RelayLink {
    /// Starts connecting to the relay at `relay_url` (`http(s)://host:port`) with a device
    /// token. The link runs until `shutdown` turns true.
    pub fn start(
        relay_url: &str,
        token: &str,
        receive: bool,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, mpsc::Receiver<LinkEvent>) {
        let base = relay_url.trim_end_matches('/');
        let url = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}/relay/v1/ws")
        } else {
            format!("ws://{}/relay/v1/ws", base.trim_start_matches("http://"))
        };
        let inner = Arc::new(Inner {
            url,
            token: Zeroizing::new(token.to_owned()),
            next_req: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            out: Mutex::new(None),
            connected: watch::channel(false).0,
            reconnect: tokio::sync::Notify::new(),
            receive: std::sync::atomic::AtomicBool::new(receive),
        });
        let (events, rx) = mpsc::channel(1024);
        tokio::spawn(supervise(Arc::clone(&inner), events, shutdown));
        (Self { inner }, rx)
    }

    /// Sends a request and waits for its answer, for at most `wait` in all.
    pub async fn request(&self, op: Op, wait: Duration) -> Result<Reply, LinkError> {
        let req = self.inner.next_req.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(wait, self.request_inner(req, op)).await {
            Ok(result) => result,
            Err(_) => {
                lock(&self.inner.pending).remove(&req);
                Err(LinkError::Timeout)
            }
        }
    }

    async fn request_inner(&self, req: u64, op: Op) -> Result<Reply, LinkError> {
        let mut connected = self.inner.connected.subscribe();
        let out = loop {
            if let Some(out) = lock(&self.inner.out).clone() {
                break out;
            }
            connected
                .changed()
                .await
                .map_err(|_| LinkError::Disconnected)?;
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(req, tx);
        if out.send(ClientFrame::Request { req, op }).await.is_err() {
            lock(&self.inner.pending).remove(&req);
            return Err(LinkError::Disconnected);
        }
        rx.await.unwrap_or(Err(LinkError::Disconnected))
    }

    /// Acknowledges envelopes; they are then forgotten by the relay.
    pub async fn ack(&self, seqs: Vec<u64>) -> Result<(), LinkError> {
        let out = lock(&self.inner.out)
            .clone()
            .ok_or(LinkError::Disconnected)?;
        out.send(ClientFrame::Ack { seqs })
            .await
            .map_err(|_| LinkError::Disconnected)
    }

    /// Drops the current connection and connects again: everything the relay holds for the
    /// device that was not acknowledged is sent again, in order.
    pub fn reconnect(&self) {
        self.inner.reconnect.notify_one();
    }

    /// Switches between receiving the device's envelopes and sending only, by reconnecting.
    pub fn set_receiving(&self, receive: bool) {
        if self.inner.receive.swap(receive, Ordering::AcqRel) != receive {
            self.reconnect();
        }
    }

    pub fn is_receiving(&self) -> bool {
        self.inner.receive.load(Ordering::Acquire)
    }

    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }
}

/// Small buffers (frames are small, each flushed as sent) and no Nagle delay (each request
/// waits for its answer).
fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
}

/// Resolves once `shutdown` turns true; never, if its sender is gone without saying so.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn supervise(
    inner: Arc<Inner>,
    events: mpsc::Sender<LinkEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match connect_once(&inner, &events, &mut shutdown).await {
            Ok(true) => backoff = Duration::from_millis(100),
            Ok(false) => backoff = (backoff * 2).min(Duration::from_secs(5)),
            Err(Fatal(reason)) => {
                let _ = events.send(LinkEvent::Rejected(reason)).await;
                return;
            }
        }
        *lock(&inner.out) = None;
        inner.connected.send_replace(false);
        for (_, waiter) in lock(&inner.pending).drain() {
            let _ = waiter.send(Err(LinkError::Disconnected));
        }
        if events.send(LinkEvent::Disconnected).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

struct Fatal(String);

/// One connection, until it drops: `Ok(true)` if it got as far as the relay's hello, `Err`
/// only when retrying is pointless.
async fn connect_once(
    inner: &Inner,
    events: &mpsc::Sender<LinkEvent>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, Fatal> {
    let url = if inner.receive.load(Ordering::Acquire) {
        inner.url.clone()
    } else {
        format!("{}?receive=false", inner.url)
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Fatal(e.to_string()))?;
    let auth = HeaderValue::from_str(&format!("Bearer {}", inner.token.as_str()))
        .map_err(|e| Fatal(e.to_string()))?;
    request.headers_mut().insert("authorization", auth);
    let socket =
        match tokio_tungstenite::connect_async_with_config(request, Some(socket_config()), true)
            .await
        {
            Ok((socket, _)) => socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status() == 401 =>
            {
                return Err(Fatal("the relay does not know this device's token".into()));
            }
            Err(e) => {
                tracing::debug!(error = %e, url = %inner.url, "relay connection failed");
                return Ok(false);
            }
        };
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<ClientFrame>(1024);
    let writer = tokio::spawn(async move {
        // Every frame waiting is written before one flush: a burst costs one write, not one each.
        'frames: while let Some(frame) = out_rx.recv().await {
            let mut next = Some(frame);
            while let Some(frame) = next {
                if let Ok(text) = serde_json::to_string(&frame)
                    && sink.feed(Message::Text(text.into())).await.is_err()
                {
                    break 'frames;
                }
                next = out_rx.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut announced = false;
    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            _ = stopped(shutdown) => break,
            _ = inner.reconnect.notified() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let frame: ServerFrame = match serde_json::from_str(text.as_str()) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable frame from the relay");
                continue;
            }
        };
        let event = match frame {
            ServerFrame::Hello {
                one_time_keys_remaining,
                ..
            } => {
                *lock(&inner.out) = Some(out_tx.clone());
                inner.connected.send_replace(true);
                announced = true;
                LinkEvent::Connected {
                    one_time_keys_remaining,
                }
            }
            ServerFrame::Response { req, ok, error } => {
                if let Some(waiter) = lock(&inner.pending).remove(&req) {
                    let result = match (ok, error) {
                        (Some(reply), _) => Ok(reply),
                        (None, Some(error)) if error.code == ErrorCode::Internal => {
                            Err(LinkError::Unavailable(error.message))
                        }
                        (None, Some(error)) => Err(LinkError::Refused(error)),
                        (None, None) => Err(LinkError::Unavailable("empty response".into())),
                    };
                    let _ = waiter.send(result);
                } else if let Some(error) = error {
                    tracing::warn!(%error, "the relay reported an error");
                }
                continue;
            }
            ServerFrame::Envelope(envelope) => LinkEvent::Envelope(envelope),
            ServerFrame::KeysLow { remaining } => LinkEvent::KeysLow { remaining },
            ServerFrame::Drained => LinkEvent::Drained,
        };
        if events.send(event).await.is_err() {
            break;
        }
    }
    drop(out_tx);
    *lock(&inner.out) = None;
    let _ = writer.await;
    Ok(announced)
}
