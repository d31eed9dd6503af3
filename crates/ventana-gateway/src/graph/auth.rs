//! Where a request's access token is: `Authorization: Bearer <token>`, or the
//! `access_token` query parameter (Graph accepts both and pywa uses the query form for
//! `/{app_id}/subscriptions`). Checking the token is the caller's job.

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
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| form_decode(key).as_deref() == Some("access_token"))
        .filter_map(|(_, value)| form_decode(value))
        .find(|token| !token.is_empty())
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte. `None` if the
/// result is not UTF-8. A `%` not followed by two hex digits stays as it is, like browsers do.
fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let digit = |at: usize| bytes.get(at).copied().and_then(hex_value);
                match (digit(i + 1), digit(i + 2)) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
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

    #[test]
    fn a_stray_percent_is_kept_as_it_is() {
        assert_eq!(form_decode("a%2").as_deref(), Some("a%2"));
        assert_eq!(form_decode("100%").as_deref(), Some("100%"));
        assert_eq!(form_decode("%zz").as_deref(), Some("%zz"));
    }
}
