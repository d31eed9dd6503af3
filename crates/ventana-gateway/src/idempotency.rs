//! Idempotent sends, Ventana's extension of the messages endpoint: a request may carry an
//! `Idempotency-Key` header (or, for SDKs that cannot set headers, a body field
//! `"idempotency_key"`), and a retry under the same key gets the first answer instead of
//! sending again, on any node and after restarts.
//!
//! The answer to a send can be lost with the node that was handling it (or on the way back).
//! So the message id is chosen before sending and claimed with the key; the send happens
//! under that id. A retry then finds the key and:
//!
//! - the request differs (SHA-256 of its canonical JSON, without the key field): 422;
//! - the answer is stored: it is given again (same status, same body, same `wamid`);
//! - still in progress and the claim is live: 409 with `Retry-After`;
//! - the claim ran out, but the message is in the number's history (an attempt committed
//!   it; the outbox finishes it and webhooks report it): 200 with that id, stored as the
//!   answer;
//! - the claim ran out (its node died before committing anything): this request takes it
//!   over and sends under the same id.
//!
//! 2xx and 4xx answers are stored; after a 5xx the claim is given up (the id kept), so the
//! next retry runs at once. Keys are kept [`RETENTION_SECS`]; an older key counts as new.

use crate::graph::error::GraphError;
use crate::{Gateway, Hosted};
use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use ventana_core::{IdempotencyKey, MessageId, UnixTime};
use ventana_store::idempotency::{
    ClaimOutcome, IdempotencyRecord, IdempotencyState, NewClaim, StoredResponse,
};
use ventana_store::{ConflictKind, StoreError};

/// How long a key is kept (and a retry answered from it): 24 hours, like Stripe's.
pub(crate) const RETENTION_SECS: i64 = 24 * 60 * 60;
/// How long a claim stands before a retry may take it over: longer than an attempt may take
/// ([`ATTEMPT_LIMIT`]), so a live attempt is never taken over.
const CLAIM_SECS: i64 = 60;
/// How long one attempt may take before it answers 503 (the send may still finish: the
/// message is then in the history, and a retry is answered with its id).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(45);
/// How often keys past retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);
/// The header, and the body field for SDKs that cannot set headers.
const HEADER: &str = "idempotency-key";
const BODY_FIELD: &str = "idempotency_key";
/// Rounds of claim-and-look before answering 409: each round follows a change another
/// request made meanwhile (a key pruned, an attempt that completed first).
const ROUNDS: usize = 3;

/// An answer of the messages endpoint, as given the first time and as replayed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
}

impl Answer {
    pub(crate) fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
        }
    }
}

impl From<GraphError> for Answer {
    fn from(error: GraphError) -> Self {
        Self {
            status: error.status,
            body: error.body(),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The key a request carries, from the header or the body field; both may be given if they
/// agree.
pub(crate) fn key_of(
    headers: &HeaderMap,
    body: &Value,
) -> Result<Option<IdempotencyKey>, GraphError> {
    let mut given = headers.get_all(HEADER).iter();
    let header = match (given.next(), given.next()) {
        (None, _) => None,
        (Some(value), None) => Some(value.to_str().map_err(|_| bad_key("header"))?),
        (Some(_), Some(_)) => {
            return Err(GraphError::invalid_parameter(
                "The Idempotency-Key header may be given once.",
            ));
        }
    };
    let field = match body.get(BODY_FIELD) {
        None => None,
        Some(Value::String(key)) => Some(key.as_str()),
        Some(_) => {
            return Err(GraphError::invalid_parameter(format!(
                "Param {BODY_FIELD} must be a string."
            )));
        }
    };
    let (key, source) = match (header, field) {
        (None, None) => return Ok(None),
        (Some(h), Some(f)) if h != f => {
            return Err(GraphError::invalid_parameter(format!(
                "The Idempotency-Key header and param {BODY_FIELD} differ; give one, or the same \
                 key in both."
            )));
        }
        (Some(key), _) => (key, "header"),
        (None, Some(key)) => (key, "param"),
    };
    key.parse().map(Some).map_err(|_| bad_key(source))
}

fn bad_key(source: &str) -> GraphError {
    let name = match source {
        "header" => "The Idempotency-Key header".to_owned(),
        _ => format!("Param {BODY_FIELD}"),
    };
    GraphError::invalid_parameter(format!(
        "{name} must be 1 to 255 printable ASCII characters (space to '~')."
    ))
}

/// What tells two requests apart: SHA-256 of the body as canonical JSON (parsed and written
/// again: object keys sorted, no insignificant whitespace), without the key field.
pub(crate) fn fingerprint(body: &Value) -> Vec<u8> {
    let mut body = body.clone();
    if let Value::Object(fields) = &mut body {
        fields.remove(BODY_FIELD);
    }
    // serde_json's maps are sorted (its `preserve_order` feature is off), so writing a value
    // is canonical; a test pins that.
    Sha256::digest(body.to_string().as_bytes()).to_vec()
}

/// Answers a request carrying `key` once: sends it (with `send`, under the message id
/// claimed with the key) the first time, and gives the first answer to every retry.
/// `committed` says, for a claimed id, what to answer if an earlier attempt already committed
/// the message (`None`: it did not, or the request is not a send).
///
/// Plain closures returning futures rather than async closures: the compiler cannot yet
/// prove an async closure's future `Send`, which the router needs.
pub(crate) async fn once<C, S>(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    key: IdempotencyKey,
    fingerprint: Vec<u8>,
    committed: impl Fn(MessageId) -> C,
    send: impl FnOnce(MessageId) -> S,
) -> Result<Answer, GraphError>
where
    C: Future<Output = Result<Option<Answer>, GraphError>>,
    S: Future<Output = Result<Answer, GraphError>>,
{
    let store = &gateway.store;
    let number = &hosted.record.id;
    for _ in 0..ROUNDS {
        let now = UnixTime::now();
        let claim = NewClaim {
            phone_number_id: number.clone(),
            key: key.clone(),
            fingerprint: fingerprint.clone(),
            message_id: MessageId::generate(),
            claimed_until: now.plus_secs(CLAIM_SECS),
            created_at: now,
        };
        let record = match store
            .claim_idempotency_key(claim, now.plus_secs(-RETENTION_SECS))
            .await
        {
            Ok(ClaimOutcome::Claimed(record)) => return Ok(attempt(gateway, record, send).await),
            Ok(ClaimOutcome::Existing(record)) => record,
            // Another node claimed or dropped the key between our read and write: look again.
            Err(StoreError::Conflict(c))
                if matches!(c.kind, ConflictKind::Exists | ConflictKind::Changed) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if record.fingerprint != fingerprint {
            return Err(GraphError::idempotency_key_reused(format!(
                "The Idempotency-Key {key} was used for a different request on this number; use \
                 a new key for a new request."
            )));
        }
        if record.state == IdempotencyState::Completed {
            return replay(&record);
        }
        // A live attempt gives its own answer (a refusal it is waiting for, say), so a retry
        // must not answer for it.
        if record.claimed_until > now {
            let wait = record.claimed_until.0.saturating_sub(now.0);
            return Err(GraphError::idempotency_in_progress(
                u64::try_from(wait).unwrap_or(1),
            ));
        }
        if let Some(answer) = committed(record.message_id.clone()).await? {
            // An attempt committed the message and then lost its answer (its node died, or
            // it gave its claim up): the outbox finishes it and webhooks report it.
            let stored = stored(&answer);
            if store
                .complete_idempotency_key(number, &key, record.attempt, stored)
                .await?
            {
                return Ok(answer);
            }
            // Completed (or taken over) meanwhile: look again.
            continue;
        }
        let until = now.plus_secs(CLAIM_SECS);
        if store
            .take_over_idempotency_key(number, &key, record.attempt, now, until)
            .await?
        {
            tracing::info!(%key, id = %record.message_id, "taking over an abandoned send");
            let record = IdempotencyRecord {
                attempt: record.attempt + 1,
                claimed_until: until,
                ..record
            };
            return Ok(attempt(gateway, record, send).await);
        }
    }
    Err(GraphError::idempotency_in_progress(1))
}

/// Runs the claimed attempt and records its answer: kept if final (2xx, 4xx), the claim given
/// up if not (5xx), so that the next retry runs again under the same message id.
async fn attempt<S>(
    gateway: &Arc<Gateway>,
    record: IdempotencyRecord,
    send: impl FnOnce(MessageId) -> S,
) -> Answer
where
    S: Future<Output = Result<Answer, GraphError>>,
{
    let answer = match tokio::time::timeout(ATTEMPT_LIMIT, send(record.message_id.clone())).await {
        Ok(answer) => answer.unwrap_or_else(Answer::from),
        Err(_) => Answer::from(GraphError::unavailable(
            "The send is taking too long; retry with the same Idempotency-Key.",
        )),
    };
    let (store, number, key) = (&gateway.store, &record.phone_number_id, &record.key);
    let recorded = if answer.status.is_server_error() {
        store
            .release_idempotency_key(number, key, record.attempt, UnixTime::now())
            .await
    } else {
        store
            .complete_idempotency_key(number, key, record.attempt, stored(&answer))
            .await
    };
    match recorded {
        Ok(true) => {}
        // Another request took the claim over (this one outlived it): its answer is kept.
        Ok(false) => tracing::warn!(%key, "an idempotent send outlived its claim"),
        // The client has its answer; a retry finds the claim and the message in the history.
        Err(e) => tracing::warn!(%key, error = %e, "the answer of an idempotent send not kept"),
    }
    answer
}

fn stored(answer: &Answer) -> StoredResponse {
    StoredResponse {
        status: answer.status.as_u16(),
        body: answer.body.to_string(),
    }
}

fn replay(record: &IdempotencyRecord) -> Result<Answer, GraphError> {
    let response = record.response.as_ref();
    let answer = response.and_then(|r| {
        Some(Answer {
            status: StatusCode::from_u16(r.status).ok()?,
            body: serde_json::from_str(&r.body).ok()?,
        })
    });
    answer.ok_or_else(|| {
        tracing::error!(key = %record.key, "a completed idempotency key holds no readable answer");
        GraphError::internal()
    })
}

/// Deletes keys past retention, every [`PRUNE_EVERY`], until `shutdown`.
pub(crate) async fn prune(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let cutoff = UnixTime::now().plus_secs(-RETENTION_SECS);
        match gateway.store.prune_idempotency_keys(cutoff).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "idempotency keys past retention deleted"),
            Err(e) => tracing::warn!(error = %e, "idempotency keys not pruned"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(key: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_bytes(key).unwrap());
        headers
    }

    #[test]
    fn the_fingerprint_ignores_key_order_spacing_and_the_key_field() {
        let a: Value =
            serde_json::from_str(r#"{"to":"1","text":{"body":"hi","preview_url":false}}"#).unwrap();
        let b: Value = serde_json::from_str(
            r#"{ "text": {"preview_url": false, "body": "hi"}, "idempotency_key": "k", "to": "1" }"#,
        )
        .unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let c = json!({"to": "1", "text": {"body": "hi!", "preview_url": false}});
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn the_key_comes_from_the_header_or_the_body_and_both_must_agree() {
        let body = json!({"idempotency_key": "k1"});
        let none = json!({});
        assert_eq!(key_of(&HeaderMap::new(), &none).unwrap(), None);
        assert_eq!(
            key_of(&headers(b"k1"), &none).unwrap().unwrap().as_str(),
            "k1"
        );
        assert_eq!(
            key_of(&HeaderMap::new(), &body).unwrap().unwrap().as_str(),
            "k1"
        );
        assert!(key_of(&headers(b"k1"), &body).unwrap().is_some());
        let differ = key_of(&headers(b"k2"), &body).unwrap_err();
        assert!(differ.details.contains(BODY_FIELD), "{differ}");
        assert_eq!(differ.code, 100);
        for bad in [&b""[..], "clé".as_bytes(), &[b'k'; 300][..]] {
            let error = key_of(&headers(bad), &none).unwrap_err();
            assert_eq!((error.code, error.status.as_u16()), (100, 400));
            assert!(error.details.contains("1 to 255"), "{error}");
        }
        assert!(key_of(&HeaderMap::new(), &json!({"idempotency_key": 7})).is_err());
    }
}
