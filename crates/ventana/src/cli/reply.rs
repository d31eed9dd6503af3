//! `ventana reply`: one reply typed by a person, sent with that person's token (issued with
//! `ventana admin issue-token --person`). For a business on the `app` tier (a small business
//! answering by hand) it goes through even after the 24-hour window, free, at a human pace;
//! for any other business it is an ordinary message under the window.

use super::output;
use anyhow::Result;
use clap::Args;
use reqwest::Method;
use serde_json::json;
use ventana_node::{AdminClient, Config};

#[derive(Args, Debug)]
pub(crate) struct ReplyArgs {
    /// The node's URL (default: from the configuration's listen address).
    #[arg(long, env = "VENTANA_URL")]
    url: Option<String>,
    /// The person's access token.
    #[arg(long, env = "VENTANA_ACCESS_TOKEN", hide_env_values = true)]
    token: String,
    /// The sending number's id.
    #[arg(long)]
    phone_number_id: String,
    /// The customer's number.
    #[arg(long)]
    to: String,
    #[arg(long)]
    json: bool,
    /// What to say.
    text: String,
}

pub(crate) async fn run(config: &Config, args: ReplyArgs) -> Result<()> {
    let url = args.url.unwrap_or_else(|| config.local_url());
    let client = AdminClient::new(url, args.token);
    let body = json!({
        "messaging_product": "whatsapp",
        "to": args.to,
        "type": "text",
        "text": { "body": args.text },
    });
    let v = client
        .call(
            Method::POST,
            &format!("/v23.0/{}/messages", args.phone_number_id),
            Some(body),
        )
        .await?;
    output(args.json, &v, || {
        format!(
            "sent {}",
            v["messages"][0]["id"].as_str().unwrap_or_default()
        )
    });
    Ok(())
}
