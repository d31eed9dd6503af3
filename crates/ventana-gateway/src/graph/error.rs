//! `GraphError`: every failure of the business API, written as Graph's error envelope.
//!
//! SDKs key on `error.code` (pywa maps codes to exception classes), so the code is the
//! contract; `message` follows Meta's `"(#<code>) <title>"` style and `error_data.details`
//! says what exactly was wrong, naming the offending field.
//!
//! The codes a business can also meet after its send was accepted (a relay refusal, a
//! template that does not fit) are [`CloudError`]s, decided in `ventana-core`; this module
//! only chooses their HTTP status ([`From<CloudError>`](GraphError#impl-From<CloudError>-for-GraphError)).

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Map, Value, json};
use ventana_core::{CloudError, CloudErrorKind};
use ventana_store::StoreError;

/// One error answer of the business API.
///
/// The fields are public to the crate so an error found after the send was accepted can be
/// reported again as a `failed` status webhook (`code`, `title`, `details`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("(#{code}) {title}: {details}")]
pub(crate) struct GraphError {
    pub(crate) status: StatusCode,
    pub(crate) code: i64,
    /// Deprecated by Meta for Cloud API errors except some auth ones; kept for those.
    pub(crate) subcode: Option<i64>,
    /// The short, fixed title of the code, e.g. "Re-engagement message".
    pub(crate) title: String,
    /// What went wrong this time, for the developer reading `error_data.details`.
    pub(crate) details: String,
    /// Seconds to wait before retrying, sent as `Retry-After`.
    pub(crate) retry_after: Option<u64>,
}

impl GraphError {
    fn new(
        status: StatusCode,
        code: i64,
        title: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            subcode: None,
            title: title.into(),
            details: details.into(),
            retry_after: None,
        }
    }

    /// 100: a field is missing, misspelled or has a bad value.
    pub(crate) fn invalid_parameter(details: impl Into<String>) -> Self {
        CloudError::new(CloudErrorKind::InvalidParameter, details).into()
    }

    /// 190: no token, or one this server does not know (or has revoked).
    pub(crate) fn bad_token(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token",
            details,
        )
    }

    /// 131051: a message type the Cloud API has but this server cannot send (yet).
    pub(crate) fn unsupported_type(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            131051,
            "Unsupported message type",
            details,
        )
    }

    /// 803: the node in the path does not exist, or the token may not see it (Graph does not
    /// tell those apart, so neither do we).
    pub(crate) fn unknown_node(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            803,
            format!("Some of the aliases you requested do not exist: {id}"),
            format!("No object with id '{id}' exists or is visible to this access token."),
        )
    }

    /// 100 with HTTP 413: the request body exceeds `limit` bytes.
    pub(crate) fn payload_too_large(limit: usize) -> Self {
        let kind = CloudErrorKind::InvalidParameter;
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            i64::from(kind.code()),
            kind.title(),
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    }

    /// 100 with HTTP 405: the node or edge exists but not with this method. Graph words it
    /// "Unsupported get request", with the method in lower case.
    pub(crate) fn method_not_allowed(method: &Method) -> Self {
        let lower = method.as_str().to_ascii_lowercase();
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            100,
            format!("Unsupported {lower} request"),
            format!("This path does not support the {method} method."),
        )
    }

    /// 100: the business already has a template of this name in this language; editing
    /// that template, or another name, is how to go on.
    pub(crate) fn template_exists(details: impl Into<String>) -> Self {
        CloudError::new(CloudErrorKind::TemplateExists, details).into()
    }

    /// 100 with HTTP 404: the parameters name no template of this business (a delete by
    /// name or `hsm_id`). A template id in the path that names none is [`Self::unknown_node`].
    pub(crate) fn template_not_found(details: impl Into<String>) -> Self {
        CloudError::new(CloudErrorKind::TemplateNotFound, details).into()
    }

    /// 100 with HTTP 409: the template changed while the request was handled (an edit racing
    /// another, or a review), or its status does not allow the change; read it and retry.
    pub(crate) fn template_changed(details: impl Into<String>) -> Self {
        CloudError::new(CloudErrorKind::TemplateChanged, details).into()
    }

    /// 133010: the WABA has no phone number on this server. Templates live at the platform,
    /// which the gateway reaches as one of the business's numbers, so one must be added first.
    pub(crate) fn no_business_number(waba: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            133010,
            "Account not registered",
            format!(
                "The WhatsApp Business Account {waba} has no phone number on this server; an operator must add one before its message templates can be managed."
            ),
        )
    }

    /// 100 with HTTP 422: the `Idempotency-Key` was used before for another request (Ventana's
    /// extension; Stripe answers the same).
    pub(crate) fn idempotency_key_reused(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            100,
            "Idempotency key reused",
            details,
        )
    }

    /// 100 with HTTP 409 and `Retry-After`: a request with this `Idempotency-Key` is being
    /// handled (by this node or another); its answer will be given to a retry.
    pub(crate) fn idempotency_in_progress(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::CONFLICT,
                100,
                "Request in progress",
                "A request with this Idempotency-Key is in progress; retry later.",
            )
        }
    }

    /// 131000: a failure on our side. Deliberately opaque: the caller logs the cause.
    pub(crate) fn internal() -> Self {
        let kind = CloudErrorKind::SomethingWentWrong;
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            i64::from(kind.code()),
            kind.title(),
            "Something went wrong on the server. Please try again later.",
        )
    }

    /// 2200: a webhook callback could not be set: its handshake failed, or its address is
    /// not allowed here.
    pub(crate) fn callback_refused(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            2200,
            "Callback verification failed",
            details,
        )
    }

    /// 131016: a dependency (the relay, the database) is unavailable for now; retry later.
    pub(crate) fn unavailable(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            131016,
            "Service unavailable",
            details,
        )
    }

    /// Graph's `type`: SDKs rarely read it, but some log it, so it matches Meta's.
    fn kind(&self) -> &'static str {
        match self.code {
            803 => "GraphMethodException",
            _ => "OAuthException",
        }
    }

    /// The envelope's JSON with a fresh trace id, as the response carries it.
    pub(crate) fn body(&self) -> Value {
        self.envelope(&fbtrace_id())
    }

    /// The envelope's JSON, with a given trace id (the response makes a fresh one).
    fn envelope(&self, fbtrace_id: &str) -> Value {
        let mut error = Map::new();
        error.insert(
            "message".into(),
            format!("(#{}) {}", self.code, self.title).into(),
        );
        error.insert("type".into(), self.kind().into());
        error.insert("code".into(), self.code.into());
        error.insert(
            "error_data".into(),
            json!({ "messaging_product": "whatsapp", "details": self.details }),
        );
        if let Some(subcode) = self.subcode {
            error.insert("error_subcode".into(), subcode.into());
        }
        error.insert("fbtrace_id".into(), fbtrace_id.into());
        json!({ "error": error })
    }
}

/// The one way a [`CloudError`] becomes an answer: its code, title and details, under the
/// HTTP status Meta answers that code with. 131000 is answered opaquely, as every failure of
/// ours is (the caller logs what happened).
impl From<CloudError> for GraphError {
    fn from(error: CloudError) -> Self {
        use CloudErrorKind as K;
        let status = match error.kind() {
            K::SomethingWentWrong => return Self::internal(),
            K::TemplateUnavailable | K::TemplateNotFound => StatusCode::NOT_FOUND,
            K::TemplateChanged => StatusCode::CONFLICT,
            K::InvalidParameter
            | K::TemplateExists
            | K::TemplateLimitReached
            | K::RequiredParameterMissing
            | K::ParameterValueNotValid
            | K::Undeliverable
            | K::OutsideWindow
            | K::ParameterCountMismatch
            | K::ParameterFormatMismatch
            | K::TemplatePaused
            | K::TemplateDisabled => StatusCode::BAD_REQUEST,
            K::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        };
        let (code, title) = (i64::from(error.code()), error.title());
        Self::new(status, code, title, error.into_details())
    }
}

/// A fresh trace id shaped like Meta's (`AXsgnV2Cm3ZMGF3dF_cfYIn`): `A` and 22 base64url
/// characters. It correlates nothing yet, but SDKs copy it into their exceptions and logs.
fn fbtrace_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    std::iter::once('A')
        .chain((0..22).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])))
        .collect()
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == 190 {
            // What Graph sends with a bad token; OAuth clients look for it on a 401.
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    r#"OAuth "Facebook Platform" "invalid_token" "Invalid OAuth access token""#,
                ),
            );
        }
        response
    }
}

/// The Graph envelope of a refusal made before any route runs (the node's HTTP limits: a
/// request over a size or time limit, a connection over a cap): code 4 ("Application request
/// limit reached") for 429, 131016 for 503, and 100 for the rest, under `status`.
pub fn refusal_body(status: StatusCode, details: impl Into<String>) -> Value {
    let error = match status {
        StatusCode::TOO_MANY_REQUESTS => {
            GraphError::new(status, 4, "Application request limit reached", details)
        }
        StatusCode::SERVICE_UNAVAILABLE => GraphError::unavailable(details),
        _ => {
            let kind = CloudErrorKind::InvalidParameter;
            GraphError::new(status, i64::from(kind.code()), kind.title(), details)
        }
    };
    error.body()
}

/// Lets handlers use `?` on the store: its failures are ours, not the caller's, so they are
/// logged here and answered opaquely. A `Conflict` that means something to the caller (a
/// duplicate id, say) must be matched by the handler before it gets here.
impl From<StoreError> for GraphError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "gateway store failed");
        Self::internal()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn rendered(error: GraphError) -> (StatusCode, Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// Replaces the random trace id by a fixed one after checking its shape.
    fn without_trace_id(mut body: Value) -> Value {
        let trace = body["error"]["fbtrace_id"].as_str().unwrap().to_owned();
        assert_eq!(trace.len(), 23);
        assert!(trace.starts_with('A'));
        assert!(
            trace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        body["error"]["fbtrace_id"] = "TRACE".into();
        body
    }

    #[tokio::test]
    async fn outside_window_is_written_as_metas_131047_envelope() {
        let refusal = CloudError::new(
            CloudErrorKind::OutsideWindow,
            "More than 24 hours have passed.",
        );
        let (status, body) = rendered(refusal.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            without_trace_id(body),
            json!({"error": {
                "message": "(#131047) Re-engagement message",
                "type": "OAuthException",
                "code": 131047,
                "error_data": {"messaging_product": "whatsapp", "details": "More than 24 hours have passed."},
                "fbtrace_id": "TRACE",
            }})
        );
    }

    #[tokio::test]
    async fn unknown_node_is_a_404_graph_method_exception_naming_the_id() {
        let (status, body) = rendered(GraphError::unknown_node("106540352242922")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            without_trace_id(body),
            json!({"error": {
                "message": "(#803) Some of the aliases you requested do not exist: 106540352242922",
                "type": "GraphMethodException",
                "code": 803,
                "error_data": {
                    "messaging_product": "whatsapp",
                    "details": "No object with id '106540352242922' exists or is visible to this access token.",
                },
                "fbtrace_id": "TRACE",
            }})
        );
    }

    #[tokio::test]
    async fn a_bad_token_is_a_401_with_code_190_and_an_oauth_challenge() {
        let response = GraphError::bad_token("Invalid OAuth access token.").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(WWW_AUTHENTICATE));
        let (_, body) = rendered(GraphError::bad_token("x")).await;
        assert_eq!(body["error"]["code"], 190);
        assert!(body["error"].get("error_subcode").is_none());
    }

    #[tokio::test]
    async fn a_subcode_when_set_is_written_as_error_subcode() {
        let expired = GraphError {
            subcode: Some(463),
            ..GraphError::bad_token("expired")
        };
        let (_, body) = rendered(expired).await;
        assert_eq!(body["error"]["error_subcode"], 463);
    }

    #[test]
    fn each_response_gets_a_fresh_trace_id() {
        assert_ne!(fbtrace_id(), fbtrace_id());
    }

    #[test]
    fn method_not_allowed_names_the_method_in_lower_case_as_graph_does() {
        let error = GraphError::method_not_allowed(&Method::DELETE);
        assert_eq!(error.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(error.code, 100);
        assert_eq!(error.title, "Unsupported delete request");
    }

    #[test]
    fn template_errors_are_code_100_but_for_a_business_without_a_number() {
        for (error, status) in [
            (GraphError::template_exists("x"), StatusCode::BAD_REQUEST),
            (
                CloudError::new(CloudErrorKind::TemplateLimitReached, "x").into(),
                StatusCode::BAD_REQUEST,
            ),
            (GraphError::template_not_found("x"), StatusCode::NOT_FOUND),
            (GraphError::template_changed("x"), StatusCode::CONFLICT),
        ] {
            assert_eq!((error.code, error.status), (100, status), "{error}");
        }
        let error = GraphError::no_business_number("102290129340398");
        assert_eq!(error.code, 133010);
        assert!(error.details.contains("102290129340398"));
    }

    #[test]
    fn each_cloud_error_is_answered_with_the_http_status_meta_gives_its_code() {
        use CloudErrorKind as K;
        for (kind, status) in [
            (K::InvalidParameter, StatusCode::BAD_REQUEST),
            (K::TemplateExists, StatusCode::BAD_REQUEST),
            (K::TemplateLimitReached, StatusCode::BAD_REQUEST),
            (K::TemplateNotFound, StatusCode::NOT_FOUND),
            (K::TemplateChanged, StatusCode::CONFLICT),
            (K::RequiredParameterMissing, StatusCode::BAD_REQUEST),
            (K::ParameterValueNotValid, StatusCode::BAD_REQUEST),
            (K::Undeliverable, StatusCode::BAD_REQUEST),
            (K::OutsideWindow, StatusCode::BAD_REQUEST),
            (K::ParameterCountMismatch, StatusCode::BAD_REQUEST),
            (K::TemplateUnavailable, StatusCode::NOT_FOUND),
            (K::ParameterFormatMismatch, StatusCode::BAD_REQUEST),
            (K::TemplatePaused, StatusCode::BAD_REQUEST),
            (K::TemplateDisabled, StatusCode::BAD_REQUEST),
        ] {
            let error = GraphError::from(CloudError::new(kind, "details"));
            assert_eq!(error.status, status, "{kind:?}");
            assert_eq!(error.code, i64::from(kind.code()));
            assert_eq!(
                (error.title.as_str(), error.details.as_str()),
                (kind.title(), "details")
            );
        }
    }

    #[test]
    fn a_failure_the_business_can_do_nothing_about_is_answered_opaquely() {
        let error = GraphError::from(CloudError::new(
            CloudErrorKind::SomethingWentWrong,
            "relay internals",
        ));
        assert_eq!(error, GraphError::internal());
    }
}
