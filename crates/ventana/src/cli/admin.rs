//! `ventana admin …`: operator commands, sent to a running node's admin API.

use super::output;
use anyhow::Result;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use ventana_node::{AdminClient, Config};

#[derive(Args, Debug)]
pub(crate) struct AdminArgs {
    #[command(flatten)]
    node: super::NodeConnection,
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create a business (a WhatsApp Business Account).
    CreateBusiness {
        #[arg(long)]
        waba_id: String,
        #[arg(long)]
        name: String,
        /// Signs webhooks (X-Hub-Signature-256); at least 16 characters.
        #[arg(long)]
        app_secret: String,
        #[arg(long)]
        webhook_url: Option<String>,
        #[arg(long)]
        verify_token: String,
        /// Give the business a test clock that can be advanced.
        #[arg(long)]
        sandbox: bool,
    },
    ListBusinesses,
    /// Add a phone number to a business; the node registers its device at the relay.
    AddNumber {
        #[arg(long)]
        waba_id: String,
        #[arg(long)]
        phone_number_id: String,
        #[arg(long)]
        display_phone_number: String,
        #[arg(long)]
        verified_name: String,
    },
    ListNumbers {
        #[arg(long)]
        waba_id: String,
    },
    /// Issue an API access token (shown once): for the business's software, or with
    /// `--person` for one person who answers by hand (`ventana reply`).
    IssueToken {
        #[arg(long)]
        waba_id: String,
        #[arg(long)]
        label: Option<String>,
        /// The person's name: free-form sends with this token are replies by hand, which an
        /// `app`-tier business may send after the 24-hour window, free, at a human pace.
        #[arg(long)]
        person: Option<String>,
    },
    /// Show a business's tier (`api` or `app`) and its audited changes.
    Tier {
        #[arg(long)]
        waba_id: String,
    },
    /// Set a business's tier: `app` for a small business answering by hand, `api` otherwise.
    SetTier {
        #[arg(long)]
        waba_id: String,
        #[arg(long)]
        tier: String,
        /// Who decides; audited as `operator:<by>`.
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    ListTokens {
        #[arg(long)]
        waba_id: String,
    },
    RevokeToken {
        #[arg(long)]
        waba_id: String,
        /// Token ids are base64url and may start with `-`.
        #[arg(long, allow_hyphen_values = true)]
        id: String,
    },
    /// Read the pending development verification code of a number.
    VerificationCode {
        #[arg(long)]
        phone: String,
    },
    /// Show a sandbox business's test clock.
    Clock {
        #[arg(long)]
        waba_id: String,
    },
    /// Advance a sandbox business's test clock, e.g. `--by 25h` (units s, m, h, d).
    AdvanceClock {
        #[arg(long)]
        waba_id: String,
        #[arg(long, value_parser = parse_duration)]
        by: i64,
    },
    /// Review message templates: list the queue, show one, approve, reject, pause, disable.
    #[command(subcommand)]
    Templates(TemplatesCommand),
}

#[derive(Subcommand, Debug)]
enum TemplatesCommand {
    /// List templates in submission order (`--status PENDING`: those waiting for review).
    List {
        /// PENDING, APPROVED, REJECTED, PAUSED, DISABLED or DELETED (default: all but DELETED).
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        waba_id: Option<String>,
        /// A part of the name.
        #[arg(long)]
        name: Option<String>,
        /// A language code, e.g. en_US.
        #[arg(long)]
        language: Option<String>,
        /// UTILITY, MARKETING or AUTHENTICATION.
        #[arg(long)]
        category: Option<String>,
        /// The next page: the `next_after` of the previous one.
        #[arg(long)]
        after: Option<i64>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show a template: its components, its audit trail and what the lint rules find.
    Show { id: String },
    /// Approve a PENDING or REJECTED template, or reinstate a PAUSED one.
    Approve {
        #[command(flatten)]
        review: Review,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a PENDING template; the reason is shown to the business.
    Reject {
        #[command(flatten)]
        review: Review,
        #[arg(long)]
        reason: String,
    },
    /// Pause an APPROVED template: it cannot be sent until approved again.
    Pause {
        #[command(flatten)]
        review: Review,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Disable an APPROVED or PAUSED template for good.
    Disable {
        #[command(flatten)]
        review: Review,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Which template a review decision is about, and who takes it.
#[derive(Args, Debug)]
struct Review {
    /// The template's id.
    id: String,
    /// Who decides; the audit trail records `operator:<name>`.
    #[arg(long)]
    by: Option<String>,
    /// The version reviewed: refused if the template was edited since.
    #[arg(long)]
    version: Option<u32>,
}

fn tier_text(v: &Value) -> String {
    let mut out = format!("{}: tier {}", text(&v["waba_id"]), text(&v["tier"]));
    for e in v["events"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  {}  {} -> {}  by {}{}",
            text(&e["at"]),
            text(&e["previous"]),
            text(&e["tier"]),
            text(&e["actor"]),
            e["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    out
}

pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{text}: expected a number and a unit (s, m, h, d)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text}: unknown unit {unit} (use s, m, h or d)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text} is too long"))
}

pub(crate) async fn run(config: &Config, args: AdminArgs) -> Result<()> {
    let client = args.node.client(config)?;
    let json = args.json;
    match args.command {
        AdminCommand::CreateBusiness {
            waba_id,
            name,
            app_secret,
            webhook_url,
            verify_token,
            sandbox,
        } => {
            let body = json!({ "waba_id": waba_id, "name": name, "app_secret": app_secret, "webhook_url": webhook_url, "verify_token": verify_token, "sandbox": sandbox });
            let v = client
                .call(Method::POST, "/admin/v1/businesses", Some(body))
                .await?;
            output(json, &v, || {
                format!(
                    "created business {} ({}){}",
                    text(&v["waba_id"]),
                    text(&v["name"]),
                    if sandbox { ", sandbox" } else { "" }
                )
            });
        }
        AdminCommand::ListBusinesses => {
            let v = client
                .call(Method::GET, "/admin/v1/businesses", None)
                .await?;
            output(json, &v, || {
                lines(&v, |b| {
                    format!(
                        "{}  {}  sandbox={}",
                        text(&b["waba_id"]),
                        text(&b["name"]),
                        text(&b["sandbox"])
                    )
                })
            });
        }
        AdminCommand::AddNumber {
            waba_id,
            phone_number_id,
            display_phone_number,
            verified_name,
        } => {
            let body = json!({ "phone_number_id": phone_number_id, "display_phone_number": display_phone_number, "verified_name": verified_name });
            let v = client
                .call(
                    Method::POST,
                    &format!("/admin/v1/businesses/{waba_id}/phone_numbers"),
                    Some(body),
                )
                .await?;
            output(json, &v, || {
                format!(
                    "added number {} (id {}) to business {}",
                    text(&v["display_phone_number"]),
                    text(&v["id"]),
                    waba_id
                )
            });
        }
        AdminCommand::ListNumbers { waba_id } => {
            let v = client
                .call(
                    Method::GET,
                    &format!("/admin/v1/businesses/{waba_id}/phone_numbers"),
                    None,
                )
                .await?;
            output(json, &v, || {
                lines(&v, |n| {
                    format!(
                        "{}  {}  {}",
                        text(&n["id"]),
                        text(&n["display_phone_number"]),
                        text(&n["verified_name"])
                    )
                })
            });
        }
        AdminCommand::IssueToken {
            waba_id,
            label,
            person,
        } => {
            let v = client
                .call(
                    Method::POST,
                    &format!("/admin/v1/businesses/{waba_id}/tokens"),
                    Some(json!({ "label": label, "person": person })),
                )
                .await?;
            output(json, &v, || {
                format!(
                    "token {} (id {}); it is shown only once",
                    v["token"].as_str().unwrap_or_default(),
                    text(&v["id"])
                )
            });
        }
        AdminCommand::Tier { waba_id } => {
            let v = client
                .call(
                    Method::GET,
                    &format!("/relay/v1/admin/businesses/{waba_id}/tier"),
                    None,
                )
                .await?;
            output(json, &v, || tier_text(&v));
        }
        AdminCommand::SetTier {
            waba_id,
            tier,
            by,
            reason,
        } => {
            let v = client
                .call(
                    Method::POST,
                    &format!("/relay/v1/admin/businesses/{waba_id}/tier"),
                    Some(json!({ "tier": tier, "by": by, "reason": reason })),
                )
                .await?;
            output(json, &v, || tier_text(&v));
        }
        AdminCommand::ListTokens { waba_id } => {
            let v = client
                .call(
                    Method::GET,
                    &format!("/admin/v1/businesses/{waba_id}/tokens"),
                    None,
                )
                .await?;
            output(json, &v, || {
                lines(&v, |t| {
                    format!(
                        "{}  {}  revoked_at={}",
                        text(&t["id"]),
                        text(&t["label"]),
                        text(&t["revoked_at"])
                    )
                })
            });
        }
        AdminCommand::RevokeToken { waba_id, id } => {
            let v = client
                .call(
                    Method::DELETE,
                    &format!("/admin/v1/businesses/{waba_id}/tokens/{id}"),
                    None,
                )
                .await?;
            output(json, &v, || format!("revoked token {id}"));
        }
        AdminCommand::VerificationCode { phone } => {
            let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
            let v = client
                .call(
                    Method::GET,
                    &format!("/relay/v1/admin/verifications/{digits}"),
                    None,
                )
                .await?;
            output(json, &v, || {
                v["code"].as_str().unwrap_or_default().to_owned()
            });
        }
        AdminCommand::Clock { waba_id } => {
            let v = client
                .call(
                    Method::GET,
                    &format!("/relay/v1/admin/businesses/{waba_id}/clock"),
                    None,
                )
                .await?;
            output(json, &v, || {
                format!(
                    "business {waba_id}: offset {}s, now {}",
                    text(&v["offset_seconds"]),
                    text(&v["now"])
                )
            });
        }
        AdminCommand::AdvanceClock { waba_id, by } => {
            let v = client
                .call(
                    Method::POST,
                    &format!("/relay/v1/admin/businesses/{waba_id}/clock/advance"),
                    Some(json!({ "seconds": by })),
                )
                .await?;
            output(json, &v, || {
                format!(
                    "business {waba_id}: test clock now {}s ahead",
                    text(&v["offset_seconds"])
                )
            });
        }
        AdminCommand::Templates(command) => templates(&client, json, command).await?,
    }
    Ok(())
}

async fn templates(client: &AdminClient, json: bool, command: TemplatesCommand) -> Result<()> {
    let (review, action, reason) = match command {
        TemplatesCommand::List {
            status,
            waba_id,
            name,
            language,
            category,
            after,
            limit,
        } => {
            let query: Vec<(&str, String)> = [
                ("status", status),
                ("waba_id", waba_id),
                ("name", name),
                ("language", language),
                ("category", category),
                ("after", after.map(|a| a.to_string())),
                ("limit", limit.map(|l| l.to_string())),
            ]
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
            let v = client.get("/relay/v1/admin/templates", &query).await?;
            output(json, &v, || {
                let mut listed = lines(&v, template_line);
                if !v["next_after"].is_null() {
                    listed.push_str(&format!("\n(more: --after {})", text(&v["next_after"])));
                }
                listed
            });
            return Ok(());
        }
        TemplatesCommand::Show { id } => {
            let v = client
                .call(
                    Method::GET,
                    &format!("/relay/v1/admin/templates/{id}"),
                    None,
                )
                .await?;
            output(json, &v, || show_template(&v));
            return Ok(());
        }
        TemplatesCommand::Approve { review, reason } => (review, "approve", reason),
        TemplatesCommand::Reject { review, reason } => (review, "reject", Some(reason)),
        TemplatesCommand::Pause { review, reason } => (review, "pause", reason),
        TemplatesCommand::Disable { review, reason } => (review, "disable", reason),
    };
    let body = json!({ "reason": reason, "by": review.by, "version": review.version });
    let v = client
        .call(
            Method::POST,
            &format!("/relay/v1/admin/templates/{}/{action}", review.id),
            Some(body),
        )
        .await?;
    output(json, &v, || {
        format!(
            "template {} ({}, {}) is now {}",
            text(&v["id"]),
            text(&v["name"]),
            text(&v["language"]),
            text(&v["status"])
        )
    });
    Ok(())
}

fn template_line(t: &Value) -> String {
    format!(
        "{}  {}  {}  {}  {}  {}  v{}",
        text(&t["id"]),
        text(&t["waba_id"]),
        text(&t["name"]),
        text(&t["language"]),
        text(&t["category"]),
        text(&t["status"]),
        text(&t["version"])
    )
}

/// A template as an operator reviews it: identity, text, findings, history.
fn show_template(v: &Value) -> String {
    let mut shown = vec![template_line(v)];
    if !v["reason"].is_null() {
        shown.push(format!("reason: {}", text(&v["reason"])));
    }
    for component in v["components"].as_array().into_iter().flatten() {
        let kind = text(&component["type"]);
        match component["text"].as_str() {
            Some(body) => shown.push(format!("{kind}: {body}")),
            None if kind == "BUTTONS" => {
                for button in component["buttons"].as_array().into_iter().flatten() {
                    shown.push(format!(
                        "BUTTON {}: {}",
                        text(&button["type"]),
                        text(&button["text"])
                    ));
                }
            }
            None => shown.push(format!("{kind}: {}", text(&component["format"]))),
        }
    }
    for finding in v["lint"].as_array().into_iter().flatten() {
        shown.push(format!(
            "lint {}: {}: {}",
            text(&finding["rule"]),
            text(&finding["field"]),
            text(&finding["reason"])
        ));
    }
    shown.push("audit:".into());
    for event in v["audit"].as_array().into_iter().flatten() {
        let reason = match &event["reason"] {
            Value::Null => String::new(),
            reason => format!(": {}", text(reason)),
        };
        shown.push(format!(
            "  #{} at {}  {} -> {}  v{}  by {}{reason}",
            text(&event["seq"]),
            text(&event["at"]),
            text(&event["from"]),
            text(&event["to"]),
            text(&event["version"]),
            text(&event["actor"])
        ));
    }
    shown.join("\n")
}

/// A JSON value as a person reads it: strings without quotes.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn lines(v: &Value, line: impl Fn(&Value) -> String) -> String {
    let list = v["data"]
        .as_array()
        .map(|items| items.iter().map(&line).collect::<Vec<_>>())
        .unwrap_or_default();
    if list.is_empty() {
        "(none)".into()
    } else {
        list.join("\n")
    }
}
