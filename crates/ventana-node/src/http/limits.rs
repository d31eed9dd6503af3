//! The limits on one request, checked before any route sees it: the head's size, the URI's
//! length, the body's size and how long its bytes may take. Each refusal is in the error
//! envelope of the API the path belongs to: the client protocol's (`{"error":{"code",
//! "message"}}`) under `/relay/`, Graph's everywhere else, so an SDK reads it like any error.
//!
//! The body is read here, whole, so no handler can meet a body error of its own: a handler's
//! `Bytes` are always there and within the limit.

use super::Refusal;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use std::time::Duration;

/// hyper's own ceiling on the number of headers (past it, a bare 431); ours is lower.
pub(crate) const HYPER_MAX_HEADERS: usize = 256;
/// Headers one request may carry.
pub(crate) const MAX_HEADERS: usize = 100;

/// The limits on one request, from `[server]`.
#[derive(Debug, Clone)]
pub(crate) struct RequestLimits {
    pub(crate) max_header_bytes: usize,
    pub(crate) max_uri_bytes: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_timeout: Duration,
}

/// The middleware: refuses a request over a limit, or hands it on with its body read.
pub(crate) async fn enforce(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let refuse = |status, message: String| refusal(parts.uri.path(), status, message);
    let uri_bytes = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if uri_bytes > limits.max_uri_bytes {
        return refuse(
            StatusCode::URI_TOO_LONG,
            format!(
                "The request's path and query are {uri_bytes} bytes; the limit is {} bytes.",
                limits.max_uri_bytes
            ),
        );
    }
    // The head as it came: the request line, and each header as `name: value\r\n`.
    let head_bytes = parts.method.as_str().len()
        + uri_bytes
        + 12
        + parts
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head_bytes > limits.max_header_bytes || parts.headers.len() > MAX_HEADERS {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "The request's headers are {head_bytes} bytes in {} fields; the limits are {} bytes and {MAX_HEADERS} fields.",
                parts.headers.len(),
                limits.max_header_bytes
            ),
        );
    }
    // Checked before the body is touched: hyper sends `100 Continue` only when it is read.
    if let Some(length) = parts.headers.get(CONTENT_LENGTH) {
        match length.to_str().ok().and_then(|l| l.parse::<u64>().ok()) {
            Some(length) if length > limits.max_body_bytes as u64 => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    too_large(limits.max_body_bytes),
                );
            }
            Some(_) => {}
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "The Content-Length header is not a number.".to_owned(),
                );
            }
        }
    }
    let read = Limited::new(body, limits.max_body_bytes).collect();
    let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                too_large(limits.max_body_bytes),
            );
        }
        Ok(Err(e)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("The request body could not be read: {e}."),
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "The request body did not arrive within {} seconds.",
                    limits.body_timeout.as_secs()
                ),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn too_large(limit: usize) -> String {
    format!("The request body is larger than the limit of {limit} bytes.")
}

/// A refusal in the envelope of the API `path` belongs to.
fn refusal(path: &str, status: StatusCode, message: String) -> Response {
    let body = if path.starts_with("/relay/") {
        ventana_relay::refusal_body(status, message)
    } else {
        ventana_gateway::refusal_body(status, message)
    };
    let mut response = (status, axum::Json(body)).into_response();
    // A client that overran a limit may have more of its request on the way: this connection
    // is done, as hyper would also close it after an unread body.
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The whole answer to a connection over a cap, written before its request is read: Graph's
/// envelope (the path is not known yet), then the connection closes.
pub(super) fn connection_refusal(refusal: Refusal) -> Vec<u8> {
    let (status, message) = match refusal {
        Refusal::PerAddress(n) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("This address has {n} connections open, as many as it may; close one first."),
        ),
        Refusal::Full(n) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The server has {n} connections open, as many as it may; retry shortly."),
        ),
    };
    let body = ventana_gateway::refusal_body(status, message).to_string();
    let reason = status.canonical_reason().unwrap_or("");
    format!(
        "HTTP/1.1 {} {reason}\r\n{CONTENT_TYPE}: application/json\r\n{CONTENT_LENGTH}: {}\r\n{RETRY_AFTER}: 1\r\n{CONNECTION}: close\r\n\r\n{body}",
        status.as_u16(),
        body.len()
    )
    .into_bytes()
}
