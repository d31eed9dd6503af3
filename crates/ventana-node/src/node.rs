//! The all-in-one node: a relay and a hosted gateway on one listener, each with its own store:
//! SQLite files (`relay.db`, `gateway.db`) in the data directory by default, or the schemas
//! `relay` and `gateway` of a PostgreSQL database shared by several nodes.

use crate::config::{Backend, Config};
use crate::http::{
    self,
    limits::{self, RequestLimits},
};
use anyhow::{Context, Result};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use ventana_crypto::{SealKey, Sealer, Token};
use ventana_gateway::{Gateway, RelayAccess};
use ventana_relay::{BillingSettings, DevVerifier, Relay};
use ventana_store::postgres::{PgEndpointStore, PgRelayStore};
use ventana_store::relay::ManualLimit;
use ventana_store::sqlite::{SqliteEndpointStore, SqliteRelayStore};
use ventana_store::{GatewayStore, RelayStore};

/// Reads a secret from `<data_dir>/<name>`, creating it (mode 0600) with `make` if absent.
pub fn secret_file(data_dir: &Path, name: &str, make: impl FnOnce() -> String) -> Result<String> {
    let path = data_dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text.trim().to_owned());
    }
    let value = make();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write as _;
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(value.as_bytes())?;
    file.sync_all()?;
    Ok(value)
}

/// The operator token of a data directory (configured, or generated on first start).
pub fn admin_token(config: &Config) -> Result<String> {
    match &config.security.admin_token {
        Some(token) => Ok(token.clone()),
        None => secret_file(&config.storage.data_dir, "admin.token", || {
            Token::generate("vop").expose().to_owned()
        }),
    }
}

/// The relay's and the gateway's stores on the configured backend.
async fn open_stores(backend: &Backend) -> Result<(Arc<dyn RelayStore>, Arc<dyn GatewayStore>)> {
    Ok(match backend {
        Backend::Sqlite { data_dir } => (
            Arc::new(
                SqliteRelayStore::open(&data_dir.join("relay.db")).context("opening relay.db")?,
            ),
            Arc::new(
                SqliteEndpointStore::open(&data_dir.join("gateway.db"))
                    .context("opening gateway.db")?,
            ),
        ),
        Backend::Postgres { url } => (
            Arc::new(
                PgRelayStore::connect(url, "relay")
                    .await
                    .context("connecting the relay store")?,
            ),
            Arc::new(
                PgEndpointStore::connect(url, "gateway")
                    .await
                    .context("connecting the gateway store")?,
            ),
        ),
    })
}

/// Reads the pricing policy again on each SIGHUP, until shutdown. A file that does not read
/// is logged and refused; the versions loaded before stay in force.
async fn reload_on_hangup(relay: Arc<Relay>, mut shutdown: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be watched; reload the policy through the admin API");
            return;
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            match relay.load_policy().await {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "pricing policy not reloaded; the running version stays in force")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (relay, shutdown.wait_for(|stop| *stop).await);
    }
}

/// Runs a node on `listener` until `shutdown` resolves, then drains: device connections
/// close, in-flight requests finish, the webhook worker finishes its current deliveries.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let backend = config.backend()?;
    let data_dir = &config.storage.data_dir;
    if matches!(backend, Backend::Sqlite { .. }) {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
    }
    let admin_token = admin_token(&config)?;
    let seal_key = match &config.security.seal_key {
        Some(key) => key.clone(),
        None => secret_file(data_dir, "seal.key", || SealKey::generate().to_base64())?,
    };
    let sealer = Sealer::new(SealKey::from_base64(&seal_key).context("security.seal_key")?);
    let (relay_store, gateway_store) = open_stores(&backend).await?;
    // One SQLite node is always the same node (after a crash it takes its leases back at
    // once); nodes sharing PostgreSQL need distinct names, random unless configured.
    let node = match (&config.cluster.node_id, &backend) {
        (Some(node), _) => node.clone(),
        (None, Backend::Sqlite { .. }) => "local".to_owned(),
        (None, Backend::Postgres { .. }) => Token::generate("node").expose()[5..17].to_owned(),
    };

    config.server.check()?;
    config
        .relay
        .check()
        .map_err(|e| anyhow::anyhow!("[relay]: {e}"))?;
    let relay_limits = ventana_relay::RelayLimits {
        loopback_exempt: config.server.loopback_exempt,
        ..config.relay.clone()
    };
    config
        .webhooks
        .check()
        .map_err(|e| anyhow::anyhow!("[webhooks]: {e}"))?;
    if config.billing.manual_replies_per_minute == 0 {
        anyhow::bail!(
            "billing.manual_replies_per_minute must be at least 1 (make a business `api` tier to allow no replies by hand)"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let relay = Relay::new(
        relay_store,
        Arc::new(DevVerifier),
        &Token::from_presented(&admin_token),
        config.templates.clone(),
        BillingSettings {
            policy_file: config.billing.policy_file.clone(),
            manual_limit: ManualLimit {
                min_gap_secs: config.billing.manual_reply_min_gap_secs,
                per_minute: config.billing.manual_replies_per_minute,
            },
        },
        relay_limits,
        stop_rx.clone(),
    );
    // A node does not rate under a policy it could not read: a bad file stops the start (on
    // a reload, the versions loaded before stay in force).
    relay
        .load_policy()
        .await
        .context("loading the pricing policy ([billing] policy_file)")?;
    tokio::spawn(reload_on_hangup(Arc::clone(&relay), stop_rx.clone()));
    let mut local = listener.local_addr()?;
    if local.ip().is_unspecified() {
        local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let access = RelayAccess {
        url: format!("http://{local}"),
        operator_token: admin_token,
    };
    let (gateway, webhook_worker) = Gateway::start(
        gateway_store,
        sealer,
        access,
        node.clone(),
        config.webhooks.clone(),
        stop_rx,
    )
    .await?;

    let health = {
        let relay = Arc::clone(&relay);
        let gateway = Arc::clone(&gateway);
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || async move {
                    if relay.ready().await && gateway.ready() {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }),
            )
    };
    let server = &config.server;
    let limits = RequestLimits {
        max_header_bytes: server.max_header_bytes,
        max_uri_bytes: server.max_uri_bytes,
        max_body_bytes: server.max_body_bytes,
        body_timeout: Duration::from_secs(server.body_timeout_secs),
    };
    let app = health.merge(relay.router()).merge(gateway.router()).layer(
        axum::middleware::from_fn_with_state(limits, limits::enforce),
    );
    tracing::info!(address = %local, %node, backend = ?backend, "Ventana node listening");
    http::serve(listener, app, server, async move {
        shutdown.await;
        tracing::info!("shutting down: closing connections, finishing in-flight work");
        let _ = stop_tx.send(true);
    })
    .await?;
    let _ = webhook_worker.await;
    tracing::info!("stopped");
    Ok(())
}
