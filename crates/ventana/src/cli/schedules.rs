//! `ventana schedules …`: a business's scheduled sends, listed and cancelled through the Cloud
//! API (`/{phone_number_id}/schedules`) with the business's own access token.
//!
//! Scheduling itself is a send with Ventana's `schedule` extension:
//! `POST /{phone_number_id}/messages` with `"schedule": {"send_at": "<RFC 3339>"}`.

use super::output;
use anyhow::Result;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use ventana_node::{AdminClient, Config};

#[derive(Args, Debug)]
pub(crate) struct SchedulesArgs {
    /// The node's URL (default: from the configuration's listen address).
    #[arg(long, env = "VENTANA_URL")]
    url: Option<String>,
    /// The business's API access token.
    #[arg(long, env = "VENTANA_ACCESS_TOKEN", hide_env_values = true)]
    token: String,
    /// The sending number's id.
    #[arg(long)]
    phone_number_id: String,
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: SchedulesCommand,
}

#[derive(Subcommand, Debug)]
enum SchedulesCommand {
    /// Every scheduled send of the number, in send order.
    List {
        /// Only those in this state: scheduled, firing, sent, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
    },
    /// Cancel a send that has not fired yet.
    Cancel {
        /// The message id the schedule answered with (`wamid.…`).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

pub(crate) async fn run(config: &Config, args: SchedulesArgs) -> Result<()> {
    let url = args.url.unwrap_or_else(|| config.local_url());
    let client = AdminClient::new(url, args.token);
    let base = format!("/v23.0/{}/schedules", args.phone_number_id);
    match args.command {
        SchedulesCommand::List { state } => {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut query = vec!["limit=100".to_owned()];
                if let Some(state) = &state {
                    query.push(format!("state={state}"));
                }
                if let Some(after) = &after {
                    query.push(format!("after={after}"));
                }
                let page = client
                    .call(Method::GET, &format!("{base}?{}", query.join("&")), None)
                    .await?;
                all.extend(page["data"].as_array().cloned().unwrap_or_default());
                match page["paging"]["cursors"]["after"].as_str() {
                    Some(cursor) => after = Some(cursor.to_owned()),
                    None => break,
                }
            }
            let value = json!({ "data": all });
            output(args.json, &value, || {
                if all.is_empty() {
                    return "no scheduled sends".into();
                }
                all.iter().map(line).collect::<Vec<_>>().join("\n")
            });
        }
        SchedulesCommand::Cancel { id } => {
            let v = client
                .call(Method::DELETE, &format!("{base}?id={id}"), None)
                .await?;
            output(args.json, &v, || format!("cancelled {id}"));
        }
    }
    Ok(())
}

/// `2026-12-01T09:30:00Z  scheduled  wamid.…  → +34600000001  template order_update (en_US)`.
fn line(item: &Value) -> String {
    let what = match item["template"].as_object() {
        Some(t) => format!(
            "template {} ({})",
            t.get("name").and_then(Value::as_str).unwrap_or("?"),
            t.get("language").and_then(Value::as_str).unwrap_or("?")
        ),
        None => item["type"].as_str().unwrap_or("message").to_owned(),
    };
    let mut line = format!(
        "{}  {:<9}  {}  → +{}  {what}",
        item["send_at"].as_str().unwrap_or("?"),
        item["state"].as_str().unwrap_or("?"),
        item["id"].as_str().unwrap_or("?"),
        item["to"].as_str().unwrap_or("?"),
    );
    if let Some(code) = item["error"]["code"].as_i64() {
        line.push_str(&format!(
            "  error {code}: {}",
            item["error"]["details"].as_str().unwrap_or_default()
        ));
    }
    line
}
