//! `ventana user …`: one end-user device kept in a directory (`device.db`, `device.key`).

use super::output;
use crate::config::Config;
use crate::node::secret_file;
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use ventana_client::device::{UserDevice, render, render_line};
use ventana_client::registration::{Proof, register, request_code};
use ventana_client::{Endpoint, Inbound, LinkEvent, SendError};
use ventana_core::payload::Content;
use ventana_core::protocol::ReceiptStatus;
use ventana_core::{MessageId, PhoneNumber};
use ventana_crypto::{SealKey, Sealer};
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
            let list: Vec<Value> = records
                .iter()
                .map(|r| {
                    let payload = endpoint.open_body(r);
                    json!({
                        "id": r.id, "direction": r.direction.as_str(), "peer": r.peer, "timestamp": r.ts,
                        "status": r.status, "text": payload.as_ref().map(render),
                    })
                })
                .collect();
            output(json, &json!({ "messages": list }), || {
                if records.is_empty() {
                    return "(no messages)".into();
                }
                records
                    .iter()
                    .map(|r| {
                        format!(
                            "{}  {}",
                            r.id,
                            render_line(r, endpoint.open_body(r).as_ref())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
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
                        status: "read".into(),
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
