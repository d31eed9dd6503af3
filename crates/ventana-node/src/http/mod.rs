//! The node's HTTP server: hyper's HTTP/1 connections, with the limits a service open to the
//! internet needs before any route sees a request.
//!
//! - Here: the accept loop. Connections are capped in all and per client address (the
//!   connection over a cap is answered `429`/`503` at once and closed); a client must send a
//!   request's head within `header_timeout_secs` (which also ends a keep-alive connection
//!   left idle that long); shutdown stops accepting and lets each connection finish its
//!   request.
//! - `limits`: the request itself, before routing: the head's size, the URI's length, the
//!   body's size (a too-large `Content-Length` is refused before `100 Continue`) and the time
//!   its bytes may take, each refused in the API's own error envelope.
//!
//! axum's `serve` has none of these knobs, which is why the node runs its own loop (the same
//! shape: hyper's connection, the router as its service, a graceful-shutdown signal).

pub(crate) mod limits;

use crate::config::ServerConfig;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt as _;

/// File descriptors kept for everything but client connections: the SQLite files and their
/// journals, the PostgreSQL pool, webhook deliveries, the relay's own loopback connections.
const RESERVED_DESCRIPTORS: u64 = 256;
/// Connections over a cap being answered at once; past this many, one is dropped unanswered
/// (a flood of them must not use the descriptors kept for the stores).
const REFUSALS_AT_ONCE: usize = 64;
/// How long shutdown waits for connections to finish their requests.
const DRAIN_SECS: u64 = 30;

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting and returns once
/// every connection has finished its request (WebSockets are closed by their owners).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max_connections = connection_ceiling(config.max_connections);
    let counts = Arc::new(Counts::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.header_timeout_secs))
        // hyper's own ceilings sit well above ours, so that a head over our limits is still
        // read whole and refused by `limits` in the API's envelope; past hyper's, it answers
        // a bare 431 and closes.
        .max_buf_size(config.max_header_bytes.saturating_mul(4).max(16 * 1024))
        .max_headers(limits::HYPER_MAX_HEADERS);
    let (stop_tx, stop_rx) = watch::channel(());
    let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSALS_AT_ONCE));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) {
                        // Out of descriptors, most likely: give the others time to close.
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small frames both ways, a reply awaited on each: Nagle's algorithm would hold every
        // one of them back for an ack.
        let _ = tcp.set_nodelay(true);
        let address = ventana_relay::client_key(peer.ip());
        let per_address = if config.loopback_exempt && address.is_loopback() {
            u64::MAX
        } else {
            config.connections_per_address
        };
        let slot = match counts.admit(address, max_connections, per_address) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(tcp, refusal).await;
                        drop(permit);
                    });
                }
                continue;
            }
        };
        let io = TokioIo::new(Counted { tcp, _slot: slot });
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = http.serve_connection(io, service).with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(stop);
        });
    }
    drop(listener);
    drop(stop_rx);
    // Every connection task holds a receiver: tell them, then wait for the last to finish.
    let _ = stop_tx.send(());
    let drained = tokio::time::timeout(Duration::from_secs(DRAIN_SECS), stop_tx.closed()).await;
    if drained.is_err() {
        // A client that never reads its answer must not keep the node from stopping.
        tracing::warn!(
            open = stop_tx.receiver_count(),
            "connections still open after {DRAIN_SECS} s; stopping without them"
        );
    }
    Ok(())
}

/// The configured connection cap, lowered to what the process's descriptor limit allows.
fn connection_ceiling(configured: u64) -> u64 {
    match open_file_limit() {
        Some(limit) if limit.saturating_sub(RESERVED_DESCRIPTORS) < configured => {
            let lowered = limit.saturating_sub(RESERVED_DESCRIPTORS).max(16);
            tracing::warn!(
                configured,
                lowered,
                open_files = limit,
                "server.max_connections lowered to fit the open-file limit (raise `ulimit -n` to allow more)"
            );
            lowered
        }
        _ => configured,
    }
}

/// The soft limit on open files, where the system says (Linux's `/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Why a connection was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The client address has `connections_per_address` open.
    PerAddress(u64),
    /// The node has `max_connections` open.
    Full(u64),
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct Counts {
    open: Mutex<(u64, HashMap<IpAddr, u64>)>,
}

impl Counts {
    fn admit(
        self: &Arc<Self>,
        address: IpAddr,
        max: u64,
        per_address: u64,
    ) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= max {
            return Err(Refusal::Full(max));
        }
        let mine = open.1.entry(address).or_insert(0);
        if *mine >= per_address {
            return Err(Refusal::PerAddress(per_address));
        }
        *mine += 1;
        open.0 += 1;
        Ok(Slot {
            counts: Arc::clone(self),
            address,
        })
    }
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    counts: Arc<Counts>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(mine) = open.1.get_mut(&self.address) {
            *mine -= 1;
            if *mine == 0 {
                open.1.remove(&self.address);
            }
        }
    }
}

/// A client's socket with its place among the open connections. The place goes when the
/// socket closes, also after an upgrade hands the socket to a WebSocket.
struct Counted {
    tcp: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Answers a connection over a cap at once, without reading its request, and closes it.
/// What the client already sent is read (briefly, a little) before closing, so that its
/// kernel sees an orderly close and the client reads the answer rather than a reset.
async fn refuse(mut tcp: TcpStream, refusal: Refusal) {
    let response = limits::connection_refusal(refusal);
    let write = async {
        tcp.write_all(&response).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        for _ in 0..4 {
            if tcp.read(&mut sink).await? == 0 {
                break;
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_address_or_node_refuses_and_a_closed_connection_frees_its_place() {
        let counts = Arc::new(Counts::default());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = counts.admit(a, 3, 2).unwrap();
        let _second = counts.admit(a, 3, 2).unwrap();
        assert_eq!(counts.admit(a, 3, 2).err(), Some(Refusal::PerAddress(2)));
        let _third = counts.admit(b, 3, 2).unwrap();
        assert_eq!(counts.admit(b, 3, 2).err(), Some(Refusal::Full(3)));
        drop(first);
        assert!(counts.admit(a, 3, 2).is_ok());
    }

    #[test]
    fn the_open_file_limit_is_read_where_the_system_tells_it() {
        if cfg!(target_os = "linux") {
            assert!(open_file_limit().is_some_and(|n| n > 0));
        }
    }
}
