//! What one client may take of a node, tried by exceeding each limit over raw TCP: half-sent
//! requests, too many connections, oversized heads and bodies, slow bodies, deep JSON. Every
//! refusal comes in the envelope of the API asked, and the node keeps answering others.

use crate::harness::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A response read off a raw connection: status, head (lower-cased), body.
struct Raw {
    status: u16,
    head: String,
    body: Value,
}

/// Reads one response (the node closes after each refusal, so: until EOF or the body's end).
async fn read_response(tcp: &mut TcpStream) -> Raw {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), tcp.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap_or(0);
        bytes.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&bytes);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|l| l.trim().parse::<usize>().ok());
            if n == 0 || length.is_some_and(|l| body.len() >= l) {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return Raw {
                    status,
                    head: head.to_ascii_lowercase(),
                    body: serde_json::from_str(body).unwrap_or(Value::Null),
                };
            }
        }
        assert!(n > 0, "the connection closed before a response: {text:?}");
    }
}

async fn send_raw(addr: &str, request: &[u8]) -> Raw {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    read_response(&mut tcp).await
}

fn graph_code(raw: &Raw) -> i64 {
    let error = &raw.body["error"];
    assert!(
        error["fbtrace_id"].is_string(),
        "not Graph's envelope: {}",
        raw.body
    );
    assert!(error["error_data"]["details"].is_string(), "{}", raw.body);
    error["code"].as_i64().unwrap()
}

fn addr(node: &Node) -> String {
    node.url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn half_sent_requests_time_out_and_one_address_cannot_take_every_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("node"), None, |config| {
        config.server.header_timeout_secs = 1;
        config.server.connections_per_address = 20;
        config.server.loopback_exempt = false;
    })
    .await;
    let addr = addr(&node);
    // The start-up probe's keep-alive connection goes once idle for the header timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Twenty requests whose heads never finish: the address's whole allowance.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        stalled.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The twenty-first is answered at once, in Graph's envelope, and closed.
    let refused = send_raw(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(refused.status, 429, "{}", refused.head);
    assert_eq!(graph_code(&refused), 4);
    assert!(refused.head.contains("retry-after: 1"), "{}", refused.head);

    // Past the header timeout the stalled connections are closed by the node...
    let started = Instant::now();
    for tcp in &mut stalled {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the node closes a half-sent request")
            .unwrap_or(0);
        assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // ...and their places are free again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ok = send_raw(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok.status, 200);
    node.stop().await;
}

#[tokio::test]
async fn requests_over_a_limit_are_refused_in_the_envelope_of_the_api_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("node"), None, |config| {
        config.server.body_timeout_secs = 1;
    })
    .await;
    let shop = Business::create(&node, "1401", "2401", "15550001401", false).await;
    let addr = addr(&node);
    let token = &shop.token;
    let post = |path: &str, extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n{extra}\r\n"
        )
    };

    // A body announced far over the limit is refused before `100 Continue`.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        post(
            "/v23.0/2401/messages",
            "Content-Length: 104857600\r\nExpect: 100-continue\r\n",
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let raw = read_response(&mut tcp).await;
    assert_eq!(raw.status, 413, "{}", raw.head);
    assert_eq!(graph_code(&raw), 100);

    // A chunked body over the limit is 413 too; a malformed one is 400, not "too large".
    let mut big = post("/v23.0/2401/messages", "Transfer-Encoding: chunked\r\n");
    for _ in 0..5 {
        big.push_str(&format!("10000\r\n{}\r\n", "a".repeat(0x10000)));
    }
    big.push_str("0\r\n\r\n");
    let raw = send_raw(&addr, big.as_bytes()).await;
    assert_eq!((raw.status, graph_code(&raw)), (413, 100), "{}", raw.body);
    let mut malformed = post("/v23.0/2401/messages", "Transfer-Encoding: chunked\r\n");
    malformed.push_str("zz\r\nnot a chunk\r\n0\r\n\r\n");
    let raw = send_raw(&addr, malformed.as_bytes()).await;
    assert_eq!((raw.status, graph_code(&raw)), (400, 100), "{}", raw.body);
    let details = raw.body["error"]["error_data"]["details"].as_str().unwrap();
    assert!(details.contains("could not be read"), "{details}");

    // A body that stops coming is 408 once the body timeout passes.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(post("/v23.0/2401/messages", "Content-Length: 100\r\n").as_bytes())
        .await
        .unwrap();
    tcp.write_all(b"{\"messaging_product\":").await.unwrap();
    let raw = read_response(&mut tcp).await;
    assert_eq!((raw.status, graph_code(&raw)), (408, 100), "{}", raw.body);

    // Heads over the limits: 431 for the headers, 414 for the URI, in the envelope.
    let header = format!(
        "GET /v23.0/2401 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Padding: {}\r\n\r\n",
        "p".repeat(20_000)
    );
    let raw = send_raw(&addr, header.as_bytes()).await;
    assert_eq!((raw.status, graph_code(&raw)), (431, 100), "{}", raw.body);
    let uri = format!(
        "GET /v23.0/2401?fields={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "f".repeat(9_000)
    );
    let raw = send_raw(&addr, uri.as_bytes()).await;
    assert_eq!((raw.status, graph_code(&raw)), (414, 100), "{}", raw.body);
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let raw = send_raw(
        &addr,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!((raw.status, graph_code(&raw)), (431, 100), "{}", raw.body);

    // The client protocol's routes answer in the client protocol's envelope.
    let raw = send_raw(
        &addr,
        b"POST /relay/v1/verifications HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 413);
    assert_eq!(raw.body["error"]["code"], "bad_request", "{}", raw.body);

    // JSON nested deeper than the parsers go is a bad request, not a crash.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, body) = node
        .api_raw(
            "/v23.0/2401/messages",
            Some(token),
            format!("{{\"messaging_product\":\"whatsapp\",\"to\":\"1\",\"type\":\"text\",\"text\":{deep}}}"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(100)),
        "{body}"
    );
    let response = node
        .http
        .post(format!("{}/relay/v1/verifications", node.url))
        .body(deep.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // And through all of it the node answers as before.
    let response = node
        .http
        .get(format!("{}/v23.0/2401", node.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    node.stop().await;
}

#[tokio::test]
async fn a_node_at_its_connection_cap_answers_503_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("node"), None, |config| {
        config.server.max_connections = 8;
    })
    .await;
    let addr = addr(&node);
    // reqwest's pooled connection to /healthz (from the start-up probe) may hold one place.
    let mut held = Vec::new();
    let refused = loop {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let raw = read_response(&mut tcp).await;
        if raw.status != 200 {
            break raw;
        }
        held.push(tcp);
        assert!(held.len() <= 8, "the cap of 8 connections was not applied");
    };
    assert_eq!((refused.status, graph_code(&refused)), (503, 131016));
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = send_raw(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok.status, 200);
    node.stop().await;
}

/// Asks for a code for `phone` and registers a device with it, as the client library does.
async fn try_register(node: &Node, dir: &std::path::Path, phone: &str) -> Result<(), String> {
    use ventana_client::registration::{Proof, register, request_code};
    let phone: ventana_core::PhoneNumber = phone.parse().unwrap();
    let http = reqwest::Client::new();
    request_code(&http, &node.url, &phone)
        .await
        .map_err(|e| e.to_string())?;
    let (status, code) = node
        .admin(
            reqwest::Method::GET,
            &format!("/relay/v1/admin/verifications/{phone}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{code}");
    std::fs::create_dir_all(dir).unwrap();
    let store = ventana_store::sqlite::SqliteEndpointStore::open(&dir.join("device.db")).unwrap();
    let sealer = ventana_crypto::Sealer::new(ventana_crypto::SealKey::generate());
    let code = code["code"].as_str().unwrap().to_owned();
    register(
        &http,
        &node.url,
        &phone,
        "Tess",
        Proof::Code(code),
        &store,
        &sealer,
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_number_registers_at_most_its_devices_and_one_address_asks_at_most_its_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("node"), None, |config| {
        config.server.loopback_exempt = false;
        config.relay.devices_per_number = 2;
        config.relay.codes_per_address_per_hour = 4;
    })
    .await;
    try_register(&node, &tmp.path().join("a"), "34600000051")
        .await
        .unwrap();
    try_register(&node, &tmp.path().join("b"), "34600000051")
        .await
        .unwrap();
    // The third device of the number: its code is good, the number is full.
    let third = try_register(&node, &tmp.path().join("c"), "34600000051")
        .await
        .unwrap_err();
    assert!(third.contains("403"), "{third}");
    assert!(third.contains("2 devices registered"), "{third}");
    let (status, code) = node
        .admin(
            reqwest::Method::GET,
            "/relay/v1/admin/verifications/34600000051",
            None,
        )
        .await;
    // The refused registration did not spend its code.
    assert_eq!(status, 200, "{code}");

    // Three codes asked from this address so far: one more, then no more from here.
    let http = reqwest::Client::new();
    let ask = |phone: &'static str| {
        let http = http.clone();
        let url = format!("{}/relay/v1/verifications", node.url);
        async move {
            let response = http
                .post(url)
                .json(&serde_json::json!({ "phone": phone }))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    assert_eq!(ask("34600000052").await.0, 202);
    let (status, body) = ask("34600000053").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    node.stop().await;
}
