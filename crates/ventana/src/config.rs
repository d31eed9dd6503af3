//! Typed configuration, loaded once: defaults, then a TOML file, then `VENTANA_*` variables.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub security: SecurityConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the node listens (relay, business API, admin API, health).
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Holds `relay.db`, `gateway.db`, and generated secrets if none are configured.
    pub data_dir: PathBuf,
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
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("ventana-data"),
        }
    }
}

impl Config {
    /// Loads `file` (or `$VENTANA_CONFIG`, or `./ventana.toml` if present), then applies
    /// `VENTANA_LISTEN`, `VENTANA_DATA_DIR`, `VENTANA_SEAL_KEY` and `VENTANA_ADMIN_TOKEN`.
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
        if let Some(key) = var("VENTANA_SEAL_KEY") {
            self.security.seal_key = Some(key);
        }
        if let Some(token) = var("VENTANA_ADMIN_TOKEN") {
            self.security.admin_token = Some(token);
        }
        Ok(())
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
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("[server]\nlisen = \"x\"\n").is_err());
    }
}
