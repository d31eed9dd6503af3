//! `ventana chat`: a line-based interactive chat with one business, for a registered device.

use super::screen::{indent, show};
use super::user::{DeviceArgs, DeviceHome};
use anyhow::Result;
use clap::Args;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use ventana_client::device::UserDevice;
use ventana_client::{Application, Endpoint, Inbound, TapError};
use ventana_core::payload::{Content, Payload};
use ventana_core::protocol::ReceiptStatus;
use ventana_core::rules::EnvelopeKind;
use ventana_core::{MessageId, PhoneNumber};
use ventana_node::Config;
use ventana_store::endpoint::{AppRecord, Direction};

#[derive(Args, Debug)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// The business number to chat with.
    #[arg(long)]
    with: String,
}

const HELP: &str = "type a message and press Enter; /read marks their last message read, \
     /tap N taps quick-reply button N of their last template, /block, /unblock, /quit";

/// Where a message's continuation lines start, under the `  them: ` label.
const CONTINUATION: &str = "        ";

pub(crate) async fn run(config: &Config, args: ChatArgs) -> Result<()> {
    let business: PhoneNumber = args.with.parse()?;
    let home = DeviceHome::new(config, &args.device);
    let (stop, shutdown) = watch::channel(false);
    let (app, mut live) = UserDevice::with_live_events();
    let app: Arc<dyn Application> = Arc::new(app);
    let sender = UserDevice::default();
    let (endpoint, events) = home.connect(&sender, shutdown).await?;
    println!(
        "chatting as +{} with +{business} — {HELP}",
        endpoint.owner()
    );
    let mut last_inbound: Option<MessageId> = None;
    let mut last_template: Option<MessageId> = None;
    for record in endpoint
        .store()
        .messages(endpoint.owner(), 200)
        .await?
        .iter()
        .filter(|r| r.peer == business)
    {
        let text = match endpoint.open_body(record) {
            Some(payload) => shown(&endpoint, &payload).await,
            None => String::new(),
        };
        match record.direction {
            Direction::Inbound => {
                last_inbound = Some(record.id.clone());
                if record.kind == EnvelopeKind::Template {
                    last_template = Some(record.id.clone());
                }
                println!("  them: {text}");
            }
            Direction::Outbound => println!("   you: {text}  [{}]", record.status),
        }
    }
    tokio::spawn(Arc::clone(&endpoint).run(events, app));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            event = live.recv() => match event {
                Some(Inbound::Message { meta, payload }) if meta.from == business => {
                    last_inbound = Some(meta.id.clone());
                    if meta.kind == EnvelopeKind::Template {
                        last_template = Some(meta.id.clone());
                    }
                    println!("  them: {}", shown(&endpoint, &payload).await);
                }
                Some(Inbound::Undecryptable { meta, reason, .. }) if meta.from == business => {
                    println!("  them: (a message that cannot be shown: {reason})");
                }
                Some(Inbound::Receipt {
                    meta, status, ids, ..
                }) if meta.from == business => {
                    println!("        ({} {})", status.as_str(), ids.len());
                }
                Some(_) => {}
                None => break,
            },
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let line = line.trim();
                match line {
                    "" => {}
                    "/quit" => break,
                    "/help" => println!("{HELP}"),
                    "/read" => if let Some(id) = &last_inbound {
                        match endpoint.send_receipt(&business, ReceiptStatus::Read, vec![id.clone()]).await {
                            Ok(()) => {
                                let read = AppRecord::Status { id: id.clone(), status: ventana_core::MessageStatus::Read, announce: None };
                                let _ = endpoint.store().apply(endpoint.owner(), vec![read]).await;
                                println!("        (marked read)");
                            }
                            Err(e) => println!("        ! {e}"),
                        }
                    },
                    tap if tap == "/tap" || tap.starts_with("/tap ") => {
                        let number = tap["/tap".len()..].trim().parse::<usize>().ok().filter(|n| *n > 0);
                        match (number, &last_template) {
                            (None, _) => println!("        ! usage: /tap N (a button number of their last template)"),
                            (Some(_), None) => println!("        ! they have sent no template to tap on"),
                            (Some(n), Some(id)) => match endpoint.tap_button(&business, id, n - 1, &sender).await {
                                Ok(tapped) if tapped.sent.accepted_at.is_some() => println!("        (tapped \"{}\")", tapped.text),
                                Ok(tapped) => println!("        (tapped \"{}\"; queued, will send when the relay is back)", tapped.text),
                                Err(TapError::NoSuchButton(_)) => println!("        ! their template has no button {n}"),
                                Err(TapError::NotQuickReply(_)) => println!("        ! button {n} is not a quick reply"),
                                Err(e) => println!("        ! {e}"),
                            },
                        }
                    }
                    "/block" | "/unblock" => match endpoint.set_blocked(&business, line == "/block").await {
                        Ok(()) => println!("        ({}ed)", &line[1..]),
                        Err(e) => println!("        ! {e}"),
                    },
                    text => {
                        let content = Content::Text { body: text.to_owned(), preview_url: false };
                        match endpoint.send_message(&business, content, None, &sender).await {
                            Ok(sent) if sent.accepted_at.is_some() => println!("        (sent)"),
                            Ok(_) => println!("        (queued; will send when the relay is back)"),
                            Err(e) => println!("        ! {e}"),
                        }
                    }
                }
            }
        }
    }
    let _ = stop.send(true);
    Ok(())
}

/// A message as the chat shows it, its further lines under the first.
async fn shown(endpoint: &Endpoint, payload: &Payload) -> String {
    indent(&show(endpoint, payload).await, CONTINUATION)
}
