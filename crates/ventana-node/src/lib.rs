//! The all-in-one node, and what drives one over loopback. Below the `ventana` binary and
//! `ventana-bench`, which both start nodes in their own process.
//!
//! - `config`: [`Config`], typed configuration (defaults, TOML file, `VENTANA_*` variables),
//!   and the storage [`Backend`] it asks for.
//! - `node`: [`run`], the node: relay + hosted gateway on one listener, each with its own
//!   store; it takes the listener and a shutdown future, so tests and the bench run it on
//!   port 0. [`admin_token`] and [`secret_file`]: generated secrets of a data directory.
//! - `http`: the HTTP server under the node: connection caps, timeouts, and (`http::limits`)
//!   the limits on one request, refused in the API's own error envelope.
//! - `admin`: [`AdminClient`], a small client of the operator's admin API.
//! - `receiver`: [`WebhookReceiver`], a business's webhook endpoint in miniature that checks
//!   every signature (the demo, the tests, the bench).

mod admin;
mod config;
mod http;
mod node;
mod receiver;

pub use admin::AdminClient;
pub use config::{Backend, ClusterConfig, Config, SecurityConfig, ServerConfig, StorageConfig};
pub use node::{admin_token, run, secret_file};
pub use receiver::{Delivery, WebhookReceiver};
