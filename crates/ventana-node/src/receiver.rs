//! A business's webhook endpoint in miniature, for the demo, the tests and the bench: a real HTTP
//! server on loopback that answers the `hub.challenge` handshake and accepts only events whose
//! `X-Hub-Signature-256` verifies over the exact bytes received.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::sync::mpsc;

/// One accepted delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Value,
    /// `X-Ventana-Event-Id`: stable across retries.
    pub event_id: Option<String>,
    pub raw: Bytes,
}

struct Shared {
    app_secret: Vec<u8>,
    verify_token: String,
    events: mpsc::UnboundedSender<Delivery>,
    /// Answer this many POSTs with 500 before accepting (to exercise retries).
    fail_next: AtomicU32,
    rejected: AtomicU32,
    /// Milliseconds to wait before answering each POST (a receiver that does some work).
    delay_ms: AtomicU64,
}

/// A running receiver; dropping the handle does not stop it (it lives as long as the runtime).
pub struct WebhookReceiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl WebhookReceiver {
    pub async fn start(
        app_secret: &str,
        verify_token: &str,
    ) -> std::io::Result<(Self, mpsc::UnboundedReceiver<Delivery>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Ok(Self::serve(listener, app_secret, verify_token))
    }

    /// Serves on a given listener (to bring a receiver back on the same port).
    pub fn serve(
        listener: tokio::net::TcpListener,
        app_secret: &str,
        verify_token: &str,
    ) -> (Self, mpsc::UnboundedReceiver<Delivery>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            app_secret: app_secret.as_bytes().to_vec(),
            verify_token: verify_token.to_owned(),
            events: tx,
            fail_next: AtomicU32::new(0),
            rejected: AtomicU32::new(0),
            delay_ms: AtomicU64::new(0),
        });
        let url = format!(
            "http://{}/webhook",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        let app = Router::new()
            .route("/webhook", get(challenge).post(receive))
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (Self { url, shared }, rx)
    }

    /// The next `n` deliveries are answered with HTTP 500.
    pub fn fail_next(&self, n: u32) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    /// Answers every POST only after `delay` (as a receiver that does some work would).
    pub fn set_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many deliveries had a bad signature.
    pub fn rejected(&self) -> u32 {
        self.shared.rejected.load(Ordering::SeqCst)
    }
}

async fn challenge(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let mode_ok = q.get("hub.mode").is_some_and(|m| m == "subscribe");
    let token_ok = q
        .get("hub.verify_token")
        .is_some_and(|t| *t == shared.verify_token);
    match (mode_ok && token_ok, q.get("hub.challenge")) {
        (true, Some(challenge)) => (StatusCode::OK, challenge.clone()),
        _ => (StatusCode::FORBIDDEN, String::new()),
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
fn expected_signature(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if signature != expected_signature(&shared.app_secret, &body) || !body.is_ascii() {
        shared.rejected.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if shared
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let event_id = headers
        .get("x-ventana-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let _ = shared.events.send(Delivery {
        event,
        event_id,
        raw: body,
    });
    StatusCode::OK
}
