//! Typed configuration, loaded once: defaults, then a TOML file, then `VENTANA_*` variables.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use ventana_relay::TemplatePolicy;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub security: SecurityConfig,
    pub cluster: ClusterConfig,
    /// `[templates]`: how many templates a business may keep and who reviews them:
    ///
    /// ```toml
    /// [templates]
    /// limit_per_business = 250  # templates per business, deleted ones aside
    /// review = "manual"         # "manual": an operator decides; "lint": the rules below first
    /// on_findings = "reject"    # with "lint": "reject" at the first finding, or "hold" for an operator
    /// approve_clean = true      # with "lint": approve a template without findings
    ///
    /// [templates.lint]
    /// variable_at_edge = true   # the body starts or ends with a variable
    /// variable_density = true   # too few words of fixed text per variable
    /// category_mismatch = true  # promotional words outside MARKETING, or no code variable
    /// forbidden_words = []      # words refused anywhere in the template's text
    /// ```
    pub templates: TemplatePolicy,
    /// `[billing]`: what messages cost.
    ///
    /// ```toml
    /// [billing]
    /// policy_file = "pricing.toml"  # the pricing policy (see the README's "Billing"); read
    ///                               # at start and again on SIGHUP or
    ///                               # `POST /relay/v1/admin/billing/policies/reload`
    /// manual_reply_min_gap_secs = 3 # an `app`-tier business number's replies by hand:
    /// manual_replies_per_minute = 10 # at least this far apart, at most this many a minute
    /// ```
    ///
    /// Without a file, the built-in example policy (`per_message_2025`, example prices).
    pub billing: BillingConfig,
    /// `[webhooks]`: how events reach the businesses' callbacks:
    ///
    /// ```toml
    /// [webhooks]
    /// max_in_flight = 512              # POSTs in flight from this node
    /// per_endpoint = 64                # … to one callback URL
    /// timeout_secs = 10                # an attempt not answered by then failed
    /// retry_for_secs = 604800          # retried for 7 days, then dead-lettered
    /// max_backoff_secs = 3600          # the longest wait between two attempts
    /// keep_delivered_secs = 604800     # delivered events (for replay) and the delivery log
    /// keep_dead_secs = 2592000         # dead-lettered events, for a redrive
    /// allow_private_callbacks = true   # callbacks to private and loopback addresses
    /// ```
    pub webhooks: ventana_gateway::WebhookSettings,
    /// `[relay]`: what one client may hold of the relay or ask of it:
    ///
    /// ```toml
    /// [relay]
    /// devices_per_number = 8                  # devices one user number may register
    /// one_time_keys_per_device = 1000         # unclaimed one-time keys one device may keep
    /// codes_per_address_per_hour = 10         # verification codes (SMS) asked from one address
    /// registrations_per_address_per_hour = 30 # registration attempts from one address
    /// connections_per_device = 4              # WebSockets one device may hold on one node
    /// idle_timeout_secs = 90                  # a WebSocket silent this long is closed
    /// ```
    pub relay: ventana_relay::RelayLimits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    pub policy_file: Option<PathBuf>,
    pub manual_reply_min_gap_secs: u32,
    pub manual_replies_per_minute: u32,
}

impl Default for BillingConfig {
    fn default() -> Self {
        let human = ventana_store::relay::ManualLimit::default();
        Self {
            policy_file: None,
            manual_reply_min_gap_secs: human.min_gap_secs,
            manual_replies_per_minute: human.per_minute,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name among the nodes sharing one database (in leases and logs). A random
    /// one is made at start if unset.
    pub node_id: Option<String>,
}

/// Where the stores live, decided once at start from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `relay.db` and `gateway.db` in the data directory: one node, no set-up.
    Sqlite { data_dir: PathBuf },
    /// Schemas `relay` and `gateway` of one PostgreSQL database, shared by every node.
    Postgres { url: String },
}

/// `[server]`: where the node listens, and what one client may hold of it. Every refusal is
/// in the error envelope of the API asked (see `http::limits`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the node listens (relay, business API, admin API, health).
    pub listen: SocketAddr,
    /// A request's line and headers must arrive within this; a keep-alive connection left
    /// idle this long is closed.
    pub header_timeout_secs: u64,
    /// A request's whole body must arrive within this (`408` otherwise).
    pub body_timeout_secs: u64,
    /// Connections open at once, in all (`503` past it). Lowered at start to fit the
    /// process's open-file limit.
    pub max_connections: u64,
    /// Connections open at once from one client address (`429` past it).
    pub connections_per_address: u64,
    /// Whether loopback clients are exempt from `connections_per_address` (a reverse proxy on
    /// the same host is one address for all its clients, and so are local tools and tests).
    pub loopback_exempt: bool,
    /// The request line and headers, in bytes (`431` past it).
    pub max_header_bytes: usize,
    /// The path and query, in bytes (`414` past it).
    pub max_uri_bytes: usize,
    /// A request body, in bytes (`413` past it, before `100 Continue`).
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Holds `relay.db`, `gateway.db`, and generated secrets if none are configured.
    pub data_dir: PathBuf,
    /// `postgres://user@host:port/database`: use PostgreSQL instead of the SQLite files.
    pub database_url: Option<String>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Base64 of 32 bytes sealing the gateway's secrets at rest. Generated into
    /// `<data_dir>/seal.key` on first start if unset.
    pub seal_key: Option<String>,
    /// The operator's token for the admin API. Generated into `<data_dir>/admin.token` if unset.
    pub admin_token: Option<String>,
}

impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("seal_key", &self.seal_key.as_ref().map(|_| "<redacted>"))
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_connections: 10_000,
            connections_per_address: 64,
            loopback_exempt: true,
            max_header_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl ServerConfig {
    /// Refuses settings that would leave the server unusable.
    pub fn check(&self) -> Result<()> {
        let positive = [
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
            ("max_connections", self.max_connections),
            ("connections_per_address", self.connections_per_address),
            ("max_header_bytes", self.max_header_bytes as u64),
            ("max_uri_bytes", self.max_uri_bytes as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                bail!("[server] {name} must be at least 1");
            }
        }
        Ok(())
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("ventana-data"),
            database_url: None,
        }
    }
}

impl Config {
    /// Loads `file` (or `$VENTANA_CONFIG`, or `./ventana.toml` if present), then applies
    /// `VENTANA_LISTEN`, `VENTANA_DATA_DIR`, `VENTANA_DATABASE_URL`, `VENTANA_NODE_ID`,
    /// `VENTANA_SEAL_KEY`, `VENTANA_ADMIN_TOKEN`, `VENTANA_BILLING_POLICY_FILE`, and for `[templates]`
    /// `VENTANA_TEMPLATES_LIMIT_PER_BUSINESS`, `VENTANA_TEMPLATES_REVIEW`,
    /// `VENTANA_TEMPLATES_ON_FINDINGS` and `VENTANA_TEMPLATES_APPROVE_CLEAN`.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let env_file = std::env::var_os("VENTANA_CONFIG").map(PathBuf::from);
        let default_file = PathBuf::from("ventana.toml");
        let path = match (file, env_file) {
            (Some(p), _) => Some(p.to_path_buf()),
            (None, Some(p)) => Some(p),
            (None, None) if default_file.exists() => Some(default_file),
            (None, None) => None,
        };
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(listen) = var("VENTANA_LISTEN") {
            self.server.listen = listen
                .parse()
                .with_context(|| format!("VENTANA_LISTEN={listen} is not host:port"))?;
        }
        if let Some(dir) = var("VENTANA_DATA_DIR") {
            if dir.is_empty() {
                bail!("VENTANA_DATA_DIR is empty");
            }
            self.storage.data_dir = PathBuf::from(dir);
        }
        if let Some(url) = var("VENTANA_DATABASE_URL") {
            self.storage.database_url = (!url.is_empty()).then_some(url);
        }
        if let Some(node) = var("VENTANA_NODE_ID") {
            self.cluster.node_id = Some(node);
        }
        if let Some(key) = var("VENTANA_SEAL_KEY") {
            self.security.seal_key = Some(key);
        }
        if let Some(token) = var("VENTANA_ADMIN_TOKEN") {
            self.security.admin_token = Some(token);
        }
        if let Some(file) = var("VENTANA_BILLING_POLICY_FILE") {
            self.billing.policy_file = (!file.is_empty()).then(|| PathBuf::from(file));
        }
        self.apply_template_env(&var)
    }

    fn apply_template_env(&mut self, var: &impl Fn(&str) -> Option<String>) -> Result<()> {
        let templates = &mut self.templates;
        if let Some(limit) = var("VENTANA_TEMPLATES_LIMIT_PER_BUSINESS") {
            templates.limit_per_business = limit.trim().parse().with_context(|| {
                format!("VENTANA_TEMPLATES_LIMIT_PER_BUSINESS={limit} is not a count")
            })?;
        }
        if let Some(review) = var("VENTANA_TEMPLATES_REVIEW") {
            templates.review = review.parse().context("VENTANA_TEMPLATES_REVIEW")?;
        }
        if let Some(on_findings) = var("VENTANA_TEMPLATES_ON_FINDINGS") {
            templates.on_findings = on_findings
                .parse()
                .context("VENTANA_TEMPLATES_ON_FINDINGS")?;
        }
        if let Some(approve) = var("VENTANA_TEMPLATES_APPROVE_CLEAN") {
            templates.approve_clean = approve.trim().parse().with_context(|| {
                format!("VENTANA_TEMPLATES_APPROVE_CLEAN={approve} is not true or false")
            })?;
        }
        Ok(())
    }

    /// The storage backend this configuration asks for.
    pub fn backend(&self) -> Result<Backend> {
        match &self.storage.database_url {
            None => Ok(Backend::Sqlite {
                data_dir: self.storage.data_dir.clone(),
            }),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                if self.security.seal_key.is_none() || self.security.admin_token.is_none() {
                    bail!(
                        "with PostgreSQL every node must share one seal key and one operator token: \
                         set security.seal_key and security.admin_token (VENTANA_SEAL_KEY, VENTANA_ADMIN_TOKEN)"
                    );
                }
                Ok(Backend::Postgres { url: url.clone() })
            }
            Some(other) => bail!("storage.database_url must be a postgres:// URL (got {other:?})"),
        }
    }

    /// The URL a local client uses to reach this node.
    pub fn local_url(&self) -> String {
        let mut addr = self.server.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ventana_relay::{OnFindings, Review};

    #[test]
    fn environment_overrides_the_file() {
        let mut config: Config = toml::from_str(
            "[server]\nlisten = \"127.0.0.1:9000\"\n[storage]\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        config
            .apply_env(|name| (name == "VENTANA_LISTEN").then(|| "0.0.0.0:7000".to_owned()))
            .unwrap();
        assert_eq!(config.server.listen.port(), 7000);
        assert_eq!(config.storage.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.local_url(), "http://127.0.0.1:7000");
    }

    #[test]
    fn the_backend_is_sqlite_unless_a_postgres_url_is_given() {
        let mut config = Config::default();
        assert!(matches!(config.backend().unwrap(), Backend::Sqlite { .. }));
        config.storage.database_url = Some("mysql://x".into());
        assert!(config.backend().is_err());
        config.storage.database_url = Some("postgres://postgres@127.0.0.1/ventana".into());
        assert!(
            config
                .backend()
                .unwrap_err()
                .to_string()
                .contains("seal key")
        );
        config.security.seal_key = Some("k".into());
        config.security.admin_token = Some("t".into());
        assert_eq!(
            config.backend().unwrap(),
            Backend::Postgres {
                url: "postgres://postgres@127.0.0.1/ventana".into()
            }
        );
    }

    #[test]
    fn templates_are_reviewed_by_hand_unless_configured_otherwise() {
        let config = Config::default();
        assert_eq!(config.templates.review, Review::Manual);
        assert_eq!(config.templates.limit_per_business, 250);

        let mut config: Config = toml::from_str(
            "[templates]\nreview = \"lint\"\non_findings = \"hold\"\n\
             [templates.lint]\nforbidden_words = [\"casino\"]\nvariable_density = false\n",
        )
        .unwrap();
        assert_eq!(config.templates.review, Review::Lint);
        assert_eq!(config.templates.on_findings, OnFindings::Hold);
        assert_eq!(config.templates.lint.forbidden_words, ["casino"]);
        assert!(!config.templates.lint.variable_density);
        assert!(config.templates.lint.variable_at_edge);

        let env = |name: &str| match name {
            "VENTANA_TEMPLATES_REVIEW" => Some("manual".to_owned()),
            "VENTANA_TEMPLATES_LIMIT_PER_BUSINESS" => Some("1000".to_owned()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.templates.review, Review::Manual);
        assert_eq!(config.templates.limit_per_business, 1000);

        let wrong = config
            .apply_env(|name| (name == "VENTANA_TEMPLATES_REVIEW").then(|| "auto".to_owned()))
            .unwrap_err();
        assert!(format!("{wrong:#}").contains("manual, lint"), "{wrong:#}");
        assert!(toml::from_str::<Config>("[templates]\nreveiw = \"lint\"\n").is_err());
    }

    #[test]
    fn the_example_configuration_parses_and_says_what_the_defaults_are() {
        let example = include_str!("../../../ventana.example.toml");
        let config: Config = toml::from_str(example).unwrap();
        let defaults = Config::default();
        for (section, example, default) in [
            (
                "webhooks",
                format!("{:?}", config.webhooks),
                format!("{:?}", defaults.webhooks),
            ),
            (
                "server",
                format!("{:?}", config.server),
                format!("{:?}", defaults.server),
            ),
            (
                "relay",
                format!("{:?}", config.relay),
                format!("{:?}", defaults.relay),
            ),
        ] {
            assert_eq!(example, default, "ventana.example.toml's [{section}]");
        }
        config.server.check().unwrap();
        config.relay.check().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("[server]\nlisen = \"x\"\n").is_err());
    }
}
