//! `ventana serve` as a child process the tests can SIGKILL and restart, and what the
//! business's webhook receiver got from such nodes.

use crate::harness::{ADMIN_TOKEN as ADMIN, Database};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `ventana serve` child process on a fixed port, which a test can kill and start again.
pub struct ServeNode {
    pub name: &'static str,
    pub port: u16,
    pub child: Option<Child>,
    /// More variables for the process (`VENTANA_CONFIG`, say).
    pub env: Vec<(&'static str, String)>,
}

impl ServeNode {
    pub fn new(name: &'static str, port: u16) -> ServeNode {
        ServeNode {
            name,
            port,
            child: None,
            env: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process: on `db` if given, else on SQLite files in `<logs>/<name>` (the
    /// same files again after a restart).
    pub fn start(&mut self, db: Option<&Database>, seal_key: &str, logs: &std::path::Path) {
        let log = std::fs::File::create(logs.join(format!(
            "{}-{}.log",
            self.name,
            rand::random::<u16>()
        )))
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ventana"));
        if let Some(db) = db {
            command.env("VENTANA_DATABASE_URL", &db.url);
        }
        command.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        let child = command
            .arg("serve")
            .env("VENTANA_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("VENTANA_SEAL_KEY", seal_key)
            .env("VENTANA_ADMIN_TOKEN", ADMIN)
            .env("VENTANA_NODE_ID", self.name)
            .env("VENTANA_DATA_DIR", logs.join(self.name))
            .env("VENTANA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Sends SIGKILL, and collects the process.
    pub fn kill(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status();
        }
        self.reap();
    }

    /// Collects a child that was killed.
    pub fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for ServeNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub async fn ready(http: &reqwest::Client, url: &str) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if http
                .get(format!("{url}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{url} did not come up"));
}

pub enum Sent {
    Accepted(Option<String>),
    /// Never reached the node (it was down).
    Refused,
    /// Cut off mid-request: the message may or may not have been accepted.
    InDoubt,
}

/// What the business's webhook receiver got, by event id.
#[derive(Default)]
pub struct WebhookLog {
    pub event_ids: HashSet<String>,
    /// Inbound message events by message id.
    pub messages: HashMap<String, u32>,
    /// Status events by event id (`<wamid>.<status>`).
    pub status_ids: HashSet<String>,
    pub statuses: usize,
    pub redeliveries: usize,
}

pub type Hooks = tokio::sync::mpsc::UnboundedReceiver<ventana_node::Delivery>;

impl WebhookLog {
    /// Reads deliveries until `done` holds, or panics after `within` saying `what` is missing.
    pub async fn until(
        &mut self,
        hooks: &mut Hooks,
        within: Duration,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) {
        let outcome = tokio::time::timeout(within, async {
            while !done(self) {
                let Some(delivery) = hooks.recv().await else {
                    return;
                };
                self.record(&delivery);
            }
        })
        .await;
        assert!(outcome.is_ok() && done(self), "{what} never arrived");
    }

    /// Until every id in `expected` has arrived as an inbound message event.
    pub async fn wait_for(
        &mut self,
        hooks: &mut Hooks,
        expected: &HashSet<String>,
        within: Duration,
    ) {
        let missing = |log: &Self| {
            expected
                .iter()
                .filter(|id| !log.messages.contains_key(*id))
                .count()
        };
        let what = format!("some of {} user messages", expected.len());
        self.until(hooks, within, &what, |log| missing(log) == 0)
            .await;
    }

    pub fn record(&mut self, delivery: &ventana_node::Delivery) {
        let id = delivery.event_id.clone().expect("every event has an id");
        if !self.event_ids.insert(id.clone()) {
            self.redeliveries += 1;
        }
        let value = &delivery.event["entry"][0]["changes"][0]["value"];
        if let Some(message) = value["messages"].get(0) {
            *self
                .messages
                .entry(message["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        } else {
            self.statuses += 1;
            self.status_ids.insert(id);
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
