//! Where a business's events go, and whether a callback may be set there.
//!
//! The Cloud API's precedence (`ventana_store::webhook::WebhookRouting::callback`): a
//! number's `webhook_configuration` override wins over the WABA's `override_callback_uri`
//! (set through `subscribed_apps`), which wins over the app's subscription
//! (`/{app_id}/subscriptions`, Ventana's business `webhook_url`). A business whose app was
//! unsubscribed gets no events: they wait, and die after the retry period, as for a receiver
//! that is down.
//!
//! Before a callback is saved, [`verify_callback`] performs Meta's handshake with it, and
//! [`CallbackPolicy`] decides whether its address is allowed: a self-hosted helpdesk often
//! lives on the operator's own network, so private and loopback addresses are allowed unless
//! the operator says otherwise (`[webhooks] allow_private_callbacks = false`).

use rand::RngCore;
use reqwest::Url;
use std::net::IpAddr;
use std::time::Duration;

/// Why a callback URL cannot be used; the text is shown to the business.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CallbackError {
    #[error("The callback URL is not a valid http or https URL.")]
    Malformed,
    #[error("The callback URL's host could not be resolved.")]
    Unresolved,
    #[error(
        "The callback URL points to a private, loopback or link-local address, which this Ventana does not allow."
    )]
    Private,
    #[error("The callback URL could not be verified: {0}")]
    Handshake(String),
}

/// Whether callbacks to private addresses are allowed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallbackPolicy {
    pub(crate) allow_private: bool,
}

impl CallbackPolicy {
    /// Parses `url` and, unless private addresses are allowed, resolves its host and refuses
    /// one that is private (RFC 1918, unique local), loopback, link-local or unspecified.
    pub(crate) async fn check(&self, url: &str) -> Result<Url, CallbackError> {
        let parsed = Url::parse(url).map_err(|_| CallbackError::Malformed)?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(CallbackError::Malformed);
        }
        if self.allow_private {
            return Ok(parsed);
        }
        let host = parsed.host_str().ok_or(CallbackError::Malformed)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| CallbackError::Unresolved)?
                .map(|addr| addr.ip())
                .collect(),
        };
        if addrs.is_empty() {
            return Err(CallbackError::Unresolved);
        }
        if addrs.iter().any(|ip| is_private(*ip)) {
            return Err(CallbackError::Private);
        }
        Ok(parsed)
    }
}

/// Whether `ip` is not on the public internet: private, loopback, link-local, carrier-grade
/// NAT, benchmarking, multicast or reserved, or an IPv6 form carrying such an IPv4 address.
pub(crate) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0 // "this network"
                || (a == 100 && (b & 0xc0) == 64) // carrier-grade NAT
                || (a == 198 && (b & 0xfe) == 18) // benchmarking
                || a >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            // IPv4-mapped, IPv4-compatible (deprecated), NAT64 and 6to4 carry an IPv4 address
            // that is what would really be reached.
            if let Some(v4) = v6.to_ipv4()
                && !v6.is_loopback()
                && !v6.is_unspecified()
            {
                return is_private(IpAddr::V4(v4));
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., c, d] = segments;
                let v4 = std::net::Ipv4Addr::from((u32::from(c) << 16) | u32::from(d));
                return is_private(IpAddr::V4(v4));
            }
            if segments[0] == 0x2002 {
                let v4 = std::net::Ipv4Addr::from(
                    (u32::from(segments[1]) << 16) | u32::from(segments[2]),
                );
                return is_private(IpAddr::V4(v4));
            }
            let first = segments[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        }
    }
}

/// Resolves callback hosts for the webhook HTTP clients when private addresses are not
/// allowed, keeping only public addresses: a callback checked when it was set cannot be
/// pointed at the operator's network later by changing what its name resolves to.
struct PublicAddressesOnly;

impl reqwest::dns::Resolve for PublicAddressesOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let public: Vec<std::net::SocketAddr> =
                found.filter(|addr| !is_private(addr.ip())).collect();
            if public.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client for calling businesses' callbacks: no redirects (a redirect is not an
/// answer, and would take a signed event or the handshake somewhere nobody configured), and
/// under `policy`, public addresses only.
pub(crate) fn callback_client(
    policy: CallbackPolicy,
    timeout: Duration,
    user_agent: &str,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent);
    if !policy.allow_private {
        builder = builder.dns_resolver(std::sync::Arc::new(PublicAddressesOnly));
    }
    builder.build()
}

impl CallbackPolicy {
    /// Refuses a URL whose host is a private address written out (the resolver of
    /// [`callback_client`] covers names). Cheap: for every attempt.
    pub(crate) fn allows_literal(&self, url: &str) -> bool {
        if self.allow_private {
            return true;
        }
        let Ok(parsed) = Url::parse(url) else {
            return true; // the request fails on its own
        };
        let host = parsed.host_str().unwrap_or_default();
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => !is_private(ip),
            Err(_) => true,
        }
    }
}

/// Meta's verification request: `GET <callback>?hub.mode=subscribe&hub.verify_token=…&
/// hub.challenge=<random>`; the callback must answer 200 with exactly the challenge.
pub(crate) async fn verify_callback(
    http: &reqwest::Client,
    url: &Url,
    verify_token: &str,
) -> Result<(), CallbackError> {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // A number, as Meta's challenges are; receivers that parse it as one keep working.
    let challenge = (u64::from_be_bytes(bytes) % 9_000_000_000 + 1_000_000_000).to_string();
    let mut request_url = url.clone();
    request_url
        .query_pairs_mut()
        .append_pair("hub.mode", "subscribe")
        .append_pair("hub.verify_token", verify_token)
        .append_pair("hub.challenge", &challenge);
    // Said without the transport's detail: what failed where on the operator's network is
    // not the business's to learn.
    let unreachable = || {
        CallbackError::Handshake(format!(
            "it could not be reached, or did not answer within {} s",
            HANDSHAKE_TIMEOUT.as_secs()
        ))
    };
    let mut response = http
        .get(request_url)
        .timeout(HANDSHAKE_TIMEOUT)
        .send()
        .await
        .map_err(|_| unreachable())?;
    let status = response.status();
    if !status.is_success() {
        return Err(CallbackError::Handshake(format!(
            "it answered HTTP {} to the challenge",
            status.as_u16()
        )));
    }
    // The challenge is a few digits: read no more than could hold it and some whitespace.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| unreachable())? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_CHALLENGE_ANSWER {
            break;
        }
    }
    if body.as_slice() != challenge.as_bytes() {
        return Err(CallbackError::Handshake(
            "it did not answer with the hub.challenge it was sent".into(),
        ));
    }
    Ok(())
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest answer to the handshake read.
const MAX_CHALLENGE_ANSWER: usize = 64;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn private_addresses_are_refused_only_when_the_operator_says_so() {
        let strict = CallbackPolicy {
            allow_private: false,
        };
        let open = CallbackPolicy {
            allow_private: true,
        };
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://172.16.5.5/hook",
            "http://169.254.169.254/latest",
            "http://[::1]/hook",
            "http://[fd00::1]/hook",
            "http://[::ffff:10.0.0.1]/hook",
            "http://[64:ff9b::a00:1]/hook",
            "http://[2002:c0a8:1::1]/hook",
            "http://0.1.2.3/hook",
            "http://198.18.0.1/hook",
            "http://localhost:9000/hook",
        ] {
            assert_eq!(
                strict.check(url).await,
                Err(CallbackError::Private),
                "{url}"
            );
            assert!(open.check(url).await.is_ok(), "{url}");
        }
        assert!(strict.check("https://93.184.215.14/hook").await.is_ok());
        for url in ["ftp://example.com/", "not a url", "mailto:ops@example.com"] {
            assert_eq!(
                open.check(url).await,
                Err(CallbackError::Malformed),
                "{url}"
            );
        }
    }
}
