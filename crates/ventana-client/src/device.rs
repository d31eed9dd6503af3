//! An end user's device: the [`Application`] for a person's client, and how it shows messages.

use crate::ClientError;
use crate::endpoint::{Application, Endpoint, Inbound, Settlement};
use async_trait::async_trait;
use tokio::sync::mpsc;
use ventana_core::payload::{Content, Payload};
use ventana_store::endpoint::{AppRecord, Direction, MessageRecord};

/// A person's device. The engine already keeps the history; this only reports live events
/// (to a terminal, a UI) once they are durable.
#[derive(Default)]
pub struct UserDevice {
    live: Option<mpsc::UnboundedSender<Inbound>>,
}

impl UserDevice {
    /// A device that reports each committed inbound event on the returned channel.
    pub fn with_live_events() -> (Self, mpsc::UnboundedReceiver<Inbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { live: Some(tx) }, rx)
    }
}

#[async_trait]
impl Application for UserDevice {
    async fn inbound(
        &self,
        _endpoint: &Endpoint,
        _event: &Inbound,
    ) -> Result<Vec<AppRecord>, ClientError> {
        Ok(Vec::new())
    }

    async fn settled(
        &self,
        _endpoint: &Endpoint,
        _settlement: &Settlement,
    ) -> Result<Vec<AppRecord>, ClientError> {
        Ok(Vec::new())
    }

    fn committed(&self, _endpoint: &Endpoint, event: &Inbound) {
        if let Some(live) = &self.live {
            let _ = live.send(event.clone());
        }
    }
}

/// The text a person sees for a message's content.
pub fn render(payload: &Payload) -> String {
    match &payload.content {
        Content::Text { body, .. } => body.clone(),
        Content::Template { .. } => match &payload.header.template {
            Some(t) => format!("(template {} {} v{})", t.name, t.language, t.version),
            None => "(template)".into(),
        },
        Content::Button { text, .. } => format!("[{text}]"),
    }
}

/// One line for a message in the history: `← 15550001111  hello  [read]`.
pub fn render_line(record: &MessageRecord, payload: Option<&Payload>) -> String {
    let arrow = match record.direction {
        Direction::Inbound => "←",
        Direction::Outbound => "→",
    };
    let text = payload.map(render).unwrap_or_else(|| "(unreadable)".into());
    format!("{arrow} {}  {text}  [{}]", record.peer, record.status)
}
