//! `ventana user …`: one end-user device kept in a directory (`device.db`, `device.key`).

use super::output;
use super::screen::{message_line, render, show_rendering};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use ventana_client::device::UserDevice;
use ventana_client::registration::{Proof, register, request_code};
use ventana_client::{Endpoint, Inbound, LinkEvent, SendError, TapError, TemplateRenderError};
use ventana_core::payload::Content;
use ventana_core::protocol::ReceiptStatus;
use ventana_core::template::render::{RenderedButtonKind, RenderedHeader};
use ventana_core::template::{Rendered, TemplateHeader};
use ventana_core::{MessageId, PhoneNumber};
use ventana_crypto::{SealKey, Sealer};
use ventana_node::{Config, secret_file};
use ventana_store::endpoint::{AppRecord, Direction};
use ventana_store::sqlite::SqliteEndpointStore;

#[derive(Args, Debug)]
pub(crate) struct UserArgs {
    #[command(flatten)]
    pub(crate) device: DeviceArgs,
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct DeviceArgs {
    /// The device's directory (default: ./ventana-user).
    #[arg(long, env = "VENTANA_USER_DIR", global = true)]
    pub(crate) dir: Option<PathBuf>,
    /// The relay's URL (default: the one registered with, or the local node).
    #[arg(long, env = "VENTANA_URL", global = true)]
    pub(crate) relay: Option<String>,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Ask for a verification code for a phone number.
    RequestCode {
        #[arg(long)]
        phone: String,
    },
    /// Register this device for a phone number with the code received.
    Register {
        #[arg(long)]
        phone: String,
        #[arg(long)]
        code: String,
        /// The profile name businesses see.
        #[arg(long)]
        name: String,
    },
    /// Send a text to a business number.
    Send {
        #[arg(long)]
        to: String,
        #[arg(long)]
        text: String,
        /// Reply to a message id.
        #[arg(long)]
        reply_to: Option<String>,
    },
    /// Fetch new messages and list the conversation history.
    Inbox {
        /// Wait up to this many seconds for a new message to arrive.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Tap a quick-reply button of a template message received (the business gets a
    /// `button` message replying to it).
    Tap {
        /// The template message's id.
        #[arg(long)]
        message: String,
        /// The button's number, as `inbox` shows it (from 1).
        #[arg(long)]
        button: usize,
    },
    /// Mark a received message as read (the business gets a `read` status).
    Read {
        message_id: String,
    },
    /// Block a business: nothing from it is delivered until unblocked.
    Block {
        business: String,
    },
    Unblock {
        business: String,
    },
}

/// A device directory.
pub(crate) struct DeviceHome {
    dir: PathBuf,
    relay: Option<String>,
    default_relay: String,
    /// Held while this process uses the device: two processes on one device would each keep
    /// its Olm account in memory and overwrite each other's.
    lock: std::sync::OnceLock<std::fs::File>,
}

impl DeviceHome {
    pub(crate) fn new(config: &Config, args: &DeviceArgs) -> Self {
        Self {
            dir: args
                .dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("ventana-user")),
            relay: args.relay.clone(),
            default_relay: config.local_url(),
            lock: std::sync::OnceLock::new(),
        }
    }

    fn prepare(&self) -> Result<(Arc<SqliteEndpointStore>, Sealer)> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        if self.lock.get().is_none() {
            let file = std::fs::File::create(self.dir.join("device.lock"))?;
            if file.try_lock().is_err() {
                bail!(
                    "{} is in use by another ventana process",
                    self.dir.display()
                );
            }
            let _ = self.lock.set(file);
        }
        let key = secret_file(&self.dir, "device.key", || SealKey::generate().to_base64())?;
        let sealer = Sealer::new(SealKey::from_base64(&key)?);
        let store = SqliteEndpointStore::open(&self.dir.join("device.db"))?;
        Ok((Arc::new(store), sealer))
    }

    fn relay_url(&self) -> String {
        if let Some(url) = &self.relay {
            return url.clone();
        }
        std::fs::read_to_string(self.dir.join("relay_url"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| self.default_relay.clone())
    }

    pub(crate) fn owner(&self) -> Result<PhoneNumber> {
        let text = std::fs::read_to_string(self.dir.join("phone")).map_err(|_| {
            anyhow!(
                "no device registered in {} (run `ventana user register`)",
                self.dir.display()
            )
        })?;
        Ok(text.trim().parse()?)
    }

    /// Opens the device and processes everything the relay had queued for it.
    pub(crate) async fn connect(
        &self,
        app: &UserDevice,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Endpoint>, mpsc::Receiver<LinkEvent>)> {
        let owner = self.owner()?;
        let (store, sealer) = self.prepare()?;
        let (endpoint, mut events) =
            Endpoint::open(store, sealer, &owner, &self.relay_url(), true, shutdown).await?;
        let relay = self.relay_url();
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(event) = events.recv().await {
                if let LinkEvent::Rejected(reason) = &event {
                    bail!("the relay rejected this device: {reason}");
                }
                let drained = matches!(event, LinkEvent::Drained);
                endpoint.handle(event, app).await?;
                if drained {
                    return Ok(());
                }
            }
            bail!("the connection to the relay ended")
        })
        .await
        .map_err(|_| anyhow!("could not reach the relay at {relay}"))??;
        Ok((endpoint, events))
    }
}

pub(crate) async fn run(config: &Config, args: UserArgs) -> Result<()> {
    let home = DeviceHome::new(config, &args.device);
    let json = args.json;
    let http = reqwest::Client::new();
    let (stop, shutdown) = watch::channel(false);
    let result = match args.command {
        UserCommand::RequestCode { phone } => {
            let phone: PhoneNumber = phone.parse()?;
            request_code(&http, &home.relay_url(), &phone).await?;
            output(json, &json!({ "phone": phone, "sent": true }), || {
                format!("a verification code was sent to +{phone}")
            });
            Ok(())
        }
        UserCommand::Register { phone, code, name } => {
            let phone: PhoneNumber = phone.parse()?;
            if home.dir.join("phone").exists() {
                bail!("{} already holds a registered device", home.dir.display());
            }
            let (store, sealer) = home.prepare()?;
            let relay = home.relay_url();
            let device = register(
                &http,
                &relay,
                &phone,
                &name,
                Proof::Code(code),
                store.as_ref(),
                &sealer,
            )
            .await?;
            std::fs::write(home.dir.join("relay_url"), &relay)?;
            std::fs::write(home.dir.join("phone"), phone.digits())?;
            output(
                json,
                &json!({ "phone": phone, "device_id": device, "name": name }),
                || format!("registered +{phone} as device {device}"),
            );
            Ok(())
        }
        UserCommand::Send { to, text, reply_to } => {
            let to: PhoneNumber = to.parse()?;
            let reply_to: Option<MessageId> = reply_to.map(|r| r.parse()).transpose()?;
            let app = UserDevice::default();
            let (endpoint, _events) = home.connect(&app, shutdown).await?;
            let content = Content::Text {
                body: text,
                preview_url: false,
            };
            match endpoint.send_message(&to, content, reply_to, &app).await {
                Ok(sent) => {
                    let v = json!({ "id": sent.id, "to": to, "accepted_at": sent.accepted_at, "queued": sent.accepted_at.is_none() });
                    output(json, &v, || match sent.accepted_at {
                        Some(_) => format!("sent {}", sent.id),
                        None => format!("queued {} (the relay did not answer yet)", sent.id),
                    });
                    Ok(())
                }
                Err(SendError::Refused(e)) => Err(anyhow!("refused: {}", e.message)),
                Err(e) => Err(e.into()),
            }
        }
        UserCommand::Inbox { wait, limit } => {
            let (app, mut live) = UserDevice::with_live_events();
            let (endpoint, mut events) = home.connect(&app, shutdown).await?;
            if wait > 0 {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
                let _ = tokio::time::timeout_at(deadline, async {
                    while live.try_recv().is_ok() {}
                    while let Some(event) = events.recv().await {
                        let _ = endpoint.handle(event, &app).await;
                        if let Ok(Inbound::Message { .. }) = live.try_recv() {
                            return;
                        }
                    }
                })
                .await;
            }
            let records = endpoint.store().messages(endpoint.owner(), limit).await?;
            let mut list: Vec<Value> = Vec::with_capacity(records.len());
            let mut lines: Vec<String> = Vec::with_capacity(records.len());
            for r in &records {
                let payload = endpoint.open_body(r);
                let mut entry = json!({
                    "id": r.id, "direction": r.direction.as_str(), "peer": r.peer, "timestamp": r.ts,
                    "status": r.status.as_str(), "kind": r.kind.as_str(),
                });
                // A template is rendered once, for both forms (it may take a trip to the relay).
                let text = match &payload {
                    Some(payload) if matches!(payload.content, Content::Template { .. }) => {
                        let header = payload.header.template.as_ref();
                        let rendering = endpoint.render_template(payload).await;
                        entry["template"] = template_json(header, &rendering);
                        Some(show_rendering(header, &rendering))
                    }
                    Some(payload) => Some(render(payload)),
                    None => None,
                };
                lines.push(format!("{}  {}", r.id, message_line(r, text.as_deref())));
                entry["text"] = json!(text);
                list.push(entry);
            }
            output(json, &json!({ "messages": list }), || {
                if records.is_empty() {
                    return "(no messages)".into();
                }
                lines.join("\n")
            });
            Ok(())
        }
        UserCommand::Tap { message, button } => {
            let id: MessageId = message.parse()?;
            let index = button
                .checked_sub(1)
                .ok_or_else(|| anyhow!("buttons are numbered from 1"))?;
            let app = UserDevice::default();
            let (endpoint, _events) = home.connect(&app, shutdown).await?;
            let business = endpoint
                .store()
                .message(endpoint.owner(), &id)
                .await?
                .filter(|r| r.direction == Direction::Inbound)
                .map(|r| r.peer)
                .ok_or_else(|| anyhow!("no received message {id}"))?;
            match endpoint.tap_button(&business, &id, index, &app).await {
                Ok(tapped) => {
                    let sent = &tapped.sent;
                    let v = json!({
                        "id": sent.id, "to": business, "reply_to": id, "button": button,
                        "text": tapped.text, "payload": tapped.payload,
                        "accepted_at": sent.accepted_at, "queued": sent.accepted_at.is_none(),
                    });
                    output(json, &v, || match sent.accepted_at {
                        Some(_) => format!("tapped \"{}\": sent {}", tapped.text, sent.id),
                        None => format!(
                            "tapped \"{}\": queued {} (the relay did not answer yet)",
                            tapped.text, sent.id
                        ),
                    });
                    Ok(())
                }
                Err(TapError::NoSuchButton(_)) => {
                    Err(anyhow!("the template has no button {button}"))
                }
                Err(TapError::NotQuickReply(_)) => {
                    Err(anyhow!("button {button} is not a quick reply"))
                }
                Err(TapError::Send(SendError::Refused(e))) => {
                    Err(anyhow!("refused: {}", e.message))
                }
                Err(e) => Err(e.into()),
            }
        }
        UserCommand::Read { message_id } => {
            let id: MessageId = message_id.parse()?;
            let app = UserDevice::default();
            let (endpoint, _events) = home.connect(&app, shutdown).await?;
            let record = endpoint
                .store()
                .message(endpoint.owner(), &id)
                .await?
                .filter(|r| r.direction == Direction::Inbound)
                .ok_or_else(|| anyhow!("no received message {id}"))?;
            endpoint
                .send_receipt(&record.peer, ReceiptStatus::Read, vec![id.clone()])
                .await?;
            endpoint
                .store()
                .apply(
                    endpoint.owner(),
                    vec![AppRecord::Status {
                        id: id.clone(),
                        status: ventana_core::MessageStatus::Read,
                        announce: None,
                    }],
                )
                .await?;
            output(json, &json!({ "id": id, "read": true }), || {
                format!("marked {id} as read")
            });
            Ok(())
        }
        UserCommand::Block { business } => {
            set_blocked(&home, &business, true, json, shutdown).await
        }
        UserCommand::Unblock { business } => {
            set_blocked(&home, &business, false, json, shutdown).await
        }
    };
    let _ = stop.send(true);
    result
}

async fn set_blocked(
    home: &DeviceHome,
    business: &str,
    blocked: bool,
    json: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let business: PhoneNumber = business.parse()?;
    let app = UserDevice::default();
    let (endpoint, _events) = home.connect(&app, shutdown).await?;
    endpoint
        .set_blocked(&business, blocked)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let verb = if blocked { "blocked" } else { "unblocked" };
    output(
        json,
        &json!({ "business": business, "blocked": blocked }),
        || format!("{verb} +{business}"),
    );
    Ok(())
}

/// A template message's `template` object for `--json`: which version it fills and, rendered,
/// its parts and buttons (numbered as `tap --button` takes them), or why it cannot be shown
/// (`retry`: whether it may show later).
fn template_json(
    header: Option<&TemplateHeader>,
    rendering: &Result<Rendered, TemplateRenderError>,
) -> Value {
    let mut template = match header {
        Some(h) => json!({
            "id": h.id, "name": h.name, "language": h.language,
            "version": h.version, "category": h.category,
        }),
        None => json!({}),
    };
    match rendering {
        Ok(rendered) => {
            let buttons: Vec<Value> = rendered
                .buttons
                .iter()
                .enumerate()
                .map(|(n, b)| {
                    let (kind, field, target) = match &b.kind {
                        RenderedButtonKind::QuickReply { payload } => {
                            ("quick_reply", "payload", json!(payload))
                        }
                        RenderedButtonKind::Url { url } => ("url", "url", json!(url)),
                        RenderedButtonKind::PhoneNumber { phone } => {
                            ("phone_number", "phone_number", json!(phone))
                        }
                        RenderedButtonKind::CopyCode { code } => ("copy_code", "code", json!(code)),
                    };
                    let mut button = json!({ "number": n + 1, "type": kind, "text": b.text });
                    button[field] = target;
                    button
                })
                .collect();
            let header = rendered.header.as_ref().map(|h| match h {
                RenderedHeader::Text(text) => json!({ "type": "text", "text": text }),
                RenderedHeader::Media(media) => {
                    json!({ "type": media.kind.as_str(), "media": media })
                }
                RenderedHeader::Location(location) => {
                    json!({ "type": "location", "location": location })
                }
            });
            template["rendered"] = json!({
                "header": header, "body": rendered.body, "footer": rendered.footer,
                "buttons": buttons,
            });
        }
        Err(e) => {
            template["error"] = json!(e.to_string());
            template["retry"] = json!(e.is_transient());
        }
    }
    template
}
