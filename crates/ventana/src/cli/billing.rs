//! `ventana billing …`: what businesses were charged, through a running node's admin API.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::Value;
use std::fmt::Write as _;
use ventana_node::{AdminClient, Config};

#[derive(Args, Debug)]
pub(crate) struct BillingArgs {
    #[command(flatten)]
    node: super::NodeConnection,
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(subcommand)]
    command: BillingCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand, Debug)]
enum BillingCommand {
    /// A business's month: messages and amounts by category, country and type.
    Usage {
        #[arg(long)]
        waba_id: String,
        /// The month, e.g. 2026-11 (default: this month).
        #[arg(long)]
        period: Option<String>,
    },
    /// A business's invoice for a month: one line per category, country and rate.
    Invoice {
        #[arg(long)]
        waba_id: String,
        #[arg(long)]
        period: Option<String>,
    },
    /// Check every business's hash chain and recompute every amount from its inputs.
    Verify,
    /// What a month would have cost under another policy (a file or a loaded version),
    /// next to what was charged. Writes nothing.
    Rerate {
        #[arg(long)]
        waba_id: String,
        #[arg(long)]
        period: Option<String>,
        /// A policy file, or the name of a loaded version.
        #[arg(long)]
        policy: String,
    },
    /// The pricing policy versions loaded, and the one in force.
    Policies,
    /// Read the configured policy file again (as SIGHUP does).
    Reload,
}

pub(crate) async fn run(config: &Config, args: BillingArgs) -> Result<()> {
    let client = args.node.client(config)?;
    let format = args.format;
    match args.command {
        BillingCommand::Usage { waba_id, period } => {
            let v = usage(&client, &waba_id, period).await?;
            print(format, &v, || usage_table(&v, format == Format::Csv, false));
        }
        BillingCommand::Invoice { waba_id, period } => {
            let v = usage(&client, &waba_id, period).await?;
            print(format, &v, || usage_table(&v, format == Format::Csv, true));
        }
        BillingCommand::Verify => {
            let v = client
                .call(Method::GET, "/relay/v1/admin/billing/verify", None)
                .await?;
            print(format, &v, || verify_table(&v));
            if v["ok"] != Value::Bool(true) {
                bail!("the ledger does not verify");
            }
        }
        BillingCommand::Rerate {
            waba_id,
            period,
            policy,
        } => {
            let path = format!("/relay/v1/admin/billing/businesses/{waba_id}/rerate");
            let mut query = Vec::new();
            if let Some(p) = period {
                query.push(("period", p));
            }
            let file = std::path::Path::new(&policy);
            let body = if file.is_file() {
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
            } else {
                query.push(("version", policy));
                String::new()
            };
            let v = client.post_text(&path, &query, body).await?;
            print(format, &v, || rerate_table(&v, format == Format::Csv));
        }
        BillingCommand::Policies => {
            let v = client
                .call(Method::GET, "/relay/v1/admin/billing/policies", None)
                .await?;
            print(format, &v, || {
                let mut out = String::new();
                for p in v["data"].as_array().into_iter().flatten() {
                    let mark = if p["version"] == v["in_force"] {
                        "*"
                    } else {
                        " "
                    };
                    let _ = writeln!(
                        out,
                        "{mark} {:<32} effective {}  loaded {}",
                        text(&p["version"]),
                        text(&p["effective_from"]),
                        text(&p["loaded_at"])
                    );
                }
                out.trim_end().to_owned()
            });
        }
        BillingCommand::Reload => {
            let v = client
                .call(
                    Method::POST,
                    "/relay/v1/admin/billing/policies/reload",
                    None,
                )
                .await?;
            print(format, &v, || {
                format!(
                    "{} {} (effective {})",
                    if v["added"] == Value::Bool(true) {
                        "loaded"
                    } else {
                        "unchanged:"
                    },
                    text(&v["version"]),
                    text(&v["effective_from"])
                )
            });
        }
    }
    Ok(())
}

async fn usage(client: &AdminClient, waba: &str, period: Option<String>) -> Result<Value> {
    let query: Vec<(&str, String)> = period.map(|p| ("period", p)).into_iter().collect();
    client
        .get(
            &format!("/relay/v1/admin/billing/businesses/{waba}/usage"),
            &query,
        )
        .await
}

fn print(format: Format, value: &Value, human: impl FnOnce() -> String) {
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", human());
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Usage (totals by category, country, type) or the invoice (its lines), as a table or CSV.
fn usage_table(v: &Value, csv: bool, invoice: bool) -> String {
    let mut out = String::new();
    let currencies = v["currencies"].as_array().cloned().unwrap_or_default();
    if csv {
        if invoice {
            out.push_str("currency,category,country,rate,messages,amount\n");
        } else {
            out.push_str("currency,dimension,key,messages,amount\n");
        }
    } else {
        let _ = writeln!(
            out,
            "{} {} ({} to {})",
            text(&v["waba_id"]),
            text(&v["period"]),
            text(&v["from"]),
            text(&v["until"])
        );
        if currencies.is_empty() {
            out.push_str("no messages delivered in this period\n");
        }
    }
    for c in &currencies {
        let cur = text(&c["currency"]);
        if invoice {
            if !csv {
                let _ = writeln!(
                    out,
                    "\n{:<16} {:<8} {:>10} {:>9} {:>14}",
                    "category", "country", "rate", "messages", "amount"
                );
            }
            for l in c["lines"].as_array().into_iter().flatten() {
                if csv {
                    let _ = writeln!(
                        out,
                        "{cur},{},{},{},{},{}",
                        text(&l["category"]),
                        text(&l["country"]),
                        text(&l["rate"]),
                        text(&l["messages"]),
                        text(&l["amount"])
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "{:<16} {:<8} {:>10} {:>9} {:>14}",
                        text(&l["category"]),
                        text(&l["country"]),
                        text(&l["rate"]),
                        text(&l["messages"]),
                        format!("{} {cur}", text(&l["amount"]))
                    );
                }
            }
        } else {
            for dimension in ["by_category", "by_country", "by_type"] {
                if !csv {
                    let _ = writeln!(
                        out,
                        "\n{:<24} {:>9} {:>14}",
                        dimension, "messages", "amount"
                    );
                }
                for (key, t) in c[dimension].as_object().into_iter().flatten() {
                    if csv {
                        let _ = writeln!(
                            out,
                            "{cur},{dimension},{key},{},{}",
                            text(&t["messages"]),
                            text(&t["amount"])
                        );
                    } else {
                        let _ = writeln!(
                            out,
                            "{:<24} {:>9} {:>14}",
                            key,
                            text(&t["messages"]),
                            format!("{} {cur}", text(&t["amount"]))
                        );
                    }
                }
            }
        }
        if !csv {
            let versions: Vec<String> = c["policy_versions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let _ = writeln!(
                out,
                "\ntotal: {} messages, {} {cur} (policy versions: {})",
                text(&c["messages"]),
                text(&c["total"]),
                versions.join(", ")
            );
        }
    }
    out.trim_end().to_owned()
}

fn verify_table(v: &Value) -> String {
    let mut out = String::new();
    for b in v["businesses"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "{}: {} entries",
            text(&b["waba_id"]),
            text(&b["entries"])
        );
        match &b["broken_link"] {
            Value::Null => out.push_str(", chain intact"),
            link => {
                let _ = write!(
                    out,
                    ", CHAIN BROKEN at entry {}: {}",
                    text(&link["seq"]),
                    text(&link["reason"])
                );
            }
        }
        let mismatches = b["mismatches"].as_array().cloned().unwrap_or_default();
        if mismatches.is_empty() {
            out.push_str(", every amount recomputes\n");
        } else {
            let _ = writeln!(out, ", {} amounts differ:", mismatches.len());
            for m in mismatches {
                let _ = writeln!(
                    out,
                    "  entry {} ({}): {}",
                    text(&m["seq"]),
                    text(&m["message_id"]),
                    text(&m["what"])
                );
            }
        }
    }
    if out.is_empty() {
        out.push_str("no ledger entries yet\n");
    }
    let _ = write!(
        out,
        "{}",
        if v["ok"] == Value::Bool(true) {
            "ok"
        } else {
            "FAILED"
        }
    );
    out
}

fn rerate_table(v: &Value, csv: bool) -> String {
    let mut out = String::new();
    let cur = text(&v["currency"]);
    if csv {
        out.push_str("category,messages,old,new\n");
    } else {
        let _ = writeln!(
            out,
            "{} {} under {} ({})\n\n{:<16} {:>9} {:>14} {:>14}",
            text(&v["waba_id"]),
            text(&v["period"]),
            text(&v["policy"]),
            text(&v["model"]),
            "category",
            "messages",
            "charged",
            "would be"
        );
    }
    for (category, r) in v["by_category"].as_object().into_iter().flatten() {
        if csv {
            let _ = writeln!(
                out,
                "{category},{},{},{}",
                text(&r["messages"]),
                text(&r["old"]),
                text(&r["new"])
            );
        } else {
            let _ = writeln!(
                out,
                "{:<16} {:>9} {:>14} {:>14}",
                category,
                text(&r["messages"]),
                format!("{} {cur}", text(&r["old"])),
                format!("{} {cur}", text(&r["new"]))
            );
        }
    }
    if !csv {
        let _ = write!(
            out,
            "{:<16} {:>9} {:>14} {:>14}",
            "total",
            text(&v["messages"]),
            format!("{} {cur}", text(&v["old_total"])),
            format!("{} {cur}", text(&v["new_total"]))
        );
    }
    out.trim_end().to_owned()
}
