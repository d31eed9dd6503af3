//! The relay's template registry: a business submits, edits, lists and deletes templates over
//! its WebSocket; the operator reviews them through the admin API (or a lint policy does);
//! template envelopes are checked against the registry. Devices here are registered at the
//! relay directly and speak the client protocol through `RelayLink`, without a gateway.
//!
//! Every case runs on SQLite, and on PostgreSQL when `VENTANA_TEST_POSTGRES` is set.
//!
//! - `registry`: what a business does with its templates (create, limit, list, edit,
//!   delete), what others may see of them, and the business clock;
//! - `review`: the operator's review through the admin API, and the lint policy;
//! - `sending`: template envelopes checked against the registry.

use crate::harness::{ADMIN_TOKEN, Database, Node, WAIT};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use ventana_client::registration::request_code;
use ventana_client::{LinkError, LinkEvent, RelayLink};
use ventana_core::protocol::{
    BusinessNumber, Ciphertext, DeviceCopy, DeviceKeys, DeviceRegistration, Envelope, ErrorCode,
    Op, ProtocolError, Registered, Reply, Submission, TemplateInfo, TemplateQuery,
};
use ventana_core::rules::{EnvelopeKind, RuleViolation};
use ventana_core::template::{Category, TemplateHeader, TemplateStatus};
use ventana_core::{DeviceId, MessageId, PhoneNumber, UnixTime};
use ventana_crypto::DeviceAccount;
use ventana_node::Config;
use ventana_relay::{Review, TemplatePolicy};

/// One `#[tokio::test]` per case and backend: `sqlite::case` always, `postgres::case` when a
/// server is configured (otherwise it returns at once).
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(crate::template_review::Backend::Sqlite).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(db) = crate::harness::Database::create().await else {
                        return;
                    };
                    super::$case(crate::template_review::Backend::Postgres(db)).await;
                }
            )*
        }
    };
}

mod registry;
mod review;
mod sending;

enum Backend {
    Sqlite,
    Postgres(Database),
}

impl Backend {
    async fn start(&self, templates: TemplatePolicy) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = Config::default();
        config.server.listen = listener.local_addr().unwrap();
        config.storage.data_dir = dir.path().join("node");
        config.security.admin_token = Some(ADMIN_TOKEN.into());
        config.templates = templates;
        if let Backend::Postgres(db) = self {
            config.storage.database_url = Some(db.url.clone());
            config.security.seal_key = Some("dGVzdC1zZWFsLWtleS10ZXN0LXNlYWwta2V5LTAxMjM=".into());
        }
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(ventana_node::run(config, listener, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        let node = Node::attach(&url);
        for _ in 0..200 {
            let ready = node.http.get(format!("{url}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Lab {
            node,
            stop,
            task,
            dir,
        }
    }
}

/// A node with a template policy of the test's choosing.
struct Lab {
    node: Node,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    dir: tempfile::TempDir,
}

impl Lab {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("node stops in time")
            .unwrap()
            .unwrap();
    }

    /// Registers a device at the relay: a business number (operator token) or, with
    /// `business: None`, a user proving the number with the development code.
    async fn register(&self, phone: &str, business: Option<BusinessNumber>) -> Link {
        let phone: PhoneNumber = phone.parse().unwrap();
        let mut code = None;
        if business.is_none() {
            request_code(&self.node.http, &self.node.url, &phone)
                .await
                .unwrap();
            let (status, peeked) = self
                .node
                .admin(
                    Method::GET,
                    &format!("/relay/v1/admin/verifications/{phone}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{peeked}");
            code = peeked["code"].as_str().map(str::to_owned);
        }
        let mut account = DeviceAccount::new();
        let (one_time_keys, fallback_key) = account.unpublished_keys(4, true);
        let registration = DeviceRegistration {
            phone: phone.clone(),
            code,
            business,
            keys: DeviceKeys {
                curve25519: account.curve25519(),
                ed25519: account.ed25519(),
                one_time_keys,
                fallback_key,
            },
        };
        let response = self
            .node
            .http
            .post(format!("{}/relay/v1/devices", self.node.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let registered: Registered = response.json().await.unwrap();
        let (stop, shutdown) = watch::channel(false);
        let (link, events) = RelayLink::start(&self.node.url, &registered.token, true, shutdown);
        Link {
            link,
            events,
            phone,
            device: registered.device_id,
            _stop: stop,
        }
    }

    async fn business(&self, waba: &str, phone: &str, sandbox: bool) -> Link {
        let number = BusinessNumber {
            waba_id: waba.parse().unwrap(),
            verified_name: format!("Shop {waba}"),
            sandbox,
        };
        self.register(phone, Some(number)).await
    }

    async fn user(&self, phone: &str) -> Link {
        self.register(phone, None).await
    }

    /// `POST /relay/v1/admin/templates/{id}/{action}`.
    async fn review(&self, id: &str, action: &str, body: Value) -> (u16, Value) {
        let path = format!("/relay/v1/admin/templates/{id}/{action}");
        self.node.admin(Method::POST, &path, Some(body)).await
    }

    async fn approve(&self, id: &str) {
        let (status, body) = self.review(id, "approve", json!({})).await;
        assert_eq!(status, 200, "{body}");
    }

    fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.node.admin(Method::GET, path, None).await
    }
}

/// One device's connection to the relay.
struct Link {
    link: RelayLink,
    events: mpsc::Receiver<LinkEvent>,
    phone: PhoneNumber,
    device: DeviceId,
    _stop: watch::Sender<bool>,
}

impl Link {
    async fn ask(&self, op: Op) -> Result<Reply, ProtocolError> {
        match self.link.request(op, WAIT).await {
            Ok(reply) => Ok(reply),
            Err(LinkError::Refused(error)) => Err(error),
            Err(other) => panic!("the relay did not answer: {other}"),
        }
    }

    async fn refused(&self, op: Op) -> ProtocolError {
        match self.ask(op).await {
            Err(error) => error,
            Ok(reply) => panic!("expected a refusal, got {reply:?}"),
        }
    }

    async fn template(&self, op: Op) -> TemplateInfo {
        match self.ask(op).await {
            Ok(Reply::Template { template }) => template,
            other => panic!("expected a template, got {other:?}"),
        }
    }

    async fn create(&self, definition: Value) -> TemplateInfo {
        self.template(Op::TemplateCreate { definition }).await
    }

    async fn list(&self, query: TemplateQuery) -> (Vec<TemplateInfo>, bool, bool) {
        match self.ask(Op::TemplateList { query }).await {
            Ok(Reply::Templates {
                templates,
                has_before,
                has_after,
            }) => (templates, has_before, has_after),
            other => panic!("expected templates, got {other:?}"),
        }
    }

    async fn now(&self) -> UnixTime {
        match self.ask(Op::Clock).await {
            Ok(Reply::Clock { now }) => now,
            other => panic!("expected the clock, got {other:?}"),
        }
    }

    /// Sends an envelope with one (opaque) copy per listed device.
    async fn send(
        &self,
        id: &MessageId,
        to: &Link,
        kind: EnvelopeKind,
        template: Option<TemplateHeader>,
    ) -> Result<Reply, ProtocolError> {
        let submission = Submission {
            id: id.clone(),
            to: to.phone.clone(),
            kind,
            template,
            copies: vec![DeviceCopy {
                device: to.device,
                ciphertext: Ciphertext {
                    message_type: 0,
                    body: format!("opaque-{id}"),
                },
            }],
            receipt: None,
            manual: false,
            resend: false,
        };
        self.ask(Op::Send(Box::new(submission))).await
    }

    async fn next_envelope(&mut self) -> Envelope {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(LinkEvent::Envelope(envelope)) = self.events.recv().await {
                    return envelope;
                }
            }
        })
        .await
        .expect("an envelope in time")
    }
}

fn definition(name: &str, language: &str, category: &str, body: &str) -> Value {
    json!({
        "name": name,
        "language": language,
        "category": category,
        "components": [{"type": "BODY", "text": body}],
    })
}

fn shipped(name: &str) -> Value {
    definition(
        name,
        "en_US",
        "UTILITY",
        "Your parcel left our warehouse today and is on its way.",
    )
}

fn header_of(template: &TemplateInfo) -> TemplateHeader {
    TemplateHeader {
        id: template.id.clone(),
        name: template.name.clone(),
        language: template.language.clone(),
        version: template.version,
        category: template.category,
    }
}
