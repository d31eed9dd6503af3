//! Spawning nodes, businesses and user devices for the tests.

use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use ventana_client::device::UserDevice;
use ventana_client::registration::{Proof, register, request_code};
use ventana_client::{Application, Endpoint, Inbound};
use ventana_core::PhoneNumber;
use ventana_core::payload::{Content, Payload};
use ventana_crypto::{SealKey, Sealer};
use ventana_node::{Config, Delivery, WebhookReceiver};
use ventana_store::endpoint::MessageRecord;
use ventana_store::sqlite::SqliteEndpointStore;

pub const ADMIN_TOKEN: &str = "vop_test-operator-token";
pub const APP_SECRET: &str = "test-app-secret-0123456789";
pub const VERIFY_TOKEN: &str = "test-verify";
pub const WAIT: Duration = Duration::from_secs(20);
/// The seal key of PostgreSQL-backed test nodes (which must be configured, not generated).
const SEAL_KEY: &str = "dGVzdC1zZWFsLWtleS10ZXN0LXNlYWwta2V5LTAxMjM=";

/// A database of its own on the test server, dropped at the end.
pub struct Database {
    server: String,
    name: String,
    pub url: String,
}

impl Database {
    /// `None` when `VENTANA_TEST_POSTGRES` is unset (the suite then says it did not run).
    pub async fn create() -> Option<Database> {
        let server = std::env::var("VENTANA_TEST_POSTGRES").ok()?;
        let name = format!("ventana_c_{:016x}", rand::random::<u64>());
        let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("VENTANA_TEST_POSTGRES={server} cannot be reached: {e}"));
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let base = server
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&server);
        let url = format!("{base}/{name}");
        Some(Database { server, name, url })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&server, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A running node on a temporary data directory.
pub struct Node {
    pub url: String,
    /// Set for a node this test process runs (not for one it only talks to).
    running: Option<(
        watch::Sender<bool>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    pub http: reqwest::Client,
}

impl Node {
    pub async fn start(data_dir: &Path) -> Node {
        Self::start_on(data_dir, None).await
    }

    /// A node on PostgreSQL (`Some(database URL)`) or on SQLite files in `data_dir`.
    pub async fn start_on(data_dir: &Path, database_url: Option<&str>) -> Node {
        Self::start_with(data_dir, database_url, |_| {}).await
    }

    /// [`Self::start_on`] with the configuration changed by `configure` first.
    pub async fn start_with(
        data_dir: &Path,
        database_url: Option<&str>,
        configure: impl FnOnce(&mut Config),
    ) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = Config::default();
        configure(&mut config);
        config.server.listen = listener.local_addr().unwrap();
        config.storage.data_dir = data_dir.to_path_buf();
        config.security.admin_token = Some(ADMIN_TOKEN.into());
        if let Some(url) = database_url {
            config.storage.database_url = Some(url.to_owned());
            config.security.seal_key = Some(SEAL_KEY.into());
        }
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(ventana_node::run(config, listener, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        let node = Node {
            url,
            running: Some((stop, task)),
            http: reqwest::Client::new(),
        };
        for _ in 0..200 {
            if node
                .http
                .get(format!("{}/healthz", node.url))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        node
    }

    /// Graceful shutdown; waits until the node has finished.
    pub async fn stop(self) {
        let Some((stop, task)) = self.running else {
            return;
        };
        let _ = stop.send(true);
        tokio::time::timeout(WAIT, task)
            .await
            .expect("node stops in time")
            .unwrap()
            .unwrap();
    }

    /// A node running elsewhere (another process) with the test operator token.
    pub fn attach(url: &str) -> Node {
        Node {
            url: url.to_owned(),
            running: None,
            http: reqwest::Client::new(),
        }
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// POSTs a raw body to the Cloud API with a bearer token.
    pub async fn api_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn advance_clock(&self, waba: &str, seconds: i64) -> (u16, Value) {
        let path = format!("/relay/v1/admin/businesses/{waba}/clock/advance");
        self.admin(
            reqwest::Method::POST,
            &path,
            Some(json!({ "seconds": seconds })),
        )
        .await
    }
}

/// A business with one number and an access token, and its webhook receiver.
pub struct Business {
    pub phone_number_id: String,
    pub number: PhoneNumber,
    pub token: String,
    pub receiver: WebhookReceiver,
    pub hooks: mpsc::UnboundedReceiver<Delivery>,
}

impl Business {
    pub async fn create(
        node: &Node,
        waba: &str,
        phone_number_id: &str,
        number: &str,
        sandbox: bool,
    ) -> Business {
        let (receiver, hooks) = WebhookReceiver::start(APP_SECRET, VERIFY_TOKEN)
            .await
            .unwrap();
        let (status, created) = node
            .admin(
                reqwest::Method::POST,
                "/admin/v1/businesses",
                Some(json!({ "waba_id": waba, "name": format!("Shop {waba}"), "app_secret": APP_SECRET, "webhook_url": receiver.url, "verify_token": VERIFY_TOKEN, "sandbox": sandbox })),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["webhook_verified"], true);
        let (status, added) = node
            .admin(
                reqwest::Method::POST,
                &format!("/admin/v1/businesses/{waba}/phone_numbers"),
                Some(json!({ "phone_number_id": phone_number_id, "display_phone_number": format!("+{number}"), "verified_name": format!("Shop {waba}") })),
            )
            .await;
        assert_eq!(status, 201, "{added}");
        let (status, token) = node
            .admin(
                reqwest::Method::POST,
                &format!("/admin/v1/businesses/{waba}/tokens"),
                Some(json!({ "label": "test" })),
            )
            .await;
        assert_eq!(status, 201, "{token}");
        Business {
            phone_number_id: phone_number_id.into(),
            number: number.parse().unwrap(),
            token: token["token"].as_str().unwrap().into(),
            receiver,
            hooks,
        }
    }

    /// Sends a text through the Cloud API: (HTTP status, body).
    pub async fn send_text(&self, node: &Node, to: &PhoneNumber, body: &str) -> (u16, Value) {
        let request = json!({ "messaging_product": "whatsapp", "recipient_type": "individual", "to": format!("+{to}"), "type": "text", "text": { "preview_url": false, "body": body } });
        node.api_raw(
            &format!("/v23.0/{}/messages", self.phone_number_id),
            Some(&self.token),
            request.to_string(),
        )
        .await
    }

    /// The next webhook event (its `value`), within the test timeout.
    pub async fn next_event(&mut self) -> (Value, Delivery) {
        let delivery = tokio::time::timeout(WAIT, self.hooks.recv())
            .await
            .expect("a webhook in time")
            .unwrap();
        let value = delivery.event["entry"][0]["changes"][0]["value"].clone();
        (value, delivery)
    }

    /// Waits for the next inbound-message event, skipping statuses.
    pub async fn next_message(&mut self) -> Value {
        loop {
            let (value, _) = self.next_event().await;
            if value.get("messages").is_some() {
                return value;
            }
        }
    }

    /// Waits for a status event of `id` with `status`, skipping others.
    pub async fn wait_status(&mut self, id: &str, status: &str) -> Value {
        loop {
            let (value, _) = self.next_event().await;
            let s = &value["statuses"][0];
            if s["id"] == id && s["status"] == status {
                return value;
            }
        }
    }
}

/// An end user's device, running in the test process against the node's relay.
pub struct Device {
    pub phone: PhoneNumber,
    pub endpoint: Arc<Endpoint>,
    pub live: mpsc::UnboundedReceiver<Inbound>,
    stop: watch::Sender<bool>,
}

impl Device {
    /// Registers a device for `phone` (code read through the admin API) and connects it.
    pub async fn register(node: &Node, dir: &Path, phone: &str, name: &str) -> Device {
        let phone: PhoneNumber = phone.parse().unwrap();
        let http = reqwest::Client::new();
        request_code(&http, &node.url, &phone).await.unwrap();
        let (status, code) = node
            .admin(
                reqwest::Method::GET,
                &format!("/relay/v1/admin/verifications/{phone}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("device.key"), SealKey::generate().to_base64()).unwrap();
        let (store, sealer) = Self::local(dir);
        let code = code["code"].as_str().unwrap().to_owned();
        register(
            &http,
            &node.url,
            &phone,
            name,
            Proof::Code(code),
            store.as_ref(),
            &sealer,
        )
        .await
        .unwrap();
        Self::connect(node, dir, &phone).await
    }

    pub fn local(dir: &Path) -> (Arc<SqliteEndpointStore>, Sealer) {
        let key = std::fs::read_to_string(dir.join("device.key")).unwrap();
        let sealer = Sealer::new(SealKey::from_base64(&key).unwrap());
        (
            Arc::new(SqliteEndpointStore::open(&dir.join("device.db")).unwrap()),
            sealer,
        )
    }

    /// (Re)connects a registered device and starts processing what the relay sends.
    pub async fn connect(node: &Node, dir: &Path, phone: &PhoneNumber) -> Device {
        let (store, sealer) = Self::local(dir);
        let (stop, shutdown) = watch::channel(false);
        let (endpoint, events) = Endpoint::open(store, sealer, phone, &node.url, true, shutdown)
            .await
            .unwrap();
        let (app, live) = UserDevice::with_live_events();
        let app: Arc<dyn Application> = Arc::new(app);
        tokio::spawn(Arc::clone(&endpoint).run(events, app));
        Device {
            phone: phone.clone(),
            endpoint,
            live,
            stop,
        }
    }

    pub async fn disconnect(self) {
        let _ = self.stop.send(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    pub async fn send(&self, to: &PhoneNumber, text: &str) -> ventana_client::Sent {
        let content = Content::Text {
            body: text.into(),
            preview_url: false,
        };
        self.endpoint
            .send_message(to, content, None, &UserDevice::default())
            .await
            .unwrap()
    }

    /// The next inbound message's payload.
    pub async fn next_message(&mut self) -> (ventana_client::InboundMeta, Payload) {
        self.next_message_within(WAIT).await
    }

    /// [`Self::next_message`] with a longer wait (for a takeover between nodes).
    pub async fn next_message_within(
        &mut self,
        wait: Duration,
    ) -> (ventana_client::InboundMeta, Payload) {
        loop {
            match tokio::time::timeout(wait, self.live.recv())
                .await
                .expect("a message in time")
                .unwrap()
            {
                Inbound::Message { meta, payload } => return (meta, payload),
                _ => continue,
            }
        }
    }

    /// Asserts that no message arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        let got = tokio::time::timeout(wait, async {
            loop {
                if let Some(Inbound::Message { payload, .. }) = self.live.recv().await {
                    return payload;
                }
            }
        })
        .await;
        assert!(got.is_err(), "unexpected message: {got:?}");
    }

    pub async fn history(&self) -> Vec<MessageRecord> {
        self.endpoint
            .store()
            .messages(self.endpoint.owner(), 1000)
            .await
            .unwrap()
    }

    /// Waits until the stored status of an own message reaches `status`.
    pub async fn wait_own_status(&self, id: &ventana_core::MessageId, status: &str) {
        tokio::time::timeout(WAIT, async {
            loop {
                let record = self
                    .endpoint
                    .store()
                    .message(self.endpoint.owner(), id)
                    .await
                    .unwrap();
                if record.is_some_and(|r| r.status.as_str() == status) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id} never became {status}"));
    }
}

pub fn text_of(payload: &Payload) -> &str {
    match &payload.content {
        Content::Text { body, .. } => body,
        other => panic!("expected a text message, got {other:?}"),
    }
}
