//! `ventana webhooks …`: a business's webhooks, through a running node's admin API: where
//! they go, the delivery log, the dead-letter queue, replay and redrive.

use super::output;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use std::fmt::Write as _;
use ventana_node::Config;

#[derive(Args, Debug)]
pub(crate) struct WebhooksArgs {
    #[command(flatten)]
    node: super::NodeConnection,
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: WebhooksCommand,
}

#[derive(Subcommand, Debug)]
enum WebhooksCommand {
    /// Where a business's events go (app, WABA and number callbacks) and its dead letters.
    Show {
        #[arg(long)]
        waba_id: String,
    },
    /// Set the app's callback, or a number's override with `--phone-number-id`; the
    /// callback must pass Meta's `hub.challenge` handshake first.
    Set {
        #[arg(long)]
        waba_id: String,
        #[arg(long)]
        callback_url: String,
        #[arg(long)]
        verify_token: String,
        /// Fields to subscribe to, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        fields: Option<Vec<String>>,
        #[arg(long)]
        phone_number_id: Option<String>,
    },
    /// The delivery log, newest first: every attempt with its time, event id, HTTP status,
    /// latency and error.
    Log {
        #[arg(long)]
        waba_id: String,
        /// Entries older than this `seq` (the next page).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// The dead-letter queue: events that failed for the whole retry period.
    Dead {
        #[arg(long)]
        waba_id: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Send settled events again, under their ids: from a time (`--since`, Unix seconds or
    /// a duration ago such as `2h`) or from an event on (`--event-id`).
    Replay {
        #[arg(long)]
        waba_id: String,
        #[arg(long, conflicts_with = "event_id")]
        since: Option<String>,
        #[arg(long)]
        event_id: Option<String>,
    },
    /// Send the dead-lettered events again, under their ids.
    Redrive {
        #[arg(long)]
        waba_id: String,
    },
}

pub(crate) async fn run(config: &Config, args: WebhooksArgs) -> Result<()> {
    let client = args.node.client(config)?;
    let base = |waba: &str| format!("/admin/v1/businesses/{waba}/webhooks");
    match args.command {
        WebhooksCommand::Show { waba_id } => {
            let v = client.call(Method::GET, &base(&waba_id), None).await?;
            output(args.json, &v, || show(&v));
        }
        WebhooksCommand::Set {
            waba_id,
            callback_url,
            verify_token,
            fields,
            phone_number_id,
        } => {
            let body = json!({
                "callback_url": callback_url,
                "verify_token": verify_token,
                "fields": fields,
                "phone_number_id": phone_number_id,
            });
            let v = client
                .call(Method::PUT, &base(&waba_id), Some(body))
                .await?;
            output(args.json, &v, || show(&v));
        }
        WebhooksCommand::Log {
            waba_id,
            before,
            limit,
        } => {
            let mut path = format!("{}/log?limit={limit}", base(&waba_id));
            if let Some(before) = before {
                let _ = write!(path, "&before={before}");
            }
            let v = client.call(Method::GET, &path, None).await?;
            output(args.json, &v, || log(&v));
        }
        WebhooksCommand::Dead { waba_id, limit } => {
            let path = format!("{}/dead?limit={limit}", base(&waba_id));
            let v = client.call(Method::GET, &path, None).await?;
            output(args.json, &v, || dead(&v));
        }
        WebhooksCommand::Replay {
            waba_id,
            since,
            event_id,
        } => {
            let body = match (since, event_id) {
                (Some(since), None) => json!({ "since": since_secs(&since)? }),
                (None, Some(id)) => json!({ "event_id": id }),
                _ => bail!("give --since or --event-id"),
            };
            let path = format!("{}/replay", base(&waba_id));
            let v = client.call(Method::POST, &path, Some(body)).await?;
            output(args.json, &v, || {
                format!("{} events queued again", v["replayed"])
            });
        }
        WebhooksCommand::Redrive { waba_id } => {
            let path = format!("{}/redrive", base(&waba_id));
            let v = client.call(Method::POST, &path, Some(json!({}))).await?;
            output(args.json, &v, || {
                format!("{} dead-lettered events queued again", v["redriven"])
            });
        }
    }
    Ok(())
}

/// Unix seconds, or a time that long ago (`90s`, `30m`, `2h`, `7d`).
fn since_secs(text: &str) -> Result<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    let ago = super::admin::parse_duration(text).map_err(anyhow::Error::msg)?;
    let now = ventana_core::UnixTime::now().0;
    Ok(now.saturating_sub(ago))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn show(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "business        {}", text(&v["waba_id"]));
    let _ = writeln!(out, "subscribed      {}", text(&v["subscribed"]));
    let _ = writeln!(out, "app callback    {}", text(&v["app_callback"]));
    let _ = writeln!(out, "fields          {}", text(&v["fields"]));
    let _ = writeln!(
        out,
        "WABA override   {}",
        text(&v["waba_override_callback_uri"])
    );
    for number in v["phone_numbers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "number {:<8} override {}, events go to {}",
            text(&number["phone_number_id"]),
            text(&number["override_callback_uri"]),
            text(&number["callback"]),
        );
    }
    let _ = write!(out, "dead letters    {}", text(&v["dead_letters"]));
    out
}

fn log(v: &Value) -> String {
    let mut out = format!(
        "{:<8} {:<24} {:<44} {:>6} {:>8}  error\n",
        "seq", "at (unix ms)", "event id", "status", "latency"
    );
    for e in v["data"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<8} {:<24} {:<44} {:>6} {:>6}ms  {}",
            text(&e["seq"]),
            text(&e["at_ms"]),
            text(&e["event_id"]),
            text(&e["http_status"]),
            text(&e["latency_ms"]),
            text(&e["error"]),
        );
    }
    out.trim_end().to_owned()
}

fn dead(v: &Value) -> String {
    let mut out = format!(
        "{:<44} {:>8} {:>12}  last error\n",
        "event id", "attempts", "dead at"
    );
    for e in v["data"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<44} {:>8} {:>12}  {}",
            text(&e["event_id"]),
            text(&e["attempts"]),
            text(&e["dead_at"]),
            text(&e["last_error"]),
        );
    }
    out.trim_end().to_owned()
}
