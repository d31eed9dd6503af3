//! The world a scenario runs in, set up through the same paths production uses: a node on a
//! fresh temporary data directory, a business created through the admin API with a webhook
//! receiver on loopback, and user devices registered with a one-time code and connected over
//! WebSockets, each a real `ventana_client::Endpoint` that decrypts, commits and acknowledges.

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use reqwest::Method;
use serde_json::json;
use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::{Semaphore, mpsc, watch};
use ventana_client::registration::{Proof, register, request_code};
use ventana_client::{Application, ClientError, Endpoint, Inbound, Settlement};
use ventana_core::PhoneNumber;
use ventana_core::payload::Content;
use ventana_crypto::{SealKey, Sealer, Token};
use ventana_node::{AdminClient, Config, Delivery, WebhookReceiver};
use ventana_store::EndpointStore;
use ventana_store::endpoint::AppRecord;
use ventana_store::sqlite::SqliteEndpointStore;

pub const WABA: &str = "100000000000777";
pub const PHONE_NUMBER_ID: &str = "200000000000777";
/// The business number; `history` pre-fills rows owned by it.
pub const BUSINESS_NUMBER: &str = "15550107777";
const APP_SECRET: &str = "bench-app-secret-0123456789";
const VERIFY_TOKEN: &str = "bench-verify-token";
/// How long a node gets to start or to stop.
const NODE_WAIT: Duration = Duration::from_secs(30);

/// The `i`th bench user's number: +34 600 000 000 onwards.
pub fn user_number(i: usize) -> String {
    format!("346{:08}", i)
}

/// The text of a bench message: its sequence number, then filler to a typical length.
pub fn message_text(seq: u64) -> String {
    format!("bench {seq} Your order has shipped and should arrive tomorrow before noon.")
}

/// The sequence number a bench message's text carries.
pub fn seq_of(text: &str) -> Option<u64> {
    text.strip_prefix("bench ")?.split(' ').next()?.parse().ok()
}

/// A node's address and an operator's client for it; cheap to clone.
#[derive(Clone)]
pub struct NodeAccess {
    pub url: String,
    admin: Arc<AdminClient>,
}

impl NodeAccess {
    pub fn new(url: String, admin_token: String) -> Self {
        Self {
            admin: Arc::new(AdminClient::new(url.clone(), admin_token)),
            url,
        }
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.admin.call(method, path, body).await
    }

    /// Waits until `GET /healthz` answers.
    pub async fn wait_healthy(&self) -> Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + NODE_WAIT;
        while Instant::now() < deadline {
            if http
                .get(format!("{}/healthz", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("the node at {} did not come up", self.url)
    }
}

/// A node running in this process (`ventana_node::run`) on its own temporary directory.
pub struct BenchNode {
    pub access: NodeAccess,
    data_dir: TempDir,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl BenchNode {
    /// A fresh temporary data directory on the disk the node would use (the system temp
    /// directory), never on tmpfs: the node's fsyncs are what is measured.
    pub fn fresh_data_dir() -> Result<TempDir> {
        Ok(tempfile::Builder::new()
            .prefix("ventana-bench-node-")
            .tempdir()?)
    }

    /// Starts a node on `data_dir`, which may already hold stores (pre-filled history).
    pub async fn start(data_dir: TempDir) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let admin_token = Token::generate("vop").expose().to_owned();
        let mut config = Config::default();
        config.server.listen = listener.local_addr()?;
        config.storage.data_dir = data_dir.path().to_path_buf();
        config.security.admin_token = Some(admin_token.clone());
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(ventana_node::run(config, listener, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        let node = Self {
            access: NodeAccess::new(url, admin_token),
            data_dir,
            stop,
            task,
        };
        node.access.wait_healthy().await?;
        Ok(node)
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Graceful shutdown (connections closed, in-flight work finished), then the data
    /// directory is removed.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(NODE_WAIT, self.task).await {
            Ok(joined) => joined.map_err(|e| anyhow!("the node task failed: {e}"))??,
            Err(_) => bail!("the node did not stop within {NODE_WAIT:?}"),
        }
        drop(self.data_dir);
        Ok(())
    }
}

/// The bench business: one number, an access token, and its webhook receiver.
pub struct BenchBusiness {
    pub number: PhoneNumber,
    pub token: String,
    /// `POST` here to send: `/v23.0/{phone_number_id}/messages`.
    pub messages_url: String,
    pub hooks: mpsc::UnboundedReceiver<Delivery>,
}

impl BenchBusiness {
    /// Creates the business, adds its number and issues a token, as the demo does. Its
    /// receiver answers each webhook after `hook_delay`.
    pub async fn create(node: &NodeAccess, hook_delay: Duration) -> Result<Self> {
        let (receiver, hooks) = WebhookReceiver::start(APP_SECRET, VERIFY_TOKEN).await?;
        receiver.set_delay(hook_delay);
        node.admin(
            Method::POST,
            "/admin/v1/businesses",
            Some(json!({ "waba_id": WABA, "name": "Bench Shop", "app_secret": APP_SECRET, "webhook_url": receiver.url, "verify_token": VERIFY_TOKEN, "sandbox": false })),
        )
        .await
        .context("creating the bench business")?;
        node.admin(
            Method::POST,
            &format!("/admin/v1/businesses/{WABA}/phone_numbers"),
            Some(json!({ "phone_number_id": PHONE_NUMBER_ID, "display_phone_number": format!("+{BUSINESS_NUMBER}"), "verified_name": "Bench Shop" })),
        )
        .await
        .context("adding the bench number")?;
        let token = node
            .admin(
                Method::POST,
                &format!("/admin/v1/businesses/{WABA}/tokens"),
                Some(json!({ "label": "bench" })),
            )
            .await?;
        let token = token["token"]
            .as_str()
            .context("the token was not in the answer")?
            .to_owned();
        Ok(Self {
            number: BUSINESS_NUMBER.parse()?,
            token,
            messages_url: format!("{}/v23.0/{PHONE_NUMBER_ID}/messages", node.url),
            hooks,
        })
    }
}

/// A webhook event the scenarios care about.
#[derive(Debug, Clone)]
pub enum Hook {
    Message {
        from: String,
        id: String,
        text: String,
    },
    Status {
        id: String,
        status: String,
    },
}

impl Hook {
    pub fn of(delivery: &Delivery) -> Option<Self> {
        let value = &delivery.event["entry"][0]["changes"][0]["value"];
        if let Some(message) = value["messages"].get(0) {
            return Some(Self::Message {
                from: message["from"].as_str()?.to_owned(),
                id: message["id"].as_str()?.to_owned(),
                text: message["text"]["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        let status = value["statuses"].get(0)?;
        Some(Self::Status {
            id: status["id"].as_str()?.to_owned(),
            status: status["status"].as_str()?.to_owned(),
        })
    }
}

/// A message a bench device decrypted and committed, and when.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub user: usize,
    /// `None` for a message that is not a bench message.
    pub seq: Option<u64>,
    pub at: Instant,
}

/// The application of a bench device: like `UserDevice` (no effects beyond the engine's
/// own history), but it reports each message once it is committed — before the ack goes
/// out — with the time, which ends an accept→device latency.
struct BenchApp {
    user: usize,
    arrivals: mpsc::UnboundedSender<Arrival>,
}

#[async_trait]
impl Application for BenchApp {
    async fn inbound(&self, _: &Endpoint, _: &Inbound) -> Result<Vec<AppRecord>, ClientError> {
        Ok(Vec::new())
    }

    async fn settled(&self, _: &Endpoint, _: &Settlement) -> Result<Vec<AppRecord>, ClientError> {
        Ok(Vec::new())
    }

    fn committed(&self, _: &Endpoint, event: &Inbound) {
        if let Inbound::Message { payload, .. } = event
            && let Content::Text { body, .. } = &payload.content
        {
            let _ = self.arrivals.send(Arrival {
                user: self.user,
                seq: seq_of(body),
                at: Instant::now(),
            });
        }
    }
}

/// Where the devices keep their stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStores {
    /// One SQLite file per device, as on real phones.
    PerDevice,
    /// One file for all (an endpoint store holds any number of owners): 10,000 idle devices
    /// would otherwise hold 30,000 file descriptors.
    Shared,
}

/// A registered device, not yet connected.
pub struct Registered {
    pub user: usize,
    pub phone: PhoneNumber,
    store: Arc<dyn EndpointStore>,
    sealer: Sealer,
}

/// A connected device; cheap to clone.
#[derive(Clone)]
pub struct Device {
    pub user: usize,
    pub phone: PhoneNumber,
    pub endpoint: Arc<Endpoint>,
    app: Arc<dyn Application>,
}

impl Device {
    /// Sends a text through the device's own engine (encrypt, commit, submit).
    pub async fn send_text(&self, to: &PhoneNumber, text: String) -> Result<()> {
        let content = Content::Text {
            body: text,
            preview_url: false,
        };
        self.endpoint
            .send_message(to, content, None, self.app.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| anyhow!("{} could not send: {e}", self.phone))
    }
}

/// The devices of a run, and their stores' directory.
pub struct Devices {
    pub list: Vec<Device>,
    stop: watch::Sender<bool>,
    /// Kept until the devices are gone.
    _dir: Arc<TempDir>,
}

/// The devices' directory: on tmpfs (`/dev/shm`) when there is one, else the temp
/// directory. Devices stand for phones elsewhere; their fsyncs would otherwise compete with
/// the node's for this machine's one disk.
pub fn device_dir() -> Result<Arc<TempDir>> {
    let builder = tempfile::Builder::new()
        .prefix("ventana-bench-devices-")
        .clone();
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return Ok(Arc::new(dir));
    }
    Ok(Arc::new(builder.tempdir()?))
}

/// Registers users `0..count` through the real path (code requested, read through the admin
/// API as the development verifier allows, keys generated and uploaded), `parallelism` at a
/// time. `tick` is called after each.
pub async fn register_devices(
    node: &NodeAccess,
    count: usize,
    parallelism: usize,
    stores: DeviceStores,
    dir: &Arc<TempDir>,
    tick: impl Fn() + Send + Sync + 'static,
) -> Result<Vec<Registered>> {
    let shared: Option<Arc<dyn EndpointStore>> = match stores {
        DeviceStores::Shared => Some(Arc::new(SqliteEndpointStore::open(
            &dir.path().join("devices.db"),
        )?)),
        DeviceStores::PerDevice => None,
    };
    let http = reqwest::Client::new();
    let permits = Arc::new(Semaphore::new(parallelism.max(1)));
    let tick = Arc::new(tick);
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..count {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let (http, node, tick) = (http.clone(), node.clone(), Arc::clone(&tick));
        let store = match &shared {
            Some(store) => Arc::clone(store),
            None => Arc::new(SqliteEndpointStore::open(
                &dir.path().join(format!("{user}.db")),
            )?) as Arc<dyn EndpointStore>,
        };
        tasks.spawn(async move {
            let registered = register_one(&http, &node, user, store).await;
            drop(permit);
            tick();
            registered
        });
    }
    let mut registered = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        registered.push(done??);
    }
    registered.sort_by_key(|r| r.user);
    Ok(registered)
}

async fn register_one(
    http: &reqwest::Client,
    node: &NodeAccess,
    user: usize,
    store: Arc<dyn EndpointStore>,
) -> Result<Registered> {
    let phone: PhoneNumber = user_number(user).parse()?;
    request_code(http, &node.url, &phone).await?;
    let code = node
        .admin(
            Method::GET,
            &format!("/relay/v1/admin/verifications/{phone}"),
            None,
        )
        .await?;
    let code = code["code"]
        .as_str()
        .context("no verification code in the answer")?
        .to_owned();
    let sealer = Sealer::new(SealKey::generate());
    register(
        http,
        &node.url,
        &phone,
        &format!("User {user}"),
        Proof::Code(code),
        store.as_ref(),
        &sealer,
    )
    .await
    .with_context(|| format!("registering {phone}"))?;
    Ok(Registered {
        user,
        phone,
        store,
        sealer,
    })
}

impl Devices {
    /// Registers users `0..count` (each with a store of its own), shows progress, and
    /// connects them; `arrivals(user)` is where each reports decrypted messages.
    pub async fn start_users(
        node: &NodeAccess,
        count: usize,
        parallelism: usize,
        arrivals: impl Fn(usize) -> mpsc::UnboundedSender<Arrival>,
    ) -> Result<Self> {
        status(format!("registering {count} user devices"));
        let dir = device_dir()?;
        let registered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let progress = {
            let registered = Arc::clone(&registered);
            Progress::start(move || {
                format!(
                    "registered {} of {count}",
                    registered.load(std::sync::atomic::Ordering::Relaxed)
                )
            })
        };
        let ticks = Arc::clone(&registered);
        let list = register_devices(
            node,
            count,
            parallelism,
            DeviceStores::PerDevice,
            &dir,
            move || {
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
        )
        .await?;
        drop(progress);
        Self::connect(node, list, dir, arrivals).await
    }

    /// Opens every registered device's endpoint: each connects to the relay and processes
    /// what it sends. `arrivals(user)` is where that device reports decrypted messages.
    pub async fn connect(
        node: &NodeAccess,
        registered: Vec<Registered>,
        dir: Arc<TempDir>,
        arrivals: impl Fn(usize) -> mpsc::UnboundedSender<Arrival>,
    ) -> Result<Self> {
        let (stop, shutdown) = watch::channel(false);
        let mut list = Vec::with_capacity(registered.len());
        for r in registered {
            let (endpoint, events) = Endpoint::open(
                r.store,
                r.sealer,
                &r.phone,
                &node.url,
                true,
                shutdown.clone(),
            )
            .await?;
            let app: Arc<dyn Application> = Arc::new(BenchApp {
                user: r.user,
                arrivals: arrivals(r.user),
            });
            tokio::spawn(Arc::clone(&endpoint).run(events, Arc::clone(&app)));
            list.push(Device {
                user: r.user,
                phone: r.phone,
                endpoint,
                app,
            });
        }
        Ok(Self {
            list,
            stop,
            _dir: dir,
        })
    }

    pub fn connected(&self) -> usize {
        self.list
            .iter()
            .filter(|d| d.endpoint.link().is_connected())
            .count()
    }

    /// Each device writes to the business first (contact-first: a business may only answer
    /// users who wrote to it), which also opens the 24-hour window and the Olm sessions.
    /// Returns once `received()` — the business's count of inbound webhooks — reaches the
    /// number of devices.
    pub async fn greet(
        &self,
        business: &PhoneNumber,
        parallelism: usize,
        received: impl Fn() -> u64,
    ) -> Result<()> {
        let permits = Arc::new(Semaphore::new(parallelism.max(1)));
        let mut sends = tokio::task::JoinSet::new();
        for device in &self.list {
            let permit = Arc::clone(&permits).acquire_owned().await?;
            let (device, business) = (device.clone(), business.clone());
            sends.spawn(async move {
                let sent = device.send_text(&business, "hello".into()).await;
                drop(permit);
                sent
            });
        }
        while let Some(sent) = sends.join_next().await {
            sent??;
        }
        let users = self.list.len();
        let limit = Duration::from_secs(60) + Duration::from_millis(100 * users as u64);
        wait_until(
            "the business receiving every user's first message",
            limit,
            || received() >= users as u64,
        )
        .await
    }

    /// Closes every device's connection.
    pub async fn disconnect(self) {
        let _ = self.stop.send(true);
        // Let the links see it and close their sockets before the node goes.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `done` every 20 ms until it holds, for at most `limit`.
pub async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            bail!("{what}: not done within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A line on stderr, redrawn every second (every five when stderr is not a terminal).
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
    tty: bool,
}

impl Progress {
    pub fn start(line: impl Fn() -> String + Send + 'static) -> Self {
        let tty = std::io::stderr().is_terminal();
        let every = Duration::from_secs(if tty { 1 } else { 5 });
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if tty {
                    eprint!("\r\x1b[2K{}", line());
                } else {
                    eprintln!("{}", line());
                }
            }
        });
        Self { task, tty }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Says what is happening on stderr.
pub fn status(text: impl AsRef<str>) {
    eprintln!("· {}", text.as_ref());
}
