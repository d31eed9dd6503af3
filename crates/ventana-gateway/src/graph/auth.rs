//! Where a request's access token is: `Authorization: Bearer <token>`, or the
//! `access_token` query parameter (Graph accepts both and pywa uses the query form for
//! `/{app_id}/subscriptions`). Checking the token is the caller's job.

use super::query::Query;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

/// The token the request presents, if any. The header wins over the query.
pub(crate) fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    bearer(headers).or_else(|| query.and_then(access_token_param))
}

/// `Authorization: Bearer <token>`, the scheme in any case (RFC 9110 makes it case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The first non-empty `access_token` in a query string, form-decoded.
fn access_token_param(query: &str) -> Option<String> {
    Query::new(Some(query))
        .values("access_token")
        .find(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::http::HeaderValue;

    fn with_authorization(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn a_bearer_header_presents_its_token_whatever_the_scheme_case() {
        assert_eq!(
            presented_token(&with_authorization("Bearer abc.123"), None).as_deref(),
            Some("abc.123")
        );
        assert_eq!(
            presented_token(&with_authorization("bearer  abc "), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&with_authorization("BEARER abc"), None).as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn other_schemes_and_empty_tokens_present_nothing() {
        assert_eq!(
            presented_token(&with_authorization("Basic dXNlcjpwYXNz"), None),
            None
        );
        assert_eq!(presented_token(&with_authorization("Bearer "), None), None);
        assert_eq!(presented_token(&with_authorization("Bearer"), None), None);
        assert_eq!(presented_token(&HeaderMap::new(), None), None);
    }

    #[test]
    fn the_access_token_query_parameter_is_percent_decoded() {
        let query = "object=whatsapp_business_account&access_token=EAAB%2Fx%3D%3D+y&fields=id";
        assert_eq!(
            presented_token(&HeaderMap::new(), Some(query)).as_deref(),
            Some("EAAB/x== y")
        );
    }

    #[test]
    fn the_header_wins_over_the_query() {
        let token = presented_token(
            &with_authorization("Bearer header"),
            Some("access_token=query"),
        );
        assert_eq!(token.as_deref(), Some("header"));
    }

    #[test]
    fn a_query_without_a_usable_access_token_presents_nothing() {
        for query in [
            "",
            "fields=id",
            "access_token=",
            "access_token",
            "xaccess_token=a",
            "access_token=%FF",
        ] {
            assert_eq!(
                presented_token(&HeaderMap::new(), Some(query)),
                None,
                "{query:?}"
            );
        }
    }
}
