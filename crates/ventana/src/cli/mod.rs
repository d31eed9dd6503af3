//! Subcommands. Every non-interactive command takes `--json` for machine-readable output.

mod admin;
mod billing;
mod chat;
mod demo;
mod reply;
mod schedules;
/// Public for the end-to-end tests, which check what a device shows.
pub mod screen;
mod user;
mod webhooks;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use ventana_node::Config;

#[derive(Parser, Debug)]
#[command(
    name = "ventana",
    version,
    about = "Self-hostable, end-to-end encrypted business messaging"
)]
pub struct Cli {
    /// Configuration file (default: $VENTANA_CONFIG, or ./ventana.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the all-in-one node (relay + hosted gateway) on embedded SQLite.
    Serve,
    /// Start a throwaway node with a demo business and user, and show messages both ways.
    Demo {
        /// Keep the node running after the demo, for trying the API by hand.
        #[arg(long)]
        keep: bool,
    },
    /// Operator commands, through a running node's admin API.
    Admin(admin::AdminArgs),
    /// Billing: usage, invoices, verifying the ledger, what-if re-rating, policy versions.
    Billing(billing::BillingArgs),
    /// A business's webhooks: where they go, the delivery log, dead letters, replay, redrive.
    Webhooks(webhooks::WebhooksArgs),
    /// End-user commands for one device kept in a local directory.
    User(user::UserArgs),
    /// Send one reply typed by a person, with that person's token (a small business's
    /// replies by hand may go out after the 24-hour window, free).
    Reply(reply::ReplyArgs),
    /// A business's scheduled sends: list and cancel, with its access token.
    Schedules(schedules::SchedulesArgs),
    /// Interactive chat with a business, for a device registered with `ventana user register`.
    Chat(chat::ChatArgs),
    /// Measure throughput and latency through the real path
    Bench(ventana_bench::BenchArgs),
}

impl Cli {
    /// Servers log at info; one-shot commands only warn, so their output stays readable.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Serve => "info",
            _ => "warn",
        }
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
            ventana_node::run(config, listener, shutdown_signal()).await
        }
        Command::Demo { keep } => demo::run(keep).await,
        Command::Admin(args) => admin::run(&config, args).await,
        Command::Billing(args) => billing::run(&config, args).await,
        Command::Webhooks(args) => webhooks::run(&config, args).await,
        Command::User(args) => user::run(&config, args).await,
        Command::Chat(args) => chat::run(&config, args).await,
        Command::Schedules(args) => schedules::run(&config, args).await,
        Command::Reply(args) => reply::run(&config, args).await,
        Command::Bench(args) => ventana_bench::run(args).await,
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Prints `value` as JSON, or the human form.
/// A running node's admin API, for the operator's commands.
#[derive(clap::Args, Debug)]
pub(crate) struct NodeConnection {
    /// The node's URL (default: from the configuration's listen address).
    #[arg(long, env = "VENTANA_URL")]
    url: Option<String>,
    /// The operator token (default: the configuration's, or `<data_dir>/admin.token`).
    #[arg(long, env = "VENTANA_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl NodeConnection {
    fn client(self, config: &Config) -> Result<ventana_node::AdminClient> {
        let url = self.url.unwrap_or_else(|| config.local_url());
        let token = match self.token {
            Some(t) => t,
            None => ventana_node::admin_token(config)
                .context("reading the operator token (pass --token)")?,
        };
        Ok(ventana_node::AdminClient::new(url, token))
    }
}

fn output(json: bool, value: &serde_json::Value, human: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", human());
    }
}
